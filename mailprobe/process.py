"""Classify and match stored messages: each gets its kind, evidence and match (or a review)."""

from __future__ import annotations

import hashlib
import importlib
import threading
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session, load_only

from mailprobe import mailstore, parsing
from mailprobe.classify import Classification, MessageKind, Substance, classify
from mailprobe.clock import Clock
from mailprobe.decode import ParsedMessage, parse_message
from mailprobe.match import (
    IncomingMessage,
    MatchResult,
    ProbeIndex,
    SentProbe,
)
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
    "hand_over",
    "probe_timings",
    "process_new",
    "propose_effective",
    "refresh_judgements",
    "reprocess",
    "sent_at",
    "sent_message_ids",
]

# Any change to these modules may change a kind or a match, so their source is the version.
_RULE_MODULES = ("mailprobe.charsets", "mailprobe.decode", "mailprobe.quotes",
                 "mailprobe.classify", "mailprobe.match", "mailprobe.probe_details",
                 "mailprobe.parsing")
_BATCH = 200  # messages per transaction: one commit per batch, a short write lock on SQLite
_REPLY, _ACK, _BOUNCE = MessageKind.REPLY.value, MessageKind.ACKNOWLEDGEMENT.value, "bounce"
# Kinds whose sender speaks for the agency: their addresses help match its later mail.
_FROM_AGENCY = (_REPLY, _ACK, MessageKind.AUTO_REPLY.value)
# The send time is a cue only for automatic mail (a receipt minutes after the probe).
_TIMED_KINDS = (MessageKind.ACKNOWLEDGEMENT, MessageKind.AUTO_REPLY)
_MIN_EFFECTIVE_CHARS = 40  # shorter than two sentences: rarely an answer "in detail"
# The columns of ``messages`` that processing reads and writes (not the raw bytes).
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
    if substance.referral_only:
        return False, f"仅让来信人另找部门（{'、'.join(substance.referral_cues)}），未作答复"
    if not substance.addresses_question:
        return False, f"新写内容 {substance.chars} 字，未见回应所问的表述"
    if substance.chars < _MIN_EFFECTIVE_CHARS:
        return False, f"新写内容仅 {substance.chars} 字，不够详细"
    return True, f"新写内容 {substance.chars} 字，含“{'、'.join(substance.answer_cues)}”"


def _substance_json(s: Substance) -> dict[str, Any]:
    return {"chars": s.chars, "answer_cues": list(s.answer_cues),
            "referral_cues": list(s.referral_cues), "referral_only": s.referral_only}


def _substance(data: Mapping[str, Any]) -> Substance:
    return Substance(int(data.get("chars", 0)), tuple(data.get("answer_cues", ())),
                     tuple(data.get("referral_cues", ())), bool(data.get("referral_only")))


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


@dataclass(frozen=True)
class _Context:
    index: ProbeIndex
    sent_ids: frozenset[str]
    sent_normalized: frozenset[str] = frozenset()


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
               .where(effective_kind().in_(_FROM_AGENCY), MatchRow.from_address != ""))
    for agency, address in s.execute(learned):
        addresses[agency].add(address.lower())
    return addresses, domains


def _load_context(store: Store, secret: bytes) -> _Context:
    with store.session(write=False) as s:
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
    return _Context(ProbeIndex(probes, secret), sent_ids, parsing.normalized_ids(sent_ids))


def sent_message_ids(store: Store) -> frozenset[str]:
    """The Message-IDs of the probes sent: what classification trusts a bounce by."""
    with store.session(write=False) as s:
        return frozenset(i for i in s.scalars(select(ProbeRow.message_id)
                                              .where(_sent_filter())) if i)


# --- the handoff from the sync's parsing to processing ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Handed:
    facts: parsing.Facts
    sent_normalized: frozenset[str]  # the sent Message-IDs it was classified with
    at: float  # time.monotonic() when handed over


