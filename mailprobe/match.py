"""Match incoming messages to the probes they answer: fixed rules, evidence and ranked guesses."""

from __future__ import annotations

import functools
import re
import sys
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from mailprobe.errors import ConfigError, InputError
from mailprobe.tokens import MAC_BYTES, find_tokens, read_token

__all__ = [
    "DECIDE_AT",
    "DEFAULT_REPLY_WINDOW",
    "MARGIN",
    "Attached",
    "FirstReplies",
    "Guess",
    "IncomingMessage",
    "MatchResult",
    "ProbeIndex",
    "Rule",
    "SentProbe",
    "attached",
    "first_replies",
    "match_message",
    "match_messages",
]

DECIDE_AT = 0.8  # a rule's best candidate must score this much to be attached without review
MARGIN = 0.15  # ... and beat the runner-up by this much; closer than that is a coin toss
# A reply may come weeks late and still count (as late), so the address rules look well past
# the 15 working days; round 2 of the seed starts 11 days after round 1 ends, which is why two
# probes of one agency in consecutive rounds go to review rather than to the newer one.
DEFAULT_REPLY_WINDOW = timedelta(days=60)
_BOUNCE_WINDOW = timedelta(days=7)  # MTAs give up retrying after about five days
_SUPPORT_FLOOR = 0.5  # an earlier rule's guess this strong contradicts a later rule's choice
_LONG_FINGERPRINT = 6  # characters: one unique detail this long identifies a letter alone
_MAX_GUESSES = 10  # a reviewer reads a short list; a street shared by 40 probes adds nothing
_EPS = 1e-9

_S_TOKEN_IRT, _S_TOKEN_REFS, _S_TOKEN_PLUS, _S_TOKEN_BODY = 1.0, 0.98, 0.97, 0.95
_S_ID_IRT, _S_ID_REFS, _CASE_PENALTY = 0.97, 0.95, 0.1
_S_BOUNCE_ID, _S_BOUNCE_RCPT = 0.95, 0.8
_S_DETAILS, _S_DETAILS_PER_UNIT, _S_DETAILS_WEAK_CAP = 0.9, 0.35, 0.7
_OTHER_MAILBOX_FACTOR = 0.8  # our letter quoted in a mailbox it was not sent from: forwarded?
_S_ADDRESS, _CHANNEL_BONUS = 0.85, 0.03
_S_DOMAIN, _S_DOMAIN_SHARED = 0.8, 0.6
_S_MAILBOX_ONLY = 0.1

# The classifier's kinds (plain strings so that this module does not depend on it).
_REPLY, _ACKNOWLEDGEMENT, _BOUNCE = "reply", "acknowledgement", "bounce"

# Free-mail domains are shared by millions; an agency using one is known by its address only.
_PUBLIC_MAIL_DOMAINS = frozenset({
    "qq.com", "vip.qq.com", "foxmail.com", "163.com", "126.com", "yeah.net", "vip.163.com",
    "vip.126.com", "188.com", "sina.com", "sina.cn", "vip.sina.com", "sohu.com", "139.com",
    "189.cn", "wo.cn", "21cn.com", "aliyun.com", "tom.com", "gmail.com", "outlook.com",
    "hotmail.com", "live.com", "yahoo.com", "icloud.com",
})


class Rule(StrEnum):
    """The matching rules, strongest first; they are tried in this order."""

    TOKEN_IN_REPLY_TO = "token_in_reply_to"
    TOKEN_PLUS_ADDRESS = "token_plus_address"
    TOKEN_IN_BODY = "token_in_body"
    OUR_MESSAGE_ID = "our_message_id"
    BOUNCE_RETURNED_MESSAGE = "bounce_returned_message"
    QUOTED_DETAILS = "quoted_details"
    MAILBOX_AND_ADDRESS = "mailbox_and_address"
    MAILBOX_AND_DOMAIN = "mailbox_and_domain"
    NONE = "none"


def _require_aware(value: datetime, what: str, owner: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what} must be an aware UTC instant", location=owner,
                         got=value.isoformat(), hint="attach tzinfo=UTC where it is read")


