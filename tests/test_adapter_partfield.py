"""PartField (segmentation) and HoloPart (part completion) adapters through pocket3d's HTTP API, against TEST
STAND-INS of both libraries (tests/support/standins/partfield, holopart, diso): the real ones need CUDA extensions
and are not packaged. The stand-ins compute nothing real; they return tensors of the real shapes, so the adapters'
own code runs for real: the per-face feature averaging, the clustering (scikit-learn), the part sampling and
framing, the segmented GLB and labels.json. The tests check that wiring, not the models.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import scipy.sparse as sp
import trimesh
from adapter_harness import STANDINS, standin_env, write_models
from client_helpers import MESHES, assert_valid_gltf, stood_up, submit, upload, wait_final
from scipy.sparse import csgraph
from server import ServerProcess
from standin_calls import read

from pocket3d.geometry.gltf_writer import write_segmented_glb
from pocket3d.geometry.meshes import weld

for _needed in ("torch", "sklearn"):  # the adapters' own code needs them; PartField clusters with scikit-learn
    if importlib.util.find_spec(_needed) is None:
        if os.environ.get("CI"):
            raise ImportError(f"{_needed} is not installed: the PartField/HoloPart adapter tests need it")
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

# PartField's configs/final/demo.yaml, as the checkout has it (only what the stand-in's config reads matters)
DEMO_YAML = """\
result_name: demo_test
continue_ckpt: model/model.ckpt
triplane_channels_low: 128
triplane_channels_high: 512
triplane_resolution: 128
n_point_per_face: 1000
n_sample_each: 10000
is_pc : False
remesh_demo : False
dataset:
  type: "Mix"
  data_path: "objaverse_data"
  train_batch_size: 1
  val_batch_size: 1
  train_num_workers: 8
loss:
  triplet: 1.0
use_2d_feat: False
pvcnn:
  point_encoder_type: 'pvcnn'
  z_triplane_channels: 256
  z_triplane_resolution: 128
"""


# -- fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PartField "checkout" (its demo config), a checkpoint of the stand-in model with random weights, a HoloPart
    weights folder, and the stand-ins' failure flags and call log."""
    import torch

    root = tmp_path_factory.mktemp("partfield")
    source = root / "PartField"
    (source / "configs" / "final").mkdir(parents=True)
    (source / "configs" / "final" / "demo.yaml").write_text(DEMO_YAML)
    with _standins_importable():
        from partfield.config import setup
        from partfield.model_trainer_pvcnn_only_demo import Model

        cfg = setup(argparse.Namespace(config_file=str(source / "configs/final/demo.yaml"), opts=[]), freeze=False)
        model = Model(cfg)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    pf_weights = root / "partfield-weights"
    pf_weights.mkdir()
    # a Lightning checkpoint: the weights under state_dict, the config pickled beside them
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"cfg": dict(cfg)}},
               pf_weights / "model_objaverse.ckpt")
    hp_weights = root / "holopart-weights"
    hp_weights.mkdir()
    (hp_weights / "model_index.json").write_text(json.dumps({"_class_name": "HoloPartPipeline",
                                                             "_diffusers_version": "0.32.2"}))
    (root / "empty").mkdir()
    return {"root": root, "source": source, "pf_weights": pf_weights, "hp_weights": hp_weights,
            "calls": root / "calls.jsonl", "pf_fail": root / "partfield-fail", "hp_fail": root / "holopart-fail"}


@contextmanager
def _standins_importable() -> Iterator[None]:
    """The stand-ins on this process's path for a moment (the server's workers get them through PYTHONPATH)."""
    added = str(STANDINS) not in sys.path
    if added:
        sys.path.insert(0, str(STANDINS))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(STANDINS))


