"""From a feature request to a persisted job: resolve inputs, pick the model, validate, then submit.

Everything that can be refused is checked before anything is written, and what is written (inline inputs,
the job, its stages) goes in one transaction, so a refused request leaves no row and no file behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from pocket3d import formats, geometry, outbound
from pocket3d.api import media, uploads
from pocket3d.api.inputs import converted_mesh, visible_file, visible_job, visible_output
from pocket3d.api.keys import Principal
from pocket3d.api.schemas import ConvertRequest, _FeatureRequest, _ViewsRequest
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import transitions
from pocket3d.jobs.records import EXPORT_STAGE, ORIENT_STAGE, IdempotencyKey, JobInput, NewJob, NewStage
from pocket3d.jobs.store import new_id
from pocket3d.models import pipeline
from pocket3d.models.registry import RegisteredModel
from pocket3d.models.spec import Feature
from pocket3d.node import Node

log = logging.getLogger(__name__)
UP_AXES = ("auto", "y", "z")
DATA_URI_SHOWN = 64  # characters of a data URI a job's input shows in full; longer ones are shortened


@dataclass
class _Input:
    role: str  # image | mesh
    file_id: str  # an upload's id, a source job's id (with ``output``), or a fresh id for inline bytes
    format: str
    staged: uploads.StagedFile | None = None
    media: media.Media | None = None
    output: str | None = None  # a source job's output, by name
    stem: str | None = None  # what downloads made from it are named after (the upload's file name)


_OUTPUT_REF = re.compile(r"(job_[0-9A-Za-z]+)/([\w.-]+)")


def _resolve(node: Node, principal: Principal, ref: str, role: str, field: str) -> _Input:
    settings = node.settings
    url = ref.startswith(("http://", "https://"))
    if uploads.is_data_uri(ref) or url:
        staged = _fetched(node, ref, role, field) if url else \
            uploads.stage_data_uri(ref, node.artifacts.tmp, int(settings.storage.max_file_size))
        try:
            found = media.inspect(staged.path, settings.storage.max_image_pixels, settings.storage.mesh_limits)
        except Pocket3DError as e:
            staged.discard()
            e.details.setdefault("field", field)
            raise
        inp = _Input(role, new_id("file"), found.format, staged, found)
    elif m := _OUTPUT_REF.fullmatch(ref):
        job, output = visible_output(node, principal, m.group(1), m.group(2), field)
        kind = "image" if output.media_type.startswith("image/") else \
            "mesh" if output.format in geometry.LOADABLE else output.format
        inp = _Input(role, job.id, output.format, output=output.name, stem=job.request.get("download_name"))
        found = media.Media(kind, output.format, output.media_type)
    elif ref.startswith("job_"):
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{field}: {ref!r} names a job; name one of its outputs",
                            {"field": field}, hint=f"for example {ref.split('/')[0]}/model.glb: the job's "
                            "outputs[].name lists them (GET /api/v1/jobs/{job_id})")
    else:
        if _looks_like_path(ref):
            raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"{field}: {ref!r} is a file name or path, not a file id",
                                {"field": field, "file_id": ref}, hint=UPLOAD_FIRST)
        record = visible_file(node, principal, ref, field, not_found_hint=UPLOAD_FIRST)
        inp = _Input(role, record.id, record.format, stem=download_stem(record.filename))
        found = media.Media(record.kind, record.format, record.media_type)
    if found.kind != role:
        if inp.staged:
            inp.staged.discard()
        if inp.output is not None and found.kind not in ("image", "mesh"):
            raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{field}: {ref} is {found.format.upper()}, which cannot "
                                f"be read as {_a(role)} here", {"field": field},
                                hint=f"name the job's model.glb instead (POST /api/v1/jobs/{inp.file_id}/convert "
                                "writes it if the job has none)")
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{field}: expected {_a(role)}, got {_a(found.kind)} "
                            f"({found.format})", {"field": field},
                            hint="images go in images, a mesh in mesh" if role in ("image", "mesh") else None)
    return inp


# The suffixes of what users upload, taken off a file name to name what is made from it.
_UPLOAD_SUFFIXES = {".zip", ".png", ".jpg", ".jpeg", ".webp", ".glb", ".gltf", ".obj", ".ply", ".stl", ".fbx"}


def download_stem(filename: str | None) -> str | None:
    """``goblin`` from ``goblin.obj`` (or ``goblin.obj.zip``), safe in a Content-Disposition; None without a name."""
    if not filename:
        return None
    stem = filename
    while (dot := stem.rfind(".")) > 0 and stem[dot:].lower() in _UPLOAD_SUFFIXES:
        stem = stem[:dot]
    stem = re.sub(r"[^\w-]+", "_", stem).strip("_")[:64]
    return stem or None


# What a feature adds to the name of the input it worked on: goblin-rigged.fbx.
_MADE = {Feature.TEXTURE_GENERATION: "textured", Feature.SEGMENTATION: "segmented", Feature.AUTO_RIGGING: "rigged"}


def _download_name(feature: Feature, inputs: list[_Input]) -> str | None:
    """Downloads of the job are named after its subject (the mesh it worked on, or the first image), when that
    was an upload with a name or another job's output; else after the job (the download route's default)."""
    subject = next((inp for inp in inputs if inp.role == "mesh"), inputs[0] if inputs else None)
    if subject is None or subject.stem is None:
        return None
    made = _MADE.get(feature)
    return subject.stem if made is None or subject.stem.endswith(f"-{made}") else f"{subject.stem}-{made}"


UPLOAD_FIRST = "upload it with POST /api/v1/files and pass the file_id it answers, or send a data: URI"


def _fetched(node: Node, url: str, role: str, field: str) -> uploads.StagedFile:
    """An image input given as a URL, fetched through the guarded outbound client where inputs.allow_urls says
    so; the refusal or failure says why in the API's terms."""
    inputs = node.settings.inputs
    details = {"field": field, "url": url}
    if not inputs.allow_urls:
        raise Pocket3DError(ErrorCode.INPUT_URL_FORBIDDEN, f"{field}: URLs are not fetched on this server", details,
                            hint=UPLOAD_FIRST + " (the server's operator can allow image URLs: inputs.allow_urls)")
    if role != "image":
        raise Pocket3DError(ErrorCode.INPUT_URL_FORBIDDEN, f"{field}: only images may be given as URLs", details,
                            hint=UPLOAD_FIRST)
    try:
        data = outbound.fetch_image(node.url_inputs, url)
    except (outbound.ForbiddenTarget, outbound.InvalidTarget) as e:
        raise Pocket3DError(ErrorCode.INPUT_URL_FORBIDDEN, f"{field}: {e}", details,
                            hint=f"URL inputs may use {', '.join(s + '://' for s in inputs.url_schemes)}; "
                            + UPLOAD_FIRST) from None
    except outbound.OutboundError as e:
        raise Pocket3DError(ErrorCode.INPUT_URL_FAILED, f"{field}: fetching {url} failed: {e}", details,
                            hint=UPLOAD_FIRST) from None
    return uploads.stage_bytes(data, node.artifacts.tmp)