@dataclass(frozen=True, slots=True)
class SentProbe:
    """What the matcher knows of a sent probe; ``message_id`` is None for web-form probes."""

    probe_id: str
    round: str
    agency: str
    persona: str
    account: str  # the mailbox it was sent from, where its replies arrive
    channel_address: str | None
    sent_at: datetime
    message_id: str | None
    token: str | None = None
    fingerprints: tuple[str, ...] = ()
    agency_addresses: tuple[str, ...] = ()  # channels plus senders of earlier matched replies
    agency_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require_aware(self.sent_at, "sent_at", f"probe {self.probe_id}")


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A parsed and classified message from a watched mailbox.

    ``to_addresses`` holds every recipient address seen (To, Cc, Delivered-To); ``kind`` is
    the classifier's verdict (reply, acknowledgement, auto_reply, bounce, unrelated);
    ``message_id`` is the message's own Message-ID, so that a copy of our own probe in a
    watched folder is recognised instead of being taken for an answer.
    """

    key: str
    account: str
    received_at: datetime
    from_address: str
    folder: str = "INBOX"
    to_addresses: tuple[str, ...] = ()
    subject: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    new_text: str = ""
    quoted_text: str = ""
    full_text: str = ""
    kind: str = _REPLY
    returned_message_ids: tuple[str, ...] = ()
    returned_recipients: tuple[str, ...] = ()
    message_id: str = ""

    def __post_init__(self) -> None:
        _require_aware(self.received_at, "received_at", f"message {self.key}")


@dataclass(frozen=True, slots=True)
class Guess:
    """A candidate probe, how strongly one rule points at it, and why in plain words."""

    probe_id: str
    score: float
    rule: Rule
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The matcher's proposal for one message.

    ``probe_id`` is set only when a rule decided with confidence; otherwise ``needs_review``
    says whether an evaluator must look (candidates were found but none convincingly, or a
    reply that nothing connects to a probe). ``tried`` lists the rules consulted, in order.
    """

    key: str
    probe_id: str | None
    rule: Rule
    evidence: str
    confidence: float
    needs_review: bool
    guesses: tuple[Guess, ...]
    tried: tuple[Rule, ...]

    @property
    def is_attached(self) -> bool:
        return self.probe_id is not None and not self.needs_review


@dataclass(frozen=True, slots=True)
class _Msg:
    """The fields of a message the rules compare, normalised once."""

    src: IncomingMessage
    from_address: str
    from_domain: str
    recipients: tuple[str, ...]
    reply_to_ids: tuple[str, ...]
    reference_ids: tuple[str, ...]


