"""A real pocket3d cluster on loopback, for the tests and bench/cluster.py: gateways (`pocket3d serve --role
gateway`) and workers (`pocket3d worker`) as separate processes, each with a data directory of its own, sharing
one PostgreSQL database and one S3 prefix. Each process leads a process group of its own, so a test can kill or
pause a worker together with its device workers, as a machine dying or freezing would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from server import ROOT, SUPPORT, free_port, pocket3d_env, wait_until_healthy

CLUSTER_CONFIG = SUPPORT / "system-cluster.yaml"
CLUSTER_MODELS = SUPPORT / "models-cluster.yaml"


class ClusterProcess:
    def __init__(self, name: str, args: list[str], data_dir: Path, env: dict[str, str], port: int,
                 config: Path, models: Path):
        self.name, self.args, self.data_dir, self.env, self.port = name, args, data_dir, env, port
        self.config, self.models = config, models
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ClusterProcess:
        cmd = [sys.executable, "-m", "pocket3d", "--config", str(self.config), "--models", str(self.models),
               *self.args, "--port", str(self.port)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=pocket3d_env(self.data_dir, self.env), cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_healthy(self.proc, self.url, timeout, self.name, self.log, self.kill)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, key: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout)

    def signal_group(self, sig: int) -> None:
        """``sig`` to the process and every process it started (its device workers)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM to the process alone, as an orchestrator stopping it does; see ``wait``."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close_log()
        return code

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive:
            self.terminate()
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL to the whole group: the machine died."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None


class Cluster:
    """Gateways and workers on one database and one S3 prefix; ``env`` holds what every process shares."""

    def __init__(self, root: Path, database_url: str, s3, *, prefix: str,  # noqa: ANN001 - TempSeaweedFS
                 config: Path = CLUSTER_CONFIG, models: Path = CLUSTER_MODELS, env: dict[str, str] | None = None):
        self.root, self.database_url, self.s3, self.prefix = root, database_url, s3, prefix
        self.config, self.models = config, models
        self.env = {"POCKET3D_DATABASE_URL": database_url, "POCKET3D_STORAGE__BACKEND": "s3",
                    "POCKET3D_STORAGE__S3__BUCKET": s3.bucket, "POCKET3D_STORAGE__S3__ENDPOINT": s3.endpoint,
                    "POCKET3D_STORAGE__S3__PREFIX": prefix, **s3.env, **(env or {})}
        self.processes: dict[str, ClusterProcess] = {}

    def migrate(self) -> str:
        proc = subprocess.run([sys.executable, "-m", "pocket3d", "--config", str(self.config), "--models",
                               str(self.models), "db", "upgrade"], env=pocket3d_env(self.root / "migrate", self.env),
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
        return proc.stdout

    def _process(self, name: str, args: list[str], env: dict[str, str] | None) -> ClusterProcess:
        process = ClusterProcess(name, args, self.root / name / "data", {**self.env, **(env or {})}, free_port(),
                                 self.config, self.models)
        (self.root / name).mkdir(parents=True, exist_ok=True)
        self.processes[name] = process
        return process

    def gateway(self, name: str, env: dict[str, str] | None = None) -> ClusterProcess:
        return self._process(name, ["serve", "--role", "gateway"], env)

    def worker(self, name: str, devices: str = "cpu", env: dict[str, str] | None = None) -> ClusterProcess:
        return self._process(name, ["worker", "--devices", devices], env)

    def stop(self) -> None:
        """Stop every process, all at once (each drains on its own)."""
        import threading

        stopping = [threading.Thread(target=p.stop) for p in self.processes.values()]
        for th in stopping:
            th.start()
        for th in stopping:
            th.join()

    def logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{p.log()[-6000:]}" for name, p in self.processes.items())
