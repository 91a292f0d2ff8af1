"""Alembic's environment for pocket3d: migrations run on a connection :mod:`pocket3d.jobs.migrations` hands over
(never from a URL in an ini file), in one transaction, serialised across processes on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pocket3d.jobs import schema

MIGRATION_LOCK = 0x70336400  # advisory lock key: one upgrade at a time on a shared PostgreSQL

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=schema.metadata,
                  # SQLite alters a table by copying it: batch mode, for the downgrades that drop columns
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.run_migrations()
