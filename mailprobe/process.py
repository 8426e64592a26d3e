"""Classify and match stored messages: each gets its kind, evidence and match (or a review)."""

from __future__ import annotations

import hashlib
import importlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Table, and_, func, or_, select
from sqlalchemy.orm import Session, load_only

from mailprobe import mailstore
from mailprobe.classify import MessageKind, Substance
from mailprobe.clock import Clock
from mailprobe.examine import (
    Examined,
    FreshRows,
    MatchContext,
    examine,
    fresh_rows,
    guess_json,
    substance_json,
)
from mailprobe.match import ProbeIndex, SentProbe
from mailprobe.models import AgencyRow, ChannelRow, PersonaRow, ProbeRow, ProbeState
from mailprobe.models_mail import MessageRow, ParseStatus
from mailprobe.models_review import Decider, JudgementRow, MatchRow
from mailprobe.probe_details import fingerprints
from mailprobe.response_report import (
    probe_timings,
)
from mailprobe.store import Store

__all__ = [
    "RULES_VERSION",
    "ProcessReport",
    "effective_kind",
    "load_context",
    "probe_timings",
    "probes_stamp",
    "process_new",
    "propose_effective",
    "refresh_judgements",
    "reprocess",
    "save_examined",
    "sent_at",
]

# Any change to these modules may change a kind or a match, so their source is the version.
_RULE_MODULES = ("mailprobe.charsets", "mailprobe.decode", "mailprobe.quotes",
                 "mailprobe.classify", "mailprobe.match", "mailprobe.probe_details",
                 "mailprobe.parsing", "mailprobe.examine")
_BATCH = 200  # messages per transaction: one commit per batch, a short write lock on SQLite
_REPLY, _ACK, _BOUNCE = MessageKind.REPLY.value, MessageKind.ACKNOWLEDGEMENT.value, "bounce"
# Kinds whose sender speaks for the agency: their addresses help match its later mail.
_FROM_AGENCY = (_REPLY, _ACK, MessageKind.AUTO_REPLY.value)
_MIN_EFFECTIVE_CHARS = 40  # shorter than two sentences: rarely an answer "in detail"
# The columns of ``messages`` that processing reads and writes (not the raw bytes).
_MATCHES = cast(Table, MatchRow.__table__)
_SAVED_COLUMNS = (MessageRow.id, MessageRow.classified_at, MessageRow.kind,
                  MessageRow.bounce_type, MessageRow.evidence, MessageRow.new_text,
                  MessageRow.rules_version)


def _rules_version() -> str:
    digest = hashlib.sha256()
    for name in _RULE_MODULES:
        file = getattr(importlib.import_module(name), "__file__", None)
        digest.update(Path(file).read_bytes() if file else name.encode())
    return f"rules-{digest.hexdigest()[:16]}"


RULES_VERSION = _rules_version()


# --- pure: the proposal of 答复内容详细有效 ------------------------------------------------


def propose_effective(substance: Substance) -> tuple[bool, str]:
    """The machine's proposal of 答复内容详细有效 for a reply, with its reason in Chinese."""
    if substance.unreadable:
        return False, f"新写内容无法辨认（{substance.chars} 字中 {substance.garbled} 个为乱码）"
    if substance.referral_only:
        return False, f"仅让来信人另找部门（{'、'.join(substance.referral_cues)}），未作答复"
    if not substance.addresses_question:
        return False, f"新写内容 {substance.chars} 字，未见回应所问的表述"
    if substance.chars < _MIN_EFFECTIVE_CHARS:
        return False, f"新写内容仅 {substance.chars} 字，不够详细"
    return True, f"新写内容 {substance.chars} 字，含“{'、'.join(substance.answer_cues)}”"


def _substance(data: Mapping[str, Any]) -> Substance:
    return Substance(int(data.get("chars", 0)), tuple(data.get("answer_cues", ())),
                     tuple(data.get("referral_cues", ())), bool(data.get("referral_only")),
                     int(data.get("garbled", 0)))


