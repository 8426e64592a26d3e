"""Classifying and matching one message against the sent probes: pure, no store.

``process`` runs it on stored messages; the sync's parsing processes run it on each message
they have just parsed (:func:`parse_and_examine`), so a first sync classifies and matches
while it parses, instead of reading every message back and parsing it a second time. Both
give the same rows (:func:`fresh_rows`); the store adds the time and the rules version.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from mailprobe import parsing
from mailprobe.classify import Classification, MessageKind, Substance, classify
from mailprobe.decode import MAX_BYTES, MAX_PARTS, ParsedMessage, parse_message
from mailprobe.match import IncomingMessage, MatchResult, ProbeIndex

__all__ = [
    "RELAXED_GC",
    "Examinations",
    "Examined",
    "FreshRows",
    "JsonText",
    "MatchContext",
    "examine",
    "examine_many",
    "examine_parsed",
    "fresh_rows",
    "guess_json",
    "parse_and_examine",
    "ready",
    "substance_json",
    "worker_started",
]

# The send time is a cue only for automatic mail (a receipt minutes after the probe).
_TIMED_KINDS = (MessageKind.ACKNOWLEDGEMENT, MessageKind.AUTO_REPLY)


@dataclass(frozen=True)
class MatchContext:
    """The sent probes as the matcher indexes them, and the state of the store they were
    read in (``stamp``: results computed against an older state are not recorded)."""

    index: ProbeIndex
    sent_ids: frozenset[str]
    stamp: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Examined:
    message_id: int
    sender: str  # the From address, lower case
    subject: str
    classification: Classification
    result: MatchResult


def _incoming(message_id: int, account: str, received_at: datetime, parsed: ParsedMessage,
              c: Classification, kind: str) -> IncomingMessage:
    delivered = tuple(v for n, v in parsed.headers if n.lower() in ("delivered-to",
                                                                    "x-original-to"))
    return IncomingMessage(
        key=str(message_id), account=account, received_at=received_at,
        from_address=parsed.from_[0].addr if parsed.from_ else "",
        to_addresses=(*(a.addr for a in (*parsed.to, *parsed.cc)), *delivered),
        subject=parsed.subject, in_reply_to=parsed.in_reply_to,
        references=tuple(parsed.references), new_text=c.new_text, quoted_text=c.quoted_text,
        full_text=parsed.text, kind=kind,
        returned_message_ids=tuple(r.message_id for r in parsed.returned if r.message_id),
        returned_recipients=c.failed_recipients, message_id=parsed.message_id)


def examine(ctx: MatchContext, message_id: int, account: str, received_at: datetime,
            raw: bytes, *, parsed: ParsedMessage | None = None,
            parse_error: str | None = None, human_kind: str | None = None) -> Examined:
    """Classify one message and match it to the probe it answers (or to review).

    ``parsed`` saves parsing ``raw`` again; ``parse_error`` is set when the message could
    not be parsed at all: whatever the rules find, an evaluator decides.
    """
    parsed = parse_message(raw) if parsed is None else parsed
    c = classify(parsed, sent_message_ids=ctx.sent_ids)
    incoming = _incoming(message_id, account, received_at, parsed, c, human_kind or c.kind.value)
    result = ctx.index.match(incoming)
    if result.probe_id is not None and c.kind in _TIMED_KINDS:
        # Only now is the probe known, and with it the send time that dates a receipt.
        sent_at = ctx.index.by_id[result.probe_id].sent_at
        c = classify(parsed, sent_message_ids=ctx.sent_ids, probe_sent_at=sent_at,
                     received_at=received_at)
        if not human_kind and c.kind.value != incoming.kind:
            result = ctx.index.match(replace(incoming, kind=c.kind.value))
    doubt = _doubt(parse_error, c)
    if doubt:
        result = replace(result, probe_id=None, needs_review=True,
                         evidence=f"{doubt}; {result.evidence}")
    return Examined(message_id, incoming.from_address.lower(), parsed.subject, c, result)


def _doubt(parse_error: str | None, c: Classification) -> str:
    """Why whatever the rules found must be decided by an evaluator, or ''."""
    if parse_error is not None:
        return f"could not be parsed ({parse_error})"
    if c.kind in _COUNTED_KINDS and c.substance.unreadable:
        # Counted as answered, it would score an agency on a text nobody can read.
        return (f"正文无法辨认（{c.substance.chars} 个字符中 {c.substance.garbled} 个为乱码），"
                "是否答复须人工判断")
    return ""


_COUNTED_KINDS = (MessageKind.REPLY, MessageKind.ACKNOWLEDGEMENT)


def substance_json(s: Substance) -> dict[str, Any]:
    return {"chars": s.chars, "answer_cues": list(s.answer_cues),
            "referral_cues": list(s.referral_cues), "referral_only": s.referral_only,
            "garbled": s.garbled}


def guess_json(result: MatchResult) -> list[dict[str, Any]]:
    return [{"probe_id": g.probe_id, "score": g.score, "rule": g.rule.value,
             "reasons": list(g.reasons)} for g in result.guesses]


class JsonText(str):
    """A value already encoded as JSON for a JSON column, stored as it is.

    The parsing processes encode the JSON columns themselves: a few strings pickle and
    unpickle in a tenth of the time of the lists and dicts they hold, and the syncing
    process then has nothing left to encode.
    """

    __slots__ = ()


def _json(value: Any) -> JsonText:
    # orjson: a sixth of json.dumps' time (3.4 against 20.5 us for a message's three
    # columns). Its output is compact UTF-8 rather than json.dumps' ASCII escapes; both
    # read back as the same values.
    try:
        return JsonText(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:  # orjson refuses lone surrogates; json.dumps escapes them
        return JsonText(json.dumps(value))


class FreshRows(NamedTuple):
    """What a message classified for the first time writes, as plain data: its columns of
    ``messages`` and its ``matches`` row, without the time and the rules version (JSON
    columns as :class:`JsonText`)."""

    message: dict[str, Any]
    match: dict[str, Any]

    @property
    def attached(self) -> str | None:
        return self.match["probe_id"]  # type: ignore[no-any-return]


def fresh_rows(ex: Examined) -> FreshRows:
    c, r = ex.classification, ex.result
    attached = r.probe_id if r.is_attached else None
    return FreshRows(
        {"id": ex.message_id, "kind": c.kind.value,
         "bounce_type": c.bounce_type.value if c.bounce_type else None,
         "evidence": _json(list(c.evidence)), "new_text": c.new_text},
        {"message_id": ex.message_id, "probe_id": attached, "needs_review": r.needs_review,
         "from_address": ex.sender[:320], "subject": ex.subject, "machine_probe_id": attached,
         "rule": r.rule.value, "evidence": r.evidence, "confidence": r.confidence,
         "guesses": _json(guess_json(r)), "substance": _json(substance_json(c.substance))})


# --- in the parsing processes -----------------------------------------------------------------

# One result per message: the parse outcome and the rows, or no rows (other limits than
# processing's, or the rules failed: processing does it later, and meets the error there).
Examination = tuple[parsing.Outcome, FreshRows | None]


class Examinations(NamedTuple):
    version: str  # parsing.code_version() of the process: others' results are not used
    pid: int  # the process, which now holds the context (unless ``examined`` is False)
    examined: bool  # False: the process had no context, nothing was classified
    results: list[Examination]


_context: tuple[str, MatchContext] | None = None  # this process's, by key


def _context_for(key: str, blob: bytes | None) -> MatchContext | None:
    global _context
    if _context is not None and _context[0] == key:
        return _context[1]
    if blob is None:
        return None
    # Our own pickle, from the process that started this one: never outside input.
    _context = (key, pickle.loads(blob))
    return _context[1]


def parse_and_examine(items: Sequence[tuple[int, bytes, datetime]], account: str,
                      max_bytes: int, max_parts: int, key: str, blob: bytes | None
                      ) -> Examinations:
    """The parsing processes' job: :func:`examine_many` with the context sent pickled.

    The context (:class:`MatchContext`) comes in ``blob`` under ``key`` and is kept for
    later calls with the same key, which may then omit it; without it, the messages are
    only parsed (``examined`` is False).
    """
    ctx = _context_for(key, blob) if key else None
    return Examinations(parsing.code_version(), os.getpid(), ctx is not None,
                        examine_many(ctx, items, account, max_bytes, max_parts))


def examine_many(ctx: MatchContext | None, items: Sequence[tuple[int, bytes, datetime]],
                 account: str, max_bytes: int, max_parts: int) -> list[Examination]:
    """Parse fetched messages (id, raw, INTERNALDATE) of ``account``; given a context, also
    classify and match each. Never raises."""
    limits = (max_bytes, max_parts) == (MAX_BYTES, MAX_PARTS)
    found: list[Examination] = []
    for message_id, raw, received_at in items:
        outcome, parsed = parsing.examine_raw(message_id, raw, max_bytes, max_parts)
        rows = None
        if ctx is not None and parsed is not None and limits:
            rows = examine_parsed(ctx, outcome, parsed, account, received_at, raw)
        found.append((outcome, rows))
    return found


def examine_parsed(ctx: MatchContext, outcome: parsing.Outcome, parsed: ParsedMessage,
                   account: str, received_at: datetime, raw: bytes) -> FreshRows | None:
    """The rows of a message just parsed (``outcome``), or None if the rules failed."""
    error = (outcome[2] or "failed") if outcome[1] == "failed" else None
    try:
        return fresh_rows(examine(ctx, outcome[0], account, received_at, raw,
                                  parsed=parsed, parse_error=error))
    except Exception:  # processing does it again, and meets the error there
        return None


# Garbage collector thresholds while syncing (CPython's are 700, 10, 10): parsing and
# matching allocate a great many short-lived containers, and with the defaults the parsing
# processes spent about a tenth of their time, the syncing process a fifth, in collections.
RELAXED_GC = (50_000, 20, 100)


def worker_started() -> None:
    """Runs first in each parsing process (it does nothing else than parse and match)."""
    gc.set_threshold(*RELAXED_GC)


def ready() -> None:
    """A no-op job: submitted when a pool starts, so its processes start at once."""