_Evaluate = Callable[["ProbeIndex", _Msg], list[Guess]]
_ANGLED = re.compile(r"<([^<>]*)>")
_SPACE = re.compile(r"\s+")
# A token wrapped by a quoting client: line break, indentation and "> " markers inside it.
_QUOTED_WRAP = re.compile(r"[ \t]*\r?\n[\s>]*")
_WRAP_BYTES = bytes(c for c in range(128) if chr(c).isspace()) + b">"  # ASCII \s, and ">"
# The shortest token a one-byte probe id makes, in base32 characters.
_TOKEN_RUN = re.compile(rb"[a-zA-Z2-7]{%d}" % -(-(1 + MAC_BYTES) * 8 // 5))


def _tokens(text: str) -> list[str]:
    """find_tokens, skipped when the text cannot hold a token.

    Dropping the non-ASCII characters only joins runs, never shortens one, so a text whose
    ASCII remainder has no long enough run has no token (the Kelvin sign that IGNORECASE
    also takes for k aside); on Chinese mail this test costs a fortieth of the search.
    """
    if not _TOKEN_RUN.search(text.encode("ascii", "ignore")):
        return []
    return find_tokens(text)


def _bare_address(text: str) -> str:
    inside = _ANGLED.search(text)
    return (inside.group(1) if inside else text).strip().lower()


def _message_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Message-IDs without brackets; whitespace inside one is a client's folding, removed."""
    ids: list[str] = []
    for value in values:
        inside = _ANGLED.findall(value)
        for part in inside if inside else value.split():
            cleaned = _SPACE.sub("", part)
            if cleaned:
                ids.append(cleaned)
    return tuple(ids)


def _id_key(message_id: str) -> str:
    """RFC 5322 leaves the local part's case to the sender but the domain is case-insensitive."""
    local, at, domain = message_id.rpartition("@")
    return f"{local}@{domain.lower()}" if at else message_id


def _prepare(msg: IncomingMessage) -> _Msg:
    sender = _bare_address(msg.from_address)
    return _Msg(msg, sender, sender.rpartition("@")[2],
                tuple(_bare_address(a) for a in msg.to_addresses),
                _message_ids((msg.in_reply_to,)), _message_ids(msg.references))


def _bigram_hits(text: str, wanted: frozenset[int]) -> set[int]:
    """The pairs of adjacent characters of ``text`` that are in ``wanted``, computed in C.

    UTF-32 gives each character four bytes, so the eight-byte words read at offsets 0 and 4
    are all the overlapping pairs, each as one integer; this is several times faster than
    slicing the string pair by pair, which matters because rule 6 reads the text of every
    message that reaches it.
    """
    data = text.encode("utf-32-le", "surrogatepass")  # decoders may leave lone surrogates
    hits: set[int] = set()
    for start in (0, 4):
        usable = (len(data) - start) // 8 * 8
        if usable:
            hits |= wanted.intersection(memoryview(data[start : start + usable]).cast("Q"))
    return hits


def _bigram_code(pair: str) -> int:
    # memoryview.cast reads the words in the machine's byte order, so this must too.
    return int.from_bytes(pair.encode("utf-32-le", "surrogatepass"), sys.byteorder)


class ProbeIndex:
    """Sent probes indexed once by every key a rule looks up, so matching costs per message."""

    def __init__(self, probes: Iterable[SentProbe], secret: bytes, *,
                 round_window: timedelta | None = None) -> None:
        self.secret = secret
        self.window = DEFAULT_REPLY_WINDOW if round_window is None else round_window
        self.by_id: dict[str, SentProbe] = {}
        self._by_message_id: dict[str, list[str]] = defaultdict(list)
        self._by_folded_id: dict[str, list[str]] = defaultdict(list)
        self.by_address: dict[tuple[str, str], list[SentProbe]] = defaultdict(list)
        self._by_domain: dict[tuple[str, str], list[SentProbe]] = defaultdict(list)
        self.by_channel: dict[tuple[str, str], list[SentProbe]] = defaultdict(list)
        self._by_account: dict[str, list[SentProbe]] = defaultdict(list)
        self.by_fingerprint: dict[str, list[str]] = defaultdict(list)
        for probe in sorted(probes, key=lambda p: (p.sent_at, p.probe_id)):
            self._add(probe)
        self._account_times = {a: [p.sent_at for p in ps] for a, ps in self._by_account.items()}
        self._known_tokens = {p.token.lower(): p.probe_id for p in self.by_id.values() if p.token}
        self._anchors = self._anchor_fingerprints()
        self._anchor_codes = frozenset(self._anchors)
        self.by_fingerprint = dict(self.by_fingerprint)  # matching must never add keys

    def _add(self, probe: SentProbe) -> None:
        pid = probe.probe_id
        if pid in self.by_id:
            raise InputError("a probe id appears twice among the probes to match", got=pid)
        if probe.token is not None and read_token(probe.token, self.secret) != pid:
            raise ConfigError(f"the token stored for probe {pid} does not verify",
                              got=probe.token, hint="is the probe secret the one it was sent with?")
        self.by_id[pid] = probe
        if probe.message_id:
            for mid in _message_ids((probe.message_id,)):
                self._by_message_id[_id_key(mid)].append(pid)
                self._by_folded_id[mid.casefold()].append(pid)
        account = probe.account
        self._by_account[account].append(probe)
        addresses = {_bare_address(a) for a in probe.agency_addresses}
        if probe.channel_address:
            addresses.add(_bare_address(probe.channel_address))
            self.by_channel[account, _bare_address(probe.channel_address)].append(probe)
        for address in addresses:
            self.by_address[account, address].append(probe)
        for domain in {d.strip().lower().lstrip("@") for d in probe.agency_domains}:
            if domain and domain not in _PUBLIC_MAIL_DOMAINS:
                self._by_domain[account, domain].append(probe)
        for fp in dict.fromkeys(probe.fingerprints):
            if len(fp) >= 2:  # a single character is in every other letter
                self.by_fingerprint[fp].append(pid)

    def _anchor_fingerprints(self) -> dict[int, list[str]]:
        """Each fingerprint under its rarest character pair: a text lacking it cannot hold it."""
        counts: dict[int, int] = defaultdict(int)
        pairs = {fp: {_bigram_code(fp[i : i + 2]) for i in range(len(fp) - 1)}
                 for fp in self.by_fingerprint}
        for codes in pairs.values():
            for code in codes:
                counts[code] += 1
        anchors: dict[int, list[str]] = defaultdict(list)
        for fp, codes in pairs.items():
            anchors[min(codes, key=lambda c: (counts[c], c))].append(fp)
        return dict(anchors)

    def verify(self, token: str) -> str | None:
        """The probe id a token names when its MAC verifies; ours were verified at indexing."""
        known = self._known_tokens.get(token)
        return known if known is not None else read_token(token, self.secret)

    def fingerprints_in(self, text: str) -> list[str]:
        """The known fingerprints that occur in ``text``, in a stable order."""
        if not text or not self._anchors:
            return []
        hits = _bigram_hits(text, self._anchor_codes)
        return sorted(fp for code in hits for fp in self._anchors[code] if fp in text)

    def by_message_id(self, message_id: str) -> tuple[list[str], bool]:
        """Probe ids sent with this Message-ID, and whether the match needed case folding."""
        exact = self._by_message_id.get(_id_key(message_id))
        if exact:
            return exact, False
        return self._by_folded_id.get(message_id.casefold(), []), True

    def by_domain(self, account: str, domain: str) -> list[SentProbe]:
        """Probes whose agency owns ``domain`` or a parent of it (mail.x.gd.test, x.gd.test)."""
        found: list[SentProbe] = []
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            found.extend(self._by_domain.get((account, ".".join(labels[i:])), []))
        return found

    def recent_in_account(self, account: str, at: datetime) -> list[SentProbe]:
        """Probes sent from ``account`` within the window before ``at``, newest first."""
        probes = self._by_account.get(account, [])
        end = bisect_right(self._account_times.get(account, []), at)
        return [p for p in reversed(probes[:end]) if at - p.sent_at <= self.window]

    def in_window(self, probe: SentProbe, at: datetime) -> bool:
        return probe.sent_at <= at <= probe.sent_at + self.window

    def match(self, msg: IncomingMessage) -> MatchResult:
        """Apply the rules in their fixed order; the first that decides wins."""
        m = _prepare(msg)
        own = self._own_copy(msg)
        if own is not None:
            return MatchResult(msg.key, None, Rule.NONE, own, 0.0, False, (), ())
        rules = _BOUNCE_RULES if msg.kind == _BOUNCE else _MESSAGE_RULES
        tried: list[Rule] = []
        earlier: list[Guess] = []
        notes: list[str] = []
        blocked = False
        for rule, evaluate in rules:
            tried.append(rule)
            guesses = _merge(evaluate(self, m))
            if not guesses:
                continue
            top, why = self._decide(m, guesses)
            if top is not None:
                why = _contradiction(top, earlier) or (
                    f"来信 {top.probe_id} 符合，但前一条规则的证据不能采用"
                    if blocked else "")
                if not why:
                    return _decided(msg.key, top, guesses + earlier, tuple(tried))
            blocked = blocked or why.startswith(_BLOCK)
            notes.append(f"{rule.value}: {why}")
            earlier.extend(guesses)
        return self._undecided(m, earlier, notes, tuple(tried))

    def _own_copy(self, msg: IncomingMessage) -> str | None:
        for mid in _message_ids((msg.message_id,)):
            pids, _ = self.by_message_id(mid)
            if pids:
                return f"这是我方来信 {pids[0]} 的副本（Message-ID 为我方所发），不是答复"
        return None

    def _attachable(self, probe_id: str, m: _Msg) -> str:
        """Why ``probe_id`` cannot be attached to the message, or '' when it can."""
        probe = self.by_id.get(probe_id)
        if probe is None:
            return f"来信 {probe_id} 不在本次匹配的来信之中（其他轮次？）"
        if m.src.received_at < probe.sent_at:
            return (f"邮件收到于 {_at(m.src.received_at)}，早于来信 {probe_id} 的发出时间 "
                    f"{_at(probe.sent_at)}")
        return ""

    def _decide(self, m: _Msg, ranked: list[Guess]) -> tuple[Guess | None, str]:
        top = ranked[0]
        blocker = self._attachable(top.probe_id, m)
        if blocker:
            return None, f"{_BLOCK}{blocker}"
        if top.score < DECIDE_AT - _EPS:
            return None, (f"最可能的来信 {top.probe_id} 得分 {top.score:.2f}，"
                          f"低于 {DECIDE_AT:.2f}")
        if len(ranked) > 1 and top.score - ranked[1].score < MARGIN - _EPS:
            second = ranked[1]
            return None, (f"来信 {top.probe_id}（{top.score:.2f}）与 {second.probe_id}"
                          f"（{second.score:.2f}）得分过近，无法取舍")
        return top, ""

    def _undecided(self, m: _Msg, guesses: list[Guess], notes: list[str],
                   tried: tuple[Rule, ...]) -> MatchResult:
        msg = m.src
        if guesses:
            ranked = _rank(guesses)
            return MatchResult(msg.key, None, ranked[0].rule, "; ".join(notes),
                               ranked[0].score, True, ranked, tried)
        if msg.kind == _BOUNCE:
            return MatchResult(msg.key, None, Rule.NONE,
                               "退信所退回的不是我方发出的邮件", 0.0, False, (), tried)
        if msg.kind not in (_REPLY, _ACKNOWLEDGEMENT):
            return MatchResult(msg.key, None, Rule.NONE, "没有规则找到可能对应的来信",
                               0.0, False, (), tried)
        # A reply or receipt counts towards the scores, so one that nothing connects to a probe
        # is put before a reviewer with the mailbox's recent probes rather than dropped.
        recent = self.recent_in_account(msg.account, msg.received_at)[:_MAX_GUESSES]
        mailbox = tuple(
            Guess(p.probe_id, _S_MAILBOX_ONLY, Rule.NONE,
                  (f"由邮箱 {p.account} 于 {_at(p.sent_at)} 发往{p.agency}",))
            for p in recent)
        kind = "答复" if msg.kind == _REPLY else "回执"
        evidence = (f"{kind}（发件人 {m.from_address or '不明'}）无法由任何规则对应到来信；"
                    f"列出邮箱 {msg.account} 最近的 {len(mailbox)} 封来信")
        return MatchResult(msg.key, None, Rule.NONE, evidence, 0.0, True, mailbox, tried)


_BLOCK = "不能采用："
_BEIJING = ZoneInfo("Asia/Shanghai")


@functools.lru_cache(maxsize=4096)  # a campaign's send times recur in every message's guesses
def _at(when: datetime) -> str:
    """An instant in the evidence: Beijing time, as the evaluators read it."""
    return when.astimezone(_BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _merge(guesses: list[Guess]) -> list[Guess]:
    """One guess per probe (the best score, every reason), ranked."""
    if len(guesses) < 2:  # most rules find nothing for most messages
        return guesses
    best: dict[str, Guess] = {}
    for guess in guesses:
        old = best.get(guess.probe_id)
        if old is None:
            best[guess.probe_id] = guess
            continue
        high, low = (guess, old) if guess.score > old.score else (old, guess)
        reasons = tuple(dict.fromkeys(high.reasons + low.reasons))
        best[guess.probe_id] = Guess(high.probe_id, high.score, high.rule, reasons)
    return sorted(best.values(), key=lambda g: (-g.score, g.probe_id))


def _rank(guesses: list[Guess]) -> tuple[Guess, ...]:
    return tuple(_merge(guesses)[:_MAX_GUESSES])


def _contradiction(top: Guess, earlier: list[Guess]) -> str:
    """A reason not to attach when a stronger rule pointed elsewhere with some weight."""
    strong = [g for g in earlier if g.score >= _SUPPORT_FLOOR - _EPS]
    if not strong or any(g.probe_id == top.probe_id for g in strong):
        return ""
    others = "、".join(f"{g.probe_id}（{g.rule.value}，{g.score:.2f}）" for g in strong[:3])
    return f"{top.rule.value} 指向 {top.probe_id}，但更强的规则指向 {others}"


def _decided(key: str, top: Guess, guesses: list[Guess], tried: tuple[Rule, ...]) -> MatchResult:
    # An earlier rule may have scored the chosen probe higher while undecided; it leads anyway.
    ranked = sorted(_rank(guesses), key=lambda g: g.probe_id != top.probe_id)
    return MatchResult(key, top.probe_id, top.rule, "; ".join(top.reasons), top.score, False,
                       tuple(ranked), tried)


def _token_guesses(ix: ProbeIndex, found: Iterable[tuple[str, float, str]],
                   rule: Rule) -> list[Guess]:
    """Guesses from verified tokens; a forged or corrupted token is evidence of nothing."""
    guesses: list[Guess] = []
    for token, score, where in found:
        probe_id = ix.verify(token)
        if probe_id is not None:
            reason = f"{where}中有来信 {probe_id} 的签名令牌"
            guesses.append(Guess(probe_id, score, rule, (reason,)))
    return guesses


def _rule_token_in_reply_to(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    found = [(t, _S_TOKEN_IRT, f"In-Reply-To <{mid}> ")
             for mid in m.reply_to_ids for t in _tokens(mid)]
    count = len(m.reference_ids)
    found += [(t, _S_TOKEN_REFS, f"References <{mid}>（第 {i + 1} 个，共 {count} 个）")
              for i, mid in enumerate(m.reference_ids) for t in _tokens(mid)]
    return _token_guesses(ix, found, Rule.TOKEN_IN_REPLY_TO)


def _rule_token_plus_address(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    found: list[tuple[str, float, str]] = []
    for address in m.recipients:
        local = address.rpartition("@")[0]
        _, plus, tag = local.partition("+")
        if plus:
            found += [(t, _S_TOKEN_PLUS, f"收件地址 {address} ") for t in _tokens(tag)]
    return _token_guesses(ix, found, Rule.TOKEN_PLUS_ADDRESS)


def _body_tokens(text: str) -> list[str]:
    # Deleting the non-ASCII characters, the ASCII whitespace and the quote markers (all
    # that unwrapping may delete) only joins runs, so a text with no long enough run left
    # has no token, wrapped or not: on Chinese mail this one pass saves the two searches
    # below (unwrapping costs the most).
    if not _TOKEN_RUN.search(text.encode("ascii", "ignore").translate(None, _WRAP_BYTES)):
        return []
    tokens = _tokens(text)
    if "\n" in text:
        tokens += [t for t in _tokens(_QUOTED_WRAP.sub("", text)) if t not in tokens]
    return tokens


def _rule_token_in_body(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    msg = m.src
    parts = (("新写的正文", msg.new_text), ("引用的原文", msg.quoted_text))
    guesses = _token_guesses(
        ix, [(t, _S_TOKEN_BODY, where) for where, text in parts for t in _body_tokens(text)],
        Rule.TOKEN_IN_BODY)
    if guesses or not msg.full_text:
        return guesses
    # The full text may hold what the split into new and quoted text left out (a returned
    # message, a forwarded part), so it is read when those two said nothing.
    found = [(t, _S_TOKEN_BODY, "邮件正文") for t in _body_tokens(msg.full_text)]
    return _token_guesses(ix, found, Rule.TOKEN_IN_BODY)


def _id_guesses(ix: ProbeIndex, ids: Iterable[str], score: float, where: str,
                rule: Rule) -> list[Guess]:
    guesses: list[Guess] = []
    for mid in ids:
        probe_ids, folded = ix.by_message_id(mid)
        for probe_id in probe_ids:
            how = "（忽略大小写后才相同）" if folded else ""
            reason = f"{where} <{mid}> 是来信 {probe_id} 的 Message-ID{how}"
            guesses.append(Guess(probe_id, score - _CASE_PENALTY * folded, rule, (reason,)))
    return guesses


def _rule_our_message_id(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    rule = Rule.OUR_MESSAGE_ID
    return (_id_guesses(ix, m.reply_to_ids, _S_ID_IRT, "In-Reply-To", rule)
            + _id_guesses(ix, m.reference_ids, _S_ID_REFS, "References", rule))


def _rule_bounce(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    msg, rule = m.src, Rule.BOUNCE_RETURNED_MESSAGE
    ids = _message_ids(msg.returned_message_ids)
    found = [(t, _S_BOUNCE_ID, f"退回邮件的 Message-ID <{mid}> ")
             for mid in ids for t in _tokens(mid)]
    guesses = _token_guesses(ix, found, rule)
    guesses += _id_guesses(ix, ids, _S_BOUNCE_ID, "退回邮件的 Message-ID", rule)
    if guesses:
        return guesses
    # Without the returned Message-ID only the failed recipient ties the bounce to a probe:
    # one that this mailbox sent to that address shortly before.
    for recipient in {_bare_address(r) for r in msg.returned_recipients}:
        for probe in ix.by_channel.get((msg.account, recipient), []):
            if probe.sent_at <= msg.received_at <= probe.sent_at + _BOUNCE_WINDOW:
                reason = (f"退信退回的是发往 {recipient} 的邮件；来信 {probe.probe_id} "
                          f"由邮箱 {msg.account} 于 {_at(probe.sent_at)} 发往该地址")
                guesses.append(Guess(probe.probe_id, _S_BOUNCE_RCPT, rule, (reason,)))
    return guesses


def _rule_quoted_details(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    msg = m.src
    quoted = msg.quoted_text or ("" if msg.new_text else msg.full_text)
    # Government replies often restate the case in their own words (您反映的XX路XX号...), so
    # the new text is read too; the discount below keeps shared details from deciding.
    found = sorted(set(ix.fingerprints_in(quoted)) | set(ix.fingerprints_in(msg.new_text)))
    per_probe: dict[str, list[str]] = defaultdict(list)
    for fp in found:
        for probe_id in ix.by_fingerprint[fp]:
            per_probe[probe_id].append(fp)
    guesses: list[Guess] = []
    for probe_id, fps in per_probe.items():
        probe = ix.by_id[probe_id]
        if probe.sent_at <= msg.received_at:
            guesses.append(_details_guess(ix, probe, fps, m, quoted))
    return guesses


def _details_guess(ix: ProbeIndex, probe: SentProbe, fps: list[str], m: _Msg,
                   quoted: str) -> Guess:
    # "翠湖花园" inside "翠湖花园3栋" is one detail, not two.
    distinct = fps if len(fps) == 1 else [
        fp for fp in fps if not any(fp != o and fp in o for o in fps)]
    weight = sum(1 / len(ix.by_fingerprint[fp]) for fp in distinct)
    long_rare = any(len(fp) >= _LONG_FINGERPRINT and len(ix.by_fingerprint[fp]) == 1
                    for fp in distinct)
    strong = weight >= 2 - _EPS or long_rare
    score = _S_DETAILS if strong else min(_S_DETAILS_WEAK_CAP, _S_DETAILS_PER_UNIT * weight)
    shown = ", ".join(
        f"「{fp}」" + ("（引用）" if fp in quoted else "（答复中）")
        + (f"，{len(ix.by_fingerprint[fp])} 封来信共有" if len(ix.by_fingerprint[fp]) > 1
           else "")
        for fp in distinct)
    reasons = [f"找到来信 {probe.probe_id} 的细节：{shown}"]
    if probe.account != m.src.account:
        score *= _OTHER_MAILBOX_FACTOR
        reasons.append(f"但邮件到达邮箱 {m.src.account}，来信由邮箱 {probe.account} 发出")
    return Guess(probe.probe_id, round(score, 4), Rule.QUOTED_DETAILS, tuple(reasons))


def _rule_mailbox_and_address(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    msg, guesses = m.src, []
    for probe in ix.by_address.get((msg.account, m.from_address), []):
        if ix.in_window(probe, msg.received_at):
            own_channel = probe.channel_address is not None and \
                _bare_address(probe.channel_address) == m.from_address
            score = _S_ADDRESS + _CHANNEL_BONUS * own_channel
            where = "来信所投的渠道" if own_channel else f"{probe.agency}已知的地址"
            reason = (f"发件人 {m.from_address}（{where}）写信至邮箱 {msg.account}，"
                      f"该邮箱于 {_at(probe.sent_at)} 发出来信 {probe.probe_id}")
            guesses.append(Guess(probe.probe_id, score, Rule.MAILBOX_AND_ADDRESS, (reason,)))
    return guesses


def _rule_mailbox_and_domain(ix: ProbeIndex, m: _Msg) -> list[Guess]:
    msg = m.src
    probes = [p for p in ix.by_domain(msg.account, m.from_domain)
              if ix.in_window(p, msg.received_at)]
    agencies = sorted({p.agency for p in probes})
    # County bureaus often use their city's domain: a domain several agencies share names
    # none of them with confidence.
    score = _S_DOMAIN if len(agencies) == 1 else _S_DOMAIN_SHARED
    shared = f"，该域名为{'、'.join(agencies)}共用" if len(agencies) > 1 else ""
    return [Guess(p.probe_id, score, Rule.MAILBOX_AND_DOMAIN,
                  (f"发件人 {m.from_address} 属于{p.agency}的域名{shared}；邮箱 {msg.account} "
                   f"于 {_at(p.sent_at)} 发出来信 {p.probe_id}",))
            for p in probes]


_MESSAGE_RULES: tuple[tuple[Rule, _Evaluate], ...] = (
    (Rule.TOKEN_IN_REPLY_TO, _rule_token_in_reply_to),
    (Rule.TOKEN_PLUS_ADDRESS, _rule_token_plus_address),
    (Rule.TOKEN_IN_BODY, _rule_token_in_body),
    (Rule.OUR_MESSAGE_ID, _rule_our_message_id),
    (Rule.QUOTED_DETAILS, _rule_quoted_details),
    (Rule.MAILBOX_AND_ADDRESS, _rule_mailbox_and_address),
    (Rule.MAILBOX_AND_DOMAIN, _rule_mailbox_and_domain),
)
# A bounce comes from a mail server, not the agency: only what it returns identifies the probe.
_BOUNCE_RULES: tuple[tuple[Rule, _Evaluate], ...] = (
    *_MESSAGE_RULES[:4],
    (Rule.BOUNCE_RETURNED_MESSAGE, _rule_bounce),
)


def match_message(msg: IncomingMessage, probes: Sequence[SentProbe], secret: bytes, *,
                  round_window: timedelta | None = None) -> MatchResult:
    """Match one message; to match many, build a :class:`ProbeIndex` once (match_messages)."""
    return ProbeIndex(probes, secret, round_window=round_window).match(msg)


def match_messages(msgs: Iterable[IncomingMessage], probes: Sequence[SentProbe], secret: bytes,
                   *, round_window: timedelta | None = None) -> list[MatchResult]:
    """Match every message against one index of the probes, in the order given."""
    index = ProbeIndex(probes, secret, round_window=round_window)
    return [index.match(msg) for msg in msgs]


@dataclass(frozen=True, slots=True)
class Attached:
    """A message attached to a probe (by the matcher or a reviewer), with its kind and time."""

    probe_id: str
    key: str
    kind: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class FirstReplies:
    """The first acknowledgement and the first substantive reply of one probe."""

    probe_id: str
    acknowledgement: Attached | None
    reply: Attached | None


def attached(pairs: Iterable[tuple[IncomingMessage, MatchResult]]) -> list[Attached]:
    """The messages the matcher attached with confidence; those in review are left out."""
    return [Attached(result.probe_id, msg.key, msg.kind, msg.received_at)
            for msg, result in pairs
            if result.probe_id is not None and not result.needs_review]


def first_replies(items: Iterable[Attached]) -> dict[str, FirstReplies]:
    """Per probe, the earliest acknowledgement and the earliest reply (ties: smallest key).

    Only a reply stops the clock; auto-replies and bounces are ignored here.
    """
    firsts: dict[tuple[str, str], Attached] = {}
    for item in items:
        old = firsts.get((item.probe_id, item.kind))
        if item.kind in (_REPLY, _ACKNOWLEDGEMENT) and (
                old is None or (item.received_at, item.key) < (old.received_at, old.key)):
            firsts[item.probe_id, item.kind] = item
    return {p: FirstReplies(p, firsts.get((p, _ACKNOWLEDGEMENT)), firsts.get((p, _REPLY)))
            for p in sorted({probe_id for probe_id, _ in firsts})}