# --- reading the probes the matcher needs -----------------------------------------------------


def _sent_filter() -> ColumnElement[bool]:
    # An uncertain probe may well have reached the agency; a reply to it proves it did.
    return or_(ProbeRow.accepted_at.is_not(None), ProbeRow.submitted_at.is_not(None),
               and_(ProbeRow.state == ProbeState.UNCERTAIN, ProbeRow.sending_at.is_not(None)))


def sent_at(row: ProbeRow) -> datetime | None:
    if row.accepted_at or row.submitted_at:
        return row.accepted_at or row.submitted_at
    return row.sending_at if row.state is ProbeState.UNCERTAIN else None


def effective_kind() -> ColumnElement[str]:
    return func.coalesce(MatchRow.human_kind, MessageRow.kind)


def _website_domain(url: str | None) -> list[str]:
    host = (urlsplit(url).hostname or "") if url else ""
    return [host.removeprefix("www.")] if host else []


def _agency_addresses(s: Session) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
    """Addresses and domains known for each agency: channels, then senders it answered from."""
    addresses: dict[int, set[str]] = defaultdict(set)
    domains: dict[int, set[str]] = defaultdict(set)
    for agency, address in s.execute(select(ChannelRow.agency_id, ChannelRow.address)):
        if address:
            addresses[agency].add(address.lower())
            domains[agency].add(address.rpartition("@")[2].lower())
    for agency, website in s.execute(select(AgencyRow.id, AgencyRow.website)):
        domains[agency].update(_website_domain(website))
    learned = (select(ProbeRow.agency_id, MatchRow.from_address).distinct()
               .join(ProbeRow, ProbeRow.probe_id == MatchRow.probe_id)
               .join(MessageRow, MessageRow.id == MatchRow.message_id)
               # Attached ones only, found by the probe_id index (a range, which SQLite's
               # planner uses where it scans for IS NOT NULL): reading the kind of every
               # stored message (its row holds the raw bytes) costs a whole-table scan.
               .where(MatchRow.probe_id > "", effective_kind().in_(_FROM_AGENCY),
                      MatchRow.from_address != ""))
    for agency, address in s.execute(learned):
        addresses[agency].add(address.lower())
    return addresses, domains


def load_context(store: Store, secret: bytes) -> MatchContext:
    """The sent probes, indexed for the matcher, with the state they were read in."""
    with store.session(write=False) as s:
        stamp = probes_stamp(s)
        addresses, domains = _agency_addresses(s)
        rows = s.execute(
            select(ProbeRow, AgencyRow.name, ChannelRow.address, PersonaRow.account_id)
            .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
            .join(ChannelRow, ChannelRow.id == ProbeRow.channel_id)
            .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
            .where(_sent_filter())).all()
    probes = []
    for p, agency, address, account in rows:
        when = sent_at(p)
        assert when is not None  # the filter above
        probes.append(SentProbe(
            p.probe_id, p.round_id, agency, p.persona_id, account, address, when,
            p.message_id, p.token, fingerprints(p.details, p.body),
            tuple(sorted(addresses[p.agency_id])), tuple(sorted(domains[p.agency_id]))))
    sent_ids = frozenset(p.message_id for p in probes if p.message_id)
    return MatchContext(ProbeIndex(probes, secret), sent_ids, stamp)


def probes_stamp(s: Session) -> tuple[Any, ...]:
    """What changes whenever a probe is sent (or stops counting as sent): results computed
    against another stamp may miss a probe."""
    row = s.execute(select(func.count(), func.max(ProbeRow.accepted_at),
                           func.max(ProbeRow.submitted_at), func.max(ProbeRow.sending_at))
                    .where(_sent_filter())).one()
    return tuple(row)


# --- one message through classification and matching ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    account: str
    received_at: datetime
    raw: bytes
    parse_error: str | None  # set when the message could not be parsed at all


