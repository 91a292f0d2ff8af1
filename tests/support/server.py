"""A real pocket3d server in a subprocess on loopback, for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pocket3d_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET3D_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["POCKET3D_DATA_DIR"] = str(data_dir)
    env.update(extra or {})
    return env


def wait_until_healthy(proc: subprocess.Popen, url: str, timeout: float, name: str, log, kill) -> None:  # noqa: ANN001
    """Until ``url``'s /api/v1/system/health answers 200; a process that exits or does not answer within
    ``timeout`` seconds is a RuntimeError carrying the end of its log (``log()``), killed first (``kill()``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log()[-4000:]}")
        try:
            if httpx.get(f"{url}/api/v1/system/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    kill()
    raise RuntimeError(f"{name} did not start in {timeout} s:\n{log()[-4000:]}")


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
        config: Path = SUPPORT / "system.yaml", models: Path = SUPPORT / "models.yaml") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pocket3d", "--config", str(config), "--models", str(models), *args]
    return subprocess.run(cmd, env=pocket3d_env(data_dir, env), capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=check)


class ServerProcess:
    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None,
                 config: Path = SUPPORT / "system.yaml", models: Path = SUPPORT / "models.yaml",
                 own_group: bool = False, piped_log: bool = False, serve_args: tuple[str, ...] = ()):
        """``own_group``: the server leads a process group of its own, so a test can kill it with every process
        it started (``kill_group``) without touching the test runner's. ``piped_log``: its output reaches the log
        file through a pipe and this process, so the log survives limits put on the server's own writes.
        ``serve_args``: more flags of `pocket3d serve`."""
        self.data_dir, self.env, self.config, self.models = data_dir, env or {}, config, models
        self.own_group, self.piped_log = own_group, piped_log
        self.serve_args = serve_args
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "pocket3d", "--config", str(self.config), "--models", str(self.models),
               "serve", "--port", str(self.port), *self.serve_args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=pocket3d_env(self.data_dir, self.env), cwd=ROOT,
                                     stdout=subprocess.PIPE if self.piped_log else self._log,
                                     stderr=subprocess.STDOUT, start_new_session=self.own_group)
        if self.piped_log:
            threading.Thread(target=self._copy_log, args=(self.proc.stdout, self._log), daemon=True).start()
        wait_until_healthy(self.proc, self.url, timeout, "server", self.log, self.kill)
        return self

    @staticmethod
    def _copy_log(pipe, log) -> None:  # noqa: ANN001 - the child's stdout, the log file
        try:
            for line in iter(pipe.readline, b""):
                log.write(line)
                log.flush()
        except (OSError, ValueError):  # the log was closed: the server is being stopped
            pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what a crash or the OOM killer does."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def kill_group(self) -> None:
        """SIGKILL to the server's whole process group (it must have been started with ``own_group``)."""
        assert self.own_group
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None


class InProcessServer:
    """The app on a node a test built (a stub resolver, settings of its own), served by uvicorn on loopback in a
    thread; ``with`` gives an httpx client on its /api/v1."""

    def __init__(self, node, manage_node: bool):  # noqa: ANN001 - pocket3d.node.Node
        import uvicorn

        from pocket3d.api.app import create_app

        self.port = free_port()
        config = uvicorn.Config(create_app(node, manage_node=manage_node), host="127.0.0.1", port=self.port,
                                log_config=None, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"{self.url}/api/v1", timeout=30)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(20)