class _Handoff:
    """Facts computed by the sync's parsing processes, waiting for ``process_new``: bounded.

    Only an optimisation: a message without facts here (never handed over, over the bound,
    a restart, another worker) is parsed again from its raw bytes, with the same result.
    """

    MAX_MESSAGES = 25_000
    MAX_CHARS = 50_000_000  # text held, about 100 MB; beyond it, messages are not kept
    MAX_AGE = 15 * 60.0  # seconds: a process that only watches never takes them

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[int, _Handed] = {}
        self.chars = 0

    def put(self, items: Iterable[tuple[int, parsing.Facts]],
            sent_normalized: frozenset[str]) -> None:
        now = time.monotonic()
        with self.lock:
            while self.waiting:  # oldest first (insertion order): expired ones go
                first = next(iter(self.waiting))
                if now - self.waiting[first].at < self.MAX_AGE:
                    break
                self.chars -= _chars(self.waiting.pop(first).facts)
            for message_id, f in items:
                size = _chars(f)
                if len(self.waiting) >= self.MAX_MESSAGES or self.chars + size > self.MAX_CHARS:
                    return  # the oldest are kept: processing takes the oldest first
                old = self.waiting.get(message_id)
                if old is not None:
                    self.chars -= _chars(old.facts)
                self.waiting[message_id] = _Handed(f, sent_normalized, now)
                self.chars += size

    def take(self, message_id: int, ctx: _Context) -> parsing.Facts | None:
        """The message's facts if they hold for ``ctx``'s sent Message-IDs."""
        with self.lock:
            found = self.waiting.pop(message_id, None)
            if found is None:
                return None
            self.chars -= _chars(found.facts)
        sent = found.sent_normalized
        if sent is ctx.sent_normalized or sent == ctx.sent_normalized or all(
                (i in sent) == (i in ctx.sent_normalized) for i in found.facts.referred):
            return found.facts
        return None

    def drop_through(self, message_id: int) -> None:
        """Forget every message up to ``message_id``: processed, by this call or another."""
        with self.lock:
            for i in [i for i in self.waiting if i <= message_id]:
                self.chars -= _chars(self.waiting.pop(i).facts)


def _chars(f: parsing.Facts) -> int:
    return len(f.new_text) + len(f.quoted_text) + len(f.full_text)


_HANDOFFS: weakref.WeakKeyDictionary[Store, _Handoff] = weakref.WeakKeyDictionary()
_HANDOFFS_LOCK = threading.Lock()


def _handoff(store: Store) -> _Handoff:
    with _HANDOFFS_LOCK:
        found = _HANDOFFS.get(store)
        if found is None:
            found = _HANDOFFS[store] = _Handoff()
        return found


def hand_over(store: Store, items: Iterable[tuple[int, parsing.Facts]],
              sent_ids: frozenset[str], version: str) -> None:
    """Keep facts the sync's parsing computed for stored messages, for ``process_new``.

    ``sent_ids``: the sent Message-IDs they were classified with; ``version``: the code
    version (``parsing.code_version``) of the process that computed them, ignored unless it
    is this process's.
    """
    if version == parsing.code_version():
        _handoff(store).put(items, parsing.normalized_ids(sent_ids))


def _forget_handed(store: Store) -> None:
    """Drop every message's handed-over facts (for tests and benchmarks)."""
    with _HANDOFFS_LOCK:
        _HANDOFFS.pop(store, None)


# --- one message through classification and matching ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    account: str
    received_at: datetime
    raw: bytes
    parse_error: str | None  # set when the message could not be parsed at all
    facts: parsing.Facts | None = None  # handed over by the sync: no need to parse again


@dataclass(frozen=True, slots=True)
class _Examined:
    stored: _Stored
    sender: str
    subject: str
    classification: Classification
    result: MatchResult


def _incoming(m: _Stored, f: parsing.Facts, c: Classification, kind: str) -> IncomingMessage:
    return IncomingMessage(
        key=str(m.id), account=m.account, received_at=m.received_at,
        from_address=f.from_address, to_addresses=f.to_addresses, subject=f.subject,
        in_reply_to=f.in_reply_to, references=f.references, new_text=c.new_text,
        quoted_text=c.quoted_text, full_text=f.full_text, kind=kind,
        returned_message_ids=f.returned_message_ids, returned_recipients=c.failed_recipients,
        message_id=f.message_id)


def _examine(ctx: _Context, m: _Stored, human_kind: str | None) -> _Examined:
    parsed: ParsedMessage | None = None
    f = m.facts
    if f is None:  # nothing handed over: parsed here, exactly as the parsing processes do
        parsed = parse_message(m.raw)
        f = parsing.facts(parsed, ctx.sent_ids)
    c = parsing.classification(f)
    incoming = _incoming(m, f, c, human_kind or c.kind.value)
    result = ctx.index.match(incoming)
    if result.probe_id is not None and c.kind in _TIMED_KINDS:
        # Only now is the probe known, and with it the send time that dates a receipt.
        sent_at = ctx.index.by_id[result.probe_id].sent_at
        c = classify(parsed or parse_message(m.raw), sent_message_ids=ctx.sent_ids,
                     probe_sent_at=sent_at, received_at=m.received_at)
        if not human_kind and c.kind.value != incoming.kind:
            result = ctx.index.match(replace(incoming, kind=c.kind.value))
    if m.parse_error is not None:
        result = replace(result, probe_id=None, needs_review=True,
                         evidence=f"could not be parsed ({m.parse_error}); {result.evidence}")
    sender = incoming.from_address.lower()
    return _Examined(m, sender, f.subject, c, result)


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


