"""Watching mailboxes: incremental IMAP sync into the store, IDLE or polling, with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import ssl
import sys
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing import get_context

from sqlalchemy.orm import Session

from mailprobe import examine, mailstore, parsing, process
from mailprobe.clock import Clock
from mailprobe.decode import MAX_BYTES, MAX_PARTS
from mailprobe.directory import Account
from mailprobe.errors import MailprobeError
from mailprobe.imap import (
    Fetched,
    FetchLimits,
    ImapSession,
    connect,
    plan_batches,
)
from mailprobe.mailstore import Mailbox, ParseOutcome
from mailprobe.models_mail import MailboxState, ParseStatus
from mailprobe.store import Store

__all__ = [
    "Backoff",
    "MailboxReport",
    "SyncReport",
    "WatchPolicy",
    "idle_loop",
    "parse_outcome",
    "shutdown_parsers",
    "sync_account",
    "sync_mailboxes",
    "watch_forever",
]

log = logging.getLogger(__name__)
_MAX_ERROR = 2_000


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff after failed syncs: ``first``, doubling, at most ``cap``."""

    first: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    cap: timedelta = timedelta(minutes=15)

    def delay(self, attempt: int) -> timedelta:
        """The wait before retry number ``attempt`` (1 = after the first failure)."""
        seconds = self.first.total_seconds() * self.factor ** max(0, min(attempt - 1, 60))
        return min(self.cap, timedelta(seconds=seconds))


@dataclass(frozen=True)
class WatchPolicy:
    limits: FetchLimits = field(default_factory=FetchLimits)
    backoff: Backoff = field(default_factory=Backoff)
    lease: timedelta = timedelta(minutes=5)  # one watcher per mailbox; renewed while working
    idle: bool = True  # IDLE where the server offers it; False: always poll
    idle_seconds: float = 25 * 60  # RFC 2177: end IDLE before the server's 30-minute timeout
    poll_seconds: float = 60.0  # servers without IDLE
    parse_bytes: int = MAX_BYTES
    parse_parts: int = MAX_PARTS
    # Processes parsing (and classifying) a large sync: one per core. The syncing process
    # mostly waits for them (fetch and store are I/O), so it needs no core of its own:
    # 20,000 messages on 2 cores synced in 6.3 s with 2 processes, 8.6 s with 1.
    parse_workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 2))
    parse_pool_min: int = 200  # smaller batches are parsed in a thread (no process start-up)
    concurrency: int = 4  # accounts synced at once by sync_mailboxes
    ssl_context: ssl.SSLContext | None = None  # None: the system's trust store


@dataclass(frozen=True)
class MailboxReport:
    """What one sync of one mailbox did; ``error`` or ``skipped`` say why it did not."""

    account: str
    folder: str
    uidvalidity: int | None = None
    new: int = 0  # messages stored for the first time
    duplicates: int = 0  # already stored (another folder, or read again)
    failed: int = 0  # stored, but not parseable as mail
    defects: int = 0  # parsed, with defects recorded
    truncated: int = 0  # over the size limit: only their start was fetched
    resync: bool = False  # the UIDVALIDITY changed: the folder was read again
    fetches: int = 0  # FETCH commands sent
    bytes: int = 0  # message bytes received
    new_ids: tuple[int, ...] = ()
    failed_ids: tuple[int, ...] = ()
    error: str | None = None
    skipped: str | None = None
    classified: int = 0  # classified and matched during the sync (given the probe secret)

    def line(self) -> str:
        """One line for a person (the CLI and the log)."""
        where = f"{self.account}/{self.folder}"
        if self.skipped:
            return f"{where}: skipped, {self.skipped}"
        counts = (f"{self.new} new, {self.duplicates} duplicates, {self.failed} failed parses, "
                  f"{self.truncated} truncated")
        extra = f" (UIDVALIDITY {self.uidvalidity}, {self.fetches} FETCH, {self.bytes:,} bytes"
        extra += ", resynced after a UIDVALIDITY change)" if self.resync else ")"
        if self.error:
            return f"{where}: error: {self.error}; before it: {counts}"
        return f"{where}: {counts}{extra if self.uidvalidity is not None else ''}"


