"""What every compat flavour shares: its error shape, who a request acts as, signed URLs, absolute URLs under the
flavour's mount, native submission with the model's own knobs, and the synchronous wait.

A flavour is a thin translation: its routes parse the foreign request, build the native request model
(``api.schemas``), submit it with ``api.submission.submit_request`` as ``POST /api/v1/mesh/generate`` does, and read
the job back from the node's snapshots. There is no second queue, store or model copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from pocket3d.api import auth, downloads, redact
from pocket3d.api.keys import LOCAL_PRINCIPAL, Principal, authenticate
from pocket3d.api.schemas import _FeatureRequest
from pocket3d.api.submission import submit_request
from pocket3d.errors import ErrorCode, Pocket3DError, storage_failure
from pocket3d.jobs import transitions
from pocket3d.jobs.records import JobRecord, JobStatus, OutputRecord
from pocket3d.models import pipeline
from pocket3d.models.registry import RegisteredModel
from pocket3d.models.spec import Feature
from pocket3d.node import Node

log = logging.getLogger(__name__)

MOUNT_PREFIX = "/compat"
KEYLESS = frozenset({"hunyuan", "trellis", "protoscale", "sam3d"})  # their clients send no credentials
SERVED_AT = "pocket3d.compat.served_at"  # scope key: the path a root-mounted or own-port flavour is served under
LISTENER = "pocket3d.compat.listener"  # scope key: set when the request came in on a flavour's own port


def mount(flavour: str) -> str:
    return f"{MOUNT_PREFIX}/{flavour}"


class CompatError(Exception):
    """An answer in the flavour's own error shape: ``status`` and a message for people."""

    def __init__(self, status: int, message: str, *, code: ErrorCode | str | None = None,
                 headers: dict[str, str] | None = None, hint: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.hint = status, message, code, headers or {}, hint


ErrorShape = Callable[[Request, CompatError], Response]


@dataclass(frozen=True)
class Flavour:
    name: str
    error: ErrorShape  # renders a CompatError in the flavour's shape
    # The HTTP status a native error gets in this flavour (default: its native status).
    status_of: Callable[[Pocket3DError], int] = lambda e: e.http_status

    @property
    def mount(self) -> str:
        return mount(self.name)

    @property
    def keyless(self) -> bool:
        return self.name in KEYLESS

    def router(self) -> APIRouter:
        """A router whose every answer, errors included, is in this flavour's shape; kept out of the native
        OpenAPI document (a foreign contract is documented by its own client)."""
        flavour = self

        class _Route(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def guarded(request: Request) -> Response:
                    try:
                        return await handler(request)
                    except CompatError as e:
                        return flavour.error(request, e)
                    except Pocket3DError as e:
                        return flavour.error(request, flavour.native(request, e))
                    except RequestValidationError as e:
                        return flavour.error(request, CompatError(422, validation_message(e.errors())))
                    except Exception as e:
                        reason = storage_failure(e)
                        if reason is not None:  # a full or failing disk: as natively, 503 and readiness told
                            request.app.state.node.storage_health.failed(reason)
                            return flavour.error(request, flavour.native(request, Pocket3DError(
                                ErrorCode.STORAGE_UNAVAILABLE, "the server cannot store anything right now (its "
                                "disk is full or failing); try again later", headers={"Retry-After": "30"})))
                        log.exception("compat %s: unexpected error on %s %s", flavour.name, request.method,
                                      request.url.path)
                        return flavour.error(request, CompatError(500, "internal error"))

                return guarded

        return APIRouter(route_class=_Route, include_in_schema=False)

    def native(self, request: Request, e: Pocket3DError) -> CompatError:
        """A native error as this flavour answers it: its status, the message (server paths for admins only)."""
        message = e.message if redact.sees_everything(request) else redact.text(e.message)
        return CompatError(self.status_of(e), message, code=e.code, headers=e.headers, hint=e.hint)




def validation_message(errors: Any) -> str:
    first = list(errors)[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", "invalid request"))


def parse(model: type[BaseModel], data: Any) -> Any:
    """The body as ``model``, or a 422 in the flavour's shape."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise CompatError(422, validation_message(e.errors())) from None


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise CompatError(422, "the request body is not valid JSON") from None


# -- who the request acts as ------------------------------------------------------------------------------------

def node_of(request: Request) -> Node:
    return request.app.state.node


async def principal_for(request: Request, flavour: Flavour) -> Principal:
    """Auth off: the local owner. Auth on: a keyless flavour acts as ``compat.<flavour>.owner`` (401 when unset);
    Tripo and Comfy authenticate with the caller's key as natively (Tripo's SDK insists on a ``tsk_`` prefix,
    taken off here)."""
    settings = node_of(request).settings
    if not settings.auth.enabled:
        return LOCAL_PRINCIPAL
    if flavour.keyless:
        owner = settings.compat.flavour(flavour.name).owner
        if owner is None:
            raise CompatError(401, f"this server has auth on and acts for keyless {flavour.name} clients only as "
                              f"the owner that compat.{flavour.name}.owner names; none is set", code=ErrorCode.UNAUTHORIZED)
        return Principal(owner_id=owner, role="user")
    token = auth.token_from(request.scope["headers"])
    if token is not None and flavour.name == "tripo" and token.startswith("tsk_"):
        token = token[len("tsk_"):]
    found = await run_in_threadpool(authenticate, node_of(request).store, token) if token else None
    if found is None:
        raise CompatError(401, "the API key is not valid or was revoked" if token else "an API key is required",
                          code=ErrorCode.UNAUTHORIZED, hint=auth.KEY_HINT)
    return found


# -- URLs ---------------------------------------------------------------------------------------------------------

def served_path(request: Request, flavour: Flavour) -> str:
    """The path the client reaches the flavour under: its mount (after any proxy prefix), or the root when it is
    served at / (compat.root) or on its own port."""
    at_root = request.scope.get(SERVED_AT)
    return at_root if at_root is not None else request.scope.get("root_path", "") + flavour.mount


def origin(request: Request) -> str:
    """``scheme://host[:port]`` as the client reached this server. A Host header without a port (Tripo's SDK
    sends one) gets the port the connection came in on, unless a proxy said where it came from."""
    headers = request.headers
    scheme = request.url.scheme
    host = headers.get("host") or f"{request.scope['server'][0]}:{request.scope['server'][1]}"
    bare = host.rsplit("]", 1)[-1]
    server = request.scope.get("server")
    if ":" not in bare and server and "x-forwarded-host" not in headers and "forwarded" not in headers:
        if server[1] not in ((443,) if scheme == "https" else (80,)):
            host = f"{host}:{server[1]}"
    return f"{scheme}://{host}"


def absolute(request: Request, flavour: Flavour, path: str, query: str = "") -> str:
    """An absolute URL of ``path`` (relative to the flavour's mount): under ``server.public_url`` when set (not
    on a flavour's own port, which it does not describe), else as the request reached this server."""
    public = node_of(request).settings.server.public_url
    at_root = request.scope.get(SERVED_AT)
    if public and not request.scope.get(LISTENER):
        base = public + ("" if at_root is not None else flavour.mount)
    else:
        base = origin(request) + served_path(request, flavour)
    return base + path + (f"?{query}" if query else "")


def root_relative(request: Request, flavour: Flavour, path: str, query: str = "") -> str:
    """A URL of ``path`` without scheme and host, for clients that resolve it against the host they called:
    under ``server.public_url``'s path when set (a proxy's prefix), else as the request reached this server."""
    public = node_of(request).settings.server.public_url
    if public and not request.scope.get(LISTENER):
        at_root = request.scope.get(SERVED_AT) is not None
        prefix = urlsplit(public).path.rstrip("/") + ("" if at_root else flavour.mount)
    else:
        prefix = served_path(request, flavour)
    return prefix + path + (f"?{query}" if query else "")


# -- signed URLs --------------------------------------------------------------------------------------------------

class Signer:
    """HMAC-SHA256 over a canonical path (the flavour's mount and the route, however the client reached it), the
    expiry and any other query values, so a URL works without credentials until it expires and not after."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def query(self, path: str, expires: float, **values: str) -> str:
        fields = {**values, "expires": str(int(expires))}
        return urlencode({**fields, "signature": self._mac(path, fields)})

    def check(self, path: str, params: dict[str, str], now: float) -> dict[str, str]:
        """The signed values (``expires`` among them), or CompatError 403 (not signed by us) / 404 (expired)."""
        given = params.get("signature", "")
        fields = {k: v for k, v in params.items() if k != "signature"}
        if not given or not fields.get("expires", "").isdigit() or \
                not hmac.compare_digest(given, self._mac(path, fields)):
            raise CompatError(403, "this link is not valid: it was altered or not made by this server")
        if int(fields["expires"]) <= now:
            raise CompatError(404, "this link has expired, and so has the file it named", code=ErrorCode.OUTPUT_EXPIRED)
        return fields

    def _mac(self, path: str, fields: dict[str, str]) -> str:
        message = path + "\n" + "&".join(f"{k}={fields[k]}" for k in sorted(fields))
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()


SECRET_FILE = "compat-signing.key"


def load_secret(settings: Any) -> bytes:
    """``compat.signing_secret``, else a key generated once into the data directory (kept across restarts, so
    links handed out stay valid)."""
    if settings.compat.signing_secret:
        return settings.compat.signing_secret.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # the first writer wins; a concurrent one reads the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def signer(request: Request) -> Signer:
    return request.app.state.compat_signer


def signed_url(request: Request, flavour: Flavour, path: str, expires: float, *, absolute_url: bool = True,
               **values: str) -> str:
    """A URL of ``path`` (under the flavour's mount) that works without credentials until ``expires``."""
    query = signer(request).query(flavour.mount + path, expires, **values)
    return absolute(request, flavour, path, query) if absolute_url else root_relative(request, flavour, path, query)


def output_expiry(request: Request, job: JobRecord) -> float:
    """When the job's outputs go (its expires_at), so a link to one is valid exactly as long."""
    return job.expires_at or (time.time() + node_of(request).settings.storage.cleanup_after)


def check_signed(request: Request) -> dict[str, str]:
    """The signed values of this request's URL, or the flavour's 403/404."""
    path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
    return signer(request).check(path, dict(request.query_params), time.time())


# -- jobs ---------------------------------------------------------------------------------------------------------

async def snapshot(request: Request, job_id: str) -> JobRecord | None:
    """The job, whoever owns it (a signed URL's route, where the signature stands for the owner). Read on the
    event loop from SQLite's cache-backed snapshots; in a thread from PostgreSQL, whose reads may wait."""
    node = node_of(request)
    return node.snapshots.get(job_id) if node.store.is_sqlite else await run_in_threadpool(node.snapshots.get, job_id)


async def read_job(request: Request, principal: Principal, job_id: str) -> JobRecord | None:
    """The job as its owner sees it, or None (unknown, or another owner's)."""
    job = await snapshot(request, job_id)
    if job is None or not principal.can_see(job.owner_id):
        return None
    return job


def job_error(request: Request, job: JobRecord) -> str:
    """Why the job did not succeed, in words (server paths shown to admins only, as natively)."""
    if job.status == JobStatus.CANCELLED:
        return "the job was cancelled"
    message = job.error_message or f"the job {job.status.value}"
    return message if redact.sees_everything(request) else redact.text(message)


def model_unavailable(node: Node, model_id: str) -> list[str]:
    """Why ``model_id`` cannot serve a request here (empty: it can); not registered is a reason too."""
    if model_id not in node.registry:
        return [f"model {model_id!r} is not registered"]
    return pipeline.model_reasons(node.registry, node.registry.get(model_id), node.scheduler.device_list,
                                  node.scheduler.budget_of)


def progress_percent(job: JobRecord) -> int:
    """The job's progress as the integer the foreign clients need (natively a float)."""
    return 100 if job.status == JobStatus.SUCCEEDED else max(0, min(99, int(job.progress)))


def public_output(job: JobRecord, name: str) -> OutputRecord | None:
    return next((o for o in job.outputs if o.public and o.name == name), None)


def read_output(node: Node, output: OutputRecord) -> bytes:
    """A (small) output's bytes, from whichever store holds it."""
    return b"".join(node.artifacts.open_range(output.sha256, 0, None))


def output_response(request: Request, job: JobRecord, name: str, missing: CompatError) -> Response:
    """The output streamed from this server (never a redirect: some foreign clients do not follow one)."""
    output = public_output(job, name) if job.status == JobStatus.SUCCEEDED else None
    if output is None:
        raise missing
    return downloads.artifact_response(
        node_of(request).artifacts, request, sha256=output.sha256, size=output.size, media_type=output.media_type,
        filename=output.name, headers={"ETag": f'"{output.sha256}"'}, missing=Pocket3DError(
            ErrorCode.OUTPUT_EXPIRED, f"output {name!r} of job {job.id} is no longer stored"), redirect=False)


async def submit(request: Request, principal: Principal, feature: Feature, native: _FeatureRequest) -> str:
    """Submit as the native route does; the job id."""
    submitted = await run_in_threadpool(submit_request, node_of(request), principal, feature, native)
    return submitted.job_id


async def cancel(node: Node, job_id: str) -> None:
    def run() -> None:
        try:
            status = transitions.cancel_job(node.store, job_id, release=node.release, now=time.time())
        except Pocket3DError:
            return  # it ended meanwhile
        if status == JobStatus.RUNNING:
            node.scheduler.cancel(job_id)

    await run_in_threadpool(run)


class ClientGone(Exception):
    """The client disconnected while a synchronous route waited for its job (which was then cancelled)."""


async def wait_for_job(request: Request, job_id: str) -> JobRecord:
    """Wait for the job's final state, past ``server.max_wait`` up to ``compat.wait_limit``; when the client goes
    away meanwhile, cancel the job (raises ClientGone). Past the limit the job is cancelled too (CompatError 504)."""
    node = node_of(request)
    limit = node.settings.compat.wait_limit
    waiter = asyncio.ensure_future(node.bus.wait_final(job_id, limit))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, gone):
            if not task.done():
                task.cancel()
    if waiter in done:
        job = waiter.result()
        if job is not None and job.status.is_final:
            return job
        await cancel(node, job_id)
        raise CompatError(504, f"job {job_id} did not finish within compat.wait_limit ({limit} s) and was "
                          "cancelled", code=ErrorCode.TIMEOUT)
    log.info("compat: the client of job %s went away; cancelling it", job_id)
    await cancel(node, job_id)
    raise ClientGone(job_id)


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# -- models and their knobs ---------------------------------------------------------------------------------------

def choose_model(node: Node, flavour: str, feature: Feature, kinds: set[str], *, images: int = 0,
                 text: str | None = None, output_format: str = "glb", preferred: tuple[str, ...] = ()) -> str:
    """The model a flavour's job runs on: ``compat.<flavour>.model``; else the first of ``preferred`` that can
    serve the request here; else the registry's pick (pipeline.plan's errors when nothing fits)."""

    def plan(preference: str | None) -> str:
        return pipeline.plan(node.registry, feature, kinds, None, output_format, preference,
                             node.scheduler.device_list, node.scheduler.budget_of, images=images,
                             text=text).model.spec.id

    pinned = pinned_model(node, flavour, feature)
    if pinned:
        return plan(pinned)
    for preference in preferred:
        if preference in node.registry:
            try:
                return plan(preference)
            except Pocket3DError:
                continue
    return plan(None)


def pinned_model(node: Node, flavour: str, feature: Feature) -> str | None:
    """``compat.<flavour>.model`` where it names a model of ``feature`` (a flavour pins its main feature's model;
    its other features, say Tripo's rigging, keep the registry's pick). A model not registered at all is still
    returned, so the request says so."""
    pinned = node.settings.compat.flavour(flavour).model
    if pinned is None or (pinned in node.registry and node.registry.get(pinned).spec.feature != feature):
        return None
    return pinned


def model_knobs(model: RegisteredModel, knobs: dict[str, Any]) -> dict[str, Any]:
    """The client's knobs the model's parameters have, clamped to their bounds; the rest left out (the schemas
    forbid extra keys: Hunyuan's knobs sent to another model would be a 422)."""
    params = model.adapter_cls.Params if model.adapter_cls is not None else None
    if params is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in knobs.items():
        field = params.model_fields.get(name)
        if field is None or value is None:
            continue
        out[name] = _clamped(field, value)
    return out


def _clamped(field: Any, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    for meta in field.metadata:
        low = getattr(meta, "ge", None)
        high = getattr(meta, "le", None)
        if low is not None and value < low:
            value = type(value)(low)
        if high is not None and value > high:
            value = type(value)(high)
    return value


# -- inputs -------------------------------------------------------------------------------------------------------

def data_uri(encoded: str) -> str:
    """A plain base64 string (a ``data:`` prefix taken off, whitespace dropped) as a native data URI."""
    payload = encoded.split(",", 1)[1] if encoded.startswith("data:") and "," in encoded else encoded
    return f"data:application/octet-stream;base64,{''.join(payload.split())}"
