"""`mailprobe demo`: the 2015 Guangdong campaign replayed on this machine, weeks in minutes.

Everything runs for real except the agencies and the calendar: a fresh SQLite database,
the bundled directory and both rounds planned and saved as ``mailprobe plan --save`` does,
an SMTP server (aiosmtpd) and an IMAP server (pymap) on loopback ports, and the worker's
ticks (send, Sent copies, sync, classify, match). The simulated agencies
(``mailprobe.demo_world``) answer into the personas' mailboxes with the receive time as
INTERNALDATE. A manual clock jumps from event to event: the next probe due, the next web
form to submit, the next message to arrive, the next look at the mailboxes. The report
(rankings of both levels with the probe-derived points, each round's response times) is
written at the end.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select

from mailprobe import campaign
from mailprobe.campaign_report import CampaignReport, LevelInput, write_campaign_report
from mailprobe.clock import ManualClock
from mailprobe.compose import TemplateSet
from mailprobe.demo_servers import HOST, DemoServers
from mailprobe.demo_world import Delivery, World, build_world, form_letter, read_letter, respond
from mailprobe.directory import Account, Endpoint, TlsMode
from mailprobe.directory_io import Directory, load_directory
from mailprobe.engine import Evaluation
from mailprobe.errors import InputError, MailprobeError
from mailprobe.models import ChannelRow, ProbeRecord, ProbeRow, ProbeState
from mailprobe.models_review import MatchRow
from mailprobe.paths import config_dir, samples_dir, schedules_dir
from mailprobe.round_facts import response_lines
from mailprobe.send import SendPolicy, load_passwords
from mailprobe.settings import token_secret
from mailprobe.store import Store
from mailprobe.timeliness import load_queue_method, time_probe
from mailprobe.workdays import WorkCalendar, default_calendar
from mailprobe.worker import Worker, tick

__all__ = ["DemoError", "DemoResult", "Progress", "RoundCounts", "run_demo"]

log = logging.getLogger(__name__)

ZONE = ZoneInfo("Asia/Shanghai")
START = datetime(2015, 11, 1, 8, 0, tzinfo=ZONE)  # the Sunday before round 1
SCHEDULES = ("2015-round1.toml", "2015-round2.toml")
DATABASE = "demo.db"
EVALUATOR = "演示评估员"  # who submits the web forms
SYNC_AFTER = timedelta(hours=4)  # simulated: how long new mail waits for the watcher
_MAX_TICKS = 20_000  # a safety net: the 2015 campaign needs about a thousand
_TITLE = "2015 年度广东省地市、县（区）环保政府网站绩效评估（演示）"


class DemoError(MailprobeError, RuntimeError):
    """The demo could not set up or finish its simulated campaign."""


@dataclass(frozen=True)
class Progress:
    """Where the replay is: simulated time and counts so far."""

    now: datetime
    sent: int
    submitted: int
    probes: int
    delivered: int
    matched: int


@dataclass(frozen=True)
class RoundCounts:
    """One round's probes by outcome (web forms count as sent once submitted)."""

    round_id: str
    name: str
    probes: int
    sent: int
    in_time: int
    late: int
    unanswered: int
    bounced: int  # refused at RCPT or bounced back: the channel is not usable


@dataclass(frozen=True)
class Ranked:
    label: str
    sites: int
    top: tuple[tuple[str, float], ...]
    bottom: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class DemoResult:
    report: Path
    database: Path
    rounds: tuple[RoundCounts, ...]
    rankings: tuple[Ranked, ...]
    smtp_accepted: int  # messages the SMTP server took: each sent probe exactly once
    delivered: Mapping[str, int]  # messages the agencies' side delivered, by kind
    matched: int
    review: int  # messages the matcher left for an evaluator
    ticks: int
    as_of: datetime


# --- setting up --------------------------------------------------------------------------------


def _fresh_database(out: Path) -> Path:
    """``out/demo.db``, the previous run's removed first."""
    db = out / DATABASE
    try:
        out.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot write the demo's database: {exc.strerror or exc}",
                        source=db, hint="choose another folder with --out") from exc
    return db


