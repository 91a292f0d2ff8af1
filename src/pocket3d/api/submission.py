"""From a feature request to a persisted job: resolve inputs, pick the model, validate, then submit.

Everything that can be refused is checked before anything is written, and what is written (inline inputs,
the job, its stages) goes in one transaction, so a refused request leaves no row and no file behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from pocket3d import geometry
from pocket3d.api import media, uploads
from pocket3d.api.files import visible_file
from pocket3d.api.keys import Principal
from pocket3d.api.schemas import _FeatureRequest
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import transitions
from pocket3d.jobs.records import EXPORT_STAGE, IdempotencyKey, JobInput, NewJob, NewStage
from pocket3d.jobs.store import new_id
from pocket3d.models import pipeline
from pocket3d.models.registry import RegisteredModel
from pocket3d.models.spec import Feature
from pocket3d.node import Node

log = logging.getLogger(__name__)


@dataclass
class _Input:
    role: str  # image | mesh
    file_id: str
    format: str
    staged: uploads.StagedFile | None = None
    media: media.Media | None = None


def _resolve(node: Node, principal: Principal, ref: str, role: str, field: str) -> _Input:
    settings = node.settings
    if uploads.is_data_uri(ref):
        staged = uploads.stage_data_uri(ref, node.artifacts.tmp, int(settings.storage.max_file_size))
        try:
            found = media.inspect(staged.path, settings.storage.max_image_pixels, settings.storage.mesh_limits)
        except Pocket3DError as e:
            staged.discard()
            e.details.setdefault("field", field)
            raise
        inp = _Input(role, new_id("file"), found.format, staged, found)
    elif ref.startswith(("http://", "https://")):
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{field}: URLs are not fetched", {"field": field},
                            hint=UPLOAD_FIRST)
    else:
        if _looks_like_path(ref):
            raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"{field}: {ref!r} is a file name or path, not a file id",
                                {"field": field, "file_id": ref}, hint=UPLOAD_FIRST)
        record = visible_file(node, principal, ref, field, not_found_hint=UPLOAD_FIRST)
        inp = _Input(role, record.id, record.format)
        found = media.Media(record.kind, record.format, record.media_type)
    if found.kind != role:
        if inp.staged:
            inp.staged.discard()
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{field}: expected {_a(role)}, got {_a(found.kind)} "
                            f"({found.format})", {"field": field},
                            hint="images go in images, a mesh in mesh" if role in ("image", "mesh") else None)
    return inp


UPLOAD_FIRST = "upload it with POST /api/v1/files and pass the file_id it answers, or send a data: URI"


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
    key = None
    if idempotency_key is not None:
        key = IdempotencyKey(idempotency_key, _fingerprint(feature, req),
                             time.time() + node.settings.server.idempotency_ttl)
        earlier = _earlier_job(node, principal, key)
        if earlier is not None:  # a retry: answered before any input is read
            return Submitted(earlier, replayed=True)
    inputs: list[_Input] = []
    try:
        for i, ref in enumerate(getattr(req, "images", [])):
            inputs.append(_resolve(node, principal, ref, "image", f"images[{i}]"))
        mesh_ref = getattr(req, "mesh", None)
        if mesh_ref is not None:
            inputs.append(_resolve(node, principal, mesh_ref, "mesh", "mesh"))
        return Submitted(_submit(node, principal, feature, req, inputs, key), replayed=False)
    except transitions.IdempotencyKeyTaken:
        assert key is not None
        earlier = _earlier_job(node, principal, key)  # a concurrent submit with the key won the race
        if earlier is None:
            raise
        return Submitted(earlier, replayed=True)
    finally:
        for inp in inputs:
            if inp.staged is not None:
                inp.staged.discard()  # moved into the store by now, unless something failed


def _fingerprint(feature: Feature, req: _FeatureRequest) -> str:
    """The request as validated (defaults filled in), so two bodies that mean the same job match."""
    canonical = json.dumps({"feature": feature.value, "request": req.model_dump(mode="json")}, sort_keys=True,
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


def _submit(node: Node, principal: Principal, feature: Feature, req: _FeatureRequest, inputs: list[_Input],
            key: IdempotencyKey | None) -> str:
    settings = node.settings
    kinds = {inp.role for inp in inputs}
    if sum(inp.role == "image" for inp in inputs) > 1:
        kinds = (kinds - {"image"}) | {"multiview"}
    if getattr(req, "text_prompt", None):
        kinds.add("text")
    mesh_format = next((inp.format for inp in inputs if inp.role == "mesh"), None)
    plan = pipeline.plan(node.registry, feature, kinds, mesh_format, req.output_format, req.model_preference,
                         node.scheduler.device_list, node.scheduler.budget_of,
                         images=sum(inp.role == "image" for inp in inputs), text=getattr(req, "text_prompt", None),
                         params_of=lambda model: _params(model, req.parameters))
    model, params = plan.model, plan.params
    unavailable = geometry.FORMATS[req.output_format].unavailable
    if unavailable:
        others = [f for f in model.spec.supported_outputs
                  if f in geometry.FORMATS and not geometry.FORMATS[f].unavailable]
        raise Pocket3DError(ErrorCode.FORMAT_UNAVAILABLE, f"output_format {req.output_format!r}: {unavailable}",
                            {"output_format": req.output_format},
                            hint=f"ask for one of {', '.join(others)}" if others else None)
    export = {"format": req.output_format, "target_faces": getattr(req, "target_faces", None)}
    stages = [_stage(planned, params, alone=len(plan.stages) == 1) for planned in plan.stages]
    stages.append(NewStage(EXPORT_STAGE, None, export, weight=0.1 if len(stages) == 1 else 0.05))
    request = req.model_dump(mode="json", exclude={"images", "mesh", "parameters"})
    request["parameters"] = params.model_dump(mode="json")
    now = time.time()
    stored: list[str] = []
    with node.blob_lock:  # blobs enter the store and the rows that hold them commit together (Retention.collect)
        job_inputs = []
        for inp in inputs:
            if inp.staged is not None and inp.media is not None:
                sha, _ = node.artifacts.put(inp.staged.path, inp.staged.sha256)
                stored.append(sha)
                job_inputs.append(JobInput(inp.role, file_id=inp.file_id, sha256=sha, format=inp.media.format))
            else:
                job_inputs.append(JobInput(inp.role, file_id=inp.file_id))
        try:
            job_id = transitions.submit(
                node.store,
                NewJob(owner_id=principal.owner_id, feature=feature.value, model_id=model.spec.id, stages=stages,
                       request=request, inputs=job_inputs, priority=req.priority, idempotency=key),
                queue_size=settings.scheduler.queue_size, max_attempts=settings.scheduler.max_attempts, now=now,
                owner_limit=settings.scheduler.max_jobs_per_owner)
        except BaseException:
            node.retention.collect(stored)
            raise
    node.scheduler.wake()
    log.info("job %s submitted by %s: %s on %s, %d input file(s)", job_id, principal.owner_id, feature.value,
             model.spec.id, len(inputs))
    return job_id
