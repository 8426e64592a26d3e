"""Composed probes parsed back as a receiving mail system would: headers, body, tracking."""

from __future__ import annotations

import csv
import email
import email.policy
import email.utils
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailprobe.compose import ComposedProbe, ProbeKind, TemplateSet, compose, render
from mailprobe.directory import (
    Account,
    Channel,
    ChannelKind,
    Endpoint,
    Persona,
    ProbeSpec,
    TlsMode,
    TrackingPlacement,
)
from mailprobe.errors import ConfigError
from mailprobe.probe_details import DetailRequest, campaign_details, details_for, place_key
from mailprobe.tokens import find_tokens, read_token

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"round-2015-secret-0123456789abcdef"
CST = timezone(timedelta(hours=8))
WHEN = datetime(2015, 11, 3, 10, 15, 42, tzinfo=CST)
ALL = tuple(TrackingPlacement)


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return TemplateSet.load()


def account(plus: bool = False) -> Account:
    loop = Endpoint("127.0.0.1", 2525, TlsMode.NONE)
    return Account(id="acc-lin", address="linxy2015@mail.example.cn", user="linxy2015",
                   smtp=loop, imap=loop, plus_addressing=plus)


def persona(tracking: tuple[TrackingPlacement, ...] = (TrackingPlacement.MESSAGE_ID,),
            name: str = "林晓燕") -> Persona:
    return Persona(id="p-lin", name=name, district="茂南区", account="acc-lin",
                   details={"age": "36"}, tracking=tracking)


def spec(template: str = "noise_night_2", probe_id: str = "r1-0007",
         kind: ChannelKind = ChannelKind.COMPLAINT, address: str | None = "hbj@mm.gd.test",
         agency: str = "茂名市", city: str = "茂名市") -> ProbeSpec:
    channel = Channel(agency=agency, kind=kind, address=address,
                      form_url=None if address else "https://hbj.mm.gd.test/xf")
    return ProbeSpec(probe_id=probe_id, round="2015-r1", agency=agency, channel=channel,
                     persona="p-lin", template=template, send_at=WHEN.astimezone(UTC),
                     details=details_for(probe_id, agency, city, WHEN.date(), 2015))


Compose = Callable[..., ComposedProbe]