def _open_store(db: Path, clock: ManualClock) -> Store:
    """The demo's database: thrown away on the next run, so not fsynced at every commit.

    WAL with synchronous=NORMAL survives a crash of the process, not a power cut; the
    workspace database keeps FULL (a probe marked sending must survive both). On a
    2-core machine this saves the demo a third of its time.
    """
    store = Store(f"sqlite:///{db}", clock=clock)

    @event.listens_for(store.engine, "connect")
    def _throwaway(dbapi: Any, _record: Any) -> None:  # after the store's own pragmas
        cursor = dbapi.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return store


def _passwords(accounts: Sequence[Account]) -> dict[str, str]:
    """A fresh random password per account; never printed, never stored."""
    return {a.id: secrets.token_urlsafe(18) for a in accounts}


@contextmanager
def _password_env(accounts: Sequence[Account], passwords: Mapping[str, str]) -> Iterator[None]:
    """Each account's ``password_env`` set for the run (as an operator would export it)."""
    saved = {}
    for a in accounts:
        if a.password_env:
            saved[a.password_env] = os.environ.get(a.password_env)
            os.environ[a.password_env] = passwords[a.id]
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _on_loopback(found: Directory, smtp_port: int, imap_port: int) -> Directory:
    smtp, imap = Endpoint(HOST, smtp_port, TlsMode.NONE), Endpoint(HOST, imap_port, TlsMode.NONE)
    return replace(found, accounts=tuple(replace(a, smtp=smtp, imap=imap)
                                         for a in found.accounts))


def _schedule(out: Path, name: str, cities: Sequence[str] | None) -> Path:
    """The bundled round, or a copy limited to ``cities`` (a smaller demo, for tests)."""
    path = schedules_dir() / name
    if cities is None:
        return path
    text, n = re.subn(r"(?m)^cities = \[\]", "cities = [" + ", ".join(
        f'"{c}"' for c in cities) + "]", path.read_text(encoding="utf-8"), count=1)
    if n != 1:
        raise DemoError("cannot limit the round to some cities", source=path,
                        location="agencies.cities", expected="cities = []")
    copy = out / "schedules" / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text, encoding="utf-8")
    return copy


@dataclass
class _Forms:
    """Web-form probes, submitted by the demo's evaluator at their planned time."""

    due: list[tuple[datetime, ProbeRecord]] = field(default_factory=list)

    def add(self, probes: Sequence[ProbeRecord]) -> None:
        self.due += [(p.send_at, p) for p in probes if p.raw is None]
        self.due.sort(key=lambda item: (item[0], item[1].probe_id))

    def next_at(self) -> datetime | None:
        return self.due[0][0] if self.due else None

    def take(self, now: datetime) -> list[ProbeRecord]:
        ready = [p for at, p in self.due if at <= now]
        self.due = self.due[len(ready):]
        return ready


def _plan_rounds(store: Store, clock: ManualClock, schedules: Sequence[Path]
                 ) -> tuple[list[campaign.RenderedPlan], _Forms]:
    """Both rounds as `mailprobe plan --schedule FILE --save` plans and saves them."""
    templates, calendar, secret = TemplateSet.load(), default_calendar(), token_secret(store)
    forms, plans = _Forms(), []
    for path in schedules:
        rendered = campaign.render_plan(store, path, templates=templates, calendar=calendar,
                                        secret=secret, clock=clock)
        campaign.save_rendered(store, rendered)
        forms.add(rendered.probes)
        plans.append(rendered)
    return plans, forms


# --- the replay --------------------------------------------------------------------------------


