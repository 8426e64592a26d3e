"""Commands for probe campaigns: plan, arm, pause, run the worker, send, status, probes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from mailprobe import campaign
from mailprobe.cli import main
from mailprobe.cli._output import text_table
from mailprobe.cli.store import _db_option, _open, _shown
from mailprobe.clock import SystemClock
from mailprobe.compose import TemplateSet
from mailprobe.errors import InputError
from mailprobe.models import PlanSaved, ProbeState, RoundStatus
from mailprobe.send import (
    SendPolicy,
    SentFolderError,
    TickReport,
    load_passwords,
    resolve_uncertain_by_sent_folder,
)
from mailprobe.settings import load_settings, token_secret
from mailprobe.store import Store
from mailprobe.tables import Cell, Column, Format, Table
from mailprobe.watch import WatchPolicy
from mailprobe.workdays import default_calendar
from mailprobe.worker import Worker, run_worker, tick

F = TypeVar("F", bound=Callable[..., Any])
_FORMAT = click.Choice(["table", "json"])
_UNSETTLED = (ProbeState.PLANNED, ProbeState.CLAIMED, ProbeState.SENDING)


# --- mailprobe plan ------------------------------------------------------------------------------


@main.command("plan")
@click.option("--schedule", "schedule_file", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The round, e.g. schedules/2015-round1.toml.")
@click.option("--save", is_flag=True, help="Store the plan (saving it again changes nothing).")
@click.option("--eml-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write every rendered message as DIR/<probe>.eml (web forms: .txt).")
@click.option("--format", "fmt", type=_FORMAT, default="table", show_default=True)
@_db_option
def plan_command(schedule_file: Path, save: bool, eml_dir: Path | None, fmt: str,
                 db_url: str | None) -> None:
    """Plan a round against the imported directory; nothing is sent.

    Shows the counts per day, per persona and per template, the balance across levels, and
    the probes that cannot go out (no usable channel). Every template is rendered with its
    probe's details now, so a missing variable fails here, not at sending time.

    \b
    Example:
      mailprobe plan --schedule schedules/2015-round1.toml
      mailprobe plan --schedule schedules/2015-round1.toml --eml-dir out/r1-eml
      mailprobe plan --schedule schedules/2015-round1.toml --save
    """
    with _open(db_url) as store:
        rendered = campaign.render_plan(
            store, schedule_file, templates=TemplateSet.load(), calendar=default_calendar(),
            secret=token_secret(store), clock=store.clock)
        saved = campaign.save_rendered(store, rendered) if save else None
    if eml_dir is not None:
        written = campaign.write_eml(rendered, eml_dir)
        click.echo(f"wrote {len(written)} files to {eml_dir}", err=True)
    if fmt == "json":
        click.echo(json.dumps(_plan_json(rendered, saved), ensure_ascii=False, indent=2))
        return
    click.echo(_plan_text(rendered, saved))


def _plan_json(r: campaign.RenderedPlan, saved: PlanSaved | None) -> dict[str, Any]:
    plan = r.plan
    return {
        "round": plan.round, "name": plan.schedule.name, "probes": len(r.probes),
        "email": r.email, "web_forms": len(r.probes) - r.email,
        "closes_on": plan.closes_on.isoformat() if plan.closes_on else None,
        "already_due": r.already_due,
        "summary": [{"section": s, "key": k, "count": n} for s, k, n in plan.summary.rows()],
        "skipped": [{"agency": x.agency, "level": x.level.value, "city": x.city,
                     "kind": x.kind.value, "count": x.count, "reason": x.reason}
                    for x in plan.skipped],
        "saved": None if saved is None else {"added": saved.added, "updated": saved.updated,
                                             "removed": saved.removed,
                                             "unchanged": saved.unchanged},
    }


def _counts(title: str, what: str, rows: Sequence[tuple[str, int]]) -> str:
    table = Table("counts", title, (Column("key", what), Column("n", "probes", Format.INT)),
                  tuple(rows))
    return text_table(table)


def _plan_text(r: campaign.RenderedPlan, saved: PlanSaved | None) -> str:
    plan, summary = r.plan, r.plan.summary
    head = (f"round {plan.round} ({plan.schedule.name}): {len(r.probes)} probes, {r.email} by "
            f"e-mail, {len(r.probes) - r.email} by web form; replies timed until "
            f"{plan.closes_on or '-'}")
    parts = [head]
    if r.window.closes <= SystemClock().now():
        last = (r.window.closes - timedelta(days=1)).date()
        parts.append(f"warning: the round's last day was {last}: a worker would not send its "
                     "probes but mark them failed (replay it with a manual clock)")
    elif r.already_due:
        parts.append(f"note: {r.already_due} probes are already due: a worker sends them at "
                     "once, inside office hours")
    sections = {s: [(k, n) for s2, k, n in summary.rows() if s2 == s] for s in (
        "day", "persona", "template", "persona_balance", "template_balance")}
    parts += [_counts("per day", "day", sections["day"]),
              _counts("per persona", "persona", sections["persona"]),
              _counts("per template", "template", sections["template"])]
    balance = [(f"persona {k}", n) for k, n in sections["persona_balance"]] + [
        (f"template {k}", n) for k, n in sections["template_balance"]]
    parts.append(_counts("balance (most minus fewest)", "level", balance))
    skipped = Table("skipped", f"skipped: {summary.skipped} probes", (
        Column("agency", "agency"), Column("kind", "kind"), Column("n", "probes", Format.INT),
        Column("reason", "reason")),
        tuple((x.agency, x.kind.label, x.count, x.reason) for x in plan.skipped))
    parts.append(text_table(skipped) if plan.skipped else skipped.title)
    if saved is not None:
        parts.append(f"saved: {saved.added} added, {saved.updated} updated, {saved.removed} "
                     f"removed, {saved.unchanged} unchanged")
    else:
        parts.append("not saved (add --save to store it)")
    return "\n\n".join(parts)


# --- arm, disarm, pause, resume ------------------------------------------------------------------


def _flag_command(name: str, doc: str, **flags: bool) -> None:
    @main.command(name, help=doc)
    @click.argument("round_id", metavar="ROUND")
    @_db_option
    def command(round_id: str, db_url: str | None) -> None:
        with _open(db_url) as store:
            s = campaign.set_flags(store, round_id, **flags)
        click.echo(f"round {s.round}: {'armed' if s.armed else 'not armed'}, "
                   f"{'paused' if s.paused else 'sending when due'}")


_flag_command("arm", """Allow a round to send to real (non-loopback) servers.

    Until it is armed, a round sends only through loopback test servers.

    \b
    Example:
      mailprobe arm 2015-r1
    """, armed=True)
_flag_command("disarm", """Stop a round from sending to real servers (loopback only).

    \b
    Example:
      mailprobe disarm 2015-r1
    """, armed=False)
_flag_command("pause", """The kill switch: stop a round's sending at once.

    Probes already claimed are not handed to the server; the one in flight finishes.

    \b
    Example:
      mailprobe pause 2015-r1
    """, paused=True)
_flag_command("resume", """Let a paused round send again (what is overdue goes first).

    \b
    Example:
      mailprobe resume 2015-r1
    """, paused=False)


# --- run and send --------------------------------------------------------------------------------


def _send_options(f: F) -> F:
    for option in reversed((  # decorators apply bottom-up: keep --help in this order
        click.option("--worker-id", metavar="ID", help="Names this worker in the probe trail "
                     "(default: host name and process id)."),
        click.option("--lease", type=click.FloatRange(min=0.1), metavar="SECONDS",
                     help="How long claims last (default: [campaign] claim_lease_seconds)."),
        click.option("--batch", type=click.IntRange(min=1), metavar="N",
                     help="Probes claimed at a time (default: [campaign] claim_batch)."),
        click.option("--sent-copies/--no-sent-copies", default=True, show_default=True,
                     help="Save a copy of each sent probe in the persona's Sent folder."),
    )):
        f = option(f)
    return f


def _worker(store: Store, db_url: str | None, worker_id: str | None, lease: float | None,
            batch: int | None, sent_copies: bool, *, watch: bool = False) -> Worker:
    settings = load_settings(db_url=db_url)
    # Passwords once, before anything is sent: a missing one is a single error line.
    passwords = load_passwords(store.directory().accounts)
    policy = SendPolicy(batch=batch or settings.claim_batch, sent_copies=sent_copies,
                        lease=timedelta(seconds=lease) if lease else settings.claim_lease)
    name = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    return Worker(store, store.clock, name, passwords, policy, watch=watch)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("apscheduler", "alembic"):  # a line per tick, per schema check otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _echo_tick(report: TickReport) -> None:
    if report.busy:
        click.echo(f"{SystemClock().now():%Y-%m-%d %H:%M:%S}Z {report}")


@main.command("run")
@click.option("--tick", "tick_seconds", type=click.FloatRange(min=0.01), default=60.0,
              show_default=True, metavar="SECONDS", help="Time between two ticks.")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Also sync the personas' mailboxes and classify and match new mail.")
@click.option("--mailbox-lease", type=click.FloatRange(min=0.1), default=300.0,
              show_default=True, metavar="SECONDS",
              help="How long a worker holds a mailbox it watches unless it renews the hold; "
                   "a dead worker's mailboxes are taken over after this long.")
@_send_options
@_db_option
def run_command(tick_seconds: float, watch: bool, mailbox_lease: float, worker_id: str | None,
                lease: float | None, batch: int | None, sent_copies: bool,
                db_url: str | None) -> None:
    """The long-running worker: every tick sends what is due and saves Sent copies; beside
    it, on the same interval, it syncs the mailboxes and classifies and matches new mail.

    The database decides what is due, so a restart, a changed schedule or a second worker
    (PostgreSQL) never loses or repeats a probe. Ctrl-C stops after the current tick;
    a second Ctrl-C stops at once (a probe cut off in DATA becomes uncertain, never resent).

    \b
    Example:
      MAILPROBE_PASSWORD_CITIZEN1=... mailprobe run
      mailprobe run --tick 30 --worker-id mail-1 --db postgresql://postgres@127.0.0.1/mailprobe
    """
    _logging()
    with _open(db_url) as store:
        worker = _worker(store, db_url, worker_id, lease, batch, sent_copies, watch=watch)
        worker = replace(worker, watch_policy=WatchPolicy(
            lease=timedelta(seconds=mailbox_lease)))
        click.echo(f"worker {worker.worker_id} started on {_shown(store)}, a tick every "
                   f"{tick_seconds:g} s; Ctrl-C stops it")
        try:
            ticks = asyncio.run(_run_until_signal(worker, tick_seconds))
        except asyncio.CancelledError:
            raise click.exceptions.Exit(130) from None
    click.echo(f"worker {worker.worker_id} stopped after {ticks} ticks")


async def _run_until_signal(worker: Worker, tick_seconds: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and me is not None:
            me.cancel()  # the second signal: stop now
            return
        stop.set()
        click.echo("stopping after the current tick (Ctrl-C again: at once)", err=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return await run_worker(worker.store, worker.clock, tick_seconds=tick_seconds,
                            stop_event=stop, worker_id=worker.worker_id,
                            passwords=worker.passwords, policy=worker.policy,
                            on_tick=_echo_tick, watch=worker.watch,
                            watch_policy=worker.watch_policy)


@main.command("send")
@click.option("--due", is_flag=True, help="Send what is due now (one tick), then exit.")
@_send_options
@_db_option
def send_command(due: bool, worker_id: str | None, lease: float | None, batch: int | None,
                 sent_copies: bool, db_url: str | None) -> None:
    """One tick of the worker, for cron: send what is due, save Sent copies, exit.

    Mail is read by `mailprobe watch --once` (and `mailprobe process`), which cron can run too.

    \b
    Example:
      mailprobe send --due
      */5 * * * * cd /srv/mailprobe && mailprobe send --due >> send.log 2>&1
    """
    if not due:
        raise InputError("nothing to do", expected="--due", hint="mailprobe send --due")
    _logging()
    with _open(db_url) as store:
        worker = _worker(store, db_url, worker_id, lease, batch, sent_copies)
        report = asyncio.run(tick(worker))
    click.echo(str(report))


# --- status --------------------------------------------------------------------------------------


@main.command("status")
@click.argument("round_id", metavar="ROUND")
@click.option("--format", "fmt", type=_FORMAT, default="table", show_default=True)
@click.option("--wait", is_flag=True,
              help="Show a progress bar until no probe is left planned or in flight.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --wait: stop waiting after this long.")
@_db_option
def status_command(round_id: str, fmt: str, wait: bool, timeout: float | None,
                   db_url: str | None) -> None:
    """A round's progress: probes by state, by planned day and by agency.

    \b
    Example:
      mailprobe status 2015-r1
      mailprobe status 2015-r1 --wait --timeout 600
      mailprobe status 2015-r1 --format json
    """
    with _open(db_url) as store:
        s = campaign.status(store, round_id)
        if wait:
            s = _wait(store, s, timeout)
    if fmt == "json":
        click.echo(json.dumps(_status_json(s), ensure_ascii=False, indent=2))
    else:
        click.echo(_status_text(s))


def _settled(s: RoundStatus) -> int:
    return s.total - sum(s.by_state.get(state, 0) for state in _UNSETTLED)


def _wait(store: Store, s: RoundStatus, timeout: float | None) -> RoundStatus:
    deadline = None if timeout is None else time.monotonic() + timeout
    with click.progressbar(length=s.total, label=f"round {s.round}", show_pos=True,
                           file=click.get_text_stream("stderr")) as bar:
        done = _settled(s)
        bar.update(done)
        while done < s.total and (deadline is None or time.monotonic() < deadline):
            time.sleep(1.0)
            s = campaign.status(store, s.round)
            bar.update(_settled(s) - done)
            done = _settled(s)
    return s


def _states(counts: Mapping[ProbeState, int]) -> dict[str, int]:
    return {state.value: counts[state] for state in ProbeState if counts.get(state)}


def _status_json(s: RoundStatus) -> dict[str, Any]:
    return {"round": s.round, "name": s.name, "armed": s.armed, "paused": s.paused,
            "total": s.total, "by_state": _states(s.by_state),
            "by_day": {d.isoformat(): _states(c) for d, c in s.by_day.items()},
            "by_agency": {a: _states(c) for a, c in s.by_agency.items()}}


def _state_table(title: str, what: str, rows: Mapping[str, Mapping[ProbeState, int]],
                 states: Sequence[ProbeState]) -> str:
    columns = (Column("key", what), *(Column(st.value, st.value, Format.INT) for st in states))
    body: tuple[tuple[Cell, ...], ...] = tuple(
        (key, *(c.get(st, 0) for st in states)) for key, c in rows.items())
    return text_table(Table("status", title, columns, body))


def _status_text(s: RoundStatus) -> str:
    states = [st for st in ProbeState if s.by_state.get(st)] or [ProbeState.PLANNED]
    flags = f"{'armed' if s.armed else 'not armed'}, {'paused' if s.paused else 'running'}"
    return "\n\n".join([
        f"round {s.round} ({s.name}): {s.total} probes, {flags}",
        _state_table("by state", "", {"all": s.by_state}, states),
        _state_table("by planned day", "day", {d.isoformat(): c for d, c in s.by_day.items()},
                     states),
        _state_table("by agency", "agency", s.by_agency, states),
    ])


# --- probes --------------------------------------------------------------------------------------


@main.group("probes")
def probes() -> None:
    """Single probes: web-form submissions, uncertain probes, an operator's decisions.

    \b
    Example:
      mailprobe probes show-form 2015-r1-0042
      mailprobe probes uncertain
    """


def _instant(text: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError("not an ISO date-time", location=option,
                         expected="e.g. 2015-11-03T10:20+08:00", got=text) from None
    if when.utcoffset() is None:
        raise InputError("a date-time without a UTC offset", location=option,
                         expected="e.g. 2015-11-03T10:20+08:00", got=text)
    return when


@probes.command("submitted")
@click.argument("probe_id", metavar="PROBE_ID")
@click.option("--at", "at_text", required=True, metavar="ISO_DATETIME",
              help="When the form was submitted, with its offset (e.g. +08:00).")
@click.option("--by", default=lambda: os.environ.get("USER", "operator"), show_default="$USER",
              metavar="NAME", help="Who submitted it.")
@_db_option
def submitted_command(probe_id: str, at_text: str, by: str, db_url: str | None) -> None:
    """Record that an operator submitted a web-form probe; it is timed from then on.

    \b
    Example:
      mailprobe probes submitted 2015-r1-0042 --at 2015-11-03T10:20+08:00 --by 王芳
    """
    at = _instant(at_text, "--at")
    with _open(db_url) as store:
        if at > store.clock.now():
            raise InputError("a submission in the future", location="--at", got=at_text)
        store.record_submission(probe_id, at, by)
    click.echo(f"probe {probe_id}: submitted at {at.isoformat()} by {by}")


@probes.command("show-form")
@click.argument("probe_id", metavar="PROBE_ID")
@_db_option
def show_form_command(probe_id: str, db_url: str | None) -> None:
    """Print a web-form probe's URL, subject and text for the operator to paste.

    \b
    Example:
      mailprobe probes show-form 2015-r1-0042
    """
    with _open(db_url) as store:
        view = campaign.form_probe(store, probe_id)
    click.echo(f"网址: {view.channel.form_url}\n单位: {view.agency}（{view.channel.kind.label}）\n"
               f"状态: {view.state.value}\n标题: {view.subject}\n\n{view.body}")


@probes.command("resolve")
@click.argument("probe_id", metavar="PROBE_ID")
@click.option("--sent/--resend", "sent", default=None,
              help="--sent: it did go out; --resend: it did not, send it again.")
@click.option("--by", required=True, metavar="NAME", help="Who decided (kept in the trail).")
@_db_option
def resolve_command(probe_id: str, sent: bool | None, by: str, db_url: str | None) -> None:
    """An operator's decision on an uncertain probe: it was sent, or send it again.

    \b
    Example:
      mailprobe probes resolve 2015-r1-0042 --sent --by 王芳
      mailprobe probes resolve 2015-r1-0043 --resend --by 王芳
    """
    if sent is None:
        raise InputError("say what happened", expected="--sent or --resend")
    with _open(db_url) as store:
        store.resolve_uncertain(probe_id, sent, f"operator {by}")
    click.echo(f"probe {probe_id}: {'sent' if sent else 'to be sent again'} (by {by})")


@probes.command("uncertain")
@click.option("--search/--no-search", default=True, show_default=True,
              help="Look for each probe's Message-ID in its persona's Sent folder first.")
@_db_option
def uncertain_command(search: bool, db_url: str | None) -> None:
    """List uncertain probes, settling those found in the Sent folder.

    The rest need an operator: `mailprobe probes resolve ID --sent|--resend --by NAME`.

    \b
    Example:
      mailprobe probes uncertain
      mailprobe probes uncertain --no-search
    """
    with _open(db_url) as store:
        if search:
            for line in _search_sent(store):
                click.echo(line)
        left = store.list_uncertain()
    table = Table("uncertain", f"uncertain: {len(left)} probes", (
        Column("probe", "probe"), Column("round", "round"), Column("agency", "agency"),
        Column("to", "to"), Column("account", "account"), Column("message_id", "Message-ID")),
        tuple((p.probe_id, p.round, p.agency, p.to_address, p.account, p.message_id)
              for p in left))
    click.echo(text_table(table) if left else table.title)


def _search_sent(store: Store) -> list[str]:
    wanted = {p.account for p in store.list_uncertain()}
    accounts = [a for a in store.directory().accounts if a.id in wanted]
    if not accounts:
        return []
    passwords = load_passwords(accounts)
    lines = []
    for account in accounts:
        try:
            result = asyncio.run(resolve_uncertain_by_sent_folder(store, account, passwords))
        except SentFolderError as exc:  # one account down: still list every probe
            lines.append(f"warning: {exc.one_line()}")
            continue
        lines += [f"probe {p}: found in the Sent folder of {account.id}: sent"
                  for p in result.found]
    return lines
