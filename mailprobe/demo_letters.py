"""The mail the demo's agencies send: replies as their clients write them, receipts, bounces.

Byte-level builders (no I/O): Foxmail and QQ Mail replies in GBK/GB18030 without threading
headers, Outlook HTML replies with In-Reply-To, Coremail replies with '>' quoting, a staff
member's own UTF-8 reply, web-form answers, automatic receipts, Exchange out-of-office
notices and delivery status notifications (Postfix and a Chinese provider's 系统退信). The
MIME helpers at the top also write the test corpus (``tests/messages/make_corpus.py``).
"""

from __future__ import annotations

import base64
import quopri
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = [
    "Client",
    "Original",
    "Reply",
    "acknowledgement",
    "answer_text",
    "b64",
    "build_reply",
    "crlf",
    "dsn_bounce",
    "head",
    "html_of",
    "multipart",
    "out_of_office",
    "part",
    "qp",
    "staff_login",
    "text_part",
    "word",
]

ZONE = ZoneInfo("Asia/Shanghai")
_WEEKDAYS = "一二三四五六日"


# --- MIME building blocks ------------------------------------------------------------------------


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def qp(data: bytes) -> bytes:
    return quopri.encodestring(data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")


def word(text: str, charset: str, codec: str | None = None, enc: str = "B") -> str:
    """An RFC 2047 encoded word; ``codec`` writes the bytes when it differs from the label."""
    data = text.encode(codec or charset)
    if enc == "B":
        return f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    q = "".join(chr(b) if b < 128 and chr(b).isalnum() else f"={b:02X}" for b in data)
    return f"=?{charset}?Q?{q}?="


def head(*fields: tuple[str, str | bytes]) -> bytes:
    out = b""
    for name, value in fields:
        raw = value if isinstance(value, bytes) else value.encode("ascii")
        out += name.encode("ascii") + b": " + raw + b"\r\n"
    return out


def part(fields: bytes, body: bytes) -> bytes:
    return fields + b"\r\n" + body


def multipart(boundary: str, *parts: bytes, preamble: bytes = b"") -> bytes:
    out = preamble
    for p in parts:
        out += b"--" + boundary.encode() + b"\r\n" + p.rstrip(b"\r\n") + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def text_part(text: str, charset: str, cte: str, codec: str | None = None,
              ctype: str = "text/plain") -> bytes:
    data = crlf(text).encode(codec or charset)
    body = b64(data) if cte == "base64" else qp(data) if cte == "quoted-printable" else data
    return part(head(("Content-Type", f'{ctype}; charset="{charset}"'),
                     ("Content-Transfer-Encoding", cte)), body)


def html_of(text: str) -> str:
    paras = "".join(f"<div>{line or '<br>'}</div>" for line in text.split("\n"))
    return f"<html><head><meta charset=gbk><style>div{{font-size:14px}}</style></head>" \
           f"<body>{paras}</body></html>"


# --- what a reply needs to know ----------------------------------------------------------------


class Client(StrEnum):
    """The software that writes an agency's answer; it decides charset, quoting, threading."""

    FOXMAIL = "foxmail"  # GBK labelled GB2312, 发件人：/发送时间： block, no threading headers
    QQMAIL = "qqmail"  # GB18030, ---- 原始邮件 ---- block, no threading headers
    OUTLOOK = "outlook"  # HTML only, gb2312 label, In-Reply-To and References
    COREMAIL = "coremail"  # GBK quoted-printable, 在 … 写道： and '>' quoting, In-Reply-To
    STAFF = "staff"  # a staff member's own UTF-8 mail, 于 … 写道：, no threading headers
    WEBFORM = "webform"  # the web-form system mails the answer, original below 原始信件


@dataclass(frozen=True)
class Original:
    """The probe as an agency quotes it."""

    sender_name: str
    reply_to: str  # where the answer goes
    to: str  # the channel address (or form URL) it reached
    subject: str
    body: str
    at: datetime
    message_id: str = ""  # empty: it came through a web form
    headers: bytes = b""


@dataclass(frozen=True)
class Reply:
    """Who answers, from which client and address, and when."""

    client: Client
    sender: str
    bureau: str
    at: datetime


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _date(at: datetime) -> str:
    return format_datetime(at.astimezone(ZONE))


def _cn_date(at: datetime) -> str:
    local = at.astimezone(ZONE)
    return f"{local.year}年{local.month}月{local.day}日"


def _ampm(at: datetime) -> str:
    local = at.astimezone(ZONE)
    half = "上午" if local.hour < 12 else "下午"
    hour = local.hour if local.hour <= 12 else local.hour - 12
    return f"{half}{hour}:{local.minute:02d}"


# --- the words of an answer ------------------------------------------------------------------

# (keywords, the answer's substance), most specific first: the first topic whose keyword
# is in the subject wins, else the first in the letter's text.
_TOPICS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("环评", "环境影响", "公示", "审批", "备案"),
     "现答复如下：一、根据《中华人民共和国环境影响评价法》第二十二条，审批部门应当自收到环境"
     "影响报告书之日起六十日内，收到环境影响报告表之日起三十日内作出审批决定；二、环境影响"
     "登记表实行备案管理；三、受理和拟批准的项目均在我局网站“环评审批”栏目公示，公示期为"
     "五个工作日，全文可在公示期内到我局行政服务窗口查阅。"),
    (("危险废物", "危废", "废机油", "废油", "油墨", "废液"),
     "现答复如下：废机油、废油墨桶等属于《国家危险废物名录》中的危险废物。根据《中华人民共和国"
     "固体废物污染环境防治法》第五十七条，从事收集、贮存、处置危险废物经营活动的单位，必须"
     "领取危险废物经营许可证；产生单位应当交由有资质的单位处置并执行转移联单制度。经查，"
     "您反映的单位已按要求整改。"),
    (("河涌", "河道", "河水", "河里", "河边", "排污", "污水", "废水", "偷排", "死鱼"),
     "经查，我局执法人员已对该排水口进行现场检查并采样监测，监测结果显示化学需氧量、氨氮超过"
     "排放标准。根据《中华人民共和国水污染防治法》第七十四条，我局已对排污单位立案调查，"
     "责令其立即停止违法排放，处理结果将在我局网站“行政处罚”栏目公开。"),
    (("扬尘", "粉尘", "灰尘", "搅拌站", "泥头车"),
     "经查，该工地（站）围挡不完整、裸露土方未覆盖，车辆冲洗设施未正常使用。依据《广东省"
     "环境保护条例》有关规定，我局已会同住建部门责令其落实围挡、覆盖、洒水降尘和车辆冲洗措施，"
     "并处以罚款。我局将把该工地列入重点巡查名单。"),
    (("噪声", "噪音", "夜间施工", "半夜", "打桩"),
     "经查，您反映的工地夜间施工问题属实，该工地未取得夜间连续作业证明。根据《中华人民共和国"
     "环境噪声污染防治法》第三十条，在城市市区噪声敏感建筑物集中区域内，禁止夜间进行产生环境"
     "噪声污染的建筑施工作业。我局已责令施工单位立即停止夜间作业，并将在近期组织夜间巡查。"),
    (("油烟", "异味", "臭味", "气味", "熏"),
     "经查，该单位的油烟净化设施长期未清洗，废气收集不完善，排气筒高度不足。根据《中华人民"
     "共和国大气污染防治法》的有关规定，我局已责令其限期整改：清洗、更换净化设施，加高排气筒，"
     "整改完成后我局将组织复查，复查结果将在我局网站公开。"),
    (("空气质量", "监测数据", "PM2.5", "水质", "数据"),
     "现答复如下：我市空气质量实时数据和每日空气质量报告在我局网站“环境质量”栏目发布，"
     "地表水水质状况按月公布。根据《环境空气质量标准》（GB 3095-2012），评价采用六项污染物"
     "的日均值。如需历史数据，可依据《政府信息公开条例》向我局申请公开。"),
)
_GENERIC = ("经查，您反映的情况我局已安排执法人员现场核查。根据核查情况，我局已责令相关单位"
            "限期整改，并将跟踪整改落实情况。")