@dataclass(frozen=True)
class SyncReport:
    mailboxes: tuple[MailboxReport, ...] = ()

    @property
    def new(self) -> int:
        return sum(m.new for m in self.mailboxes)

    @property
    def classified(self) -> int:
        return sum(m.classified for m in self.mailboxes)

    @property
    def errors(self) -> tuple[MailboxReport, ...]:
        return tuple(m for m in self.mailboxes if m.error)


# --- parsing ---------------------------------------------------------------------------------


def parse_outcome(message_id: int, raw: bytes, *, max_bytes: int = MAX_BYTES,
                  max_parts: int = MAX_PARTS) -> ParseOutcome:
    """Parse one stored message and say how it went; never raises."""
    return _as_outcome(parsing.outcome(message_id, raw, max_bytes=max_bytes,
                                       max_parts=max_parts))


def _as_outcome(found: parsing.Outcome) -> ParseOutcome:
    message_id, status, error, header_message_id, header_date = found
    return ParseOutcome(message_id, ParseStatus(status), error, header_message_id, header_date)


def _parse_many(items: Sequence[tuple[int, bytes]], max_bytes: int,
                max_parts: int) -> list[ParseOutcome]:
    return [_as_outcome(o) for o in parsing.parse_many(items, max_bytes, max_parts)]


def _parse_pending(store: Store, clock: Clock, policy: WatchPolicy, limit: int = 500) -> int:
    """Parse messages a crash left stored but unparsed; returns how many.

    Only those stored a lease's length ago: younger ones belong to a sync still running.
    """
    done = 0
    before = clock.now() - policy.lease
    while batch := mailstore.pending_parse(store, limit, stored_before=before):
        mailstore.mark_parsed(store, _parse_many(batch, policy.parse_bytes, policy.parse_parts),
                              now=clock.now())
        done += len(batch)
    return done


_POOLS: dict[int, ProcessPoolExecutor] = {}
_Item = tuple[int, bytes, datetime]  # a stored message to parse: id, raw, INTERNALDATE


