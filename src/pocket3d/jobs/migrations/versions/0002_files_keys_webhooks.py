"""What came after the initial schema, before migrations: upload tombstones, Idempotency-Keys, the webhook outbox
and its endpoints, and a stage's interruptions; schema_info says 2, so a server older than migrations refuses the
database rather than writing to it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pocket3d.jobs.migrations import present

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present.add_column("stages", sa.Column("interruptions", sa.Integer, nullable=True))
    present.create_table(
        "file_tombstones",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("expired_at", sa.Float, nullable=False),
    )
    present.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    present.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    present.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("description", sa.String(255)),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    present.create_index("ix_webhook_endpoints_owner_id", "webhook_endpoints", ["owner_id"])
    present.create_table(
        "webhook_secrets",
        sa.Column("owner_id", sa.String(64), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    present.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(40)),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
    )
    present.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    present.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    present.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(40), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
    )
    present.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.execute(sa.text("UPDATE schema_info SET version = 2"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE schema_info SET version = 1"))
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_secrets", "webhook_endpoints",
                  "idempotency_keys", "file_tombstones"):
        op.drop_table(table)
    present.drop_columns("stages", "interruptions")
