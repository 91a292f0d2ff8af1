"""Requests to the outside, each through the address guard: no cookies, no proxies from the environment, no
connection reuse, bounded in time and in the size of what is read back."""

from __future__ import annotations

import http.cookiejar
import time
from dataclasses import dataclass

import httpx

from pocket3d import __version__
from pocket3d.outbound.guard import AddressGuard, OutboundError

USER_AGENT = f"pocket3d/{__version__}"


class OutboundTimeout(OutboundError):
    kind = "timeout"


class OutboundConnectionError(OutboundError):
    kind = "connection"


class TooManyRedirects(OutboundError):
    kind = "redirects"


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Nothing a server sets is kept, so nothing is ever sent back."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    body: bytes  # at most max_response_size bytes of it
    truncated: bool  # the answer was longer; the rest was not read
    url: str  # the URL that answered (after redirects)
    seconds: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


# A redirect keeps the method and body only with these; for other methods than GET and HEAD the others are not
# followed (a POST turned into a GET would "succeed" without delivering anything).
_KEEPS_METHOD = (307, 308)


class OutboundClient:
    def __init__(self, guard: AddressGuard, *, timeout: float = 10.0, max_response_size: int = 64 * 1024,
                 max_redirects: int = 3):
        self.guard = guard
        self.timeout, self.max_response_size, self.max_redirects = timeout, max_response_size, max_redirects
        jar = http.cookiejar.CookieJar(policy=_NoCookies())
        # No keep-alive: a pooled connection is keyed by the pinned address, and two host names on one address
        # must not share a TLS session made for the first.
        self._http = httpx.Client(trust_env=False, follow_redirects=False, cookies=jar,
                                  limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, url: str, *, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> OutboundResponse:
        """One request, following up to ``max_redirects`` redirects, every hop checked by the guard; the whole
        exchange takes at most ``timeout`` seconds. Raises :class:`OutboundError` (its ``kind`` says why)."""
        started = time.monotonic()
        deadline = started + self.timeout
        method = method.upper()
        for _ in range(self.max_redirects + 1):
            target = self.guard.check(url)
            sent = {"user-agent": USER_AGENT, **(headers or {})}
            # The connection goes to the address the guard checked; Host and TLS (SNI, the certificate) keep the name.
            default_port = 443 if target.url.scheme == "https" else 80
            sent["host"] = target.host if target.port == default_port else f"{target.host}:{target.port}"
            extensions: dict[str, object] = {"timeout": httpx.Timeout(max(0.01, deadline - time.monotonic()))
                                             .as_dict()}
            if target.url.scheme == "https" and str(target.address) != target.host:
                extensions["sni_hostname"] = target.host
            request = httpx.Request(method, target.pinned_url, headers=sent, content=content, extensions=extensions)
            try:
                response = self._http.send(request, stream=True)
            except httpx.TimeoutException:
                raise OutboundTimeout(f"no answer within {self.timeout:g} s") from None
            except httpx.HTTPError as e:
                raise OutboundConnectionError(f"{type(e).__name__}: {e}".rstrip(": ")) from None
            try:
                location = response.headers.get("location")
                if response.is_redirect and location and (response.status_code in _KEEPS_METHOD
                                                           or method in ("GET", "HEAD")):
                    url = str(target.url.join(location))
                    if response.status_code not in _KEEPS_METHOD:
                        method, content = "GET", None
                    continue
                body, truncated = self._read(response, deadline)
                return OutboundResponse(response.status_code, response.headers, body, truncated, str(target.url),
                                        time.monotonic() - started)
            finally:
                response.close()
        raise TooManyRedirects(f"more than {self.max_redirects} redirects")

    def _read(self, response: httpx.Response, deadline: float) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                if time.monotonic() > deadline:
                    raise OutboundTimeout(f"the answer took longer than {self.timeout:g} s")
                room = self.max_response_size - size
                chunks.append(chunk[:room])
                size += min(len(chunk), room)
                if len(chunk) > room:
                    return b"".join(chunks), True
        except httpx.TimeoutException:
            raise OutboundTimeout(f"the answer took longer than {self.timeout:g} s") from None
        except httpx.HTTPError as e:
            raise OutboundConnectionError(f"reading the answer failed: {type(e).__name__}: {e}") from None
        return b"".join(chunks), False