def shutdown_parsers() -> None:
    """Stop the parsing processes (they are started again when needed)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for parsing, started once: parsing is CPU-bound, fetching is not.

    All of them start at once, each importing only ``mailprobe.examine`` (the decoder, the
    classifier and the matcher), not the program's main module, which spawn would
    otherwise run again in every worker (the CLI's or a script's imports: the store,
    SQLAlchemy, pandas; a second or more).
    """
    if workers not in _POOLS:
        # spawn, not fork: the watcher has threads (asyncio.to_thread) when it starts one
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                   initializer=examine.worker_started)
        with _plain_main():
            for _ in range(workers):  # the processes start on submit, here
                pool.submit(examine.ready)
        _POOLS[workers] = pool
    return _POOLS[workers]


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """While processes are spawned: a main module with no file, so they do not import it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main




class _Collections:
    """The collector's thresholds before the first of the syncs running in this process."""

    syncs = 0
    before: tuple[int, ...] = ()


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect garbage less often while syncing.

    A large sync allocates a great many short-lived containers (response lines, parsed
    results waiting for their commit); with the default thresholds the collector ran a full
    collection every few thousand messages, at 150 ms each: a fifth of the syncing
    process's CPU (``examine.RELAXED_GC``). The thresholds are process-wide, so they are
    restored when the last of the syncs running together ends.
    """
    if _Collections.syncs == 0:
        _Collections.before = gc.get_threshold()
        gc.set_threshold(*examine.RELAXED_GC)
    _Collections.syncs += 1
    try:
        yield
    finally:
        _Collections.syncs -= 1
        if _Collections.syncs == 0:
            gc.set_threshold(*_Collections.before)


class _Pipeline:
    """Fetch, store and parse overlap: batch N is committed while batch N+1 is fetched.

    Stores run one at a time, in order, in a thread (SQLite and PostgreSQL release the GIL
    while they write and wait for the disk), while the event loop fetches the next batch.
    Batches that queue up behind a running store are committed together (one transaction
    of at most ``_MAX_QUEUED`` batches): a slow disk means fewer, larger commits. Each
    commit also moves the mailbox's ``last_uid`` to the last UID it holds, so progress is
    never recorded before the messages up to it are durable; a failed store stops the
    pipeline (nothing after it is stored) and its error surfaces from the next ``add`` or
    from ``finish``. Raw bytes are committed before they are parsed: once committed, the
    new messages go to the parsing processes; their results are recorded with the next
    commit. The parsing processes get at most ``parse_workers + 1`` batches at a time (one
    queued behind the running ones); beyond that the store waits, which in turn holds
    back the fetch, so memory stays bounded.

    Given the probe secret, the parsing processes also classify and match each message
    (``examine``) against the sent probes as they were when the sync started, and the
    results are recorded with the parse status: a first sync then leaves processing
    nothing to do, instead of every message being read back and parsed a second time.
    Results are not recorded if a probe was sent meanwhile (processing does those
    messages); the probes are then read again for the rest of the sync.
    """

    _MAX_QUEUED = 2  # fetched batches waiting for the store before the fetch waits too

    def __init__(self, store: Store, account: str, folder: str, uidvalidity: int,
                 clock: Clock, policy: WatchPolicy, secret: bytes | None = None) -> None:
        self.store, self.account, self.folder, self.uidvalidity = (
            store, account, folder, uidvalidity)
        self.clock, self.policy, self.secret = clock, policy, secret
        self.new: list[int] = []
        self.failed: list[int] = []
        self.duplicates = self.defects = self.truncated = self.classified = 0
        self._queue: list[tuple[Sequence[Fetched], int]] = []  # fetched, not stored yet
        self._queued_bytes = 0
        self._storing: asyncio.Task[None] | None = None
        self._stored = asyncio.Event()  # set after each commit (or failure)
        self._ready: list[ParseOutcome] = []
        self._rows: list[examine.FreshRows] = []  # classified and matched, not recorded yet
        # Batches in the parsing processes, with the key of the context they went with.
        self._parsing: dict[asyncio.Future[examine.Examinations], tuple[list[_Item], str]] = {}
        self._orphans: list[_Item] = []  # to parse here: few, or their parsing process died
        self._unexamined: list[_Item] = []  # parsed by a process that lacked the context
        self._context: examine.MatchContext | None = None
        self._key, self._blob = "", b""  # the context as sent to the parsing processes
        self._holding: set[int] = set()  # the parsing processes that hold it (their pids)
        self._stale = False  # a probe was sent since the context was read

    async def add(self, fetched: Sequence[Fetched], advance_to: int) -> None:
        """Queue a fetched batch for storing; returns once the fetch may go on."""
        self._raise_store_error()
        self._queue.append((fetched, advance_to))
        self._queued_bytes += sum(len(f.raw) for f in fetched)
        if self._storing is None:
            self._storing = asyncio.create_task(self._store_queued())
        # The fetch runs at most one batch ahead of the store (more when batches are small).
        while self._storing is not None and not self._storing.done() and (
                len(self._queue) >= self._MAX_QUEUED
                or self._queued_bytes >= self.policy.limits.batch_bytes):
            self._stored.clear()
            await self._stored.wait()
        self._raise_store_error()

    def _raise_store_error(self) -> None:
        task = self._storing
        if task is not None and task.done():
            self._storing = None
            task.result()  # a store error: re-raised here; the queue was not stored

    async def _store_queued(self) -> None:
        try:
            while self._queue:
                await self._store_some()
                self._stored.set()
        finally:
            self._stored.set()

    async def _store_some(self) -> None:
        take, self._queue = self._queue[:self._MAX_QUEUED], self._queue[self._MAX_QUEUED:]
        self._queued_bytes = sum(len(f.raw) for batch, _ in self._queue for f in batch)
        fetched = [f for batch, _ in take for f in batch]
        outcomes, rows = self._take()
        parsed, record = self._recorder(outcomes, rows)
        try:
            stored = await asyncio.to_thread(
                mailstore.store_fetched, self.store, self.account, self.folder,
                self.uidvalidity, fetched, now=self.clock.now(), advance_to=take[-1][1],
                outcomes=parsed, also=record)
        except BaseException:
            self._ready[:0] = outcomes  # not recorded: ``finish`` tries again
            self._rows[:0] = rows
            self._queue[:0] = take  # not stored (and never will be by this pipeline)
            raise
        self._count(outcomes)
        self.new += [mid for mid, _ in stored.new]
        self.duplicates += stored.duplicates
        self.truncated += stored.truncated
        items = [(mid, fetched[i].raw, fetched[i].internaldate) for mid, i in stored.new]
        await self._refresh_context(bool(items))
        p = self.policy
        if len(items) < p.parse_pool_min:
            self._orphans += items  # a few: parsed here, no process start-up
            await self._parse_here()
            return
        # Back-pressure: one batch may wait behind those the parsing processes are on.
        while len(self._parsing) > p.parse_workers:
            await asyncio.wait(self._parsing, return_when=asyncio.FIRST_COMPLETED)
            self._collect()
        await self._parse_here()
        blob = None
        if self._context is not None and len(self._holding) < p.parse_workers:
            # The context goes with each batch until every parsing process holds it.
            self._blob = self._blob or pickle.dumps(self._context)
            blob = self._blob
        self._parsing[asyncio.wrap_future(_pool(p.parse_workers).submit(
            examine.parse_and_examine, items, self.account, p.parse_bytes, p.parse_parts,
            self._key, blob))] = (items, self._key)

    async def _refresh_context(self, needed: bool) -> None:
        """Read the sent probes when first needed, and again after one was sent."""
        if self.secret is None or not needed or (self._context is not None
                                                  and not self._stale):
            return
        self._context = await asyncio.to_thread(process.load_context, self.store, self.secret)
        self._rows.clear()  # matched against the old probes: processing does those messages
        self._key = uuid.uuid4().hex
        self._blob = b""  # pickled when a parsing process first needs it
        self._holding.clear()
        self._stale = False

    def _recorder(self, outcomes: list[ParseOutcome], rows: list[examine.FreshRows]
                  ) -> tuple[list[ParseOutcome], Callable[[Session], None] | None]:
        """What the store records of the parsing: the outcomes it records itself, and a
        function that records the rest (outcomes with their classification) in its
        transaction, unless a probe was sent meanwhile (then only the outcomes)."""
        context = self._context
        if not rows or context is None:
            return outcomes, None

        def record(s: Session) -> None:
            classified = process.save_examined(s, outcomes, rows, context.stamp,
                                               self.clock.now())
            if classified is None:
                self._stale = True
            else:
                self.classified += classified
        return [], record

    async def _parse_here(self) -> None:
        orphans, self._orphans = self._orphans, []
        unexamined, self._unexamined = self._unexamined, []
        p = self.policy
        if orphans:
            self._done(await asyncio.to_thread(
                examine.examine_many, self._context, orphans, self.account, p.parse_bytes,
                p.parse_parts), orphans)
        if unexamined and self._context is not None:
            # Parsed already (the outcomes are recorded): only the rows are wanted.
            found = await asyncio.to_thread(examine.examine_many, self._context, unexamined,
                                            self.account, p.parse_bytes, p.parse_parts)
            self._rows += [rows for _, rows in found if rows is not None]

    def _done(self, results: list[examine.Examination], items: list[_Item],
              examined: bool = True) -> None:
        self._ready += [_as_outcome(o) for o, _ in results]
        if examined:
            self._rows += [rows for _, rows in results if rows is not None]
        elif self._context is not None:
            self._unexamined += items

    def _collect(self) -> None:
        for future in [f for f in self._parsing if f.done()]:
            items, key = self._parsing.pop(future)
            try:
                found = future.result()
            except BrokenProcessPool:  # a worker died (out of memory?): parse them here
                broken = _POOLS.pop(self.policy.parse_workers, None)
                if broken is not None:
                    broken.shutdown(wait=False, cancel_futures=True)
                self._holding.clear()
                log.warning("a parsing process died; parsing %d messages in-process",
                            len(items))
                self._orphans += items
                continue
            if found.examined and key == self._key:
                self._holding.add(found.pid)
            if key != self._key:  # matched against old probes: processing does them
                self._ready += [_as_outcome(o) for o, _ in found.results]
                continue
            # Results from other code (an upgrade while the pool ran) are examined again.
            self._done(found.results, items,
                       found.examined and found.version == parsing.code_version())

    def _take(self) -> tuple[list[ParseOutcome], list[examine.FreshRows]]:
        self._collect()
        outcomes, self._ready = self._ready, []
        rows, self._rows = self._rows, []
        return outcomes, rows

    def _count(self, outcomes: Sequence[ParseOutcome]) -> None:
        self.failed += [o.message_id for o in outcomes if o.status is ParseStatus.FAILED]
        self.defects += sum(o.status is ParseStatus.DEFECTS for o in outcomes)

    async def finish(self) -> None:
        """Store what is queued, then record the parsing of all that was stored.

        Raises the store's error, if a store failed: the folder's sync failed, and the
        next one starts after the last batch committed. Whatever was committed is still
        parsed and its results recorded.
        """
        try:
            while self._storing is not None:
                await asyncio.wait({self._storing})
                self._raise_store_error()
                if self._queue:  # queued after the task's last look
                    self._storing = asyncio.create_task(self._store_queued())
        finally:
            if self._parsing:
                await asyncio.wait(self._parsing)
            self._collect()
            await self._parse_here()
            outcomes, rows = self._take()
            parsed, record = self._recorder(outcomes, rows)
            await asyncio.to_thread(mailstore.mark_parsed, self.store, parsed,
                                    now=self.clock.now(), also=record)
            self._count(outcomes)


class _Lease:
    """Our lease on one mailbox, renewed once a third of it has passed."""

    def __init__(self, store: Store, mailbox: Mailbox, holder: str, clock: Clock,
                 ttl: timedelta) -> None:
        self.store, self.mailbox, self.holder, self.clock, self.ttl = (
            store, mailbox, holder, clock, ttl)
        self.renewed = clock.now()

    async def keep(self) -> None:
        now = self.clock.now()
        if now - self.renewed < self.ttl / 3:
            return
        held = await asyncio.to_thread(mailstore.renew_lease, self.store, *self.mailbox,
                                       self.holder, now=now, ttl=self.ttl)
        if not held:
            raise _LeaseLost(f"another worker took over {'/'.join(self.mailbox)}")
        self.renewed = now


class _LeaseLost(MailprobeError):
    """Our lease expired and another worker now watches the mailbox."""


class _FolderFailed(Exception):
    """A folder's sync broke off: ``report`` has what it stored before, and why it stopped."""

    def __init__(self, report: MailboxReport, cause: Exception) -> None:
        super().__init__(report.error)
        self.report, self.cause = report, cause


