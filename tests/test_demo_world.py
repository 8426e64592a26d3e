"""The demo's simulated agencies: their decisions and the mail they write, without servers."""

from __future__ import annotations

import base64
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, time
from email.utils import format_datetime
from zoneinfo import ZoneInfo

import pytest

from mailprobe.classify import MessageKind, classify
from mailprobe.decode import parse_message
from mailprobe.demo_letters import Client, Original, Reply, build_reply
from mailprobe.demo_world import (
    WORKING_DAYS,
    Behaviour,
    ChannelFate,
    Delivery,
    Letter,
    World,
    build_world,
    form_letter,
    read_letter,
    respond,
)
from mailprobe.directory_io import Directory, load_directory
from mailprobe.workdays import WorkCalendar, default_calendar
from tests.conftest import ROOT

CST = ZoneInfo("Asia/Shanghai")
SENT = datetime(2015, 11, 3, 10, 21, 7, tzinfo=CST)  # a Tuesday, in office hours
BODY = ("您好！我住在长安北路126号江南大厦14栋，楼下的聚福肠粉店油烟直排，10月25日晚上九点多"
        "整栋楼都是油烟味。请问这种情况环保局管不管？\n\n附近居民")
MESSAGE_ID = "<aiosimhjrqhra5oe5uvudcjeoyb6iwge.81f76dca@mail.minyi.test>"


@pytest.fixture(scope="module")
def directory() -> Directory:
    base = ROOT / "samples" / "2015"
    return load_directory(base / "agencies.csv", base / "channels.csv",
                          ROOT / "config" / "personas.toml")


@pytest.fixture(scope="module")
def world(directory: Directory) -> World:
    return build_world([(a.name, a.website) for a in directory.agencies], directory.channels,
                       2015)


@pytest.fixture(scope="module")
def calendar() -> WorkCalendar:
    return default_calendar()


def original(to: str, *, at: datetime = SENT, subject: str = "楼下餐馆油烟直排，请问怎么处理",
             message_id: str = MESSAGE_ID) -> Original:
    headers = (f"From: =?utf-8?b?{base64.b64encode('黄志强'.encode()).decode()}?= "
               f"<huang.zq@mail.minyi.test>\r\nTo: {to}\r\nMessage-ID: {message_id}\r\n"
               f"Date: {format_datetime(at)}\r\n").encode()
    return Original("黄志强", "huang.zq+aiosimhjrqhra5oe5uvudcjeoyb6iwge@mail.minyi.test", to,
                    subject, BODY, at, message_id, headers)


def letters_to_every_channel(world: World, directory: Directory) -> list[Letter]:
    """One letter to each e-mail channel, on consecutive working days of round 1."""
    out = []
    for i, channel in enumerate(c for c in directory.channels if c.address):
        at = datetime(2015, 11, 2 + i % 5, 9 + i % 8, (7 * i) % 60, tzinfo=CST)
        out.append(Letter(channel.agency, original(channel.address or "", at=at,
                                                   message_id=f"<p{i}.x@mail.minyi.test>")))
    return out


def kind_of(d: Delivery | bytes, sent_id: str = MESSAGE_ID) -> MessageKind:
    raw = d.raw if isinstance(d, Delivery) else d
    return classify(parse_message(raw), sent_message_ids=[sent_id]).kind


# --- the world -----------------------------------------------------------------------------------


def test_every_behaviour_and_both_channel_fates_appear(world: World) -> None:
    behaviours = Counter(p.behaviour for p in world.profiles.values())
    assert set(behaviours) == set(Behaviour)
    assert behaviours[Behaviour.PROMPT] > behaviours[Behaviour.OUT_OF_OFFICE]
    fates = Counter(world.fates.values())
    assert fates[ChannelFate.REFUSED] >= 1 and fates[ChannelFate.BOUNCED] >= 1
    assert sum(fates.values()) <= len(world.owners) * 0.05  # a few, not many
    assert {p.client for p in world.profiles.values()} >= {
        Client.FOXMAIL, Client.QQMAIL, Client.OUTLOOK, Client.COREMAIL}
    assert all(p.domain.endswith(".test") for p in world.profiles.values())


