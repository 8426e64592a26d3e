"""`mailprobe classify`: the kind of each message file, with the evidence that decided it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mailprobe.classify import Classification, classify
from mailprobe.cli import main
from mailprobe.cli._output import terminal_safe
from mailprobe.decode import ParsedMessage, parse_message
from mailprobe.errors import InputError, MailprobeError
from mailprobe.examine import substance_json


def _read_sent_ids(path: Path) -> list[str]:
    """One Message-ID per line; blank lines and '#' comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("cannot read the sent Message-IDs", source=path,
                         got=getattr(exc, "strerror", None) or str(exc),
                         hint="give a UTF-8 text file with one Message-ID per line") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _read_message(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError("cannot read the message file", source=path,
                         got=exc.strerror or str(exc)) from None


def _as_json(path: Path, msg: ParsedMessage, result: Classification) -> dict[str, Any]:
    return {
        "file": str(path), "kind": str(result.kind),
        "bounce_type": str(result.bounce_type) if result.bounce_type else None,
        "failed_recipients": list(result.failed_recipients), "dsn_status": result.dsn_status,
        "confidence": result.confidence, "evidence": list(result.evidence),
        "new_text": result.new_text, "quote_marker": result.quote_marker,
        "substance": substance_json(result.substance),
        "subject": msg.subject, "from": [a.addr for a in msg.from_],
        "message_id": msg.message_id, "defects": list(msg.defects),
        "truncated": list(msg.truncated),
    }


def _as_text(path: Path, msg: ParsedMessage, result: Classification) -> str:
    kind = str(result.kind) + (f" ({result.bounce_type})" if result.bounce_type else "")
    lines = [f"{path}: {kind}, confidence {result.confidence:.2f}"]
    if msg.subject:
        lines.append(f"  subject: {msg.subject}")
    lines += [f"  evidence: {e}" for e in result.evidence]
    if result.failed_recipients:
        lines.append(f"  failed recipients: {', '.join(result.failed_recipients)}")
    if msg.defects or msg.truncated:
        lines.append(f"  defects: {len(msg.defects)}, truncated: {len(msg.truncated)}")
    lines.append("  new text:")
    text = (result.new_text or "(none)").splitlines()
    if result.substance.unreadable and len(text) > _GARBLED_LINES:
        cut = len(text) - _GARBLED_LINES
        text[_GARBLED_LINES:] = [
            f"... {cut} more lines of unreadable text (--format json has them)"]
    lines += [f"    {line}".rstrip() for line in text]
    return terminal_safe("\n".join(lines))


_GARBLED_LINES = 3  # of an unreadable text: enough to see what went wrong


@main.command("classify")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one object per line.")
@click.option("--sent-ids", "sent_ids_file", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Message-IDs of the probes we sent, one per line: a bounce counts only if it "
                   "returns one of them. Without it bounces are not checked.")
def classify_command(files: tuple[Path, ...], fmt: str, sent_ids_file: Path | None) -> None:
    """Classify message files (.eml): reply, acknowledgement, auto_reply, bounce or unrelated.

    Prints per file the kind, the bounce type, the evidence and the reply's new text (the
    quoted original and signature left out). A file that cannot be read is reported on
    one line and the others are still classified; the exit status is then 1.

    \b
    Example:
      mailprobe classify tests/messages/*.eml
      mailprobe classify --format json --sent-ids sent-ids.txt inbox/*.eml
    """
    sent_ids = _read_sent_ids(sent_ids_file) if sent_ids_file else None
    failed = False
    for path in files:
        try:
            raw = _read_message(path)
        except MailprobeError as exc:
            click.echo(f"mailprobe: error: {exc.one_line()}", err=True)
            failed = True
            continue
        msg = parse_message(raw)
        result = classify(msg, sent_message_ids=sent_ids)
        if fmt == "json":
            click.echo(json.dumps(_as_json(path, msg, result), ensure_ascii=False))
        else:
            click.echo(_as_text(path, msg, result))
    if failed:
        sys.exit(1)
