from __future__ import annotations

from fastapi import APIRouter

from pocket3d import __version__, geometry
from pocket3d.api import redact
from pocket3d.api.deps import CallerDep, NodeDep, PrincipalDep
from pocket3d.api.openapi import error_responses
from pocket3d.api.schemas import Caller, CallerLimits, DeviceInfo, Health, ModelInfo, ModelList, Readiness
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models import pipeline
from pocket3d.models.spec import Feature
from pocket3d.node import Node, Role
from pocket3d.scheduler.devices import read as read_device

router = APIRouter(prefix="/system", tags=["System"])
caller_router = APIRouter(tags=["System"])


@router.get("/health", response_model=Health, operation_id="getHealth",
            summary="The process is alive (no dependencies checked)")
async def health() -> Health:
    """Liveness, for load balancers and orchestrators: answers 200 while the process serves requests."""
    return Health(status="ok", version=__version__)


def readiness(node: Node) -> Readiness:
    reasons: list[str] = []
    try:
        node.store.ping()
    except Exception as e:
        reasons.append(f"store unreachable: {type(e).__name__}: {e}")
    if (storage := node.artifacts.problem()) is not None:
        reasons.append(storage)
    if (disk := node.storage_health.problem()) is not None:
        reasons.append(disk)
    if node.role is Role.GATEWAY and node.listener is not None and not node.listener.connected.is_set():
        reasons.append("not listening for the other processes' changes (PostgreSQL LISTEN): reconnecting; its job "
                       "streams are paused meanwhile")
    devices = node.scheduler.device_list
    if not devices and node.role is Role.EMBEDDED:  # a gateway's devices are its workers', maybe scaled to zero
        reasons.append("no device found")
    for feature in Feature:
        if feature.is_stage_only:  # only needed by the models that ask for them, which say so when they do
            continue
        models = node.registry.for_feature(feature)
        why = {m.spec.id: pipeline.model_reasons(node.registry, m, devices, node.scheduler.budget_of)
               for m in models}
        if not models:
            reasons.append(f"no available model for {feature.value} (none registered)")
        elif all(why.values()):
            reasons.append(f"no available model for {feature.value}: "
                           + "; ".join(f"{model_id}: {', '.join(r)}" for model_id, r in why.items()))
    if reasons:
        return Readiness(ready=False, status="not_ready", reasons=reasons)
    warming = node.scheduler.warming()
    if warming:
        return Readiness(ready=False, status="warming", reasons=[f"loading {w}" for w in warming])
    return Readiness(ready=True, status="ready", reasons=[])


@router.get("/ready", response_model=Readiness, responses=error_responses(503), operation_id="getReadiness",
            summary="Store reachable, devices found, every feature has an available model, preloads loaded")
def ready(node: NodeDep) -> Readiness:
    """Readiness: 200 when the store answers, a device was found, every feature has a model that can run here
    and the models marked `preload` (or `pinned`) are loaded; otherwise 503 `NOT_READY` with `details.status`
    (`warming` while those models load, else `not_ready`) and the reasons in `details.reasons`."""
    result = readiness(node)
    if result.status == "warming":
        raise Pocket3DError(ErrorCode.NOT_READY, "warming up: " + "; ".join(result.reasons),
                            {"status": result.status, "reasons": result.reasons},
                            hint="the models marked preload are loading; jobs submitted now wait for them")
    if not result.ready:
        raise Pocket3DError(ErrorCode.NOT_READY, "not ready: " + "; ".join(result.reasons),
                            {"status": result.status, "reasons": result.reasons},
                            hint="GET /api/v1/system/models (or `pocket3d models` on the server) says why each "
                            "model is unavailable")
    return result