def test_the_same_seed_builds_the_same_world(world: World, directory: Directory) -> None:
    again = build_world([(a.name, a.website) for a in directory.agencies], directory.channels,
                        2015)
    other = build_world([(a.name, a.website) for a in directory.agencies], directory.channels,
                        7)
    assert again == world
    assert other.profiles != world.profiles


def test_refused_channels_get_550_at_rcpt(world: World) -> None:
    refused = next(a for a, f in world.fates.items() if f is ChannelFate.REFUSED)
    answer = world.refusal(refused.upper())
    assert answer is not None and answer.startswith("550 5.1.1")
    delivered = next(a for a in world.owners if a not in world.fates)
    assert world.refusal(delivered) is None


def test_answers_are_reproducible_byte_for_byte(world: World, calendar: WorkCalendar) -> None:
    letter = Letter("广州市", original("tousu@hbj.gz.gd.test"))
    first, second = respond(world, letter, calendar), respond(world, letter, calendar)
    assert first == second


def test_every_message_classifies_as_meant(world: World, directory: Directory,
                                           calendar: WorkCalendar) -> None:
    deliveries = []
    for letter in letters_to_every_channel(world, directory):
        for d in respond(world, letter, calendar):
            deliveries.append((d, letter.original.message_id))
    kinds = Counter(d.kind for d, _ in deliveries)
    assert set(kinds) == {"reply", "acknowledgement", "auto_reply", "bounce"}
    assert kinds["reply"] > kinds["acknowledgement"] > kinds["bounce"]
    for d, sent_id in deliveries:
        assert kind_of(d, sent_id).value == d.kind, (d.agency, d.behaviour, d.kind)
    assert {d.folder for d, _ in deliveries} == {"INBOX", "Junk"}
    assert {d.behaviour for d, _ in deliveries} >= {b.value for b in Behaviour} - {"never"}


def test_answers_come_in_office_hours_within_their_behaviours_days(
        world: World, directory: Directory, calendar: WorkCalendar) -> None:
    late = prompt = 0
    for letter in letters_to_every_channel(world, directory):
        for d in respond(world, letter, calendar):
            if d.kind != "reply":
                assert 0 < (d.at - letter.original.at).total_seconds() <= 600  # automatic
                continue
            local = d.at.astimezone(CST)
            assert calendar.is_working_day(local.date())
            assert time(8, 40) <= local.time() <= time(17, 50)
            days = calendar.between(letter.original.at, d.at).working_days
            low, high = WORKING_DAYS[Behaviour(d.behaviour)]
            assert low <= days <= high, (d.behaviour, days)
            late += days > 15
            prompt += days <= 5
    assert late and prompt > late


def test_a_bounced_channel_returns_a_dsn_with_our_message(world: World,
                                                          calendar: WorkCalendar) -> None:
    bounced = next(a for a, f in world.fates.items() if f is ChannelFate.BOUNCED)
    seen = set()
    for minute in range(12):  # both dialects: Postfix's report and the 系统退信
        letter = Letter(world.owners[bounced], original(
            bounced, at=SENT.replace(minute=minute)))
        (d,) = respond(world, letter, calendar)
        parsed = parse_message(d.raw)
        c = classify(parsed, sent_message_ids=[MESSAGE_ID])
        assert c.kind is MessageKind.BOUNCE and c.bounce_type is not None
        assert c.bounce_type.value == "hard"
        assert d.to == letter.original.reply_to and d.folder == "INBOX"
        seen.add(parsed.subject)
    assert seen == {"Undelivered Mail Returned to Sender", "系统退信"}


# --- the messages --------------------------------------------------------------------------------


