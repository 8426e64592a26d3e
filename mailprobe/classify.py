"""Classifying a parsed message: reply, acknowledgement, auto-reply, bounce or unrelated."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from mailprobe.decode import ParsedMessage, RecipientStatus, looks_like_bounce
from mailprobe.quotes import ReplyText, split_reply

__all__ = [
    "BounceType",
    "Classification",
    "MessageKind",
    "Substance",
    "classify",
    "garbled_chars",
]


class MessageKind(StrEnum):
    REPLY = "reply"
    ACKNOWLEDGEMENT = "acknowledgement"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    UNRELATED = "unrelated"


class BounceType(StrEnum):
    HARD = "hard"  # permanent (5.x.x): the channel is not usable
    SOFT = "soft"  # temporary (4.x.x): the mail may still arrive


@dataclass(frozen=True, slots=True)
class Substance:
    """What the machine proposes about a reply's content; an evaluator confirms or overrides.

    ``chars`` counts the new text without whitespace (a Chinese character is a unit of
    meaning, wrapped lines are not). ``referral_only``: it sends the citizen elsewhere and
    gives no answer of its own. ``garbled``: how many of those characters no charset made
    readable (replacement characters, controls, private-use and unassigned code points).
    """

    chars: int
    answer_cues: tuple[str, ...]
    referral_cues: tuple[str, ...]
    referral_only: bool
    garbled: int = 0

    @property
    def addresses_question(self) -> bool:
        return bool(self.answer_cues)

    @property
    def unreadable(self) -> bool:
        """Too garbled for anyone to say what it answers: an evaluator must look at it.

        A tenth is far above what real mail has (a stray control character, an emoji
        missing from a font); a text decoded with the wrong charset has far more.
        """
        return self.garbled >= _GARBLED_MIN and self.garbled * 10 >= self.chars


@dataclass(frozen=True, slots=True)
class Classification:
    """The kind, with the observations that decided it in plain words (``evidence``).

    ``bounce_type`` is set only for kind bounce; ``failed_recipients`` and ``dsn_status``
    are what the report said, also when the bounce was not trusted.
    """

    kind: MessageKind
    bounce_type: BounceType | None
    failed_recipients: tuple[str, ...]
    dsn_status: str
    new_text: str
    substance: Substance
    evidence: tuple[str, ...]
    confidence: float
    quoted_text: str = ""
    quote_marker: str = ""


def _cues(*pairs: tuple[str, str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((label, re.compile(pattern, re.IGNORECASE)) for label, pattern in pairs)


# Matched against the new text with all whitespace removed: clients wrap Chinese anywhere.
_ANSWER = _cues(
    ("经查", r"(经|經)(查|核查|核实|核實|调查|調查|了解|研究)"),
    ("根据《…》", r"(根据|根據|依据|依據|按照)《[^》]{1,40}》"), ("依据", r"依据|依據|依照"),
    ("答复如下", r"(答复|答覆|回复|回覆)如下"), ("第…条", r"第[一二三四五六七八九十百\d]+(条|條)"),
    ("处理结果", r"(处理|办理)(结果|情况)(如下|为|是|[:：])"),
    ("现答复", r"(现|現)(答复|答覆|回复|函复)|特此(答复|答覆|回复)"),
    ("您反映的", r"(您|你)(所)?(反映|咨询|询问)的"),
)
# Restating the question, or citing rules in general: not an answer on their own.
_RESTATING = frozenset({"您反映的", "依据"})
_REFERRAL = _cues(
    ("请向…咨询", r"请(您)?(直接)?向.{1,30}?(咨询|反映|投诉|举报|申请|了解|联系)"),
    ("请拨打", r"请(您)?(拨打|致电|拨)"), ("12369", r"12369"), ("12345", r"12345"),
    ("请到…窗口", r"请(您)?(到|前往|至).{1,30}?(窗口|大厅|服务中心)"),
    ("不属于我局职责", r"不属于(我|本)(局|单位|部门|委|厅|办|中心)?.{0,4}(职责|职能|管辖|受理)"),
    ("建议您联系", r"建议(您)?(直接)?(向|联系|咨询|致电)"),
    ("请登录…网站", r"请(您)?(登录|登陆|访问|关注).{1,40}?(网站|平台|网页)"),
)
_ACKNOWLEDGE = _cues(
    ("您的来信已收到", r"(来信|来件|邮件|信件|咨询|留言)(已)?收到|"
                       r"已收到(您|你)?的?(来信|来件|邮件|信件|咨询|留言)"),
    ("我们将尽快处理", r"(将|会)尽快(处理|答复|回复|办理|反馈|给您)|尽快(给|为)您(答复|回复|处理)"),
    ("已受理", r"已(被)?受理|予以受理|正在(处理|办理)"),
    ("受理编号", r"(受理|查询|信件|业务)(编号|号|码)|查询(密码|码)"),
    ("…个工作日内答复", r"\d+个工作日内(予以)?(答复|回复|办理|处理|反馈|回函)"),
    ("we have received", r"wehavereceivedyour|thankyouforcontacting|willrespondwithin"),
)
_OUT_OF_OFFICE = _cues(
    ("休假", r"休假|年假|产假|病假|假期"), ("外出", r"外出|出差|不在办公室|不在单位"),
    ("不能及时回复", r"(不能|无法)及时(回复|处理|查看)"),
    ("out of office", r"outof(the)?office|onvacation|on(annual)?leave|awayfrom(the|my)office"),
    ("验证请求", r"点击.{0,20}链接.{0,10}(验证|确认)|verifyyou|challenge"),
)
_MARKETING = _cues(
    ("退订", r"退订|unsubscribe"), ("优惠", r"优惠|折扣|促销|特价|限时|秒杀"),
    ("广告", r"广告|【AD】|推广"), ("发票", r"代开.{0,4}发票|发票代开"),
    ("免费领取", r"免费(领取|试用|获取)|点击.{0,6}(领取|查看|进入)"), ("中奖", r"中奖|抽奖|红包"),
    ("贷款", r"贷款|理财"), ("加微信", r"加(微信|QQ|V信)"), ("newsletter", r"newsletter|订阅"),
)
_BOUNCE_TEXT = _cues(
    ("系统退信", r"系统退信|退信"), ("投递失败", r"投递失败|发送失败|无法投递|未能送达|无法送达"),
    ("邮件被退回", r"(被|已)退回"), ("could not be delivered", r"couldnotbedelivered|undeliver"),
)
_HARD_TEXT = _cues(
    ("收件人不存在", r"收件人不存在|用户不存在|无此用户|(帐|账)(号|户)不存在|(邮箱|地址)不存在"),
    ("域名不存在", r"域名不存在|域名无效"), ("账号已停用", r"(已|被)(停用|注销|禁用|冻结)"),
    ("user unknown", r"userunknown|nosuchuser|doesnotexist|mailboxunavailable"),
)
_SOFT_TEXT = _cues(
    ("对方邮箱已满", r"邮箱已满|空间不足|容量(已满|不足)|mailboxfull|overquota"),
    ("稍后重试", r"稍后(重试|再试)|暂时|延迟|正在重试|仍在尝试|超时|timedout|delayed"),
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(自动回复|自動回覆|自动答复|自动回执|Automatic reply|Auto[- ]?Reply|Autoreply|"
    r"Out of (the )?Office|Abwesend|Abwesenheit|Réponse automatique)", re.IGNORECASE)
_REPLY_SUBJECT = re.compile(r"^\s*(Re|RE|AW|答复|回复|回覆|Fw|FW|Fwd|转发)\s*[:：]")
_STATUS_IN_TEXT = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_ID_IN_TEXT = re.compile(r"<[^<>\s@]+@[^<>\s]+>")
_SPACE = re.compile(r"\s+")
_ADDRESS = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")
_RECIPIENT_LINE = re.compile(
    r"(收件人|收信人|Recipient|To)\s*[:：]\s*\S*?([\w.+%-]+@[\w-]+(?:\.[\w-]+)+)", re.IGNORECASE)
_MINUTES_QUICK = 30  # an answer written by a person rarely comes this soon
_ACK_MAX_CHARS = 400  # a receipt is short; a long text that promises is usually the answer


def classify(msg: ParsedMessage, *, sent_message_ids: Collection[str] | None = (),
             probe_sent_at: datetime | None = None,
             received_at: datetime | None = None) -> Classification:
    """Classify one message; never raises.

    ``sent_message_ids`` are the Message-IDs of our probes: a bounce counts only when it
    returns one of them. ``None`` means they are unknown (a bounce is then taken on its
    word, and the evidence says so). Times must be timezone-aware to be compared.
    """
    try:
        return _classify(msg, sent_message_ids, probe_sent_at, received_at)
    except Exception as exc:  # a rule bug must never stop the watcher; review will see it
        return Classification(MessageKind.UNRELATED, None, (), "", "", Substance(0, (), (), False),
                              (f"classifier failed: {type(exc).__name__}: {exc}"[:300],), 0.0)


def _classify(msg: ParsedMessage, sent_ids: Collection[str] | None,
              probe_sent_at: datetime | None, received_at: datetime | None) -> Classification:
    reply = split_reply(msg.text)
    compact = _SPACE.sub("", reply.new_text)
    substance = _substance(compact)
    sent = None if sent_ids is None else _normalized(sent_ids)
    minutes = _minutes_after(probe_sent_at, received_at)
    return (_bounce(msg, reply, substance, sent)
            or _automatic(msg, reply, substance, minutes)
            or _unrelated(msg, reply, substance, sent)
            or _reply(reply, substance, msg))


def _found(cues: Sequence[tuple[str, re.Pattern[str]]], text: str) -> tuple[str, ...]:
    return tuple(label for label, pattern in cues if pattern.search(text))


def _norm(message_id: str) -> str:
    return message_id.strip().strip("<>").strip().lower()


# The last frozenset of sent Message-IDs normalised: a caller classifying many messages
# passes the same one each time, and normalising a campaign's ids per message cost more
# than the rest of the classification. Only a frozenset is remembered: it cannot change.
_last_sent: tuple[frozenset[str], frozenset[str]] | None = None


def _normalized(sent_ids: Collection[str]) -> frozenset[str]:
    global _last_sent
    last = _last_sent
    if last is not None and last[0] is sent_ids:
        return last[1]
    normalized = frozenset(_norm(i) for i in sent_ids)
    if isinstance(sent_ids, frozenset):
        _last_sent = (sent_ids, normalized)
    return normalized


def _substance(compact: str) -> Substance:
    answers = _found(_ANSWER, compact)
    referrals = _found(_REFERRAL, compact)
    strong = [a for a in answers if a not in _RESTATING]
    return Substance(len(compact), answers, referrals, bool(referrals) and not strong,
                     garbled_chars(compact))


# What decoding leaves where it failed: U+FFFD, C0 and C1 controls (whitespace is removed
# before counting), the private-use areas (GB18030 maps undefined byte pairs there) and the
# planes 4 to 13, where nothing is assigned (four-byte GB18030 sequences of random bytes).
# Plane 14 is left out: its variation selectors are real text. All of these but U+FFFD are
# unprintable, which lets the usual text through with one quick test.
_GARBLED = re.compile("[\x00-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\U00040000-\U000dffff"
                      "\U000f0000-\U0010ffff]")
_GARBLED_MIN = 5


def garbled_chars(text: str) -> int:
    """How many characters of ``text`` are what failed decoding leaves (``_GARBLED``)."""
    if text.isprintable() and "\ufffd" not in text:
        return 0
    return len(_GARBLED.findall(text))


def _result(kind: MessageKind, reply: ReplyText, substance: Substance, evidence: list[str],
            confidence: float, bounce: tuple[BounceType | None, tuple[str, ...], str] = (
                None, (), "")) -> Classification:
    return Classification(kind, bounce[0], bounce[1], bounce[2], reply.new_text, substance,
                          tuple(evidence), round(min(confidence, 1.0), 2), reply.quoted_text,
                          reply.marker)


def _minutes_after(sent: datetime | None, received: datetime | None) -> float | None:
    if sent is None or received is None:
        return None
    try:
        return (received - sent).total_seconds() / 60
    except TypeError:  # naive and aware mixed: no timing rather than a wrong one
        return None


# --- (a) bounces ------------------------------------------------------------------------------


def _bounce(msg: ParsedMessage, reply: ReplyText, substance: Substance,
            sent: frozenset[str] | None) -> Classification | None:
    failures = [s for s in msg.delivery_status if s.action in ("failed", "delayed")
                or s.status[:1] in ("4", "5")]
    if msg.delivery_status and not failures:
        done = ", ".join(f"<{s.recipient}> {s.action or s.status}" for s in msg.delivery_status)
        return _result(MessageKind.UNRELATED, reply, substance,
                       [f"delivery report without a failure: {done}"], 0.9)
    if failures:
        kind, recipients, status, evidence = _from_report(failures)
        confidence = 0.98 if failures[0].source == "delivery-status" else 0.9
    elif looks_like_bounce(msg):  # bounce words in a person's mail prove nothing
        full_text = _SPACE.sub("", msg.text)
        if not (_found(_BOUNCE_TEXT, full_text + msg.subject) or msg.automation.failed_recipients):
            return None
        kind, recipients, status, evidence = _from_text(msg, full_text)
        confidence = 0.85
    else:
        return None
    trusted, why = _returns_ours(msg, sent)
    evidence.append(why)
    if not trusted:
        return _result(MessageKind.UNRELATED, reply, substance, evidence, 0.8,
                       (None, recipients, status))
    return _result(MessageKind.BOUNCE, reply, substance, evidence, confidence,
                   (kind, recipients, status))


def _status_type(status: RecipientStatus) -> BounceType:
    if status.status:
        return BounceType.HARD if status.status.startswith("5") else BounceType.SOFT
    return BounceType.SOFT if status.action == "delayed" else BounceType.HARD


def _from_report(failures: list[RecipientStatus]) -> tuple[
        BounceType, tuple[str, ...], str, list[str]]:
    evidence = []
    for s in failures:
        what = f"status {s.status}" if s.status else f"action {s.action}"
        source = "DSN" if s.source == "delivery-status" else s.source
        evidence.append(f"{source} for <{s.recipient}> {what} ({_status_type(s)})")
    types = {_status_type(s) for s in failures}
    worst = next((s for s in failures if _status_type(s) is BounceType.HARD), failures[0])
    kind = BounceType.HARD if BounceType.HARD in types else BounceType.SOFT
    return kind, tuple(dict.fromkeys(s.recipient for s in failures)), worst.status, evidence


def _from_text(msg: ParsedMessage, compact: str) -> tuple[
        BounceType, tuple[str, ...], str, list[str]]:
    """A bounce written for people (Chinese providers, old MTAs): cues, codes, addresses."""
    said = _found(_BOUNCE_TEXT, compact + msg.subject)
    hard, soft = _found(_HARD_TEXT, compact), _found(_SOFT_TEXT, compact)
    code = _STATUS_IN_TEXT.search(msg.text)
    status = code.group(0) if code else ""
    if hard or (code and code.group(1) == "5"):
        kind, why = BounceType.HARD, "/".join(hard) or status
    elif soft or (code and code.group(1) == "4"):
        kind, why = BounceType.SOFT, "/".join(soft) or status
    else:
        kind, why = BounceType.HARD, "no temporary cause named: taken as hard"
    recipients = _text_recipients(msg)
    sender = msg.from_[0].addr if msg.from_ else "unknown sender"
    evidence = [f"bounce text from {sender}: {'/'.join(said) or 'X-Failed-Recipients'}",
                f"failed recipient {', '.join(recipients) or 'not named'}: {why} ({kind})"]
    return kind, recipients, status, evidence


def _text_recipients(msg: ParsedMessage) -> tuple[str, ...]:
    named = _ADDRESS.findall(msg.automation.failed_recipients)
    named += [m.group(2) for m in _RECIPIENT_LINE.finditer(msg.text)]
    if not named:
        named = [r for returned in msg.returned for r in returned.recipients]
    return tuple(dict.fromkeys(a.lower() for a in named))


def _returns_ours(msg: ParsedMessage, sent: frozenset[str] | None) -> tuple[bool, str]:
    """A bounce is believed only if it returns a message we sent (anyone can forge one)."""
    candidates = [r.message_id for r in msg.returned if r.message_id]
    candidates += [i for i in (msg.in_reply_to, *msg.references) if i]
    candidates += _ID_IN_TEXT.findall(msg.text)
    candidates = list(dict.fromkeys(c for c in candidates if c != msg.message_id))
    if sent is None:
        shown = candidates[0] if candidates else "no Message-ID"
        return True, f"returned message {shown} not checked: no sent Message-IDs given"
    ours = next((c for c in candidates if _norm(c) in sent), None)
    if ours is not None:
        return True, f"returns our message {ours}"
    if not candidates:
        return False, "names no returned Message-ID: cannot be tied to a probe"
    return False, f"returns {candidates[0]}, not a message we sent"


# --- (b) automatic replies and acknowledgements -----------------------------------------------


def _auto_signals(msg: ParsedMessage) -> list[str]:
    auto = msg.automation
    signals = []
    if auto.auto_submitted and auto.auto_submitted.strip().lower() != "no":
        signals.append(f"Auto-Submitted: {auto.auto_submitted}")
    for name, value in (("X-Autoreply", auto.x_autoreply), ("X-Autorespond", auto.x_autorespond),
                        ("X-MS-Exchange-Inbox-Rules-Loop", auto.exchange_rules_loop),
                        ("X-MS-Exchange-Generated-Message-Source", auto.exchange_generated_by)):
        if value:
            signals.append(f"{name}: {value}")
    precedence = auto.precedence.strip().lower()
    listed = auto.list_unsubscribe or auto.list_id
    if precedence == "auto_reply" or (precedence in ("bulk", "junk") and not listed):
        signals.append(f"Precedence: {auto.precedence}")
    subject = _AUTO_SUBJECT.match(msg.subject)
    if subject:
        signals.append(f"subject starts with {subject.group(1).strip()!r}")
    if signals and auto.x_auto_response_suppress:
        signals.append(f"X-Auto-Response-Suppress: {auto.x_auto_response_suppress}")
    return signals


def _automatic(msg: ParsedMessage, reply: ReplyText, substance: Substance,
               minutes: float | None) -> Classification | None:
    signals = _auto_signals(msg)
    strong = [a for a in substance.answer_cues if a not in _RESTATING]
    if not signals and (strong or substance.chars > _ACK_MAX_CHARS):
        return None  # a person's answer: no need to look for receipt phrases
    compact = _SPACE.sub("", f"{msg.subject}\n{reply.new_text}")
    acks, away = _found(_ACKNOWLEDGE, compact), _found(_OUT_OF_OFFICE, compact)
    quick = minutes is not None and 0 <= minutes <= _MINUTES_QUICK
    timing = [f"arrived {minutes:.0f} min after the probe"] if quick and minutes is not None else []
    evidence = signals.copy()
    if signals and strong and substance.chars >= 100:
        return None  # a portal that mails its answer marks it automatic; the answer counts
    if signals and away:
        evidence.append(f"out-of-office phrases: {', '.join(away)}")
        return _result(MessageKind.AUTO_REPLY, reply, substance, evidence, 0.95)
    if acks and (signals or (not strong and substance.chars <= _ACK_MAX_CHARS)):
        evidence += [f"acknowledgement phrases: {', '.join(acks)}", *timing]
        if not signals:
            evidence.append(f"no answer in the new text ({substance.chars} chars)")
        return _result(MessageKind.ACKNOWLEDGEMENT, reply, substance, evidence,
                       (0.95 if signals else 0.8) + 0.1 * bool(timing))
    if signals:
        return _result(MessageKind.AUTO_REPLY, reply, substance, evidence, 0.9)
    if away and not strong and substance.chars <= _ACK_MAX_CHARS:
        evidence.append(f"out-of-office phrases without auto headers: {', '.join(away)}")
        return _result(MessageKind.AUTO_REPLY, reply, substance, evidence, 0.6)
    return None


# --- (c) replies and (d) unrelated mail -------------------------------------------------------


def _relation(msg: ParsedMessage, reply: ReplyText, sent: frozenset[str] | None) -> str:
    """Why the message looks like an answer to something we wrote ("" when nothing does)."""
    threaded = [i for i in (msg.in_reply_to, *msg.references) if i]
    if sent is not None and any(_norm(i) in sent for i in threaded):
        return "threaded to our probe"
    if sent is None and threaded:
        return "threaded (In-Reply-To/References)"
    if _REPLY_SUBJECT.match(msg.subject):
        return "reply subject"
    return f"quotes an original ({reply.marker})" if reply.marker else ""


def _unrelated(msg: ParsedMessage, reply: ReplyText, substance: Substance,
               sent: frozenset[str] | None) -> Classification | None:
    if _relation(msg, reply, sent):
        return None  # whatever it looks like, it answers something we wrote
    auto = msg.automation
    listed = [f"{n} header" for n, v in (("List-Unsubscribe", auto.list_unsubscribe),
                                         ("List-Id", auto.list_id)) if v]
    if auto.precedence.strip().lower() in ("bulk", "list", "junk") and listed:
        listed.append(f"Precedence: {auto.precedence}")
    marketing = _found(_MARKETING, _SPACE.sub("", f"{msg.subject}\n{msg.text}"))
    if not listed and len(marketing) < 2:
        return None
    evidence = listed + ([f"marketing phrases: {', '.join(marketing)}"] if marketing else [])
    evidence.append("no relation to a probe (not threaded, no reply subject, no quote)")
    return _result(MessageKind.UNRELATED, reply, substance, evidence, 0.9 if listed else 0.7)


def _reply(reply: ReplyText, substance: Substance, msg: ParsedMessage) -> Classification:
    evidence = []
    if msg.automation.auto_submitted.strip().lower() == "no":
        evidence.append("Auto-Submitted: no")
    if _auto_signals(msg):
        evidence.append(f"automatic headers ({'; '.join(_auto_signals(msg))}) "
                        "but the new text answers")
    cues = "/".join(substance.answer_cues)
    evidence.append(f"new text {substance.chars} chars" + (f" with {cues}" if cues else ""))
    if reply.marker:
        evidence.append(f"quoted original found by {reply.marker}")
    if substance.referral_only:
        evidence.append(f"referral only: {'/'.join(substance.referral_cues)}")
    if not substance.chars:
        evidence.append("new text empty")
    confidence = 0.9 if substance.answer_cues else 0.75 if substance.chars >= 20 else 0.5
    if substance.unreadable:
        evidence.append(f"new text unreadable: {substance.garbled} of {substance.chars} "
                        "characters garbled (wrong or missing charset?)")
        confidence = 0.2
    return _result(MessageKind.REPLY, reply, substance, evidence,
                   confidence if substance.chars else 0.3)
