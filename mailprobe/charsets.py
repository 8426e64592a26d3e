"""Text decoding for mail: charsets, RFC 2047 header words, addresses and HTML bodies."""

from __future__ import annotations

import binascii
import codecs
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

import charset_normalizer

__all__ = [
    "B64_JUNK",
    "UNFOLD",
    "Address",
    "b64_lenient",
    "b64_size",
    "decode_bytes",
    "decode_header_value",
    "html_to_text",
    "message_ids",
    "normalize_message_id",
    "parse_addresses",
    "parse_params",
    "raw_header",
]


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    addr: str


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
B64_JUNK = re.compile(r"[^A-Za-z0-9+/=]")
_FOLD = re.compile(r"\r?\n[ \t]*")  # inside one header value every line break is a fold
UNFOLD = re.compile(r"\r?\n(?=[ \t])")  # in a block of fields only these are
_MSGID = re.compile(r"<[^<>\s]+>")


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what str.split() drops, short of \x1c-\x1f (junk here)


def _b64_body(text: str, defects: list[str] | None, what: str) -> bytes:
    """The base64 alphabet characters of ``text``; a defect noted when other than spaces."""
    if text.isascii():  # the common case, at C speed: only line breaks to drop
        body = text.encode("ascii").translate(None, _ASCII_SPACE)
        if not body.translate(None, _B64_ALPHABET):
            return body
    junk_free = B64_JUNK.sub("", text)
    if defects is not None and len(junk_free) != len("".join(text.split())):
        defects.append(f"{what}: characters outside the alphabet dropped")
    return junk_free.encode("ascii")


def b64_size(text: str) -> int:
    """The decoded size of base64 ``text`` (estimated as lenient decoding would find it)."""
    return len(_b64_body(text, None, "").rstrip(b"=")) * 3 // 4


def b64_lenient(text: str, defects: list[str] | None = None, what: str = "base64") -> bytes:
    """Lenient base64: stray characters dropped, padding repaired, per-line padding allowed."""
    body = _b64_body(text, defects, what)
    out = bytearray()
    for chunk in body.split(b"="):  # '=' inside: some encoders pad every line on its own
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
            if defects is not None:
                defects.append(f"{what}: a stray last character dropped")
        if chunk:
            out += binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4))
    if defects is not None and len(body) % 4:
        defects.append(f"{what}: padding missing")
    return bytes(out)


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        return b64_lenient(text)
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


def parse_addresses(raw: str, defects: list[str] | None = None,
                    hint: str = "") -> tuple[Address, ...]:
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


def parse_params(value: str) -> tuple[str, dict[str, str]]:
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


def raw_header(part: Message, name: str) -> str:
    wanted = name.lower()
    return next((str(v) for k, v in part.raw_items() if k.lower() == wanted), "")


def message_ids(value: str) -> tuple[str, ...]:
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
