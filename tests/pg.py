"""PostgreSQL for tests: a throwaway database on 127.0.0.1:5432, dropped afterwards."""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["ADMIN_URL", "require_postgres", "throwaway_database", "unreachable_reason"]

ADMIN_URL = os.environ.get("MAILPROBE_TEST_PG",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@functools.cache
def unreachable_reason() -> str | None:
    """None when the server answers; else why not (checked once per test session)."""
    try:
        engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except (SQLAlchemyError, ImportError) as exc:
        return f"PostgreSQL at {ADMIN_URL} unreachable: {str(exc).splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip (or, with CI=true, fail) the calling test when PostgreSQL is unreachable."""
    reason = unreachable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
    pytest.skip(reason)


@contextmanager
def throwaway_database(prefix: str = "mailprobe_test") -> Iterator[str]:
    """Create ``<prefix>_<random>``, yield its URL, drop it (even if connections linger).

    Use it from any test module::

        @pytest.fixture
        def pg_url() -> Iterator[str]:
            with throwaway_database() as url:
                yield url

    When the server cannot be reached the test is skipped with the reason, except in CI
    (``CI=true``), where it fails: a CI run must never pass by skipping the multi-worker
    suite. ``MAILPROBE_TEST_PG`` overrides the admin URL (default: user postgres, trust).
    """
    require_postgres()
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
