"""Alembic environment: runs on the connection that ``Store.upgrade()`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from mailprobe.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("mailprobe migrations run through Store.upgrade(), not the alembic CLI")
_run(connection)
