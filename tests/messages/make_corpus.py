"""Write the test corpus of incoming messages (*.eml), byte for byte, and its README.

Run from the repository root: ``python tests/messages/make_corpus.py``. Deterministic: the
same bytes every run, so the files can be committed and diffs mean something. No real
addresses: agencies are under *.gd.test, citizens under mail.test, hosts use 192.0.2.0/24.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

# The MIME building blocks are shared with the demo's simulated agencies.
from mailprobe.demo_letters import b64, crlf, head, html_of, multipart, part, qp, text_part, word

HERE = Path(__file__).resolve().parent

# Message-IDs of the probes the personas sent; bounces return some of them.
PROBE = {
    "sg": "<20151102093012.5e1c0a@mail.test>",
    "fs": "<20151102100511.2b7f44@mail.test>",
    "mm": "<20151103084702.9ad311@mail.test>",
    "zj": "<20151102093012.77c0e2@mail.test>",
    "gz": "<20151103102140.e4a9b0@mail.test>",
    "jm": "<20151104091500.0c3d5f@mail.test>",
    "hz": "<20151102140233.51aa07@mail.test>",
    "st": "<20151102161005.f2e8c1@mail.test>",
    "yf": "<20151102100500.7c31d2@mail.test>",
    "yj": "<20151102103000.91be40@mail.test>",
    "sw": "<20151102110000.3d07a8@mail.test>",
    "jy": "<20151103142005.6b2f19@mail.test>",
    "cz": "<20151104083015.a9e7c3@mail.test>",
    "zq": "<20151103102100.c85d26@mail.test>",
    "hy": "<20151105090000.1e6f9b@mail.test>",
    "qy": "<20151105093000.40d8e1@mail.test>",
}


@dataclass(frozen=True)
class Sample:
    name: str
    imitates: str
    expected: str
    raw: bytes


# --- the probes, as the agencies quote them ----------------------------------------------------

ASK_SG = ("您好！我是韶关市浈江区居民。我家附近的石场近一个月经常在夜间施工，噪声很大，"
          "影响休息。请问夜间施工需要办理哪些审批手续？噪声超标应向哪个部门投诉？谢谢！")
ASK_FS = "您好，请问建设项目环境影响报告表从受理到批复一般需要多长时间？有没有法定时限？谢谢。"
ASK_MM = ("您好！茂南区镕盛电镀厂夜间偷排废水，附近小河已经变色发臭，请贵局尽快查处。"
          "请问投诉后多久能有处理结果？")
ASK_ZJ = "您好！请问湛江市饮用水水源保护区的划定范围在哪里可以查到？保护区内是否允许养殖？"
ASK_GZ = "您好！我想了解建设项目竣工环境保护验收需要提交哪些材料，是否可以网上办理？"


# --- 01-05: replies from the usual clients ----------------------------------------------------


def foxmail_gbk_reply() -> bytes:
    body = f"""张伟先生：
    您好！您反映的夜间施工噪声问题，经查，该石场位于浈江区十里亭镇，我局已于11月3日派员
现场检查，发现其夜间作业未取得夜间施工证明。根据《中华人民共和国环境噪声污染防治法》第三十条，
在城市市区噪声敏感建筑物集中区域内，禁止夜间进行产生环境噪声污染的建筑施工作业，因特殊需要必须
连续作业的，必须有县级以上人民政府或者其有关主管部门的证明。
    我局已责令其立即停止夜间作业，并将持续跟踪。如再发现夜间施工扰民，可拨打12369环保热线举报。
    特此答复。

韶关市环境保护局信访办
2015-11-04

hbj@sg.gd.test
\u3000
发件人： 张伟
发送时间： 2015-11-02 09:30
收件人： hbj
主题： 关于夜间施工噪声审批的咨询
{ASK_SG}
"""
    subject = word("回复: 关于夜间施工噪声审批的咨询", "GB2312", "gbk")
    alt = multipart("----=_001_NextPart572182624333_=----",
                    text_part(body, "GB2312", "base64", "gbk"),
                    text_part(html_of(body), "GB2312", "quoted-printable", "gbk", "text/html"))
    return head(
        ("Date", "Wed, 4 Nov 2015 15:42:10 +0800"),
        ("From", f'"{word("韶关市环境保护局", "GB2312", "gbk")}" <hbj@sg.gd.test>'),
        ("To", f'"{word("张伟", "GB2312", "gbk")}" <zhangwei@mail.test>'),
        ("Subject", subject),
        ("X-Priority", "3"), ("X-GUID", "8E1B1F3A-2C1D-4E2B-9D5A-5A0C7E1B0D11"),
        ("X-Has-Attach", "no"), ("X-Mailer", "Foxmail 7.2.7.116[cn]"),
        ("Mime-Version", "1.0"), ("Message-ID", "<201511041542104351732@sg.gd.test>"),
        ("Content-Type",
         'multipart/alternative;\r\n\tboundary="----=_001_NextPart572182624333_=----"'),
    ) + b"\r\nThis is a multi-part message in MIME format.\r\n\r\n" + alt


def qqmail_gbk_reply() -> bytes:
    body = f"""王芳女士：
您好！来信收悉。现就您咨询的建设项目环评审批时限答复如下：
一、依据《中华人民共和国环境影响评价法》第二十二条，审批部门应当自收到环境影响报告书之日起六十日内，
收到环境影响报告表之日起三十日内，分别作出审批决定并书面通知建设单位。
二、我市对环境影响登记表实行备案管理，即收即办。
如有疑问，欢迎在工作日来电咨询。

