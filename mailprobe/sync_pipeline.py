"""The sync's pipeline: fetched batches stored, parsed, classified and matched, overlapping.

``watch`` drives it, one folder at a time: it fetches, and hands each batch to
:class:`Pipeline`, which stores it in a thread while the next batch is fetched, parses it
(and, given the probe secret, classifies and matches it) in worker processes, and records
the results with a later commit. Also here: those processes, and the garbage collector's
thresholds while syncs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import sys
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from multiprocessing import get_context
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from mailprobe import examine, mailstore, parsing, process
from mailprobe.clock import Clock
from mailprobe.decode import MAX_BYTES, MAX_PARTS
from mailprobe.imap import Fetched
from mailprobe.mailstore import ParseOutcome
from mailprobe.models_mail import ParseStatus
from mailprobe.store import Store

if TYPE_CHECKING:  # watch imports this module
    from mailprobe.watch import WatchPolicy

__all__ = ["Pipeline", "fewer_collections", "parse_outcome", "parse_pending", "parsing_pool",
           "shutdown_parsers"]

log = logging.getLogger(__name__)


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


def parse_pending(store: Store, clock: Clock, policy: WatchPolicy, limit: int = 500) -> int:
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


def parsing_pool(workers: int) -> ProcessPoolExecutor:
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
def fewer_collections() -> Iterator[None]:
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


class Pipeline:
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
        parsed, record, result = self._recorder(outcomes, rows)
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
        self._recorded(result)
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
        self._parsing[asyncio.wrap_future(parsing_pool(p.parse_workers).submit(
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
                  ) -> tuple[list[ParseOutcome], Callable[[Session], None] | None,
                             list[int | None]]:
        """What the store records of the parsing: the outcomes it records itself; a
        function that records the rest (outcomes with their classification) in its
        transaction, unless a probe was sent meanwhile (then only the outcomes); and where
        that function leaves how many it classified (None: the probes changed), to be
        counted once the transaction has committed (``_recorded``)."""
        context, result = self._context, list[int | None]()
        if not rows or context is None:
            return outcomes, None, result

        def record(s: Session) -> None:
            result.append(process.save_examined(s, outcomes, rows, context.stamp,
                                                self.clock.now()))
        return [], record, result

    def _recorded(self, result: list[int | None]) -> None:
        for classified in result:
            if classified is None:
                self._stale = True
            else:
                self.classified += classified

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
            parsed, record, result = self._recorder(outcomes, rows)
            await asyncio.to_thread(mailstore.mark_parsed, self.store, parsed,
                                    now=self.clock.now(), also=record)
            self._recorded(result)
            self._count(outcomes)
