"""Decoding: raw message bytes into clean text, addresses, attachments and delivery reports."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32, default
from email.utils import parsedate_to_datetime
from typing import Any

from flufl.bounce import all_failures

from mailprobe.charsets import (
    UNFOLD,
    Address,
    b64_lenient,
    b64_size,
    decode_bytes,
    decode_header_value,
    html_to_text,
    message_ids,
    normalize_message_id,
    parse_addresses,
    parse_params,
    raw_header,
)

__all__ = [
    "Address",
    "Attachment",
    "AutomationHeaders",
    "ParsedMessage",
    "RecipientStatus",
    "ReturnedMessage",
    "TextPart",
    "decode_bytes",
    "decode_header_value",
    "html_to_text",
    "looks_like_bounce",
    "normalize_message_id",
    "parse_message",
]

MAX_BYTES = 10_000_000
MAX_PARTS = 200
_MAX_DEPTH = 12
_MAX_DEFECTS = 50

# compat32 is ~7x cheaper than policy.default for headers (docs/measured.md), and we decode
# every header ourselves anyway, because the real-world breakage (raw GBK, split words) is ours.
_PARSER = BytesParser(policy=compat32)
_HEADER_PARSER = BytesHeaderParser(policy=compat32)
_FLUFL_PARSER = BytesParser(policy=default)  # only for the rare bounce-like message


@dataclass(frozen=True, slots=True)
class TextPart:
    """A text part that makes up the body; ``text`` of an HTML part is already plain text."""

    content_type: str
    charset: str  # the label the message gave, "" when none
    decoded_as: str  # the codec that produced ``text``
    text: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment is listed, never kept; ``size`` is its decoded size in bytes (estimated)."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One recipient of a delivery report (RFC 3464 block, or flufl.bounce's finding)."""

    recipient: str
    action: str  # failed, delayed, delivered, relayed, expanded ("" when not given)
    status: str  # enhanced status code like 5.1.1, "" when not given
    diagnostic: str = ""
    original_recipient: str = ""
    remote_mta: str = ""
    source: str = "delivery-status"


@dataclass(frozen=True, slots=True)
class ReturnedMessage:
    """A message enclosed as message/rfc822 or text/rfc822-headers (in a bounce: ours)."""

    message_id: str
    recipients: tuple[str, ...]
    sender: str
    subject: str