@dataclass
class _Replay:
    store: Store
    clock: ManualClock
    servers: DemoServers
    world: World
    calendar: WorkCalendar
    forms: _Forms
    people: Mapping[str, tuple[str, str]]  # persona id -> (address, name)
    users: Mapping[str, str]  # address -> IMAP login
    progress: Callable[[Progress], None] | None
    probes: int
    queue: list[tuple[datetime, int, Delivery]] = field(default_factory=list)
    order: Iterator[int] = field(default_factory=itertools.count)
    delivered: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    submitted: int = 0
    ticks: int = 0

    def schedule(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            heapq.heappush(self.queue, (d.at, next(self.order), d))

    def deliver(self, now: datetime) -> int:
        batch = []
        while self.queue and self.queue[0][0] <= now:
            d = heapq.heappop(self.queue)[2]
            batch.append((self._user(d.to), d.folder, d.raw, d.at.astimezone(ZONE)))
            self.delivered[d.kind] += 1
        return self.servers.append(batch) if batch else 0

    def _user(self, address: str) -> str:
        local, _, domain = address.lower().partition("@")
        plain = f"{local.partition('+')[0]}@{domain}"
        try:
            return self.users[plain]
        except KeyError:
            raise DemoError("a simulated agency answered an address no persona has",
                            got=address) from None

    def submit(self, now: datetime) -> None:
        for p in self.forms.take(now):
            self.store.record_submission(p.probe_id, p.send_at, EVALUATOR)
            self.submitted += 1
            address, name = self.people[p.persona]
            letter = form_letter(p.agency, p.channel.form_url or "", address, name, p.subject,
                                 p.body, p.send_at)
            self.schedule(respond(self.world, letter, self.calendar))

    def answer_received(self) -> None:
        for item in self.servers.received():
            self.accepted += 1
            for rcpt in item.rcpt_tos:
                letter = read_letter(self.world, item.data, rcpt, item.at)
                if letter is not None:
                    self.schedule(respond(self.world, letter, self.calendar))

    def report(self) -> None:
        if self.progress is not None:
            self.progress(Progress(self.clock.now(), self.accepted, self.submitted,
                                   self.probes, sum(self.delivered.values()),
                                   _matched(self.store)))


def _next_due(store: Store) -> datetime | None:
    """When the next planned e-mail probe falls due (its send or retry time)."""
    with store.session(write=False) as s:
        when = s.scalar(select(func.min(func.coalesce(ProbeRow.next_attempt_at, ProbeRow.send_at)))
                        .join(ChannelRow, ChannelRow.id == ProbeRow.channel_id)
                        .where(ProbeRow.state == ProbeState.PLANNED,
                               ChannelRow.address.is_not(None)))
    return None if when is None else when.astimezone(UTC)


def _matched(store: Store) -> int:
    with store.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(MatchRow)
                        .where(MatchRow.probe_id.is_not(None))) or 0


def _review(store: Store) -> int:
    with store.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(MatchRow)
                        .where(MatchRow.needs_review.is_(True))) or 0


async def _simulate(r: _Replay, worker: Worker) -> None:
    """Jump from event to event: mail to deliver, a form to submit, probes due, a sync.

    A worker tick runs when probes are due (it sends them and saves their Sent copies)
    or when mail arrived ``SYNC_AFTER`` ago (it also syncs, classifies and matches), as a
    worker ticking every so often would find it: what the watcher records does not depend
    on when it looks, since the receive time is the message's INTERNALDATE.
    """
    sender = replace(worker, watch=False)
    sync_at: datetime | None = None
    while r.ticks < _MAX_TICKS:
        due = _next_due(r.store)
        mail = r.queue[0][0] if r.queue else None
        at = min((t for t in (due, r.forms.next_at(), mail, sync_at) if t is not None),
                 default=None)
        if at is None:
            break
        if at > r.clock.now():
            r.clock.set(at)
        now = r.clock.now()
        if r.deliver(now) and sync_at is None:
            sync_at = now + SYNC_AFTER
        r.submit(now)
        watch = sync_at is not None and sync_at <= now
        if watch or (due is not None and due <= now):
            await tick(worker if watch else sender)
            r.ticks += 1
            sync_at = None if watch else sync_at
            r.answer_received()
        r.report()
    else:
        raise DemoError(f"the replay did not settle after {_MAX_TICKS} ticks",
                        hint="a probe stays due without being sent: see `mailprobe status`")
    await tick(worker)  # the last sync: nothing is left to arrive
    r.ticks += 1
    r.report()


# --- the outcome -------------------------------------------------------------------------------


def _round_counts(store: Store, round_id: str, as_of: datetime,
                  calendar: WorkCalendar) -> RoundCounts:
    name, lines, _ = response_lines(store, round_id, round_end=as_of)
    limit = load_queue_method().limit  # 15 working days: 答复实效
    with store.session(write=False) as s:
        total = s.scalar(select(func.count()).select_from(ProbeRow)
                         .where(ProbeRow.round_id == round_id)) or 0
    outcome: Counter[str] = Counter()
    for line in lines:
        if line.unusable:
            outcome["bounced"] += 1
        elif line.timing is not None and line.timing.replied_at is not None:
            timed = time_probe(line.timing, calendar, limit)
            outcome["in_time" if timed.in_time else "late"] += 1
        else:
            outcome["unanswered"] += 1
    sent = sum(1 for line in lines if line.timing is not None)
    return RoundCounts(round_id, name, total, sent, outcome["in_time"], outcome["late"],
                       outcome["unanswered"], outcome["bounced"])


