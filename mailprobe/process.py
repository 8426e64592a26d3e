"""Classify and match stored messages, keep the review queue, and record what evaluators decide."""

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

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, load_only

from mailprobe import mailstore, parsing
from mailprobe.classify import Classification, MessageKind, Substance, classify
from mailprobe.clock import Clock
from mailprobe.decode import ParsedMessage, parse_message
from mailprobe.directory import ChannelKind
from mailprobe.errors import InputError
from mailprobe.match import (
    Attached,
    FirstReplies,
    IncomingMessage,
    MatchResult,
    ProbeIndex,
    SentProbe,
)
from mailprobe.models import AgencyRow, ChannelRow, PersonaRow, ProbeRow, ProbeState, RoundRow
from mailprobe.models_mail import LocationRow, MessageRow, ParseStatus
from mailprobe.models_review import Decider, JudgementRow, ManualReplyRow, MatchRow, ReplyRoute
from mailprobe.probe_details import fingerprints
from mailprobe.response_report import (
    ROUTE_LABELS,
    ManualReply,
    MatchedMessage,
    ProbeLine,
    SentRecord,
    first_responses,
    probe_timings,
)
from mailprobe.store import Store
from mailprobe.timeliness import ProbeTiming
from mailprobe.workdays import When

__all__ = [
    "RULES_VERSION",
    "Guess",
    "MessageDetail",
    "ProcessReport",
    "QueueItem",
    "assign",
    "hand_over",
    "judge",
    "message_detail",
    "probe_timings",
    "process_new",
    "propose_effective",
    "reclassify",
    "record_manual_reply",
    "reject",
    "reprocess",
    "response_lines",
    "review_queue",
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


def _sent_at(row: ProbeRow) -> datetime | None:
    if row.accepted_at or row.submitted_at:
        return row.accepted_at or row.submitted_at
    return row.sending_at if row.state is ProbeState.UNCERTAIN else None


def _effective_kind() -> ColumnElement[str]:
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
               .where(_effective_kind().in_(_FROM_AGENCY), MatchRow.from_address != ""))
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
        sent_at = _sent_at(p)
        assert sent_at is not None  # the filter above
        probes.append(SentProbe(
            p.probe_id, p.round_id, agency, p.persona_id, account, address, sent_at,
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


def _refresh_judgements(s: Session, probe_ids: Iterable[str], now: datetime) -> None:
    """Re-propose 答复内容详细有效 from each probe's first reply; decisions are left alone."""
    ids = sorted(set(probe_ids))
    if not ids:
        return
    s.flush()
    firsts: dict[str, tuple[int, dict[str, Any]]] = {}
    for pid, mid, substance in s.execute(
            select(MatchRow.probe_id, MatchRow.message_id, MatchRow.substance)
            .join(MessageRow, MessageRow.id == MatchRow.message_id)
            .where(MatchRow.probe_id.in_(ids), _effective_kind() == _REPLY)
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
        for ex in examined:
            row = rows[ex.stored.id]
            if not (only_new and row.classified_at is not None):
                touched |= _save(s, ex, row, matches.get(ex.stored.id), now, tally)
        _refresh_judgements(s, touched, now)


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
                                _effective_kind())
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
    sent = _sent_at(row)
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
        _refresh_judgements(s, {p for p in (before, probe_id) if p is not None}, now)


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


# --- facts for the response-time report -------------------------------------------------------


def _source(first: FirstReplies | None) -> Attached | None:
    return None if first is None else first.reply or first.acknowledgement


def _line(p: ProbeRow, agency: str, kind: ChannelKind, target: str, persona: str,
          timing: ProbeTiming | None,
          source: Attached | None, found: Mapping[str, tuple[MatchRow, str]],
          manual: Mapping[str, ManualReply], judged: JudgementRow | None,
          bounce: str) -> ProbeLine:
    how: dict[str, Any] = {}
    if source is not None and source.key in manual:
        r = manual[source.key]
        how = {"manual_route": r.how, "reply_text": r.note,
               "reply_evidence": f"{r.by} 登记的{ROUTE_LABELS[r.how]}答复"}
    elif source is not None:
        m, text = found[source.key]
        human = m.decided_by is Decider.HUMAN
        how = {"matched_rule": m.rule, "reviewer": m.reviewer if human else "",
               "reply_text": text if source.kind == _REPLY else "",
               "reply_evidence": f"邮件 {m.message_id}（{m.from_address}）：" + (
                   f"{m.reviewer} 指定，{m.review_reason or '未说明理由'}" if human
                   else m.evidence)}
    if judged is not None and judged.effective is not None:
        how |= {"effective": judged.effective, "effective_by": judged.judged_by or ""}
    elif judged is not None and judged.proposed_effective is not None:
        how |= {"effective": judged.proposed_effective, "effective_by": "机器建议"}
    return ProbeLine(p.probe_id, agency, f"{kind.label} {target}", persona, timing,
                     bounce=bounce, channel_kind=kind.value, **how)


@dataclass(frozen=True)
class _RoundFacts:
    name: str
    probes: Sequence[Any]  # (ProbeRow, agency, channel kind, channel target, persona name)
    messages: Sequence[Any]  # (MatchRow, internaldate, kind, bounce type, new text)
    manual: dict[str, ManualReply]
    judged: dict[str, JudgementRow]


def _read_round(store: Store, round_id: str) -> _RoundFacts:
    in_round = select(ProbeRow.probe_id).where(ProbeRow.round_id == round_id)
    with store.session(write=False) as s:
        rnd = s.get(RoundRow, round_id)
        if rnd is None:
            raise InputError(f"no round {round_id}", location="--round", got=round_id)
        probes = s.execute(
            select(ProbeRow, AgencyRow.name, ChannelRow.kind, ChannelRow.target, PersonaRow.name)
            .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
            .join(ChannelRow, ChannelRow.id == ProbeRow.channel_id)
            .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
            .where(ProbeRow.round_id == round_id).order_by(ProbeRow.send_at, ProbeRow.probe_id)
        ).all()
        messages = s.execute(select(MatchRow, MessageRow.internaldate, MessageRow.kind,
                                    MessageRow.bounce_type, MessageRow.new_text)
                             .join(MessageRow, MessageRow.id == MatchRow.message_id)
                             .where(or_(MatchRow.probe_id.in_(in_round),
                                        MatchRow.machine_probe_id.in_(in_round)))).all()
        manual = [ManualReply(m.id, m.probe_id, m.at, m.how.value, m.by, m.note)
                  for m in s.scalars(select(ManualReplyRow)
                                     .where(ManualReplyRow.probe_id.in_(in_round)))]
        judged = {j.probe_id: j for j in s.scalars(
            select(JudgementRow).where(JudgementRow.probe_id.in_(in_round)))}
    return _RoundFacts(rnd.name, probes, messages, {r.key: r for r in manual}, judged)


def _bounces(matched: Sequence[MatchedMessage],
             types: Sequence[str | None]) -> dict[str, tuple[str, Attached]]:
    """Per probe, the worst bounce type (hard: the channel is unusable) and the first bounce."""
    found: dict[str, tuple[str, Attached]] = {}
    for msg, bounce_type in sorted(zip(matched, types, strict=True),
                                   key=lambda pair: (pair[0].received_at, pair[0].key)):
        if (probe := msg.effective_probe) and msg.effective_kind == _BOUNCE:
            old = found.get(probe)
            worst = "hard" if "hard" in (old and old[0], bounce_type) else "soft"
            found[probe] = (worst, old[1] if old else
                            Attached(probe, msg.key, _BOUNCE, msg.received_at))
    return found


def response_lines(store: Store, round_id: str, *,
                   round_end: When | None = None) -> tuple[str, list[ProbeLine], int]:
    """The round's name, one report line per probe sent (or refused), and how many wait."""
    f = _read_round(store, round_id)
    matched = [MatchedMessage(str(m.message_id), at, kind or "", m.machine_probe_id,
                              m.human_kind, m.decided_by is Decider.HUMAN,
                              m.probe_id if m.decided_by is Decider.HUMAN else None)
               for m, at, kind, _, _ in f.messages]
    firsts = first_responses(matched, f.manual.values())
    bounces = _bounces(matched, [row[3] for row in f.messages])
    found = {str(m.message_id): (m, text or "") for m, _, _, _, text in f.messages}
    # An uncertain probe may never have left: it is timed only once something answered it.
    sent = [SentRecord(p.probe_id, agency, t) for p, agency, *_ in f.probes
            if (t := _sent_at(p)) is not None
            and (p.state is not ProbeState.UNCERTAIN or p.probe_id in firsts)]
    timings = {t.probe_id: t for t in probe_timings(sent, matched, f.manual.values(),
                                                    round_end=round_end)}
    lines = []
    for p, agency, kind, target, persona in f.probes:
        refused = p.state is ProbeState.FAILED and p.accepted_at is None
        if p.probe_id in timings or refused:
            bounce, bounced = bounces.get(p.probe_id, ("", None))
            lines.append(_line(p, agency, ChannelKind(kind), target, persona,
                               timings.get(p.probe_id),
                               _source(firsts.get(p.probe_id)) or bounced,
                               found, f.manual, f.judged.get(p.probe_id), bounce))
    return f.name, lines, len(f.probes) - len(lines)
