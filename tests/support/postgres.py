"""A throw-away PostgreSQL server on loopback for the store tests: initdb into a temp dir, start, stop."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from server import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class TempPostgres:
    def __init__(self, *settings: str) -> None:
        """``settings``: more server settings, ``name=value`` (e.g. ``shared_preload_libraries=pg_stat_statements``)."""
        self.dir = Path(tempfile.mkdtemp(prefix="p3d-pg-"))
        self.port = free_port()
        self.settings = " ".join(f"-c {s}" for s in ("fsync=off", *settings))
        self._as_postgres = os.geteuid() == 0  # the server refuses to run as root

    @staticmethod
    def available() -> bool:
        return _bin("initdb") is not None and _bin("pg_ctl") is not None

    def _run(self, *cmd: str) -> None:
        if self._as_postgres:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(_bin("initdb"), "-D", str(data), "-U", "pocket3d", "--auth=trust", "-E", "UTF8")
        self._run(_bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} {self.settings}")
        return f"postgresql+psycopg://pocket3d@127.0.0.1:{self.port}/postgres"

    def restart(self) -> None:
        """Stop the server (fast: open connections are cut) and start it again on the same port and data."""
        data = str(self.dir / "data")
        self._run(_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
        self._run(_bin("pg_ctl"), "-D", data, "-l", str(self.dir / "log"), "-w", "-t", "60", "start",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} {self.settings}")

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def empty_database(engine) -> None:  # noqa: ANN001 - a SQLAlchemy engine on the test server
    """Drop every table (and the migrations' version table) so the next test's store starts from nothing."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")


def create_database(url: str, name: str) -> str:
    """A database of its own on the test server (tests that keep a cluster running must not share one with tests
    that empty theirs); returns its URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"
