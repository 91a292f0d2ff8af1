"""What a revision finds already there. Before migrations, the server made missing tables itself and added
missing nullable columns in place, so a database made by the code between two revisions may hold part of what the
later one adds: additive revisions create only what is missing."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _inspector() -> sa.Inspector:
    return sa.inspect(op.get_bind())


def has_table(name: str) -> bool:
    return _inspector().has_table(name)


def has_column(table: str, column: str) -> bool:
    return column in {c["name"] for c in _inspector().get_columns(table)}


def has_index(table: str, name: str) -> bool:
    return name in {i["name"] for i in _inspector().get_indexes(table)}


def create_table(name: str, *elements: sa.SchemaItem) -> None:
    if not has_table(name):
        op.create_table(name, *elements)


def create_index(name: str, table: str, columns: list[str]) -> None:
    if not has_index(table, name):
        op.create_index(name, table, columns)


def add_column(table: str, column: sa.Column) -> None:
    if not has_column(table, column.name):
        op.add_column(table, column)


def drop_columns(table: str, *columns: str) -> None:
    with op.batch_alter_table(table) as batch:
        for column in columns:
            batch.drop_column(column)
