"""What every executor does around a model: a stage's inputs as local files, its outputs into the artifact store,
and the stages that pocket3d runs itself (no model): orient (a mesh input turned Y-up, before any model) and
export (the mesh in the asked format, and a preview)."""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trimesh

from pocket3d import geometry
from pocket3d.errors import ErrorCode, WarningCode
from pocket3d.geometry import orientation
from pocket3d.jobs.records import EXPORT_STAGE, ORIENT_STAGE, ClaimedStage, OutputRecord, StageWarning
from pocket3d.jobs.store import Store
from pocket3d.models.spec import RunInputs
from pocket3d.storage import ArtifactStore
from pocket3d.storage.locks import BlobWriter


# Output keys a model stage passes on as images to the stages after it: "image", or "image0", "image1", ...
PASSED_KEY = re.compile(r"image(\d*)")
PASSED_IMAGE = re.compile(r"(-\d+)?")


def is_export(claim: ClaimedStage) -> bool:
    return claim.stage.name == EXPORT_STAGE and claim.stage.model_id is None


def materialize(store: Store, artifacts: ArtifactStore, claim: ClaimedStage, work: Path) -> RunInputs:
    """The stage's inputs as paths: the job's uploads, unless a stage before it made a replacement: the newest
    mesh made so far, and the images of the newest stage that passed images on (a drawn view, the cut-outs)."""
    req = claim.job_request
    rows = store.job_inputs(claim.stage.job_id)
    made, drawn = _made_before(store, claim.stage.job_id, claim.stage.index) if claim.stage.index > 0 else (None, [])
    # Only what the stage will read is fetched (from a remote store, each is a download).
    if drawn:
        images = [_with_suffix(artifacts.local_file(o.sha256, work), o.format, work, f"image-{i}")
                  for i, o in enumerate(drawn)]
    else:
        images = [artifacts.local_file(r["sha256"], work) for r in rows if r["role"] == "image"]
    if made is not None:
        mesh, mesh_format = artifacts.local_file(made.sha256, work), made.format
    else:
        uploaded = next((r for r in rows if r["role"] == "mesh"), None)
        mesh = artifacts.local_file(uploaded["sha256"], work) if uploaded is not None else None
        mesh_format = uploaded["format"] if uploaded is not None else None
    if mesh is not None and mesh_format:
        mesh = _with_suffix(mesh, mesh_format, work, "input")
    return RunInputs(work_dir=work, text=req.get("text_prompt"), images=images, mesh=mesh,
                     quality=req.get("quality", "medium"), texture_resolution=req.get("texture_resolution", 1024),
                     seed=req.get("seed"), view_names=_view_names(req.get("view_names"), len(images)))


def _view_names(names: list[str] | None, images: int) -> list[str] | None:
    """The request's named views, while the stage gets as many images as were named (a drawn view replaces
    them otherwise)."""
    return list(names) if names and len(names) == images else None


def _made_before(store: Store, job_id: str, index: int) -> tuple[OutputRecord | None, list[OutputRecord]]:
    job = store.get_job(job_id)
    names = {s.index: s.name for s in job.stages} if job is not None else {}
    mesh: OutputRecord | None = None
    images: list[OutputRecord] = []
    for i in range(index - 1, -1, -1):
        outputs = store.stage_outputs(job_id, i)
        if mesh is None:
            mesh = next((o for o in outputs if ".mesh." in o.name), None)
        if not images:
            images = sorted((o for o in outputs if _passed_image(o, names.get(i))), key=_image_order)
        if mesh is not None and images:
            break
    return mesh, images


def _passed_image(output: OutputRecord, stage_name: str | None) -> bool:
    stem = output.name.rsplit(".", 1)[0]
    return (stage_name is not None and output.media_type.startswith("image/")
            and (stem == stage_name or PASSED_IMAGE.fullmatch(stem.removeprefix(stage_name)) is not None))


def _image_order(output: OutputRecord) -> int:
    stem = output.name.rsplit(".", 1)[0]
    number = stem.rsplit("-", 1)[-1]
    return int(number) if number.isdigit() else 0


def _with_suffix(path: Path, fmt: str, work: Path, stem: str) -> Path:
    """Loaders decide by extension; a content-addressed blob has none, so give it one."""
    if path.suffix == f".{fmt}":
        return path
    linked = work / f"{stem}.{fmt}"
    os.link(path, linked) if path.stat().st_dev == work.stat().st_dev else linked.write_bytes(path.read_bytes())
    return linked


