"""Decoding real-world mail: charsets, broken encoded words, HTML, DSNs, limits, garbage."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailprobe.decode import (
    ParsedMessage,
    decode_bytes,
    decode_header_value,
    html_to_text,
    normalize_message_id,
    parse_message,
)

MESSAGES = Path(__file__).resolve().parent / "messages"
CORPUS = sorted(MESSAGES.glob("*.eml"))


def load(name: str) -> ParsedMessage:
    return parse_message((MESSAGES / name).read_bytes())


# file, subject, sender, phrases the decoded body must hold, codec of the first text part
DECODED = [
    ("01_foxmail_gbk_reply.eml", "回复: 关于夜间施工噪声审批的咨询", "hbj@sg.gd.test",
     ["您反映的夜间施工噪声问题，经查", "《中华人民共和国环境噪声污染防治法》第三十条"], "gb18030"),
    ("02_qqmail_gbk_reply.eml", "回复：关于建设项目环评审批时限的咨询", "xinxiang@fs.gd.test",
     ["答复如下", "------------------ 原始邮件 ------------------"], "gb18030"),
    ("03_gb2312_label_gb18030.eml", "回复: 关于镕盛电镀厂排污的投诉", "hbj@mm.gd.test",
     ["经办人：刘䶮  联系人：王堃", "镕盛电镀厂", "-----原始邮件-----"], "gb18030"),
    ("04_coremail_reply.eml", "Re:关于饮用水源保护区范围的咨询", "hbj@zj.gd.test",
     ["鹤地水库一级保护区", "在 2015-11-02 09:30:12，\"张伟\" <zhangwei@mail.test> 写道："],
     "gb18030"),
    ("05_outlook_html_reply.eml", "答复: 关于竣工环保验收材料的咨询", "sthjj@gz.gd.test",
     ["您好！经查，建设项目竣工环境保护验收需提交", "“广州市环境保护局网上办事大厅”"],
     "gb18030"),
    ("06_ack_auto_submitted.eml", "来信已收到：关于废旧电池回收点设置的建议",
     "noreply@jm.gd.test", ["您的来信已收到，我们将尽快处理"], "utf-8"),
    ("07_ack_form_receipt.eml", "信件受理回执", "xfxt@hz.gd.test",
     ["受理编号：HZHB20151102-0087"], "gb18030"),
    ("08_out_of_office_exchange.eml", "自动回复: 关于海滨浴场水质监测数据的咨询",
     "liming@st.gd.test", ["休假，期间不能及时回复邮件"], "utf-8"),
    ("11_bounce_chinese_provider.eml", "系统退信", "postmaster@mail.test",
     ["收件人不存在", "收件人：hbj@sw.gd.test"], "gb18030"),
    ("12_reply_other_address.eml", "Re: 关于塑料厂无环评手续的举报", "chenhui@jy.gd.test",
     ["你发到局信箱的邮件已转给我办理", "于2015年11月3日周二 下午2:20写道："], "utf-8"),
    ("13_referral_only.eml", "回复：关于小区楼下餐饮油烟扰民的投诉", "hbj@cz.gd.test",
     ["请向潮州市城市管理局咨询", "发自我的iPhone"], "gb18030"),
    ("14_newsletter.eml", "【绿色生活】11月刊：节能家电限时优惠", "newsletter@edm.mail.test",
     ["节能家电限时优惠", "点此退订"], "utf-8"),
    ("15_spam_invoice.eml", "各类发票代开 优惠", "kp888@fp.mail.test", ["代开各类增值税发票"],
     "gb18030"),
    ("16_malformed.eml", "回复：关于工地扬尘污染的投诉", "hbj@yf.gd.test",
     ["您好！经查，你反映的工地扬尘问题属实"], "gb18030"),
    ("17_big5_reply.eml", "回覆: 關於恒昌化工廠排污問題的查詢", "hbj@zq.gd.test",
     ["經查，恒昌化工廠", "寄件者: 王芳"], "cp950"),
    ("18_utf8_label_gbk.eml", "回复：关于养猪场污水直排的投诉", "hbj@hy.gd.test",
     ["养猪场已于11月4日完成污水处理设施改造"], "gb18030"),
    ("19_unlabelled_big5.eml", "回覆：關於垃圾焚燒發電廠環評的查詢", "hbj@qy.gd.test",
     ["經查，清遠市清城區的垃圾焚燒發電廠"], "cp950"),
]


def test_every_corpus_file_is_covered() -> None:
    covered = {d[0] for d in DECODED} | {"09_bounce_postfix_hard.eml", "10_bounce_exim_soft.eml",
                                          "20_bounce_not_ours.eml"}
    assert covered == {p.name for p in CORPUS}


@pytest.mark.parametrize(("name", "subject", "sender", "phrases", "codec"), DECODED)
def test_corpus_decodes_to_the_right_chinese(name: str, subject: str, sender: str,
                                              phrases: list[str], codec: str) -> None:
    msg = load(name)
    assert msg.subject == subject
    assert [a.addr for a in msg.from_] == [sender]
    for phrase in phrases:
        assert phrase in msg.text
    assert "\ufffd" not in msg.text + msg.subject
    assert msg.text_parts[0].decoded_as == codec


@pytest.mark.parametrize("name", [d[0] for d in DECODED if d[0] not in {
    "16_malformed.eml", "18_utf8_label_gbk.eml", "19_unlabelled_big5.eml"}])
def test_well_formed_corpus_has_no_defects(name: str) -> None:
    msg = load(name)
    assert msg.defects == ()
    assert msg.truncated == ()


def test_display_names_are_decoded() -> None:
    assert load("01_foxmail_gbk_reply.eml").from_[0].name == "韶关市环境保护局"
    assert load("17_big5_reply.eml").from_[0].name == "肇慶市環境保護局"
    assert load("05_outlook_html_reply.eml").to[0].name == "李娜"  # Outlook's 'quotes' dropped
    assert load("09_bounce_postfix_hard.eml").from_[0].name == "Mail Delivery System"


def test_gb2312_label_with_gb18030_characters() -> None:
    msg = load("03_gb2312_label_gb18030.eml")
    assert msg.text_parts[0].charset == "gb2312"
    assert "䶮" in msg.text  # GB18030 four-byte form; GBK has no such character


def test_no_threading_headers_in_chinese_client_replies() -> None:
    for name in ("01_foxmail_gbk_reply.eml", "02_qqmail_gbk_reply.eml"):
        msg = load(name)
        assert msg.in_reply_to == "" and msg.references == ()


def test_html_only_outlook_reply_becomes_readable_text() -> None:
    msg = load("05_outlook_html_reply.eml")
    assert msg.text_parts[0].content_type == "text/html"
    assert "MsoNormal" not in msg.text and "font-family" not in msg.text
    assert "shapedefaults" not in msg.text
    lines = msg.text.splitlines()
    assert "发件人: 李娜 [mailto:li.na@mail.test]" in [" ".join(x.split()) for x in lines]
    assert any(line.startswith("发送时间:") for line in lines)
    assert msg.automation.ms_has_attach == ""
    assert msg.header("Thread-Topic") == "关于竣工环保验收材料的咨询"


def test_alternative_prefers_the_plain_part() -> None:
    msg = load("04_coremail_reply.eml")
    assert [p.content_type for p in msg.text_parts] == ["text/plain"]
    assert ">您好！请问湛江市饮用水水源保护区的划定范围在哪里可以查到？" in msg.text


def test_exchange_out_of_office_headers() -> None:
    auto = load("08_out_of_office_exchange.eml").automation
    assert auto.exchange_rules_loop == "liming@st.gd.test"
    assert auto.x_auto_response_suppress == "All"
    assert auto.auto_submitted == ""


def test_postfix_dsn_per_recipient() -> None:
    msg = load("09_bounce_postfix_hard.eml")
    [status] = msg.delivery_status
    assert (status.recipient, status.action, status.status) == ("hbj@yf.gd.test", "failed", "5.1.1")
    assert status.remote_mta == "mx.yf.gd.test"
    assert "User unknown" in status.diagnostic
    [returned] = msg.returned
    assert returned.message_id == "<20151102100500.7c31d2@mail.test>"
    assert returned.recipients == ("hbj@yf.gd.test",)
    assert returned.subject == "关于工地扬尘污染的投诉"
    assert "Reporting-MTA" not in msg.text and "X-Postfix" not in msg.text
    assert msg.return_path == "<>"


def test_exim_delay_dsn() -> None:
    [status] = load("10_bounce_exim_soft.eml").delivery_status
    assert (status.action, status.status) == ("delayed", "4.2.2")


def test_global_delivery_status_is_split_into_blocks_by_us() -> None:
    # The email package splits only message/delivery-status; the RFC 6533 form comes as text.
    raw = (b"From: MAILER-DAEMON@mail.test\r\nSubject: Undelivered Mail\r\n"
           b"Content-Type: multipart/report; report-type=global-delivery-status; boundary=b\r\n"
           b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n"
           b"Content-Type: message/global-delivery-status\r\n\r\n"
           b"Reporting-MTA: dns; mx.mail.test\r\n\r\n"
           b"Final-Recipient: rfc822; hbj@hz.gd.test\r\nAction: failed\r\nStatus: 5.2.2\r\n"
           b"Diagnostic-Code: smtp; 552 5.2.2 mailbox\r\n  full\r\n\r\n"
           b"Final-Recipient: rfc822; xf@hz.gd.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
           b"--b--\r\n")
    statuses = parse_message(raw).delivery_status
    assert [(s.recipient, s.action, s.status) for s in statuses] == [
        ("hbj@hz.gd.test", "failed", "5.2.2"), ("xf@hz.gd.test", "delayed", "4.4.1")]
    assert statuses[0].diagnostic == "smtp; 552 5.2.2 mailbox full"


def test_when_the_parser_fails_headers_and_text_are_still_saved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: bytes, max_bytes: int, max_parts: int) -> ParsedMessage:
        raise RuntimeError("boom")

    monkeypatch.setattr("mailprobe.decode._parse", broken)
    raw = (b"Subject: =?gbk?B?u9i4tA==?=\r\nFrom: hbj@hz.gd.test\r\n\r\n"
           + "经查属实。".encode("gbk"))
    msg = parse_message(raw)
    assert msg.defects[0] == "parser failed: RuntimeError: boom"
    assert (msg.subject, msg.from_[0].addr, msg.text) == ("回复", "hbj@hz.gd.test", "经查属实。")


def test_chinese_bounce_returns_the_attached_original() -> None:
    msg = load("11_bounce_chinese_provider.eml")
    assert [r.message_id for r in msg.returned] == ["<20151102110000.3d07a8@mail.test>"]
    assert msg.attachments == ()  # the returned message is not an attachment to list


def test_malformed_message_is_recovered_and_its_defects_recorded() -> None:
    msg = load("16_malformed.eml")
    assert msg.from_[0].name == "云浮市环保局"  # GBK bytes inside a word labelled utf-8
    assert msg.date is None and msg.date_text == "Thu, 5 Nov 2015 25:61:00 +0800"
    assert msg.message_id == "<broken.20151105@yf.gd.test>"
    [attachment] = msg.attachments
    assert attachment.filename == "处理结果.doc"
    assert attachment.content_type == "application/msword"
    assert attachment.size == 225
    defects = " | ".join(msg.defects)
    for expected in ("labelled 'utf-8', decoded as gb18030", "unencoded 8-bit",
                     "boundary not found", "outside the alphabet", "padding missing"):
        assert expected in defects


def test_mislabelled_and_unlabelled_bodies_say_so() -> None:
    assert load("18_utf8_label_gbk.eml").defects == (
        "text/plain: labelled 'utf-8', decoded as gb18030",)
    assert load("19_unlabelled_big5.eml").defects == (
        "text/plain: no charset given; decoded as cp950",)


def test_header_lookup_and_date() -> None:
    msg = load("02_qqmail_gbk_reply.eml")
    assert msg.header("x-qq-mime") == "TCMime 1.0 by Tencent"
    assert msg.header("No-Such-Header") == ""
    assert msg.date is not None and msg.date.isoformat() == "2015-11-05T11:20:01+08:00"


# --- headers ----------------------------------------------------------------------------------


def test_encoded_words_split_mid_character_are_joined() -> None:
    data = "关于环评".encode("gbk")
    value = (f"=?gbk?B?{base64.b64encode(data[:3]).decode()}?= "
             f"=?gbk?B?{base64.b64encode(data[3:]).decode()}?=")
    assert decode_header_value(value) == "关于环评"


def test_encoded_word_variants() -> None:
    assert decode_header_value("=?utf-8?Q?=E5=9B=9E=E5=A4=8D_Re?=") == "回复 Re"
    assert decode_header_value("Re: =?GB2312?B?udjT2g==?= x") == "Re: 关于 x"
    assert decode_header_value("=?gb2312?B?udjT2g?=") == "关于"  # padding lost
    assert decode_header_value("=?x-unknown?B?5YWz5LqO?=") == "关于"  # unknown label: UTF-8
    assert decode_header_value("=?utf-8*zh?B?5YWz5LqO?=") == "关于"  # RFC 2231 language
    assert decode_header_value("=?utf-8?B?5YWz5LqO") == "=?utf-8?B?5YWz5LqO"  # unclosed: kept
    assert decode_header_value("a\r\n\tb") == "a b"


def test_unencoded_8bit_header_is_guessed() -> None:
    raw = "回复：咨询".encode("gbk").decode("ascii", "surrogateescape")
    defects: list[str] = []
    assert decode_header_value(raw, defects) == "回复：咨询"
    assert defects == ["header: unencoded 8-bit bytes decoded as gb18030"]
    utf8 = "回复".encode().decode("ascii", "surrogateescape")
    assert decode_header_value(utf8, defects) == "回复" and len(defects) == 1  # RFC 6532


def test_decode_bytes_label_rules() -> None:
    assert decode_bytes("堃".encode("gbk"), "gb2312") == ("堃", "gb18030")
    assert decode_bytes("恒".encode("cp950"), "big5") == ("恒", "cp950")
    assert decode_bytes("café".encode("latin-1"), "iso-8859-1") == ("café", "latin-1")
    notes: list[str] = []
    text, codec = decode_bytes("环境保护局的答复内容".encode("gbk"), "iso-8859-1", notes)
    assert (text, codec) == ("环境保护局的答复内容", "gb18030") and notes
    assert decode_bytes(b"\xff\xfe\xfd", "utf-8")[0]  # never raises, replaces
    assert decode_bytes(b"x", "no-such-charset") == ("x", "ascii")


def test_message_ids_are_normalised() -> None:
    assert normalize_message_id(" <a@b> (comment)") == "<a@b>"
    assert normalize_message_id("a@b") == "<a@b>"
    assert normalize_message_id("") == ""


def test_rfc2231_continuations() -> None:
    name = "环境监测报告.pdf".encode()
    pct = "".join(f"%{b:02X}" for b in name)
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n--b\r\n"
           b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment;\r\n filename*0*=utf-8''" + pct[:30].encode() +
           b";\r\n filename*1*=" + pct[30:].encode() + b"\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n")
    [attachment] = parse_message(raw).attachments
    assert attachment.filename == "环境监测报告.pdf"
    assert attachment.size == 9


# --- HTML -------------------------------------------------------------------------------------


def test_html_to_text() -> None:
    html = ("<html><head><title>t</title><style>p{x:1}</style></head><body>"
            "<script>alert('x')</script><p>经查&amp;核实&nbsp;&lt;属实&gt;</p>"
            "<div>第一行<br>第二行<br/>第三行</div><table><tr><td>a</td><td>b</td></tr></table>"
            "<blockquote><div>引用</div></blockquote><p>环境\n保护</p></body></html>")
    assert html_to_text(html) == ("经查&核实 <属实>\n\n第一行\n第二行\n第三行\n\na b\n\n"
                                  "> 引用\n\n环境保护")


@pytest.mark.parametrize("markup", [
    "<a" * 50_000, '<a "' * 30_000, "<!--" * 30_000, "<title>" * 30_000, "<!" * 50_000,
    "<a " + "x=1 " * 50_000, "&#" * 50_000, "<blockquote>" * 10_000 + "x",
])
def test_hostile_html_stays_linear(markup: str) -> None:
    started = time.perf_counter()
    html_to_text(markup)
    assert time.perf_counter() - started < 2.0


def test_unclosed_script_drops_the_rest_like_a_browser() -> None:
    assert html_to_text("<p>经查属实</p><script>var a = '<p>x</p>';") == "经查属实"


# --- limits -----------------------------------------------------------------------------------


def test_size_limit_keeps_the_text_and_records_the_cut() -> None:
    line = base64.b64encode(bytes(57)) + b"\r\n"
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xe7\xbb\x8f\xe6\x9f\xa5\r\n--b\r\n"
           b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + line * 5000 + b"--b--\r\n")
    msg = parse_message(raw, max_bytes=10_000)
    assert msg.text == "经查"
    [note] = msg.truncated
    kept = int(note.rsplit(" ", 1)[1].replace(",", ""))
    assert note.startswith(f"message is {len(raw):,} bytes; parsed the first ")
    assert 9_900 < kept <= 10_000
    assert msg.attachments[0].size < 10_000


def test_part_limit() -> None:
    parts = b"".join(b"--b\r\nContent-Type: image/png; name=i%d.png\r\n\r\nx\r\n" % i
                     for i in range(30))
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xe7\xbb\x8f\xe6\x9f\xa5\r\n"
           + parts + b"--b--\r\n")
    msg = parse_message(raw, max_parts=10)
    assert msg.text == "经查"
    assert len(msg.attachments) == 8
    assert msg.truncated == ("message has 32 parts; read the first 10",)


# --- never raises -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    msg = parse_message(raw)
    assert msg.size == len(raw)


_HEADERISH = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    b"=?gbk?B?", b"?=", b"\r\n\r\n", b"--x--\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"charset=\"gb2312\"", b"\xd6\xd0", b"<html><blockquote>", b"message/rfc822\r\n\r\n",
    b"filename*0*=gbk''%D6", b"Content-Type: message/delivery-status\r\n\r\n", b"\x00", b"=",
])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.one_of(_HEADERISH, st.binary(min_size=1, max_size=40)))
        else:
            del data[at:at + draw(st.integers(1, 200))]
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_corpus_never_raises(raw: bytes) -> None:
    msg = parse_message(raw)
    assert isinstance(msg.text, str)


def test_deep_nesting_and_non_bytes_do_not_raise() -> None:
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                      for i in range(400))
    assert parse_message(nested).size == len(nested)
    untyped_caller = bytearray(b"Subject: x\r\n\r\nbody")  # e.g. straight from a socket buffer
    assert parse_message(untyped_caller).text == "body"  # type: ignore[arg-type]


# --- the single-part shortcut gives what the whole parse gives --------------------------------


def _parsed_both_ways(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    from mailprobe import decode
    quick = parse_message(raw)
    with monkeypatch.context() as patched:
        patched.setattr(decode, "_parse_bytes", decode._PARSER.parsebytes)
        whole = parse_message(raw)
    return quick, whole


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_the_single_part_shortcut_parses_the_corpus_as_the_parser_does(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crlf = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as IMAP sends
    quick, whole = _parsed_both_ways(crlf, monkeypatch)
    assert quick == whole


_HEADER_LINES = st.sampled_from([
    b"From: =?utf-8?b?5p2O?= <a@x.test>", b"To: b@y.test", b"Subject: =?gbk?b?u9i4tA==?=",
    b"Subject: \xc4\xe3\xba\xc3 raw 8-bit", b"Content-Type: text/plain; charset=utf-8",
    b"Content-Type: text/html; charset=gb2312", b"Content-Type: multipart/alternative; "
    b"boundary=\"b1\"", b"Content-Type: message/rfc822", b"Content-Type: multipart/mixed",
    b"Content-Type: text/plain; charset=\"", b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable", b"X-Folded: one", b"\ttwo continued",
    b" three continued", b"not a header line", b"From nobody Mon Jan 1", b"Date: Mon, 2 Nov 2015 "
    b"10:00:00 +0800", b"Message-ID: <1@x.test>", b"Bare: cr\rinside", b"Bare: lf\ninside", b""])
_BODIES = st.sampled_from([
    b"", b"\xc4\xe3\xba\xc3\r\n", b"hello\r\n\r\n> quoted\r\n", b"5L2g5aW9\r\n",
    b"=E4=BD=A0=\r\n=E5=A5=BD\r\n", b"--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1--\r\n",
    b"line\rwith bare CR\nand LF\r\n", b"\r\n\r\n\r\n", b"From: inner@x.test\r\n\r\nbody"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_HEADER_LINES, max_size=8), st.lists(_BODIES, max_size=3),
       st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n"]))
def test_the_single_part_shortcut_parses_any_message_as_the_parser_does(
        lines: list[bytes], bodies: list[bytes], gap: bytes) -> None:
    raw = b"\r\n".join(lines) + b"\r\n" + gap + b"".join(bodies)
    with pytest.MonkeyPatch.context() as monkeypatch:
        quick, whole = _parsed_both_ways(raw, monkeypatch)
    assert quick == whole


# --- the clean header block reader gives the parser's message -----------------------------------

_FIELD_PARTS = st.sampled_from([
    b"Subject", b"X-A", b"From ", b"From", b" Lead", b"\tTab", b"", b"N\xc3\xa9", b"A B", b"a:b",
    b"Content-Type", b"To"])
_VALUE_PARTS = st.sampled_from([
    b"", b" ", b"  plain", b"\tx", b"v: with colon", b"\xc4\xe3\xba\xc3", b"=?utf-8?b?5p2O?=",
    b"trailing  ", b"a\x0bb\x0cc\x1cd", b"bare\rcr", b"bare\nlf", b" text/plain",
    b"multipart/mixed"])


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        if lines and draw(st.booleans()):
            lines.append(draw(st.sampled_from([b" ", b"\t", b"  ", b"\x0b", b"\x0c"]))
                         + draw(_VALUE_PARTS))
        else:
            lines.append(draw(_FIELD_PARTS) + b":" + draw(_VALUE_PARTS))
    return b"\r\n".join(lines) + b"\r\n\r\n" + draw(_BODIES)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_blocks())
def test_the_clean_header_block_reader_stores_fields_as_the_parser_does(raw: bytes) -> None:
    from mailprobe import decode
    quick, whole = decode._parse_bytes(raw), decode._PARSER.parsebytes(raw)
    assert list(quick.raw_items()) == list(whole.raw_items())
    assert [type(d) for d in quick.defects] == [type(d) for d in whole.defects]
    assert quick.get_unixfrom() == whole.get_unixfrom()
    assert quick.get_content_type() == whole.get_content_type()
    if not quick.is_multipart():
        assert quick.get_payload() == whole.get_payload()


def test_the_clean_header_block_reader_takes_only_clean_blocks() -> None:
    from mailprobe import decode
    assert decode._clean_header_block("Subject: a\r\n\tb\r\nTo: x@y.test\r\n") is not None
    for block in ("From nobody\r\nSubject: a\r\n", " lead: x\r\n", "Subject: a\rb\r\n",
                  "no colon\r\n", ": empty name\r\n", "Subject: a\r\n\r\n", ""):
        assert decode._clean_header_block(block) is None, block


# --- the walk reads each part's fields once, and types parts as the stdlib does ----------------

_CONTENT_TYPES = st.sampled_from([
    None, "", "text/plain", "TEXT/HTML; charset=gbk", " text/plain ; charset=utf-8",
    "multipart/mixed;\r\n boundary=\"b\"", "multipart/digest; boundary=d", "text", "a/b/c",
    "/", "text/", "message/rfc822", "application/pdf; name=a.pdf", "text/plain\udcc4\udce3",
    "\udcd6\udcd0/plain", ";charset=utf-8", "Text/Plain;"])


@settings(max_examples=300)
@given(_CONTENT_TYPES, _CONTENT_TYPES, st.booleans())
@example("multipart/digest; boundary=d", None, False)  # a digest's parts default to messages
def test_a_part_s_content_type_is_the_stdlib_s(outer: str | None, inner: str | None,
                                               duplicate: bool) -> None:
    from email.message import Message

    from mailprobe import decode
    parent, child = Message(), Message()
    for part, value in ((parent, outer), (child, inner)):
        if value is not None:
            part["Content-Type"] = value
            if duplicate:
                part["content-type"] = "application/x-second"
    if outer is not None and outer.startswith("multipart/digest"):
        child.set_default_type("message/rfc822")  # as the parser does inside a digest
    walk = decode._Walk(10, "")
    for part in (parent, child):
        assert walk.content_type(part) == part.get_content_type()
        assert walk.fields(part) is walk.fields(part)  # read once
        assert walk.fields(part).get("content-type", "") == decode.raw_header(part,
                                                                              "content-type")