def _examine(ctx: MatchContext, m: _Stored, human_kind: str | None) -> Examined:
    return examine(ctx, m.id, m.account, m.received_at, m.raw, parse_error=m.parse_error,
                   human_kind=human_kind)


# --- storing results --------------------------------------------------------------------------


@dataclass
class _Tally:
    kinds: Counter[str] = field(default_factory=Counter)
    attached: int = 0
    queued: int = 0
    unmatched: int = 0
    kept_human: int = 0


@dataclass(frozen=True)
class ProcessReport:
    """What one run did: messages per kind, attached, queued for review, left unmatched."""

    processed: int
    kinds: Mapping[str, int]
    attached: int
    queued: int
    unmatched: int
    kept_human: int  # messages whose evaluator's decision stood over the re-run
    rules_version: str

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "none"
        return (f"processed {self.processed} messages ({kinds}): {self.attached} attached, "
                f"{self.queued} for review, {self.unmatched} unmatched, {self.kept_human} "
                f"human decisions kept; rules {self.rules_version}")


def _save(s: Session, ex: Examined, row: MessageRow, match: MatchRow | None, now: datetime,
          tally: _Tally) -> set[str]:
    """Write one message's classification and match; returns the probes it was and is on."""
    c, r = ex.classification, ex.result
    attached = r.probe_id if r.is_attached else None
    row.kind, row.bounce_type = c.kind.value, c.bounce_type.value if c.bounce_type else None
    row.evidence, row.new_text = list(c.evidence), c.new_text
    row.classified_at, row.rules_version = now, RULES_VERSION
    if match is None:
        match = MatchRow(message_id=ex.message_id, decided_by=Decider.MACHINE, decided_at=now,
                         probe_id=None, needs_review=False)
        s.add(match)
    before = match.probe_id
    match.from_address, match.subject = ex.sender[:320], ex.subject
    match.machine_probe_id, match.rule, match.evidence = attached, r.rule.value, r.evidence
    match.confidence, match.guesses = r.confidence, guess_json(r)
    match.substance, match.rules_version, match.matched_at = (
        substance_json(c.substance), RULES_VERSION, now)
    if match.decided_by is Decider.HUMAN:
        tally.kept_human += 1
    elif (match.probe_id, match.needs_review) != (attached, r.needs_review):
        match.probe_id, match.needs_review, match.decided_at = attached, r.needs_review, now
    tally.kinds[match.human_kind or c.kind.value] += 1
    tally.attached += match.probe_id is not None
    tally.queued += match.needs_review
    tally.unmatched += match.probe_id is None and not match.needs_review
    return {p for p in (before, match.probe_id) if p is not None}


def _save_fresh(s: Session, fresh: Sequence[FreshRows], now: datetime,
                tally: _Tally | None = None,
                outcomes: Sequence[mailstore.ParseOutcome] = ()) -> set[str]:
    """Write messages classified the first time, with their parse ``outcomes`` if given:
    one UPDATE per message and one INSERT per match, at DBAPI speed. Returns the probes they
    were attached to.

    The usual case (every new message): no match row and no human decision yet, so the
    rows are written in bulk instead of object by object, which was most of the cost of
    processing.
    """
    attached_to = {f.attached for f in fresh if f.attached is not None}
    if tally is not None:
        for f in fresh:
            tally.kinds[f.message["kind"]] += 1
            tally.attached += f.attached is not None
            tally.queued += f.match["needs_review"]
            tally.unmatched += f.attached is None and not f.match["needs_review"]
    s.flush()
    conn = s.connection()
    stamp = {"classified_at": now, "rules_version": RULES_VERSION}
    mailstore.record_parsed(conn, outcomes, now,
                            {f.message["id"]: {**f.message, **stamp} for f in fresh})
    mailstore.insert_new(conn, _MATCHES, ("message_id",), [
        {**f.match, "decided_by": Decider.MACHINE, "decided_at": now, "human_kind": None,
         "rules_version": RULES_VERSION, "matched_at": now} for f in fresh])
    return attached_to


