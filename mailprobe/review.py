"""The review queue and what evaluators decide: assign, reject, re-classify, judge, record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailprobe.classify import MessageKind
from mailprobe.clock import Clock
from mailprobe.decode import ParsedMessage, parse_message
from mailprobe.errors import InputError
from mailprobe.models import AgencyRow, ProbeRow
from mailprobe.models_mail import LocationRow, MessageRow
from mailprobe.models_review import Decider, JudgementRow, ManualReplyRow, MatchRow, ReplyRoute
from mailprobe.process import (
    ProcessReport,
    effective_kind,
    refresh_judgements,
    reprocess,
    sent_at,
)
from mailprobe.store import Store

__all__ = [
    "Guess",
    "MessageDetail",
    "QueueItem",
    "assign",
    "judge",
    "message_detail",
    "reclassify",
    "record_manual_reply",
    "reject",
    "review_queue",
]


# --- the review queue -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Guess:
    """A ranked candidate probe of a queued message, with its round and agency."""

    probe_id: str
    score: float
    rule: str
    reasons: tuple[str, ...]
    round: str
    agency: str


@dataclass(frozen=True)
class QueueItem:
    message_id: int
    account: str
    received_at: datetime
    sender: str
    subject: str
    kind: str  # an evaluator's re-classification, else the classifier's
    evidence: str
    guesses: tuple[Guess, ...]


@dataclass(frozen=True)
class MessageDetail:
    """A stored message as a reviewer sees it; ``match`` holds both views (None: unprocessed)."""

    message_id: int
    account: str
    folders: tuple[str, ...]
    received_at: datetime
    headers: tuple[tuple[str, str], ...]
    parse_status: str
    parse_error: str | None
    kind: str | None
    bounce_type: str | None
    evidence: tuple[str, ...]
    new_text: str
    match: MatchRow | None
    guesses: tuple[Guess, ...]


def _guesses(s: Session, rows: Sequence[MatchRow]) -> dict[int, tuple[Guess, ...]]:
    ids = {g["probe_id"] for m in rows for g in m.guesses}
    known = {pid: (rnd, agency) for pid, rnd, agency in s.execute(
        select(ProbeRow.probe_id, ProbeRow.round_id, AgencyRow.name)
        .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
        .where(ProbeRow.probe_id.in_(ids)))} if ids else {}
    return {m.message_id: tuple(
        Guess(g["probe_id"], float(g["score"]), g["rule"], tuple(g["reasons"]),
              *known.get(g["probe_id"], ("", ""))) for g in m.guesses) for m in rows}


def review_queue(store: Store, round_id: str | None = None) -> list[QueueItem]:
    """Messages waiting for an evaluator, oldest first; with ``round_id``, those with a guess
    in that round (a message without any guess is listed only without a round)."""
    with store.session(write=False) as s:
        rows = s.execute(select(MatchRow, MessageRow.account_id, MessageRow.internaldate,
                                effective_kind())
                         .join(MessageRow, MessageRow.id == MatchRow.message_id)
                         .where(MatchRow.needs_review.is_(True))
                         .order_by(MessageRow.internaldate, MessageRow.id)).all()
        guesses = _guesses(s, [m for m, *_ in rows])
    items = [QueueItem(m.message_id, account, at, m.from_address, m.subject, kind or "",
                       m.evidence, guesses[m.message_id]) for m, account, at, kind in rows]
    return [i for i in items if round_id is None or any(g.round == round_id for g in i.guesses)]


def _header_lines(parsed: ParsedMessage) -> tuple[tuple[str, str], ...]:
    def people(addresses: Sequence[Any]) -> str:
        return ", ".join(f"{a.name} <{a.addr}>" if a.name else a.addr for a in addresses)
    lines = (("From", people(parsed.from_)), ("To", people(parsed.to)), ("Cc", people(parsed.cc)),
             ("Subject", parsed.subject), ("Date", parsed.date_text),
             ("Message-ID", parsed.message_id), ("In-Reply-To", parsed.in_reply_to),
             ("References", " ".join(parsed.references)))
    return tuple((k, v) for k, v in lines if v)


def message_detail(store: Store, message_id: int) -> MessageDetail:
    """Headers, texts, the classifier's evidence and both views of the match of one message."""
    with store.session(write=False) as s:
        row = _message(s, message_id)
        folders = tuple(sorted(set(s.scalars(select(LocationRow.folder)
                                             .where(LocationRow.message_id == message_id)))))
        match = s.get(MatchRow, message_id)
        guesses = _guesses(s, [match])[message_id] if match else ()
    parsed = parse_message(row.raw)
    return MessageDetail(row.id, row.account_id, folders, row.internaldate, _header_lines(parsed),
                         row.parse_status.value, row.parse_error, row.kind, row.bounce_type,
                         tuple(row.evidence or ()), row.new_text or "", match, guesses)


# --- evaluators' decisions --------------------------------------------------------------------