佛山市环境保护局

------------------ 原始邮件 ------------------
发件人: "王芳"<wangfang@mail.test>;
发送时间: 2015年11月2日(星期一) 上午10:05
收件人: "xinxiang"<xinxiang@fs.gd.test>;
主题: 关于建设项目环评审批时限的咨询

{ASK_FS}
"""
    # QQ Mail folds long subjects into encoded words cut at a byte count, mid-character.
    data = "回复：关于建设项目环评审批时限的咨询".encode("gbk")
    cut = 13  # inside the seventh character's two bytes
    subject = (f"=?gb18030?B?{base64.b64encode(data[:cut]).decode()}?=\r\n "
               f"=?gb18030?B?{base64.b64encode(data[cut:]).decode()}?=")
    alt = multipart("----=_NextPart_563709E1_0A9B1E48_2C7D3A11",
                    text_part(body, "gb18030", "base64", "gbk"),
                    text_part(html_of(body), "gb18030", "base64", "gbk", "text/html"))
    return head(
        ("X-QQ-FEAT", "m3LHQbpsC7VgfaOZ0nFK5i7w1bGmWz2a"),
        ("X-QQ-SSF", "00000000000000F000000000000000G"),
        ("X-HAS-ATTACH", "no"), ("X-QQ-BUSINESS-ORIGIN", "2"),
        ("X-Originating-IP", "192.0.2.41"),
        ("From", f'"{word("佛山市环境保护局", "gb18030", "gbk")}"<xinxiang@fs.gd.test>'),
        ("To", f'"{word("王芳", "gb18030", "gbk")}"<wangfang@mail.test>'),
        ("Subject", subject),
        ("Mime-Version", "1.0"),
        ("Content-Type",
         'multipart/alternative;\r\n\tboundary="----=_NextPart_563709E1_0A9B1E48_2C7D3A11"'),
        ("Content-Transfer-Encoding", "8Bit"),
        ("Date", "Thu, 5 Nov 2015 11:20:01 +0800"),
        ("X-Priority", "3"), ("Message-ID", "<tencent_3E1A2B7C5D0F1E2A3B4C5D6E@qq.fs.gd.test>"),
        ("X-QQ-MIME", "TCMime 1.0 by Tencent"), ("X-Mailer", "QQMail 2.x"),
        ("X-QQ-Mailer", "QQMail 2.x"), ("X-QQ-mid", "esmtp7t1446693601tj2x8ghsw"),
    ) + b"\r\nThis is a multi-part message in MIME format.\r\n\r\n" + alt


def gb2312_label_gb18030() -> bytes:
    body = f"""王芳：
  您好！您投诉的镕盛电镀厂偷排废水问题，经查，我局执法人员于11月5日对该厂进行了突击检查，
现场采样监测结果显示总铬、总镍均超过《电镀污染物排放标准》（GB 21900-2008）规定的限值。
依据《中华人民共和国水污染防治法》第七十四条，我局已对该厂下达责令改正违法行为决定书，并处罚款。
处理结果将在我局网站“行政处罚”栏目公开。
  感谢您对环境保护工作的支持！

经办人：刘䶮  联系人：王堃
茂名市环境保护局

-----原始邮件-----
发件人: 王芳 [mailto:wangfang@mail.test]
发送时间: 2015年11月3日 8:47
收件人: hbj@mm.gd.test
主题: 关于镕盛电镀厂排污的投诉

{ASK_MM}
"""
    # Labelled GB2312, yet 镕 and 堃 are GBK and 䶮 needs GB18030's four-byte form.
    return head(
        ("Return-Path", "<hbj@mm.gd.test>"),
        ("Received", "from mail.mm.gd.test (unknown [192.0.2.60])\r\n\tby mx.mail.test "
                     "(Postfix) with ESMTP id 3nB7Yq1xK2z9sD\r\n\tfor <wangfang@mail.test>; "
                     "Fri,  6 Nov 2015 16:05:44 +0800 (CST)"),
        ("From", f'"{word("茂名市环境保护局", "gb2312", "gb18030")}" <hbj@mm.gd.test>'),
        ("To", "<wangfang@mail.test>"),
        ("Subject", word("回复: 关于镕盛电镀厂排污的投诉", "gb2312", "gb18030")),
        ("Date", "Fri, 6 Nov 2015 16:05:31 +0800"),
        ("Message-ID", "<000a01d1186b$2c5e1f30$851a5d90$@mm.gd.test>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", 'text/plain;\r\n\tcharset="gb2312"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
        ("X-Mailer", "Microsoft Outlook 14.0"), ("Content-Language", "zh-cn"),
    ) + b"\r\n" + qp(crlf(body).encode("gb18030"))


def coremail_reply() -> bytes:
    quoted = "\n".join(">" + line for line in ASK_ZJ.split("。"))
    body = f"""张伟：
您好！根据《广东省饮用水源水质保护条例》和省政府批复的《湛江市饮用水水源保护区划分方案》，
我市饮用水水源保护区的具体范围已在我局网站“环境管理-水环境”栏目公布。经核实，
鹤地水库一级保护区内禁止从事网箱养殖、旅游、游泳、垂钓等可能污染饮用水水体的活动，
二级保护区内禁止新建、改建、扩建排放污染物的建设项目。

湛江市环境保护局



