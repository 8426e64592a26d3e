"""Workspace settings: the database URL and campaign options from config/mailprobe.toml."""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mailprobe.errors import ConfigError
from mailprobe.paths import config_dir

if TYPE_CHECKING:
    from mailprobe.store import Store

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "TOKEN_SECRET_ENV",
    "Settings",
    "load_settings",
    "normalise_database_url",
    "token_secret",
]

DEFAULT_DATABASE_URL = "sqlite:///workspace/mailprobe.db"
DATABASE_URL_ENV = "MAILPROBE_DATABASE_URL"
TOKEN_SECRET_ENV = "MAILPROBE_TOKEN_SECRET"
_TOKEN_SECRET_KEY = "token_secret"
_MIN_SECRET_BYTES = 16
_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "database": {"url": str},
    "campaign": {"claim_lease_seconds": int, "claim_batch": int},
}


@dataclass(frozen=True)
class Settings:
    """Validated workspace settings; ``database_url_from`` says which source won.

    The token secret that signs probe tokens is deliberately not a field: it never
    lives in a file. ``token_secret(store)`` reads ``MAILPROBE_TOKEN_SECRET`` or, when
    that is unset, the secret generated once and kept in the database's settings table
    (whoever can read the database can read the probes anyway, and the secret must
    survive restarts and be shared by every worker on that database).
    """

    database_url: str
    database_url_from: str
    claim_lease: timedelta = timedelta(minutes=5)
    claim_batch: int = 200
    config_file: Path | None = None

    @property
    def database_url_shown(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return make_url(self.database_url).render_as_string(hide_password=True)


def load_settings(path: str | Path | None = None, *, db_url: str | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path`` (default config/mailprobe.toml), then the environment, then --db.

    A missing default file means the built-in defaults; a missing named file is an error.
    """
    environ = os.environ if env is None else env
    file = Path(path) if path is not None else config_dir() / "mailprobe.toml"
    if path is not None and not file.is_file():
        raise ConfigError("settings file not found", source=file, expected="a TOML file")
    data = _read_toml(file) if file.is_file() else {}
    source = str(file)
    _check_keys(data, source)
    database = data.get("database", {})
    campaign = data.get("campaign", {})
    url, url_from = database.get("url", DEFAULT_DATABASE_URL), f"{source} [database] url"
    if "url" not in database:
        url_from = "default"
    if environ.get(DATABASE_URL_ENV):
        url, url_from = environ[DATABASE_URL_ENV], DATABASE_URL_ENV
    if db_url:
        url, url_from = db_url, "--db"
    return Settings(
        database_url=normalise_database_url(url, source=url_from),
        database_url_from=url_from,
        claim_lease=timedelta(seconds=_positive(campaign, "claim_lease_seconds", 300, source)),
        claim_batch=_positive(campaign, "claim_batch", 200, source),
        config_file=file if file.is_file() else None,
    )


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=file) from None


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    for section, value in data.items():
        if section not in _KEYS:
            raise ConfigError("unknown section", source=source, location=f"[{section}]",
                              expected=" or ".join(f"[{s}]" for s in _KEYS))
        if not isinstance(value, dict):
            raise ConfigError("expected a table", source=source, location=section,
                              expected=f"[{section}]", got=value)
        for key, item in value.items():
            types = _KEYS[section].get(key)
            if types is None:
                raise ConfigError("unknown key", source=source, location=f"[{section}] {key}",
                                  expected=", ".join(_KEYS[section]),
                                  hint=_secret_hint(key))
            if not isinstance(item, types) or isinstance(item, bool):
                raise ConfigError("wrong type", source=source, location=f"[{section}] {key}",
                                  expected=getattr(types, "__name__", "a value"), got=item)


def _secret_hint(key: str) -> str | None:
    if "secret" in key or "password" in key:
        return f"secrets never go in files: set {TOKEN_SECRET_ENV} or a password_env variable"
    return None


def _positive(section: Mapping[str, Any], key: str, default: int, source: str) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or value < 1:
        raise ConfigError("must be a positive whole number", source=source,
                          location=f"[campaign] {key}", expected="an integer >= 1", got=value)
    return value


def normalise_database_url(url: str, *, source: str = "database url") -> str:
    """A SQLAlchemy URL for SQLite or PostgreSQL; ``postgresql://`` uses psycopg 3."""
    try:
        parsed: URL = make_url(url.strip())
    except ArgumentError:
        raise ConfigError("not a database URL", source=source,
                          expected="sqlite:///PATH or postgresql://USER@HOST/DB",
                          got=url) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError("unsupported database", source=source,
                          expected="sqlite:///PATH or postgresql://USER@HOST/DB", got=url)
    if backend == "postgresql" and "+" not in parsed.drivername:
        # psycopg 3 is the one driver we install; SQLAlchemy 2.0 would pick psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def token_secret(store: Store, env: Mapping[str, str] | None = None) -> bytes:
    """The key that signs probe tokens: ``MAILPROBE_TOKEN_SECRET``, else kept in the database.

    Generated once (256 random bits) on first use and stored in the settings table, so
    every worker on the same database signs and verifies with the same key.
    """
    environ = os.environ if env is None else env
    value = environ.get(TOKEN_SECRET_ENV)
    if value:
        if len(value.encode()) < _MIN_SECRET_BYTES:
            raise ConfigError("token secret too short", source=TOKEN_SECRET_ENV,
                              expected=f"at least {_MIN_SECRET_BYTES} bytes",
                              got=f"{len(value.encode())} bytes")
        return value.encode()
    stored = store.setting_or_create(_TOKEN_SECRET_KEY, lambda: secrets.token_urlsafe(32))
    return stored.encode()
