"""The store's tables (SQLAlchemy Core). Portable types only: the same schema runs on SQLite and PostgreSQL.

Times are UNIX seconds as floats: cheap to compare in a claim query on both engines, and unambiguous.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# 2 since migrations (jobs.migrations, which own the schema): a server older than them refuses the database.
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
    # The request as the client sent it (file ids, views, parameters; data URIs shortened), shown back as `input`.
    sa.Column("input", sa.JSON),
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
    sa.Index("ix_jobs_status_owner", "status", "owner_id"),  # the caps count active jobs by owner (0006)
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
    # times the node stopped while the stage ran (not counted in attempts); NULL reads as 0
    sa.Column("interruptions", sa.Integer, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("queued_at", sa.Float),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_token", sa.String(40)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("device", sa.String(64)),  # where the latest attempt ran ("cpu", "cuda:0")
    sa.Column("message", sa.Text),  # the model's latest progress message
    sa.Column("warnings", sa.JSON),  # [{code, message}] the stage raised on its way (a fallback it took)
    sa.Column("details", sa.JSON),  # what a stage found out beyond its files (orient: the up axis)
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

# An upload past its expires_at leaves its id here, so it answers 410 FILE_EXPIRED rather than 404 (a deleted one
# leaves nothing). Pruned after transitions.TOMBSTONE_SECONDS.
file_tombstones = sa.Table(
    "file_tombstones", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("expired_at", sa.Float, nullable=False),
)

# A job's inputs as it took them. The blob (sha256) is kept while the job waits or runs, whatever happens to the
# upload meanwhile (deleted, expired); the row stays as history.
job_inputs = sa.Table(
    "job_inputs", metadata,
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    # No foreign key: the upload's id, or the source job's id for a job's output, or for bytes sent inline an id
    # that names no upload.
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

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    # A submit's Idempotency-Key, per owner: the same key again returns this job instead of making another.
    sa.Column("owner_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # SHA-256 of the feature and the validated request
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
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

# -- webhooks (the outbox) ---------------------------------------------------------------------------------------

webhook_endpoints = sa.Table(
    "webhook_endpoints", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("description", sa.String(255)),
    # Kept as given: signing needs the secret itself (a hash would not do); it is shown to the owner once.
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_webhook_endpoints_owner_id", "owner_id"),
)

# The secret that signs deliveries to a request's own webhook_url, one per owner, made on first use.
webhook_secrets = sa.Table(
    "webhook_secrets", metadata,
    sa.Column("owner_id", sa.String(64), primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# One row a message to one URL, written in the transaction of the state change it reports.
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the webhook-id header: the same on every retry
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("endpoint_id", sa.String(40)),  # None: the job's own webhook_url
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_job_id", "job_id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(40), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer),  # None: no answer (timeout, refused address, connection error)
    sa.Column("error", sa.Text),
    sa.Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)

# A foreign client's session that spans several jobs (ProtoScale's upload, then its views, then its 3D model):
# what the client named it by, the upload, its options, and the job each step made (pocket3d.jobs.sessions).
compat_sessions = sa.Table(
    "compat_sessions", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("flavour", sa.String(16), nullable=False),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("file_id", sa.String(40), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("jobs", sa.JSON, nullable=False),  # step -> job id
    sa.Column("step", sa.String(32)),  # the step the client last asked for
    sa.Column("error", sa.Text),  # why that step could not even be submitted
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_compat_sessions_owner", "flavour", "owner_id", "id"),
    sa.Index("ix_compat_sessions_expires_at", "expires_at"),
)

# -- the cluster -------------------------------------------------------------------------------------------------

# One row a gateway or worker, written at start and at every heartbeat, marked stopped at a clean stop. What a
# worker can do and holds (devices, budgets, resident models, what it measured) is in `state`. A row whose
# heartbeat_at is old belongs to a process that died; rows are kept a week (a pool scaled to zero still says which
# models the cluster hosts), then pruned.
nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", sa.String(128), primary_key=True),  # also the lease_owner of the stages it claims
    sa.Column("role", sa.String(16), nullable=False),  # gateway or worker
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False),
    sa.Column("stopped_at", sa.Float),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Index("ix_nodes_heartbeat_at", "heartbeat_at"),
)
