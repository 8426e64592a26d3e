"""The demo's simulated agencies: how and when each answers a probe, as pure decisions.

Every agency gets a seeded profile: how it usually answers (``Behaviour``) and the mail
client its staff use (``Client``); a few channel addresses are dead (refused at RCPT) or
bounce after acceptance. ``respond`` turns one received probe into the messages the
agency (or the mail system) sends back, each with the instant it reaches the persona's
mailbox. The messages themselves are built in ``mailprobe.demo_letters``. Nothing here
does I/O: the same seed and the same probes give the same answers, byte for byte.
"""

from __future__ import annotations

import email
import email.policy
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from mailprobe import demo_letters as letters
from mailprobe.demo_letters import Client, Original, Reply
from mailprobe.directory import Channel
from mailprobe.workdays import WorkCalendar

__all__ = [
    "BEHAVIOUR_SHARES",
    "WORKING_DAYS",
    "Behaviour",
    "ChannelFate",
    "Delivery",
    "Letter",
    "Profile",
    "World",
    "build_world",
    "form_letter",
    "read_letter",
    "respond",
]

ZONE = ZoneInfo("Asia/Shanghai")
_T = TypeVar("_T")


class Behaviour(StrEnum):
    """How an agency treats a letter (its profile; each letter may still differ)."""

    PROMPT = "prompt"  # answers within 1-5 working days
    ACKNOWLEDGED = "acknowledged"  # an automatic receipt at once, the answer in 3-12 days
    SLOW = "slow"  # answers in 8-15 working days: in time, just
    LATE = "late"  # answers after the 15-working-day limit (16-24 days)
    NEVER = "never"  # no answer; a third of these send a receipt and then nothing
    OTHER_ADDRESS = "other_address"  # a staff member answers from his own address, unthreaded
    OUT_OF_OFFICE = "out_of_office"  # the keeper of the mailbox is away: an auto-reply first


# Shares of the agencies with each behaviour (round 1 of 2015 had most bureaus answering).
BEHAVIOUR_SHARES: tuple[tuple[Behaviour, float], ...] = (
    (Behaviour.PROMPT, 0.32), (Behaviour.ACKNOWLEDGED, 0.16), (Behaviour.SLOW, 0.12),
    (Behaviour.LATE, 0.10), (Behaviour.NEVER, 0.14), (Behaviour.OTHER_ADDRESS, 0.10),
    (Behaviour.OUT_OF_OFFICE, 0.06))
_CLIENT_SHARES = ((Client.FOXMAIL, 0.30), (Client.QQMAIL, 0.25), (Client.OUTLOOK, 0.20),
                  (Client.COREMAIL, 0.25))
_KEEPS_PROFILE = 0.75  # the rest of the letters get a behaviour drawn afresh
_REFERRAL_SHARE = 0.12  # answers that only send the citizen elsewhere
_JUNK_SHARE = 0.08  # answers the provider's filter puts in Junk (more for unknown senders)
_REFUSED_SHARE, _BOUNCED_SHARE = 0.015, 0.015  # of the e-mail channel addresses
# Working days from the letter to the answer, by behaviour (0: the same day).
WORKING_DAYS: Mapping[Behaviour, tuple[int, int]] = {
    Behaviour.PROMPT: (0, 5), Behaviour.ACKNOWLEDGED: (3, 12), Behaviour.SLOW: (8, 15),
    Behaviour.LATE: (16, 24), Behaviour.OTHER_ADDRESS: (2, 10),
    Behaviour.OUT_OF_OFFICE: (6, 14)}
# When people write back: mornings and afternoons of the office day, local time.
_OFFICE = ((time(8, 40), time(11, 55)), (time(14, 35), time(17, 50)))


class ChannelFate(StrEnum):
    REFUSED = "refused"  # 550 at RCPT: the probe fails at once
    BOUNCED = "bounced"  # accepted by our server, then a DSN comes back


@dataclass(frozen=True)
class Profile:
    """One simulated agency: its usual behaviour and how its mail looks."""

    agency: str
    bureau: str  # how it signs: 广州市环境保护局
    domain: str
    behaviour: Behaviour
    client: Client
    staff: str  # the personal address a staff member answers from (OTHER_ADDRESS)


@dataclass(frozen=True)
class World:
    """The agencies' profiles, which channel address belongs to whom, the dead channels."""

    seed: int
    profiles: Mapping[str, Profile]
    owners: Mapping[str, str]  # channel address -> agency
    fates: Mapping[str, ChannelFate]  # channel address -> fate; absent: delivered

    def refusal(self, address: str) -> str | None:
        """The SMTP answer refusing RCPT TO ``address``, or None to accept it."""
        if self.fates.get(address.lower()) is ChannelFate.REFUSED:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        return None