@dataclass(frozen=True, slots=True)
class AutomationHeaders:
    """Headers that automatic senders set (RFC 3834, vendors, Exchange, mailing lists)."""

    auto_submitted: str = ""
    x_autoreply: str = ""
    x_autorespond: str = ""
    precedence: str = ""
    x_auto_response_suppress: str = ""
    exchange_rules_loop: str = ""  # X-MS-Exchange-Inbox-Rules-Loop
    exchange_generated_by: str = ""  # X-MS-Exchange-Generated-Message-Source
    ms_has_attach: str = ""
    list_unsubscribe: str = ""
    list_id: str = ""
    failed_recipients: str = ""  # X-Failed-Recipients (Exim)


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything later stages need from one message; Message-IDs keep their angle brackets."""

    size: int
    headers: tuple[tuple[str, str], ...] = ()
    subject: str = ""
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    return_path: str = ""
    message_id: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    date_text: str = ""
    automation: AutomationHeaders = field(default_factory=AutomationHeaders)
    content_type: str = "text/plain"
    text: str = ""
    text_parts: tuple[TextPart, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    delivery_status: tuple[RecipientStatus, ...] = ()
    returned: tuple[ReturnedMessage, ...] = ()
    defects: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()

    @property
    def date(self) -> datetime | None:
        """The Date header as an instant, from the sender's clock: shown, never used for
        timing. Read when asked for: nothing on the sync's path needs it."""
        return _date(self.date_text)

    def header(self, name: str) -> str:
        """The first header called ``name`` (any case), decoded; "" when absent."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), "")


# --- the MIME tree ----------------------------------------------------------------------------


class _Walk:
    """Collects text, attachments and reports from the part tree within the part limit."""

    def __init__(self, max_parts: int, hint: str,
                 top: tuple[Message, dict[str, str], dict[str, str]] | None = None) -> None:
        self.max_parts = max_parts
        self.hint = hint
        self.top = top  # the message, its Content-Type parameters and its header fields
        # Each part's header fields by lower-case name (the first of each, raw), read once:
        # every lookup through the Message scans and lower-cases all of its fields. The part
        # is kept with them, so that its id is not reused for another part meanwhile.
        self._fields: dict[int, tuple[Message, dict[str, str]]] = {}
        if top is not None:
            self._fields[id(top[0])] = (top[0], top[2])
        self.seen = 0
        self.text: list[TextPart] = []
        self.attachments: list[Attachment] = []
        self.statuses: list[RecipientStatus] = []
        self.returned: list[ReturnedMessage] = []
        self.defects: list[str] = []

    def part(self, part: Message, depth: int = 0) -> None:
        self.seen += 1
        if self.seen > self.max_parts:
            return
        self.defects.extend(f"MIME: {type(d).__name__}" for d in part.defects)
        ctype = self.content_type(part)
        payload = _payload(part)
        if depth > _MAX_DEPTH:
            self.defects.append(f"MIME: nested deeper than {_MAX_DEPTH}; inner parts skipped")
        elif ctype.startswith("multipart/") and isinstance(payload, list):
            self.multipart(part, ctype, payload, depth)
        elif ctype.startswith("multipart/"):
            self.no_boundary(part, depth)
        elif ctype in ("message/rfc822", "message/global") and isinstance(payload, list):
            self.returned += [_returned(m) for m in payload[:1] if isinstance(m, Message)]
            self.count_inside(payload)
        elif ctype in ("message/delivery-status", "message/global-delivery-status"):
            self.statuses += _delivery_status(part, payload, self.defects)
        elif ctype in ("text/rfc822-headers", "message/global-headers"):
            headers = _HEADER_PARSER.parsebytes(self.transfer_decode(part))
            self.returned.append(_returned(headers))
        else:
            self.leaf(part, ctype)

    def multipart(self, part: Message, ctype: str, children: list[Any], depth: int) -> None:
        if ctype == "multipart/alternative":
            plain = next((c for c in children if isinstance(c, Message)
                          and self.content_type(c) == "text/plain"
                          and not self.is_attachment(c)), None)
            # The plain alternative is what the sender typed; HTML is converted only without it.
            text = self.text_of(plain, "text/plain") if plain is not None else None
            if text is not None and text.text:
                self.text.append(text)
                self.seen += 1
                self.count_inside([c for c in children if c is not plain])
                return
        for child in children:
            if isinstance(child, Message):
                self.part(child, depth + 1)

    def no_boundary(self, part: Message, depth: int) -> None:
        """A multipart whose boundary never shows: re-parse with the one the body uses."""
        body = self.transfer_decode(part)
        m = re.search(rb"^--([^\s]{1,70})\s*$", body, re.MULTILINE)
        if m is None:
            self.leaf(part, "text/plain")
            return
        self.defects.append(f"MIME: boundary not found; used {m.group(1)!r} seen in the body")
        header = b'Content-Type: multipart/mixed; boundary="' + m.group(1) + b'"\r\n\r\n'
        self.part(_PARSER.parsebytes(header + body), depth + 1)

    def count_inside(self, parts: Iterable[object]) -> None:
        for inner in parts:
            if isinstance(inner, Message):
                self.seen += sum(1 for _ in inner.walk())

    def leaf(self, part: Message, ctype: str) -> None:
        if ctype in ("text/plain", "text/html") and not self.is_attachment(part):
            self.text.append(self.text_of(part, ctype))
        else:
            self.attachments.append(_attachment(part, ctype, self.defects, self.fields(part)))

    def text_of(self, part: Message, ctype: str) -> TextPart:
        data = self.transfer_decode(part)
        if self.top is not None and part is self.top[0]:
            params = self.top[1]
        else:
            params = parse_params(self.fields(part).get("content-type", ""))[1]
        charset = params.get("charset", "")
        text, codec = decode_bytes(data, charset or self.hint, self.defects, ctype)
        if ctype == "text/html":
            text = html_to_text(text)
        return TextPart(ctype, charset, codec, text.replace("\r\n", "\n").strip())

    def fields(self, part: Message) -> dict[str, str]:
        """``raw_header(part, name)`` for every name at once: ``fields(part).get(name, "")``."""
        known = self._fields.get(id(part))
        if known is not None and known[0] is part:
            return known[1]
        found = _field_index(part.raw_items())
        self._fields[id(part)] = (part, found)
        return found

    def content_type(self, part: Message) -> str:
        """``part.get_content_type()``, from the part's fields."""
        value = self.fields(part).get("content-type")
        if value is None:
            return part.get_default_type()
        if not value.isascii():  # 8-bit bytes: the policy makes a Header of them first
            return part.get_content_type()
        ctype = value.partition(";")[0].strip().lower()
        return ctype if ctype.count("/") == 1 else "text/plain"

    def is_attachment(self, part: Message) -> bool:
        disposition, params = parse_params(self.fields(part).get("content-disposition", ""))
        return disposition == "attachment" or "filename" in params

    def transfer_decode(self, part: Message) -> bytes:
        return _transfer_decode(part, self.defects,
                                self.fields(part).get("content-transfer-encoding", ""))