def _guess_json(result: MatchResult) -> list[dict[str, Any]]:
    return [{"probe_id": g.probe_id, "score": g.score, "rule": g.rule.value,
             "reasons": list(g.reasons)} for g in result.guesses]


def _save(s: Session, ex: _Examined, row: MessageRow, match: MatchRow | None, now: datetime,
          tally: _Tally) -> set[str]:
    """Write one message's classification and match; returns the probes it was and is on."""
    c, r = ex.classification, ex.result
    attached = r.probe_id if r.is_attached else None
    row.kind, row.bounce_type = c.kind.value, c.bounce_type.value if c.bounce_type else None
    row.evidence, row.new_text = list(c.evidence), c.new_text
    row.classified_at, row.rules_version = now, RULES_VERSION
    if match is None:
        match = MatchRow(message_id=ex.stored.id, decided_by=Decider.MACHINE, decided_at=now,
                         probe_id=None, needs_review=False)
        s.add(match)
    before = match.probe_id
    match.from_address, match.subject = ex.sender[:320], ex.subject
    match.machine_probe_id, match.rule, match.evidence = attached, r.rule.value, r.evidence
    match.confidence, match.guesses = r.confidence, _guess_json(r)
    match.substance, match.rules_version, match.matched_at = (
        _substance_json(c.substance), RULES_VERSION, now)
    if match.decided_by is Decider.HUMAN:
        tally.kept_human += 1
    elif (match.probe_id, match.needs_review) != (attached, r.needs_review):
        match.probe_id, match.needs_review, match.decided_at = attached, r.needs_review, now
    tally.kinds[match.human_kind or c.kind.value] += 1
    tally.attached += match.probe_id is not None
    tally.queued += match.needs_review
    tally.unmatched += match.probe_id is None and not match.needs_review
    return {p for p in (before, match.probe_id) if p is not None}


def _save_fresh(s: Session, fresh: Sequence[_Examined], now: datetime,
                tally: _Tally) -> set[str]:
    """``_save`` for messages processed the first time, as two bulk statements.

    The usual case (every new message): no match row and no human decision yet, so the
    rows are written with one executemany each instead of object by object, which was
    most of the cost of processing.
    """
    if not fresh:
        return set()
    messages: list[dict[str, Any]] = []
    matches: list[dict[str, Any]] = []
    attached_to: set[str] = set()
    for ex in fresh:
        c, r = ex.classification, ex.result
        attached = r.probe_id if r.is_attached else None
        messages.append({
            "id": ex.stored.id, "kind": c.kind.value,
            "bounce_type": c.bounce_type.value if c.bounce_type else None,
            "evidence": list(c.evidence), "new_text": c.new_text, "classified_at": now,
            "rules_version": RULES_VERSION})
        matches.append({
            "message_id": ex.stored.id, "probe_id": attached, "needs_review": r.needs_review,
            "decided_by": Decider.MACHINE, "decided_at": now, "from_address": ex.sender[:320],
            "subject": ex.subject, "machine_probe_id": attached, "rule": r.rule.value,
            "evidence": r.evidence, "confidence": r.confidence, "guesses": _guess_json(r),
            "substance": _substance_json(c.substance), "rules_version": RULES_VERSION,
            "matched_at": now})
        tally.kinds[c.kind.value] += 1
        if attached is not None:
            attached_to.add(attached)
        tally.attached += attached is not None
        tally.queued += r.needs_review
        tally.unmatched += attached is None and not r.needs_review
    s.flush()
    s.execute(update(MessageRow), messages)  # by primary key, one executemany
    s.execute(insert(MatchRow), matches)
    return attached_to


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


def _run(store: Store, ctx: _Context, batch: Sequence[_Stored], now: datetime,
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
        fresh: list[_Examined] = []
        for ex in examined:
            row = rows[ex.stored.id]
            if only_new and row.classified_at is not None:
                continue
            match = matches.get(ex.stored.id)
            if match is None:
                fresh.append(ex)
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
            ctx = _load_context(store, secret)
        handoff = _handoff(store)
        batch = [_Stored(m.id, m.account, m.internaldate, m.raw,
                         (m.parse_error or "failed") if m.parse_status is ParseStatus.FAILED
                         else None, handoff.take(m.id, ctx)) for m in found]
        _run(store, ctx, batch, clock.now(), tally, only_new=True)
        after = found[-1].id
        handoff.drop_through(after)
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
    ctx = _load_context(store, secret) if ids else None
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
