"""Signed probe tokens: HMAC-tagged probe ids that survive in Message-IDs, addresses and bodies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = [
    "MAC_BYTES",
    "find_tokens",
    "make_token",
    "message_id",
    "plus_address",
    "read_token",
]

MAC_BYTES = 8  # 64 bits: forging one needs ~2**63 tries against a secret the agencies never see
_DOMAIN = b"mailprobe-token-v1\x00"  # keeps these MACs apart from any other use of the secret
_STREAM = b"mailprobe-token-v1-mask\x00"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# The shortest token carries a one-byte probe id: ceil((1 + MAC_BYTES) * 8 / 5) characters.
_MIN_CHARS = -(-(1 + MAC_BYTES) * 8 // 5)
# Bounded by anything outside the base32 alphabet, so "<tok.nonce@", "user+tok@", "编号 tok）"
# and a token folded onto its own header line are all found; matching ignores case because
# some mail systems upper-case addresses and Message-IDs.
# re.ASCII: without it IGNORECASE lets the Kelvin sign stand for k.
_CANDIDATE = re.compile(
    rf"(?<![a-z2-7])[a-z2-7]{{{_MIN_CHARS},}}(?![a-z2-7])", re.IGNORECASE | re.ASCII
)


def _mac(probe_id: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + probe_id, hashlib.sha256).digest()[:MAC_BYTES]


def _mask(data: bytes, mac: bytes, secret: bytes) -> bytes:
    # The id is masked with a stream keyed by the secret and the MAC (as in SIV): tokens of
    # consecutive probes then share no visible prefix, and an agency cannot read our ids.
    stream = hashlib.shake_256(_STREAM + len(secret).to_bytes(4, "big") + secret + mac)
    return bytes(a ^ b for a, b in zip(data, stream.digest(len(data)), strict=True))


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def make_token(probe_id: str, secret: bytes) -> str:
    """A MAC of the probe id followed by the masked id, base32 in lower case without padding.

    The MAC lets a matcher trust a token found in a stranger's reply; the mask keeps the id
    itself (and the order of a campaign's ids) out of sight.
    """
    if not probe_id:
        raise ValueError("a probe id must not be empty")
    raw = probe_id.encode("utf-8")
    mac = _mac(raw, secret)
    return _b32(mac + _mask(raw, mac, secret))


def read_token(token: str, secret: bytes) -> str | None:
    """The probe id inside ``token`` when its MAC verifies with ``secret``, else None."""
    text = token.strip().lower()
    if len(text) < _MIN_CHARS or any(c not in _ALPHABET for c in text):
        return None
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except ValueError:  # binascii.Error: a length base32 cannot produce
        return None
    # b32decode ignores the unused low bits of the last character; without this check two
    # spellings of one token would both verify, and a tampered last character could pass.
    if _b32(data) != text or len(data) <= MAC_BYTES:
        return None
    mac = data[:MAC_BYTES]
    raw = _mask(data[MAC_BYTES:], mac, secret)
    if not hmac.compare_digest(mac, _mac(raw, secret)):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def message_id(token: str, domain: str, nonce: str) -> str:
    """``<token.nonce@domain>``: the nonce keeps two messages for one probe distinct."""
    return f"<{token}.{nonce}@{domain}>"


def find_tokens(text: str) -> list[str]:
    """Candidate tokens in ``text`` (headers or a decoded body), lower case, first seen first.

    Candidates are only shaped like tokens; verify each with :func:`read_token`.
    """
    seen: dict[str, None] = {}
    for match in _CANDIDATE.finditer(text):
        seen.setdefault(match.group(0).lower(), None)
    return list(seen)


def plus_address(address: str, token: str) -> str:
    """``user+token@domain`` for providers that deliver sub-addresses to ``user@domain``."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"not an email address: {address!r}")
    return f"{local}+{token}@{domain}"
