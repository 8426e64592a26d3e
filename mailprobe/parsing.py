"""Parsing stored messages and saying how it went, as plain data: the parsing processes run
it (through ``examine``), so it imports only the decoder, never the store or SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path

from mailprobe.decode import MAX_BYTES, MAX_PARTS, ParsedMessage, parse_message

__all__ = ["Outcome", "code_version", "examine_raw", "outcome", "parse_many"]

_MAX_ERROR = 2_000

# (message id, status, error, Message-ID, Date text); status is a ParseStatus value
# ("ok", "defects", "failed"), plain data so the worker never imports the store's models.
Outcome = tuple[int, str, str | None, str | None, str | None]

# The modules whose code decides the parse, the kind and the match of a message; a parsing
# process's results are used only when its code is the main process's (see code_version).
_FACT_MODULES = ("mailprobe.charsets", "mailprobe.decode", "mailprobe.quotes",
                 "mailprobe.classify", "mailprobe.match", "mailprobe.parsing",
                 "mailprobe.examine")


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
