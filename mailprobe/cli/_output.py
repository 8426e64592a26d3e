"""Plain-text tables for the terminal, aligned for wide (CJK) characters."""

from __future__ import annotations

import re
import unicodedata

from mailprobe.errors import MailprobeError
from mailprobe.tables import Format, Table, format_cell
from mailprobe.workdays import When, parse_when

__all__ = ["display_width", "terminal_safe", "text_table", "when_option"]


def when_option(text: str | None, option: str) -> When | None:
    """An option's date or ISO instant; a bad one is reported under the option's name."""
    if text is None:
        return None
    try:
        return parse_when(text)
    except MailprobeError as exc:
        raise type(exc)(exc.message, location=option, expected=exc.expected,
                        got=text) from None


# Mail is written by strangers: its text may hold terminal escape sequences (ESC, CSI,
# OSC), which are shown as \\xNN, never sent to the terminal. Line feeds and tabs stay.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with its control characters (but line feed and tab) written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def text_table(table: Table, *, title: bool = True) -> str:
    cols = table.columns
    body = [[format_cell(v, c.format) for v, c in zip(row, cols, strict=True)]
            for row in table.rows]
    foot = [[format_cell(v, c.format) if v is not None else "" for v, c in
             zip(row, cols, strict=True)] for row in table.footer]
    head = [c.title for c in cols]
    widths = [max(display_width(r[k]) for r in [head, *body, *foot]) for k in range(len(cols))]
    right = [c.format is not Format.TEXT for c in cols]

    def line(cells: list[str]) -> str:
        return "  ".join(_pad(x, w, r) for x, w, r in zip(cells, widths, right, strict=True))

    rule = "  ".join("-" * w for w in widths)
    out = [table.title] if title else []
    out += [line(head), rule, *map(line, body)]
    if foot:
        out += [rule, *map(line, foot)]
    return "\n".join(s.rstrip() for s in out)
