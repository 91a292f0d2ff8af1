"""The blocking client: :class:`Client`, its :class:`Job` handles and the ``jobs`` namespace."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

import httpx
from httpx_sse import SSEError, connect_sse

from pocket3d.api.schemas import (
    Caller,
    DeliveryList,
    DeliveryView,
    FileInfo,
    FilePage,
    Health,
    JobAccepted,
    JobPage,
    JobStatus,
    JobView,
    ModelList,
    OutputFormat,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointView,
    WebhookEventName,
    WebhookSecret,
)
from pocket3d.client import _core
from pocket3d.client._core import (
    FINAL_STATES,
    AUTO_RIGGING,
    MESH_GENERATION,
    SEGMENTATION,
    TEXTURE_GENERATION,
    Config,
    Deadline,
    FeatureFilter,
    JobEvent,
    MeshFields,
    MeshInputFields,
    Page,
    PartialFile,
    ProgressCallback,
    StatusFilter,
    TextureFields,
    Uploadable,
    parse,
)
from pocket3d.client.errors import APIError, api_error


class Client:
    """A pocket3d server. ``url`` and ``api_key`` default to ``POCKET3D_URL`` and ``POCKET3D_API_KEY``, then to
    a server on this machine (http://127.0.0.1:8000) without a key.

    Reads, cancels and submits (each carries an ``Idempotency-Key``) are retried on connection errors, 429 and
    502/503/504, ``max_retries`` times with exponential backoff, honouring ``Retry-After``; uploads only when the
    connection could not be made at all.
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3):
        self.config = Config.from_args(url, api_key, timeout, max_retries)
        self._http = httpx.Client(base_url=self.config.api_url, headers=self.config.headers, timeout=timeout)
        self.jobs = Jobs(self)
        self.webhooks = Webhooks(self)
        self.files = Files(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.config.server_url!r})"

    # -- the API ------------------------------------------------------------------------------------------------

    def upload(self, file: Uploadable, *, filename: str | None = None) -> FileInfo:
        """Upload an image or a mesh: a path, bytes, a binary file or a PIL image. Pass the result (or its
        ``file_id``) as ``images`` or ``mesh``."""
        name, stream, opened = _core.upload_file(file, filename)
        try:
            r = self._send("POST", "/files", safe=False,
                           files={"file": (name, stream, "application/octet-stream")})
        finally:
            if opened:
                stream.close()
        return parse(FileInfo, r)

    def generate_mesh(self, **fields: Unpack[MeshFields]) -> Job:
        """Text (``text_prompt``) and/or image(s) (``images``) to a textured mesh."""
        return self._submit(MESH_GENERATION, fields)

    def generate_texture(self, **fields: Unpack[TextureFields]) -> Job:
        """A texture for ``mesh``, from ``text_prompt`` and/or ``images``."""
        return self._submit(TEXTURE_GENERATION, fields)

    def segment(self, **fields: Unpack[MeshInputFields]) -> Job:
        """Split ``mesh`` into labelled parts."""
        return self._submit(SEGMENTATION, fields)

    def rig(self, **fields: Unpack[MeshInputFields]) -> Job:
        """A skeleton and skin weights for ``mesh``."""
        return self._submit(AUTO_RIGGING, fields)

    def models(self) -> ModelList:
        """Every registered model, whether it is available on the server and if not, why."""
        return parse(ModelList, self._send("GET", "/system/models", safe=True))

    def health(self) -> Health:
        return parse(Health, self._send("GET", "/system/health", safe=True))

    def me(self) -> Caller:
        """Whose the key is (owner, role, key id) and this server's limits for it (upload size, jobs at once)."""
        return parse(Caller, self._send("GET", "/me", safe=True))

    # -- the mechanism ------------------------------------------------------------------------------------------

    def _submit(self, feature: _core.Feature, fields: Mapping[str, Any]) -> Job:
        sub = _core.submission(feature, fields)
        return self._answered(self._send("POST", sub.path, safe=True, json=sub.body, headers=sub.headers))

    def _answered(self, r: httpx.Response) -> Job:
        """The job a submit answered with: 200 carries it (a retried submit's, or finished within ?wait), 202 its
        id."""
        if r.status_code == 200:
            return Job(self, parse(JobView, r))
        return self.jobs.get(parse(JobAccepted, r).job_id)

    def _send(self, method: str, url: str, *, safe: bool, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                r = self._http.request(method, url, **kwargs)
            except httpx.TransportError as e:
                if attempt < self.config.max_retries and (safe or isinstance(e, _core.NOT_SENT)):
                    time.sleep(_core.retrying(method, url, type(e).__name__, attempt))
                    attempt += 1
                    continue
                raise _core.connection_error(self.config, e) from e
            if r.is_success:
                return r
            error = api_error(r)
            if safe and attempt < self.config.max_retries and _core.is_transient(error):
                time.sleep(_core.retrying(method, url, error, attempt, error.retry_after))
                attempt += 1
                continue
            raise error

    def _follow(self, job: Job, deadline: Deadline) -> Iterator[JobEvent]:
        """The job's events until a final state, over SSE; when the stream breaks, one GET, then the stream again
        from the last event seen (Last-Event-ID)."""
        last_id: str | None = None
        seen = job.view
        failures = 0
        while True:
            try:
                headers = {"Last-Event-ID": last_id} if last_id else {}
                with connect_sse(self._http, "GET", f"/jobs/{job.id}/events", headers=headers,
                                 timeout=self.config.stream_timeout(deadline.remaining())) as source:
                    if not source.response.is_success:
                        source.response.read()
                        error = api_error(source.response)
                        if not _core.is_transient(error):
                            raise error
                    else:
                        for sse in source.iter_sse():
                            event = _core.job_event(sse)
                            if event is None:
                                continue
                            last_id, failures = sse.id or last_id, 0
                            if event.job != seen:  # not already read by a GET while the stream was down
                                seen = event.job
                                yield event
                            if event.is_final:
                                return
                            deadline.check(seen)
            except httpx.ReadTimeout:
                if deadline.timeout is not None:  # a quiet stretch, not a dead link: look at the clock, listen again
                    deadline.check(seen)
                    continue
            except (httpx.TransportError, SSEError):
                pass
            deadline.check(seen)
            seen_before = seen
            seen = self.jobs.get(job.id).view
            if seen != seen_before:
                yield JobEvent("poll", None, seen)
            if seen.status in FINAL_STATES:
                return
            time.sleep(deadline.cap(_core.backoff(failures)))
            failures += 1

    def _download(self, target: _core.Target) -> Path:
        output = target.output
        part = PartialFile(target)
        attempt = 0
        while not part.complete:
            try:
                with self._http.stream("GET", self.config.link(output.url),
                                       headers=part.range_headers()) as r:
                    if not r.is_success:
                        r.read()
                        raise api_error(r)
                    with part.open(r) as f:
                        for chunk in r.iter_bytes():
                            part.write(f, chunk)
            except httpx.TransportError as e:  # resumed from where it broke
                if attempt >= self.config.max_retries:
                    raise _core.connection_error(self.config, e) from e
                time.sleep(_core.backoff(attempt))
                attempt += 1
            except APIError as e:
                if attempt >= self.config.max_retries or not _core.is_transient(e):
                    raise
                time.sleep(_core.backoff(attempt, e.retry_after))
                attempt += 1
        return part.finish()


class Jobs:
    """``client.jobs``: jobs by id."""

    def __init__(self, client: Client):
        self._client = client

    def get(self, job_id: str) -> Job:
        return Job(self._client, parse(JobView, self._client._send("GET", f"/jobs/{job_id}", safe=True)))

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once, a running one at its next progress report."""
        return Job(self._client, parse(JobView, self._client._send("POST", f"/jobs/{job_id}/cancel", safe=True)))

    def convert(self, job_id: str, output_formats: Sequence[OutputFormat], *,
                idempotency_key: str | None = None) -> Job:
        """A new job that writes a succeeded job's result in other formats, without running its model again
        (formats its feature offers: a rig glb or fbx)."""
        fields: dict[str, Any] = {"output_formats": list(output_formats)}
        if idempotency_key:
            fields["idempotency_key"] = idempotency_key
        sub = _core.conversion(job_id, fields)
        r = self._client._send("POST", sub.path, safe=True, json=sub.body, headers=sub.headers)
        return self._client._answered(r)

    def list(self, *, status: StatusFilter | None = None, feature: FeatureFilter | None = None, limit: int = 20,
             cursor: str | None = None) -> Page[Job]:
        """Your jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""
        params = {k: v for k, v in {"status": status, "feature": feature, "limit": limit, "cursor": cursor}.items()
                  if v is not None}
        page = parse(JobPage, self._client._send("GET", "/jobs", safe=True, params=params))
        return Page([Job(self._client, view) for view in page.jobs], page.next_cursor)


class Webhooks:
    """``client.webhooks``: endpoints that receive your jobs' events, signed by the Standard Webhooks scheme."""

    def __init__(self, client: Client):
        self._client = client

    def create(self, url: str, events: Sequence[WebhookEventName], *,
               description: str | None = None) -> WebhookEndpointCreated:
        """Register an endpoint (up to five); its ``secret`` (whsec_…) is in this answer only."""
        body = _core.validated(WebhookEndpointCreate,
                               {"url": url, "events": list(events), "description": description})
        return parse(WebhookEndpointCreated, self._client._send("POST", "/webhooks", safe=False, json=body))

    def get(self, endpoint_id: str) -> WebhookEndpointView:
        return parse(WebhookEndpointView, self._client._send("GET", f"/webhooks/{endpoint_id}", safe=True))

    def delete(self, endpoint_id: str) -> None:
        self._client._send("DELETE", f"/webhooks/{endpoint_id}", safe=True)

    def secret(self) -> str:
        """The secret that signs deliveries to your requests' ``webhook_url``."""
        return parse(WebhookSecret, self._client._send("GET", "/webhooks/secret", safe=True)).secret

    def deliveries(self, job_id: str) -> list[DeliveryView]:
        """A job's deliveries and every attempt of each."""
        return parse(DeliveryList, self._client._send("GET", f"/jobs/{job_id}/deliveries", safe=True)).deliveries

    def list(self) -> list[WebhookEndpointView]:
        return parse(WebhookEndpointList, self._client._send("GET", "/webhooks", safe=True)).endpoints


class Files:
    """``client.files``: your uploads (``client.upload`` makes them)."""

    def __init__(self, client: Client):
        self._client = client

    def get(self, file_id: str) -> FileInfo:
        return parse(FileInfo, self._client._send("GET", f"/files/{file_id}", safe=True))

    def delete(self, file_id: str) -> None:
        """At once: no job can name it afterwards (one that already took it keeps it until it ends)."""
        self._client._send("DELETE", f"/files/{file_id}", safe=True)

    def list(self, *, limit: int = 20, cursor: str | None = None) -> Page[FileInfo]:
        """Your uploads that have not expired, newest first."""
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = parse(FilePage, self._client._send("GET", "/files", safe=True, params=params))
        return Page(page.files, page.next_cursor)


class Job:
    """A job on the server. ``view`` is its state as last seen (the server's ``JobView``)."""

    def __init__(self, client: Client, view: JobView):
        self._client = client
        self.view = view

    @property
    def id(self) -> str:
        return self.view.job_id

    @property
    def status(self) -> JobStatus:
        return self.view.status

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status!r}, progress={self.view.progress:g})"

    def refresh(self) -> JobView:
        self.view = self._client.jobs.get(self.id).view
        return self.view

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """Every change from now until a final state (Server-Sent Events, resumed after a broken connection;
        polling while the stream cannot be had). Raises :class:`WaitTimeout` after ``timeout`` seconds."""
        if self.view.status in FINAL_STATES:
            return
        for event in self._client._follow(self, Deadline(timeout)):
            self.view = event.job
            yield event

    def wait(self, timeout: float | None = None, *, on_progress: ProgressCallback | None = None) -> JobView:
        """Block until the job ends; ``on_progress(view)`` hears every change. Returns the succeeded job, or raises
        :class:`JobFailed` (with the job's code and message), :class:`JobCancelled` or :class:`WaitTimeout`."""
        for event in self.events(timeout):
            if on_progress is not None:
                on_progress(event.job)
        return _core.outcome(self.view)

    def cancel(self) -> JobView:
        self.view = self._client.jobs.cancel(self.id).view
        return self.view

    def convert(self, output_formats: Sequence[OutputFormat], *, idempotency_key: str | None = None) -> Job:
        """A new job with this one's result in other formats (see ``client.jobs.convert``)."""
        return self._client.jobs.convert(self.id, output_formats, idempotency_key=idempotency_key)

    def download(self, to: str | os.PathLike[str] = ".", *, output: str | None = None) -> dict[str, Path]:
        """Save the outputs of a succeeded job; returns where each went, by output name. ``to`` a directory (one
        that exists, or a path without a suffix): every output, or only ``output``, under the name the server
        gives it (``chair.glb``, ``chair-preview.png``); a file path: that one output, or the model file in the
        format its suffix names (``chair.glb``). Streams to ``<path>.part``, resumes a broken transfer with Range,
        and checks size and SHA-256 before renaming."""
        if self.view.status not in FINAL_STATES:
            self.refresh()
        return {target.output.name: self._client._download(target)
                for target in _core.download_targets(self.view, to, output)}
