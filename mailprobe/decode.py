"""Decoding: raw message bytes into clean text, addresses, attachments and delivery reports."""

from __future__ import annotations

import binascii
import codecs
import html
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

import charset_normalizer
from flufl.bounce import all_failures

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
class Address:
    name: str
    addr: str


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
    date: datetime | None = None  # from the sender's clock: shown, never used for timing
    automation: AutomationHeaders = field(default_factory=AutomationHeaders)
    content_type: str = "text/plain"
    text: str = ""
    text_parts: tuple[TextPart, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    delivery_status: tuple[RecipientStatus, ...] = ()
    returned: tuple[ReturnedMessage, ...] = ()
    defects: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()

    def header(self, name: str) -> str:
        """The first header called ``name`` (any case), decoded; "" when absent."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), "")


# --- charsets ---------------------------------------------------------------------------------

# GB2312 and GBK labels are decoded as GB18030 (a superset) because senders label GBK text,
# and names with rarer characters, as GB2312; Big5 as CP950 for the same reason.
_ALIASES = {
    **dict.fromkeys(
        ("gb2312", "gbk", "gb18030", "x-gbk", "cp936", "ms936", "windows-936", "csgb2312",
         "euc-cn", "x-euc-cn", "euc_cn", "gb_2312-80", "gb_2312", "chinese", "iso-ir-58",
         "x-gb2312", "936"), "gb18030"),
    **dict.fromkeys(
        ("big5", "big-5", "x-big5", "cn-big5", "csbig5", "cp950", "windows-950", "big5-eten",
         "x-x-big5"), "cp950"),
    "big5-hkscs": "big5hkscs",
    "utf8": "utf-8", "utf-8": "utf-8", "unicode-1-1-utf-8": "utf-8", "utf_8": "utf-8",
    "us-ascii": "ascii", "ascii": "ascii", "iso-8859-1": "latin-1", "iso8859-1": "latin-1",
    "latin1": "latin-1", "latin-1": "latin-1", "windows-1252": "cp1252", "cp1252": "cp1252",
}
_UNLABELLED = frozenset({"", "unknown-8bit", "x-unknown", "unknown", "default", "x-user-defined"})
# Labels that legacy Chinese systems put on text they never converted.
_WEAK = frozenset({"ascii", "latin-1", "cp1252", "iso8859-15"})
_SEVEN_BIT = frozenset({"utf-7", "hz"})
_DETECTABLE = ["utf_8", "gb18030", "big5", "cp1252"]  # what Chinese agencies send
_HIGH_BYTES = bytes(range(0x80, 0x100))
_DOUBLE_BYTE = re.compile(rb"[\x81-\xfe][\x40-\xfe]")
_GB2312_PAIR = re.compile(rb"[\xa1-\xa9\xb0-\xf7][\xa1-\xfe]")


def _codec(label: str) -> str | None:
    name = label.strip().strip("\"'").split("*", 1)[0].lower()
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _UNLABELLED:
        return None
    try:
        found = codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        return None
    return _ALIASES.get(found, found)


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except Exception:  # a label can name any codec Python has; some fail in odd ways
        return None


def _detect(data: bytes) -> str | None:
    try:
        best = charset_normalizer.from_bytes(data[:65536], cp_isolation=_DETECTABLE).best()
    except Exception:  # the detector is a last resort; its failure must not lose the message
        return None
    if best is None:
        return None
    name = _codec(best.encoding)
    return name if name not in (None, "ascii") else None


def _mostly_8bit(data: bytes) -> bool:
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    return high * 3 > len(data)


def _gb2312_like(data: bytes) -> bool:
    """Nearly all double-byte pairs in GB2312's hanzi and punctuation rows: GBK text.

    Big5 bytes also decode as GBK, but half of Big5's trail bytes fall outside those rows;
    this settles the short texts on which the statistical detector guesses wrong.
    """
    pairs = _DOUBLE_BYTE.findall(data)
    common = sum(1 for pair in pairs if _GB2312_PAIR.match(pair))
    return bool(pairs) and common >= 0.9 * len(pairs)


def _candidates(data: bytes, codec: str | None) -> Iterable[str | None]:
    """Codecs to try strictly, in order; None stands for the detector."""
    yield "utf-8"  # valid UTF-8 is almost never GBK or Big5 by accident; labels lie more often
    if codec is None:
        yield from (("gb18030",) if _gb2312_like(data) else (None, "gb18030"))
    elif codec in _WEAK and not _mostly_8bit(data):
        yield from (codec, None)
    elif codec in _WEAK:
        yield from (("gb18030", codec) if _gb2312_like(data) else (None, "gb18030", codec))
    else:
        yield codec
        if codec == "utf-8":
            yield "gb18030"
        yield None


def decode_bytes(data: bytes, label: str = "", defects: list[str] | None = None,
                 what: str = "text") -> tuple[str, str]:
    """Decode ``data`` whose charset label is ``label``; returns (text, codec used).

    Never raises: a label that does not fit is noted in ``defects`` and the next candidate
    tried (UTF-8, the label, the detector, GB18030); the last resort replaces bad bytes.
    """
    notes = defects if defects is not None else []
    codec = _codec(label)
    if data.isascii() and codec not in _SEVEN_BIT:
        return data.decode("ascii"), "ascii"
    for candidate in _candidates(data, codec):
        name = _detect(data) if candidate is None else candidate
        text = _strict(data, name) if name else None
        if text is not None and name is not None:
            if name != codec and label:
                notes.append(f"{what}: labelled {label!r}, decoded as {name}")
            elif name != codec:
                notes.append(f"{what}: no charset given; decoded as {name}")
            return text, name
    fallback = codec if codec and codec not in _WEAK else "gb18030"
    notes.append(f"{what}: not valid in {label or 'any charset tried'!r}; "
                 f"decoded as {fallback} with replacement characters")
    try:
        return data.decode(fallback, "replace"), fallback
    except Exception:  # a codec that fails even with errors="replace"
        return data.decode("gb18030", "replace"), "gb18030"


# --- headers ----------------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?]*?)\?=")
_B64_JUNK = re.compile(r"[^A-Za-z0-9+/=]")
_FOLD = re.compile(r"\r?\n[ \t]*")  # inside one header value every line break is a fold
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")  # in a block of fields only these are
_MSGID = re.compile(r"<[^<>\s]+>")


def _b64(text: str, defects: list[str] | None = None, what: str = "base64") -> bytes:
    """Lenient base64: stray characters dropped, padding repaired, per-line padding allowed."""
    body = _B64_JUNK.sub("", text)
    if defects is not None and len(body) != len("".join(text.split())):
        defects.append(f"{what}: characters outside the alphabet dropped")
    out = bytearray()
    for chunk in body.split("="):  # '=' inside: some encoders pad every line on its own
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
            if defects is not None:
                defects.append(f"{what}: a stray last character dropped")
        if chunk:
            out += binascii.a2b_base64(chunk + "=" * (-len(chunk) % 4))
    if defects is not None and len(body) % 4:
        defects.append(f"{what}: padding missing")
    return bytes(out)


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        return _b64(text)
    return binascii.a2b_qp(text.encode("utf-8", "surrogateescape"), header=True)


def decode_header_value(value: str, defects: list[str] | None = None, hint: str = "") -> str:
    """Unfold and decode a raw header value: 8-bit bytes, RFC 2047 words (also broken ones).

    Adjacent encoded words in one charset are joined as bytes before decoding, so a character
    split across two words survives; ``hint`` is the charset to try for raw 8-bit bytes.
    """
    if "\n" in value:
        value = _FOLD.sub(" ", value)
    if not value.isascii():
        value = _raw_8bit(value, defects, hint)
    if "=?" not in value:
        return value.strip()
    out: list[str] = []
    pending = bytearray()
    charset = ""
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        between = value[pos:m.start()]
        if not (pending and not between.strip()):
            out.append(_flush(pending, charset, defects))
            out.append(between)
        word_charset = m.group(1).split("*", 1)[0].lower()
        if pending and word_charset != charset:
            out.append(_flush(pending, charset, defects))
        charset = word_charset
        try:
            pending += _word_bytes(m.group(2), m.group(3))
        except (binascii.Error, ValueError):
            out.append(_flush(pending, charset, defects) + m.group(0))
        pos = m.end()
    out.append(_flush(pending, charset, defects))
    out.append(value[pos:])
    return "".join(out).strip()


def _raw_8bit(value: str, defects: list[str] | None, hint: str) -> str:
    """Unencoded bytes in a header: UTF-8 is allowed (RFC 6532); anything else is a defect."""
    # Without a hint GBK is the best guess: Chinese clients write raw GBK far more than Big5.
    text, codec = decode_bytes(value.encode("utf-8", "surrogateescape"), hint or "gb18030")
    if codec != "utf-8" and defects is not None:
        defects.append(f"header: unencoded 8-bit bytes decoded as {codec}")
    return text


def _flush(pending: bytearray, charset: str, defects: list[str] | None) -> str:
    if not pending:
        return ""
    text, _ = decode_bytes(bytes(pending), charset, defects, "encoded word")
    pending.clear()
    return text


def normalize_message_id(value: str) -> str:
    """``<id>`` from a Message-ID-like value, for comparing; "" when there is none."""
    m = _MSGID.search(value)
    if m:
        return m.group(0)
    token = value.strip().split()[0] if value.strip() else ""
    return f"<{token.strip('<>')}>" if token.strip("<>") else ""


# One address-list item: "quoted name", <addr>, (comment), a comma, or plain text.
_ADDRESS_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^<>]*>?|\([^()]*\)?|,|[^",<(]+')


def _addresses(raw: str, defects: list[str] | None = None, hint: str = "") -> tuple[Address, ...]:
    """Addresses of a raw header; names are decoded after splitting, so commas in them are safe.

    Our own small splitter: email.utils.getaddresses is slow on the hot path and gives up on
    the broken forms that real mail has (unquoted 8-bit names, missing brackets).
    """
    if "@" not in raw:
        return ()
    value = _FOLD.sub(" ", raw)
    if not value.isascii():
        value = _raw_8bit(value, defects, hint)
    found: list[Address] = []
    plain: list[str] = []
    named: list[str] = []
    addr = ""
    for token in [*_ADDRESS_TOKEN.findall(value), ","]:
        if token == ",":
            words = " ".join(plain).split()
            if not addr:
                addr = next((w for w in words if "@" in w), "")
                words = [w for w in words if w != addr]
            if "@" in addr:
                text = decode_header_value(" ".join(named + words), defects)
                if len(text) > 1 and text[0] == text[-1] == "'":  # Outlook quotes names so
                    text = text[1:-1]
                found.append(Address(text, addr))
            plain, named, addr = [], [], ""
        elif token[0] == "<":
            addr = token.strip("<> ")
        elif token[0] in "\"(":
            named.append(token[1:-1] if len(token) > 1 and token[-1] in "\")" else token[1:])
        else:
            plain.append(token)
    return tuple(found)


def _params(value: str) -> tuple[str, dict[str, str]]:
    """Main value and parameters of a Content-Type or Content-Disposition, RFC 2231 joined."""
    main, _, rest = value.partition(";")
    pieces: dict[str, list[tuple[int, bool, str]]] = {}
    for m in re.finditer(r'([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', rest):
        key, raw = m.group(1).lower(), m.group(2).strip()
        raw = raw[1:-1] if len(raw) > 1 and raw[0] == raw[-1] == '"' else raw.strip('"')
        name, _, section = key.partition("*")
        number, star = section.rstrip("*"), key.endswith("*")
        pieces.setdefault(name, []).append((int(number) if number.isdigit() else 0, star, raw))
    params = {name: _join_2231(parts) for name, parts in pieces.items()}
    return main.strip().lower(), params


def _join_2231(parts: list[tuple[int, bool, str]]) -> str:
    parts.sort(key=lambda p: p[0])
    if not any(star for _, star, _ in parts):
        return decode_header_value("".join(raw for _, _, raw in parts))
    charset, data = "", bytearray()
    for index, (_, star, raw) in enumerate(parts):
        if star and index == 0 and raw.count("'") >= 2:
            charset, _, raw = raw.split("'", 2)
        if star:
            data += re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                           raw.encode("utf-8", "surrogateescape"))
        else:
            data += raw.encode("utf-8", "surrogateescape")
    return decode_bytes(bytes(data), charset, None, "parameter")[0]


def _raw_header(part: Message, name: str) -> str:
    wanted = name.lower()
    return next((str(v) for k, v in part.raw_items() if k.lower() == wanted), "")


def _message_ids(value: str) -> tuple[str, ...]:
    found = _MSGID.findall(value)
    return tuple(found) if found else tuple(f"<{t}>" for t in value.split() if "@" in t)


# --- HTML -------------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset({
    "p", "div", "br", "tr", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
    "h6", "table", "pre", "hr", "section", "article", "header", "footer", "address", "center",
    "form", "fieldset", "caption"})
# Regular expressions rather than html.parser: 2-3x faster on Outlook's bulky markup, and
# they cannot raise. Bounded repeats and possessive groups keep hostile input linear.
_HTML_DROP = re.compile(
    r"<(script|style|title)\b.*?(?:</\1\s*>|\Z)"  # unclosed: browsers drop the rest too
    r"|<!--.*?(?:-->|\Z)|<[!?][^<>]{0,2000}>",
    re.DOTALL | re.IGNORECASE)
_HTML_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]{0,40})"
                       r"(?:[^<>\"']++|\"[^\"]{0,2000}\"|'[^']{0,2000}')*+/?>")
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
# A source line break between two CJK characters is not a space (CSS Text 3, segment breaks).
_CJK_BREAK = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])[ \t]*\r?\n[ \t]*"
                        r"(?=[\u3000-\u9fff\uff00-\uffef])")
_QUOTE_IN, _QUOTE_OUT = "\ue000", "\ue001"  # private-use marks for <blockquote> edges
_QUOTE_MARK = re.compile(f"([{_QUOTE_IN}{_QUOTE_OUT}])")


def _tag_text(m: re.Match[str]) -> str:
    name = m.group(2).lower()
    if name == "blockquote":
        return f"\n{_QUOTE_OUT if m.group(1) else _QUOTE_IN}\n"
    if name in _BLOCK_TAGS:
        return "\n"
    return " " if name in ("td", "th") else ""


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body: blocks become lines, blockquotes '> ' lines.

    Script, style, comments and declarations are dropped and entities decoded.
    """
    text = _HTML_SPACE.sub(" ", _CJK_BREAK.sub("", _HTML_DROP.sub("", markup)))
    text = html.unescape(_HTML_TAG.sub(_tag_text, text)).replace("\xa0", " ")
    lines: list[str] = []
    depth = 0
    for piece in _QUOTE_MARK.split(text):
        if piece in (_QUOTE_IN, _QUOTE_OUT):
            depth = depth + 1 if piece == _QUOTE_IN else max(0, depth - 1)
            continue
        for line in piece.split("\n"):
            line = " ".join(line.split())
            if line:
                lines.append("> " * depth + line)
            elif lines and lines[-1]:
                lines.append("")
    return "\n".join(lines).strip()


# --- the MIME tree ----------------------------------------------------------------------------


class _Walk:
    """Collects text, attachments and reports from the part tree within the part limit."""

    def __init__(self, max_parts: int, hint: str) -> None:
        self.max_parts = max_parts
        self.hint = hint
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
        ctype = part.get_content_type()
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
            headers = _HEADER_PARSER.parsebytes(_transfer_decode(part, self.defects))
            self.returned.append(_returned(headers))
        else:
            self.leaf(part, ctype)

    def multipart(self, part: Message, ctype: str, children: list[Any], depth: int) -> None:
        if ctype == "multipart/alternative":
            plain = next((c for c in children if isinstance(c, Message)
                          and c.get_content_type() == "text/plain" and not _is_attachment(c)),
                         None)
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
        body = _transfer_decode(part, self.defects)
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
        if ctype in ("text/plain", "text/html") and not _is_attachment(part):
            self.text.append(self.text_of(part, ctype))
        else:
            self.attachments.append(_attachment(part, ctype, self.defects))

    def text_of(self, part: Message, ctype: str) -> TextPart:
        data = _transfer_decode(part, self.defects)
        charset = _params(_raw_header(part, "content-type"))[1].get("charset", "")
        text, codec = decode_bytes(data, charset or self.hint, self.defects, ctype)
        if ctype == "text/html":
            text = html_to_text(text)
        return TextPart(ctype, charset, codec, text.replace("\r\n", "\n").strip())


def _is_attachment(part: Message) -> bool:
    disposition, params = _params(_raw_header(part, "content-disposition"))
    return disposition == "attachment" or "filename" in params


def _payload(part: Message) -> Any:
    """The payload as parsed: a list of parts, or the text still transfer-encoded.

    Not get_payload(): for 8-bit text it decodes with the part's own charset label and
    raises on a bogus one; we decode ourselves, with better rules.
    """
    return vars(part).get("_payload")


def _transfer_decode(part: Message, defects: list[str]) -> bytes:
    cte = _raw_header(part, "content-transfer-encoding").strip().lower()
    if cte == "base64":
        raw = _payload(part)
        return _b64(raw, defects) if isinstance(raw, str) else b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _attachment(part: Message, ctype: str, defects: list[str]) -> Attachment:
    _, disposition = _params(_raw_header(part, "content-disposition"))
    _, type_params = _params(_raw_header(part, "content-type"))
    name = disposition.get("filename") or type_params.get("name", "")
    raw = _payload(part)
    cte = _raw_header(part, "content-transfer-encoding").strip().lower()
    if isinstance(raw, str) and cte == "base64":
        size = len(_B64_JUNK.sub("", raw).rstrip("=")) * 3 // 4  # no need to decode to size it
    elif isinstance(raw, str):
        size = len(_transfer_decode(part, defects))
    else:
        size = 0
    return Attachment(name, ctype, size)  # _params has decoded the name already


def _returned(enclosed: Message) -> ReturnedMessage:
    def raw(name: str) -> str:
        return _raw_header(enclosed, name)

    recipients = tuple(a.addr for n in ("to", "cc") for a in _addresses(raw(n)))
    senders = _addresses(raw("from"))
    return ReturnedMessage(normalize_message_id(decode_header_value(raw("message-id"))),
                           recipients, senders[0].addr if senders else "",
                           decode_header_value(raw("subject")))


def _field_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in re.split(r"\n[ \t]*\n", _UNFOLD.sub("", text.replace("\r\n", "\n"))):
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
    msg = _PARSER.parsebytes(data)
    defects: list[str] = []
    raw_headers = [(str(k), str(v)) for k, v in msg.raw_items()]
    hint = _params(_raw_header(msg, "content-type"))[1].get("charset", "")
    parsed = _from_headers(len(raw), raw_headers, msg.get_content_type(), defects, hint)
    walk = _Walk(max_parts, hint)
    walk.part(msg)
    if walk.seen > max_parts:
        truncated.append(f"message has {walk.seen} parts; read the first {max_parts}")
    statuses = walk.statuses or _flufl_failures(msg, data, parsed)
    all_defects = list(dict.fromkeys(defects + walk.defects))
    if len(all_defects) > _MAX_DEFECTS:
        all_defects[_MAX_DEFECTS:] = [f"... and {len(all_defects) - _MAX_DEFECTS} more defects"]
    return replace(parsed, text_parts=tuple(walk.text),
                   text="\n\n".join(p.text for p in walk.text if p.text),
                   attachments=tuple(walk.attachments), delivery_status=tuple(statuses),
                   returned=tuple(walk.returned), defects=tuple(all_defects),
                   truncated=tuple(truncated))


def _from_headers(size: int, raw_headers: list[tuple[str, str]], content_type: str,
                  defects: list[str], hint: str) -> ParsedMessage:
    headers = tuple((k, decode_header_value(v, defects, hint)) for k, v in raw_headers)
    raw: dict[str, str] = {}
    first: dict[str, str] = {}
    for (key, value), (_, decoded) in zip(raw_headers, headers, strict=True):
        raw.setdefault(key.lower(), value)
        first.setdefault(key.lower(), decoded)

    def get(name: str) -> str:
        return first.get(name, "")

    def addresses(name: str) -> tuple[Address, ...]:
        return _addresses(raw.get(name, ""), defects, hint)

    return ParsedMessage(
        size=size, headers=headers, subject=get("subject"), from_=addresses("from"),
        to=addresses("to"), cc=addresses("cc"), reply_to=addresses("reply-to"),
        return_path=get("return-path"), message_id=normalize_message_id(get("message-id")),
        in_reply_to=normalize_message_id(get("in-reply-to")),
        references=_message_ids(get("references")), date_text=get("date"),
        date=_date(get("date")), content_type=content_type,
        automation=AutomationHeaders(
            get("auto-submitted"), get("x-autoreply"), get("x-autorespond"), get("precedence"),
            get("x-auto-response-suppress"), get("x-ms-exchange-inbox-rules-loop"),
            get("x-ms-exchange-generated-message-source"), get("x-ms-has-attach"),
            get("list-unsubscribe"), get("list-id"), get("x-failed-recipients")))


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
        unfolded = _UNFOLD.sub("", head.decode("ascii", "surrogateescape"))
        fields = [line.partition(":") for line in unfolded.split("\n")]
        raw_headers = [(name.strip(), value) for name, colon, value in fields if colon]
        defects = [note]
        parsed = _from_headers(len(raw), raw_headers, "text/plain", defects, "")
        text = decode_bytes(body, "", defects, "body")[0].strip()
        return replace(parsed, text=text, text_parts=(TextPart("text/plain", "", "", text),),
                       defects=tuple(defects[:_MAX_DEFECTS]))
    except Exception:  # the last resort: an empty message that still says why
        return ParsedMessage(size=len(raw), defects=(note,))
