"""Image inputs given as URLs (``inputs.allow_urls``): fetched once, at submission, through the address guard
(every hop, the connection pinned to the checked address), within a size and a time limit, and kept only when the
answer says it is an image."""

from __future__ import annotations

from pocket3d.outbound.client import OutboundClient
from pocket3d.outbound.guard import OutboundError

ACCEPT = "image/png, image/jpeg, image/webp;q=0.9, image/*;q=0.5"


class FetchRefused(OutboundError):
    """The URL answered, but not with an image pocket3d takes."""

    kind = "answer"


def fetch_image(client: OutboundClient, url: str) -> bytes:
    """The image at ``url``; raises an :class:`OutboundError` saying why not (the guard's refusal, a timeout, an
    error status, too large, not an image)."""
    response = client.request("GET", url, headers={"accept": ACCEPT})
    if not response.ok:
        raise FetchRefused(f"{url} answered {response.status_code}")
    if response.truncated:
        raise FetchRefused(f"{url} holds more than {client.max_response_size} bytes (inputs.max_url_size)")
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media_type.startswith("image/"):
        raise FetchRefused(f"{url} answered {media_type or 'without a type'}, not an image")
    return response.body
