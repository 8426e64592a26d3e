"""Separating a reply's new text from the quoted original and the signature."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprobe.quotes import ANGLE, HEADER_BLOCK, SEPARATOR, WROTE, split_reply

ANSWER = "您好！经查，该企业已于11月5日完成整改。\n特此答复。"
ASK = "您好！请问该企业是否有排污许可？"

QUOTE_STYLES = [
    ("QQ Mail / Foxmail", SEPARATOR,
     f"------------------ 原始邮件 ------------------\n发件人: \"张伟\"<zhangwei@mail.test>;\n"
     f"发送时间: 2015年11月2日(星期一) 上午9:30\n收件人: \"hbj\"<hbj@sg.gd.test>;\n"
     f"主题: 咨询\n\n{ASK}"),
    ("QQ Mail English", SEPARATOR,
     f"------------------ Original ------------------\nFrom:  \"张伟\"<zhangwei@mail.test>;\n"
     f"Date:  Mon, Nov 2, 2015 09:30 AM\n{ASK}"),
    ("Outlook zh", SEPARATOR,
     f"-----原始邮件-----\n发件人: 张伟 [mailto:zhangwei@mail.test] \n"
     f"发送时间: 2015年11月3日 10:21\n"
     f"收件人: hbj@mm.gd.test\n主题: 咨询\n\n{ASK}"),
    ("Outlook en", SEPARATOR,
     f"-----Original Message-----\nFrom: Zhang Wei [mailto:zhangwei@mail.test]\n"
     f"Sent: Tuesday, November 03, 2015 10:21 AM\nTo: hbj@mm.gd.test\n\n{ASK}"),
    ("Foxmail header block", HEADER_BLOCK,
     f"发件人： 张伟\n发送时间： 2015-11-02 09:30\n收件人： hbj\n主题： 咨询\n{ASK}"),
    ("Outlook en header block, no separator", HEADER_BLOCK,
     f"From: Zhang Wei [mailto:zhangwei@mail.test]\nSent: Tuesday, November 03, 2015 10:21 AM\n"
     f"To: hbj@mm.gd.test\nSubject: question\n\n{ASK}"),
    ("Outlook zh-TW", HEADER_BLOCK,
     f"寄件者: 王芳 [mailto:wangfang@mail.test]\n寄件日期: 2015年11月3日 上午 10:21\n{ASK}"),
    ("Coremail 在…写道", WROTE,
     f"在 2015-11-02 09:30:12，\"张伟\" <zhangwei@mail.test> 写道：\n>{ASK}"),
    ("Coremail 在…年月日", WROTE, f"在 2015年11月3日 上午10:21，张伟 写道：\n{ASK}"),
    ("126 于…写道", WROTE, f"张伟 于 2015-11-03 10:21:00 写道：\n{ASK}"),
    ("Gmail zh", WROTE, f"张伟 <zhangwei@mail.test> 于2015年11月3日周二 上午10:21写道：\n> {ASK}"),
    ("On … wrote", WROTE,
     f"On Mon, Nov 2, 2015 at 9:30 AM, Zhang Wei <zhangwei@mail.test> wrote:\n> {ASK}"),
    ("On … wrote wrapped", WROTE,
     f"On Mon, Nov 2, 2015 at 9:30 AM, Zhang Wei\n<zhangwei@mail.test> wrote:\n\n> {ASK}"),
    ("163 At … wrote", WROTE,
     f"At 2015-11-02 09:30:12, \"张伟\" <zhangwei@mail.test> wrote:\n>{ASK}"),
    ("> only", ANGLE, f"> {ASK}\n> 谢谢"),
]


@pytest.mark.parametrize(("client", "marker", "quote"), QUOTE_STYLES,
                         ids=[q[0] for q in QUOTE_STYLES])
def test_quote_styles(client: str, marker: str, quote: str) -> None:
    reply = split_reply(f"{ANSWER}\n\n{quote}\n")
    assert reply.new_text == ANSWER
    assert reply.marker == marker
    assert reply.quoted_text == quote.strip()
    assert ASK in reply.quoted_text


def test_outlook_rule_above_the_header_block_goes_with_the_quote() -> None:
    text = f"{ANSWER}\n\n{'_' * 32}\n发件人: 张伟\n发送时间: 2015年11月3日\n{ASK}"
    reply = split_reply(text)
    assert reply.new_text == ANSWER
    assert reply.quoted_text.startswith("________")


def test_header_block_with_blank_lines_between_fields() -> None:
    # HTML converted to text puts blank lines between Outlook's paragraphs.
    text = f"{ANSWER}\n\n发件人: 张伟\n\n发送时间: 2015年11月3日\n\n主题: 咨询\n\n{ASK}"
    assert split_reply(text).new_text == ANSWER


def test_a_from_line_without_a_time_is_new_text() -> None:
    text = "发件人：我局办公室\n经查，该企业已整改。"
    reply = split_reply(text)
    assert reply.new_text == text and reply.marker == ""


def test_no_marker_keeps_everything() -> None:
    text = "您好！\n经查，该企业已整改。\n\n韶关市环境保护局"
    assert split_reply(text) == split_reply(text)
    reply = split_reply(text)
    assert (reply.new_text, reply.quoted_text, reply.marker, reply.signature) == (text, "", "", "")


def test_inline_answers_between_quoted_lines_are_kept() -> None:
    text = "> 问题一？\n答：可以。\n> 问题二？\n答：不可以。"
    reply = split_reply(text)
    assert reply.new_text == "答：可以。\n答：不可以。"
    assert reply.quoted_text == "> 问题一？\n> 问题二？"
    assert reply.marker == ANGLE


@pytest.mark.parametrize("signature", [
    "发自我的iPhone", "发自我的 iPad", "来自网易邮箱大师", "发自网易邮箱大师",
    "Sent from my iPhone",
    "从我的 iPhone 发送", "發自我的 iPhone", "发自我的华为手机", "hbj@sg.gd.test",
])
def test_app_signatures(signature: str) -> None:
    reply = split_reply(f"{ANSWER}\n\n{signature}\n\n-----原始邮件-----\n{ASK}")
    assert reply.new_text == ANSWER
    assert reply.signature == signature


def test_dash_dash_space_signature() -> None:
    reply = split_reply(f"{ANSWER}\n-- \n韶关市环境保护局 办公室\n电话：略")
    assert reply.new_text == ANSWER
    assert reply.signature == "-- \n韶关市环境保护局 办公室\n电话：略"


def test_a_dash_line_far_from_the_end_is_not_a_signature() -> None:
    body = "\n".join(f"第{i}行" for i in range(20))
    text = f"开头\n--\n{body}"
    assert split_reply(text).new_text == text


def test_windows_line_ends() -> None:
    reply = split_reply("经查属实。\r\n\r\n-----原始邮件-----\r\n发件人: x")
    assert reply.new_text == "经查属实。" and reply.marker == SEPARATOR


def test_very_long_lines_stay_fast() -> None:
    split_reply("在" + "很长" * 50_000 + "\n" + "x" * 100_000)


_FRAGMENTS = st.sampled_from([
    "经查，", "属实。", "\n", "\n\n", "> ", "------------------ 原始邮件 ------------------",
    "-----原始邮件-----", "发件人: 张伟", "发送时间: 2015年11月3日", "在 2015-11-02，张伟 写道：",
    "On Mon, Nov 2, 2015, X wrote:", "-- ", "发自我的iPhone", "hbj@sg.gd.test", "　", " ", "\r\n",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=40).map("".join))
def test_no_text_is_ever_lost(text: str) -> None:
    reply = split_reply(text)
    kept = reply.new_text + reply.signature + reply.quoted_text
    assert sorted("".join(kept.split())) == sorted("".join(text.split()))
