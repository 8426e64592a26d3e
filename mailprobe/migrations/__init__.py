"""Alembic migrations shipped with the package; applied by ``Store.upgrade()``."""