def _field_index(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in items:
        lower = name.lower()
        if lower not in found:
            found[lower] = str(value)
    return found


def _payload(part: Message) -> Any:
    """The payload as parsed: a list of parts, or the text still transfer-encoded.

    Not get_payload(): for 8-bit text it decodes with the part's own charset label and
    raises on a bogus one; we decode ourselves, with better rules.
    """
    return vars(part).get("_payload")


def _transfer_decode(part: Message, defects: list[str], cte: str | None = None) -> bytes:
    """The part's body, transfer-decoded; ``cte``: its Content-Transfer-Encoding, if known."""
    if cte is None:
        cte = raw_header(part, "content-transfer-encoding")
    if cte.strip().lower() == "base64":
        raw = _payload(part)
        return b64_lenient(raw, defects) if isinstance(raw, str) else b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _attachment(part: Message, ctype: str, defects: list[str],
                fields: dict[str, str]) -> Attachment:
    _, disposition = parse_params(fields.get("content-disposition", ""))
    _, type_params = parse_params(fields.get("content-type", ""))
    name = disposition.get("filename") or type_params.get("name", "")
    raw = _payload(part)
    cte = fields.get("content-transfer-encoding", "")
    if isinstance(raw, str) and cte.strip().lower() == "base64":
        size = b64_size(raw)  # no need to decode to size it
    elif isinstance(raw, str):
        size = len(_transfer_decode(part, defects, cte))
    else:
        size = 0
    return Attachment(name, ctype, size)  # parse_params has decoded the name already


def _returned(enclosed: Message) -> ReturnedMessage:
    def raw(name: str) -> str:
        return raw_header(enclosed, name)

    recipients = tuple(a.addr for n in ("to", "cc") for a in parse_addresses(raw(n)))
    senders = parse_addresses(raw("from"))
    return ReturnedMessage(normalize_message_id(decode_header_value(raw("message-id"))),
                           recipients, senders[0].addr if senders else "",
                           decode_header_value(raw("subject")))


def _field_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in re.split(r"\n[ \t]*\n", UNFOLD.sub("", text.replace("\r\n", "\n"))):
        fields = (line.partition(":") for line in chunk.split("\n") if ":" in line)
        blocks.append({k.strip().lower(): " ".join(v.split()) for k, _, v in fields})
    return blocks


def _delivery_status(part: Message, payload: object, defects: list[str]) -> list[RecipientStatus]:
    """Per-recipient blocks of an RFC 3464 or RFC 6533 report, however the parser split it."""
    if isinstance(payload, list):
        blocks = _parsed_blocks(payload)
    else:
        data = _transfer_decode(part, defects)
        blocks = _field_blocks(decode_bytes(data, "utf-8", defects, "delivery-status")[0])
    statuses = []
    for b in blocks:
        recipient = b.get("final-recipient") or b.get("original-recipient")
        if not recipient:
            continue
        status = re.search(r"[245]\.\d{1,3}\.\d{1,3}", b.get("status", ""))
        statuses.append(RecipientStatus(
            _after_type(recipient), b.get("action", "").lower(),
            status.group(0) if status else "", b.get("diagnostic-code", ""),
            _after_type(b.get("original-recipient", "")), _after_type(b.get("remote-mta", ""))))
    return statuses


def _parsed_blocks(payload: list[Any]) -> list[dict[str, str]]:
    """Field blocks from what the parser made of a report.

    message/delivery-status comes as one Message per block; message/global-delivery-status
    as one Message holding the first block, with the rest left as its body text.
    """
    blocks = []
    for m in payload:
        if isinstance(m, Message):
            blocks.append({k.lower(): decode_header_value(str(v)) for k, v in m.raw_items()})
            body = _payload(m)
            if isinstance(body, str) and body.strip():
                data = body.encode("utf-8", "surrogateescape")
                blocks += _field_blocks(decode_bytes(data, "utf-8")[0])
    return blocks


def _after_type(value: str) -> str:
    """'rfc822; a@b' -> 'a@b' (the address-type prefix of RFC 3464 fields)."""
    return value.partition(";")[2].strip().strip("<>") if ";" in value else value.strip("<> ")


# --- the message ------------------------------------------------------------------------------

_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery|系统退信", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|delivery (status|failure|failed|notification)|failure notice|"
    r"mail delivery failed|delayed mail|退信|投递失败|无法投递|被退回|未能送达|发送失败",
    re.IGNORECASE)


