"""Instants written in bulk on SQLite get the text form every other write has.

Rows written at DBAPI speed (messages, their locations, matches) had their instants turned
into text by sqlite3's fallback adapter, which leaves out zero microseconds
("2015-10-12 01:00:00" where SQLAlchemy writes "2015-10-12 01:00:00.000000"). Read back,
both are the same instant; compared as text inside a query, the short form sorts below
the long one, so a bound such as ``internaldate >= :t`` missed the instant ``t`` itself.
PostgreSQL stores real timestamps and is not touched.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BULK_WRITTEN = {
    "messages": ("internaldate", "fetched_at", "parsed_at", "classified_at"),
    "message_locations": ("internaldate",),
    "matches": ("decided_at", "matched_at"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, columns in _BULK_WRITTEN.items():
        for column in columns:
            op.execute(f"UPDATE {table} SET {column} = {column} || '.000000' "
                       f"WHERE length({column}) = 19")


def downgrade() -> None:
    pass  # the long form is what SQLAlchemy itself writes: nothing to undo