def registry(f: dict[str, Path]) -> str:
    common = 'vram_requirement: 0\n      devices: ["cpu"]\n      supported_outputs: ["glb"]'
    return f"""
entry_points: false  # only the models listed here, not the installed built-ins
models:
  segmentation:
    partfield:
      class: "pocket3d.models.adapters.partfield:PartFieldModel"
      supported_inputs: ["glb", "obj", "ply"]
      {common}
      options: {{weights: "{f["pf_weights"]}", source: "{f["source"]}"}}
    holopart:
      class: "pocket3d.models.adapters.holopart:HoloPartModel"
      supported_inputs: ["glb"]
      {common}
      options: {{weights: "{f["hp_weights"]}", batch_size: 2}}
    partfield_no_weights:
      class: "pocket3d.models.adapters.partfield:PartFieldModel"
      supported_inputs: ["glb", "obj", "ply"]
      {common}
      options: {{weights: "{f["root"] / "nowhere"}", source: "{f["source"]}"}}
    partfield_no_checkout:
      class: "pocket3d.models.adapters.partfield:PartFieldModel"
      supported_inputs: ["glb", "obj", "ply"]
      {common}
      options: {{weights: "{f["pf_weights"]}", source: "{f["root"] / "empty"}"}}
    holopart_no_weights:
      class: "pocket3d.models.adapters.holopart:HoloPartModel"
      supported_inputs: ["glb"]
      {common}
      options: {{weights: "{f["root"] / "empty"}"}}
"""


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[ServerProcess]:
    root = folders["root"]
    env = standin_env(POCKET3D_STANDIN_CALLS=str(folders["calls"]), PARTFIELD_STANDIN_FAIL_FLAG=str(folders["pf_fail"]),
                      HOLOPART_STANDIN_FAIL_FLAG=str(folders["hp_fail"]))
    proc = ServerProcess(root / "data", models=write_models(root, registry(folders)), env=env).start(timeout=60)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        c.timeout = 60
        yield c


# -- helpers ---------------------------------------------------------------------------------------------------------


def _capsule(tmp_path: Path) -> tuple[Path, trimesh.Trimesh]:
    mesh = trimesh.creation.capsule(height=2.0, radius=0.5, count=[16, 16])
    mesh.apply_transform(trimesh.transformations.rotation_matrix(0.4, [0, 1, 0]))
    path = tmp_path / "capsule.obj"
    mesh.export(path)
    return path, trimesh.load(path, force="mesh", process=False)


