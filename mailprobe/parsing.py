"""Parsing messages, and what classification and matching need of each (:class:`Facts`, plain
data). Imports only the decoder, the classifier and the matcher (no store, no SQLAlchemy):
the sync's parsing processes run it (through ``examine``) and start fast.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import NamedTuple

from mailprobe.classify import (
    BounceType,
    Classification,
    MessageKind,
    Substance,
    classify,
)
from mailprobe.decode import MAX_BYTES, MAX_PARTS, ParsedMessage, parse_message
from mailprobe.match import _body_tokens

__all__ = ["Facts", "Outcome", "classification", "code_version", "examine_raw", "facts",
           "outcome", "parse_many", "ready"]

_MAX_ERROR = 2_000

# (message id, status, error, Message-ID, Date text); status is a ParseStatus value
# ("ok", "defects", "failed"), plain data so the worker never imports the store's models.
Outcome = tuple[int, str, str | None, str | None, str | None]

# The modules whose code decides the facts, the kind and the match of a message; a parsing
# process's results are used only when its code is the main process's (see code_version).
_FACT_MODULES = ("mailprobe.charsets", "mailprobe.decode", "mailprobe.quotes",
                 "mailprobe.classify", "mailprobe.match", "mailprobe.parsing",
                 "mailprobe.examine")


class Facts(NamedTuple):
    """What classification and matching need of one parsed message, as plain data."""

    from_address: str
    to_addresses: tuple[str, ...]  # To, Cc, Delivered-To, X-Original-To
    subject: str
    in_reply_to: str
    references: tuple[str, ...]
    message_id: str
    # The whole text, kept only where the matcher can use it: when the new and the quoted
    # text are both empty, or when it holds something that may be a token.
    full_text: str
    returned_message_ids: tuple[str, ...]
    # The classification without a probe's send time (Classification's fields).
    kind: str
    bounce_type: str | None
    failed_recipients: tuple[str, ...]
    dsn_status: str
    new_text: str
    substance: tuple[int, tuple[str, ...], tuple[str, ...], bool]
    evidence: tuple[str, ...]
    confidence: float
    quoted_text: str
    quote_marker: str


def facts(parsed: ParsedMessage, sent_ids: Collection[str]) -> Facts:
    """Classify ``parsed`` (no probe known yet) and keep what the matcher needs of it."""
    c = classify(parsed, sent_message_ids=sent_ids)
    delivered = tuple(v for n, v in parsed.headers if n.lower() in ("delivered-to",
                                                                    "x-original-to"))
    full = parsed.text
    if (c.new_text or c.quoted_text) and not _body_tokens(full):
        full = ""  # the matcher reads it only for tokens then (match._rule_token_in_body)
    returned = tuple(r.message_id for r in parsed.returned if r.message_id)
    s = c.substance
    return Facts(
        parsed.from_[0].addr if parsed.from_ else "",
        (*(a.addr for a in (*parsed.to, *parsed.cc)), *delivered),
        parsed.subject, parsed.in_reply_to, tuple(parsed.references), parsed.message_id, full,
        returned, c.kind.value, c.bounce_type.value if c.bounce_type else None,
        c.failed_recipients, c.dsn_status, c.new_text,
        (s.chars, s.answer_cues, s.referral_cues, s.referral_only), c.evidence, c.confidence,
        c.quoted_text, c.quote_marker)


def classification(f: Facts) -> Classification:
    """The classification the facts were computed with."""
    return Classification(MessageKind(f.kind), BounceType(f.bounce_type) if f.bounce_type
                          else None, f.failed_recipients, f.dsn_status, f.new_text,
                          Substance(*f.substance), f.evidence, f.confidence, f.quoted_text,
                          f.quote_marker)


_version: str | None = None


def code_version() -> str:
    """A digest of the source of the modules that compute the facts, read once per process."""
    global _version
    if _version is None:
        digest = hashlib.sha256()
        for name in _FACT_MODULES:
            file = getattr(importlib.import_module(name), "__file__", None)
            digest.update(Path(file).read_bytes() if file else name.encode())
        _version = digest.hexdigest()[:16]
    return _version


def outcome(message_id: int, raw: bytes, *, max_bytes: int = MAX_BYTES,
            max_parts: int = MAX_PARTS) -> Outcome:
    """Parse one stored message and say how it went; never raises."""
    return examine_raw(message_id, raw, max_bytes, max_parts)[0]


def examine_raw(message_id: int, raw: bytes, max_bytes: int, max_parts: int
                ) -> tuple[Outcome, ParsedMessage | None]:
    """Parse one message: how it went, and the parsed message (None if the parser crashed)."""
    try:
        parsed = parse_message(raw, max_bytes=max_bytes, max_parts=max_parts)
    except Exception as exc:  # parse_message promises not to raise; the watcher must go on
        return (message_id, "failed",
                f"parser crashed: {type(exc).__name__}: {exc}"[:_MAX_ERROR], None, None), None
    notes = [*parsed.defects, *(f"truncated: {t}" for t in parsed.truncated)]
    crashed = next((d for d in parsed.defects if d.startswith("parser failed")), None)
    if crashed or not parsed.headers:
        status, error = "failed", crashed or "no header fields: not a mail message"
    elif notes:
        status, error = "defects", "; ".join(notes)
    else:
        status, error = "ok", None
    return (message_id, status, error and error[:_MAX_ERROR], parsed.message_id or None,
            parsed.date_text or None), parsed


def parse_many(items: Sequence[tuple[int, bytes]], max_bytes: int, max_parts: int
               ) -> list[Outcome]:
    """Parse messages and say how each went."""
    return [examine_raw(i, raw, max_bytes, max_parts)[0] for i, raw in items]


def ready() -> None:
    """A no-op job: submitted when a pool starts, so its processes start at once."""

