"""The CLI's client commands as a person runs them: in a pseudo-terminal (a controlling terminal, so Ctrl-C is
the terminal's), against a real server on loopback."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import trimesh
from client_helpers import IMAGES, MESHES, assert_valid_gltf
from fault_proxy import FaultProxy
from server import ROOT, ServerProcess, free_port


class Terminal:
    """``pocket3d ARGS`` in a new session on a pseudo-terminal (stdin, stdout, and stderr unless ``stderr`` names
    a file for it), its screen read as it comes."""

    def __init__(self, *args: str, env: dict[str, str], stderr: Path | None = None):
        full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("POCKET3D_")},
                    "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **env}
        argv = [sys.executable, "-m", "pocket3d", *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the session leader, with the terminal as its controlling terminal
            try:
                os.chdir(ROOT)
                if stderr is not None:
                    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
                os.execve(sys.executable, argv, full_env)
            finally:
                os._exit(127)
        self.screen = b""

    def read_until(self, done: Callable[[bytes], bool], timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while not done(self.screen):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; the screen so far:\n{self.screen.decode(errors='replace')}"
            if select.select([self.fd], [], [], min(left, 0.5))[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child has gone and the terminal closed
                    chunk = b""
                if not chunk:
                    break
                self.screen += chunk
        return self.screen

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def wait(self, timeout: float = 60) -> int:
        self.read_until(lambda _: False, timeout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the command did not exit")


def _env(server: ServerProcess) -> dict[str, str]:
    return {"POCKET3D_URL": server.url}


def test_generate_in_a_terminal_shows_progress_and_saves_a_valid_glb(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.glb"
    term = Terminal("generate", str(IMAGES / "typical_misc_crate.png"), "-o", str(out), "--model",
                    "test_heightfield", "--param", "delay=1", env=_env(server))
    assert term.wait() == 0, term.screen.decode(errors="replace")
    screen = term.screen.decode(errors="replace")
    assert "generate_mesh" in screen and "100%" in screen, "the progress bar showed the stage and the percent"
    assert "thinking slowly" in screen, "and the model's message"
    assert f"saved {out}" in screen
    assert_valid_gltf(out.read_bytes(), tmp_path)


def test_a_failing_model_exits_1_with_its_code_on_stderr(server: ServerProcess, tmp_path: Path) -> None:
    stderr = tmp_path / "stderr.txt"
    term = Terminal("generate", "--prompt", "a chair", "--model", "test_failing", env=_env(server), stderr=stderr)
    assert term.wait() == 1
    err = stderr.read_text()
    assert "MODEL_ERROR" in err and "failed on purpose" in err, err
    assert not list(Path(ROOT).glob("a-chair*")), "nothing saved"


def test_json_output_parses(server: ServerProcess, tmp_path: Path) -> None:
    def pocket3d(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("POCKET3D_")}, **_env(server)}
        return subprocess.run([sys.executable, "-m", "pocket3d", *args, "--json"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    run = pocket3d("generate", str(IMAGES / "T.png"), "--model", "test_heightfield")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["job"]["status"] == "succeeded"
    assert result["files"] == {"model.glb": "T.glb"} and (tmp_path / "T.glb").is_file()
    job_id = result["job"]["job_id"]

    listed = json.loads(pocket3d("jobs", "list", "--limit", "5").stdout)
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    shown = json.loads(pocket3d("jobs", "show", job_id).stdout)
    assert shown["outputs"][0]["name"] == "model.glb"
    saved = json.loads(pocket3d("jobs", "download", job_id, "-o", "outputs").stdout)
    assert saved["files"] == {"model.glb": "outputs/T.glb", "preview.png": "outputs/T-preview.png"}

    both = json.loads(pocket3d("generate", str(IMAGES / "T.png"), "--model", "test_heightfield", "--format",
                               "glb,ply", "-o", "two/t.glb").stdout)
    assert both["files"] == {"model.glb": "two/t.glb", "model.ply": "two/t.ply"}
    chained = json.loads(pocket3d("texture", f"{job_id}/model.glb", "--prompt", "red", "--model",
                                  "test_subdivide_texture").stdout)
    assert chained["files"] == {"model.glb": "T-textured.glb"}, "another job's output as the input"
    converted = json.loads(pocket3d("jobs", "convert", chained["job"]["job_id"], "--format", "obj").stdout)
    assert converted["files"] == {"model.obj.zip": "T-textured.obj.zip"}

    queued = json.loads(pocket3d("generate", str(IMAGES / "T.png"), "--model", "test_heightfield",
                                 "--param", "delay=30", "--no-wait").stdout)
    cancelled = json.loads(pocket3d("jobs", "cancel", queued["job_id"]).stdout)
    assert cancelled["job_id"] == queued["job_id"]

    upright = trimesh.creation.box(extents=(0.4, 0.6, 2.0))  # stands on Z, as PLY files do
    upright.apply_translation((0, 0, 1.0))
    upright.export(tmp_path / "post.ply")
    turned = pocket3d("segment", str(tmp_path / "post.ply"), "--model", "test_subdivide_segment")
    assert turned.returncode == 0, turned.stderr
    assert "warning ROTATED_TO_Y_UP (orient)" in turned.stderr, "a warning is printed as it arrives"
    assert json.loads(turned.stdout)["job"]["warnings"][0]["code"] == "ROTATED_TO_Y_UP"

    missing = pocket3d("jobs", "show", "job_nope")
    assert missing.returncode == 1 and "JOB_NOT_FOUND" in missing.stderr
    usage = pocket3d("generate")
    assert usage.returncode == 2 and "give one or more IMAGES" in usage.stderr
    nobody = subprocess.run([sys.executable, "-m", "pocket3d", "jobs", "list", "--url",
                             f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 1 and "pocket3d serve" in nobody.stderr


def test_ctrl_c_asks_whether_to_cancel(server: ServerProcess, tmp_path: Path) -> None:
    term = Terminal("generate", str(IMAGES / "T.png"), "-o", str(tmp_path / "x.glb"), "--model",
                    "test_heightfield", "--param", "delay=30", "--param", "steps=30", env=_env(server))
    term.read_until(lambda screen: b"generate_mesh" in screen)  # running
    term.type(b"\x03")  # the terminal turns it into SIGINT for the command
    term.read_until(lambda screen: b"leave it running?" in screen)
    term.type(b"cancel\r")
    assert term.wait() == 130
    job_id = re.search(r"job_[0-9a-f]+", term.screen.decode(errors="replace")).group()
    job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" or job["cancel_requested"], job


def test_a_busy_server_is_retried_out_loud(server: ServerProcess, tmp_path: Path) -> None:
    body = b'{"error_code": "CONCURRENCY_LIMITED", "message": "100 jobs at once", "details": {}}'
    busy = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    proxy = FaultProxy(server.port).start()
    try:
        proxy.add("POST", "^/api/v1/mesh/generate$", "respond", response=busy)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("POCKET3D_")}, "POCKET3D_URL": proxy.url}
        run = subprocess.run([sys.executable, "-m", "pocket3d", "generate", str(IMAGES / "T.png"), "--model",
                              "test_heightfield", "-o", str(tmp_path / "t.glb")], capture_output=True, text=True,
                             env=env, timeout=120)
    finally:
        proxy.stop()
    assert run.returncode == 0, run.stderr
    assert "CONCURRENCY_LIMITED" in run.stderr and "trying again in 1.0 s" in run.stderr
    assert [p.action for p in proxy.requests("POST", "^/api/v1/mesh/generate$")] == ["respond", None]


def _pocket3d(server: ServerProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # as from a script into a pipe: no terminal width handed down (pytest's own, under xdist, sets COLUMNS)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("POCKET3D_") and k not in ("COLUMNS", "LINES")},
           **_env(server)}
    return subprocess.run([sys.executable, "-m", "pocket3d", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_usage_errors_exit_2_before_any_request(tmp_path: Path) -> None:
    """Options and local files are checked before the first request: a typo costs no upload, and no wait for a
    server (here none answers at the URL)."""
    from click.testing import CliRunner

    from pocket3d.cli import main

    image = str(IMAGES / "T.png")
    nobody = f"http://127.0.0.1:{free_port()}"
    for args, says in [(["--format", "xyz"], "--format"), (["--view", f"top={image}"], "the view names are"),
                       (["--param", "grid"], "--param"), ([str(tmp_path / "missing.png")], "no such file"),
                       (["--webhook-event", "job.progress"], "needs --webhook-url")]:
        run = CliRunner().invoke(main, ["generate", image, *args, "--url", nobody])
        assert run.exit_code == 2 and says in run.stderr, (args, run.exit_code, run.stderr)
        assert "trying again" not in run.stderr and "no pocket3d server" not in run.stderr, (args, run.stderr)
    # a format that cannot hold what the feature makes is refused before the mesh is uploaded
    mesh = str(MESHES / "typical_creature_robot_dinosour.obj")
    for command, says in [("rig", "one or more of glb, fbx"), ("segment", "one or more of glb, obj, fbx, usdz")]:
        run = CliRunner().invoke(main, [command, mesh, "--format", "glb,stl", "--url", nobody])
        assert run.exit_code == 2 and says in run.stderr and "trying again" not in run.stderr, (command, run.stderr)


def test_every_request_field_and_listing_has_a_command(server: ServerProcess, tmp_path: Path) -> None:
    image = str(IMAGES / "T.png")
    run = _pocket3d(server, tmp_path, "generate", image, "--model", "test_heightfield", "--param", "delay=0.2",
                    "--no-texture", "--view-renders", "-o", "t.glb", "--json")
    assert run.returncode == 0, run.stderr
    shape = json.loads(run.stdout)
    assert shape["job"]["input"]["texture"] is False and shape["job"]["input"]["view_renders"] is True
    assert shape["files"] == {"model.glb": "t.glb", **{f"view_{i}.png": f"t-view_{i}.png" for i in range(4)}}, \
        "the renders asked for are saved beside the model"
    assert all((tmp_path / name).is_file() for name in shape["files"].values())

    failed = _pocket3d(server, tmp_path, "generate", "--prompt", "a chair", "--model", "test_failing", "--json")
    assert failed.returncode == 1 and "MODEL_ERROR" in failed.stderr
    assert json.loads(failed.stdout)["job"]["error"]["code"] == "MODEL_ERROR", "a script sees how the job ended"

    [file_id] = shape["job"]["input"]["images"]
    listed = json.loads(_pocket3d(server, tmp_path, "files", "list", "--limit", "100", "--json").stdout)
    assert file_id in [f["file_id"] for f in listed["files"]]
    assert _pocket3d(server, tmp_path, "files", "delete", file_id).returncode == 0
    listed = json.loads(_pocket3d(server, tmp_path, "files", "list", "--limit", "100", "--json").stdout)
    assert file_id not in [f["file_id"] for f in listed["files"]]
    again = _pocket3d(server, tmp_path, "files", "delete", file_id)
    assert again.returncode == 1 and "FILE_NOT_FOUND" in again.stderr

    table = _pocket3d(server, tmp_path, "jobs", "list", "--limit", "5").stdout
    row = next(line for line in table.splitlines() if shape["job"]["job_id"] in line)
    assert "test_heightfield" in row and "mesh_generation" in row, "into a pipe, the table is not cut at 80 columns"
    shown = _pocket3d(server, tmp_path, "jobs", "show", shape["job"]["job_id"]).stdout
    assert "last message" in shown, "an ended job's message is said to be its last"
