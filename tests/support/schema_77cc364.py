"""TEST DATA: the store's schema as commit 77cc364 made it, the last before migrations (git show
77cc364:src/pocket3d/jobs/schema.py), kept to build a database as that code did and check that it upgrades in place."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 1

metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("feature", sa.String(32), nullable=False),
    sa.Column("model_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("current_stage", sa.Integer),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("stage_weights", sa.JSON, nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Index("ix_jobs_owner_id", "owner_id", "id"),
    sa.Index("ix_jobs_status", "status"),
)

stages = sa.Table(
    "stages", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("model_id", sa.String(128)),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("queued_at", sa.Float),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_token", sa.String(40)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.UniqueConstraint("job_id", "idx", name="uq_stages_job_idx"),
    sa.Index("ix_stages_runnable", "status", "priority", "queued_at"),
)

files = sa.Table(
    "files", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("filename", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Index("ix_files_owner_id", "owner_id", "id"),
    sa.Index("ix_files_sha256", "sha256"),
)

job_inputs = sa.Table(
    "job_inputs", metadata,
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    # No foreign key to files: a file is deleted when its last job ends, the row stays as history.
    sa.Column("file_id", sa.String(40), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Index("ix_job_inputs_file_id", "file_id"),
)

outputs = sa.Table(
    "outputs", metadata,
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("stage_idx", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(64), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("public", sa.Boolean, nullable=False),
    sa.Index("ix_outputs_sha256", "sha256"),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)