@pytest.fixture
def make(templates: TemplateSet) -> Compose:
    def run(s: ProbeSpec | None = None, p: Persona | None = None, a: Account | None = None,
            date: datetime = WHEN) -> ComposedProbe:
        return compose(s or spec(), p or persona(), a or account(), "茂名市环境保护局",
                       templates, SECRET, date)
    return run


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body_of(msg: EmailMessage) -> str:
    content = msg.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_headers_decode_to_what_was_composed(make: Compose) -> None:
    probe = make()
    msg = parse(probe.raw)
    sender = msg["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("林晓燕", "linxy2015@mail.example.cn")
    assert msg["To"].addresses[0].addr_spec == "hbj@mm.gd.test"
    assert str(msg["Subject"]) == probe.subject
    assert probe.subject.startswith("投诉") and "夜间施工噪声" in probe.subject
    assert msg["Date"].datetime == WHEN
    assert msg["Date"].datetime.utcoffset() == timedelta(hours=8)
    assert msg["Message-ID"] == probe.message_id
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "base64"


def test_the_body_decodes_to_the_letter(make: Compose) -> None:
    probe = make()
    body = body_of(parse(probe.raw))
    assert body == probe.text
    details = spec().details
    assert details["street"] in body and details["community"] in body
    assert body.startswith("尊敬的茂名市环境保护局：")
    assert "林晓燕" in body


def test_the_wire_form_is_crlf_ascii_with_short_lines(make: Compose) -> None:
    raw = make(p=persona(ALL), a=account(plus=True)).raw
    assert raw.isascii()
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?b?" in head and "林".encode() not in raw


def test_the_message_id_token_verifies_with_the_secret_only(make: Compose) -> None:
    probe = make()
    assert re.fullmatch(rf"<{probe.token}\.[0-9a-f]{{8}}@mail\.example\.cn>", probe.message_id)
    found = find_tokens(str(parse(probe.raw)["Message-ID"]))
    assert [read_token(c, SECRET) for c in found if read_token(c, SECRET)] == ["r1-0007"]
    assert all(read_token(c, b"another secret") is None for c in found)


def test_without_message_id_tracking_the_message_id_is_neutral_but_stored(make: Compose) -> None:
    probe = make(p=persona((TrackingPlacement.BODY,)))
    header = str(parse(probe.raw)["Message-ID"])
    assert header == probe.message_id
    assert re.fullmatch(r"<[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
                        r"@mail\.example\.cn>", header)
    assert probe.token not in header
    assert not [c for c in find_tokens(header) if read_token(c, SECRET)]


def test_forbidden_headers_are_never_written(make: Compose) -> None:
    for tracking in ((), ALL, (TrackingPlacement.BODY,)):
        msg = parse(make(p=persona(tracking), a=account(plus=True)).raw)
        for name in ("Auto-Submitted", "Precedence", "X-Auto-Response-Suppress"):
            assert name not in msg
        assert not [k for k in msg if k.lower().startswith("x-")]


@pytest.mark.parametrize(("placements", "plus", "expected"), [
    ((TrackingPlacement.PLUS_ADDRESS,), True, True),
    ((TrackingPlacement.PLUS_ADDRESS,), False, False),
    ((TrackingPlacement.MESSAGE_ID,), True, False),
    ((), True, False),
])
def test_reply_to_only_when_the_persona_and_the_provider_allow_it(
    make: Compose, placements: tuple[TrackingPlacement, ...], plus: bool, expected: bool
) -> None:
    probe = make(p=persona(placements), a=account(plus=plus))
    msg = parse(probe.raw)
    if expected:
        reply_to = msg["Reply-To"].addresses[0]
        assert reply_to.addr_spec == f"linxy2015+{probe.token}@mail.example.cn"
        assert reply_to.display_name == "林晓燕"
        assert probe.reply_to == reply_to.addr_spec
        assert read_token(find_tokens(reply_to.addr_spec)[-1], SECRET) == "r1-0007"
    else:
        assert "Reply-To" not in msg and probe.reply_to is None


def test_the_body_reference_line_only_with_body_tracking(make: Compose) -> None:
    plain = make(p=persona((TrackingPlacement.MESSAGE_ID,)))
    tagged = make(p=persona((TrackingPlacement.BODY,)))
    assert plain.token not in body_of(parse(plain.raw))
    body = body_of(parse(tagged.raw))
    assert body.endswith(f"\n（编号 {tagged.token}）\n")
    assert body.removesuffix(f"\n（编号 {tagged.token}）\n") == plain.text


def test_no_ticket_tag_in_the_subject(make: Compose) -> None:
    probe = make(p=persona(ALL), a=account(plus=True))
    assert probe.token not in probe.subject
    assert find_tokens(probe.subject) == []
    assert not re.search(r"[\[#【]|编号|No\.", probe.subject)


def test_composing_is_deterministic_and_the_date_changes_the_message_id(make: Compose) -> None:
    first, again = make(), make()
    assert first == again
    later = make(date=WHEN + timedelta(days=1))
    assert later.message_id != first.message_id and later.token == first.token


def test_an_ascii_subject_and_a_long_name_are_written_correctly(
    templates: TemplateSet, tmp_path: Path
) -> None:
    (tmp_path / "t.txt.j2").write_text(
        "{% block subject %}PM2.5 data for {{ street }}{% endblock %}\n"
        "{% block body %}\nHello from {{ community }}.\n{% endblock %}\n", encoding="utf-8")
    (tmp_path / "index.toml").write_text(
        '[[template]]\nid = "t"\nkind = "consultation"\ntopic = "env_data"\ntitle = "x"\n'
        'file = "t.txt.j2"\nvariables = ["community", "street"]\n', encoding="utf-8")
    mine = TemplateSet.load(tmp_path)
    long_name = "欧阳" + "慧" * 30
    s = replace(spec(), template="t",
                details={"street": "Binjiang Rd", "community": "Riverside Garden"},
                channel=Channel("茂名市", ChannelKind.CONSULTATION, "hbj@mm.gd.test"))
    probe = compose(s, persona(name=long_name), account(), "x", mine, SECRET, WHEN)
    assert b"\r\nSubject: PM2.5 data for Binjiang Rd\r\n" in probe.raw
    msg = parse(probe.raw)
    assert msg["From"].addresses[0].display_name == long_name
    assert body_of(msg) == "Hello from Riverside Garden.\n"


def test_a_web_form_channel_gets_text_but_no_message(
    make: Compose, templates: TemplateSet
) -> None:
    form = spec(address=None)
    with pytest.raises(ConfigError, match=r"is a web form.*use compose\.render"):
        make(s=form)
    subject, text = render(form, persona((TrackingPlacement.BODY,)), "茂名市环境保护局",
                           templates, SECRET)
    assert subject and form.details["community"] in text
    assert read_token(find_tokens(text)[-1], SECRET) == "r1-0007"


def test_wrong_inputs_are_refused(make: Compose) -> None:
    with pytest.raises(ConfigError, match="writes from account 'other'"):
        make(p=replace(persona(), account="other"))
    with pytest.raises(ValueError, match="aware datetime"):
        make(date=datetime(2015, 11, 3, 10, 15))


def read_agencies() -> list[tuple[str, str]]:
    with (ROOT / "samples" / "2015" / "agencies.csv").open(encoding="utf-8") as f:
        return [(row["单位"], row["所属地市"]) for row in csv.DictReader(f)]


def test_five_thousand_probes_to_233_agencies_are_all_different(
    templates: TemplateSet,
) -> None:
    agencies = read_agencies()
    assert len(agencies) == 233
    wordings = templates.templates
    send = date(2015, 11, 2)
    plan = [(f"2015-r1-{i:05d}", *agencies[i % len(agencies)], wordings[i % len(wordings)])
            for i in range(5000)]
    details = campaign_details(
        [DetailRequest(pid, agency, city, send + timedelta(days=i % 10))
         for i, (pid, agency, city, _) in enumerate(plan)], seed=2015)
    pairs, bodies = set(), set()
    for pid, agency, city, wording in plan:
        kind = (ChannelKind.CONSULTATION if wording.kind is ProbeKind.CONSULTATION
                else ChannelKind.COMPLAINT)
        s = ProbeSpec(probe_id=pid, round="2015-r1", agency=agency,
                      channel=Channel(agency, kind, "hbj@example.test"), persona="p-lin",
                      template=wording.id, send_at=WHEN, details=details[pid])
        probe = compose(s, persona(), account(), f"{city}环境保护局", templates, SECRET, WHEN)
        pairs.add(place_key(details[pid]))
        bodies.add(probe.text)
    assert len(pairs) == 5000
    assert len(bodies) == 5000