在 2015-11-02 09:30:12，"张伟" <zhangwei@mail.test> 写道：
{quoted}
"""
    html = ("<div style=\"line-height:1.7;color:#000000;font-size:14px;font-family:Arial\">"
            + "".join(f"<div>{line}</div>" for line in body.split("在 2015")[0].split("\n"))
            + "<br>在 2015-11-02 09:30:12，&quot;张伟&quot;&nbsp;&lt;zhangwei@mail.test&gt; "
            "写道：<br> <blockquote id=\"isReplyContent\" style=\"PADDING-LEFT: 1ex; "
            "MARGIN: 0px 0px 0px 0.8ex; BORDER-LEFT: #ccc 1px solid\">"
            + ASK_ZJ + "</blockquote></div>")
    alt = multipart("----=_Part_265187_1423917437.1446542101233",
                    text_part(body, "GBK", "quoted-printable"),
                    text_part(html, "GBK", "quoted-printable", ctype="text/html"))
    return head(
        ("Date", "Tue, 3 Nov 2015 17:15:01 +0800 (CST)"),
        ("From", f'"{word("湛江市环境保护局", "GBK")}" <hbj@zj.gd.test>'),
        ("To", f'"{word("张伟", "GBK")}" <zhangwei@mail.test>'),
        ("Subject", word("Re:关于饮用水源保护区范围的咨询", "GBK")),
        ("X-Priority", "3"),
        ("X-Mailer", "Coremail Webmail Server Version XT5.0.13 build 20150911(75469.8113)"
                     " Copyright (c) 2002-2015 www.mailtech.cn 163com"),
        ("X-CM-CTRLDATA", "8sU4X2Zvb3Rlcl9odG09MTIzNDo1Ng=="),
        ("Content-Type",
         'multipart/alternative; \r\n\tboundary="----=_Part_265187_1423917437.1446542101233"'),
        ("MIME-Version", "1.0"),
        ("Message-ID", "<5ab3d0a1.8c2d.150cd5e2f21.Coremail.hbj@zj.gd.test>"),
        ("X-Coremail-Locale", "zh_CN"), ("X-CM-TRANSID", "C8CowAB3f0MVd3hWxT4AAA--.2231S2"),
        ("X-Originating-IP", "[192.0.2.77]"),
    ) + b"\r\n" + alt


def outlook_html_reply() -> bytes:
    html = f"""<html xmlns:v="urn:schemas-microsoft-com:vml"
xmlns:o="urn:schemas-microsoft-com:office:office">
<head><meta http-equiv=Content-Type content="text/html; charset=gb2312">
<meta name=Generator content="Microsoft Word 14 (filtered medium)">
<style><!--
/* Font Definitions */
p.MsoNormal, li.MsoNormal, div.MsoNormal {{margin:0cm; font-size:12.0pt; font-family:宋体;}}
--></style><!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" />
</xml><![endif]--></head>
<body lang=ZH-CN link=blue vlink=purple style='text-justify-trim:punctuation'>
<div class=WordSection1>
<p class=MsoNormal><span style='font-size:10.5pt'>李娜：<o:p></o:p></span></p>
<p class=MsoNormal><span style='font-size:10.5pt'>&nbsp;&nbsp;&nbsp;
您好！经查，建设项目竣工环境保护验收需提交：（一）验收申请报告；
（二）验收监测（调查）报告；
（三）由验收监测单位出具的验收监测报告表。根据《建设项目竣工环境保护验收管理办法》第十条，
环境保护行政主管部门应自收到申请之日起<span lang=EN-US>30</span>日内完成验收。
目前我局已开通网上申报，请登录&#8220;广州市环境保护局网上办事大厅&#8221;提交电子材料后，
再将纸质材料送至受理窗口。<o:p></o:p></span></p>
<p class=MsoNormal><span lang=EN-US style='font-size:10.5pt'><o:p>&nbsp;</o:p></span></p>
<p class=MsoNormal><span style='font-size:10.5pt'>广州市环境保护局 行政服务科<o:p></o:p></span></p>
<p class=MsoNormal><span lang=EN-US><o:p>&nbsp;</o:p></span></p>
<div><div style='border:none;border-top:solid #B5C4DF 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b><span style='font-size:10.0pt'>发件人<span lang=EN-US>:</span></span></b>
<span lang=EN-US style='font-size:10.0pt'> </span><span style='font-size:10.0pt'>李娜
<span lang=EN-US>[mailto:li.na@mail.test] <br></span><b>发送时间<span lang=EN-US>:</span></b>
<span lang=EN-US> 2015</span>年<span lang=EN-US>11</span>月<span lang=EN-US>3</span>日
<span lang=EN-US> 10:21<br></span><b>收件人<span lang=EN-US>:</span></b><span lang=EN-US>
sthjj@gz.gd.test<br></span><b>主题<span lang=EN-US>:</span></b> 关于竣工环保验收材料的咨询
<o:p></o:p></span></p>
</div></div>
<p class=MsoNormal><span lang=EN-US><o:p>&nbsp;</o:p></span></p>
<p class=MsoNormal>{ASK_GZ}<o:p></o:p></p>
</div></body></html>
"""
    return head(
        ("From", f'{word("广州市环境保护局", "gb2312")} <sthjj@gz.gd.test>'),
        ("To", f"'{word('李娜', 'gb2312')}' <li.na@mail.test>"),
        ("Subject", word("答复: 关于竣工环保验收材料的咨询", "gb2312")),
        ("Date", "Mon, 9 Nov 2015 09:12:44 +0800"),
        ("Message-ID", "<9E2A5C0F3B1D4E7A8C6B0D2F4A1E3C5B@EXCH01.gz.gd.test>"),
        ("Thread-Topic", word("关于竣工环保验收材料的咨询", "gb2312")),
        ("Thread-Index", "AdEaqQxkM1H3q8Y0Rb2m7JvL0y3P8gAAAB1Q"),
        ("Accept-Language", "zh-CN, en-US"), ("Content-Language", "zh-CN"),
        ("X-MS-Has-Attach", ""), ("X-MS-TNEF-Correlator", ""),
        ("x-originating-ip", "[192.0.2.15]"),
        ("Content-Type", 'text/html; charset="gb2312"'),
        ("Content-Transfer-Encoding", "quoted-printable"), ("MIME-Version", "1.0"),
    ) + b"\r\n" + qp(crlf(html).encode("gbk"))


# --- 06-08: acknowledgements and an out-of-office ---------------------------------------------


def ack_auto_submitted() -> bytes:
    body = """李娜，您好！