@dataclass(frozen=True)
class Letter:
    """A probe as its agency received it: by e-mail (with its headers) or by web form."""

    agency: str
    original: Original

    @property
    def by_form(self) -> bool:
        return not self.original.message_id


@dataclass(frozen=True)
class Delivery:
    """One message for a persona's mailbox and when it arrives there (its INTERNALDATE)."""

    at: datetime
    to: str
    folder: str
    raw: bytes
    kind: str  # what it is meant to be: reply, acknowledgement, auto_reply, bounce
    agency: str
    behaviour: str  # the behaviour that produced it, or "bounce"


# --- building the world ----------------------------------------------------------------------


def _pick(rng: random.Random, shares: Sequence[tuple[_T, float]]) -> _T:
    return rng.choices([v for v, _ in shares], weights=[w for _, w in shares])[0]


def _bureau(agency: str) -> str:
    return agency if agency.endswith(("局", "厅", "委员会")) else f"{agency}环境保护局"


def _domain(website: str | None, addresses: Sequence[str], agency: str) -> str:
    if addresses:
        return addresses[0].rpartition("@")[2]
    host = urlsplit(website or "").hostname
    return host or f"agency{zlib.crc32(agency.encode()):08x}.gd.test"


def build_world(agencies: Iterable[tuple[str, str | None]], channels: Iterable[Channel],
                seed: int) -> World:
    """Profiles for the agencies (name, website) and fates for their e-mail channels."""
    addresses: dict[str, list[str]] = {}
    for c in channels:
        if c.address:
            addresses.setdefault(c.agency, []).append(c.address.lower())
    profiles = {}
    for name, website in agencies:
        rng = random.Random(f"{seed}:profile:{name}")
        mine = sorted(set(addresses.get(name, [])))
        domain = _domain(website, mine, name)
        staff = f"{letters.staff_login(rng)}@{domain}"
        profiles[name] = Profile(name, _bureau(name), domain, _pick(rng, BEHAVIOUR_SHARES),
                                 _pick(rng, _CLIENT_SHARES), staff)
    owners = {a: name for name, mine in addresses.items() for a in mine}
    rng = random.Random(f"{seed}:channels")
    pool = sorted(owners)
    dead = rng.sample(pool, max(1, round(len(pool) * (_REFUSED_SHARE + _BOUNCED_SHARE))))
    cut = max(1, len(dead) // 2)
    fates = {a: ChannelFate.REFUSED for a in dead[:cut]}
    fates |= {a: ChannelFate.BOUNCED for a in dead[cut:]}
    return World(seed, profiles, owners, fates)


# --- reading what arrives --------------------------------------------------------------------


def read_letter(world: World, raw: bytes, rcpt: str, at: datetime) -> Letter | None:
    """The probe an agency received at ``rcpt``; None when no simulated agency owns it."""
    agency = world.owners.get(rcpt.lower())
    if agency is None:
        return None
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)  # policy.default makes EmailMessage
    name, sender = parseaddr(str(msg.get("From", "")))
    reply_to = [a for _, a in getaddresses([str(msg.get("Reply-To", ""))]) if a]
    body_part = msg.get_body(preferencelist=("plain",))
    body = body_part.get_content() if isinstance(body_part, EmailMessage) else ""
    end = raw.find(b"\r\n\r\n")
    headers = raw[:end + 2] if end >= 0 else raw.split(b"\n\n", 1)[0] + b"\n"
    return Letter(agency, Original(
        name or sender.partition("@")[0], reply_to[0] if reply_to else sender, rcpt,
        str(msg.get("Subject", "")), body.replace("\r\n", "\n").strip("\n"), at,
        message_id=str(msg.get("Message-ID", "")).strip(), headers=headers))


def form_letter(agency: str, form_url: str, address: str, name: str, subject: str, body: str,
                at: datetime) -> Letter:
    """A probe an evaluator typed into the agency's web form, giving the persona's address."""
    return Letter(agency, Original(name, address, form_url, subject, body.strip("\n"), at))


# --- answering -------------------------------------------------------------------------------