def model_list(node: Node) -> ModelList:
    devices = node.scheduler.device_list
    resident = {m for d in node.scheduler.devices() for m in d.resident_models}
    out = []
    for m in node.registry.all():
        reasons = pipeline.model_reasons(node.registry, m, devices, node.scheduler.budget_of)
        params = m.params_model()
        measured = node.scheduler.measured(m.spec.id)
        out.append(ModelInfo(
            id=m.spec.id, feature=m.spec.feature.value, available=not reasons, unavailable_reasons=reasons,
            supported_inputs=sorted(m.spec.supported_inputs), supported_outputs=list(m.spec.supported_outputs),
            vram_requirement=m.spec.vram_requirement, max_concurrent=m.spec.max_concurrent,
            devices=list(m.spec.devices), loaded=m.spec.id in resident, description=m.spec.description,
            parameters_schema=params.model_json_schema() if params else None,
            measured_peak_mb=_rounded(measured.peak_mb), measured_load_seconds=_rounded(measured.load_seconds, 2),
            measured_run_seconds=_rounded(measured.run_seconds, 2)))
    return ModelList(models=out, unavailable_formats=geometry.unavailable_formats(), problems=node.registry.problems)


def _rounded(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


@router.get("/models", response_model=ModelList, responses=error_responses(401), operation_id="listModels",
            summary="Every registered model, available or not, and why")
def models(node: NodeDep, principal: PrincipalDep) -> ModelList:
    """The models of this server by feature: what each takes and writes, whether it can run here (and if not,
    why), its parameters' JSON schema (for `parameters` in requests) and what was measured of it. The first
    available model that takes a request's inputs serves it, unless `model_preference` names another. Server
    paths in the reasons are shown to admin keys only."""
    listed = model_list(node)
    return listed if principal.is_admin else redact.dump(listed)


@router.get("/devices", response_model=list[DeviceInfo], responses=error_responses(401), operation_id="listDevices",
            summary="Devices, resident models, running stages")
def devices(node: NodeDep, principal: PrincipalDep) -> list[DeviceInfo]:
    """The devices the scheduler places work on (GPUs, the CPU, virtual CPU slices): memory, the scheduler's
    budget, utilisation and temperature where reported, the models loaded there; for admin keys also the stages
    running and the worker process's pid."""
    out = []
    for state in node.scheduler.devices():
        d = state.device
        reading = read_device(d)
        used = round(state.memory_used) if d.virtual else reading.memory_used
        out.append(DeviceInfo(id=d.id, kind=d.kind, name=d.name, virtual=d.virtual,
                              memory_total_mb=reading.memory_total, memory_used_mb=used,
                              memory_free_mb=max(0, reading.memory_total - used) if d.virtual else reading.memory_free,
                              budget_mb=round(state.budget), scheduled_mb=round(state.memory_used),
                              utilization=reading.utilization, temperature_c=reading.temperature,
                              resident_models=state.resident_models, loading_models=state.loading_models,
                              running_stages=state.running_stages if principal.is_admin else [],
                              worker_pid=state.worker_pid if principal.is_admin else None))
    return out


@caller_router.get("/me", response_model=Caller, responses=error_responses(401), operation_id="getCaller",
                   summary="Who the key belongs to: its owner and role, and whether the server checks keys")
async def me(node: NodeDep, principal: CallerDep) -> Caller:
    """The owner whose jobs and files this key sees, and its role (with auth off, the one local admin that every
    caller is), and the limits the server holds you to, so a client can check a file before it sends it. Without
    a key on a server that wants one, `owner_id` is null and `auth_enabled` true: time to ask for a key. A wrong
    key answers 401, so this is also a cheap way to check one. The web app shows the owner beside Sign out."""
    s = node.settings
    limits = CallerLimits(max_file_size=int(s.storage.max_file_size), max_image_pixels=s.storage.max_image_pixels,
                          max_request_size=int(s.server.max_request_size),
                          max_jobs_per_owner=s.scheduler.max_jobs_per_owner,
                          file_lifetime_seconds=s.storage.file_lifetime)
    return Caller(owner_id=principal and principal.owner_id, role=principal and principal.role,
                  key_id=principal and principal.key_id, auth_enabled=s.auth.enabled, limits=limits)