async def _sync_folder(session: ImapSession, store: Store, account: Account, folder: str,
                       clock: Clock, policy: WatchPolicy, lease: _Lease | None = None,
                       secret: bytes | None = None) -> MailboxReport:
    """Fetch and store what is new in one folder; _FolderFailed (or ImapError) if it breaks."""
    before = session.traffic.copy()
    selected = await session.select(folder)
    opened = await asyncio.to_thread(mailstore.open_mailbox, store, account.id, folder,
                                     selected.uidvalidity)
    if selected.uidnext is not None:
        top = selected.uidnext - 1
    else:  # RFC 3501 requires UIDNEXT, but a missing one must not stop the sync
        top = (await session.last_uid() or 0) if selected.exists else 0
    pipe = _Pipeline(store, account.id, folder, selected.uidvalidity, clock, policy, secret)
    if top - opened.last_uid >= max(policy.parse_pool_min, 1):
        _pool(policy.parse_workers)  # its processes start while the first batch is fetched

    def report(error: str | None = None) -> MailboxReport:
        spent = session.traffic - before
        return MailboxReport(account.id, folder, selected.uidvalidity, len(pipe.new),
                             pipe.duplicates, len(pipe.failed), pipe.defects, pipe.truncated,
                             opened.resync, spent["FETCH"], spent["bytes"], tuple(pipe.new),
                             tuple(pipe.failed), error, classified=pipe.classified)

    try:
        first = opened.last_uid + 1
        while first <= top:
            last = min(top, first + policy.limits.size_chunk - 1)
            for batch in plan_batches(await session.sizes(first, last), policy.limits):
                fetched = await session.fetch(batch)
                if lease is not None:
                    await lease.keep()
                await pipe.add(fetched, max(batch.uids))
            first = last + 1
        await pipe.finish()  # a store error surfaces here at the latest
    except Exception as exc:  # what was fetched before is still stored and parsed
        try:
            await pipe.finish()
        except Exception as also:  # the store failed (again); the folder fails either way
            if also is not exc:
                log.warning("%s/%s: while finishing after %s: %s", account.id, folder,
                            _error_text(exc), _error_text(also))
        raise _FolderFailed(report(_error_text(exc)), exc) from exc
    await asyncio.to_thread(mailstore.advance, store, account.id, folder,
                            selected.uidvalidity, max(top, opened.last_uid), now=clock.now())
    return report()