您的来信已收到，我们将尽快处理，并在15个工作日内答复。
本邮件由系统自动发送，请勿直接回复。

江门市环境保护局
"""
    return head(
        ("From", f'"{word("江门市环境保护局信访系统", "UTF-8")}" <noreply@jm.gd.test>'),
        ("To", "li.na@mail.test"),
        ("Subject", word("来信已收到：关于废旧电池回收点设置的建议", "UTF-8")),
        ("Date", "Wed, 4 Nov 2015 09:15:07 +0800"),
        ("Message-ID", "<ack.20151104091507.3310@jm.gd.test>"),
        ("In-Reply-To", PROBE["jm"]), ("References", PROBE["jm"]),
        ("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=UTF-8"),
        ("Content-Transfer-Encoding", "quoted-printable"),
    ) + b"\r\n" + qp(crlf(body).encode("utf-8"))


def ack_form_receipt() -> bytes:
    body = """尊敬的李娜：
    您好！您于2015年11月02日通过我局网站提交的咨询信件（受理编号：HZHB20151102-0087，
查询码：4F7K2Q）已受理，我们将在15个工作日内答复，届时请凭受理编号和查询码在网站“信件查询”
栏目查看办理结果。
    感谢您对我局工作的关注！

惠州市环境保护局
2015年11月02日
"""
    return head(
        ("From", f'"{word("惠州市环境保护局网上信访", "GBK")}" <xfxt@hz.gd.test>'),
        ("To", "li.na@mail.test"),
        ("Subject", word("信件受理回执", "GBK")),
        ("Date", "Mon, 2 Nov 2015 14:03:12 +0800"),
        ("Message-ID", "<1446444192031.22871@xfxt.hz.gd.test>"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=GBK"),
        ("Content-Transfer-Encoding", "base64"), ("X-Mailer", "JavaMail"),
    ) + b"\r\n" + b64(crlf(body).encode("gbk"))


def out_of_office_exchange() -> bytes:
    text = """您好！

我于2015年11月2日至11月6日休假，期间不能及时回复邮件。如有急事，请联系局办公室。

李明
"""
    html = "<html><body>" + "".join(f"<p>{line}</p>" for line in text.split("\n")) + \
        "</body></html>"
    alt = multipart("_000_4B2C6E1D9F0A3B5C7D8E9F1A2B3C4D5EEXCH02stgdtest_",
                    text_part(text, "utf-8", "base64"),
                    text_part(html, "utf-8", "base64", ctype="text/html"))
    return head(
        ("From", f'{word("李明", "utf-8")} <liming@st.gd.test>'),
        ("To", f'{word("张伟", "utf-8")} <zhangwei@mail.test>'),
        ("Subject", word("自动回复: 关于海滨浴场水质监测数据的咨询", "utf-8", enc="Q")),
        ("Thread-Topic", word("关于海滨浴场水质监测数据的咨询", "utf-8")),
        ("Thread-Index", "AQHRFTxM6h0ZbJyqN0GfPZ3Rk5yFZA=="),
        ("Date", "Mon, 2 Nov 2015 16:10:19 +0800"),
        ("Message-ID", "<4B2C6E1D9F0A3B5C7D8E9F1A2B3C4D5E@EXCH02.st.gd.test>"),
        ("In-Reply-To", PROBE["st"]),
        ("Content-Language", "zh-CN"), ("X-MS-Has-Attach", ""),
        ("X-MS-Exchange-Organization-SCL", "-1"), ("X-MS-TNEF-Correlator", ""),
        ("X-Auto-Response-Suppress", "All"),
        ("X-MS-Exchange-Inbox-Rules-Loop", "liming@st.gd.test"),
        ("Content-Type",
         'multipart/alternative;\r\n\tboundary="_000_4B2C6E1D9F0A3B5C7D8E9F1A2B3C4D5EEXCH02stgdtest_"'),
        ("MIME-Version", "1.0"),
    ) + b"\r\n" + alt


# --- 09-11 and 20: bounces ---------------------------------------------------------------------


def probe_headers(message_id: str, to: str, subject: str, sender: str = "zhangwei@mail.test",
                  date: str = "Mon, 2 Nov 2015 10:05:00 +0800") -> bytes:
    return head(
        ("Return-Path", f"<{sender}>"),
        ("Received", "from pc.mail.test (unknown [192.0.2.8])\r\n\tby mx.mail.test (Postfix) "
                     f"with ESMTPSA id 3nB0Qw5rTxz1l\r\n\tfor <{to}>; {date}"),
        ("Date", date), ("From", f"{word('张伟', 'UTF-8')} <{sender}>"), ("To", to),
        ("Subject", word(subject, "UTF-8")), ("Message-ID", message_id),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=UTF-8"),
        ("Content-Transfer-Encoding", "base64"),
    )


def bounce_postfix(probe_id: str, rcpt: str, queue_id: str, subject: str) -> bytes:
    notice = f"""This is the mail system at host mx.mail.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<{rcpt}>: host mx.{rcpt.split('@')[1]}[192.0.2.25] said: 550 5.1.1
    <{rcpt}>: Recipient address rejected: User unknown in local recipient
    table (in reply to RCPT TO command)
