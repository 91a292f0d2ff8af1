"""Compat sessions: a foreign client's unit of work that spans several jobs (ProtoScale-AI's upload, views and 3D
model; pocket3d.jobs.sessions). A new table only.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pocket3d.jobs.migrations import present

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present.create_table(
        "compat_sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("flavour", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(40), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("jobs", sa.JSON, nullable=False),
        sa.Column("step", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    present.create_index("ix_compat_sessions_owner", "compat_sessions", ["flavour", "owner_id", "id"])
    present.create_index("ix_compat_sessions_expires_at", "compat_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("compat_sessions")
