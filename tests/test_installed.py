"""pocket3d installed from its wheel works outside the checkout: no config/ folder, another working directory.

The wheel is built from a copy of the sources and installed alone (--no-deps) into a fresh virtual environment
that sees this environment's dependencies through a .pth line. Such a line only adds a path: it does not run the
.pth files there, so this environment's editable install of pocket3d stays inactive and the wheel's code runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from client_helpers import IMAGES
from server import ROOT, free_port

BUILTINS = {"builtin_silhouette", "builtin_visual_hull", "builtin_procedural", "builtin_projection_paint",
            "builtin_segmentation", "builtin_rigging", "builtin_grabcut", "builtin_u2netp"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ folder of a fresh venv holding only the built wheel of pocket3d (with the web app's three.js, which
    `make test` put into the sources first: scripts/ensure-web-vendor.sh)."""
    tmp = tmp_path_factory.mktemp("installed")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(dist), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("pocket3d-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    yield env_dir / "bin"


def _env(weights_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POCKET3D_", "PYTHON", "VIRTUAL_ENV"))}
    if weights_dir is not None:
        env["POCKET3D_WEIGHTS_DIR"] = str(weights_dir)
    return env


def test_the_wheel_runs_its_own_code(installed: Path, tmp_path: Path) -> None:
    out = subprocess.run([str(installed / "python"), "-c", "import pocket3d; print(pocket3d.__file__)"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True).stdout
    assert str(installed.parent) in out and str(ROOT / "src") not in out


def test_the_wheel_requires_every_package_its_builtin_models_import(installed: Path) -> None:
    """A plain `pip install` of the wheel gets what each built-in model needs: U²-Netp's onnxruntime among them,
    or the default cut-out would be GrabCut everywhere but in a checkout (whose set-up installs the extras). This
    test's venv borrows this environment's packages, so it reads the wheel's own metadata."""
    from importlib.metadata import PathDistribution

    from packaging.requirements import Requirement

    (info,) = installed.parent.glob("lib/python*/site-packages/pocket3d-*.dist-info")
    dist = PathDistribution(info)
    unconditional = {Requirement(r).name.lower().replace("_", "-") for r in dist.requires or []
                     if Requirement(r).marker is None or Requirement(r).marker.evaluate()}
    builtins = [ep for ep in dist.entry_points if ep.group == "pocket3d.models"]
    assert {ep.name for ep in builtins} == BUILTINS
    for ep in builtins:
        for package in ep.load().requires:
            assert package.lower().replace("_", "-") in unconditional, f"{ep.name} imports {package}"


def test_models_lists_the_builtins_without_a_config_folder(installed: Path, tmp_path: Path) -> None:
    listed = subprocess.run([str(installed / "pocket3d"), "models"], cwd=tmp_path, env=_env(tmp_path / "no-weights"),
                            capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {line.split()[1]: line for line in listed.splitlines()}
    assert BUILTINS <= set(rows), listed
    assert all("unavailable" not in rows[m] for m in BUILTINS - {"builtin_u2netp"}), listed
    assert "pocket3d weights fetch" in rows["builtin_u2netp"], "without weights it says how to get them"


def test_a_server_started_elsewhere_serves_an_image_to_mesh_job(installed: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(installed / "pocket3d"), "serve", "--port", str(port)], cwd=tmp_path,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/api/v1/system/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert proc.poll() is None, log_path.read_text()
        with httpx.Client(base_url=f"{base}/api/v1", timeout=120) as client:
            with open(IMAGES / "typical_creature_elephant.png", "rb") as f:
                file_id = client.post("/files", files={"file": ("elephant.png", f)}).json()["file_id"]
            job = client.post("/mesh/generate", params={"wait": 60}, json={"images": [file_id]}).json()
            assert job["status"] == "succeeded", job
            assert job["model"] == "builtin_silhouette"
            assert [s["name"] for s in job["stages"]] == ["remove_background", "generate_mesh", "export"]
            ready = client.get("/system/ready")
            assert ready.status_code == 200, ready.text
            assert client.get(f"{base}/docs").status_code == 200
            # The web app and its three.js come from the installed package, not the checkout.
            page = client.get(f"{base}/")
            assert page.status_code == 200 and '<script type="importmap">' in page.text, page.text[:300]
            assert "default-src 'self'" in page.headers["content-security-policy"]
            for asset in ("app/main.js", "app/viewer.js", "app/vendor/three/build/three.module.js",
                          "app/vendor/three/addons/loaders/GLTFLoader.js"):
                assert client.get(f"{base}/{asset}").status_code == 200, asset
        assert (tmp_path / "data" / "pocket3d.db").is_file(), "the data dir defaults to ./data where it started"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    log = log_path.read_text()
    assert f"API docs at {base}/docs" in log and f"web app at {base}/" in log, log
    assert "registered models are available here" in log
    assert "NO MODEL CAN SERVE" not in log, log


def test_the_server_warns_loudly_when_a_feature_has_no_model(make_server, tmp_path: Path) -> None:
    only_mesh = tmp_path / "models.yaml"
    only_mesh.write_text("entry_points: false\nmodels:\n  mesh_generation:\n    test_heightfield:\n"
                         "      class: \"p3d_testmodels:HeightfieldTestModel\"\n"
                         "      supported_inputs: [\"image\"]\n      supported_outputs: [\"glb\"]\n")
    srv = make_server(models=only_mesh)
    srv.stop()
    log = srv.log()
    assert "1 of 1 registered models are available here" in log and "mesh_generation: test_heightfield" in log
    for feature in ("texture_generation", "segmentation", "auto_rigging"):
        assert f"WARNING pocket3d.api.app [-] NO MODEL CAN SERVE {feature}" in log, log