def _as_of(end: datetime, plans: Sequence[campaign.RenderedPlan]) -> datetime:
    """Midnight after the last event or the last reply deadline, whichever is later."""
    closes = [p.plan.closes_on for p in plans if p.plan.closes_on is not None]
    last = max([end.astimezone(ZONE).date(), *closes])
    return datetime.combine(last + timedelta(days=1), time(0), tzinfo=ZONE)


def run_demo(out: Path, *, seed: int = 2015, cities: int | None = None,
             progress: Callable[[Progress], None] | None = None) -> DemoResult:
    """Replay both 2015 rounds against simulated agencies and write the report to ``out``."""
    base = samples_dir() / "2015"
    found = load_directory(base / "agencies.csv", base / "channels.csv",
                           config_dir() / "personas.toml")
    chosen = _cities(found, cities)
    world = build_world([(a.name, a.website) for a in found.agencies], found.channels, seed)
    db = _fresh_database(out)
    clock = ManualClock(START)
    passwords = _passwords(found.accounts)
    users = {a.user: passwords[a.id] for a in found.accounts}
    with DemoServers(users, clock, world.refusal) as servers, \
            _password_env(found.accounts, passwords), \
            _open_store(db, clock) as store:
        store.upgrade()
        loop = _on_loopback(found, servers.smtp_port, servers.imap_port)
        store.import_directory(loop.agencies, loop.channels, loop.accounts, loop.personas)
        plans, forms = _plan_rounds(store, clock, [_schedule(out, n, chosen) for n in SCHEDULES])
        worker = Worker(store, clock, "demo", load_passwords(loop.accounts),
                        SendPolicy(seed=seed), watch=True)
        accounts = {a.id: a for a in loop.accounts}
        people = {p.id: (accounts[p.account].address, p.name) for p in loop.personas}
        replay = _Replay(store, clock, servers, world, default_calendar(), forms, people,
                         {a.address.lower(): a.user for a in loop.accounts}, progress,
                         sum(len(p.probes) for p in plans))
        asyncio.run(_simulate(replay, worker))
        as_of = _as_of(clock.now(), plans)
        clock.set(max(as_of, clock.now()))
        rounds = tuple(_round_counts(store, p.round.id, as_of, replay.calendar) for p in plans)
        report = _write_report(store, out, [p.round.id for p in plans], as_of, seed)
        return DemoResult(report.path, db, rounds, _rankings(report.evaluations),
                          replay.accepted, dict(replay.delivered), _matched(store),
                          _review(store), replay.ticks, as_of)


def _cities(found: Directory, limit: int | None) -> list[str] | None:
    if limit is None:
        return None
    cities = list(dict.fromkeys(a.city for a in found.agencies))
    if not 1 <= limit <= len(cities):
        raise InputError("no such number of cities", location="--cities",
                         expected=f"1 to {len(cities)}", got=limit)
    return cities[:limit]


def _write_report(store: Store, out: Path, round_ids: Sequence[str], as_of: datetime,
                  seed: int) -> CampaignReport:
    base = samples_dir() / "2015"
    levels = [LevelInput("city", "地级市", (base / "city_scores.csv",)),
              LevelInput("county", "县区级", (base / "county_scores.csv",))]
    subtitle = (f"样例评分表（图表 2-1、4-1、4-2）+ 两轮模拟来信在本机回放（种子 {seed}）："
                "邮件服务器、各单位的答复均为模拟，发送、收信、分类、匹配与计时为真实运行")
    return write_campaign_report(store, levels, agencies_file=base / "agencies.csv",
                                 round_ids=tuple(round_ids), out=out,
                                 formats=("html", "csv", "xlsx"), title=_TITLE,
                                 subtitle=subtitle, as_of=as_of)


def _rankings(evaluations: Mapping[str, Evaluation]) -> tuple[Ranked, ...]:
    out = []
    for level, label in (("city", "地级市"), ("county", "县区级")):
        ev = evaluations.get(level)
        if ev is None:
            continue
        r = ev.ranking
        order = [int(i) for i in r.order]
        pairs = [(r.sites[i], float(r.total[i])) for i in order]
        out.append(Ranked(label, len(order), tuple(pairs[:3]), tuple(pairs[-3:])))
    return tuple(out)
