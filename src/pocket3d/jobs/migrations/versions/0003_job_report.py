"""What a job reports: the request as the client sent it (jobs.input), and per stage where it ran, the model's last
message, its warnings and what it found out (stages.device, message, warnings, details).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa

from pocket3d.jobs.migrations import present

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present.add_column("jobs", sa.Column("input", sa.JSON))
    present.add_column("stages", sa.Column("device", sa.String(64)))
    present.add_column("stages", sa.Column("message", sa.Text))
    present.add_column("stages", sa.Column("warnings", sa.JSON))
    present.add_column("stages", sa.Column("details", sa.JSON))


def downgrade() -> None:
    present.drop_columns("stages", "device", "message", "warnings", "details")
    present.drop_columns("jobs", "input")
