"""Matching messages to probes: each rule, precedence, refusals, review, first replies."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprobe.errors import ConfigError, InputError
from mailprobe.match import (
    Attached,
    IncomingMessage,
    MatchResult,
    ProbeIndex,
    Rule,
    SentProbe,
    attached,
    first_replies,
    match_message,
    match_messages,
)
from mailprobe.probe_details import details_for, fingerprints
from mailprobe.tokens import make_token, message_id

SECRET = b"test-secret-for-matching"
SENT = datetime(2015, 11, 2, 2, 30, tzinfo=UTC)
LATER = SENT + timedelta(days=3)


def probe(
    pid: str,
    *,
    agency: str = "广州市环保局",
    account: str = "acct-li",
    channel: str | None = "hbj@gz.gd.test",
    sent: datetime = SENT,
    token: bool = True,
    mid: str | None = None,
    fps: tuple[str, ...] = (),
    addresses: tuple[str, ...] = (),
    domains: tuple[str, ...] = ("gz.gd.test",),
    round_: str = "r1",
) -> SentProbe:
    tok = make_token(pid, SECRET) if token else None
    if mid is None:
        mid = message_id(tok, "mailprobe.test", "n1") if tok else f"<{pid}.x@mailprobe.test>"
    return SentProbe(pid, round_, agency, "persona-li", account, channel, sent, mid, tok, fps,
                     addresses or ((channel,) if channel else ()), domains)


def msg(key: str = "m1", *, account: str = "acct-li", at: datetime = LATER,
        sender: str = "someone@elsewhere.example", **fields: Any) -> IncomingMessage:
    return IncomingMessage(key=key, account=account, received_at=at, from_address=sender,
                           **fields)


def assert_attached(result: MatchResult, probe_id: str, rule: Rule) -> None:
    assert (result.probe_id, result.rule, result.needs_review) == (probe_id, rule, False), result
    assert result.guesses[0].probe_id == probe_id
    assert result.tried[-1] == rule


def assert_review(result: MatchResult) -> None:
    assert result.probe_id is None and result.needs_review, result


# --- the token rules -------------------------------------------------------------------------

def test_token_in_in_reply_to() -> None:
    a, b = probe("p-a"), probe("p-b", agency="深圳市人居环境委", channel="hb@sz.gd.test")
    result = match_message(msg(in_reply_to=a.message_id or ""), [a, b], SECRET)
    assert_attached(result, "p-a", Rule.TOKEN_IN_REPLY_TO)
    assert result.confidence == 1.0
    assert "In-Reply-To" in result.evidence and "p-a" in result.evidence


def test_token_deep_in_a_references_chain() -> None:
    a = probe("p-a")
    chain = (a.message_id or "", *tuple(f"<reply{i}.{i * 7}@mail.gz.gd.test>" for i in range(6)))
    result = match_message(msg(references=chain), [a, probe("p-b")], SECRET)
    assert_attached(result, "p-a", Rule.TOKEN_IN_REPLY_TO)
    assert "第 1 个，共 7 个" in result.evidence


def test_token_survives_a_client_that_changes_case_and_folds_the_header() -> None:
    a = probe("Probe-Upper-7")
    token = a.token or ""
    # One client upper-cases the whole header, another folds inside the id.
    folded = f"<{token[:9].upper()}\r\n {token[9:].upper()}.N1@MAILPROBE.TEST>"
    result = match_message(msg(references=("<x@y>", folded)), [a], SECRET)
    assert_attached(result, "Probe-Upper-7", Rule.TOKEN_IN_REPLY_TO)


def test_token_in_a_plus_address() -> None:
    a = probe("p-a")
    to = (f"李明 <liming+{a.token}@mail.test>", "other@mail.test")
    assert_attached(match_message(msg(to_addresses=to), [a, probe("p-b")], SECRET),
                    "p-a", Rule.TOKEN_PLUS_ADDRESS)


def test_token_in_quoted_body_even_when_the_quote_wraps_it() -> None:
    a = probe("probe-with-a-long-id-2015-r1-0042")
    token = a.token or ""
    quoted = f"> 您好，我想咨询一个问题。\n> 编号：{token[:20]}\n> {token[20:]}\n> 谢谢"
    result = match_message(msg(quoted_text=quoted, new_text="已转相关科室办理。"), [a], SECRET)
    assert_attached(result, a.probe_id, Rule.TOKEN_IN_BODY)
    assert "引用的原文" in result.evidence


def test_token_only_in_the_full_text_of_a_forward() -> None:
    a = probe("p-a")
    result = match_message(msg(full_text=f"---- 转发邮件 ----\n参考编号 {a.token}"), [a], SECRET)
    assert_attached(result, "p-a", Rule.TOKEN_IN_BODY)


def test_forged_or_corrupted_token_is_evidence_of_nothing() -> None:
    a = probe("p-a")
    forged = make_token("p-a", b"someone-else's-secret")
    token = a.token or ""
    corrupted = token[:-1] + ("a" if token[-1] != "a" else "b")
    for bad in (forged, corrupted):
        for fields in ({"in_reply_to": f"<{bad}.n1@mailprobe.test>"},
                       {"new_text": f"编号 {bad}"},
                       {"to_addresses": (f"li+{bad}@mail.test",)}):
            result = match_message(msg(kind="unrelated", **fields), [a], SECRET)
            assert result.probe_id is None and result.guesses == (), (bad, fields)


def test_a_token_beats_a_contradicting_address() -> None:
    a = probe("p-a")
    b = probe("p-b", agency="深圳市人居环境委", channel="hb@sz.gd.test", domains=("sz.gd.test",))
    result = match_message(msg(sender="hb@sz.gd.test", in_reply_to=a.message_id or ""),
                           [a, b], SECRET)
    assert_attached(result, "p-a", Rule.TOKEN_IN_REPLY_TO)
    assert Rule.MAILBOX_AND_ADDRESS not in result.tried


def test_a_token_of_a_probe_not_given_goes_to_review() -> None:
    other_round = probe("r0-p-a")
    a = probe("p-a")
    result = match_message(msg(sender="hbj@gz.gd.test", in_reply_to=other_round.message_id or ""),
                           [a], SECRET)
    assert_review(result)
    assert result.rule is Rule.TOKEN_IN_REPLY_TO
    assert "r0-p-a" in result.evidence and "不在本次匹配的来信之中" in result.evidence
    # The address rule would have chosen p-a, but a signed token said otherwise.
    assert [g.probe_id for g in result.guesses] == ["r0-p-a", "p-a"]


# --- Message-IDs and bounces -----------------------------------------------------------------

def test_our_message_id_without_a_token_domain_case_ignored() -> None:
    a = probe("p-a", token=False, mid="<20151102023000.Ab3@MailProbe.Test>")
    b = probe("p-b", token=False, mid="<20151102023000.Zz9@mailprobe.test>")
    result = match_message(msg(references=("<20151102023000.Ab3@mailprobe.test>",)), [a, b],
                           SECRET)
    assert_attached(result, "p-a", Rule.OUR_MESSAGE_ID)
    assert result.confidence == pytest.approx(0.95)


def test_our_message_id_lowercased_whole_still_found_but_weaker() -> None:
    a = probe("p-a", token=False, mid="<20151102.AbC@mailprobe.test>")
    result = match_message(msg(in_reply_to="<20151102.abc@mailprobe.test>"), [a], SECRET)
    assert_attached(result, "p-a", Rule.OUR_MESSAGE_ID)
    assert "忽略大小写" in result.evidence and result.confidence < 0.97


def test_bounce_through_the_returned_message_id() -> None:
    a = probe("p-a", token=False, mid="<a1@mailprobe.test>")
    b = probe("p-b", token=False, mid="<b1@mailprobe.test>", channel="hb@sz.gd.test")
    bounce = msg(kind="bounce", sender="MAILER-DAEMON@mx.gz.gd.test",
                 returned_message_ids=("<b1@mailprobe.test>",),
                 returned_recipients=("hbj@gz.gd.test",))
    assert_attached(match_message(bounce, [a, b], SECRET), "p-b", Rule.BOUNCE_RETURNED_MESSAGE)


def test_bounce_through_the_returned_recipient_alone() -> None:
    a = probe("p-a", channel="old-box@gz.gd.test")
    b = probe("p-b", channel="hb@sz.gd.test", agency="深圳市人居环境委")
    bounce = msg(kind="bounce", sender="postmaster@mail.test", at=SENT + timedelta(minutes=5),
                 returned_recipients=("<Old-Box@gz.gd.test>",))
    result = match_message(bounce, [a, b], SECRET)
    assert_attached(result, "p-a", Rule.BOUNCE_RETURNED_MESSAGE)
    assert "old-box@gz.gd.test" in result.evidence


def test_bounce_that_refers_to_nothing_of_ours_matches_nothing() -> None:
    a = probe("p-a")
    # From the agency's own domain, to our mailbox: still not a reply from the agency.
    bounce = msg(kind="bounce", sender="postmaster@gz.gd.test",
                 returned_message_ids=("<spam123@botnet.example>",),
                 returned_recipients=("nobody@gz.gd.test",))
    result = match_message(bounce, [a], SECRET)
    assert (result.probe_id, result.needs_review, result.rule) == (None, False, Rule.NONE)
    assert Rule.MAILBOX_AND_DOMAIN not in result.tried


# --- quoted details --------------------------------------------------------------------------

def detailed_probes(n: int, **kw: Any) -> list[SentProbe]:
    made = []
    for i in range(n):
        pid = f"r1-{i:04d}"
        details = details_for(pid, "广州市环保局", "广州", date(2015, 11, 2), seed=7)
        made.append(probe(pid, token=False, fps=fingerprints(details), **kw))
    return made


def letter(p: SentProbe) -> str:
    address, community = p.fingerprints[0], p.fingerprints[2]
    return (f"您好！我住在{address}附近的{community}，最近晚上噪音很大，"
            "请问该向哪个部门反映？谢谢。")


def test_quoted_details_with_two_fingerprints() -> None:
    probes = detailed_probes(20)
    target = probes[13]
    reply = msg(sender="xinfang@foxmail.com", new_text="您好，您的问题已转交属地环保所处理。",
                quoted_text="------------------ 原始邮件 ------------------\n" + letter(target))
    result = match_message(reply, probes, SECRET)
    assert_attached(result, target.probe_id, Rule.QUOTED_DETAILS)
    assert target.fingerprints[0] in result.evidence


def test_a_restated_address_in_the_reply_counts_too() -> None:
    probes = detailed_probes(5)
    target = probes[2]
    reply = msg(new_text=f"关于您反映的{target.fingerprints[0]}、{target.fingerprints[2]}问题，"
                         "我局已安排执法人员核查。")
    assert_attached(match_message(reply, probes, SECRET), target.probe_id, Rule.QUOTED_DETAILS)


def test_a_detail_shared_by_probes_is_discounted() -> None:
    a = probe("p-a", token=False, fps=("建设路", "翠湖花园"))
    b = probe("p-b", token=False, fps=("建设路", "丽景小区"), channel="hb@sz.gd.test")
    reply = msg(quoted_text="> 我家在建设路附近，最近很吵。")
    result = match_message(reply, [a, b], SECRET)
    assert_review(result)
    assert {g.probe_id for g in result.guesses} == {"p-a", "p-b"}
    assert "2 封来信共有" in result.guesses[0].reasons[0]


def test_one_short_detail_is_not_enough_but_one_long_rare_one_is() -> None:
    a = probe("p-a", token=False, fps=("荔枝路", "鑫达五金加工坊"), channel=None, addresses=())
    short = match_message(msg(quoted_text="> 荔枝路那边"), [a], SECRET)
    assert_review(short)
    assert short.confidence < 0.8
    long = match_message(msg(quoted_text="> 鑫达五金加工坊每天晚上开工"), [a], SECRET)
    assert_attached(long, "p-a", Rule.QUOTED_DETAILS)


def test_a_nested_detail_is_one_detail_not_two() -> None:
    a = probe("p-a", token=False, fps=("翠湖花园3栋", "翠湖花园"), channel=None, addresses=())
    result = match_message(msg(quoted_text="> 翠湖花园"), [a], SECRET)
    assert result.probe_id is None
    # "翠湖花园3栋" is long and rare on its own; "翠湖花园" inside it adds nothing.
    both = match_message(msg(quoted_text="> 翠湖花园3栋"), [a], SECRET)
    assert_attached(both, "p-a", Rule.QUOTED_DETAILS)
    assert "「翠湖花园」" not in both.evidence


# --- mailbox, address, domain ----------------------------------------------------------------

def test_same_sender_address_in_the_probes_mailbox() -> None:
    a = probe("p-a", addresses=("hbj@gz.gd.test", "zhangsan@gz.gd.test"))
    b = probe("p-b", agency="深圳市人居环境委", channel="hb@sz.gd.test", domains=("sz.gd.test",))
    result = match_message(msg(sender="张三 <ZhangSan@gz.gd.test>"), [a, b], SECRET)
    assert_attached(result, "p-a", Rule.MAILBOX_AND_ADDRESS)
    assert "zhangsan@gz.gd.test" in result.evidence


def test_the_address_must_write_to_the_probes_own_mailbox() -> None:
    a = probe("p-a", account="acct-wang")
    result = match_message(msg(sender="hbj@gz.gd.test", kind="auto_reply"), [a], SECRET)
    assert (result.probe_id, result.needs_review) == (None, False)


def test_outside_the_round_window_the_address_says_nothing() -> None:
    a = probe("p-a")
    late = msg(sender="hbj@gz.gd.test", at=SENT + timedelta(days=20), kind="auto_reply")
    assert match_message(late, [a], SECRET, round_window=timedelta(days=14)).probe_id is None
    assert match_message(late, [a], SECRET).probe_id == "p-a"


def test_two_probes_to_one_agency_from_one_mailbox_go_to_review() -> None:
    a = probe("p-a", channel="hbj@gz.gd.test", addresses=("hbj@gz.gd.test", "ts@gz.gd.test"))
    b = probe("p-b", channel="ts@gz.gd.test", addresses=("hbj@gz.gd.test", "ts@gz.gd.test"),
              sent=SENT + timedelta(hours=2))
    result = match_message(msg(sender="ts@gz.gd.test"), [a, b], SECRET)
    assert_review(result)
    # The probe sent to the very address that answered is ranked first.
    assert [g.probe_id for g in result.guesses] == ["p-b", "p-a"]


def test_domain_of_one_agency_decides() -> None:
    a = probe("p-a")
    result = match_message(msg(sender="wangwu@mail.gz.gd.test"), [a], SECRET)
    assert_attached(result, "p-a", Rule.MAILBOX_AND_DOMAIN)
    assert result.confidence == pytest.approx(0.8)


def test_a_county_sharing_its_citys_domain_goes_to_review() -> None:
    city = probe("p-city", agency="广州市环保局", channel="hbj@gz.gd.test")
    county = probe("p-county", agency="番禺区环保局", channel="pyhb@gz.gd.test")
    result = match_message(msg(sender="clerk@gz.gd.test"), [city, county], SECRET)
    assert_review(result)
    assert result.rule is Rule.MAILBOX_AND_DOMAIN
    assert sorted(g.probe_id for g in result.guesses) == ["p-city", "p-county"]
    assert "该域名为广州市环保局、番禺区环保局共用" in result.guesses[0].reasons[0]


def test_public_mail_domains_never_stand_for_an_agency() -> None:
    a = probe("p-a", channel="gzhb@163.com", domains=("163.com",))
    result = match_message(msg(sender="stranger@163.com", kind="unrelated"), [a], SECRET)
    assert result.probe_id is None and result.guesses == ()


def test_a_later_rule_does_not_overrule_stronger_evidence_elsewhere() -> None:
    a = probe("p-a", token=False, fps=("翠湖花园3栋", "建设路12号"), channel="x@a.gd.test",
              domains=())
    b = probe("p-b", token=False, fps=("丽景小区8座", "人民路7号"), channel="y@b.gd.test",
              domains=())
    c = probe("p-c", token=False, channel="z@c.gd.test", domains=())
    reply = msg(sender="z@c.gd.test", quoted_text="> 翠湖花园3栋 建设路12号 丽景小区8座 人民路7号")
    result = match_message(reply, [a, b, c], SECRET)
    assert_review(result)
    assert "更强的规则指向" in result.evidence


def test_a_later_rule_may_choose_between_candidates_an_earlier_rule_could_not() -> None:
    a = probe("p-b", token=False, fps=("翠湖花园3栋", "建设路12号"), channel="x@a.gd.test",
              domains=())
    b = probe("p-a", token=False, fps=("丽景小区8座", "人民路7号"), channel="y@b.gd.test",
              domains=())
    reply = msg(sender="x@a.gd.test", quoted_text="> 翠湖花园3栋 建设路12号 丽景小区8座 人民路7号")
    result = match_message(reply, [a, b], SECRET)
    assert_attached(result, "p-b", Rule.MAILBOX_AND_ADDRESS)
    assert result.tried[-2:] == (Rule.QUOTED_DETAILS, Rule.MAILBOX_AND_ADDRESS)


def test_text_with_lone_surrogates_from_a_lenient_decoder_is_read() -> None:
    a = probe("p-a", token=False, fps=("鑫达五金加工坊", "荔枝路3号"))
    reply = msg(quoted_text="> \udcff鑫达五金加工坊\udcfe 荔枝路3号", new_text="\ud800")
    assert_attached(match_message(reply, [a], SECRET), "p-a", Rule.QUOTED_DETAILS)


# --- time, refusals, determinism -------------------------------------------------------------

def test_a_message_received_before_the_probe_was_sent_never_matches_it() -> None:
    a = probe("p-a", fps=("鑫达五金加工坊", "荔枝路3号"))
    early = SENT - timedelta(minutes=1)
    by_address = match_message(msg(sender="hbj@gz.gd.test", at=early, kind="auto_reply"), [a],
                               SECRET)
    assert by_address.probe_id is None and by_address.guesses == ()
    by_details = match_message(msg(quoted_text="> 鑫达五金加工坊 荔枝路3号", at=early,
                                   kind="unrelated"), [a], SECRET)
    assert by_details.probe_id is None and by_details.guesses == ()
    by_token = match_message(msg(in_reply_to=a.message_id or "", at=early), [a], SECRET)
    assert_review(by_token)
    assert "早于来信 p-a 的发出时间" in by_token.evidence


def test_a_copy_of_our_own_probe_is_not_an_answer() -> None:
    a = probe("p-a", fps=("鑫达五金加工坊", "荔枝路3号"))
    copy = msg(message_id=a.message_id or "", new_text="鑫达五金加工坊 荔枝路3号",
               sender="hbj@gz.gd.test")
    result = match_message(copy, [a], SECRET)
    assert (result.probe_id, result.needs_review) == (None, False)
    assert "我方来信" in result.evidence


def test_an_unconnected_reply_is_put_before_a_reviewer_with_the_mailboxs_probes() -> None:
    probes = [probe(f"p-{i}", sent=SENT + timedelta(hours=i), channel=f"c{i}@x{i}.gd.test",
                    domains=()) for i in range(3)]
    result = match_message(msg(sender="private@163.com", new_text="您好，已处理。"), probes, SECRET)
    assert_review(result)
    assert [g.probe_id for g in result.guesses] == ["p-2", "p-1", "p-0"]
    unrelated = match_message(msg(sender="ad@spam.example", kind="unrelated"), probes, SECRET)
    assert (unrelated.needs_review, unrelated.guesses) == (False, ())


def test_bad_inputs_are_refused_with_the_offender_named() -> None:
    a = probe("p-a")
    with pytest.raises(ConfigError, match="token stored for probe p-a does not verify"):
        ProbeIndex([a], b"wrong secret")
    with pytest.raises(InputError, match=r"appears twice.*'p-a'"):
        ProbeIndex([a, a], SECRET)
    with pytest.raises(InputError, match="message m1: received_at must be an aware UTC instant"):
        msg(at=datetime(2015, 11, 3))
    with pytest.raises(InputError, match="probe p-x: sent_at"):
        probe("p-x", sent=datetime(2015, 11, 3))


def test_output_does_not_depend_on_the_order_of_the_probes() -> None:
    probes = [*detailed_probes(12), probe("p-city"), probe("p-county", agency="番禺区环保局")]
    msgs = [msg("m1", sender="clerk@gz.gd.test"),
            msg("m2", quoted_text=letter(probes[3])),
            msg("m3", in_reply_to="<unknown@x>", sender="hbj@gz.gd.test")]
    first = match_messages(msgs, probes, SECRET)
    for seed in range(5):
        shuffled = probes[:]
        random.Random(seed).shuffle(shuffled)
        assert match_messages(msgs, shuffled, SECRET) == first


# --- first replies ---------------------------------------------------------------------------

def test_first_acknowledgement_and_first_reply_per_probe() -> None:
    at = SENT + timedelta(days=1)
    items = [
        Attached("p-a", "k3", "reply", at + timedelta(days=5)),
        Attached("p-a", "k1", "acknowledgement", at),
        Attached("p-a", "k2", "auto_reply", at - timedelta(hours=1)),
        Attached("p-a", "k9", "reply", at + timedelta(days=2)),
        Attached("p-a", "k8", "reply", at + timedelta(days=2)),  # same instant: smaller key
        Attached("p-b", "k5", "acknowledgement", at),
        Attached("p-c", "k6", "bounce", at),
    ]
    firsts = first_replies(items)
    assert list(firsts) == ["p-a", "p-b"]
    assert firsts["p-a"].acknowledgement == items[1] and firsts["p-a"].reply == items[4]
    assert firsts["p-b"].reply is None
    assert first_replies(reversed(items)) == firsts


def test_only_confident_matches_are_attached() -> None:
    city = probe("p-city", agency="广州市环保局", channel="hbj@gz.gd.test")
    county = probe("p-county", agency="番禺区环保局", channel="pyhb@gz.gd.test")
    msgs = [msg("sure", sender="hbj@gz.gd.test"), msg("doubt", sender="clerk@gz.gd.test")]
    results = match_messages(msgs, [city, county], SECRET)
    assert [a.key for a in attached(zip(msgs, results, strict=True))] == ["sure"]


# --- properties ------------------------------------------------------------------------------

_IDS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=24)


@st.composite
def campaigns(draw: st.DrawFn) -> tuple[list[SentProbe], int]:
    ids = draw(st.lists(_IDS, min_size=1, max_size=8, unique=True))
    probes = []
    for pid in ids:
        agency = draw(st.sampled_from(["a", "b", "c"]))
        details = details_for(pid, agency, "广州", date(2015, 11, 2), seed=1)
        probes.append(probe(
            pid, agency=agency, account=draw(st.sampled_from(["acct-1", "acct-2"])),
            channel=f"box@{agency}.gd.test", domains=(f"{agency}.gd.test", "gd.test"),
            sent=SENT + timedelta(hours=draw(st.integers(0, 200))),
            fps=fingerprints(details)))
    return probes, draw(st.integers(0, len(probes) - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaigns(), st.sampled_from(["irt", "refs", "plus", "new", "quoted"]),
       st.sampled_from(["reply", "acknowledgement", "auto_reply", "unrelated"]),
       st.text(max_size=80), st.integers(0, 30 * 24))
def test_a_message_carrying_a_probes_token_always_matches_it(
    campaign: tuple[list[SentProbe], int], place: str, kind: str, noise: str, hours: int
) -> None:
    probes, chosen = campaign
    target = probes[chosen]
    token, mid = target.token or "", target.message_id or ""
    # Everything else about the message points elsewhere: another agency's address, the
    # other mailbox, another probe's details.
    decoy = probes[(chosen + 1) % len(probes)]
    placements: dict[str, dict[str, Any]] = {
        "irt": {"in_reply_to": mid},
        "refs": {"references": ("<a@b>", mid, "<c@d>")},
        "plus": {"to_addresses": (f"li+{token}@mail.test",)},
        "new": {"new_text": f"{noise}\n编号 {token}\n{noise}"},
        "quoted": {"quoted_text": f"> {noise}\n> ref {token.upper()}"},
    }
    fields = placements[place]
    fields.setdefault("quoted_text", " ".join(decoy.fingerprints))
    message = msg(account="acct-1" if target.account == "acct-2" else "acct-2",
                  sender=decoy.channel_address or "", kind=kind,
                  at=target.sent_at + timedelta(hours=hours), **fields)
    result = match_message(message, probes, SECRET)
    assert result.probe_id == target.probe_id and not result.needs_review, result
    assert result.rule in (Rule.TOKEN_IN_REPLY_TO, Rule.TOKEN_PLUS_ADDRESS, Rule.TOKEN_IN_BODY)


@settings(max_examples=150, deadline=None)
@given(campaigns(), st.text(max_size=400), st.text(max_size=200),
       st.text("abcdefghijklmnopqrstuvwxyz234567<>@. \n", max_size=120),
       st.sampled_from(["reply", "acknowledgement", "auto_reply", "unrelated", "bounce"]))
def test_unrelated_text_never_matches_with_confidence(
    campaign: tuple[list[SentProbe], int], body: str, quoted: str, headers: str, kind: str
) -> None:
    probes, _ = campaign
    message = msg(sender="stranger@unrelated.example", new_text=body, quoted_text=quoted,
                  in_reply_to=headers, references=(headers,), subject=body[:20], kind=kind,
                  to_addresses=(f"li+{headers}@mail.test",), returned_message_ids=(headers,),
                  at=SENT + timedelta(days=3), account="acct-1")
    result = match_message(message, probes, SECRET)
    assert result.probe_id is None
    assert all(g.score <= 0.1 for g in result.guesses)


# --- a realistic mix ------------------------------------------------------------------------


def test_a_realistic_mix_attaches_most_messages_and_never_a_wrong_probe() -> None:
    from bench.bench_match import SECRET as BENCH_SECRET
    from bench.bench_match import workload

    probes, msgs = workload(2_000, 200)
    results = match_messages(msgs, probes, BENCH_SECRET)
    attached = [r for r in results if r.probe_id is not None]
    assert len(attached) / len(results) > 0.6
    assert all(r.confidence >= 0.8 and not r.needs_review for r in attached)


def _body_tokens_unfiltered(text: str) -> list[str]:
    """``_body_tokens`` without its quick rejection: what it must agree with."""
    from mailprobe.match import _QUOTED_WRAP, _tokens
    tokens = _tokens(text)
    if "\n" in text:
        tokens += [t for t in _tokens(_QUOTED_WRAP.sub("", text)) if t not in tokens]
    return tokens


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="请问您的来信已收到 \t\r\n>\x0b\x1c abcXYZ234=", max_size=60),
       st.integers(0, 999), st.lists(st.integers(1, 40), max_size=3),
       st.sampled_from(["\n> ", "\r\n>> ", " \n\t", "\n\x1c>", "\n \u3000", "\x0b\n"]),
       st.text(alphabet="续复 xyz\n>", max_size=30), st.booleans())
def test_quick_rejection_of_token_free_text_never_loses_a_token(
        before: str, pid: int, cuts: list[int], wrap: str, after: str, present: bool) -> None:
    from mailprobe.match import _body_tokens
    token = make_token(f"r1-{pid:05d}", b"secret-for-wrapping-tests")
    for cut in sorted(set(cuts), reverse=True):  # wrapped as quoting clients do
        token = token[:cut] + wrap + token[cut:]
    text = before + (token if present else "") + after
    assert _body_tokens(text) == _body_tokens_unfiltered(text)
    if present and wrap in ("\n> ", "\r\n>> ", " \n\t", "\n\x1c>"):  # what it unwraps
        assert _body_tokens(text), text
