"""Three `mailprobe run --watch` workers share one PostgreSQL campaign; one dies midway.

The world is local and real: PostgreSQL (a throwaway database), the SMTP sink in its own
process recording every delivery, Dovecot holding the personas' mailboxes. While the workers
send, the test plays the agencies: it APPENDs replies to probes already recorded as sent into
the personas' INBOX and Junk folders. It samples the mailbox leases all along, and SIGKILLs
one worker while it holds a mailbox's lease. At the end: every probe reached the sink exactly
once, every reply was stored once and attached to its probe exactly once, and no mailbox went
unsynced for longer than the mailbox lease plus a tick (and the slack of a sync itself).
"""

from __future__ import annotations

import imaplib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from mailprobe.clock import SystemClock
from mailprobe.compose import TemplateSet, compose
from mailprobe.directory import (
    Account,
    Channel,
    ChannelKind,
    Endpoint,
    Persona,
    ProbeSpec,
    TlsMode,
)
from mailprobe.models import ProbeRow, ProbeState, RoundRecord
from mailprobe.models_mail import LocationRow, MailboxStateRow, MessageRow
from mailprobe.models_review import MatchRow
from mailprobe.probe_details import DetailRequest, campaign_details
from mailprobe.settings import TOKEN_SECRET_ENV, token_secret
from mailprobe.sheets import Agency, Level
from mailprobe.store import ProbeRecord, Store
from tests.pg import throwaway_database
from tests.sink_process import ROOT, Sink, read_record

pytestmark = [pytest.mark.postgres, pytest.mark.dovecot, pytest.mark.slow]

S = ProbeState
ROUND = "mw"
PROBES = 600
WORKERS = 3
VICTIM = 1  # the worker killed midway
TICK = 0.2  # seconds between two ticks of each worker
CLAIM_LEASE = 2.0  # seconds: a dead worker's claims go back after this long
MAILBOX_LEASE = 3.0  # seconds: a dead worker's mailboxes are taken over after this long
# A sync's own duration (IMAP login, SELECT, FETCH, the commits), process start-up and the
# scheduler's jitter: what "unwatched for longer than the lease plus a tick" may add.
SLACK = 2.5
REPLY_EVERY = 3  # every third probe gets an answer
TEMPLATES = ("noise_night_1", "odour_factory_1", "river_pipe_1", "dust_site_1")
USERS = {"acc1": ("citizen1@mail.test", "secret-1"), "acc2": ("citizen2@mail.test", "secret-2")}
PASSWORD_ENV = {"acc1": "MP_MW_PASSWORD_1", "acc2": "MP_MW_PASSWORD_2"}
FOLDERS = ("INBOX", "Junk")
AGENCIES = tuple(Agency(f"丙市第{i:02d}县区", Level.COUNTY, "丙市", None, i) for i in range(12))


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database("mailprobe_mw") as url:
        yield url


# --- the campaign --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    probe_id: str
    account: str
    message_id: str
    to: str  # the agency's address
    subject: str
    body: str