# --- one account, many mailboxes -----------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, _FolderFailed):
        return exc.report.error or ""
    if isinstance(exc, MailprobeError):
        return exc.one_line()
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]


def _failure(exc: Exception, account: str, folder: str) -> MailboxReport:
    if isinstance(exc, _FolderFailed):
        return exc.report
    return MailboxReport(account, folder, error=_error_text(exc))


def _log_unexpected(exc: Exception, account: str, folder: str) -> None:
    """A traceback for bugs; network and server failures are expected and reported."""
    cause = exc.cause if isinstance(exc, _FolderFailed) else exc
    if not isinstance(cause, MailprobeError | OSError):
        log.error("syncing %s/%s failed", account, folder, exc_info=cause)


async def sync_account(store: Store, account: Account, password: str, clock: Clock, *,
                       folders: Sequence[str] | None = None,
                       policy: WatchPolicy | None = None,
                       leases: Mapping[str, _Lease] | None = None,
                       secret: bytes | None = None) -> SyncReport:
    """One connection, each folder synced in turn; errors are reported, never raised.

    Given the probe ``secret``, new messages are also classified and matched as they are
    parsed (what ``process.process_new`` would do with them afterwards).

    Only UIDs above the stored ``last_uid`` of the same UIDVALIDITY are fetched. A folder
    the server refuses (say, no Junk folder) is reported and the others still synced; a
    broken connection ends the account's sync with the error on the folders left.
    """
    policy = policy or WatchPolicy()
    wanted = list(account.watch_folders if folders is None else folders)
    reports: list[MailboxReport] = []
    try:
        session = await connect(account, password, timeout=policy.limits.timeout,
                                ssl_context=policy.ssl_context)
    except (MailprobeError, OSError) as exc:
        return SyncReport(tuple(MailboxReport(account.id, f, error=_error_text(exc))
                                for f in wanted))
    with _fewer_collections():
        async with session:
            for folder in wanted:
                lease = (leases or {}).get(folder)
                try:
                    reports.append(await _sync_folder(session, store, account, folder, clock,
                                                      policy, lease, secret))
                except Exception as exc:  # reported per mailbox; one never stops the rest
                    _log_unexpected(exc, account.id, folder)
                    reports.append(_failure(exc, account.id, folder))
                    if session.broken:
                        reports += [MailboxReport(account.id, f, error=_error_text(exc))
                                    for f in wanted[len(reports):]]
                        break
    return SyncReport(tuple(reports))