def store_outputs(blobs: BlobWriter, claim: ClaimedStage, files: dict[str, Path],
                  work: Path) -> list[OutputRecord]:
    """Move the stage's files into the artifact store, each held until the stage's completion commits
    (``BlobLock.writing``)."""
    stage = claim.stage
    exporting = is_export(claim)
    outputs: list[OutputRecord] = []
    for key, path in files.items():
        if not path.resolve().is_relative_to(work.resolve()):
            # put() moves its source; an adapter handing back, say, its input must not move a stored blob away
            copy = work / f"returned-{key}{path.suffix}"
            shutil.copyfile(path, copy)
            path = copy
        known = geometry.format_of(path)
        fmt = known.name if known else path.suffix.lstrip(".").lower()
        # A model's mesh goes on to the export stage, which publishes it in the asked format; what else it made
        # (part labels, an intermediate image) is published as it is.
        public = exporting or key != "mesh"
        if exporting:
            name = path.name
        elif not public:
            name = f"{stage.name}.{key}.{fmt}"
        elif PASSED_KEY.fullmatch(key):
            # An image the next stages take (the drawn view, a cut-out): published under the stage's name.
            number = key.removeprefix("image")
            name = f"{stage.name}-{number}.{fmt}" if number else f"{stage.name}.{fmt}"
        else:
            name = f"{key}.{fmt}"
        sha, size = blobs.put(path)
        media = known.media_type if known else (mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        outputs.append(OutputRecord(name=name, stage_index=stage.index, sha256=sha, size=size, media_type=media,
                                    format=fmt, public=public))
    return outputs


@dataclass
class OwnStageResult:
    files: dict[str, Path]
    warnings: list[StageWarning] = field(default_factory=list)
    details: dict[str, Any] | None = None


def run_own_stage(name: str, inputs: RunInputs, params: dict, work: Path,
                  limits: geometry.MeshLimits) -> OwnStageResult:
    if name == ORIENT_STAGE:
        return orient(inputs, params, limits)
    if name == EXPORT_STAGE:
        return OwnStageResult(export(inputs, params, work, limits))
    raise ValueError(f"no stage of pocket3d's own is named {name!r}")


def orient(inputs: RunInputs, params: dict, limits: geometry.MeshLimits) -> OwnStageResult:
    """The first stage of a job on a mesh: find its up axis (``params["up_axis"]``: auto, y or z) and, when it
    is not Y, turn it Y-up (as GLB) for the stages after it. A Y-up input passes on untouched."""
    if inputs.mesh is None:
        raise geometry.MeshError("the orient stage found no mesh")
    fmt = inputs.mesh.suffix.lstrip(".").lower()
    given = params.get("up_axis", "auto")
    if given == "auto" and fmt in orientation.DECLARED_UP:  # the format says: no need to read the file
        found = orientation.Orientation(orientation.DECLARED_UP[fmt], "format")
        return OwnStageResult({}, details=found.as_dict())
    scene = geometry.load_scene(inputs.mesh, fmt, limits)
    found = orientation.orientation_of(scene, fmt, given)
    if not found.rotated:
        return OwnStageResult({}, details=found.as_dict())
    dest = inputs.work_dir / "oriented.glb"
    dest.write_bytes(orientation.turned(scene, found.rotation).export(file_type="glb"))
    why = {"parameter": "as parameters.up_axis says", "shape": "judged by what it stands on",
           "convention": f"the habit of {fmt.upper()} files", "format": f"as the {fmt.upper()} file says"}
    axis, degrees = orientation.ROTATION_NAMES[found.up]
    warning = StageWarning(WarningCode.ROTATED_TO_Y_UP,
                           f"the mesh is {found.up.upper()}-up ({why[found.source]}): it was turned {degrees:g} "
                           f"degrees about {axis.upper()} to glTF's Y-up, +Z forward before the model saw it, and "
                           "the outputs are in that frame; give parameters.up_axis to say otherwise")
    return OwnStageResult({"mesh": dest}, [warning], found.as_dict())


def export(inputs: RunInputs, params: dict, work: Path, limits: geometry.MeshLimits) -> dict[str, Path]:
    """The last stage: the mesh in each asked format (decimated first if asked; geometry only when the request
    said ``texture: false``), a PNG preview, and with ``view_renders`` four views from around it.

    ``params``: ``formats`` (``format``, one, in jobs queued before there could be several), ``target_faces``,
    ``texture`` and ``view_renders``."""
    if inputs.mesh is None:
        raise geometry.MeshError("the export stage found no mesh from the stage before it")
    formats, target = params.get("formats") or [params.get("format", "glb")], params.get("target_faces")
    scene = geometry.load_scene(inputs.mesh, inputs.mesh.suffix.lstrip("."), limits)
    changed = False
    if params.get("texture") is False:  # shape only: whatever colours the model gave, the mesh goes without
        scene, changed = trimesh.Scene(geometry.merged(scene, colors=False)), True
    if target:
        smaller = geometry.decimate_scene(scene, target)  # the same scene when it is small enough already
        scene, changed = smaller, changed or smaller is not scene
    files: dict[str, Path] = {}
    for fmt in formats:
        spec = geometry.FORMATS[fmt]
        dest = work / f"model{spec.suffix}"
        if inputs.mesh.suffix == spec.suffix and not changed:
            # Already in the asked format: pass it through, so what trimesh cannot write (skins, part nodes,
            # extras) survives.
            shutil.copyfile(inputs.mesh, dest)
        elif spec.convert_glb is not None and inputs.mesh.suffix == ".glb" and not changed:
            spec.convert_glb(inputs.mesh, dest)  # from the file itself, for the same reason
        else:
            geometry.export_scene(scene, fmt, dest)
        files[dest.name] = dest
    preview = work / "preview.png"
    geometry.render_preview(scene, preview)
    files[preview.name] = preview
    if params.get("view_renders"):
        views = [work / f"view_{i}.png" for i in range(len(geometry.VIEW_AZIMUTHS))]
        geometry.render_views(scene, views)
        files.update({view.name: view for view in views})
    return files


def error_of(e: Exception) -> tuple[str, str] | None:
    """The job error for an exception that is the input's fault or a known geometry failure; None otherwise."""
    if isinstance(e, geometry.MeshError):
        return (ErrorCode.INVALID_INPUT if e.code == ErrorCode.INVALID_MESH else e.code), str(e)
    return None