def parse_message(raw: bytes, *, max_bytes: int = MAX_BYTES,
                  max_parts: int = MAX_PARTS) -> ParsedMessage:
    """Parse one raw message; never raises: problems go to ``defects``, cuts to ``truncated``."""
    try:
        data = bytes(raw)
    except Exception:  # not bytes-like at all
        data = str(raw).encode("utf-8", "surrogateescape")
    try:
        return _parse(data, max_bytes, max_parts)
    except Exception as exc:  # one hostile message must never stop the watcher
        return _fallback(data, exc, max_bytes)


def _parse(raw: bytes, max_bytes: int, max_parts: int) -> ParsedMessage:
    truncated: list[str] = []
    data = raw
    if len(raw) > max_bytes:
        cut = raw.rfind(b"\n", 0, max_bytes) + 1 or max_bytes
        data = raw[:cut]
        truncated.append(f"message is {len(raw):,} bytes; parsed the first {cut:,}")
    msg = _parse_bytes(data)
    defects: list[str] = []
    raw_headers = [(str(k), str(v)) for k, v in msg.raw_items()]
    index = _field_index(raw_headers)
    top_params = parse_params(index.get("content-type", ""))[1]
    hint = top_params.get("charset", "")
    walk = _Walk(max_parts, hint, (msg, top_params, index))
    fields = _header_fields(len(raw), raw_headers, walk.content_type(msg), defects, hint,
                            index)
    walk.part(msg)
    if walk.seen > max_parts:
        truncated.append(f"message has {walk.seen} parts; read the first {max_parts}")
    all_defects = list(dict.fromkeys(defects + walk.defects))
    if len(all_defects) > _MAX_DEFECTS:
        all_defects[_MAX_DEFECTS:] = [f"... and {len(all_defects) - _MAX_DEFECTS} more defects"]
    # One construction: dataclasses.replace() of a frozen, slotted result costs as much again.
    parsed = ParsedMessage(**fields, text_parts=tuple(walk.text),
                           text="\n\n".join(p.text for p in walk.text if p.text),
                           attachments=tuple(walk.attachments),
                           delivery_status=tuple(walk.statuses),
                           returned=tuple(walk.returned), defects=tuple(all_defects),
                           truncated=tuple(truncated))
    if walk.statuses:
        return parsed
    statuses = _flufl_failures(msg, data, parsed)  # reads only the header fields
    return replace(parsed, delivery_status=tuple(statuses)) if statuses else parsed


