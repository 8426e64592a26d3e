"""Commands for the matching stage and its review: process, review, replies."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from mailprobe import process as stage
from mailprobe import review as decisions
from mailprobe.classify import MessageKind
from mailprobe.cli import main
from mailprobe.cli._output import terminal_safe, text_table
from mailprobe.cli.store import _db_option, _open
from mailprobe.errors import InputError
from mailprobe.models_review import Decider, ReplyRoute
from mailprobe.settings import token_secret
from mailprobe.tables import Column, Format, Table
from mailprobe.workdays import default_calendar, parse_when

_FORMAT = click.Choice(["table", "json"])
_GUESSES_SHOWN = 3


def _local(at: datetime) -> str:
    return at.astimezone(default_calendar().zone).strftime("%Y-%m-%d %H:%M")


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


# --- mailprobe process ------------------------------------------------------------------------


@main.command("process")
@click.option("--reprocess", is_flag=True,
              help="Also run again every message classified by older rules (human decisions "
                   "are kept).")
@click.option("--limit", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="At most this many new messages.")
@_db_option
def process_command(reprocess: bool, limit: int, db_url: str | None) -> None:
    """Classify and match the stored messages not processed yet (the worker does this too).

    Every message gets a kind (reply, acknowledgement, auto_reply, bounce, unrelated) with
    its evidence, and is attached to the probe it answers; what no rule attaches with
    confidence goes to the review queue (`mailprobe review list`). Running it again does
    nothing new; --reprocess re-runs messages whose rules version is out of date.

    \b
    Example:
      mailprobe process
      mailprobe process --reprocess --db sqlite:///workspace/mailprobe.db
    """
    with _open(db_url) as store:
        secret = token_secret(store)
        report = stage.process_new(store, secret, limit=limit, clock=store.clock)
        click.echo(report.line())
        if reprocess:
            again = stage.reprocess(store, secret, clock=store.clock)
            click.echo(f"re-run: {again.line()}")


# --- mailprobe review -------------------------------------------------------------------------


@main.group("review")
def review() -> None:
    """The review queue: messages no rule attached with confidence, and evaluators' decisions.

    The machine's proposal and the evaluator's decision are both kept; re-running the
    matcher never overrides a decision.

    \b
    Example:
      mailprobe review list --round 2015-r1
      mailprobe review show 42
      mailprobe review assign 42 2015-r1-0007 --by 王敏 --reason "quotes our letter"
    """


def _guess_text(item: decisions.QueueItem) -> str:
    shown = [f"{g.probe_id} {g.score:.2f}" for g in item.guesses[:_GUESSES_SHOWN]]
    more = len(item.guesses) - _GUESSES_SHOWN
    return ", ".join(shown) + (f" (+{more})" if more > 0 else "") if shown else "—"


def _queue_json(item: decisions.QueueItem) -> dict[str, Any]:
    return {"message_id": item.message_id, "account": item.account,
            "received_at": item.received_at.isoformat(), "from": item.sender,
            "subject": item.subject, "kind": item.kind, "evidence": item.evidence,
            "guesses": [{"probe_id": g.probe_id, "score": g.score, "rule": g.rule,
                         "round": g.round, "agency": g.agency, "reasons": list(g.reasons)}
                        for g in item.guesses]}


@review.command("list")
@click.option("--round", "round_id", metavar="ROUND", help="Only messages with a guess in it.")
@click.option("--format", "fmt", type=_FORMAT, default="table", show_default=True)
@_db_option
def list_command(round_id: str | None, fmt: str, db_url: str | None) -> None:
    """List the messages waiting for review, oldest first, with their ranked guesses.

    \b
    Example:
      mailprobe review list
      mailprobe review list --round 2015-r1 --format json
    """
    with _open(db_url) as store:
        items = decisions.review_queue(store, round_id)
    if fmt == "json":
        _echo_json([_queue_json(i) for i in items])
        return
    table = Table("queue", f"待审核邮件：{len(items)} 封", (
        Column("id", "邮件", Format.INT), Column("at", "收到时间"), Column("account", "邮箱"),
        Column("from", "发件人"), Column("subject", "主题"), Column("kind", "类型"),
        Column("guesses", "候选来信（得分）")),
        tuple((i.message_id, _local(i.received_at), i.account, i.sender, i.subject[:40],
               i.kind, _guess_text(i)) for i in items))
    click.echo(terminal_safe(text_table(table)))


def _match_lines(d: decisions.MessageDetail) -> list[str]:
    m = d.match
    if m is None:
        return ["match: not processed yet (run `mailprobe process`)"]
    if m.decided_by is Decider.HUMAN:
        what = f"attached to {m.probe_id}" if m.probe_id else "rejected (answers no probe)"
        lines = [f"match: {what} by {m.reviewer} at {_local(m.decided_at)}: "
                 f"{m.review_reason or 'no reason given'}"]
    elif m.needs_review:
        lines = ["match: waiting for review"]
    else:
        lines = [f"match: {'attached to ' + m.probe_id if m.probe_id else 'none'} (machine)"]
    machine = m.machine_probe_id or "no probe"
    lines.append(f"machine: {machine} by {m.rule} ({m.confidence:.2f}): {m.evidence}")
    if m.human_kind:
        lines.append(f"kind set to {m.human_kind} by {m.kind_by}: {m.kind_reason}")
    return lines


def _detail_text(d: decisions.MessageDetail) -> str:
    folders = ", ".join(d.folders) or "—"
    out = [f"message {d.message_id}: mailbox {d.account} ({folders}), received "
           f"{_local(d.received_at)} (INTERNALDATE)"]
    out += [f"{name}: {value}" for name, value in d.headers]
    out.append(f"parse: {d.parse_status}" + (f" ({d.parse_error})" if d.parse_error else ""))
    bounce = f" ({d.bounce_type})" if d.bounce_type else ""
    out.append(f"kind: {d.kind or 'not classified'}{bounce} (classifier)")
    out += [f"  - {e}" for e in d.evidence]
    out += _match_lines(d)
    if d.guesses:
        out.append("guesses:")
        for n, g in enumerate(d.guesses, 1):
            out.append(f"  {n}. {g.probe_id} ({g.round}, {g.agency}) {g.score:.2f} by {g.rule}")
            out += [f"     - {r}" for r in g.reasons]
    out += ["new text:", *(f"  {line}" for line in (d.new_text or "(empty)").splitlines())]
    return terminal_safe("\n".join(out))


@review.command("show")
@click.argument("message_id", type=int)
@_db_option
def show_command(message_id: int, db_url: str | None) -> None:
    """Show one message: headers, the classifier's evidence, the match and its guesses.

    \b
    Example:
      mailprobe review show 42
    """
    with _open(db_url) as store:
        detail = decisions.message_detail(store, message_id)
    click.echo(_detail_text(detail))


_BY = click.option("--by", "by", required=True, metavar="NAME", help="The evaluator deciding.")


@review.command("assign")
@click.argument("message_id", type=int)
@click.argument("probe_id")
@_BY
@click.option("--reason", default="", help="Why (kept beside the machine's proposal).")
@_db_option
def assign_command(message_id: int, probe_id: str, by: str, reason: str,
                   db_url: str | None) -> None:
    """Attach MESSAGE_ID to PROBE_ID; re-running the matcher keeps this decision.

    \b
    Example:
      mailprobe review assign 42 2015-r1-0007 --by 王敏 --reason "quotes our letter"
    """
    with _open(db_url) as store:
        decisions.assign(store, message_id, probe_id, by=by, reason=reason, clock=store.clock)
    click.echo(f"message {message_id}: attached to {probe_id} by {by.strip()}")


@review.command("reject")
@click.argument("message_id", type=int)
@_BY
@click.option("--reason", required=True, help="Why it answers no probe.")
@_db_option
def reject_command(message_id: int, by: str, reason: str, db_url: str | None) -> None:
    """Decide that MESSAGE_ID answers no probe (another matter, spam, a mistake).

    \b
    Example:
      mailprobe review reject 43 --by 王敏 --reason "a newsletter from the bureau"
    """
    with _open(db_url) as store:
        decisions.reject(store, message_id, by=by, reason=reason, clock=store.clock)
    click.echo(f"message {message_id}: rejected by {by.strip()}")


@review.command("reclassify")
@click.argument("message_id", type=int)
@click.argument("kind", type=click.Choice([k.value for k in MessageKind]))
@_BY
@click.option("--reason", required=True, help="Why the classifier was wrong.")
@_db_option
def reclassify_command(message_id: int, kind: str, by: str, reason: str,
                       db_url: str | None) -> None:
    """Set the kind of MESSAGE_ID (the classifier's stays recorded) and match it again.

    Only a reply stops the clock: re-classify an acknowledgement that really answers as
    `reply`, or a "reply" that only promises an answer as `acknowledgement`.

    \b
    Example:
      mailprobe review reclassify 44 reply --by 王敏 --reason "the receipt contains the answer"
    """
    with _open(db_url) as store:
        decisions.reclassify(store, token_secret(store), message_id, MessageKind(kind), by=by,
                         reason=reason, clock=store.clock)
        detail = decisions.message_detail(store, message_id)
    click.echo(f"message {message_id}: kind {kind} (set by {by.strip()})")
    click.echo("\n".join(_match_lines(detail)))


@review.command("judge")
@click.argument("probe_id")
@click.option("--effective/--not-effective", "effective", required=True,
              help="Whether the reply is detailed and effective (答复内容详细有效).")
@_BY
@click.option("--reason", default="", help="Why (kept beside the machine's proposal).")
@_db_option
def judge_command(probe_id: str, effective: bool, by: str, reason: str,
                  db_url: str | None) -> None:
    """Judge whether PROBE_ID's reply is detailed and effective (答复内容详细有效).

    The machine proposes from the first reply's new text (its length, whether it answers
    the question, whether it only refers the citizen elsewhere); the evaluator decides.

    \b
    Example:
      mailprobe review judge 2015-r1-0007 --effective --by 王敏
      mailprobe review judge 2015-r1-0012 --not-effective --by 王敏 --reason "only refers to 12369"
    """
    with _open(db_url) as store:
        decisions.judge(store, probe_id, effective, by=by, reason=reason, clock=store.clock)
    click.echo(f"probe {probe_id}: 答复内容详细有效 = {'是' if effective else '否'} "
               f"(judged by {by.strip()})")


# --- mailprobe replies ------------------------------------------------------------------------


@main.group("replies")
def replies() -> None:
    """Replies that came another way (a portal's answer page, a phone call, a letter).

    \b
    Example:
      mailprobe replies record 2015-r1-0007 --at 2015-11-09T10:30+08:00 --how phone --by 王敏
    """


def _instant(text: str) -> datetime:
    when = parse_when(text)
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise InputError("the reply time needs a time of day and an offset", location="--at",
                         expected="e.g. 2015-11-09T10:30+08:00", got=text)
    return when


@replies.command("record")
@click.argument("probe_id")
@click.option("--at", "at", required=True, metavar="ISO",
              help="When the reply came, with an offset: 2015-11-09T10:30+08:00.")
@click.option("--how", type=click.Choice([r.value for r in ReplyRoute]), required=True,
              help="The route it came by.")
@_BY
@click.option("--note", default="", help="What was said, or where the answer is published.")
@_db_option
def record_command(probe_id: str, at: str, how: str, by: str, note: str,
                   db_url: str | None) -> None:
    """Record a reply to PROBE_ID that did not come by mail; it stops the clock like a
    mailed reply, if it is the first.

    \b
    Example:
      mailprobe replies record 2015-r1-0007 --at 2015-11-09T10:30+08:00 --how phone \\
          --by 王敏 --note "科员回电，答复了审批时限"
    """
    when = _instant(at)
    with _open(db_url) as store:
        number = decisions.record_manual_reply(store, probe_id, when, ReplyRoute(how), by=by,
                                           note=note, clock=store.clock)
    click.echo(f"probe {probe_id}: reply #{number} by {how} at {_local(when)} recorded "
               f"by {by.strip()}")