def _setup(url: str, smtp_port: int, imap_port: int) -> list[Planned]:
    """PROBES composed probes (real templates, signed tokens), due now, in a paused round."""
    channels = [Channel(a.name, ChannelKind.CONSULTATION, address=f"zixun{i}@hbj.bing.gd.test")
                for i, a in enumerate(AGENCIES)]
    smtp = Endpoint("127.0.0.1", smtp_port, TlsMode.NONE)
    imap = Endpoint("127.0.0.1", imap_port, TlsMode.NONE)
    accounts = {a: Account(a, user, user, smtp, imap, password_env=PASSWORD_ENV[a],
                           watch_folders=FOLDERS) for a, (user, _) in USERS.items()}
    personas = {f"p{n}": Persona(f"p{n}", f"市民{n}", "丙市", f"acc{n}") for n in (1, 2)}
    now = SystemClock().now()
    ids = [f"mw-{i:04d}" for i in range(PROBES)]
    details = campaign_details([DetailRequest(pid, channels[i % 12].agency, "丙市",
                                              date(2015, 11, 2)) for i, pid in enumerate(ids)],
                               seed=7)
    templates = TemplateSet.load()
    with Store(url) as store:
        store.upgrade()
        store.import_directory(AGENCIES, channels, list(accounts.values()),
                               list(personas.values()))
        secret = token_secret(store, env={})  # stored: every worker signs and verifies with it
        records, planned = [], []
        for i, pid in enumerate(ids):
            ch, persona = channels[i % 12], personas[f"p{1 + i % 2}"]
            spec = ProbeSpec(pid, ROUND, ch.agency, ch, persona.id, TEMPLATES[i % 4],
                             now - timedelta(seconds=PROBES - i), details[pid])
            mail = compose(spec, persona, accounts[persona.account], f"{ch.agency}环境保护局",
                           templates, secret, datetime(2015, 11, 2, 9, tzinfo=UTC))
            records.append(ProbeRecord.from_spec(spec, token=mail.token, subject=mail.subject,
                                                 body=mail.text, message_id=mail.message_id,
                                                 raw=mail.raw))
            assert ch.address is not None
            planned.append(Planned(pid, persona.account, mail.message_id, ch.address,
                                   mail.subject, mail.text))
        store.save_plan(RoundRecord(ROUND, "multi-worker", "-", "0" * 64,
                                    now - timedelta(hours=1), now + timedelta(days=1), 1),
                        records)
        # Paused until every worker is up, so that all of them share the sending.
        store.set_round_flags(ROUND, paused=True)
    return planned


class Worker:
    """``python -m mailprobe run --watch`` in its own process, output in a file."""

    def __init__(self, url: str, worker_id: str, log: Path) -> None:
        self.worker_id, self.log = worker_id, log
        env = {k: v for k, v in os.environ.items() if k != TOKEN_SECRET_ENV}
        env.update({PASSWORD_ENV[a]: password for a, (_, password) in USERS.items()})
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailprobe", "run", "--db", url, "--watch",
                 "--tick", str(TICK), "--lease", str(CLAIM_LEASE), "--batch", "10",
                 "--mailbox-lease", str(MAILBOX_LEASE), "--no-sent-copies",
                 "--worker-id", worker_id],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "started" not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"{self.worker_id} did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


# --- watching the watchers -----------------------------------------------------------------------


Row = tuple[str | None, datetime | None, datetime | None]  # holder, lease until, last sync