def respond(world: World, letter: Letter, calendar: WorkCalendar) -> tuple[Delivery, ...]:
    """What comes back for ``letter``, in order of arrival (maybe nothing)."""
    profile = world.profiles[letter.agency]
    o = letter.original
    rng = random.Random(f"{world.seed}:{letter.agency}:{o.to}:{o.subject}:{o.at.isoformat()}")
    if not letter.by_form and world.fates.get(o.to.lower()) is ChannelFate.BOUNCED:
        return (_bounce(rng, letter),)
    behaviour = (profile.behaviour if rng.random() < _KEEPS_PROFILE
                 else _pick(rng, BEHAVIOUR_SHARES))
    out: list[Delivery] = []
    if behaviour is Behaviour.ACKNOWLEDGED or (
            behaviour in (Behaviour.LATE, Behaviour.NEVER) and rng.random() < 0.35):
        out.append(_automatic(rng, profile, letter, behaviour, away=False))
    away = behaviour is Behaviour.OUT_OF_OFFICE and not letter.by_form
    if away:
        out.append(_automatic(rng, profile, letter, behaviour, away=True))
    if behaviour is not Behaviour.NEVER and not (away and rng.random() < 0.4):
        low, high = WORKING_DAYS[behaviour]
        at = _answer_time(rng, calendar, o.at, rng.randint(low, high))
        out.append(_answer(rng, profile, letter, behaviour, at))
    return tuple(out)


def _answer(rng: random.Random, profile: Profile, letter: Letter, behaviour: Behaviour,
            at: datetime) -> Delivery:
    o = letter.original
    referral = rng.random() < _REFERRAL_SHARE
    text = letters.answer_text(rng, profile.bureau, o, at, referral=referral)
    if letter.by_form:
        client, sender = Client.WEBFORM, f"xfxt@{profile.domain}"
    elif behaviour is Behaviour.OTHER_ADDRESS:
        client, sender = Client.STAFF, profile.staff
    else:
        client, sender = profile.client, o.to
    raw = letters.build_reply(rng, Reply(client, sender, profile.bureau, at), o, text)
    junk = rng.random() < _JUNK_SHARE * (3 if client is Client.STAFF else 1)
    return Delivery(at, o.reply_to, "Junk" if junk else "INBOX", raw, "reply", letter.agency,
                    behaviour.value)


def _automatic(rng: random.Random, profile: Profile, letter: Letter, behaviour: Behaviour,
               *, away: bool) -> Delivery:
    o = letter.original
    at = o.at + timedelta(seconds=rng.randint(20, 600))
    if away:
        raw = letters.out_of_office(rng, o, at, days=rng.randint(5, 12))
        folder = "Junk" if rng.random() < 0.3 else "INBOX"
        return Delivery(at, o.reply_to, folder, raw, "auto_reply", letter.agency,
                        behaviour.value)
    raw = letters.acknowledgement(rng, profile.bureau, profile.domain, o, at)
    return Delivery(at, o.reply_to, "INBOX", raw, "acknowledgement", letter.agency,
                    behaviour.value)


def _bounce(rng: random.Random, letter: Letter) -> Delivery:
    o = letter.original
    at = o.at + timedelta(seconds=rng.randint(5, 240))
    raw = letters.dsn_bounce(rng, o, at, chinese=rng.random() < 0.4)
    return Delivery(at, o.reply_to, "INBOX", raw, "bounce", letter.agency, "bounce")


def _answer_time(rng: random.Random, calendar: WorkCalendar, sent: datetime,
                 working_days: int) -> datetime:
    """An office-hours instant on the ``working_days``-th working day after ``sent``.

    Zero means the same day, when enough of its office hours are left (at least an hour
    after the letter came); otherwise the next working day.
    """
    local = sent.astimezone(ZONE)
    if working_days == 0 and calendar.is_working_day(local.date()):
        same = _office_instant(rng, local.date(), after=local + timedelta(hours=1))
        if same is not None:
            return same
    day = calendar.deadline(sent, max(1, working_days)).last_day
    instant = _office_instant(rng, day, after=None)
    assert instant is not None  # a whole office day is free
    return instant


def _office_instant(rng: random.Random, day: date, *, after: datetime | None) -> datetime | None:
    spans = []
    for start, end in _OFFICE:
        lo = datetime.combine(day, start, tzinfo=ZONE)
        hi = datetime.combine(day, end, tzinfo=ZONE)
        if after is not None:
            lo = max(lo, after)
        if lo < hi:
            spans.append((lo, hi))
    if not spans:
        return None
    total = sum((hi - lo).total_seconds() for lo, hi in spans)
    offset = rng.uniform(0, total)
    for lo, hi in spans:
        length = (hi - lo).total_seconds()
        if offset <= length:
            return (lo + timedelta(seconds=int(offset))).replace(microsecond=0)
        offset -= length
    return spans[-1][1] - timedelta(seconds=1)