async def sync_mailboxes(store: Store, accounts: Sequence[Account] | None,
                         passwords: Mapping[str, str], clock: Clock, worker_id: str, *,
                         policy: WatchPolicy | None = None,
                         due_only: bool = True, secret: bytes | None = None) -> SyncReport:
    """Sync every watched mailbox this worker can lease; the worker's tick calls this.

    ``accounts``: None for every account in the store's directory. Each mailbox (account,
    folder) is leased first, so one worker syncs it at a time; the leases are released at
    the end. A mailbox that failed waits out its backoff (``due_only``) before the next
    try. Messages a crash left stored but unparsed are parsed first. Given the probe
    ``secret``, new messages are also classified and matched (see ``sync_account``).
    """
    policy = policy or WatchPolicy()
    if accounts is None:
        accounts = (await asyncio.to_thread(store.directory)).accounts
    await asyncio.to_thread(_parse_pending, store, clock, policy)
    wanted = [(a.id, f) for a in accounts for f in a.watch_folders]
    held = set(await asyncio.to_thread(
        mailstore.acquire_leases, store, wanted, worker_id, now=clock.now(), ttl=policy.lease,
        due_only=due_only))
    skipped = [await _skipped(store, m, clock) for m in wanted if m not in held]
    limit = asyncio.Semaphore(max(1, policy.concurrency))

    async def one(account: Account) -> SyncReport:
        folders = [f for f in account.watch_folders if (account.id, f) in held]
        password = passwords.get(account.id)
        if password is None:
            return SyncReport(tuple(MailboxReport(account.id, f, error="no password")
                                    for f in folders))
        leases = {f: _Lease(store, (account.id, f), worker_id, clock, policy.lease)
                  for f in folders}
        async with limit:
            return await sync_account(store, account, password, clock, folders=folders,
                                      policy=policy, leases=leases, secret=secret)

    try:
        done = await asyncio.gather(*(one(a) for a in accounts
                                      if any((a.id, f) in held for f in a.watch_folders)))
    finally:
        await asyncio.to_thread(mailstore.release_leases, store, sorted(held), worker_id)
    reports = [m for r in done for m in r.mailboxes]
    await _record(store, reports, clock, policy)
    return SyncReport(tuple(reports + skipped))