def _looks_like_path(ref: str) -> bool:
    """A local file name or path given where a file id belongs (``chair.png``, ``./in/chair.png``, ``C:\\x``)."""
    return ref.startswith(("/", "./", "../", "~")) or "\\" in ref or (
        not ref.startswith(("file_", "job_")) and "." in ref.rsplit("/", 1)[-1])


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


@dataclass(frozen=True)
class Submitted:
    job_id: str
    replayed: bool  # an earlier submit with the same Idempotency-Key made this job; nothing new was written


def submit_request(node: Node, principal: Principal, feature: Feature, req: _FeatureRequest,
                   idempotency_key: str | None = None) -> Submitted:
    def make(key: IdempotencyKey | None) -> str:
        if req.webhook_url is not None:  # before any input is staged: a refused URL costs nothing
            node.webhooks.check_url(req.webhook_url)
        inputs: list[_Input] = []
        images, view_names = req.ordered_views() if isinstance(req, _ViewsRequest) else ([], None)
        try:
            for i, ref in enumerate(images):
                field = f"views.{view_names[i]}" if view_names else f"images[{i}]"
                inputs.append(_resolve(node, principal, ref, "image", field))
            mesh_ref = getattr(req, "mesh", None)
            if mesh_ref is not None:
                inputs.append(_resolve(node, principal, mesh_ref, "mesh", "mesh"))
            return _persist(node, principal, _plan_job(node, feature, req, inputs, key, view_names))
        finally:
            for inp in inputs:
                if inp.staged is not None:
                    inp.staged.discard()  # moved into the store by now, unless something failed

    return _once(node, principal, idempotency_key, lambda: _fingerprint(feature.value, req), make)