_REFERRALS = ("您好！您反映的问题属于属地管理事项，请向所在区（县）环境保护局反映，或拨打"
              "12369环保热线。谢谢！",
              "您好！该事项不属于我局职责范围，建议您联系当地城市管理部门，或拨打12345政府服务"
              "热线咨询。")
_OPENINGS = ("您好！来信收悉。", "您好！", "您好！您的来信已转我局相关科室办理。", "")
_CLOSINGS = ("特此答复。", "感谢您对环境保护工作的关心和支持！",
             "如有疑问，欢迎在工作日来电咨询。", "如发现新的问题，可拨打12369环保热线举报。")
_DEPARTMENTS = ("办公室", "信访办", "环境监察分局", "污染控制科", "法规科", "行政服务科")


def answer_text(rng: random.Random, bureau: str, original: Original, at: datetime, *,
                referral: bool) -> str:
    """The agency's own words: salutation, substance (or a referral), signature."""
    name = original.sender_name
    if referral:
        return f"{rng.choice(_REFERRALS)}\n\n{bureau}\n"
    substance = next((s for text in (original.subject, original.body)
                      for keys, s in _TOPICS if any(k in text for k in keys)), _GENERIC)
    opening = rng.choice(_OPENINGS)
    closing = rng.choice(_CLOSINGS)
    return (f"{name}：\n    {opening}{substance}\n    {closing}\n\n"
            f"{bureau}{rng.choice(_DEPARTMENTS)}\n{_cn_date(at)}\n")