async def _record(store: Store, reports: Sequence[MailboxReport], clock: Clock,
                  policy: WatchPolicy) -> None:
    """Failed mailboxes back off before their next try; the rest is logged."""
    for m in reports:
        if m.error:
            state = await asyncio.to_thread(
                mailstore.record_error, store, m.account, m.folder, m.error, now=clock.now(),
                delay=policy.backoff.delay)
            log.warning("%s (retry after %s)", m.line(), state.retry_at)
        elif m.new or m.resync:
            log.info("%s", m.line())


async def _skipped(store: Store, mailbox: Mailbox, clock: Clock) -> MailboxReport:
    state = await asyncio.to_thread(mailstore.get_state, store, *mailbox)
    return MailboxReport(*mailbox, skipped=_why_skipped(state, clock))


def _why_skipped(state: MailboxState | None, clock: Clock) -> str:
    now = clock.now()
    if state is not None and state.lease_holder and state.lease_until and state.lease_until > now:
        return f"watched by {state.lease_holder} until {state.lease_until:%Y-%m-%d %H:%M:%S}Z"
    if state is not None and state.retry_at and state.retry_at > now:
        return (f"backing off until {state.retry_at:%Y-%m-%d %H:%M:%S}Z after "
                f"{state.consecutive_errors} errors (last: {state.last_error})")
    return "not leased"