def inline_submittable(node: Node, req: _FeatureRequest, idempotency_key: str | None) -> bool:
    """Whether this submit can be made in the event loop (:func:`submit_inline`): nothing before its transaction
    would block the loop (no input to read or stage, no webhook address to resolve, no Idempotency-Key to look up),
    and the store groups commits, so the loop waits for its transaction without a thread."""
    if not node.store.commits_in_groups or idempotency_key is not None or req.webhook_url is not None:
        return False
    images = req.ordered_views()[0] if isinstance(req, _ViewsRequest) else []
    return not images and getattr(req, "mesh", None) is None


async def submit_inline(node: Node, principal: Principal, feature: Feature, req: _FeatureRequest) -> Submitted:
    """:func:`submit_request` for a submit :func:`inline_submittable` allows: planned in the event loop (CPU work
    only), written in a group commit the loop waits for. No thread hop: a burst of text prompts spent more of the
    process on handing each submit to a thread and back than on the submit itself."""
    view_names = req.ordered_views()[1] if isinstance(req, _ViewsRequest) else None
    job = _plan_job(node, feature, req, [], None, view_names)

    async def write() -> str:
        job_id = await transitions.submit_async(node.store, _new_job(principal, job, []), now=time.time(),
                                                **_limits(node))
        _submitted(node, principal, job, job_id)
        return job_id

    # Shielded: a request cancelled while its job commits (a shutdown's deadline) still logs it and wakes the
    # scheduler, as a thread would have.
    return Submitted(await asyncio.shield(write()), replayed=False)


def submit_conversion(node: Node, principal: Principal, job_id: str, req: ConvertRequest,
                      idempotency_key: str | None = None) -> Submitted:
    return _once(node, principal, idempotency_key, lambda: _fingerprint(f"convert {job_id}", req),
                 lambda key: _convert(node, principal, job_id, req, key))


def _once(node: Node, principal: Principal, idempotency_key: str | None, fingerprint: Callable[[], str],
          make: Callable[[IdempotencyKey | None], str]) -> Submitted:
    """``make`` the job, unless an earlier submit with this Idempotency-Key made it already (the request's
    ``fingerprint`` is worked out only for a submit with a key)."""
    key = None
    if idempotency_key is not None:
        key = IdempotencyKey(idempotency_key, fingerprint(), time.time() + node.settings.server.idempotency_ttl)
        earlier = _earlier_job(node, principal, key)
        if earlier is not None:  # a retry: answered before any input is read
            return Submitted(earlier, replayed=True)
    try:
        return Submitted(make(key), replayed=False)
    except transitions.IdempotencyKeyTaken:
        assert key is not None
        earlier = _earlier_job(node, principal, key)  # a concurrent submit with the key won the race
        if earlier is None:
            raise
        return Submitted(earlier, replayed=True)


