"""Classifying the corpus and the edge cases of each layer, with the evidence a reviewer reads."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprobe.classify import (
    BounceType,
    Classification,
    MessageKind,
    Substance,
    classify,
    garbled_chars,
)
from mailprobe.decode import parse_message

MESSAGES = Path(__file__).resolve().parent / "messages"
SENT = [line.strip() for line in (MESSAGES / "sent-ids.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")]

REPLY, ACK, AUTO, BOUNCE, UNRELATED = (MessageKind.REPLY, MessageKind.ACKNOWLEDGEMENT,
                                       MessageKind.AUTO_REPLY, MessageKind.BOUNCE,
                                       MessageKind.UNRELATED)

# file, kind, bounce type, evidence fragments (each must appear in some evidence string)
EXPECTED: list[tuple[str, MessageKind, BounceType | None, list[str]]] = [
    ("01_foxmail_gbk_reply.eml", REPLY, None,
     ["with 经查/根据《…》/第…条/现答复/您反映的", "发件人/发送时间 header block"]),
    ("02_qqmail_gbk_reply.eml", REPLY, None, ["答复如下", "原始邮件 separator"]),
    ("03_gb2312_label_gb18030.eml", REPLY, None, ["经查/根据《…》"]),
    ("04_coremail_reply.eml", REPLY, None, ["经查", "写道/wrote line"]),
    ("05_outlook_html_reply.eml", REPLY, None, ["经查/根据《…》/第…条"]),
    ("06_ack_auto_submitted.eml", ACK, None,
     ["Auto-Submitted: auto-replied", "acknowledgement phrases: 您的来信已收到, 我们将尽快处理"]),
    ("07_ack_form_receipt.eml", ACK, None,
     ["acknowledgement phrases: 已受理, 受理编号, …个工作日内答复", "no answer in the new text"]),
    ("08_out_of_office_exchange.eml", AUTO, None,
     ["X-MS-Exchange-Inbox-Rules-Loop: liming@st.gd.test", "subject starts with '自动回复'",
      "out-of-office phrases: 休假"]),
    ("09_bounce_postfix_hard.eml", BOUNCE, BounceType.HARD,
     ["DSN for <hbj@yf.gd.test> status 5.1.1 (hard)",
      "returns our message <20151102100500.7c31d2@mail.test>"]),
    ("10_bounce_exim_soft.eml", BOUNCE, BounceType.SOFT,
     ["DSN for <hbj@yj.gd.test> status 4.2.2 (soft)", "returns our message"]),
    ("11_bounce_chinese_provider.eml", BOUNCE, BounceType.HARD,
     ["bounce text from postmaster@mail.test: 系统退信",
      "failed recipient hbj@sw.gd.test: 收件人不存在 (hard)",
      "returns our message <20151102110000.3d07a8@mail.test>"]),
    ("12_reply_other_address.eml", REPLY, None, ["经查", "写道/wrote line"]),
    ("13_referral_only.eml", REPLY, None, ["referral only: 请向…咨询/12369"]),
    ("14_newsletter.eml", UNRELATED, None, ["List-Unsubscribe header", "no relation to a probe"]),
    ("15_spam_invoice.eml", UNRELATED, None, ["marketing phrases: ", "发票", "加微信"]),
    ("16_malformed.eml", REPLY, None, ["with 经查"]),
    ("17_big5_reply.eml", REPLY, None, ["with 经查/根据《…》/第…条/现答复"]),
    ("18_utf8_label_gbk.eml", REPLY, None, ["with 经查"]),
    ("19_unlabelled_big5.eml", REPLY, None, ["with 经查"]),
    ("20_bounce_not_ours.eml", UNRELATED, None,
     ["DSN for <sales@sc.gd.test> status 5.1.1 (hard)",
      "returns <spam.7f3a1c@mail.test>, not a message we sent"]),
]


def run(name: str, sent: list[str] | None = SENT, probe_sent_at: datetime | None = None,
        received_at: datetime | None = None) -> Classification:
    raw = (MESSAGES / name).read_bytes()
    return classify(parse_message(raw), sent_message_ids=sent, probe_sent_at=probe_sent_at,
                    received_at=received_at)


def test_every_corpus_file_has_an_expectation() -> None:
    assert {e[0] for e in EXPECTED} == {p.name for p in MESSAGES.glob("*.eml")}


def test_readme_documents_every_file() -> None:
    readme = (MESSAGES / "README.md").read_text(encoding="utf-8")
    for name, kind, _, _ in EXPECTED:
        line = next(line for line in readme.splitlines() if f"`{name}`" in line)
        assert str(kind) in line or (kind is REPLY and "reply" in line)


@pytest.mark.parametrize(("name", "kind", "bounce_type", "evidence"), EXPECTED,
                         ids=[e[0] for e in EXPECTED])
def test_corpus_classifies_as_documented(name: str, kind: MessageKind,
                                         bounce_type: BounceType | None,
                                         evidence: list[str]) -> None:
    result = run(name)
    assert result.kind is kind, result.evidence
    assert result.bounce_type is bounce_type
    for fragment in evidence:
        assert any(fragment in e for e in result.evidence), (fragment, result.evidence)
    assert 0.0 < result.confidence <= 1.0


def test_reply_new_text_leaves_out_the_quote_and_signature() -> None:
    result = run("01_foxmail_gbk_reply.eml")
    assert result.new_text.startswith("张伟先生：")
    assert result.new_text.endswith("2015-11-04")
    assert "关于夜间施工噪声审批的咨询" not in result.new_text
    assert "我家附近的石场" in result.quoted_text
    assert result.substance.chars == 246
    assert result.substance.addresses_question
    assert "12369" in result.substance.referral_cues and not result.substance.referral_only


def test_referral_only_reply() -> None:
    result = run("13_referral_only.eml")
    assert result.substance.referral_only
    assert result.new_text == ("您好！您反映的餐饮油烟扰民问题，请向潮州市城市管理局咨询，"
                               "或拨打12369环保热线。")


def test_bounce_details() -> None:
    hard = run("09_bounce_postfix_hard.eml")
    assert (hard.failed_recipients, hard.dsn_status) == (("hbj@yf.gd.test",), "5.1.1")
    soft = run("10_bounce_exim_soft.eml")
    assert (soft.failed_recipients, soft.dsn_status) == (("hbj@yj.gd.test",), "4.2.2")
    chinese = run("11_bounce_chinese_provider.eml")
    assert chinese.failed_recipients == ("hbj@sw.gd.test",)


def test_a_bounce_of_a_message_we_did_not_send_is_unrelated() -> None:
    result = run("09_bounce_postfix_hard.eml", sent=["<other@mail.test>"])
    assert result.kind is UNRELATED and result.bounce_type is None
    assert result.failed_recipients == ("hbj@yf.gd.test",)  # still reported, not trusted
    assert "returns <20151102100500.7c31d2@mail.test>, not a message we sent" in result.evidence


def test_without_sent_ids_a_bounce_is_taken_on_its_word() -> None:
    result = run("20_bounce_not_ours.eml", sent=None)
    assert result.kind is BOUNCE and result.bounce_type is BounceType.HARD
    assert any("not checked: no sent Message-IDs given" in e for e in result.evidence)


def test_message_ids_compare_without_brackets_and_case() -> None:
    result = run("09_bounce_postfix_hard.eml", sent=["20151102100500.7C31D2@MAIL.TEST"])
    assert result.kind is BOUNCE


def test_a_quick_acknowledgement_is_more_certain() -> None:
    sent = datetime(2015, 11, 2, 6, 0, tzinfo=UTC)
    slow = run("07_ack_form_receipt.eml")
    quick = run("07_ack_form_receipt.eml", probe_sent_at=sent,
                received_at=sent + timedelta(minutes=3))
    assert quick.kind is slow.kind is ACK
    assert quick.confidence > slow.confidence
    assert "arrived 3 min after the probe" in quick.evidence


def test_naive_and_aware_times_do_not_raise() -> None:
    result = run("07_ack_form_receipt.eml", probe_sent_at=datetime(2015, 11, 2),
                 received_at=datetime(2015, 11, 2, tzinfo=UTC))
    assert result.kind is ACK


def message(headers: str, body: str, charset: str = "utf-8") -> bytes:
    return (f"{headers}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset={charset}\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body.encode(charset)


ANSWER = ("您好！经查，该企业已于11月5日完成整改。根据《中华人民共和国水污染防治法》第七十四条，"
          "我局已依法作出处罚决定，处理结果已在网站公开。") * 2


def test_an_automatic_answer_from_a_portal_is_a_reply() -> None:
    raw = message("From: noreply@gz.gd.test\r\nAuto-Submitted: auto-generated\r\nSubject: 办结通知",
                  ANSWER)
    result = classify(parse_message(raw))
    assert result.kind is REPLY
    assert any("automatic headers (Auto-Submitted: auto-generated)" in e for e in result.evidence)


def test_auto_submitted_no_is_a_person() -> None:
    raw = message("From: hbj@gz.gd.test\r\nAuto-Submitted: no\r\nSubject: Re: x", ANSWER)
    result = classify(parse_message(raw))
    assert result.kind is REPLY
    assert result.evidence[0] == "Auto-Submitted: no"


def test_a_short_human_receipt_is_an_acknowledgement() -> None:
    raw = message("From: hbj@gz.gd.test\r\nSubject: Re: 咨询", "来信收到，我们会尽快答复。")
    assert classify(parse_message(raw)).kind is ACK


def test_auto_submitted_without_phrases_is_an_auto_reply() -> None:
    raw = message("From: hbj@gz.gd.test\r\nAuto-Submitted: auto-replied\r\nSubject: x",
                  "This is an automatic message.")
    result = classify(parse_message(raw))
    assert result.kind is AUTO and result.evidence == ("Auto-Submitted: auto-replied",)


@pytest.mark.parametrize(("header", "signal"), [
    ("X-Autoreply: yes", "X-Autoreply: yes"),
    ("X-Autorespond: vacation", "X-Autorespond: vacation"),
    ("Precedence: auto_reply", "Precedence: auto_reply"), ("Precedence: junk", "Precedence: junk"),
    ("Subject: Automatic reply: question", "subject starts with 'Automatic reply'"),
    ("Subject: Out of Office: question", "subject starts with 'Out of Office'"),
])
def test_vendor_auto_reply_headers(header: str, signal: str) -> None:
    raw = message(f"From: a@hz.gd.test\r\n{header}", "I am out of the office until Monday.")
    result = classify(parse_message(raw))
    assert result.kind is AUTO
    assert signal in result.evidence


def test_challenge_response_is_an_auto_reply() -> None:
    raw = message("From: a@hz.gd.test\r\nX-Autoreply: yes\r\nSubject: 请验证",
                  "为防止垃圾邮件，请点击以下链接完成发件人验证。")
    assert classify(parse_message(raw)).kind is AUTO


def test_out_of_office_text_without_headers_is_a_weak_auto_reply() -> None:
    raw = message("From: a@hz.gd.test\r\nSubject: 咨询", "我正在休假，不在办公室，回来后处理。")
    result = classify(parse_message(raw))
    assert result.kind is AUTO and result.confidence < 0.7


def test_a_promise_inside_a_real_answer_stays_a_reply() -> None:
    body = "您的来信已收到。" + ANSWER + "我们将尽快落实后续监管。"
    result = classify(parse_message(message("From: a@hz.gd.test\r\nSubject: 回复：咨询", body)))
    assert result.kind is REPLY


def test_an_acknowledgement_phrase_in_the_quoted_probe_does_not_count() -> None:
    body = ("经查，属实，已整改。\n\n-----原始邮件-----\n发件人: x\n发送时间: y\n"
            "您的来信已收到，我们将尽快处理")
    result = classify(parse_message(message("From: a@hz.gd.test\r\nSubject: 回复", body)))
    assert result.kind is REPLY


def test_a_newsletter_threaded_to_our_probe_is_a_reply() -> None:
    raw = message(f"From: a@hz.gd.test\r\nList-Unsubscribe: <mailto:u@hz.gd.test>\r\n"
                  f"In-Reply-To: {SENT[0]}\r\nSubject: 答复", "经查，已整改。")
    assert classify(parse_message(raw), sent_message_ids=SENT).kind is REPLY


def test_one_marketing_word_is_not_enough_for_unrelated() -> None:
    raw = message("From: a@hz.gd.test\r\nSubject: 通知", "关于优惠政策的通知，详见附件。")
    assert classify(parse_message(raw)).kind is REPLY


def test_a_success_report_is_not_a_bounce() -> None:
    raw = (b"From: MAILER-DAEMON@mail.test\r\nSubject: Successful Mail Delivery Report\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nDelivered.\r\n--b\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.mail.test\r\n\r\n"
           b"Final-Recipient: rfc822; hbj@hz.gd.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
           b"--b--\r\n")
    result = classify(parse_message(raw))
    assert result.kind is UNRELATED
    assert result.evidence == ("delivery report without a failure: <hbj@hz.gd.test> delivered",)


def test_a_citizen_mentioning_a_bounce_is_not_a_bounce() -> None:
    raw = message("From: a@hz.gd.test\r\nSubject: 回复：咨询",
                  "经查，您上次的邮件被退回是因为地址错误。")
    assert classify(parse_message(raw)).kind is REPLY


def test_an_empty_reply_is_low_confidence() -> None:
    result = classify(parse_message(message("From: a@hz.gd.test\r\nSubject: Re: x", "")))
    assert result.kind is REPLY and result.confidence <= 0.3
    assert "new text empty" in result.evidence



def test_a_reply_nobody_can_read_is_marked_and_least_certain() -> None:
    garbled = random.Random(3).randbytes(2000)  # no charset decodes it: GB18030 is tried last
    raw = (b"From: a@hz.gd.test\r\nSubject: Re: x\r\n"
           b"Content-Type: text/plain; charset=GB2312\r\n\r\n" + garbled)
    result = classify(parse_message(raw))
    assert result.kind is REPLY and result.confidence == 0.2
    assert result.substance.unreadable
    assert any(e.startswith("new text unreadable: ") for e in result.evidence), result.evidence


@pytest.mark.parametrize("path", sorted(MESSAGES.glob("*.eml")), ids=lambda p: p.name)
def test_no_corpus_message_is_unreadable(path: Path) -> None:
    # The mislabelled, unlabelled and malformed ones included: decoding them is our job.
    substance = classify(parse_message(path.read_bytes()), sent_message_ids=SENT).substance
    assert substance.garbled == 0 and not substance.unreadable


@pytest.mark.parametrize(("chars", "garbled", "unreadable"), [
    (40, 4, False), (40, 5, True), (50, 5, True), (51, 5, False), (5, 5, True), (0, 0, False)])
def test_unreadable_means_at_least_five_garbled_and_a_tenth(chars: int, garbled: int,
                                                             unreadable: bool) -> None:
    assert Substance(chars, (), (), False, garbled).unreadable is unreadable


_READABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7e) | st.characters(
    min_codepoint=0x4e00, max_codepoint=0x9fff) | st.sampled_from("，。！？：；“”《》（）、…\n\t ")


@settings(max_examples=200, deadline=None)
@given(st.text(_READABLE, max_size=400))
def test_readable_chinese_and_ascii_count_no_garbled_character(text: str) -> None:
    raw = ("From: a@hz.gd.test\r\nSubject: Re: x\r\n"
           "Content-Type: text/plain; charset=UTF-8\r\n\r\n" + text).encode()
    assert classify(parse_message(raw)).substance.garbled == 0



@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec=None) | st.sampled_from("\ufffd\ue000\x85\U000e0100"),
               max_size=60))
def test_the_quick_way_through_counts_as_the_pattern_does(text: str) -> None:
    from mailprobe import classify as rules
    assert garbled_chars(text) == len(rules._GARBLED.findall(text))


def test_what_failed_decoding_leaves_is_garbled_and_real_text_is_not() -> None:
    assert garbled_chars("\ufffd\x1b\x85\ue04d\U000a5e4c\U0010fffd") == 6
    # an ideographic variation sequence, emoji, rare CJK (plane 2 and 3), full-width signs
    assert garbled_chars("葛\U000e0100😀\U00020000\U00030000，？ＡＢ") == 0


# --- never raises -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.text(max_size=30), max_size=3) | st.none())
def test_arbitrary_bytes_never_raise(raw: bytes, sent: list[str] | None) -> None:
    result = classify(parse_message(raw), sent_message_ids=sent)
    assert result.kind in MessageKind


CORPUS = sorted(MESSAGES.glob("*.eml"))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)).read_bytes())
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=60))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_corpus_never_raises(raw: bytes) -> None:
    result = classify(parse_message(raw), sent_message_ids=SENT,
                      probe_sent_at=datetime(2015, 11, 2, tzinfo=UTC),
                      received_at=datetime(2015, 11, 3, tzinfo=UTC))
    assert isinstance(result.evidence, tuple)
