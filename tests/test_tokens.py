"""Signed probe tokens: round trips, tampering, and finding them where replies put them."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprobe.tokens import (
    MAC_BYTES,
    find_tokens,
    make_token,
    message_id,
    plus_address,
    read_token,
)

SECRET = b"round-2015-secret-0123456789abcdef"
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

probe_ids = st.text(min_size=1, max_size=60)
secrets = st.binary(min_size=1, max_size=64)
# What may stand right next to a token: anything a base32 letter cannot be.
separators = st.sampled_from([" ", "\n", "\r\n ", "<", ">", ".", "@", "+", "：", "（", "）",
                              "编号", "\t", "=", "/", ",", "0", "1", "8", "9", "-"])


def test_a_short_probe_id_gives_a_short_token() -> None:
    token = make_token("r1-0001", SECRET)
    assert MAC_BYTES * 8 >= 64
    assert len(token) <= 30
    assert token == token.lower() and set(token) <= set(ALPHABET)
    assert "=" not in token


def test_the_probe_id_does_not_show_and_neighbours_look_unrelated() -> None:
    a, b = make_token("r1-0001", SECRET), make_token("r1-0002", SECRET)
    assert a[:6] != b[:6]
    assert read_token(a, SECRET) == "r1-0001"
    assert read_token(b, SECRET) == "r1-0002"


@given(probe_ids, secrets)
def test_a_token_round_trips(probe_id: str, secret: bytes) -> None:
    token = make_token(probe_id, secret)
    assert read_token(token, secret) == probe_id
    assert read_token(token.upper(), secret) == probe_id  # mail systems may change the case


@given(probe_ids, secrets, secrets)
def test_another_secret_does_not_verify(probe_id: str, secret: bytes, other: bytes) -> None:
    if other != secret:
        assert read_token(make_token(probe_id, secret), other) is None


@given(probe_ids, st.data())
def test_tampering_any_character_breaks_verification(probe_id: str, data: st.DataObject) -> None:
    token = make_token(probe_id, SECRET)
    i = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != token[i]),
                            label="replacement")
    tampered = token[:i] + replacement + token[i + 1:]
    assert read_token(tampered, SECRET) is None


@given(probe_ids, st.integers(1, 5))
def test_a_shortened_or_lengthened_token_does_not_verify(probe_id: str, n: int) -> None:
    token = make_token(probe_id, SECRET)
    assert read_token(token[:-n], SECRET) is None
    assert read_token(token + "a" * n, SECRET) is None


@given(st.text(max_size=80))
def test_reading_garbage_never_raises(text: str) -> None:
    assert read_token(text, SECRET) is None


def test_an_empty_probe_id_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        make_token("", SECRET)


@given(probe_ids, st.text(max_size=200), separators, separators, st.text(max_size=200))
def test_find_tokens_finds_a_token_inside_arbitrary_text(
    probe_id: str, before: str, left: str, right: str, after: str
) -> None:
    token = make_token(probe_id, SECRET)
    found = find_tokens(before + left + token + right + after)
    assert token in found
    assert [c for c in found if read_token(c, SECRET) == probe_id] == [token]


@given(probe_ids, st.text(alphabet="0123456789abcdef", min_size=1, max_size=12))
def test_find_tokens_finds_a_token_inside_a_references_header(
    probe_id: str, nonce: str
) -> None:
    token = make_token(probe_id, SECRET)
    ours = message_id(token, "mail.example.cn", nonce)
    raw = (
        "From: =?utf-8?b?5bm/5bee5biC546v5aKD5L+d5oqk5bGA?= <hbj@gz.gd.test>\r\n"
        "Subject: =?utf-8?b?5Zue5aSN?=\r\n"
        f"In-Reply-To: {ours}\r\n"
        "References: <CAF=zq8N2x@mail.gmail.com>\r\n"
        f" <20151103101500.A1B2C3@hbj.gz.gd.test>\r\n {ours}\r\n"
        "\r\n"
        "body\r\n"
    ).encode()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for header in ("References", "In-Reply-To"):
        found = find_tokens(str(msg[header]))
        assert [c for c in found if read_token(c, SECRET) == probe_id] == [token]


def test_find_tokens_in_a_quoted_body_and_a_plus_address() -> None:
    token = make_token("r1-0042", SECRET)
    quoted = f"您好，来信收悉。\n\n> 谢谢！\n>\n> （编号 {token.upper()}）\n"
    assert find_tokens(quoted) == [token]
    reply_to = plus_address("chenlx@mail.example.cn", token)
    assert reply_to == f"chenlx+{token}@mail.example.cn"
    assert find_tokens(f"To: =?utf-8?b?6ZmI?= <{reply_to}>") == [token]


def test_message_id_and_plus_address_shapes() -> None:
    assert message_id("abc", "mail.example.cn", "0f3a") == "<abc.0f3a@mail.example.cn>"
    with pytest.raises(ValueError, match="not an email address"):
        plus_address("no-at-sign", "abc")