"""
    dsn = f"""Reporting-MTA: dns; mx.mail.test
X-Postfix-Queue-ID: {queue_id}
X-Postfix-Sender: rfc822; zhangwei@mail.test
Arrival-Date: Mon,  2 Nov 2015 10:05:01 +0800 (CST)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.{rcpt.split('@')[1]}
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User
    unknown in local recipient table
"""
    boundary = f"{queue_id}.1446429902/mx.mail.test"
    report = multipart(
        boundary,
        part(head(("Content-Description", "Notification"),
                  ("Content-Type", "text/plain; charset=us-ascii")), crlf(notice).encode()),
        part(head(("Content-Description", "Delivery report"),
                  ("Content-Type", "message/delivery-status")), crlf(dsn).encode()),
        part(head(("Content-Description", "Undelivered Message Headers"),
                  ("Content-Type", "text/rfc822-headers")),
             probe_headers(probe_id, rcpt, subject)),
        preamble=b"This is a MIME-encapsulated message.\r\n\r\n")
    return head(
        ("Return-Path", "<>"),
        ("Date", "Mon,  2 Nov 2015 10:05:02 +0800 (CST)"),
        ("From", "MAILER-DAEMON@mail.test (Mail Delivery System)"),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("To", "zhangwei@mail.test"), ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
        ("Content-Type",
         f'multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"'),
        ("Content-Transfer-Encoding", "8bit"),
        ("Message-Id", f"<20151102020502.{queue_id}@mx.mail.test>"),
    ) + b"\r\n" + report


def bounce_exim_soft() -> bytes:
    rcpt = "hbj@yj.gd.test"
    notice = f"""This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.mail.test.

The message identifier is:     1ZtGxk-0003Qm-8V
The subject of the message is: {word("关于散乱污染的投诉", "UTF-8")}
The date of the message is:    Mon, 02 Nov 2015 10:30:00 +0800

The address to which the message has not yet been delivered is:

  {rcpt}
    host mx.yj.gd.test [192.0.2.33]
    Delay reason: SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    452 4.2.2 Mailbox full

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered. Eventually the mail delivery software will give up,
and when that happens, the message will be returned to you.
"""
    dsn = f"""Reporting-MTA: dns; mx.mail.test

Action: delayed
Final-Recipient: rfc822;{rcpt}
Status: 4.2.2
Remote-MTA: dns; mx.yj.gd.test
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
Will-Retry-Until: Mon, 09 Nov 2015 10:30:00 +0800
"""
    boundary = "1446518400-eximdsn-1804289383"
    report = multipart(
        boundary,
        part(head(("Content-type", "text/plain; charset=us-ascii")), crlf(notice).encode()),
        part(head(("Content-type", "message/delivery-status")), crlf(dsn).encode()),
        part(head(("Content-type", "text/rfc822-headers")),
             probe_headers(PROBE["yj"], rcpt, "关于散乱污染的投诉",
                           date="Mon, 2 Nov 2015 10:30:00 +0800")))
    return head(
        ("Return-path", "<>"),
        ("Envelope-to", "zhangwei@mail.test"),
        ("Delivery-date", "Tue, 03 Nov 2015 10:40:01 +0800"),
        ("Auto-Submitted", "auto-replied"),
        ("From", "Mail Delivery System <Mailer-Daemon@mail.test>"),
        ("To", "zhangwei@mail.test"),
        ("References", PROBE["yj"]),
        ("Content-Type", f'multipart/report; report-type=delivery-status; boundary={boundary}'),
        ("MIME-Version", "1.0"),
        ("Subject", "Warning: message 1ZtGxk-0003Qm-8V delayed 24 hours"),
        ("Message-Id", "<E1ZtdAX-0005Fp-Ba@mx.mail.test>"),
        ("Date", "Tue, 03 Nov 2015 10:40:01 +0800"),
    ) + b"\r\n" + report


def bounce_chinese_provider() -> bytes:
    rcpt = "hbj@sw.gd.test"
    text = f"""抱歉，您的邮件被退回来了……

原邮件信息：
　时　间：2015-11-02 11:00:00
　主　题：关于饮用水源保护区划定的咨询
　收件人：{rcpt}

退信原因：
　收件人不存在。请核对收件人地址是否正确。
　服务器返回信息：550 User not found: {rcpt}

建议解决方案：
　请检查收件人地址的拼写是否正确，确认后重新发送。

此为系统邮件，请勿回复。
"""
    original = probe_headers(PROBE["sw"], rcpt, "关于饮用水源保护区划定的咨询",
                             date="Mon, 2 Nov 2015 11:00:00 +0800") + b"\r\n" + b64(
        "您好！请问汕尾市饮用水源保护区的划定方案什么时候公布？".encode())
    boundary = "----=_Part_8762_1097402343.1446433202001"
    body = multipart(
        boundary,
        text_part(text, "GBK", "base64"),
        part(head(("Content-Type", 'message/rfc822; name="original.eml"'),
                  ("Content-Disposition", 'attachment; filename="original.eml"')), original))
    return head(
        ("Return-Path", "<>"),
        ("From", f'"{word("系统退信", "GBK")}" <postmaster@mail.test>'),
        ("To", "zhangwei@mail.test"),
        ("Subject", word("系统退信", "GBK")),
        ("Date", "Mon, 2 Nov 2015 11:00:02 +0800 (CST)"),
        ("Message-ID", "<postmaster.5637d2b2.1a2b@mail.test>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ) + b"\r\n" + body


# --- 12-13: a reply from another address, a referral --------------------------------------------


def reply_other_address() -> bytes:
    body = """李娜：