@dataclass
class Sampler:
    """Reads the mailbox lease table every few milliseconds, in a thread of its own."""

    url: str
    samples: list[tuple[datetime, dict[tuple[str, str], Row]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.engine = create_engine(self.url)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> dict[tuple[str, str], Row]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(MailboxStateRow.account_id, MailboxStateRow.folder,
                                       MailboxStateRow.lease_holder, MailboxStateRow.lease_until,
                                       MailboxStateRow.last_sync_at)).all()
        return {(a, f): (h, until, synced) for a, f, h, until, synced in rows}

    def _run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((SystemClock().now(), self.read()))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.engine.dispose()


def _alive(workers: list[Worker]) -> None:
    for w in workers:
        assert w.process.poll() is None, f"{w.worker_id} died:\n{w.text()[-3000:]}"


def _wait(what: str, done: Any, timeout: float, alive: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        _alive(alive)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- the agencies --------------------------------------------------------------------------------


def _reply(p: Planned, folder: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = p.to
    msg["To"] = USERS[p.account][0]
    msg["Subject"] = f"回复：{p.subject}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = _reply_id(p)
    msg["In-Reply-To"] = p.message_id
    msg["References"] = p.message_id
    quoted = "\n".join(f"> {line}" for line in p.body.splitlines())
    msg.set_content(f"您好！\n    来信收悉。经查，反映的问题已转交属地环境监察大队现场核查，"
                    f"核查结果将另行告知。特此答复。（{folder}）\n\n{quoted}\n")
    return msg.as_bytes()


def _reply_id(p: Planned) -> str:
    return f"<reply.{p.probe_id}@hbj.bing.gd.test>"


class Agencies:
    """Answers every REPLY_EVERY-th probe once the store says it was sent; one IMAP
    connection per persona account, APPEND into INBOX or (every other answer) Junk."""

    def __init__(self, port: int, planned: list[Planned]) -> None:
        self.port, self.planned = port, planned
        self.wanted = {p.probe_id: p for i, p in enumerate(planned) if i % REPLY_EVERY == 0}
        self.sent: dict[str, str] = {}  # probe id -> the folder its answer went to
        self.clients: dict[str, imaplib.IMAP4] = {}

    def _client(self, account: str) -> imaplib.IMAP4:
        if account not in self.clients:
            client = imaplib.IMAP4("127.0.0.1", self.port)
            client.login(*USERS[account])
            self.clients[account] = client
        return self.clients[account]

    def answer(self, sent_ids: set[str]) -> int:
        due = [p for pid, p in self.wanted.items() if pid in sent_ids and pid not in self.sent]
        for n, p in enumerate(due):
            folder = FOLDERS[(len(self.sent) + n) % 2]
            # INTERNALDATE has whole seconds: rounded up, the answer never predates the probe.
            when = imaplib.Time2Internaldate(int(time.time()) + 1)
            typ, data = self._client(p.account).append(folder, None, when, _reply(p, folder))
            assert typ == "OK", data
            self.sent[p.probe_id] = folder
        return len(due)

    def close(self) -> None:
        for client in self.clients.values():
            client.logout()


def _sent_ids(store: Store) -> set[str]:
    with store.session(write=False) as s:
        return set(s.scalars(select(ProbeRow.probe_id).where(ProbeRow.state == S.SENT)))


def _states(store: Store) -> Counter[ProbeState]:
    return Counter(store.round_status(ROUND).by_state)


def _matched(store: Store, reply_ids: list[str]) -> int:
    with store.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(MatchRow)
                            .join(MessageRow, MessageRow.id == MatchRow.message_id)
                            .where(MessageRow.header_message_id.in_(reply_ids))) or 0)


# --- the test ------------------------------------------------------------------------------------


def test_three_workers_share_a_campaign_and_survive_losing_one(
        pg_url: str, dovecot: Any, tmp_path: Path) -> None:
    record = tmp_path / "sink.tsv"
    workers: list[Worker] = []
    with Sink("--record", str(record), "--delay", "0.06") as sink, Store(pg_url) as store:
        planned = _setup(pg_url, sink.port, dovecot.port)
        by_id = {p.probe_id: p for p in planned}
        agencies = Agencies(dovecot.port, planned)
        try:
            workers = [Worker(pg_url, f"mw-{k}", tmp_path / f"worker-{k}.log")
                       for k in range(WORKERS)]
            for w in workers:
                w.wait_started()
            mailboxes = {(a, f) for a in USERS for f in FOLDERS}
            sampler = Sampler(pg_url)
            # Every mailbox synced once: from here on none may go unwatched for long.
            _wait("the first sync of every mailbox",
                  lambda: all(r[2] for r in sampler.read().values())
                  and set(sampler.read()) == mailboxes, 30, workers)
            with sampler:
                store.set_round_flags(ROUND, paused=False)
                victim = workers[VICTIM]
                _wait("a third of the probes sent",
                      lambda: agencies.answer(_sent_ids(store)) >= 0
                      and len(agencies.sent) >= len(agencies.wanted) // 3, 60, workers)
                killed = _kill_holding_a_lease(victim, sampler, agencies, store)
                survivors = [w for w in workers if w is not victim]
                _finish(store, agencies, record, survivors)
                reply_ids = [_reply_id(by_id[pid]) for pid in agencies.sent]
                _wait("every answer matched",
                      lambda: _matched(store, reply_ids) == len(reply_ids), 60, survivors)
                time.sleep(MAILBOX_LEASE)  # the leases still watched after the last reply
                _alive(survivors)
            for w in survivors:
                w.process.send_signal(signal.SIGINT)
            for w in survivors:
                assert w.process.wait(timeout=30) == 0, w.text()[-3000:]
                assert "stopped after" in w.text()
                # Nothing went wrong on the way: no failed tick, no failed sync.
                errors = [line for line in w.text().splitlines() if " ERROR " in line]
                assert not errors, errors[:5]
        finally:
            agencies.close()
            for w in workers:
                w.kill()
        _check_probes(store, planned, Counter(mid for mid, _ in read_record(record)), workers)
        _check_replies(store, agencies, by_id)
    _check_leases(sampler, killed, mailboxes)


@dataclass(frozen=True)
class Killed:
    worker: str
    mailbox: tuple[str, str]
    at: datetime
    lease_until: datetime


def _kill_holding_a_lease(victim: Worker, sampler: Sampler, agencies: Agencies,
                          store: Store) -> Killed:
    """SIGKILL the victim while it holds a mailbox: stop it when seen holding one, check
    that it still does, then kill it (else let it go on and try again)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        agencies.answer(_sent_ids(store))
        held = [m for m, (holder, until, _) in sampler.read().items()
                if holder == victim.worker_id and until and until > SystemClock().now()]
        if not held:
            time.sleep(0.005)
            continue
        victim.process.send_signal(signal.SIGSTOP)
        now = SystemClock().now()
        still = {m: until for m, (holder, until, _) in sampler.read().items()
                 if holder == victim.worker_id and until
                 and until > now + timedelta(seconds=MAILBOX_LEASE / 3)}
        if still:
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            mailbox = sorted(still)[0]
            print(f"\nkilled {victim.worker_id} at {now:%H:%M:%S.%f} holding "
                  f"{sorted(still)}")
            return Killed(victim.worker_id, mailbox, now, still[mailbox])
        victim.process.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"{victim.worker_id} was never seen holding a mailbox lease")


def _finish(store: Store, agencies: Agencies, record: Path, survivors: list[Worker]) -> None:
    """Let the survivors send the rest; settle what the kill left uncertain as an operator
    would (the sink plays the provider's Sent folder); answer every probe that asks for it."""
    deadline = time.monotonic() + 120
    while True:
        _alive(survivors)
        agencies.answer(_sent_ids(store))
        states = _states(store)
        if states[S.UNCERTAIN]:
            delivered = {mid for mid, _ in read_record(record)}
            for p in store.list_uncertain(ROUND):
                store.resolve_uncertain(p.probe_id, p.message_id in delivered,
                                        "the test, reading the sink's record")
            continue
        if states[S.SENT] == PROBES and len(agencies.sent) == len(agencies.wanted):
            return
        assert set(states) <= {S.PLANNED, S.CLAIMED, S.SENDING, S.SENT}, states
        assert time.monotonic() < deadline, f"the round did not finish: {dict(states)}"
        time.sleep(0.05)


# --- the checks ----------------------------------------------------------------------------------


def _check_probes(store: Store, planned: list[Planned], delivered: Counter[str],
                  workers: list[Worker]) -> None:
    assert _states(store) == Counter({S.SENT: PROBES})
    assert set(delivered) == {p.message_id for p in planned}, "a message nobody planned"
    assert max(delivered.values()) == 1, [m for m, n in delivered.items() if n > 1]
    sent_by: Counter[str] = Counter()
    for p in planned:
        sending = [e.detail for e in store.events(p.probe_id) if e.kind == "sending"]
        assert sending, p.probe_id
        sent_by[sending[-1]] += 1
    print(f"probes sent per worker: {dict(sorted(sent_by.items()))}")
    assert set(sent_by) == {w.worker_id for w in workers}, sent_by  # all three shared it


def _check_replies(store: Store, agencies: Agencies, by_id: dict[str, Planned]) -> None:
    with store.session(write=False) as s:
        messages = s.execute(select(MessageRow.id, MessageRow.header_message_id,
                                    MessageRow.account_id)).all()
        locations = Counter(s.scalars(select(LocationRow.message_id)))
        where = {m: (a, f) for m, a, f in s.execute(
            select(LocationRow.message_id, LocationRow.account_id, LocationRow.folder))}
        matches = {m: (p, rule) for m, p, rule in s.execute(
            select(MatchRow.message_id, MatchRow.probe_id, MatchRow.rule))}
        evidence = {m: e for m, e in s.execute(select(MatchRow.message_id, MatchRow.evidence))}
    expected = {_reply_id(by_id[pid]): pid for pid in agencies.sent}
    stored = Counter(mid for _, mid, _ in messages)
    assert set(stored) == set(expected)  # every answer stored, and nothing else
    assert max(stored.values()) == 1  # once
    assert max(locations.values()) == 1 and len(locations) == len(expected)
    attached: Counter[str] = Counter()
    for message_id, header_id, account in messages:
        pid = expected[header_id or ""]
        assert where[message_id] == (account, agencies.sent[pid]) == (
            by_id[pid].account, agencies.sent[pid])
        probe, rule = matches[message_id]
        assert probe == pid, (header_id, probe, rule, evidence[message_id])
        attached[pid] += 1
    assert attached == Counter(set(expected.values()))  # each answered probe: one reply
    print(f"replies: {len(expected)} stored, each attached to its probe once "
          f"(rules: {dict(Counter(rule for _, rule in matches.values()))})")


def _check_leases(sampler: Sampler, killed: Killed, mailboxes: set[tuple[str, str]]) -> None:
    """No mailbox went unsynced for longer than the lease plus a tick (and a sync's slack)."""
    assert sampler.samples, "no samples"
    bound = timedelta(seconds=MAILBOX_LEASE + TICK + SLACK)
    first, last = sampler.samples[0][0], sampler.samples[-1][0]
    worst: dict[tuple[str, str], timedelta] = {}
    for mailbox in sorted(mailboxes):
        syncs = sorted({row[2] for _, rows in sampler.samples
                        if (row := rows.get(mailbox)) and row[2]})
        points = [max(first, syncs[0]), *syncs[1:], last]
        worst[mailbox] = max(b - a for a, b in itertools.pairwise(points))
        # Watched at every sample: a lease not yet run out, or a sync within the bound.
        for at, rows in sampler.samples:
            _, until, synced = rows[mailbox]
            assert (until is not None and until > at) or (
                synced is not None and at - synced <= bound), (mailbox, at, rows[mailbox])
    print("longest time unsynced: " + ", ".join(
        f"{a}/{f} {gap.total_seconds():.2f} s" for (a, f), gap in worst.items())
        + f" (bound {bound.total_seconds():.1f} s)")
    assert all(gap <= bound for gap in worst.values()), worst
    # The dead worker's mailbox was taken over once its lease ran out, not before.
    after = [(at, rows[killed.mailbox]) for at, rows in sampler.samples if at > killed.at]
    taken = [at for at, (holder, _, synced) in after
             if synced and synced > killed.at and holder != killed.worker]
    assert taken, f"nobody took over {killed.mailbox} from {killed.worker}"
    # While the dead worker's lease ran, nobody else synced the mailbox: one watcher at a time.
    assert all(synced is None or synced <= killed.at or synced >= killed.lease_until
               for _, (_, _, synced) in after), killed
    assert not [at for at, (holder, _, _) in after
                if holder == killed.worker and at > killed.lease_until + timedelta(seconds=1)]
