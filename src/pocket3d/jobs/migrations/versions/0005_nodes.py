"""The cluster's nodes: one row a gateway or worker, with its heartbeat and what it holds.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pocket3d.jobs.migrations import present

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present.create_table(
        "nodes",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("draining", sa.Boolean, nullable=False),
        sa.Column("stopped_at", sa.Float),
        sa.Column("state", sa.JSON, nullable=False),
    )
    present.create_index("ix_nodes_heartbeat_at", "nodes", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_table("nodes")