def save_examined(s: Session, outcomes: Sequence[mailstore.ParseOutcome],
                  fresh: Sequence[FreshRows], stamp: tuple[Any, ...],
                  now: datetime) -> int | None:
    """Record parse ``outcomes`` and what the sync's parsing classified and matched, in the
    caller's transaction; returns how many messages were classified.

    No classification is recorded (None) if a probe was sent since the probes were read
    (``stamp``): a message may answer it. Messages already classified, or with a match row,
    are left alone (another worker's processing got there first; an evaluator's decision
    stands).
    """
    if fresh and probes_stamp(s) != stamp:
        mailstore.record_parsed(s.connection(), outcomes, now)
        return None
    ids = [f.message["id"] for f in fresh]
    open_ids = set(s.scalars(select(MessageRow.id).where(
        MessageRow.id.in_(ids), MessageRow.classified_at.is_(None)).with_for_update()))
    open_ids -= set(s.scalars(select(MatchRow.message_id).where(MatchRow.message_id.in_(ids))))
    recorded = [f for f in fresh if f.message["id"] in open_ids]
    refresh_judgements(s, _save_fresh(s, recorded, now, outcomes=outcomes), now)
    return len(recorded)


def refresh_judgements(s: Session, probe_ids: Iterable[str], now: datetime) -> None:
    """Re-propose 答复内容详细有效 from each probe's first reply; decisions are left alone."""
    ids = sorted(set(probe_ids))
    if not ids:
        return
    s.flush()
    firsts: dict[str, tuple[int, dict[str, Any]]] = {}
    for pid, mid, substance in s.execute(
            select(MatchRow.probe_id, MatchRow.message_id, MatchRow.substance)
            .join(MessageRow, MessageRow.id == MatchRow.message_id)
            .where(MatchRow.probe_id.in_(ids), effective_kind() == _REPLY)
            .order_by(MessageRow.internaldate, MessageRow.id)):
        firsts.setdefault(pid, (mid, substance))
    rows = {r.probe_id: r for r in s.scalars(select(JudgementRow)
                                            .where(JudgementRow.probe_id.in_(ids)))}
    for pid in ids:
        row, first = rows.get(pid), firsts.get(pid)
        if first is None and row is None:
            continue
        if row is None:
            row = JudgementRow(probe_id=pid)
            s.add(row)
        proposal: tuple[int | None, bool | None, str | None] = (None, None, None)
        if first is not None:
            proposal = (first[0], *propose_effective(_substance(first[1])))
        if (row.proposal_message_id, row.proposed_effective, row.proposal_reason) != proposal:
            row.proposal_message_id, row.proposed_effective, row.proposal_reason = proposal
            row.proposed_at = now


def _human_kinds(store: Store, ids: Sequence[int]) -> dict[int, str]:
    with store.session(write=False) as s:
        found = s.execute(select(MatchRow.message_id, MatchRow.human_kind)
                          .where(MatchRow.message_id.in_(ids), MatchRow.human_kind.is_not(None)))
        return {i: k for i, k in found if k}


