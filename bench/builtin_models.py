"""Wall time and peak memory of the built-in CPU models on the shared test data and on large inputs.

    .venv/bin/python bench/builtin_models.py [--quick]

Each case runs in a fresh subprocess, so peak RSS (VmHWM) is that case's own, imports included (120-140 MB), and
the time is the model's ``run`` alone (the import and the subprocess start are not counted). Goals (issue 3): image → mesh ≤ 2 s for a
1024 px image; segmentation ≤ 5 s at 100k faces; rigging ≤ 5 s at 50k faces. The large meshes are the goblin
subdivided (and decimated to the size named). ``--quick`` leaves out the 1M-face cases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "testdata"
BUILTIN = "pocket3d.models.builtin"
TIMEOUT = 300

CASE = textwrap.dedent("""
    import importlib, json, sys, time
    from pathlib import Path
    import trimesh
    from pocket3d.models import RunInputs
    case = json.loads(sys.argv[1])
    module, _, name = case["adapter"].partition(":")
    cls = getattr(importlib.import_module(module), name)
    model = cls(None)
    inputs = RunInputs(work_dir=Path(case["work"]), text=case.get("text"), images=[Path(p) for p in case["images"]],
                       mesh=Path(case["mesh"]) if case.get("mesh") else None, quality=case["quality"])
    start = time.perf_counter()
    out = model.run(inputs, cls.Params.model_validate(case["params"]), lambda fraction, message=None: None)
    seconds = time.perf_counter() - start
    faces = sum(len(g.faces) for g in trimesh.load(out["mesh"], force="scene").geometry.values())
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that forked this process
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "faces": faces, "peak_rss_mb": hwm_kb / 1024}))
""")


def run_case(adapter: str, quality: str, *, images: list[Path] = (), mesh: Path | None = None,
             text: str | None = None, params: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as work:
        case = {"adapter": f"{BUILTIN}.{adapter}", "quality": quality, "images": [str(p) for p in images],
                "mesh": str(mesh) if mesh else None, "text": text, "params": params or {}, "work": work}
        try:
            out = subprocess.run([sys.executable, "-c", CASE, json.dumps(case)], capture_output=True, text=True,
                                 timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return {"error": f"over {TIMEOUT} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:60]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def large_meshes(tmp: Path, quick: bool) -> dict[str, Path]:
    """The goblin at about 50k, 100k and 1M faces, as PLY (fast to load)."""
    import trimesh

    from pocket3d.geometry.decimate import decimate_mesh

    goblin = trimesh.load(DATA / "meshes" / "typical_humanoid_goblin.obj", force="mesh", process=False)
    goblin = trimesh.Trimesh(goblin.vertices, goblin.faces)  # welded, no UVs: the size is what is measured
    once = goblin.subdivide()
    twice = once.subdivide()
    sizes = {"50k": decimate_mesh(once, 50_000), "100k": decimate_mesh(twice, 100_000)}
    if not quick:
        sizes["1M"] = twice.subdivide()
    paths = {}
    for label, mesh in sizes.items():
        paths[label] = tmp / f"goblin_{label}.ply"
        mesh.export(paths[label])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="leave out the 1M-face meshes")
    args = parser.parse_args()
    from PIL import Image

    images, meshes, views = DATA / "images", DATA / "meshes", DATA / "multiview"
    goblin, elephant = meshes / "typical_humanoid_goblin.obj", meshes / "typical_creature_elephant.obj"
    with tempfile.TemporaryDirectory() as tmp:
        big_image = Path(tmp) / "elephant_2048.png"
        Image.open(images / "typical_creature_elephant.png").resize((2048, 2048)).save(big_image)
        big = large_meshes(Path(tmp), args.quick)
        three = [views / f"character_{i}.png" for i in (1, 2, 3)]
        cases = [
            ("image_to_mesh:SilhouetteInflationModel", "T.png (1048 px)", {"images": [images / "T.png"]}, ("medium", "high")),
            ("image_to_mesh:SilhouetteInflationModel", "elephant (704 px)",
             {"images": [images / "typical_creature_elephant.png"]}, ("medium",)),
            ("image_to_mesh:SilhouetteInflationModel", "elephant (2048 px)", {"images": [big_image]}, ("medium",)),
            ("multiview:VisualHullModel", "3 views (character)", {"images": three}, ("medium", "high")),
            ("text_to_mesh:ProceduralTextModel", "'a red wooden chair'", {"text": "a red wooden chair"}, ("medium", "high")),
            ("text_to_mesh:ProceduralTextModel", "'a tall robot'", {"text": "a tall robot"}, ("medium",)),
            ("texturing:ProjectionTextureModel", "goblin 16k + 1 view", {"mesh": goblin, "images": three[1:2]}, ("medium",)),
            ("texturing:ProjectionTextureModel", "goblin 16k + 3 views", {"mesh": goblin, "images": three}, ("medium",)),
            ("texturing:ProjectionTextureModel", "goblin 16k + text", {"mesh": goblin, "text": "green stone"}, ("medium",)),
            ("texturing:ProjectionTextureModel", "goblin 100k + 1 view", {"mesh": big["100k"], "images": three[1:2]},
             ("medium",)),
            ("segmentation:GeometricSegmentationModel", "elephant 16k", {"mesh": elephant}, ("medium",)),
            ("segmentation:GeometricSegmentationModel", "goblin 16k", {"mesh": goblin}, ("medium",)),
            ("segmentation:GeometricSegmentationModel", "goblin 100k", {"mesh": big["100k"]}, ("medium",)),
            ("rigging:GeometricRiggingModel", "goblin 16k", {"mesh": goblin}, ("medium",)),
            ("rigging:GeometricRiggingModel", "goblin 50k", {"mesh": big["50k"]}, ("medium",)),
            ("rigging:GeometricRiggingModel", "goblin 100k", {"mesh": big["100k"]}, ("medium",)),
        ]
        if "1M" in big:
            cases += [("texturing:ProjectionTextureModel", "goblin 1M + 1 view", {"mesh": big["1M"], "images": three[1:2]},
                       ("medium",)),
                      ("segmentation:GeometricSegmentationModel", "goblin 1M", {"mesh": big["1M"]}, ("medium",)),
                      ("rigging:GeometricRiggingModel", "goblin 1M", {"mesh": big["1M"]}, ("medium",))]
        print(f"| {'model':<40} | {'input':<26} | {'quality':<7} | {'faces out':>9} | {'seconds':>7} | {'peak RSS MB':>11} |")
        print(f"|{'-' * 42}|{'-' * 28}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 13}|")
        for adapter, label, kwargs, qualities in cases:
            for quality in qualities:
                r = run_case(adapter, quality, **kwargs)
                if "error" in r:
                    print(f"| {adapter:<40} | {label:<26} | {quality:<7} | {r['error']:>45} |")
                    continue
                print(f"| {adapter:<40} | {label:<26} | {quality:<7} | {r['faces']:>9} | {r['seconds']:>7.2f} | "
                      f"{r['peak_rss_mb']:>11.0f} |", flush=True)


if __name__ == "__main__":
    main()
