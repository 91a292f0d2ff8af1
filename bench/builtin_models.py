"""Wall time and peak memory of the built-in CPU models on the shared test data and on a large input.

    .venv/bin/python bench/builtin_models.py

Each case runs in a fresh subprocess, so peak RSS (ru_maxrss) is that case's own. Goals (issue 3): image → mesh
under 2 s for a 1024 px image. Models not built yet are listed as such.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "testdata"

CASE = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from PIL import Image
    from pocket3d.models import RunInputs
    from pocket3d.models.builtin.image_to_mesh import SilhouetteInflationModel, SilhouetteParams
    image, quality, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    model = SilhouetteInflationModel(None)
    start = time.perf_counter()
    out = model.run(RunInputs(work_dir=work, images=[Path(image)], quality=quality), SilhouetteParams(),
                    lambda fraction, message=None: None)
    seconds = time.perf_counter() - start
    import trimesh
    faces = len(trimesh.load(out["mesh"], force="mesh").faces)
    print(json.dumps({"seconds": seconds, "faces": faces,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def run_case(image: Path, quality: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run([sys.executable, "-c", CASE, str(image), quality, work], capture_output=True, text=True,
                             check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "elephant_2048.png"
        Image.open(DATA / "images" / "typical_creature_elephant.png").resize((2048, 2048)).save(big)
        cases = [(DATA / "images" / "T.png", "1048 px"), (DATA / "images" / "typical_creature_elephant.png", "704 px"),
                 (DATA / "multiview" / "character_1.png", "multiview view"), (big, "2048 px (upscaled)")]
        print(f"{'model':<22} {'input':<34} {'quality':<8} {'faces':>8} {'seconds':>8} {'peak RSS MB':>12}")
        for path, label in cases:
            for quality in ("medium", "high"):
                r = run_case(path, quality)
                print(f"{'builtin_silhouette':<22} {path.name[:20] + ' (' + label + ')':<34} {quality:<8} "
                      f"{r['faces']:>8} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f}")
    for name in ("multi-image → mesh", "text → mesh", "texture", "segmentation", "auto-rigging"):
        print(f"{name:<22} not built yet")


if __name__ == "__main__":
    main()
