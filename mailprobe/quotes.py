"""Splitting a reply into the agency's new text, its signature and the quoted original."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ReplyText", "split_reply"]

# Marker names, as they appear in classification evidence.
SEPARATOR = "原始邮件 separator"
HEADER_BLOCK = "发件人/发送时间 header block"
WROTE = "写道/wrote line"
ANGLE = "> quoting"


@dataclass(frozen=True, slots=True)
class ReplyText:
    """``new_text`` + ``signature`` + ``quoted_text`` hold every line of the input."""

    new_text: str
    quoted_text: str
    marker: str  # which rule found the quote, "" when none did
    signature: str = ""


# QQ Mail / Foxmail "------------------ 原始邮件 ------------------", Outlook zh
# "-----原始邮件-----", Outlook en "-----Original Message-----", forwards in both languages.
_SEPARATOR = re.compile(
    r"^\s*[-_=—─]{2,}\s*(原始邮件|原始郵件|原始信件|Original Message|Original|转发邮件信息|"
    r"轉寄郵件|转发的邮件|Forwarded message|邮件原文)\s*[-_=—─]{2,}\s*$", re.IGNORECASE)
# First line of a quoted header block: Outlook (zh, zh-TW, en), QQ Mail, Foxmail.
_FROM_LINE = re.compile(r"^\s*[*>]*\s*(发件人|發件人|寄件者|寄件人|From)\s*\*?\s*[:：]",
                        re.IGNORECASE)
_TIME_LINE = re.compile(r"(发送时间|發送時間|寄件日期|时间|時間|日期|Sent|Date)\s*\*?\s*[:：]",
                        re.IGNORECASE)
_RULE_LINE = re.compile(r"^\s*[_—─-]{8,}\s*$")
# Coremail/163/126 "在 2015年11月3日 上午10:21，xxx 写道：", "xxx 于 2015-11-03 10:21 写道：",
# Gmail/Apple "On Mon, Nov 2, 2015 at 9:30 AM, X <x@y> wrote:", 163 "At 2015-11-02, X wrote:".
_WROTE = re.compile(
    r"^\s*((在|On|At)\b.*|.*\d.*)(写道|寫道|wrote)\s*[:：]?\s*$|^.*(于|於).*\d.*(写道|寫道)\s*[:：]?\s*$",
    re.IGNORECASE)
_ANGLE_LINE = re.compile(r"^\s*>")
# Signatures that mail apps append; they say nothing about the question.
_APP_SIGNATURE = re.compile(
    r"^\s*(发自|發自|来自|來自|从|從|Sent from|Get Outlook for).{0,30}"
    r"(iPhone|iPad|Android|手机|手機|邮箱|郵箱|大师|客户端|Outlook|Mail|设备|發送|发送)\s*$",
    re.IGNORECASE)
_BARE_ADDRESS = re.compile(r"^\s*[\w.+-]+@[\w-]+(\.[\w-]+)+\s*$")
_LOOKAHEAD = 8
_ATTRIBUTION_CHARS = 400  # longer lines are prose, and the patterns are quadratic in length
_SIGNATURE_LINES = 15  # a '-- ' further up than this is a divider in the text, not a signature


def split_reply(text: str) -> ReplyText:
    """Find where the quoted original starts and what the signature is; keep every line.

    Without a marker the whole text is new text (minus an app or '-- ' signature).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start, marker = _quote_start(lines)
    if marker == ANGLE:
        new_lines = [line for line in lines[start:] if not _ANGLE_LINE.match(line)]
        quoted = [line for line in lines[start:] if _ANGLE_LINE.match(line)]
        head, signature = _signature(lines[:start] + new_lines)
        return ReplyText(head, "\n".join(quoted).strip(), marker, signature)
    head, signature = _signature(lines[:start])
    return ReplyText(head, "\n".join(lines[start:]).strip(), marker, signature)


def _quote_start(lines: list[str]) -> tuple[int, str]:
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if _SEPARATOR.match(line):
            return i, SEPARATOR
        if _FROM_LINE.match(line) and _time_follows(lines, i):
            return _with_rule_above(lines, i), HEADER_BLOCK
        if len(line) < _ATTRIBUTION_CHARS and _wrote_at(lines, i):
            return i, WROTE
        if _ANGLE_LINE.match(line):
            return i, ANGLE
    return len(lines), ""


def _time_follows(lines: list[str], i: int) -> bool:
    """A From line opens a quoted header block only if a time line follows it closely."""
    if _TIME_LINE.search(lines[i], 4):
        return True
    following = [line for line in lines[i + 1:i + 1 + 2 * _LOOKAHEAD] if line.strip()]
    return any(_TIME_LINE.match(line.lstrip(" *>")) for line in following[:_LOOKAHEAD])


def _with_rule_above(lines: list[str], i: int) -> int:
    """Outlook draws a rule of underscores above its header block; it belongs to the quote."""
    above = i - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    return above if above >= 0 and _RULE_LINE.match(lines[above]) else i


def _wrote_at(lines: list[str], i: int) -> bool:
    """An attribution line, possibly wrapped over up to three lines by the sender's client."""
    if _WROTE.match(lines[i]):
        return True
    if not re.match(r"^\s*(在|On|At)\b", lines[i], re.IGNORECASE):
        return False
    joined = lines[i]
    for nxt in lines[i + 1:i + 3]:
        joined = f"{joined} {nxt.strip()}"
        if len(joined) > _ATTRIBUTION_CHARS:
            return False
        if _WROTE.match(joined):
            return True
    return False


def _signature(lines: list[str]) -> tuple[str, str]:
    """Split trailing signature lines off the new text: '-- ' and what follows, app lines."""
    end = len(lines)
    for i in range(len(lines) - 1, max(-1, len(lines) - 1 - _SIGNATURE_LINES), -1):
        if lines[i].rstrip() == "--":
            end = i
            break
    while True:
        last = end - 1
        while last >= 0 and not lines[last].strip():
            last -= 1
        if last < 0 or not (_APP_SIGNATURE.match(lines[last]) or _BARE_ADDRESS.match(lines[last])):
            break
        end = last
    return "\n".join(lines[:end]).strip(), "\n".join(lines[end:]).strip()