def _segmented_input(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """Three overlapping solids as a segmented GLB (pocket3d's layout): a body, a head, a leg; and each part's
    bounds."""
    body = trimesh.creation.box(extents=[2.0, 1.0, 1.0])
    head = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    head.apply_translation([1.2, 0.0, 0.4])
    leg = trimesh.creation.cylinder(radius=0.25, height=1.2, sections=16)
    leg.apply_translation([-0.6, 0.0, -0.8])
    pieces = {0: body, 3: head, 7: leg}
    mesh = trimesh.util.concatenate(list(pieces.values()))
    mesh.apply_scale(4.0)  # not in [-1, 1]: the adapter has to frame the shape itself
    labels = np.concatenate([np.full(len(m.faces), pid) for pid, m in pieces.items()])
    path = tmp_path / "parts.glb"
    write_segmented_glb(mesh, labels, path, names={0: "body", 3: "head", 7: "leg"})
    return path, {pid: m.bounds * 4.0 for pid, m in pieces.items()}


def _run(client: httpx.Client, body: dict, timeout: float = 60) -> dict:
    return wait_final(client, submit(client, "/segment", body)["job_id"], timeout=timeout)


def _download(client: httpx.Client, job: dict, name: str) -> bytes:
    output = next((o for o in job["outputs"] if o["name"] == name), None)
    assert output is not None, f"no output {name!r} in {[o['name'] for o in job['outputs']]}"
    r = client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    return r.content


def _accessor(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}[acc.componentType]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    data = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    return data.reshape(acc.count, width) if width > 1 else data


def _part_triangles(data: bytes) -> dict[int, np.ndarray]:
    """Each part node's triangles (T, 3, 3), by part id, in the node's order."""
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    blob = gltf.binary_blob()
    parts: dict[int, np.ndarray] = {}
    for node in gltf.nodes:
        if not (node.extras and "part_id" in node.extras):
            continue
        assert node.matrix is None and node.translation is None, "part nodes sit where their faces are"
        (prim,) = gltf.meshes[node.mesh].primitives
        positions = _accessor(gltf, blob, prim.attributes.POSITION)
        indices = _accessor(gltf, blob, prim.indices).astype(np.int64)
        parts[int(node.extras["part_id"])] = positions[indices.reshape(-1, 3)]
    return parts


def _check_labels_match_nodes(labels: dict, parts: dict[int, np.ndarray]) -> np.ndarray:
    face_labels = np.asarray(labels["face_labels"])
    assert sorted(parts) == sorted({p["part_id"] for p in labels["parts"]}) == sorted(set(face_labels.tolist()))
    for entry in labels["parts"]:
        assert entry["faces"] == len(parts[entry["part_id"]]) == int((face_labels == entry["part_id"]).sum())
    return face_labels


def _mark(folders: dict[str, Path]) -> int:
    return len(read(folders["calls"]))


def _since(folders: dict[str, Path], mark: int, entry: str) -> list[dict]:
    return [c["arguments"] for c in read(folders["calls"])[mark:] if c["entry"] == entry]


def _ever(folders: dict[str, Path], entry: str) -> list[dict]:
    return [c["arguments"] for c in read(folders["calls"]) if c["entry"] == entry]


# -- PartField -------------------------------------------------------------------------------------------------------


def test_partfield_segments_the_elephant_into_the_parts_asked(client: httpx.Client, folders: dict[str, Path],
                                                              tmp_path: Path) -> None:
    source_path = MESHES / "typical_creature_elephant.obj"
    mesh_id = upload(client, source_path)["file_id"]
    mark = _mark(folders)
    job = _run(client, {"mesh": mesh_id, "model_preference": "partfield", "seed": 3,
                        "parameters": {"num_parts": 6, "method": "agglomerative", "points_per_face": 4}})
    assert job["status"] == "succeeded", job.get("error")
    assert job["model"] == "partfield"
    assert {o["name"] for o in job["outputs"]} >= {"model.glb", "labels.json", "preview.png"}
    data = _download(client, job, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    parts = _part_triangles(data)
    assert sorted(parts) == list(range(6)), "exactly the six parts asked"
    labels = json.loads(_download(client, job, "labels.json"))
    face_labels = _check_labels_match_nodes(labels, parts)
    assert {p["method"] for p in labels["parts"]} == {"partfield_agglomerative"}
    # face for face: each node holds the input's faces with its label, in the input's order (stood up: the
    # shared meshes are Z-up)
    source = stood_up(trimesh.load(source_path, force="mesh", process=False))
    assert len(face_labels) == len(source.faces)
    for pid, triangles in parts.items():
        assert np.allclose(triangles, source.triangles[face_labels == pid], atol=1e-5 * source.scale)
    # part 0 is the largest by area
    areas = np.bincount(face_labels, weights=source.area_faces)
    assert np.all(np.diff(areas) <= 1e-9)

    # The loaded model came from the checkout's config and the configured checkpoint...
    (setup,) = _ever(folders, "partfield.config.setup")[-1:]
    assert setup["config_file"] == str(folders["source"] / "configs" / "final" / "demo.yaml")
    assert setup["opts"][:2] == ["continue_ckpt", str(folders["pf_weights"] / "model_objaverse.ckpt")]
    # ...and this call put 100,000 surface points through it, then sampled 4 points on every face.
    (encoded,) = _since(folders, mark, "partfield.pvcnn")
    assert encoded["points"] == [1, 100_000, 3] and encoded["same_feature"] and encoded["dtype"] == "torch.float32"
    sampled = _since(folders, mark, "partfield.sample_triplane_feat")
    assert {tuple(s["planes"][:3]) for s in sampled} == {(1, 3, 448)}, "the 448 part-feature channels"
    assert sum(s["points"][1] for s in sampled) == 4 * len(source.faces)
    assert max(s["points"][1] for s in sampled) <= 10_000, "n_sample_each points at a time"


def test_partfield_quality_preset_and_kmeans_with_an_automatic_count(client: httpx.Client,
                                                                     folders: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    source = trimesh.creation.icosphere(subdivisions=1)  # 80 faces: choosing the count fits k-means 19 times
    source.apply_scale([2.0, 1.0, 0.7])
    path = tmp_path / "pebble.obj"
    source.export(path)
    source = trimesh.load(path, force="mesh", process=False)
    mesh_id = upload(client, path)["file_id"]
    mark = _mark(folders)
    job = _run(client, {"mesh": mesh_id, "model_preference": "partfield", "quality": "low",
                        "parameters": {"method": "kmeans"}})
    assert job["status"] == "succeeded", job.get("error")
    sampled = _since(folders, mark, "partfield.sample_triplane_feat")
    assert sum(s["points"][1] for s in sampled) == 250 * len(source.faces), "low quality: 250 points a face"
    labels = json.loads(_download(client, job, "labels.json"))
    assert 2 <= len(labels["parts"]) <= 20
    assert {p["method"] for p in labels["parts"]} == {"partfield_kmeans"}
    _check_labels_match_nodes(labels, _part_triangles(_download(client, job, "model.glb")))


def test_partfield_agglomerative_parts_are_connected_on_the_surface(client: httpx.Client,
                                                                    tmp_path: Path) -> None:
    """Ward clustering constrained to the face graph: every part is one connected patch (k-means' need not be)."""
    path, source = _capsule(tmp_path)
    mesh_id = upload(client, path)["file_id"]
    job = _run(client, {"mesh": mesh_id, "model_preference": "partfield",
                        "parameters": {"num_parts": 5, "points_per_face": 16}})
    assert job["status"] == "succeeded", job.get("error")
    face_labels = np.asarray(json.loads(_download(client, job, "labels.json"))["face_labels"])
    assert sorted(set(face_labels.tolist())) == list(range(5))
    faces = weld(source.vertices, source.faces).faces
    pairs = trimesh.graph.face_adjacency(faces=faces)
    for pid in range(5):
        inside = face_labels[pairs[:, 0]] == pid
        inside &= face_labels[pairs[:, 1]] == pid
        members = np.flatnonzero(face_labels == pid)
        index = np.full(len(faces), -1)
        index[members] = np.arange(len(members))
        graph = sp.coo_matrix((np.ones(inside.sum()), (index[pairs[inside, 0]], index[pairs[inside, 1]])),
                              shape=(len(members), len(members)))
        assert csgraph.connected_components(graph, directed=False)[0] == 1, f"part {pid} is in pieces"


def test_partfield_refuses_bad_parameters_and_impossible_counts(client: httpx.Client, tmp_path: Path) -> None:
    path, _ = _capsule(tmp_path)
    mesh_id = upload(client, path)["file_id"]
    for parameters, words in (({"num_parts": 21}, "num_parts"), ({"num_parts": 0}, "num_parts"),
                              ({"method": "spectral"}, "method"), ({"clusters": 4}, "clusters")):
        r = client.post("/segment", json={"mesh": mesh_id, "model_preference": "partfield", "parameters": parameters})
        assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS", r.text
        assert words in r.json()["message"]
    tetra = tmp_path / "tetra.obj"
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]
                    ).export(tetra)
    job = _run(client, {"mesh": upload(client, tetra)["file_id"], "model_preference": "partfield",
                        "parameters": {"num_parts": 5}})
    assert job["status"] == "failed" and job["error"]["code"] == "INVALID_INPUT", job
    assert "num_parts=5" in job["error"]["message"] and "4 faces" in job["error"]["message"]


def test_partfield_failing_is_a_failed_job_with_its_message(client: httpx.Client, folders: dict[str, Path],
                                                            tmp_path: Path) -> None:
    path, _ = _capsule(tmp_path)
    mesh_id = upload(client, path)["file_id"]
    folders["pf_fail"].touch()
    try:
        job = _run(client, {"mesh": mesh_id, "model_preference": "partfield", "parameters": {"num_parts": 2,
                                                                                            "points_per_face": 4}})
    finally:
        folders["pf_fail"].unlink()
    assert job["status"] == "failed" and job["error"]["code"] == "MODEL_ERROR", job
    assert "device-side assert" in job["error"]["message"]
    again = _run(client, {"mesh": upload(client, path)["file_id"], "model_preference": "partfield",
                          "parameters": {"num_parts": 2, "points_per_face": 4}})
    assert again["status"] == "succeeded", "the model still works once the failure is gone"


# -- HoloPart --------------------------------------------------------------------------------------------------------


def test_holopart_completes_each_part_where_it_was(client: httpx.Client, folders: dict[str, Path],
                                                   tmp_path: Path) -> None:
    path, bounds = _segmented_input(tmp_path)
    mesh_id = upload(client, path)["file_id"]
    mark = _mark(folders)
    job = _run(client, {"mesh": mesh_id, "model_preference": "holopart", "seed": 11})
    assert job["status"] == "succeeded", job.get("error")
    assert job["model"] == "holopart"
    data = _download(client, job, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    parts = _part_triangles(data)
    assert sorted(parts) == [0, 3, 7], "the input's part ids are kept"
    labels = json.loads(_download(client, job, "labels.json"))
    face_labels = _check_labels_match_nodes(labels, parts)
    # labels.json follows the GLB's faces: the part nodes in order, each part's faces together
    expected = np.concatenate([np.full(len(parts[pid]), pid) for pid in sorted(parts)])
    assert np.array_equal(face_labels, expected)
    names = {p["part_id"]: p["name"] for p in labels["parts"]}
    assert names == {0: "body", 3: "head", 7: "leg"}
    assert all(p["completed"] for p in labels["parts"])
    size = max(float(np.ptp(np.concatenate(list(bounds.values())), axis=0).max()), 1e-9)
    for pid, triangles in parts.items():
        points = triangles.reshape(-1, 3)
        found = np.array([points.min(axis=0), points.max(axis=0)])
        assert np.allclose(found, bounds[pid], atol=0.03 * size), (pid, found, bounds[pid])

    # the pipeline as the demo drives it: loaded once from the weights folder, flash decoder on
    assert _ever(folders, "holopart.from_pretrained")[-1]["path"] == str(folders["hp_weights"])
    assert _ever(folders, "holopart.to")[-1] == {"device": "cpu", "dtype": "torch.float32"}
    assert _ever(folders, "holopart.vae.set_flash_decoder")
    calls = _since(folders, mark, "holopart.call")
    assert [c["part_surface"] for c in calls] == [[2, 20480, 6], [1, 20480, 6]], "batches of options.batch_size"
    assert [c["whole_surface"] for c in calls] == [[2, 20480, 7], [1, 20480, 7]]
    assert [c["part_local_surface"] for c in calls] == [[2, 20480, 6], [1, 20480, 6]]
    for c in calls:  # medium quality: the demo's 50 steps at guidance 3.5, latents decoded by the adapter
        assert (c["num_inference_steps"], c["guidance_scale"], c["output_type"]) == (50, 3.5, "latent")
        assert c["generator"]
    shares = [s for c in calls for s in c["whole_mask_share"]]
    assert all(0 < s < 1 for s in shares) and abs(sum(shares) - 1) < 1e-6, "each whole point marks one part"
    decoded = _since(folders, mark, "holopart.flash_extract_geometry")
    assert len(decoded) == 3 and {d["octree_depth"] for d in decoded} == {9} and all(d["flash"] for d in decoded)
    assert {tuple(d["bounds"]) for d in decoded} == {(-1.05, -1.05, -1.05, 1.05, 1.05, 1.05)}


def test_holopart_takes_what_partfield_made(client: httpx.Client, folders: dict[str, Path], tmp_path: Path) -> None:
    """The chain a job could run: PartField's segmented GLB is HoloPart's input, parts and names carried over."""
    path, _ = _capsule(tmp_path)
    segmented = _run(client, {"mesh": upload(client, path)["file_id"], "model_preference": "partfield",
                              "parameters": {"num_parts": 3, "points_per_face": 8}})
    assert segmented["status"] == "succeeded", segmented.get("error")
    glb = tmp_path / "segmented.glb"
    glb.write_bytes(_download(client, segmented, "model.glb"))
    mark = _mark(folders)
    job = _run(client, {"mesh": upload(client, glb)["file_id"], "model_preference": "holopart", "quality": "low"})
    assert job["status"] == "succeeded", job.get("error")
    labels = json.loads(_download(client, job, "labels.json"))
    assert [(p["part_id"], p["name"]) for p in labels["parts"]] == [(0, "part_0"), (1, "part_1"), (2, "part_2")]
    assert {c["num_inference_steps"] for c in _since(folders, mark, "holopart.call")} == {25}, "low: 25 steps"
    assert {d["octree_depth"] for d in _since(folders, mark, "holopart.flash_extract_geometry")} == {8}
    _check_labels_match_nodes(labels, _part_triangles(_download(client, job, "model.glb")))


def test_holopart_refuses_meshes_without_parts(client: httpx.Client, tmp_path: Path) -> None:
    path, _ = _capsule(tmp_path)
    obj_id = upload(client, path)["file_id"]
    r = client.post("/segment", json={"mesh": obj_id, "model_preference": "holopart"})
    assert r.status_code == 422 and r.json()["error_code"] == "MODEL_INPUT_MISMATCH", r.text
    plain = tmp_path / "plain.glb"
    trimesh.load(path, force="mesh").export(plain)
    job = _run(client, {"mesh": upload(client, plain)["file_id"], "model_preference": "holopart"})
    assert job["status"] == "failed" and job["error"]["code"] == "INVALID_INPUT", job
    assert "no parts" in job["error"]["message"] and "segment it first" in job["error"]["message"]


def test_holopart_failing_is_a_failed_job_with_its_message(client: httpx.Client, folders: dict[str, Path],
                                                           tmp_path: Path) -> None:
    path, _ = _segmented_input(tmp_path)
    mesh_id = upload(client, path)["file_id"]
    r = client.post("/segment", json={"mesh": mesh_id, "model_preference": "holopart", "parameters": {"steps": 0}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS", r.text
    folders["hp_fail"].touch()
    try:
        job = _run(client, {"mesh": mesh_id, "model_preference": "holopart"})
    finally:
        folders["hp_fail"].unlink()
    assert job["status"] == "failed" and job["error"]["code"] == "MODEL_ERROR", job
    assert "illegal memory access" in job["error"]["message"]


# -- availability and unloading --------------------------------------------------------------------------------------


def test_missing_weights_or_checkout_make_a_model_unavailable(client: httpx.Client, folders: dict[str, Path],
                                                              tmp_path: Path) -> None:
    models = {m["id"]: m for m in client.get("/system/models").json()["models"]}
    assert models["partfield"]["available"] and models["holopart"]["available"], models
    root = folders["root"]
    expected = {
        "partfield_no_weights": f"weights not found at {root / 'nowhere'}",
        "partfield_no_checkout": "configs/final/demo.yaml not found",
        "holopart_no_weights": f"weights at {root / 'empty'} lack model_index.json",
    }
    path, _ = _segmented_input(tmp_path)
    mesh_id = upload(client, path)["file_id"]
    for model_id, words in expected.items():
        assert not models[model_id]["available"]
        assert any(words in reason for reason in models[model_id]["unavailable_reasons"]), models[model_id]
        r = client.post("/segment", json={"mesh": mesh_id, "model_preference": model_id})
        assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE", r.text
        assert words in r.json()["message"]


def test_unload_lets_both_pipelines_go(folders: dict[str, Path], tmp_path: Path) -> None:
    from pocket3d.models.adapters.holopart import HoloPartModel, HoloPartParams
    from pocket3d.models.adapters.partfield import PartFieldModel, PartFieldParams
    from pocket3d.models.spec import Device, Feature, ModelSpec, RunInputs

    cpu = Device("cpu", "cpu", "cpu", 16_000)
    mesh, _ = _capsule(tmp_path)
    parts, _ = _segmented_input(tmp_path)
    cases = [
        (PartFieldModel, {"weights": str(folders["pf_weights"]), "source": str(folders["source"])},
         PartFieldParams(num_parts=2, points_per_face=2), mesh),
        (HoloPartModel, {"weights": str(folders["hp_weights"])}, HoloPartParams(steps=2), parts),
    ]
    with _standins_importable():
        for cls, options, params, path in cases:
            spec = ModelSpec(cls.__name__, Feature.SEGMENTATION, frozenset({"glb", "obj"}), ("glb",), options=options)
            assert cls.unavailable_reasons(spec) == []
            adapter = cls(spec)
            adapter.load(cpu)
            work = tmp_path / cls.__name__
            work.mkdir()
            out = adapter.run(RunInputs(work_dir=work, mesh=path), params, lambda fraction, message: None)
            assert out["mesh"].is_file() and out["labels"].is_file()
            held = adapter.pipeline.model if cls is PartFieldModel else adapter.pipeline
            gone = weakref.ref(held)
            del held
            adapter.unload()
            assert adapter.pipeline is None and gone() is None, f"{cls.__name__} kept its pipeline"
