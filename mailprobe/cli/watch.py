"""`mailprobe watch`: read the personas' mailboxes into the store, once or continuously."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Sequence

import click

from mailprobe.cli import main
from mailprobe.cli.store import _db_option, _open, _shown
from mailprobe.directory import Account
from mailprobe.directory_io import resolve_password
from mailprobe.errors import InputError
from mailprobe.settings import token_secret
from mailprobe.store import Store
from mailprobe.watch import MailboxReport, SyncReport, sync_mailboxes, watch_forever


def _accounts(store: Store, wanted: Sequence[str]) -> tuple[Account, ...]:
    accounts = store.directory().accounts
    known = {a.id for a in accounts}
    unknown = [a for a in wanted if a not in known]
    if unknown:
        raise InputError(f"no account {', '.join(unknown)}", location="--account",
                         expected=f"one of {', '.join(sorted(known)) or '(none imported yet)'}",
                         hint="import accounts with `mailprobe directory import`")
    chosen = tuple(a for a in accounts if not wanted or a.id in wanted)
    if not chosen:
        raise InputError("no accounts to watch", hint="import accounts with "
                         "`mailprobe directory import` first")
    return chosen


def _echo(report: MailboxReport) -> None:
    click.echo(report.line(), err=bool(report.error))


@main.command("watch")
@click.option("--once", is_flag=True,
              help="Sync every watched folder once, print what was synced, and exit.")
@click.option("--account", "account_ids", multiple=True, metavar="ID",
              help="Only this account (repeat for several; default: all accounts).")
@click.option("--worker-id", metavar="NAME",
              help="Name in the mailbox leases (default: host name and process id).")
@_db_option
def watch_command(once: bool, account_ids: tuple[str, ...], worker_id: str | None,
                  db_url: str | None) -> None:
    """Read new mail from the accounts' watched folders (INBOX and Junk by default).

    Each message is stored as raw bytes with its folder, UIDVALIDITY, UID and the server's
    receive time (INTERNALDATE), then parsed, classified and matched to the probe it
    answers (as `mailprobe process` would); reading a folder again fetches only what is
    new, and a message seen twice (another folder, a UIDVALIDITY change) is stored once.
    Without --once it keeps watching (IDLE, or polling where the server has no IDLE) and
    reconnects after errors, until Ctrl-C. Passwords come from each account's
    environment variable or keyring entry.

    \b
    Example:
      MAILPROBE_PASSWORD_CITIZEN1=... mailprobe watch --once
      mailprobe watch --once --account citizen1 --db sqlite:///workspace/mailprobe.db
      mailprobe watch
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    with _open(db_url) as store:
        accounts = _accounts(store, account_ids)
        passwords = {a.id: resolve_password(a) for a in accounts}
        secret = token_secret(store)
        name = worker_id or f"watch-{socket.gethostname()}-{os.getpid()}"
        if once:
            report = asyncio.run(sync_mailboxes(store, accounts, passwords, store.clock, name,
                                                due_only=False, secret=secret))
            _print(report)
            if report.errors:
                raise click.exceptions.Exit(1)
            return
        click.echo(f"watching {sum(len(a.watch_folders) for a in accounts)} folders of "
                   f"{len(accounts)} accounts into {_shown(store)}; Ctrl-C stops")
        asyncio.run(_watch_until_signal(store, accounts, passwords, name, secret))
    click.echo("stopped")


def _print(report: SyncReport) -> None:
    for m in report.mailboxes:
        _echo(m)
        if m.failed_ids:
            click.echo(f"  failed parses (kept, marked): messages "
                       f"{', '.join(map(str, m.failed_ids))}")
    click.echo(f"{report.new} new messages in {len(report.mailboxes)} folders "
               f"({report.classified} classified and matched), {len(report.errors)} errors")


async def _watch_until_signal(store: Store, accounts: Sequence[Account],
                              passwords: dict[str, str], name: str, secret: bytes) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def show(report: MailboxReport) -> None:
        if report.new or report.error or report.resync:
            _echo(report)

    await watch_forever(store, accounts, passwords, store.clock, name, stop=stop, on_sync=show,
                        secret=secret)