def _parse_bytes(data: bytes) -> Message:
    """What ``_PARSER.parsebytes(data)`` returns, with less work for a single-part message.

    The stdlib's feed parser reads a body line by line, but for a part that is neither
    multipart nor message/* it only joins those lines back into its payload. So the block up
    to the first empty CRLF line is parsed as headers alone, and the rest set as the
    payload, decoded as the parser decodes it. If the parser would have ended the headers
    earlier (a line that is no header field, an empty line made of a bare CR or LF), part
    of the block is left over as payload: then, and when the type needs its body parsed,
    the whole message goes through the parser. Saves a sixth of the parse of a reply.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return _PARSER.parsebytes(data)
    msg = _clean_header_block(data[:end + 2].decode("ascii", "surrogateescape"))
    if msg is None:
        msg = _HEADER_PARSER.parsebytes(data[:end + 4])
    if vars(msg).get("_payload") or msg.get_content_maintype() in ("multipart", "message"):
        return _PARSER.parsebytes(data)
    msg.set_payload(data[end + 4:].decode("ascii", "surrogateescape"))
    return msg


# A header block the feed parser reads without any of its special cases: field lines (a
# name of printable characters other than the colon, then a colon) and their continuation
# lines, every line ended by CRLF. No "From " line, no stray CR or LF, no line that would end
# the headers early.
_CLEAN_HEADER_BLOCK = re.compile(r"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+")


def _clean_header_block(head: str) -> Message | None:
    """The message the feed parser makes of a clean header block (``head``: the block up to
    and with its last CRLF, decoded as the parser decodes it), or None for any other block.

    The stdlib's header parser costs more than the rest of a reply's parse, because it
    feeds the block line by line through its general state machine; for a clean block
    the fields are stored exactly as its compat32 policy stores them (the name before the
    first colon; the value with its leading blanks removed, continuation lines joined with
    their CRLFs, trailing CR and LF removed).
    """
    if _CLEAN_HEADER_BLOCK.fullmatch(head) is None:
        return None
    msg = Message(compat32)
    lines = head.split("\r\n")
    lines.pop()  # after the last CRLF
    field: list[str] = []
    for line in lines:
        if line[0] in " \t":
            field.append(line)
            continue
        if field:
            _store_field(msg, field)
        field = [line]
    _store_field(msg, field)
    return msg


def _store_field(msg: Message, lines: list[str]) -> None:
    name, _, first = lines[0].partition(":")
    lines[0] = first.lstrip(" \t")
    msg.set_raw(name, "\r\n".join(lines).rstrip("\r\n"))


def _from_headers(size: int, raw_headers: list[tuple[str, str]], content_type: str,
                  defects: list[str], hint: str) -> ParsedMessage:
    return ParsedMessage(**_header_fields(size, raw_headers, content_type, defects, hint,
                                          _field_index(raw_headers)))


def _header_fields(size: int, raw_headers: list[tuple[str, str]], content_type: str,
                   defects: list[str], hint: str, raw: dict[str, str]) -> dict[str, Any]:
    """The ParsedMessage fields that come from the header block (``raw``: its
    ``_field_index``)."""
    headers = tuple([(k, decode_header_value(v, defects, hint)) for k, v in raw_headers])
    first = _field_index(headers)
    get = first.get

    def addresses(name: str) -> tuple[Address, ...]:
        return parse_addresses(raw.get(name, ""), defects, hint)

    return dict(
        size=size, headers=headers, subject=get("subject", ""), from_=addresses("from"),
        to=addresses("to"), cc=addresses("cc"), reply_to=addresses("reply-to"),
        return_path=get("return-path", ""),
        message_id=normalize_message_id(get("message-id", "")),
        in_reply_to=normalize_message_id(get("in-reply-to", "")),
        references=message_ids(get("references", "")), date_text=get("date", ""),
        content_type=content_type,
        automation=AutomationHeaders(*(get(name, "") for name in _AUTOMATION)))


_AUTOMATION = ("auto-submitted", "x-autoreply", "x-autorespond", "precedence",
               "x-auto-response-suppress", "x-ms-exchange-inbox-rules-loop",
               "x-ms-exchange-generated-message-source", "x-ms-has-attach", "list-unsubscribe",
               "list-id", "x-failed-recipients")  # AutomationHeaders' fields, in order


def _date(text: str) -> datetime | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text)
    except Exception:  # any unparseable Date is kept as text only
        return None


def looks_like_bounce(parsed: ParsedMessage) -> bool:
    """Cheap header test that decides whether the bounce heuristics are worth running."""
    sender = " ".join(f"{a.name} {a.addr}" for a in parsed.from_)
    return bool(_BOUNCE_SENDER.search(sender) or _BOUNCE_SUBJECT.search(parsed.subject)
                or parsed.return_path.strip() == "<>" or parsed.automation.failed_recipients
                or parsed.content_type == "multipart/report")


def _flufl_failures(msg: Message, data: bytes, parsed: ParsedMessage) -> list[RecipientStatus]:
    """flufl.bounce's detectors for the many non-RFC 3464 formats, on bounce-like mail only."""
    if not looks_like_bounce(parsed):
        return []
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # its detectors expect str headers; compat32 has Header objects for 8-bit
        try:
            temporary, permanent = all_failures(_FLUFL_PARSER.parsebytes(data))
        except Exception:  # a detector choking on a malformed bounce: the text rules decide
            return []
    found = [(a, "delayed") for a in sorted(temporary)] + [(a, "failed") for a in sorted(permanent)]
    return [RecipientStatus(a.decode("ascii", "replace"), action, "", source="flufl.bounce")
            for a, action in found]


