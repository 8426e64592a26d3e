"""Watching real Dovecot mailboxes: incremental sync, dedup, IDLE, leases and the faults."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import imaplib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from mailprobe import mailstore
from mailprobe import process as stage
from mailprobe.cli import main
from mailprobe.clock import ManualClock
from mailprobe.directory import Account, Endpoint, TlsMode
from mailprobe.errors import ConfigError
from mailprobe.imap import FetchLimits
from mailprobe.models_mail import LocationRow, MessageRow, ParseStatus
from mailprobe.settings import token_secret
from mailprobe.store import Store
from mailprobe.watch import (
    Backoff,
    MailboxReport,
    WatchPolicy,
    idle_loop,
    shutdown_parsers,
    sync_account,
    sync_mailboxes,
    watch_forever,
)
from tests.conftest import ROOT, run_cli
from tests.imap_proxy import CuttingProxy
from tests.servers import free_port

pytestmark = pytest.mark.dovecot

T0 = datetime(2015, 11, 2, 1, 30, tzinfo=UTC)  # Monday 09:30 in Guangzhou
USER, PASSWORD = "citizen1@mail.test", "secret-1"
CORPUS = sorted((ROOT / "tests" / "messages").glob("*.eml"))
FAST = WatchPolicy(backoff=Backoff(first=timedelta(seconds=0.05), cap=timedelta(seconds=0.2)),
                   limits=FetchLimits(timeout=10.0), poll_seconds=0.2)


def account(port: int, *, tls: TlsMode = TlsMode.NONE, user: str = USER,
            folders: tuple[str, ...] = ("INBOX", "Junk")) -> Account:
    here = Endpoint("127.0.0.1", port, tls)
    return Account("citizen1", user, user, here, here, "MP_TEST_PW_CITIZEN1",
                   watch_folders=folders)


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: once a browser test has run, the session's
    sync Playwright keeps an event loop running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Imap:
    """The test's own hand on the mailbox (imaplib, one connection per call)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _do(self, work: Callable[[imaplib.IMAP4], Any]) -> Any:
        client = imaplib.IMAP4("127.0.0.1", self.port)
        try:
            client.login(USER, PASSWORD)
            return work(client)
        finally:
            client.logout()

    def append(self, raw: bytes, folder: str = "INBOX", when: datetime = T0) -> tuple[int, int]:
        """Deliver ``raw`` with INTERNALDATE ``when``; returns (UIDVALIDITY, UID)."""
        typ, data = self._do(lambda c: c.append(folder, None, imaplib.Time2Internaldate(
            when.timestamp()), raw))
        assert typ == "OK", data
        fields = data[0].split(b"]")[0].split()
        return int(fields[1]), int(fields[2])

    def append_all(self, raws: list[bytes], folder: str = "INBOX") -> None:
        def work(c: imaplib.IMAP4) -> None:
            for raw in raws:
                assert c.append(folder, None, imaplib.Time2Internaldate(T0.timestamp()),
                                raw)[0] == "OK"
        self._do(work)

    def copy(self, uid: int, source: str, target: str) -> None:
        def work(c: imaplib.IMAP4) -> None:
            c.select(source)
            assert c.uid("COPY", str(uid), target)[0] == "OK"
        self._do(work)

    def recreate(self, folder: str) -> None:
        def work(c: imaplib.IMAP4) -> None:
            assert c.delete(folder)[0] == "OK"
            assert c.create(folder)[0] == "OK"
        self._do(work)


@pytest.fixture(scope="module", autouse=True)
def _parsers() -> Iterator[None]:
    yield
    shutdown_parsers()


@pytest.fixture
def imap(dovecot: Any) -> Imap:
    return Imap(dovecot.port)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + timedelta(days=30))


def open_store(path: Path, clock: ManualClock, *accounts: Account) -> Store:
    store = Store(f"sqlite:///{path}", clock=clock)
    store.upgrade()
    store.import_directory((), (), accounts, ())
    return store


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock, dovecot: Any) -> Iterator[Store]:
    with open_store(tmp_path / "mail.db", clock, account(dovecot.port)) as s:
        yield s


def sync(store: Store, port: int, clock: ManualClock, policy: WatchPolicy = FAST,
         **kwargs: Any) -> dict[str, MailboxReport]:
    report = run_async(sync_account(store, account(port, **kwargs), PASSWORD, clock,
                                      policy=policy))
    return {m.folder: m for m in report.mailboxes}