_SURNAMES = ("chen", "li", "huang", "zhang", "liang", "wu", "lin", "he", "luo", "zheng")
_GIVEN = ("hui", "min", "wei", "jun", "fang", "yan", "qiang", "ling", "jie", "ping")


def staff_login(rng: random.Random) -> str:
    """A staff member's personal mailbox name, such as chenhui or li.min."""
    sep = rng.choice(("", ".", ""))
    return f"{rng.choice(_SURNAMES)}{sep}{rng.choice(_GIVEN)}"


# --- replies, client by client -----------------------------------------------------------------


def build_reply(rng: random.Random, reply: Reply, original: Original, text: str) -> bytes:
    """The answer ``text`` as ``reply.client`` writes it, quoting ``original`` its way."""
    build = {Client.FOXMAIL: _foxmail, Client.QQMAIL: _qqmail, Client.OUTLOOK: _outlook,
             Client.COREMAIL: _coremail, Client.STAFF: _staff, Client.WEBFORM: _webform}
    return build[reply.client](rng, reply, original, text)


def _local(address: str) -> str:
    return address.partition("@")[0]


def _foxmail(rng: random.Random, r: Reply, o: Original, text: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    body = (f"{text}\n{r.sender}\n\u3000\n发件人： {o.sender_name}\n"
            f"发送时间： {sent:%Y-%m-%d %H:%M}\n收件人： {_local(o.to)}\n主题： {o.subject}\n"
            f"{o.body}\n")
    boundary = f"----=_001_NextPart{rng.randrange(10**11, 10**12)}_=----"
    alt = multipart(boundary, text_part(body, "GB2312", "base64", "gb18030"),
                    text_part(html_of(body), "GB2312", "quoted-printable", "gb18030",
                              "text/html"))
    return head(
        ("Date", _date(r.at)),
        ("From", f'"{word(r.bureau, "GB2312", "gb18030")}" <{r.sender}>'),
        ("To", f'"{word(o.sender_name, "GB2312", "gb18030")}" <{o.reply_to}>'),
        ("Subject", word(f"回复: {o.subject}", "GB2312", "gb18030")),
        ("X-Priority", "3"), ("X-Has-Attach", "no"), ("X-Mailer", "Foxmail 7.2.7.116[cn]"),
        ("Mime-Version", "1.0"),
        ("Message-ID", f"<{r.at.astimezone(ZONE):%Y%m%d%H%M%S}{rng.randrange(10**6, 10**7)}"
                       f"@{r.sender.partition('@')[2]}>"),
        ("Content-Type", f'multipart/alternative;\r\n\tboundary="{boundary}"'),
    ) + b"\r\nThis is a multi-part message in MIME format.\r\n\r\n" + alt


def _qqmail(rng: random.Random, r: Reply, o: Original, text: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    body = (f"{text}\n------------------ 原始邮件 ------------------\n"
            f'发件人: "{o.sender_name}"<{o.reply_to}>;\n'
            f"发送时间: {_cn_date(sent)}(星期{_WEEKDAYS[sent.weekday()]}) {_ampm(sent)}\n"
            f'收件人: "{_local(o.to)}"<{o.to}>;\n主题: {o.subject}\n\n{o.body}\n')
    # QQ Mail folds a long subject into encoded words cut at a byte count, maybe mid-character.
    data = f"回复：{o.subject}".encode("gb18030")
    cut = min(len(data), 21)
    subject = f"=?gb18030?B?{base64.b64encode(data[:cut]).decode()}?="
    if data[cut:]:
        subject += f"\r\n =?gb18030?B?{base64.b64encode(data[cut:]).decode()}?="
    boundary = "----=_NextPart_" + "_".join(_hex(rng, 8).upper() for _ in range(3))
    alt = multipart(boundary, text_part(body, "gb18030", "base64"),
                    text_part(html_of(body), "gb18030", "base64", ctype="text/html"))
    return head(
        ("X-QQ-FEAT", _hex(rng, 32)), ("X-HAS-ATTACH", "no"),
        ("From", f'"{word(r.bureau, "gb18030")}"<{r.sender}>'),
        ("To", f'"{word(o.sender_name, "gb18030")}"<{o.reply_to}>'),
        ("Subject", subject), ("Mime-Version", "1.0"),
        ("Content-Type", f'multipart/alternative;\r\n\tboundary="{boundary}"'),
        ("Content-Transfer-Encoding", "8Bit"), ("Date", _date(r.at)), ("X-Priority", "3"),
        ("Message-ID", f"<tencent_{_hex(rng, 24).upper()}@qq.{r.sender.partition('@')[2]}>"),
        ("X-QQ-MIME", "TCMime 1.0 by Tencent"), ("X-Mailer", "QQMail 2.x"),
    ) + b"\r\nThis is a multi-part message in MIME format.\r\n\r\n" + alt


def _outlook(rng: random.Random, r: Reply, o: Original, text: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    paras = "".join(f"<p class=MsoNormal><span style='font-size:10.5pt'>{line or '&nbsp;'}"
                    f"<o:p></o:p></span></p>\n" for line in text.split("\n"))
    quoted = "".join(f"<p class=MsoNormal>{line or '&nbsp;'}<o:p></o:p></p>\n"
                     for line in o.body.split("\n"))
    html = f"""<html xmlns:o="urn:schemas-microsoft-com:office:office">
<head><meta http-equiv=Content-Type content="text/html; charset=gb2312">
<meta name=Generator content="Microsoft Word 14 (filtered medium)">
<style><!--
p.MsoNormal, li.MsoNormal, div.MsoNormal {{margin:0cm; font-size:12.0pt; font-family:宋体;}}
--></style></head>
<body lang=ZH-CN link=blue vlink=purple><div class=WordSection1>
{paras}<div><div style='border:none;border-top:solid #B5C4DF 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b><span style='font-size:10.0pt'>发件人:</span></b><span
style='font-size:10.0pt'> {o.sender_name} [mailto:{o.reply_to}] <br><b>发送时间:</b>
{_cn_date(sent)} {sent:%H:%M}<br><b>收件人:</b> {o.to}<br><b>主题:</b>
{o.subject}<o:p></o:p></span></p>
</div></div>
<p class=MsoNormal>&nbsp;<o:p></o:p></p>
{quoted}</div></body></html>
"""
    return head(
        ("From", f"{word(r.bureau, 'gb2312', 'gb18030')} <{r.sender}>"),
        ("To", f"'{word(o.sender_name, 'gb2312', 'gb18030')}' <{o.reply_to}>"),
        ("Subject", word(f"答复: {o.subject}", "gb2312", "gb18030")),
        ("Date", _date(r.at)),
        ("Message-ID", f"<{_hex(rng, 32).upper()}@EXCH01.{r.sender.partition('@')[2]}>"),
        ("In-Reply-To", o.message_id), ("References", o.message_id),
        ("Thread-Topic", word(o.subject, "gb2312", "gb18030")),
        ("Thread-Index", base64.b64encode(rng.randbytes(22)).decode()),
        ("Accept-Language", "zh-CN, en-US"), ("Content-Language", "zh-CN"),
        ("X-MS-Has-Attach", ""), ("Content-Type", 'text/html; charset="gb2312"'),
        ("Content-Transfer-Encoding", "quoted-printable"), ("MIME-Version", "1.0"),
    ) + b"\r\n" + qp(crlf(html).encode("gb18030"))


def _coremail(rng: random.Random, r: Reply, o: Original, text: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    quoted = "\n".join(">" + line for line in o.body.split("\n"))
    attribution = f'在 {sent:%Y-%m-%d %H:%M:%S}，"{o.sender_name}" <{o.reply_to}> 写道：'
    body = f"{text}\n\n\n{attribution}\n{quoted}\n"
    html = ('<div style="line-height:1.7;color:#000000;font-size:14px;font-family:Arial">'
            + "".join(f"<div>{line}</div>" for line in text.split("\n"))
            + f"<br>{attribution.replace('<', '&lt;').replace('>', '&gt;')}<br> "
            '<blockquote id="isReplyContent" style="PADDING-LEFT: 1ex; MARGIN: 0px 0px 0px '
            '0.8ex; BORDER-LEFT: #ccc 1px solid">'
            + "<br>".join(o.body.split("\n")) + "</blockquote></div>")
    boundary = f"----=_Part_{rng.randrange(10**5, 10**6)}_{rng.randrange(10**9, 10**10)}." \
               f"{int(r.at.timestamp() * 1000)}"
    alt = multipart(boundary, text_part(body, "GBK", "quoted-printable", "gb18030"),
                    text_part(html, "GBK", "quoted-printable", "gb18030", "text/html"))
    domain = r.sender.partition("@")[2]
    return head(
        ("Date", _date(r.at) + " (CST)"),
        ("From", f'"{word(r.bureau, "GBK", "gb18030")}" <{r.sender}>'),
        ("To", f'"{word(o.sender_name, "GBK", "gb18030")}" <{o.reply_to}>'),
        ("Subject", word(f"Re:{o.subject}", "GBK", "gb18030")),
        ("X-Priority", "3"),
        ("X-Mailer", "Coremail Webmail Server Version XT5.0.13 build 20150911(75469.8113)"
                     " Copyright (c) 2002-2015 www.mailtech.cn"),
        ("In-Reply-To", o.message_id), ("References", o.message_id),
        ("Content-Type", f'multipart/alternative; \r\n\tboundary="{boundary}"'),
        ("MIME-Version", "1.0"),
        ("Message-ID", f"<{_hex(rng, 8)}.{_hex(rng, 4)}.{_hex(rng, 11)}.Coremail."
                       f"{_local(r.sender)}@{domain}>"),
        ("X-Coremail-Locale", "zh_CN"),
    ) + b"\r\n" + alt


def _staff(rng: random.Random, r: Reply, o: Original, text: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    name = _local(r.sender)
    intro = "你好！你发到局信箱的邮件已转给我办理。"
    if "：\n    " in text:
        text = text.replace("：\n    ", f"：\n    {intro}", 1)
    quoted = "\n".join("> " + line for line in o.body.split("\n"))
    body = (f"{text}\n{o.sender_name} <{o.reply_to}> 于{_cn_date(sent)}周"
            f"{_WEEKDAYS[sent.weekday()]} {_ampm(sent)}写道：\n{quoted}\n")
    return head(
        ("MIME-Version", "1.0"),
        ("From", f"{word(name, 'UTF-8')} <{r.sender}>"),
        ("Date", _date(r.at)),
        ("Message-ID", f"<CA{base64.urlsafe_b64encode(rng.randbytes(21)).decode()}"
                       f"@mail.{r.sender.partition('@')[2]}>"),
        ("Subject", word(f"Re: {o.subject}", "UTF-8", enc="Q")),
        ("To", f"{word(o.sender_name, 'UTF-8')} <{o.reply_to}>"),
        ("Content-Type", "text/plain; charset=UTF-8"),
        ("Content-Transfer-Encoding", "base64"),
    ) + b"\r\n" + b64(crlf(body).encode("utf-8"))


def _webform(rng: random.Random, r: Reply, o: Original, text: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    body = (f"{text}\n-------- 原始信件 --------\n您于{_cn_date(sent)}通过我局网站提交的留言："
            f"\n标题：{o.subject}\n内容：{o.body}\n")
    return head(
        ("From", f'"{word(r.bureau + "网上信访", "GBK", "gb18030")}" <{r.sender}>'),
        ("To", o.reply_to),
        ("Subject", word(f"答复：{o.subject}", "GBK", "gb18030")),
        ("Date", _date(r.at)),
        ("Message-ID", f"<{int(r.at.timestamp() * 1000)}.{rng.randrange(10**4, 10**5)}"
                       f"@xfxt.{r.sender.partition('@')[2]}>"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=GBK"),
        ("Content-Transfer-Encoding", "base64"), ("X-Mailer", "JavaMail"),
    ) + b"\r\n" + b64(crlf(body).encode("gb18030"))


# --- automatic mail --------------------------------------------------------------------------


def acknowledgement(rng: random.Random, bureau: str, domain: str, o: Original,
                    at: datetime) -> bytes:
    """A receipt: the petition system's (threaded, Auto-Submitted) or a web form's."""
    if not o.message_id:
        number = f"{rng.randrange(10**4):04d}"
        body = (f"尊敬的{o.sender_name}：\n    您好！您于{_cn_date(o.at)}通过我局网站提交的信件"
                f"《{o.subject}》（受理编号：XF{o.at.astimezone(ZONE):%Y%m%d}-{number}，查询码："
                f"{_hex(rng, 6).upper()}）已受理，我们将在15个工作日内答复。\n    留言内容："
                f"{o.body}\n\n{bureau}\n{_cn_date(at)}\n")
        return head(
            ("From", f'"{word(bureau + "网上信访", "GBK", "gb18030")}" <xfxt@{domain}>'),
            ("To", o.reply_to), ("Subject", word("信件受理回执", "GBK", "gb18030")),
            ("Date", _date(at)),
            ("Message-ID", f"<{int(at.timestamp() * 1000)}.{number}@xfxt.{domain}>"),
            ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=GBK"),
            ("Content-Transfer-Encoding", "base64"), ("X-Mailer", "JavaMail"),
        ) + b"\r\n" + b64(crlf(body).encode("gb18030"))
    body = (f"{o.sender_name}，您好！\n\n您的来信已收到，我们将尽快处理，并在15个工作日内答复。\n"
            f"本邮件由系统自动发送，请勿直接回复。\n\n{bureau}\n")
    return head(
        ("From", f'"{word(bureau + "信访系统", "UTF-8")}" <noreply@{domain}>'),
        ("To", o.reply_to), ("Subject", word(f"来信已收到：{o.subject}", "UTF-8")),
        ("Date", _date(at)),
        ("Message-ID", f"<ack.{at.astimezone(ZONE):%Y%m%d%H%M%S}.{rng.randrange(10**4)}@{domain}>"),
        ("In-Reply-To", o.message_id), ("References", o.message_id),
        ("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All"),
        ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=UTF-8"),
        ("Content-Transfer-Encoding", "quoted-printable"),
    ) + b"\r\n" + qp(crlf(body).encode("utf-8"))


def out_of_office(rng: random.Random, o: Original, at: datetime, *, days: int) -> bytes:
    """Exchange's automatic reply from the channel's keeper, away for ``days`` days."""
    local = at.astimezone(ZONE)
    back = local.toordinal() + days
    back_day = datetime.fromordinal(back)
    text = (f"您好！\n\n我于{local.month}月{local.day}日至{back_day.month}月{back_day.day}日休假，"
            "期间不能及时回复邮件。如有急事，请联系局办公室。\n")
    html = "<html><body>" + "".join(f"<p>{line}</p>" for line in text.split("\n")) + \
        "</body></html>"
    boundary = f"_000_{_hex(rng, 32).upper()}EXCH02_"
    alt = multipart(boundary, text_part(text, "utf-8", "base64"),
                    text_part(html, "utf-8", "base64", ctype="text/html"))
    return head(
        ("From", f"<{o.to}>"), ("To", f"{word(o.sender_name, 'utf-8')} <{o.reply_to}>"),
        ("Subject", word(f"自动回复: {o.subject}", "utf-8", enc="Q")),
        ("Thread-Topic", word(o.subject, "utf-8")), ("Date", _date(at)),
        ("Message-ID", f"<{_hex(rng, 32).upper()}@EXCH02.{o.to.partition('@')[2]}>"),
        ("In-Reply-To", o.message_id), ("Content-Language", "zh-CN"),
        ("X-MS-Has-Attach", ""), ("X-Auto-Response-Suppress", "All"),
        ("X-MS-Exchange-Inbox-Rules-Loop", o.to),
        ("Content-Type", f'multipart/alternative;\r\n\tboundary="{boundary}"'),
        ("MIME-Version", "1.0"),
    ) + b"\r\n" + alt


def dsn_bounce(rng: random.Random, o: Original, at: datetime, *, chinese: bool) -> bytes:
    """The persona's provider returns the probe: the agency's server said 550 user unknown."""
    provider = o.reply_to.partition("@")[2]
    rcpt, remote = o.to, o.to.partition("@")[2]
    if chinese:
        return _dsn_chinese(rng, o, at, provider)
    queue = _hex(rng, 11).upper()
    notice = f"""This is the mail system at host mx.{provider}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

                   The mail system

<{rcpt}>: host mx.{remote}[192.0.2.25] said: 550 5.1.1
    <{rcpt}>: Recipient address rejected: User unknown in local recipient
    table (in reply to RCPT TO command)
"""
    dsn = f"""Reporting-MTA: dns; mx.{provider}
X-Postfix-Queue-ID: {queue}
X-Postfix-Sender: rfc822; {o.reply_to}
Arrival-Date: {_date(o.at)}

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.{remote}
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User
    unknown in local recipient table
"""
    boundary = f"{queue}.{int(at.timestamp())}/mx.{provider}"
    report = multipart(
        boundary,
        part(head(("Content-Description", "Notification"),
                  ("Content-Type", "text/plain; charset=us-ascii")), crlf(notice).encode()),
        part(head(("Content-Description", "Delivery report"),
                  ("Content-Type", "message/delivery-status")), crlf(dsn).encode()),
        part(head(("Content-Description", "Undelivered Message Headers"),
                  ("Content-Type", "text/rfc822-headers")), o.headers),
        preamble=b"This is a MIME-encapsulated message.\r\n\r\n")
    return head(
        ("Return-Path", "<>"), ("Date", _date(at) + " (CST)"),
        ("From", f"MAILER-DAEMON@{provider} (Mail Delivery System)"),
        ("Subject", "Undelivered Mail Returned to Sender"), ("To", o.reply_to),
        ("Auto-Submitted", "auto-replied"), ("MIME-Version", "1.0"),
        ("Content-Type",
         f'multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"'),
        ("Content-Transfer-Encoding", "8bit"),
        ("Message-Id", f"<{at.astimezone(ZONE):%Y%m%d%H%M%S}.{queue}@mx.{provider}>"),
    ) + b"\r\n" + report


def _dsn_chinese(rng: random.Random, o: Original, at: datetime, provider: str) -> bytes:
    sent = o.at.astimezone(ZONE)
    text = f"""抱歉，您的邮件被退回来了……

原邮件信息：
　时　间：{sent:%Y-%m-%d %H:%M:%S}
　主　题：{o.subject}
　收件人：{o.to}

退信原因：
　收件人不存在。请核对收件人地址是否正确。
　服务器返回信息：550 User not found: {o.to}

此为系统邮件，请勿回复。
"""
    boundary = f"----=_Part_{rng.randrange(10**4)}_{rng.randrange(10**9)}.{int(at.timestamp())}"
    body = multipart(
        boundary, text_part(text, "GBK", "base64", "gb18030"),
        part(head(("Content-Type", 'message/rfc822; name="original.eml"'),
                  ("Content-Disposition", 'attachment; filename="original.eml"')),
             o.headers + b"\r\n" + b64(o.body.encode("utf-8"))))
    return head(
        ("Return-Path", "<>"),
        ("From", f'"{word("系统退信", "GBK", "gb18030")}" <postmaster@{provider}>'),
        ("To", o.reply_to), ("Subject", word("系统退信", "GBK", "gb18030")),
        ("Date", _date(at) + " (CST)"),
        ("Message-ID", f"<postmaster.{_hex(rng, 8)}.{_hex(rng, 4)}@{provider}>"),
        ("MIME-Version", "1.0"), ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ) + b"\r\n" + body