def _message(s: Session, message_id: int) -> MessageRow:
    row = s.get(MessageRow, message_id)
    if row is None:
        raise InputError(f"no message {message_id}", location="MESSAGE_ID", got=message_id,
                         hint="`mailprobe review list` shows the queued messages' numbers")
    return row


def _processed(s: Session, message_id: int) -> tuple[MatchRow, datetime]:
    received = _message(s, message_id).internaldate
    match = s.get(MatchRow, message_id)
    if match is None:
        raise InputError(f"message {message_id} has not been classified and matched yet",
                         location="MESSAGE_ID", hint="run `mailprobe process` first")
    return match, received


def _sent_probe(s: Session, probe_id: str) -> datetime:
    row = s.get(ProbeRow, probe_id)
    if row is None:
        raise InputError(f"no probe {probe_id}", location="PROBE_ID", got=probe_id)
    sent = sent_at(row)
    if sent is None:
        raise InputError(f"probe {probe_id} was never sent ({row.state.value})",
                         location="PROBE_ID", expected="a sent or submitted probe")
    return sent


def _check_after(s: Session, probe_id: str, at: datetime, what: str) -> None:
    sent = _sent_probe(s, probe_id)
    if at < sent:
        raise InputError(f"{what} at {at.isoformat()}, before probe {probe_id} was sent",
                         expected=f"a time after {sent.isoformat()}", got=at.isoformat())


def _who(by: str) -> str:
    name = by.strip()
    if not name:
        raise InputError("an evaluator's decision needs their name", location="--by")
    return name[:100]


def _decide(store: Store, message_id: int, probe_id: str | None, by: str, reason: str,
            clock: Clock) -> None:
    name, now = _who(by), clock.now()
    with store.session() as s:
        match, received = _processed(s, message_id)
        if probe_id is not None:
            _check_after(s, probe_id, received, f"message {message_id} was received")
        before = match.probe_id
        match.probe_id, match.needs_review, match.decided_by = probe_id, False, Decider.HUMAN
        match.decided_at, match.reviewer, match.review_reason = now, name, reason.strip() or None
        refresh_judgements(s, {p for p in (before, probe_id) if p is not None}, now)


def assign(store: Store, message_id: int, probe_id: str, *, by: str, reason: str = "",
           clock: Clock) -> None:
    """An evaluator attaches a message to a probe; re-runs of the matcher keep this."""
    _decide(store, message_id, probe_id, by, reason, clock)


def reject(store: Store, message_id: int, *, by: str, reason: str, clock: Clock) -> None:
    """An evaluator decides a message answers no probe (spam, another matter)."""
    if not reason.strip():
        raise InputError("a rejection needs a reason", location="--reason")
    _decide(store, message_id, None, by, reason, clock)


def reclassify(store: Store, secret: bytes, message_id: int, kind: MessageKind, *, by: str,
               reason: str, clock: Clock) -> ProcessReport:
    """An evaluator sets the kind (the classifier's stays recorded); matching runs again with
    it, so a message re-classified as a reply is matched or queued like one."""
    name = _who(by)
    if not reason.strip():
        raise InputError("a re-classification needs a reason", location="--reason")
    with store.session() as s:
        match, _ = _processed(s, message_id)
        match.human_kind, match.kind_by = MessageKind(kind).value, name
        match.kind_reason, match.kind_at = reason.strip(), clock.now()
    return reprocess(store, secret, [message_id], clock=clock)


def judge(store: Store, probe_id: str, effective: bool, *, by: str, reason: str = "",
          clock: Clock) -> None:
    """The evaluator's decision on 答复内容详细有效; the machine's proposal stays beside it."""
    name = _who(by)
    with store.session() as s:
        _sent_probe(s, probe_id)
        row = s.get(JudgementRow, probe_id)
        if row is None:
            row = JudgementRow(probe_id=probe_id)
            s.add(row)
        row.effective, row.judged_by, row.judge_reason = effective, name, reason.strip() or None
        row.judged_at = clock.now()


def record_manual_reply(store: Store, probe_id: str, at: datetime, how: ReplyRoute, *,
                        by: str, note: str = "", clock: Clock) -> int:
    """Record a reply that came another way (portal, phone, letter); returns its number."""
    name, now = _who(by), clock.now()
    if at.utcoffset() is None:
        raise InputError("a date-time without a time zone is ambiguous", location="--at",
                         expected="an offset such as 2015-11-09T10:30+08:00", got=at.isoformat())
    if at > now:
        raise InputError("a reply cannot be recorded ahead of time", location="--at",
                         expected=f"a time before {now.isoformat()}", got=at.isoformat())
    with store.session() as s:
        _check_after(s, probe_id, at, "the reply came")
        row = ManualReplyRow(probe_id=probe_id, at=at, how=ReplyRoute(how), note=note.strip(),
                             by=name, recorded_at=now)
        s.add(row)
        s.flush()
        return row.id