def stored(store: Store) -> list[tuple[str, int, int, datetime, str, ParseStatus]]:
    """(folder, UIDVALIDITY, UID, INTERNALDATE, sha256, parse status) of every location."""
    with store.session(write=False) as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(LocationRow.folder, LocationRow.uidvalidity, LocationRow.uid,
                   MessageRow.internaldate, MessageRow.sha256, MessageRow.parse_status)
            .join(MessageRow, MessageRow.id == LocationRow.message_id)
            .order_by(LocationRow.folder, LocationRow.uidvalidity, LocationRow.uid))]


def message_count(store: Store) -> int:
    with store.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(MessageRow)) or 0


def text_message(i: int, size: int = 600) -> bytes:
    body = ("您好，关于环评审批的咨询已收到。" * (size // 40 + 1))[: size // 3]
    return (f"From: =?utf-8?b?5bGA?= <hbj{i}@gd.test>\r\nTo: {USER}\r\n"
            f"Subject: reply {i}\r\nMessage-ID: <r{i}@gd.test>\r\n"
            f"Date: Mon, 2 Nov 2015 09:{i % 60:02d}:00 +0800\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode() + body.encode() + b"\r\n"


# --- incremental sync ----------------------------------------------------------------------------


def test_corpus_messages_are_stored_once_with_internaldate_and_location(
        store: Store, imap: Imap, dovecot: Any, clock: ManualClock) -> None:
    placed = {}
    for i, path in enumerate(CORPUS):
        when = T0 + timedelta(days=i, minutes=7 * i)  # chosen receive times, days apart
        folder = "Junk" if "spam" in path.name or "newsletter" in path.name else "INBOX"
        placed[path.name] = (folder, *imap.append(path.read_bytes(), folder, when), when)
    in_workers = replace(FAST, parse_workers=1, parse_pool_min=1)  # the big-sync path
    reports = sync(store, dovecot.port, clock, in_workers)
    assert {f: r.error for f, r in reports.items()} == {"INBOX": None, "Junk": None}
    assert sum(r.new for r in reports.values()) == len(CORPUS) == message_count(store)
    assert reports["Junk"].new == 2 and reports["INBOX"].fetches == 2  # sizes, then bodies
    by_sha = {hashlib.sha256(p.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
              .hexdigest(): p.name for p in CORPUS}
    rows = stored(store)
    assert len(rows) == len(CORPUS)
    for folder, uidvalidity, uid, internaldate, sha, status in rows:
        name = by_sha[sha]
        assert (folder, uidvalidity, uid, internaldate) == placed[name], name
        assert status in (ParseStatus.OK, ParseStatus.DEFECTS), name
    malformed = next(r for r in rows if by_sha[r[4]] == "16_malformed.eml")
    assert malformed[5] is ParseStatus.DEFECTS
    with store.session(write=False) as s:
        headers = dict(s.execute(select(MessageRow.sha256, MessageRow.header_message_id)).all())
    assert all(headers[sha] for sha in by_sha if by_sha[sha] != "16_malformed.eml")


def test_a_second_sync_fetches_nothing_old(store: Store, imap: Imap, dovecot: Any,
                                           clock: ManualClock) -> None:
    for i in range(5):
        imap.append(text_message(i))
    first = sync(store, dovecot.port, clock)
    assert first["INBOX"].new == 5 and first["INBOX"].fetches == 2  # sizes, then bodies
    again = sync(store, dovecot.port, clock)
    assert [(r.new, r.fetches, r.bytes) for r in again.values()] == [(0, 0, 0), (0, 0, 0)]
    late = [text_message(10), text_message(11)]
    for raw in late:
        imap.append(raw, "INBOX", T0 + timedelta(days=8))
    third = sync(store, dovecot.port, clock)
    assert third["INBOX"].new == 2 and third["INBOX"].bytes == sum(len(r) for r in late)
    assert message_count(store) == 7


def test_the_same_message_in_inbox_and_junk_is_one_message(store: Store, imap: Imap,
                                                           dovecot: Any,
                                                           clock: ManualClock) -> None:
    _, uid = imap.append(text_message(1))
    imap.append(text_message(2), "Junk")
    imap.copy(uid, "INBOX", "Junk")
    reports = sync(store, dovecot.port, clock)
    assert (reports["INBOX"].new, reports["Junk"].new, reports["Junk"].duplicates) == (1, 1, 1)
    assert message_count(store) == 2 and len(stored(store)) == 3


def test_a_changed_uidvalidity_resyncs_without_counting_twice(store: Store, imap: Imap,
                                                              dovecot: Any,
                                                              clock: ManualClock) -> None:
    raws = [text_message(i) for i in range(4)]
    before = [imap.append(r, "Junk") for r in raws]
    sync(store, dovecot.port, clock)
    imap.recreate("Junk")  # a server rebuild: new UIDVALIDITY, same messages back
    time.sleep(1.0)  # Dovecot derives UIDVALIDITY from the clock's seconds
    after = [imap.append(r, "Junk") for r in [*raws, text_message(9)]]
    assert after[0][0] != before[0][0]
    reports = sync(store, dovecot.port, clock)
    junk = reports["Junk"]
    assert junk.resync and (junk.new, junk.duplicates) == (1, 4)
    assert message_count(store) == 5
    state = mailstore.get_state(store, "citizen1", "Junk")
    assert state is not None and state.uidvalidity == after[0][0] and state.resyncs == 1


# --- faults --------------------------------------------------------------------------------------


def deliver_offline(dovecot: Any, raw: bytes, name: str) -> None:
    """Drop a message into INBOX's Maildir while the server is down (as an MDA would)."""
    target = Path(dovecot.root) / "mail" / USER / "new" / f"{int(time.time())}.{name}.mailprobe"
    target.write_bytes(raw)
    subprocess.run(["chown", "65534:65534", str(target)], check=True)


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "polling"])
def test_watch_forever_watches_every_folder_until_stopped(store: Store, imap: Imap,
                                                          dovecot: Any, clock: ManualClock,
                                                          idle: bool) -> None:
    seen: list[MailboxReport] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        watching = asyncio.create_task(watch_forever(
            store, [account(dovecot.port)], {"citizen1": PASSWORD}, clock, "w1", stop=stop,
            policy=replace(FAST, idle=idle), on_sync=seen.append,
            secret=token_secret(store)))
        while {r.folder for r in seen} != {"INBOX", "Junk"}:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(imap.append, text_message(1), "Junk")
        while not any(r.new for r in seen):
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(watching, 10)

    run_async(scenario())
    assert [(r.folder, r.new, r.classified) for r in seen if r.new] == [("Junk", 1, 1)]
    assert not any(r.error for r in seen)
    for folder in ("INBOX", "Junk"):
        state = mailstore.get_state(store, "citizen1", folder)
        assert state is not None and state.lease_holder is None  # released on stop


def restart_cutting_connections(dovecot: Any) -> None:
    """Stop Dovecot and the imap processes it leaves serving open connections.

    Its imap processes outlive a stopped master for about ten seconds, still answering;
    a crash or a host restart cuts them at once, which is the case tested here.
    """
    group = dovecot.process.pid  # started in a session of its own: the group is ours
    dovecot.stop()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def test_dovecot_restarted_during_idle_misses_nothing(store: Store, imap: Imap, dovecot: Any,
                                                      clock: ManualClock) -> None:
    reports: list[MailboxReport] = []

    async def until(check: Callable[[], bool], seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, [r.line() for r in reports]
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(idle_loop(
            store, account(dovecot.port), PASSWORD, clock, "w1", folder="INBOX", stop=stop,
            policy=FAST, on_sync=reports.append))
        await until(lambda: len(reports) >= 1)
        await asyncio.to_thread(imap.append, text_message(1))  # arrives during IDLE
        await until(lambda: sum(r.new for r in reports) == 1)
        await asyncio.to_thread(restart_cutting_connections, dovecot)
        deliver_offline(dovecot, text_message(2).replace(b"\r\n", b"\n"), "offline")
        await until(lambda: any(r.error for r in reports))  # it noticed, and backs off
        await asyncio.to_thread(dovecot.start)
        await until(lambda: sum(r.new for r in reports) == 2)
        await asyncio.to_thread(imap.append, text_message(3))
        await until(lambda: sum(r.new for r in reports) == 3)
        stop.set()
        await asyncio.wait_for(watcher, 10)

    run_async(scenario())
    assert message_count(store) == 3 and len(stored(store)) == 3
    state = mailstore.get_state(store, "citizen1", "INBOX")
    assert state is not None and state.lease_holder is None and state.consecutive_errors == 0


def test_a_connection_cut_during_fetch_loses_and_repeats_nothing(store: Store, imap: Imap,
                                                                 dovecot: Any,
                                                                 clock: ManualClock) -> None:
    raws = [text_message(i, size=3000) for i in range(120)]
    imap.append_all(raws)
    policy = replace(FAST, limits=FetchLimits(batch_count=25, timeout=10.0))

    async def through_proxy(cut_after: int | None) -> MailboxReport:
        async with CuttingProxy(dovecot.port, cut_after=cut_after) as proxy:
            report = await sync_account(store, account(proxy.port), PASSWORD, clock,
                                        folders=["INBOX"], policy=policy)
        return report.mailboxes[0]

    cut = run_async(through_proxy(150_000))  # mid-way through the third body batch
    assert cut.error and "connection lost" in cut.error
    kept = message_count(store)
    assert 0 < kept < len(raws) and kept % 25 == 0  # whole batches only
    assert cut.new == kept and cut.line().startswith("citizen1/INBOX: error: ")
    rest = run_async(through_proxy(None))
    assert rest.error is None and rest.new == len(raws) - kept and rest.duplicates == 0
    assert message_count(store) == len(raws) == len(stored(store))


def big_message(megabytes: int) -> bytes:
    blob = base64.encodebytes(random.Random(5).randbytes(megabytes * 3 * 2**20 // 4))
    return (b"From: hbj@gd.test\r\nSubject: attachment\r\nMessage-ID: <big@gd.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + "详见附件。".encode() + b"\r\n--b\r\nContent-Type: application/pdf\r\n"
            b"Content-Disposition: attachment; filename=reply.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + blob.replace(b"\n", b"\r\n") + b"--b--\r\n")


def test_a_20_mb_message_is_stored_whole_or_cut_with_the_cut_recorded(
        store: Store, imap: Imap, dovecot: Any, clock: ManualClock, tmp_path: Path) -> None:
    raw = big_message(20)
    assert len(raw) > 20_000_000
    imap.append(raw)
    whole = sync(store, dovecot.port, clock)["INBOX"]
    assert whole.new == 1 and whole.truncated == 0 and whole.error is None
    with store.session(write=False) as s:
        row = s.scalars(select(MessageRow)).one()
        assert row.sha256 == hashlib.sha256(raw).hexdigest() and not row.truncated
        assert row.parse_status in (ParseStatus.OK, ParseStatus.DEFECTS)
    small = replace(FAST, limits=FetchLimits(message_bytes=2**20, timeout=10.0))
    with open_store(tmp_path / "small.db", clock, account(dovecot.port)) as other:
        cut = sync(other, dovecot.port, clock, small)["INBOX"]
        assert cut.new == 1 and cut.truncated == 1
        with other.session(write=False) as s:
            row = s.scalars(select(MessageRow)).one()
        assert row.truncated and len(row.raw) == 2**20 and row.size == len(raw)
        assert row.truncated_note is not None and f"{len(raw):,} bytes" in row.truncated_note
        assert row.parse_status is not ParseStatus.PENDING


def test_garbage_is_kept_and_marked_and_the_watcher_goes_on(store: Store, imap: Imap,
                                                           dovecot: Any,
                                                           clock: ManualClock) -> None:
    noise = bytes(random.Random(3).choice(range(1, 256)) for _ in range(5000))
    imap.append(noise)
    imap.append(b"\xff\xfe\x00garbage" .replace(b"\x00", b"") * 50)
    imap.append(text_message(1))
    report = sync(store, dovecot.port, clock)["INBOX"]
    assert report.error is None and report.new == 3 and report.failed >= 1
    statuses = sorted(str(r[5]) for r in stored(store))
    assert statuses.count("ok") == 1 and statuses.count("failed") == report.failed
    with store.session(write=False) as s:
        errors = s.scalars(select(MessageRow.parse_error)
                           .where(MessageRow.parse_status == ParseStatus.FAILED)).all()
    assert errors and all(errors)


# --- the worker's tick: leases, backoff, errors --------------------------------------------------


def test_the_tick_leases_mailboxes_and_backs_off_after_errors(store: Store, imap: Imap,
                                                              dovecot: Any,
                                                              clock: ManualClock) -> None:
    imap.append(text_message(1))
    up, down = account(dovecot.port), account(free_port())  # nothing listens on the latter
    mailstore.acquire_leases(store, [("citizen1", "Junk")], "other", now=clock.now(),
                             ttl=timedelta(minutes=5))
    report = run_async(sync_mailboxes(store, None, {"citizen1": PASSWORD}, clock, "w1",
                                        policy=FAST))
    by_folder = {m.folder: m for m in report.mailboxes}
    assert by_folder["INBOX"].new == 1
    assert by_folder["Junk"].skipped and "watched by other" in by_folder["Junk"].skipped

    def tick(acc: Account) -> MailboxReport:
        done = run_async(sync_mailboxes(store, [acc], {"citizen1": PASSWORD}, clock, "w1",
                                          policy=FAST))
        return next(m for m in done.mailboxes if m.folder == "INBOX")

    failed = tick(down)
    assert failed.error and "ConnectionRefusedError" in failed.error
    assert "backing off" in (tick(up).skipped or "")
    state = mailstore.get_state(store, "citizen1", "INBOX")
    assert state is not None and state.retry_at == clock.now() + FAST.backoff.first
    clock.advance(timedelta(seconds=1))
    assert tick(down).error
    state = mailstore.get_state(store, "citizen1", "INBOX")
    assert state is not None and state.consecutive_errors == 2  # the wait doubled
    assert state.retry_at == clock.now() + 2 * FAST.backoff.first
    clock.advance(timedelta(seconds=1))
    imap.append(text_message(2))
    assert tick(up).new == 1
    state = mailstore.get_state(store, "citizen1", "INBOX")
    assert state is not None and state.consecutive_errors == 0 and state.lease_holder is None


def test_a_refused_login_is_reported_without_the_password(store: Store, dovecot: Any,
                                                         clock: ManualClock) -> None:
    report = run_async(sync_account(store, account(dovecot.port), "pw-Zq8!wrong", clock,
                                      policy=FAST))
    errors = [m.error or "" for m in report.mailboxes]
    assert all("login refused for citizen1@mail.test" in e for e in errors), errors
    assert not any("Zq8" in e for e in errors)


def test_starttls_is_required_when_the_account_says_so(store: Store, dovecot: Any,
                                                        clock: ManualClock) -> None:
    reports = sync(store, dovecot.port, clock, tls=TlsMode.STARTTLS)
    assert all("does not offer STARTTLS" in (r.error or "") for r in reports.values())


# --- the command ---------------------------------------------------------------------------------


def invoke(args: list[str]) -> Result:
    """The command in a thread of its own, for the same reason as ``run_async``."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(CliRunner().invoke, main, args).result()


def test_watch_once_prints_each_folder_and_a_missing_password_is_one_line(
        store: Store, imap: Imap, dovecot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    imap.append(text_message(1))
    imap.append(b"\x01\x02 not mail at all \x7f" * 20, "Junk")
    url = store.url
    monkeypatch.delenv("MP_TEST_PW_CITIZEN1", raising=False)
    with pytest.raises(ConfigError, match="no password for account citizen1"):
        main.main(["watch", "--once", "--db", url], standalone_mode=False)
    monkeypatch.setenv("MP_TEST_PW_CITIZEN1", PASSWORD)
    result = invoke(["watch", "--once", "--db", url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("citizen1/INBOX: 1 new, 0 duplicates, 0 failed parses, "
                               "0 truncated (UIDVALIDITY ")
    assert lines[1].startswith("citizen1/Junk: 1 new, 0 duplicates, 1 failed parses")
    assert lines[2].startswith("  failed parses (kept, marked): messages ")
    # Classified and matched as they were parsed: processing finds nothing left.
    assert lines[-1] == "2 new messages in 2 folders (2 classified and matched), 0 errors"
    assert stage.process_new(store, token_secret(store), clock=store.clock).processed == 0
    again = invoke(["watch", "--once", "--db", url, "--account", "citizen1"])
    assert "citizen1/INBOX: 0 new" in again.output
    unknown = invoke(["watch", "--once", "--db", url, "--account", "nobody"])
    assert unknown.exit_code != 0 and "no account nobody" in str(unknown.exception)


def test_the_corpus_is_here() -> None:
    assert len(CORPUS) >= 20 and os.path.getsize(CORPUS[0]) > 0


def test_watch_once_exits_with_status_1_when_a_folder_failed(
        tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    nobody_listens = free_port()
    with open_store(tmp_path / "mail.db", clock, account(nobody_listens)) as store:
        url = store.url
    monkeypatch.setenv("MP_TEST_PW_CITIZEN1", PASSWORD)
    status, out, err = run_cli(capsys, "watch", "--once", "--db", url)
    assert status == 1, out  # the real entry point, as a shell sees it
    assert "CONNECT failed" in err and out.splitlines()[-1].endswith("2 errors")
