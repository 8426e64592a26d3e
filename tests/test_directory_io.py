"""Loading channels and personas: row-precise errors, loopback-only plain text, passwords."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprobe.directory import ChannelKind, TlsMode, TrackingPlacement
from mailprobe.directory_io import (
    is_loopback_host,
    load_directory,
    parse_email_address,
    read_channels,
    read_personas,
    resolve_password,
)
from mailprobe.errors import ConfigError, InputError
from tests.conftest import ROOT, WriteCsv

HEADER = ("单位", "渠道", "地址")
GOOD = [("广州市", "咨询", "zixun@hbj.gz.gd.test"), ("广州市", "投诉", "tousu@HBJ.GZ.gd.test"),
        ("番禺区", "complaint", "https://hbj.py.gd.test/hdjl/")]

# --- channels ----------------------------------------------------------------------------------


def test_channels_are_read_with_kinds_in_either_language(write_csv: WriteCsv) -> None:
    channels = read_channels(write_csv("c.csv", HEADER, GOOD))
    assert [c.kind for c in channels] == [ChannelKind.CONSULTATION, ChannelKind.COMPLAINT,
                                          ChannelKind.COMPLAINT]
    assert channels[1].address == "tousu@hbj.gz.gd.test"  # the domain is case-insensitive
    assert channels[2].form_url == "https://hbj.py.gd.test/hdjl/" and not channels[2].is_email
    assert [c.line for c in channels] == [2, 3, 4]


@pytest.mark.parametrize(("row", "column", "message"), [
    (("广州市", "咨询", "局长 <zixun@hbj.gz.gd.test>"), "地址", "bad address: contains whitespace"),
    (("广州市", "咨询", "<zixun@hbj.gz.gd.test>"), "地址", "bad address: only the bare address"),
    (("广州市", "咨询", "zixun@"), "地址", "bad address: no domain"),
    (("广州市", "咨询", "zixun@localhost"), "地址", "bad address: the domain has no dot"),
    (("广州市", "咨询", "zixun"), "地址", "bad address: needs exactly one @"),
    (("广州市", "咨询", "咨询@hbj.gz.gd.test"), "地址", "non-ASCII local part"),
    (("广州市", "咨询", "a..b@hbj.gz.gd.test"), "地址", "bad address: not a valid address"),
    (("广州市", "咨询", "a@hbj_gz.gd.test"), "地址", "not a valid domain"),
    (("广州市", "咨询", "www.hbj.gz.gd.test/hdjl"), "地址", "needs exactly one @"),
    (("广州市", "咨询", "ftp://hbj.gz.gd.test/"), "地址", "not an http(s) URL"),
    (("广州市", "咨询", ""), "地址", "bad address: empty"),
    (("广州市", "留言", "a@hbj.gz.gd.test"), "渠道", "unknown channel kind"),
    (("广州市", "咨询", "ZIXUN@hbj.gz.gd.test"), "地址", None),  # another local part: fine
    (("广州市", "consultation", "zixun@hbj.gz.gd.TEST"), "地址", "duplicate channel (as row 2)"),
    (("", "咨询", "a@hbj.gz.gd.test"), "单位", "empty agency name"),
])
def test_bad_channel_rows_name_file_row_and_column(write_csv: WriteCsv, row: tuple[str, ...],
                                                   column: str, message: str | None) -> None:
    path = write_csv("channels.csv", HEADER, [GOOD[0], row])
    if message is None:
        assert len(read_channels(path)) == 2
        return
    with pytest.raises(InputError) as info:
        read_channels(path)
    assert info.value.one_line().startswith(f"{path}: row 3, column {column}: ")
    assert message in info.value.one_line()


def test_unknown_agencies_and_missing_columns(write_csv: WriteCsv) -> None:
    path = write_csv("c.csv", HEADER, GOOD)
    with pytest.raises(InputError, match=r"row 4, column 单位: unknown agency 番禺区"):
        read_channels(path, agencies={"广州市"})
    with pytest.raises(InputError, match=r"header row: no address column"):
        read_channels(write_csv("d.csv", ("单位", "渠道", "邮箱"), GOOD))


def test_xlsx_rows_are_numbered_like_csv(tmp_path: Path) -> None:
    path = tmp_path / "channels.xlsx"
    pd.DataFrame([*GOOD, ("广州市", "监督", "not an address")], columns=list(HEADER)).to_excel(
        path, index=False)
    with pytest.raises(InputError, match=r"channels.xlsx: row 5, column 地址: bad address"):
        read_channels(path)


def test_internationalised_domains_are_stored_in_ascii() -> None:
    assert parse_email_address("xinxiang@环保.中国") == "xinxiang@xn--ruq168f.xn--fiqs8s"


@given(st.text(max_size=40))
def test_address_parsing_never_raises_anything_but_value_error(text: str) -> None:
    try:
        parsed = parse_email_address(text)
    except ValueError:
        return
    assert parse_email_address(parsed) == parsed and parsed.isascii()


# --- accounts and personas -------------------------------------------------------------------

ACCOUNT = """
[[accounts]]
id = "a1"
address = "chen@mail.test"
password_env = "MP_PW_A1"
smtp = {{ host = "{host}", port = 2525, tls = "{tls}" }}
imap = {{ host = "127.0.0.1", port = 1143, tls = "none" }}
"""
PERSONA = """
[[personas]]
id = "{id}"
name = "陈建国"
district = "广州市天河区"
account = "{account}"
tracking = {tracking}
[personas.details]
"职业" = "退休教师"
"""


def _toml(tmp_path: Path, host: str = "127.0.0.1", tls: str = "none", pid: str = "p1",
          account: str = "a1", tracking: str = '["message_id"]', extra: str = "") -> Path:
    path = tmp_path / "personas.toml"
    path.write_text(ACCOUNT.format(host=host, tls=tls)
                    + PERSONA.format(id="p0", account="a1", tracking='["body"]')
                    + PERSONA.format(id=pid, account=account, tracking=tracking) + extra,
                    encoding="utf-8")
    return path


@pytest.mark.parametrize(("host", "tls", "ok"), [
    ("127.0.0.1", "none", True), ("127.8.9.10", "none", True), ("::1", "none", True),
    ("localhost", "none", True), ("LOCALHOST.", "none", True),
    ("10.0.0.1", "none", False), ("smtp.qq.com", "none", False),
    ("127.example.com", "none", False), ("::ffff:8.8.8.8", "none", False),
    ("smtp.qq.com", "tls", True), ("smtp.qq.com", "starttls", True),
])
def test_plain_text_only_towards_loopback(tmp_path: Path, host: str, tls: str, ok: bool) -> None:
    path = _toml(tmp_path, host=host, tls=tls)
    if ok:
        assert read_personas(path).accounts[0].smtp.tls is TlsMode(tls)
        return
    with pytest.raises(ConfigError) as info:
        read_personas(path)
    assert info.value.one_line().startswith(f"{path}: accounts[1] (a1), key smtp.tls: plain text")


@pytest.mark.parametrize(("kw", "message"), [
    ({"account": "a9"}, r"personas\[2\] \(p1\), key account: no such account"),
    ({"pid": "p0"}, r"personas\[2\], key id: id p0 is used twice"),
    ({"tracking": '["plus_address"]'}, "a1 does not deliver plus-addresses"),
    ({"tracking": '["subject"]'}, "key tracking: unknown placement"),
    ({"tls": "ssl"}, "key smtp.tls: unknown TLS mode"),
    ({"extra": '[[accounts]]\nid = "a2"\npassword = "hunter2"\n'},
     r"accounts\[2\] \(a2\), key password: passwords never go in files"),
])
def test_persona_file_errors_name_the_entry_and_key(tmp_path: Path, kw: dict[str, str],
                                                    message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_personas(_toml(tmp_path, **kw))


def test_personas_refer_to_their_account(tmp_path: Path) -> None:
    found = read_personas(_toml(tmp_path))
    assert [p.account for p in found.personas] == ["a1", "a1"]
    assert found.personas[0].details == {"职业": "退休教师"}
    assert found.personas[0].tracking == (TrackingPlacement.BODY,)


def test_missing_password_names_the_variable(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    account = read_personas(_toml(tmp_path)).accounts[0]
    monkeypatch.delenv("MP_PW_A1", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_password(account)
    assert "account a1" in str(info.value) and "MP_PW_A1" in str(info.value)
    monkeypatch.setenv("MP_PW_A1", "s3cret")
    assert resolve_password(account) == "s3cret"
    assert "s3cret" not in repr(account)


def test_the_keyring_is_used_when_importable(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace(
        'password_env = "MP_PW_A1"', 'keyring_service = "mailprobe"'), encoding="utf-8")
    account = read_personas(path).accounts[0]
    fake = types.ModuleType("keyring")
    fake.get_password = lambda service, user: f"{service}/{user}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    assert resolve_password(account, env={}) == "mailprobe/chen@mail.test"
    monkeypatch.setitem(sys.modules, "keyring", None)  # not installed
    with pytest.raises(ConfigError, match="keyring"):
        resolve_password(account, env={})


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("[::1]")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("")


# --- the bundled samples -----------------------------------------------------------------------


def test_the_sample_directory_loads() -> None:
    d = load_directory(ROOT / "samples/2015/agencies.csv", ROOT / "samples/2015/channels.csv",
                       ROOT / "config/personas.toml")
    opened = {a.name for a in d.agencies if a.opened}
    assert len(opened) == 118 and {c.agency for c in d.channels} == opened
    level = {a.name: a.level.value for a in d.agencies}
    kinds = Counter((level[c.agency], c.kind) for c in d.channels)
    assert kinds[("county", ChannelKind.SUPERVISION)] == 96
    assert kinds[("city", ChannelKind.CONSULTATION)] == 22
    assert all(c.domain.endswith(".test") for c in d.channels if c.is_email)
    form_only = {c.agency for c in d.channels} - {c.agency for c in d.channels if c.is_email}
    assert 3 <= len(form_only) <= 10
    city_domain = {a.name: a.website.split("/")[2] for a in d.agencies
                   if a.level.value == "city" and a.website}
    on_city = {c.agency for c in d.channels
               if level[c.agency] == "county" and c.domain == city_domain.get(
                   next(a.city for a in d.agencies if a.name == c.agency))}
    assert len(on_city) >= 30  # county bureaus often share their city's mail domain
    assert 6 <= len(d.personas) <= 8 and 2 <= len(d.accounts) <= 3
    assert all(is_loopback_host(a.smtp.host) and a.password_env for a in d.accounts)


def test_the_sample_channels_are_what_the_script_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_channels_2015", ROOT / "scripts/make_channels_2015.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    expected = script.build(ROOT / "samples/2015/agencies.csv", 2015)
    assert (ROOT / "samples/2015/channels.csv").read_text(encoding="utf-8") == expected
