"""Alembic owns the schema: a database made before migrations (commit 77cc364's schema) upgrades in place on SQLite
and PostgreSQL, the migrations end at exactly the tables the code declares, PostgreSQL goes down and up again, and a
process refuses a schema older or newer than its code with a message that says what to run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import schema_77cc364 as old
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from client_helpers import IMAGES, finish, upload
from postgres import create_database
from server import ROOT, SUPPORT, ServerProcess, cli, pocket3d_env

from pocket3d.jobs import migrations
from pocket3d.jobs import schema as t

GLB = b"glTF" + b"\x02\x00\x00\x00" + (20).to_bytes(4, "little") + b"\x00" * 8


def differences(engine: sa.Engine) -> list:
    """What separates the database from the tables the code declares (empty: the same)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), t.metadata)


def make_old_database(engine: sa.Engine, blob_sha: str) -> None:
    """A database as 77cc364's server left it: its tables, schema_info 1, a succeeded job with an output, a key."""
    old.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.schema_info.insert().values(version=1))
        conn.execute(old.jobs.insert().values(
            id="job_0000old", owner_id="local", feature="mesh_generation", model_id="test_heightfield",
            status="succeeded", progress=100.0, current_stage=1, priority=0,
            request={"text_prompt": "a chair", "output_format": "glb"}, stage_weights=[0.9, 0.1],
            cancel_requested=False, created_at=time.time() - 60, started_at=time.time() - 59,
            finished_at=time.time() - 58, expires_at=time.time() + 86400, version=7))
        conn.execute(old.stages.insert(), [
            dict(job_id="job_0000old", idx=0, name="generate_mesh", model_id="test_heightfield", params={},
                 status="succeeded", progress=1.0, attempts=1, max_attempts=3, priority=0),
            dict(job_id="job_0000old", idx=1, name="export", model_id=None, params={"format": "glb"},
                 status="succeeded", progress=1.0, attempts=1, max_attempts=3, priority=0)])
        conn.execute(old.outputs.insert().values(job_id="job_0000old", name="model.glb", stage_idx=1, sha256=blob_sha,
                                                 size=len(GLB), media_type="model/gltf-binary", format="glb",
                                                 public=True))
        conn.execute(old.api_keys.insert().values(id="key_old", owner_id="local", name="old", role="admin",
                                                  secret_sha256="0" * 64, created_at=time.time()))


def test_the_migrations_make_exactly_the_tables_the_code_declares(tmp_path: Path) -> None:
    """A column or table added to jobs/schema.py needs a revision (additive, like 0003) to reach a database."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    migrations.upgrade(engine)
    assert differences(engine) == [], "schema.py and the migrations differ: add a revision under jobs/migrations"
    engine.dispose()


def test_a_data_directory_made_before_migrations_is_upgraded_by_serve_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sha = hashlib.sha256(GLB).hexdigest()
    blob = data / "artifacts" / sha[:2] / sha[2:4] / sha
    blob.parent.mkdir(parents=True)
    blob.write_bytes(GLB)
    engine = sa.create_engine(f"sqlite:///{data / 'pocket3d.db'}")
    make_old_database(engine, sha)
    assert migrations.current(engine) == "0001"

    server = ServerProcess(data).start()  # a new user runs no command: serve upgrades its own SQLite file
    try:
        with server.client() as c:
            job = c.get("/jobs/job_0000old").json()
            assert job["status"] == "succeeded" and [o["name"] for o in job["outputs"]] == ["model.glb"]
            assert c.get("/jobs/job_0000old/outputs/model.glb").content == GLB
            image = upload(c, IMAGES / "typical_creature_elephant.png")  # new rows in the upgraded tables
            made = finish(c, "/mesh/generate?wait=30", {"images": [image["file_id"]],
                                                         "model_preference": "test_heightfield"})
            assert made["status"] == "succeeded"
    finally:
        server.stop()
    assert differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.schema_info.c.version)).scalar() == 2  # older servers refuse it now
        assert conn.execute(sa.select(sa.func.count()).select_from(t.api_keys)).scalar() == 1
    assert f"database: {migrations.head()}; this pocket3d: {migrations.head()} (up to date)" in \
        cli(data, "db", "current").stdout
    engine.dispose()


def test_postgres_upgrades_the_old_schema_and_goes_down_and_up_again(postgres_url: str, tmp_path: Path) -> None:
    url = create_database(postgres_url, "migrations_roundtrip")
    env = {"POCKET3D_DATABASE_URL": url}
    engine = sa.create_engine(url)
    make_old_database(engine, "a" * 64)

    done = cli(tmp_path, "db", "upgrade", env=env)
    assert f"upgraded the schema from revision 0001 to {migrations.head()}" in done.stdout
    assert differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.jobs.c.version).where(t.jobs.c.id == "job_0000old")).scalar() == 7

    migrations.downgrade(engine, "0001")  # back to the old schema: its rows stay
    assert not sa.inspect(engine).has_table("idempotency_keys")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(old.stages)).scalar() == 2
    assert migrations.upgrade(engine) == ("0001", migrations.head())
    assert differences(engine) == []

    gone = cli(tmp_path, "db", "downgrade", "base", env=env)
    assert "to base (no tables)" in gone.stdout
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    assert migrations.upgrade(engine) == (None, migrations.head())
    assert differences(engine) == []
    engine.dispose()


def _serve_refused(data: Path, env: dict[str, str]) -> str:
    """Start `pocket3d serve` and return what it said when it refused to start."""
    proc = subprocess.run([sys.executable, "-m", "pocket3d", "--config", str(SUPPORT / "system.yaml"), "--models",
                           str(SUPPORT / "models.yaml"), "serve", "--port", "1"], env=pocket3d_env(data, env),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stderr


def test_a_schema_older_or_newer_than_the_code_is_refused_with_what_to_run(postgres_url: str,
                                                                           tmp_path: Path) -> None:
    url = create_database(postgres_url, "migrations_refusal")
    engine = sa.create_engine(url)
    make_old_database(engine, "a" * 64)
    said = _serve_refused(tmp_path / "pg", {"POCKET3D_DATABASE_URL": url})
    assert "has schema revision 0001; this pocket3d needs" in said and "run `pocket3d db upgrade`" in said
    with engine.begin() as conn:  # an empty database: nothing to guess from
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    said = cli(tmp_path / "pg", "keys", "list", check=False, env={"POCKET3D_DATABASE_URL": url}).stderr
    assert "has no pocket3d schema yet: run `pocket3d db upgrade`" in said
    engine.dispose()

    # a SQLite file a newer pocket3d upgraded: this one cannot know what it holds, so it does not touch it
    data = tmp_path / "newer"
    data.mkdir()
    sqlite = sa.create_engine(f"sqlite:///{data / 'pocket3d.db'}")
    migrations.upgrade(sqlite)
    with sqlite.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff'")
    sqlite.dispose()
    said = _serve_refused(data, {})
    assert "has schema revision ffff, newer than this pocket3d knows" in said
