"""Parsing fetched messages in worker processes: imports only the decoder, so workers start fast."""

from __future__ import annotations

from collections.abc import Sequence

from mailprobe.decode import MAX_BYTES, MAX_PARTS, parse_message

__all__ = ["Outcome", "outcome", "parse_many", "ready"]

_MAX_ERROR = 2_000

# (message id, status, error, Message-ID, Date text); status is a ParseStatus value
# ("ok", "defects", "failed"), plain data so the worker never imports the store's models.
Outcome = tuple[int, str, str | None, str | None, str | None]


def outcome(message_id: int, raw: bytes, *, max_bytes: int = MAX_BYTES,
            max_parts: int = MAX_PARTS) -> Outcome:
    """Parse one stored message and say how it went; never raises."""
    try:
        parsed = parse_message(raw, max_bytes=max_bytes, max_parts=max_parts)
    except Exception as exc:  # parse_message promises not to raise; the watcher must go on
        return (message_id, "failed",
                f"parser crashed: {type(exc).__name__}: {exc}"[:_MAX_ERROR], None, None)
    notes = [*parsed.defects, *(f"truncated: {t}" for t in parsed.truncated)]
    crashed = next((d for d in parsed.defects if d.startswith("parser failed")), None)
    if crashed or not parsed.headers:
        status, error = "failed", crashed or "no header fields: not a mail message"
    elif notes:
        status, error = "defects", "; ".join(notes)
    else:
        status, error = "ok", None
    return (message_id, status, error and error[:_MAX_ERROR], parsed.message_id or None,
            parsed.date_text or None)


def parse_many(items: Sequence[tuple[int, bytes]], max_bytes: int,
               max_parts: int) -> list[Outcome]:
    return [outcome(i, raw, max_bytes=max_bytes, max_parts=max_parts) for i, raw in items]


def ready() -> None:
    """A no-op job: submitted when a pool starts, so its processes start at once."""
