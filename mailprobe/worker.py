"""The long-running worker: APScheduler triggers ticks; the database decides what is due."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from mailprobe.clock import Clock, SystemClock
from mailprobe.errors import MailprobeError
from mailprobe.process import process_new
from mailprobe.send import SendPolicy, TickReport, save_sent_copies, send_due
from mailprobe.settings import token_secret
from mailprobe.store import Store
from mailprobe.watch import WatchPolicy, sync_mailboxes

__all__ = ["Worker", "run_worker", "tick", "watch_tick"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """Everything a tick needs; one per process (``worker_id`` names it in the probe trail)."""

    store: Store
    clock: Clock
    worker_id: str
    passwords: Mapping[str, str] = field(repr=False)
    policy: SendPolicy = field(default_factory=SendPolicy)
    watch: bool = False  # also sync the personas' mailboxes and classify/match what came in
    # How mailboxes are watched; its lease is how long a dead worker's mailboxes wait.
    watch_policy: WatchPolicy = field(default_factory=WatchPolicy)


async def tick(worker: Worker) -> TickReport:
    """One tick: its steps in order, each asking the database what is due.

    So a tick may run beside other workers, after a crash, or from cron, and never repeats
    a probe. Then the mailboxes are synced and new mail classified and matched.
    """
    w = worker
    released = await asyncio.to_thread(w.store.release_expired, w.clock.now())
    if released.to_uncertain:
        log.warning("%d probes whose worker vanished while sending are now uncertain "
                    "(see `mailprobe probes uncertain`)", released.to_uncertain)
    report = await send_due(w.store, w.clock, w.worker_id, w.passwords, policy=w.policy)
    if w.policy.sent_copies:
        copies = await save_sent_copies(w.store, w.clock, w.passwords, policy=w.policy)
        report = replace(report, copies=copies)
    if w.watch:
        report = await _watch_and_process(w, report)
    return report


async def watch_tick(worker: Worker) -> TickReport:
    """The watching half of a tick alone: sync the leased mailboxes, classify and match."""
    return await _watch_and_process(worker, TickReport())


async def _watch_and_process(w: Worker, report: TickReport) -> TickReport:
    """Sync the mailboxes this worker holds the lease of, then classify and match.

    Watching has its own backoff per mailbox; whatever goes wrong there is logged and
    never stops the sending part of the next tick.
    """
    try:
        secret = await asyncio.to_thread(token_secret, w.store)
        # The sync classifies and matches what it fetches; processing does what it left
        # (messages matched against probes sent meanwhile, a crash's leftovers).
        synced = await sync_mailboxes(w.store, None, w.passwords, w.clock, w.worker_id,
                                      policy=w.watch_policy, secret=secret)
        processed = await asyncio.to_thread(process_new, w.store, secret, limit=1000,
                                            clock=w.clock)
    except MailprobeError as error:
        log.error("watching: %s", error.one_line())
        return report
    if processed.processed:
        log.info("%s", processed.line())
    return replace(report, received=synced.new,
                   processed=synced.classified + processed.processed)


class _Ticker:
    """The scheduler's job: starts a tick unless one is still running, and never waits for it.

    The tick runs as its own task, so stopping the scheduler (which cancels its jobs) never
    cancels a tick between DATA and recording the answer; ``drain`` waits for it instead.
    """

    def __init__(self, step: Callable[[], Awaitable[TickReport]],
                 on_tick: Callable[[TickReport], None] | None) -> None:
        self.step, self.on_tick = step, on_tick
        self.running: asyncio.Task[None] | None = None
        self.ticks = 0

    async def start(self) -> None:
        if self.running is None or self.running.done():
            self.running = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            report = await self.step()
        except MailprobeError as exc:
            log.error("tick failed: %s", exc.one_line())
            return
        except Exception:  # the next tick tries again; the database holds the truth
            log.exception("tick failed")
            return
        finally:
            self.ticks += 1
        if self.on_tick is not None:
            self.on_tick(report)

    async def drain(self) -> None:
        if self.running is not None:
            await self.running


async def run_worker(store: Store, clock: Clock, *, tick_seconds: float,
                     stop_event: asyncio.Event, worker_id: str, passwords: Mapping[str, str],
                     policy: SendPolicy | None = None,
                     on_tick: Callable[[TickReport], None] | None = None,
                     watch: bool = False, watch_policy: WatchPolicy | None = None) -> int:
    """Tick every ``tick_seconds`` (the first at once) until ``stop_event``; returns the
    sending ticks.

    APScheduler only triggers: a missed tick is merged into the next (coalesce), and a
    tick still running when the next is due is left to finish. Sending and watching tick
    apart: a long send (thousands of probes due at once) never leaves the mailboxes this
    worker could lease unwatched, nor lets their leases run out while it sends.
    """
    worker = Worker(store, clock, worker_id, passwords, policy or SendPolicy(), watch=False,
                    watch_policy=watch_policy or WatchPolicy())
    tickers = {"tick": _Ticker(lambda: tick(worker), on_tick)}
    if watch:
        tickers["watch"] = _Ticker(lambda: watch_tick(worker), on_tick)
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
    # The trigger runs on wall time (SystemClock); what is due is asked with worker.clock.
    for job, ticker in tickers.items():
        scheduler.add_job(ticker.start, IntervalTrigger(seconds=tick_seconds), id=job,
                          max_instances=1, coalesce=True, misfire_grace_time=None,
                          next_run_time=SystemClock().now())
    scheduler.start()
    try:
        await stop_event.wait()
    finally:
        scheduler.shutdown(wait=False)
        for ticker in tickers.values():
            await ticker.drain()
    return tickers["tick"].ticks