你好！我是揭阳市环保局污控科的陈辉，你发到局信箱的邮件已转给我办理。经查，你反映的榕城区
某塑料厂无环评手续问题属实，该厂已于今年10月被列入我市“散乱污”企业清理整治名单，
按照《揭阳市“散乱污”工业企业清理整治工作方案》，将于12月底前完成关停。

陈辉
揭阳市环境保护局污染控制科

李娜 <li.na@mail.test> 于2015年11月3日周二 下午2:20写道：
> 您好！榕城区仙桥街道的一家塑料厂没有环评手续就生产，气味很大，请问贵局是否知情？
"""
    return head(
        ("MIME-Version", "1.0"),
        ("From", f"{word('陈辉', 'UTF-8')} <chenhui@jy.gd.test>"),
        ("Date", "Thu, 5 Nov 2015 10:02:31 +0800"),
        ("Message-ID", "<CAF8d2nq0kX3Hc4m=Yt1xZ5Rk7p2sLw@mail.jy.gd.test>"),
        ("Subject", word("Re: 关于塑料厂无环评手续的举报", "UTF-8", enc="Q")),
        ("To", f"{word('李娜', 'UTF-8')} <li.na@mail.test>"),
        ("Content-Type", "text/plain; charset=UTF-8"),
        ("Content-Transfer-Encoding", "base64"),
    ) + b"\r\n" + b64(crlf(body).encode("utf-8"))


def referral_only() -> bytes:
    body = """您好！您反映的餐饮油烟扰民问题，请向潮州市城市管理局咨询，或拨打12369环保热线。

发自我的iPhone

------------------ 原始邮件 ------------------
发件人: 张伟 <zhangwei@mail.test>
发送时间: 2015年11月4日 08:30
收件人: hbj <hbj@cz.gd.test>
主题: 关于小区楼下餐饮油烟扰民的投诉

您好！我住的小区楼下新开了一家烧烤店，油烟直排到居民楼，请问应该怎么处理？
"""
    return head(
        ("From", f'"{word("潮州市环保局", "GBK")}"<hbj@cz.gd.test>'),
        ("To", f'"{word("张伟", "GBK")}"<zhangwei@mail.test>'),
        ("Subject", word("回复：关于小区楼下餐饮油烟扰民的投诉", "GBK")),
        ("Mime-Version", "1.0"), ("Date", "Fri, 6 Nov 2015 18:44:09 +0800"),
        ("Message-ID", "<tencent_7D5C2B1A0F9E8D7C6B5A4F3E@qq.cz.gd.test>"),
        ("Content-Type", 'text/plain; charset="gb18030"'),
        ("Content-Transfer-Encoding", "base64"), ("X-QQ-MIME", "TCMime 1.0 by Tencent"),
    ) + b"\r\n" + b64(crlf(body).encode("gb18030"))


# --- 14-15: unrelated -------------------------------------------------------------------------


def newsletter() -> bytes:
    html = """<html><body><table width="600"><tr><td>
<h1>【绿色生活】11月刊</h1>
<p>节能家电限时优惠，全场低至5折！点击查看详情。</p>
<p>本期推荐：空气净化器、净水器特价促销。</p>
<p style="font-size:12px">如不想再收到本邮件，请<a href="https://edm.mail.test/u/8c1f">点此退订</a>。</p>
</td></tr></table></body></html>
"""
    return head(
        ("From", f'"{word("绿色生活周刊", "UTF-8")}" <newsletter@edm.mail.test>'),
        ("To", "zhangwei@mail.test"),
        ("Subject", word("【绿色生活】11月刊：节能家电限时优惠", "UTF-8")),
        ("Date", "Tue, 3 Nov 2015 07:00:00 +0800"),
        ("Message-ID", "<20151103070000.edm.88231@edm.mail.test>"),
        ("List-Unsubscribe", "<mailto:unsubscribe@edm.mail.test?subject=8c1f>, "
                             "<https://edm.mail.test/u/8c1f>"),
        ("List-Id", "<weekly.edm.mail.test>"), ("Precedence", "bulk"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/html; charset=UTF-8"),
        ("Content-Transfer-Encoding", "base64"),
    ) + b"\r\n" + b64(crlf(html).encode("utf-8"))


def spam_invoice() -> bytes:
    body = """您好：