class _DetectorCrashes(logging.Filter):
    """flufl.bounce logs a traceback before re-raising a detector's crash; we catch the crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Exception in detector")


logging.getLogger("flufl.bounce").addFilter(_DetectorCrashes())


def _fallback(raw: bytes, exc: Exception, max_bytes: int) -> ParsedMessage:
    """What can be saved when the parser itself failed: the header block and the rest as text."""
    note = f"parser failed: {type(exc).__name__}: {exc}"[:300]
    try:
        head, _, body = raw[:max_bytes].replace(b"\r\n", b"\n").partition(b"\n\n")
        unfolded = UNFOLD.sub("", head.decode("ascii", "surrogateescape"))
        fields = [line.partition(":") for line in unfolded.split("\n")]
        raw_headers = [(name.strip(), value) for name, colon, value in fields if colon]
        defects = [note]
        parsed = _from_headers(len(raw), raw_headers, "text/plain", defects, "")
        text = decode_bytes(body, "", defects, "body")[0].strip()
        return replace(parsed, text=text, text_parts=(TextPart("text/plain", "", "", text),),
                       defects=tuple(defects[:_MAX_DEFECTS]))
    except Exception:  # the last resort: an empty message that still says why
        return ParsedMessage(size=len(raw), defects=(note,))