# --- continuous watching -------------------------------------------------------------------------


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))


async def idle_loop(store: Store, account: Account, password: str, clock: Clock,
                    worker_id: str, *, folder: str, stop: asyncio.Event,
                    policy: WatchPolicy | None = None,
                    on_sync: Callable[[MailboxReport], None] | None = None) -> None:
    """Watch one mailbox until ``stop``: sync, then IDLE (or poll), and again.

    Holds the mailbox's lease while watching (waits while another worker holds it).
    After any network or server error it reconnects with exponential backoff, and the
    first sync after reconnecting catches up on everything that arrived meanwhile.
    """
    policy = policy or WatchPolicy()
    mailbox = (account.id, folder)
    attempt = 0
    while not stop.is_set():
        got = await asyncio.to_thread(mailstore.acquire_leases, store, [mailbox], worker_id,
                                      now=clock.now(), ttl=policy.lease)
        if not got:
            await _pause(stop, policy.poll_seconds)
            continue
        lease = _Lease(store, mailbox, worker_id, clock, policy.lease)
        try:
            await _watch_connected(store, account, password, clock, folder, stop, policy,
                                   lease, on_sync)
            attempt = 0
        except _LeaseLost as exc:  # not a failure: another worker watches it now
            log.info("%s", exc.one_line())
            await _pause(stop, policy.poll_seconds)
        except Exception as exc:  # any failure: back off and reconnect; never give up
            attempt += 1
            _log_unexpected(exc, *mailbox)
            await asyncio.to_thread(
                mailstore.record_error, store, account.id, folder, _error_text(exc),
                now=clock.now(), delay=policy.backoff.delay)
            log.warning("%s/%s: %s; reconnecting in %s (attempt %d)", *mailbox,
                        _error_text(exc), policy.backoff.delay(attempt), attempt)
            if on_sync is not None:
                on_sync(_failure(exc, *mailbox))
            await _pause(stop, policy.backoff.delay(attempt).total_seconds())
    await asyncio.to_thread(mailstore.release_leases, store, [mailbox], worker_id)


async def _watch_connected(store: Store, account: Account, password: str, clock: Clock,
                           folder: str, stop: asyncio.Event, policy: WatchPolicy,
                           lease: _Lease, on_sync: Callable[[MailboxReport], None] | None
                           ) -> None:
    session = await connect(account, password, timeout=policy.limits.timeout,
                            ssl_context=policy.ssl_context)
    # IDLE ends often enough for the lease to be renewed well before it runs out.
    wait = min(policy.idle_seconds, policy.lease.total_seconds() / 3)
    async with session:
        while not stop.is_set():
            report = await _sync_folder(session, store, account, folder, clock, policy, lease)
            if on_sync is not None:
                on_sync(report)
            if report.new or report.resync:
                log.info("%s", report.line())
            await lease.keep()
            if policy.idle and session.has_idle:
                await session.idle(wait, stop)
            else:
                await _pause(stop, policy.poll_seconds)


async def watch_forever(store: Store, accounts: Iterable[Account], passwords: Mapping[str, str],
                        clock: Clock, worker_id: str, *, stop: asyncio.Event,
                        policy: WatchPolicy | None = None,
                        on_sync: Callable[[MailboxReport], None] | None = None) -> None:
    """Watch every folder of every account (one connection each) until ``stop`` is set."""
    policy = policy or WatchPolicy()
    await asyncio.to_thread(_parse_pending, store, clock, policy)
    async with asyncio.TaskGroup() as group:
        for account in accounts:
            for folder in account.watch_folders:
                group.create_task(idle_loop(
                    store, account, passwords[account.id], clock, worker_id, folder=folder,
                    stop=stop, policy=policy, on_sync=on_sync))
