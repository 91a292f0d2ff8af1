"""The store's schema, owned by Alembic: ``pocket3d db upgrade`` brings a database to the schema this code
knows (the ``head`` revision), for SQLite and PostgreSQL alike.

A process checks the schema before it uses the database (:func:`check`) and refuses one that is older or newer
than its code, saying what to run. The embedded server on SQLite (the only process on its file) upgrades by itself
(:func:`upgrade`). A database made before migrations existed (tables, no ``alembic_version``) is stamped with the
initial revision, which is that schema, and upgraded from there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
# Alembic says which dialect it found every time a process checks the schema; only migrations are worth a line.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
log = logging.getLogger(__name__)
INITIAL = "0001"  # the schema of the code before migrations


class SchemaMismatch(Exception):
    """The database's schema is not the one this code knows; the message says what to run."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def known_revisions() -> list[str]:
    return [s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()]


def current(engine: Engine) -> str | None:
    """The database's revision; ``INITIAL`` for a database made before migrations; None for an empty one."""
    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and sa.inspect(conn).has_table("jobs"):
            return INITIAL
    return revision


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Bring the database to ``revision``; returns (from, to). A database newer than this code is refused
    (:class:`SchemaMismatch`), never touched."""
    before = current(engine)
    if before is not None and before not in known_revisions():
        raise SchemaMismatch(_newer(engine, before))
    with engine.connect() as conn:
        config = _config(conn)
        if before == INITIAL and MigrationContext.configure(conn).get_current_revision() is None:
            command.stamp(config, INITIAL)  # made before migrations: its tables are the initial revision's
        command.upgrade(config, revision)
        conn.commit()
    after = current(engine) or ""
    if after != before:
        log.info("upgraded the database schema from revision %s to %s", before or "(empty)", after)
    return before, after


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    before = current(engine)
    with engine.connect() as conn:
        command.downgrade(_config(conn), revision)
        conn.commit()
    return before, current(engine)


def check(engine: Engine) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at this code's head revision."""
    found, wanted = current(engine), head()
    if found == wanted:
        return
    where = engine.url.render_as_string(hide_password=True)
    if found is None:
        raise SchemaMismatch(f"the database at {where} has no pocket3d schema yet: run `pocket3d db upgrade` "
                             "(with the same database_url) to create it")
    if found not in known_revisions():
        raise SchemaMismatch(_newer(engine, found))
    raise SchemaMismatch(f"the database at {where} has schema revision {found}; this pocket3d needs {wanted}: run "
                         "`pocket3d db upgrade` (with the same database_url; back the database up first)")


def _newer(engine: Engine, found: str) -> str:
    return (f"the database at {engine.url.render_as_string(hide_password=True)} has schema revision {found}, newer "
            f"than this pocket3d knows (its newest is {head()}): run the pocket3d that upgraded it, or upgrade this "
            "one; that newer pocket3d's `pocket3d db downgrade` goes back if you must")