def _run(store: Store, ctx: MatchContext, batch: Sequence[_Stored], now: datetime,
         tally: _Tally, *, only_new: bool) -> None:
    # Parsing and classifying happen outside the write transaction: the lock stays short.
    kinds = _human_kinds(store, [m.id for m in batch])
    examined = [_examine(ctx, m, kinds.get(m.id)) for m in batch]
    ids = [m.id for m in batch]
    with store.session() as s:
        # Locked, then checked: another worker may have processed the batch meanwhile.
        # The rows are read in one query each (not one per message), and not their raw bytes.
        rows = {r.id: r for r in s.scalars(
            select(MessageRow).where(MessageRow.id.in_(ids))
            .options(load_only(*_SAVED_COLUMNS)).with_for_update())}
        matches = {r.message_id: r for r in s.scalars(
            select(MatchRow).where(MatchRow.message_id.in_(ids)))}
        touched: set[str] = set()
        fresh: list[FreshRows] = []
        for ex in examined:
            row = rows[ex.message_id]
            if only_new and row.classified_at is not None:
                continue
            match = matches.get(ex.message_id)
            if match is None:
                fresh.append(fresh_rows(ex))
            else:
                touched |= _save(s, ex, row, match, now, tally)
        touched |= _save_fresh(s, fresh, now, tally)
        refresh_judgements(s, touched, now)


def _report(tally: _Tally) -> ProcessReport:
    return ProcessReport(sum(tally.kinds.values()), dict(tally.kinds), tally.attached,
                         tally.queued, tally.unmatched, tally.kept_human, RULES_VERSION)


def _newest_message_id(store: Store) -> int:
    with store.session(write=False) as s:
        return int(s.scalar(select(func.max(MessageRow.id))) or 0)


def process_new(store: Store, secret: bytes, *, limit: int = 1000,
                clock: Clock) -> ProcessReport:
    """Classify and match parsed messages not processed yet, oldest first, at most ``limit``.

    Each message gets its kind and evidence (``messages``) and one ``matches`` row; what no
    rule attaches with confidence is queued for review with ranked guesses. Running it again
    finds nothing new to do. Probes are read again whenever a batch holds a message stored
    after they were last read: with several workers, another one may have sent a probe and
    stored its reply while this call ran. Addresses learned from this call's replies help
    from the next call on.
    """
    tally, after, ctx = _Tally(), 0, None
    known_upto = -1  # the newest message id stored before the probes were last read
    while (left := limit - sum(tally.kinds.values())) > 0:
        found = mailstore.unprocessed(store, min(_BATCH, left), after_id=after)
        if not found:
            break
        if ctx is None or found[-1].id > known_upto:
            known_upto = _newest_message_id(store)
            ctx = load_context(store, secret)
        batch = [_Stored(m.id, m.account, m.internaldate, m.raw,
                         (m.parse_error or "failed") if m.parse_status is ParseStatus.FAILED
                         else None) for m in found]
        _run(store, ctx, batch, clock.now(), tally, only_new=True)
        after = found[-1].id
    return _report(tally)


def reprocess(store: Store, secret: bytes, message_ids: Sequence[int] | None = None, *,
              clock: Clock) -> ProcessReport:
    """Run classification and matching again: the given messages, or every processed message
    whose rules version is not the current one. Evaluators' decisions are never overridden."""
    query = select(MessageRow.id).where(MessageRow.classified_at.is_not(None))
    if message_ids is not None:
        query = query.where(MessageRow.id.in_(list(message_ids)))
    else:
        query = query.where(or_(MessageRow.rules_version.is_(None),
                                MessageRow.rules_version != RULES_VERSION))
    with store.session(write=False) as s:
        ids = list(s.scalars(query.order_by(MessageRow.id)))
    tally = _Tally()
    ctx = load_context(store, secret) if ids else None
    for start in range(0, len(ids), _BATCH):
        with store.session(write=False) as s:
            rows = s.execute(select(MessageRow.id, MessageRow.account_id,
                                    MessageRow.internaldate, MessageRow.raw,
                                    MessageRow.parse_status, MessageRow.parse_error)
                             .where(MessageRow.id.in_(ids[start:start + _BATCH]))
                             .order_by(MessageRow.id)).all()
        batch = [_Stored(i, a, t, raw, (err or "failed") if st is ParseStatus.FAILED else None)
                 for i, a, t, raw, st, err in rows]
        assert ctx is not None
        _run(store, ctx, batch, clock.now(), tally, only_new=False)
    return _report(tally)