@pytest.mark.parametrize("client", list(Client))
def test_each_client_writes_a_reply_the_pipeline_reads(client: Client) -> None:
    o = original("tousu@hbj.gz.gd.test")
    if client is Client.WEBFORM:
        o = replace(o, message_id="", headers=b"", to="https://hbj.gz.gd.test/hdjl/")
    text = ("黄志强：\n    您好！经查，该店油烟净化设施未正常使用，我局已责令整改。\n"
            "    特此答复。\n")
    raw = build_reply(random.Random(1), Reply(
        client, "tousu@hbj.gz.gd.test", "广州市环境保护局",
        datetime(2015, 11, 6, 15, 2, tzinfo=CST)), o, text)
    parsed = parse_message(raw)
    assert "\ufffd" not in parsed.text and "经查" in parsed.text
    assert "聚福肠粉店" in parsed.text  # the question is quoted: the matcher's evidence
    c = classify(parsed, sent_message_ids=[MESSAGE_ID])
    assert c.kind is MessageKind.REPLY and "经查" in c.new_text and "聚福" not in c.new_text
    threaded = client in (Client.OUTLOOK, Client.COREMAIL)
    assert (parsed.in_reply_to == MESSAGE_ID) is threaded
    charsets = {"foxmail": b"GB2312", "qqmail": b"gb18030", "outlook": b"gb2312",
                "coremail": b"GBK", "staff": b"UTF-8", "webform": b"GBK"}
    assert b"charset=\"" + charsets[client.value] in raw or \
        b"charset=" + charsets[client.value] in raw


def test_gbk_replies_decode_with_their_chinese_intact() -> None:
    o = replace(original("xinxiang@hbj.fs.gd.test"), subject="咨询：堃镕䶮三个生僻字的小区")
    raw = build_reply(random.Random(3), Reply(
        Client.FOXMAIL, "xinxiang@hbj.fs.gd.test", "佛山市环境保护局", SENT), o,
        "您好！经查，答复如下。\n")
    parsed = parse_message(raw)
    assert parsed.subject == "回复: 咨询：堃镕䶮三个生僻字的小区"
    assert "\ufffd" not in parsed.text and "江南大厦" in parsed.text
    assert b"Foxmail" in raw and b"In-Reply-To" not in raw


def test_a_probe_is_read_as_its_agency_sees_it(world: World) -> None:
    to = next(a for a in world.owners if a not in world.fates)
    subject = base64.b64encode("关于油烟的咨询".encode()).decode()
    raw = (f"From: =?utf-8?b?{base64.b64encode('黄志强'.encode()).decode()}?= "
           f"<huang.zq@mail.minyi.test>\r\nTo: {to}\r\nSubject: =?utf-8?b?{subject}?=\r\n"
           f"Message-ID: {MESSAGE_ID}\r\nReply-To: <huang.zq+tok@mail.minyi.test>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(
        BODY.encode())
    letter = read_letter(world, raw, to, SENT)
    assert letter is not None and letter.agency == world.owners[to] and not letter.by_form
    o = letter.original
    assert (o.sender_name, o.reply_to, o.subject) == ("黄志强", "huang.zq+tok@mail.minyi.test",
                                                      "关于油烟的咨询")
    assert o.body == BODY and o.message_id == MESSAGE_ID
    assert o.headers.startswith(b"From:") and o.headers.endswith(b"\r\n")
    assert read_letter(world, raw, "nobody@elsewhere.test", SENT) is None


def test_web_form_letters_are_answered_by_mail_never_by_an_auto_reply(
        world: World, calendar: WorkCalendar) -> None:
    kinds: Counter[str] = Counter()
    for day in range(2, 14):
        letter = form_letter("东莞市第28镇区", "https://hbj.dg28.gd.test/hdjl/",
                             "chen.jianguo@mail.minyi.test", "陈建国", "半夜还在施工", BODY,
                             datetime(2015, 11, day, 10, 0, tzinfo=CST))
        for d in respond(world, letter, calendar):
            kinds[d.kind] += 1
            assert d.to == "chen.jianguo@mail.minyi.test"
            assert kind_of(d).value == d.kind
            if d.kind == "reply":
                assert parse_message(d.raw).from_[0].addr.startswith("xfxt@")
    assert "auto_reply" not in kinds and "bounce" not in kinds and kinds["reply"]