本公司长期代开各类增值税发票，点数优惠，真票可验证。
另有低息贷款，当天放款。详情请加微信咨询。
"""
    return head(
        ("From", f'"{word("财务", "GBK")}" <kp888@fp.mail.test>'),
        ("To", "zhangwei@mail.test"),
        ("Subject", word("各类发票代开 优惠", "GBK")),
        ("Date", "Wed, 4 Nov 2015 03:12:55 +0800"),
        ("Message-ID", "<20151104031255.55ab@fp.mail.test>"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=gbk"),
        ("Content-Transfer-Encoding", "8bit"),
    ) + b"\r\n" + crlf(body).encode("gbk")


# --- 16-19: broken and unusual encodings ------------------------------------------------------


def malformed() -> bytes:
    text = ("张伟：\r\n  您好！经查，你反映的工地扬尘问题属实，"
            "我局已责令施工单位落实围挡和洒水措施。\r\n")
    good = base64.b64encode(text.encode("gbk")).decode()
    # A stray '*' and a lost final '=': broken padding and a bad character in one part.
    broken_b64 = (good[:40] + "*" + good[40:]).rstrip("=")
    attachment = base64.b64encode(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 4)
    name = "处理结果.doc".encode("gbk")
    pct = "".join(f"%{b:02X}" for b in name)
    return head(
        ("From", "=?utf-8?B?" + base64.b64encode("云浮市环保局".encode("gbk")).decode() +
         "?= <hbj@yf.gd.test>"),
        ("To", "zhangwei@mail.test"),
        ("Subject", "回复：关于工地扬尘污染的投诉".encode("gbk")),
        ("Date", "Thu, 5 Nov 2015 25:61:00 +0800"),
        ("Message-ID", "<broken.20151105@yf.gd.test"),
        ("MIME-Version", "1.0"),
        ("Content-Type", 'multipart/mixed; boundary="----=_Part_1_declared"'),
    ) + b"\r\n" + (
        b"------=_Part_2_used\r\n"
        b"Content-Type: text/plain; charset=gbk\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + broken_b64.encode() + b"\r\n"
        b"------=_Part_2_used\r\n"
        b"Content-Type: application/msword\r\n"
        b"Content-Disposition: attachment; filename*=gbk''" + pct.encode() + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment[:300])


def big5_reply() -> bytes:
    body = """王芳女士：
  您好！經查，恒昌化工廠已於2015年10月取得排污許可證，根據《中華人民共和國大氣污染防治法》
第十八條，本局已要求其安裝廢氣在線監測設備，並於11月起每月公開監測數據。特此答覆。

肇慶市環境保護局

寄件者: 王芳 [mailto:wangfang@mail.test]
寄件日期: 2015年11月3日 上午 10:21
收件者: hbj@zq.gd.test
主旨: 關於恒昌化工廠排污問題的查詢

您好！請問恒昌化工廠是否有排污許可？附近居民經常聞到刺鼻氣味。
"""
    # Labelled Big5, written as CP950: 恒 exists only in CP950's extension rows.
    return head(
        ("From", f'"{word("肇慶市環境保護局", "big5", "cp950")}" <hbj@zq.gd.test>'),
        ("To", "<wangfang@mail.test>"),
        ("Subject", word("回覆: 關於恒昌化工廠排污問題的查詢", "big5", "cp950")),
        ("Date", "Tue, 10 Nov 2015 11:30:00 +0800"),
        ("Message-ID", "<001201d11b5c$7f3e2a10$7dba7e30$@zq.gd.test>"),
        ("MIME-Version", "1.0"), ("Content-Type", 'text/plain; charset="big5"'),
        ("Content-Transfer-Encoding", "8bit"), ("X-Mailer", "Microsoft Outlook 14.0"),
    ) + b"\r\n" + crlf(body).encode("cp950")


def utf8_label_gbk() -> bytes:
    body = """张伟：
您好！经查，东源县仙塘镇的养猪场已于11月4日完成污水处理设施改造，经我局监测，出水达标。
河源市环境保护局
"""
    return head(
        ("From", f"{word('河源市环境保护局', 'GBK')} <hbj@hy.gd.test>"),
        ("To", "zhangwei@mail.test"),
        ("Subject", word("回复：关于养猪场污水直排的投诉", "GBK")),
        ("Date", "Mon, 9 Nov 2015 15:00:00 +0800"),
        ("Message-ID", "<5640460c.1f2e@hy.gd.test>"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ) + b"\r\n" + crlf(body).encode("gbk")


def unlabelled_big5() -> bytes:
    body = """您好！經查，清遠市清城區的垃圾焚燒發電廠環境影響評價文件已由省環境保護廳批覆，
