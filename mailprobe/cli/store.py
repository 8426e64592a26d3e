"""Commands for the workspace database and the directory of agencies, channels and personas."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url

from mailprobe.cli import main
from mailprobe.cli._output import text_table
from mailprobe.directory import Account, Endpoint
from mailprobe.directory_io import Directory, load_directory
from mailprobe.models import Counts
from mailprobe.settings import load_settings
from mailprobe.sheets import Level
from mailprobe.store import Store
from mailprobe.tables import Column, Format, Table

F = TypeVar("F", bound=Callable[..., Any])


def _db_option(f: F) -> F:
    return click.option(
        "--db", "db_url", metavar="URL",
        help="Database URL (default: MAILPROBE_DATABASE_URL, else [database] url in "
             "config/mailprobe.toml, else sqlite:///workspace/mailprobe.db).",
    )(f)


def _open(db_url: str | None, *, current: bool = True) -> Store:
    store = Store(load_settings(db_url=db_url).database_url)
    if current:
        store.check_current()
    return store


def _shown(store: Store) -> str:
    return make_url(store.url).render_as_string(hide_password=True)


# --- mailprobe db ----------------------------------------------------------------------------


@main.group("db")
def db() -> None:
    """The workspace database: SQLite by default (one file), PostgreSQL by URL.

    \b
    Example:
      mailprobe db upgrade
      mailprobe db upgrade --db postgresql://postgres@127.0.0.1/mailprobe
    """


@db.command("upgrade")
@_db_option
def upgrade_command(db_url: str | None) -> None:
    """Create the tables, or bring them to the current schema; running it again does nothing.

    \b
    Example:
      mailprobe db upgrade
      mailprobe db upgrade --db sqlite:///workspace/mailprobe.db
      MAILPROBE_DATABASE_URL=postgresql://postgres@127.0.0.1/mailprobe mailprobe db upgrade
    """
    with _open(db_url, current=False) as store:
        before = store.current_revision()
        head = store.upgrade()
        where = _shown(store)
    if before == head:
        click.echo(f"{where}: already at revision {head}")
    else:
        click.echo(f"{where}: upgraded from {before or 'an empty database'} to revision {head}")


# --- mailprobe directory ---------------------------------------------------------------------


@main.group("directory")
def directory() -> None:
    """Agencies, their channels, and the personas and mailboxes that write to them.

    \b
    Example:
      mailprobe directory import --agencies samples/2015/agencies.csv \\
          --channels samples/2015/channels.csv --personas config/personas.toml
      mailprobe directory show
    """


_LEVEL = {Level.CITY: "市级", Level.COUNTY: "县级"}
_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@directory.command("import")
@click.option("--agencies", type=_FILE, required=True, metavar="FILE",
              help="Agency list, CSV or XLSX: 单位,级别,所属地市,网站.")
@click.option("--channels", type=_FILE, required=True, metavar="FILE",
              help="Channels, CSV or XLSX: 单位,渠道 (咨询/投诉/监督/信箱),地址 (email or URL).")
@click.option("--personas", type=_FILE, required=True, metavar="FILE",
              help="Accounts and personas, TOML ([[accounts]], [[personas]]).")
@_db_option
def import_command(agencies: Path, channels: Path, personas: Path, db_url: str | None) -> None:
    """Check all three files, then add or update their rows in one transaction.

    Nothing is written unless every file is valid. Rows already in the database but
    absent from the files are kept (and counted), never deleted. Passwords are not
    read: accounts name the environment variable (or keyring entry) that holds them.

    \b
    Example:
      mailprobe db upgrade
      mailprobe directory import --agencies samples/2015/agencies.csv \\
          --channels samples/2015/channels.csv --personas config/personas.toml
    """
    found = load_directory(agencies, channels, personas)
    with _open(db_url) as store:
        counts = store.import_directory(found.agencies, found.channels, found.accounts,
                                        found.personas)
        where = _shown(store)
    table = Table("import", f"imported into {where}", (
        Column("what", "what"), Column("added", "added", Format.INT),
        Column("updated", "updated", Format.INT), Column("unchanged", "unchanged", Format.INT),
        Column("kept", "kept (not in the files)", Format.INT)),
        tuple(_count_row(name, getattr(counts, name))
              for name in ("agencies", "channels", "accounts", "personas")))
    click.echo(text_table(table))


def _count_row(name: str, c: Counts) -> tuple[str, int, int, int, int]:
    return (name, c.added, c.updated, c.unchanged, c.absent)


@directory.command("show")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@_db_option
def show_command(fmt: str, db_url: str | None) -> None:
    """List the imported channels, accounts and personas (never a password).

    \b
    Example:
      mailprobe directory show
      mailprobe directory show --format json > directory.json
    """
    with _open(db_url) as store:
        found = store.directory()
    if fmt == "json":
        click.echo(json.dumps(_as_json(found), ensure_ascii=False, indent=2))
        return
    click.echo("\n\n".join(text_table(t) for t in _tables(found)))


def _endpoint(e: Endpoint) -> str:
    return f"{e.host}:{e.port} ({e.tls.value})"


def _password_source(a: Account) -> str:
    return " or ".join(x for x in (a.password_env and f"${a.password_env}",
                                   a.keyring_service and f"keyring {a.keyring_service}") if x)


def _table(id: str, title: str, columns: tuple[tuple[str, str], ...],
           rows: list[tuple[str, ...]]) -> Table:
    return Table(id, title, tuple(Column(k, t) for k, t in columns), tuple(rows))


def _tables(d: Directory) -> list[Table]:
    agency = {a.name: a for a in d.agencies}
    covered = len({c.agency for c in d.channels})
    channels = _table(
        "channels", f"渠道：{len(d.channels)} 个，覆盖 {covered} 个单位（共 {len(d.agencies)} 个）",
        (("agency", "单位"), ("level", "级别"), ("city", "所属地市"), ("kind", "渠道"),
         ("target", "地址")),
        [(c.agency, _LEVEL[agency[c.agency].level], agency[c.agency].city, c.kind.label,
          c.address or c.form_url or "") for c in d.channels])
    accounts = _table(
        "accounts", f"邮箱账号：{len(d.accounts)} 个",
        (("id", "id"), ("address", "地址"), ("smtp", "SMTP"), ("imap", "IMAP"),
         ("password", "密码来源")),
        [(a.id, a.address, _endpoint(a.smtp), _endpoint(a.imap), _password_source(a))
         for a in d.accounts])
    personas = _table(
        "personas", f"模拟群众：{len(d.personas)} 人",
        (("id", "id"), ("name", "姓名"), ("district", "地区"), ("account", "账号"),
         ("tracking", "跟踪方式")),
        [(p.id, p.name, p.district, p.account, ", ".join(t.value for t in p.tracking))
         for p in d.personas])
    return [channels, accounts, personas]


def _as_json(d: Directory) -> dict[str, Any]:
    return {
        "agencies": [{"name": a.name, "level": a.level.value, "city": a.city,
                      "website": a.website} for a in d.agencies],
        "channels": [{"agency": c.agency, "kind": c.kind.value, "address": c.address,
                      "form_url": c.form_url} for c in d.channels],
        "accounts": [{"id": a.id, "address": a.address, "user": a.user,
                      "smtp": {"host": a.smtp.host, "port": a.smtp.port, "tls": a.smtp.tls.value},
                      "imap": {"host": a.imap.host, "port": a.imap.port, "tls": a.imap.tls.value},
                      "password_env": a.password_env, "keyring_service": a.keyring_service,
                      "plus_addressing": a.plus_addressing, "sent_folder": a.sent_folder,
                      "watch_folders": list(a.watch_folders)} for a in d.accounts],
        "personas": [{"id": p.id, "name": p.name, "district": p.district, "account": p.account,
                      "details": dict(p.details), "tracking": [t.value for t in p.tracking]}
                     for p in d.personas],
    }