def _fingerprint(what: str, req: BaseModel) -> str:
    """The request as validated (defaults filled in), so two bodies that mean the same job match."""
    canonical = json.dumps({"feature": what, "request": req.model_dump(mode="json")}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _earlier_job(node: Node, principal: Principal, key: IdempotencyKey) -> str | None:
    found = node.store.idempotent_job(principal.owner_id, key.key, time.time())
    if found is None:
        return None
    job_id, fingerprint = found
    if fingerprint != key.fingerprint:
        raise Pocket3DError(ErrorCode.IDEMPOTENCY_KEY_REUSED,
                            f"Idempotency-Key {key.key!r} was used for another request (job {job_id})",
                            {"job_id": job_id}, hint="send a new key (a new UUID) with a new request; the same "
                            "request with this key returns that job")
    return job_id


def _params(model: RegisteredModel, parameters: dict) -> BaseModel:
    """The client's parameters, validated by the model they are for."""
    assert model.adapter_cls is not None  # plan() offers available models only
    try:
        return model.adapter_cls.Params.model_validate(parameters)
    except ValidationError as e:
        errors = [{"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]} for err in e.errors()]
        first = errors[0]
        raise Pocket3DError(ErrorCode.INVALID_PARAMETERS,
                            f"parameters.{'.'.join(first['loc'])}: {first['msg']} (model {model.spec.id!r})",
                            {"model": model.spec.id, "errors": errors},
                            hint=f"model {model.spec.id!r} takes the parameters in its parameters_schema "
                            "(GET /api/v1/system/models)") from None


def _stage(planned: pipeline.PlannedStage, params: object, alone: bool) -> NewStage:
    """A planned stage as a record: the main model takes the client's parameters, a helper its defaults."""
    adapter = planned.model.adapter_cls
    assert adapter is not None
    chosen = params if planned.main else adapter.Params()
    weight = 0.9 if alone else pipeline.STAGE_WEIGHTS["main" if planned.main else planned.name]
    return NewStage(planned.name, planned.model.spec.id, chosen.model_dump(mode="json"), weight=weight)


def _up_axis(parameters: dict) -> str:
    """``parameters.up_axis`` is pocket3d's, not the model's: the orient stage takes it (see geometry.orientation)."""
    value = parameters.pop("up_axis", "auto")
    if value not in UP_AXES:
        raise Pocket3DError(ErrorCode.INVALID_PARAMETERS,
                            f"parameters.up_axis: one of {list(UP_AXES)}, not {value!r}",
                            {"errors": [{"loc": ["up_axis"], "msg": f"one of {list(UP_AXES)}", "type": "enum"}]},
                            hint="y for a mesh that stands along Y (glTF's way), z for one that stands along Z "
                            "(Blender's, STL's); auto judges by the file's format and what the shape stands on")
    return value


def _check_views(view_names: list[str] | None, parameters: dict) -> None:
    for name in ("azimuths", "views"):
        if view_names and name in parameters:
            raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"views names the images' directions; give views or "
                                f"parameters.{name}, not both", {"field": f"parameters.{name}"},
                                hint=f"drop parameters.{name}, or send the images as images")


def echo(req: BaseModel) -> dict:
    """The request as the job shows it back: everything the client sent or left at its default, data URIs
    shortened (the bytes they carried are among the job's inputs). The formats show once, as the list written
    (``output_format`` is its shorthand: both keys would read as a request that sent both, which is refused)."""
    echoed = req.model_dump(mode="json")
    if "output_format" in echoed:
        del echoed["output_format"]
        echoed["output_formats"] = req.formats  # type: ignore[attr-defined]
    return _shorten(echoed)


def _shorten(value: object) -> object:
    if isinstance(value, str) and uploads.is_data_uri(value) and len(value) > DATA_URI_SHOWN:
        head, _, data = value.partition(",")
        return f"{head},{data[:16]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    return value


@dataclass(frozen=True)
class _Planned:
    """A job as its request asks for it, not written yet."""

    feature: Feature
    model_id: str
    stages: list[NewStage]
    request: dict
    inputs: list[_Input]
    priority: int
    key: IdempotencyKey | None
    echoed: dict | None = None


def _plan_job(node: Node, feature: Feature, req: _FeatureRequest, inputs: list[_Input], key: IdempotencyKey | None,
              view_names: list[str] | None = None) -> _Planned:
    kinds = {inp.role for inp in inputs}
    if sum(inp.role == "image" for inp in inputs) > 1:
        kinds = (kinds - {"image"}) | {"multiview"}
    if getattr(req, "text_prompt", None):
        kinds.add("text")
    mesh_format = next((inp.format for inp in inputs if inp.role == "mesh"), None)
    parameters = dict(req.parameters)
    up_axis = _up_axis(parameters) if mesh_format is not None else None
    _check_views(view_names, parameters)
    plan = pipeline.plan(node.registry, feature, kinds, mesh_format, req.formats, req.model_preference,
                         node.scheduler.device_list, node.scheduler.budget_of,
                         images=sum(inp.role == "image" for inp in inputs), text=getattr(req, "text_prompt", None),
                         params_of=lambda model: _params(model, parameters),
                         texture=getattr(req, "texture", True))
    model, params = plan.model, plan.params
    _check_writable(req.formats, model.spec.supported_outputs)
    export = {"formats": req.formats, "target_faces": getattr(req, "target_faces", None)}
    if getattr(req, "texture", True) is False:
        export["texture"] = False
    if getattr(req, "view_renders", False):
        export["view_renders"] = True
    stages = [_stage(planned, params, alone=len(plan.stages) == 1) for planned in plan.stages]
    stages.append(NewStage(EXPORT_STAGE, None, export, weight=0.1 if len(stages) == 1 else 0.05))
    if up_axis is not None:  # a mesh input: turned Y-up first, whatever model follows
        stages.insert(0, NewStage(ORIENT_STAGE, None, {"up_axis": up_axis}, weight=0.05))
    request = req.model_dump(mode="json", exclude={"images", "mesh", "parameters", "output_format",
                                                   "output_formats", "views"})
    request["output_formats"] = req.formats
    request["parameters"] = params.model_dump(mode="json")
    if view_names:
        request["view_names"] = view_names
    if name := _download_name(feature, inputs):
        request["download_name"] = name
    return _Planned(feature, model.spec.id, stages, request, inputs, req.priority, key, echo(req))


def _check_writable(asked: list[str], offered: tuple[str, ...] | list[str]) -> None:
    """Refuse up front a format that cannot be written here (FBX without Blender's environment, ...)."""
    for fmt in asked:
        unavailable = geometry.FORMATS[fmt].unavailable
        if unavailable:
            others = [f for f in offered if f in geometry.FORMATS and not geometry.FORMATS[f].unavailable]
            raise Pocket3DError(ErrorCode.FORMAT_UNAVAILABLE, f"output format {fmt!r}: {unavailable}",
                                {"output_format": fmt}, hint=f"ask for one of {', '.join(others)}" if others else None)


def _convert(node: Node, principal: Principal, job_id: str, req: ConvertRequest, key: IdempotencyKey | None) -> str:
    """An export-only job: the result of a succeeded job (its model's mesh, before any format was written) in other
    formats, the same way its own export stage wrote them; the model does not run again."""
    source, mesh = converted_mesh(node, principal, visible_job(node, principal, job_id))
    feature = Feature(source.feature)
    offered = formats.formats_for(feature.value)
    model = node.registry.get(source.model_id) if source.model_id in node.registry else None
    if model is not None:
        offered = tuple(f for f in offered if f in model.spec.supported_outputs)
    refused = [f for f in req.formats if f not in offered]
    if refused:
        raise Pocket3DError(ErrorCode.UNSUPPORTED_OUTPUT_FORMAT, f"the result of a {feature.value} job cannot be "
                            f"written as {refused[0]!r} without losing what the job made",
                            {"supported_outputs": list(offered)}, hint=f"ask for one of {', '.join(offered)}")
    _check_writable(req.formats, offered)
    export = next(s for s in source.stages if s.name == EXPORT_STAGE).params
    stage = NewStage(EXPORT_STAGE, None, {**export, "formats": req.formats}, weight=1.0)
    request = {"convert_of": source.id, "output_formats": req.formats}
    if source.request.get("download_name"):
        request["download_name"] = source.request["download_name"]
    inp = _Input("mesh", source.id, mesh.format, output=mesh.name)
    return _persist(node, principal, _Planned(feature, source.model_id, [stage], request, [inp], 0, key,
                                              {"convert_of": source.id, **echo(req)}))


def _persist(node: Node, principal: Principal, job: _Planned) -> str:
    stored: list[str] = []
    # blobs enter the store and the rows that hold them commit together (Retention.collect)
    with node.blob_lock.writing(node.artifacts) as blobs:
        job_inputs = []
        for inp in job.inputs:
            if inp.staged is not None and inp.media is not None:
                sha, _ = blobs.put(inp.staged.path, inp.staged.sha256)
                stored.append(sha)
                job_inputs.append(JobInput(inp.role, file_id=inp.file_id, sha256=sha, format=inp.media.format))
            elif inp.output is not None:
                job_inputs.append(JobInput(inp.role, job_id=inp.file_id, output=inp.output))
            else:
                job_inputs.append(JobInput(inp.role, file_id=inp.file_id))
        try:
            job_id = transitions.submit(node.store, _new_job(principal, job, job_inputs), now=time.time(),
                                        **_limits(node))
        except BaseException:
            node.retention.collect(stored)
            raise
    _submitted(node, principal, job, job_id)
    return job_id


def _new_job(principal: Principal, job: _Planned, inputs: list[JobInput]) -> NewJob:
    return NewJob(owner_id=principal.owner_id, feature=job.feature.value, model_id=job.model_id, stages=job.stages,
                  request=job.request, inputs=inputs, priority=job.priority, idempotency=job.key, input=job.echoed)


def _limits(node: Node) -> dict[str, int]:
    scheduler = node.settings.scheduler
    return {"queue_size": scheduler.queue_size, "max_attempts": scheduler.max_attempts,
            "owner_limit": scheduler.max_jobs_per_owner}


def _submitted(node: Node, principal: Principal, job: _Planned, job_id: str) -> None:
    node.scheduler.wake()
    log.info("job %s submitted by %s: %s on %s, %d input file(s)", job_id, principal.owner_id, job.feature.value,
             job.model_id, len(job.inputs), extra={"job_id": job_id, "model": job.model_id})