批覆文件已在省廳網站公開，請您查閱。本局將繼續加強對該項目施工期的環境監管。
清遠市環境保護局
"""
    return head(
        ("From", "hbj@qy.gd.test"), ("To", "wangfang@mail.test"),
        ("Subject", word("回覆：關於垃圾焚燒發電廠環評的查詢", "big5")),
        ("Date", "Wed, 11 Nov 2015 09:00:00 +0800"),
        ("Message-ID", "<20151111090000.aa01@qy.gd.test>"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain"),
        ("Content-Transfer-Encoding", "8bit"),
    ) + b"\r\n" + crlf(body).encode("big5")


SAMPLES = [
    Sample("01_foxmail_gbk_reply.eml",
           "Foxmail 7 reply, GBK labelled GB2312, base64, no threading headers, "
           "发件人：/发送时间： quote block, default address signature",
           "reply (经查/根据《…》/第…条/现答复; mentions 12369 but not referral-only)",
           foxmail_gbk_reply()),
    Sample("02_qqmail_gbk_reply.eml",
           "QQ Mail (exmail) reply, gb18030, subject split mid-character across two encoded "
           "words, `------------------ 原始邮件 ------------------`, no threading headers",
           "reply (答复如下/根据《…》)", qqmail_gbk_reply()),
    Sample("03_gb2312_label_gb18030.eml",
           "Outlook zh reply labelled gb2312 holding GBK (镕, 堃) and GB18030 four-byte (䶮) "
           "characters, quoted-printable, `-----原始邮件-----`",
           "reply (经查; decoded as GB18030, no replacement characters)",
           gb2312_label_gb18030()),
    Sample("04_coremail_reply.eml",
           "Coremail (163/126-style) webmail reply, GBK quoted-printable, 在 … 写道： and "
           "'>' quoting, HTML alternative with `<blockquote>`",
           "reply (根据《…》/经查)", coremail_reply()),
    Sample("05_outlook_html_reply.eml",
           "Outlook 2010 via Exchange, HTML-only body (gb2312, Word markup, `<style>`, "
           "conditional comments), 发件人:/发送时间: header block under a border",
           "reply (经查/根据《…》/第…条)", outlook_html_reply()),
    Sample("06_ack_auto_submitted.eml",
           "petition-system receipt with Auto-Submitted: auto-replied and In-Reply-To our probe",
           "acknowledgement (Auto-Submitted + 您的来信已收到/我们将尽快处理)",
           ack_auto_submitted()),
    Sample("07_ack_form_receipt.eml",
           "web-form receipt without any automatic header: 受理编号, 查询码, 15个工作日内答复",
           "acknowledgement (no answer in the new text)", ack_form_receipt()),
    Sample("08_out_of_office_exchange.eml",
           "Exchange out-of-office: 自动回复: subject, X-MS-Exchange-Inbox-Rules-Loop, "
           "X-Auto-Response-Suppress, no Auto-Submitted",
           "auto_reply (休假)", out_of_office_exchange()),
    Sample("09_bounce_postfix_hard.eml",
           "Postfix DSN (multipart/report), 550 5.1.1 user unknown, text/rfc822-headers of our "
           "probe", "bounce hard, status 5.1.1, returns our probe",
           bounce_postfix(PROBE["yf"], "hbj@yf.gd.test", "3nB0Qw5rTxz1l",
                          "关于工地扬尘污染的投诉")),
    Sample("10_bounce_exim_soft.eml",
           "Exim delay warning (multipart/report), Action: delayed, 452 4.2.2 mailbox full",
           "bounce soft, status 4.2.2, returns our probe", bounce_exim_soft()),
    Sample("11_bounce_chinese_provider.eml",
           "Chinese provider's 系统退信 from postmaster, GBK text (收件人不存在), the original "
           "attached as message/rfc822", "bounce hard, returns our probe",
           bounce_chinese_provider()),
    Sample("12_reply_other_address.eml",
           "reply from a staff member's own address (chenhui@) instead of the bureau mailbox "
           "the probe went to, UTF-8, 于 … 写道： attribution, no threading headers",
           "reply (经查/根据《…》)", reply_other_address()),
    Sample("13_referral_only.eml",
           "QQ Mail reply from a phone: 请向…咨询, 12369, 发自我的iPhone signature, 原始邮件",
           "reply, referral_only", referral_only()),
    Sample("14_newsletter.eml",
           "HTML newsletter with List-Unsubscribe, List-Id, Precedence: bulk",
           "unrelated (List-Unsubscribe)", newsletter()),
    Sample("15_spam_invoice.eml",
           "Chinese invoice spam (代开发票, 贷款, 加微信), raw 8-bit GBK body, no list headers",
           "unrelated (marketing phrases)", spam_invoice()),
    Sample("16_malformed.eml",
           "raw 8-bit GBK subject, GBK name in a utf-8 encoded word, declared boundary never "
           "used, base64 with a bad character and lost padding, RFC 2231 GBK filename, "
           "truncated attachment, impossible Date, unclosed Message-ID",
           "reply (经查; text recovered, defects recorded)", malformed()),
    Sample("17_big5_reply.eml",
           "Outlook zh-TW reply labelled big5 but written as CP950 (恒), 8-bit, "
           "寄件者:/寄件日期: header block",
           "reply (經查/根據《…》; decoded as cp950)", big5_reply()),
    Sample("18_utf8_label_gbk.eml",
           "8-bit GBK body labelled utf-8 (a misconfigured government system)",
           "reply (经查; decoded as GB18030, defect noted)", utf8_label_gbk()),
    Sample("19_unlabelled_big5.eml",
           "8-bit Big5 body with no charset at all: the detector decides",
           "reply (經查; decoded as cp950)", unlabelled_big5()),
    Sample("20_bounce_not_ours.eml",
           "Postfix DSN for a message we never sent (backscatter from forged spam)",
           "unrelated with `--sent-ids` (returns `<…>`, not a message we sent); "
           "bounce without them", bounce_postfix("<spam.7f3a1c@mail.test>", "sales@sc.gd.test",
                                                 "4Lx9Tq2bmZz8k", "发票")),
]


def readme() -> str:
    lines = [
        "# Test messages",
        "",
        "Incoming mail as the personas' mailboxes receive it, written byte for byte by",
        "`make_corpus.py` (run `python tests/messages/make_corpus.py` after changing it).",
        "No real addresses: agencies are under `*.gd.test`, citizens under `mail.test`.",
        "`sent-ids.txt` lists the Message-IDs of the probes we sent; the expected kinds assume",
        "`mailprobe classify --sent-ids tests/messages/sent-ids.txt`.",
        "",
        "| file | imitates | classifies as |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{s.name}` | {s.imitates} | {s.expected} |" for s in SAMPLES]
    return "\n".join(lines) + "\n"


def main() -> None:
    for sample in SAMPLES:
        (HERE / sample.name).write_bytes(sample.raw)
    sent = "# Message-IDs of the probes the personas sent (one per line)\n"
    (HERE / "sent-ids.txt").write_text(sent + "\n".join(PROBE.values()) + "\n", encoding="utf-8")
    (HERE / "README.md").write_text(readme(), encoding="utf-8")


if __name__ == "__main__":
    main()
