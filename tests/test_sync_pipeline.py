"""The sync pipeline's guarantees when storing fails: progress only after durable messages,
the failure reported, and the next sync completing the folder with every message once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailprobe import mailstore
from mailprobe.clock import ManualClock
from mailprobe.imap import FetchLimits
from mailprobe.models_mail import LocationRow, MessageRow, ParseStatus
from mailprobe.store import Store
from mailprobe.sync_pipeline import parse_pending, shutdown_parsers
from mailprobe.watch import MailboxReport, WatchPolicy, sync_account
from tests.test_watch import (
    FAST,
    PASSWORD,
    T0,
    Imap,
    account,
    open_store,
    run_async,
    text_message,
)

pytestmark = pytest.mark.dovecot

COUNT, BATCH = 130, 20  # seven batches, the last one short
SMALL = replace(FAST, limits=FetchLimits(batch_count=BATCH, timeout=10.0))
POLICIES = {
    "in-process": replace(SMALL, parse_pool_min=10_000),  # parsed in a thread
    "workers": replace(SMALL, parse_pool_min=1, parse_workers=1),  # parsed in a process
}


class InjectedFailure(RuntimeError):
    """The store failure a test asked for."""


@pytest.fixture(scope="module", autouse=True)
def _parsers() -> Iterator[None]:
    yield
    shutdown_parsers()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + timedelta(days=30))


@pytest.fixture
def filled(dovecot: Any) -> list[bytes]:
    raws = [text_message(i, size=900) for i in range(COUNT)]
    Imap(dovecot.port).append_all(raws)
    return raws


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock, dovecot: Any) -> Iterator[Store]:
    with open_store(tmp_path / "mail.db", clock, account(dovecot.port)) as s:
        yield s


def sync_inbox(store: Store, port: int, clock: ManualClock, policy: WatchPolicy
               ) -> MailboxReport:
    report = run_async(sync_account(store, account(port), PASSWORD, clock, folders=["INBOX"],
                                    policy=policy))
    return report.mailboxes[0]


def stored_uids(store: Store) -> list[int]:
    with store.session(write=False) as s:
        return list(s.scalars(select(LocationRow.uid).where(LocationRow.folder == "INBOX")
                              .order_by(LocationRow.uid)))


def last_uid(store: Store) -> int:
    state = mailstore.get_state(store, "citizen1", "INBOX")
    assert state is not None
    return state.last_uid


def statuses(store: Store) -> list[ParseStatus]:
    with store.session(write=False) as s:
        return list(s.scalars(select(MessageRow.parse_status)))


def checked_store(store: Store, fail_at: int | None, where: str,
                  monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Wrap the store call: check the progress invariant around every commit, and fail
    the commit holding UID ``fail_at`` (before it writes, or inside its transaction after
    the rows went in: they must be rolled back). Returns (first, last UID) per commit."""
    real_store, real_advance = mailstore.store_fetched, mailstore._advance
    commits: list[tuple[int, int]] = []

    def invariant() -> None:
        # Everything up to last_uid is stored, and nothing beyond what was committed.
        done = last_uid(store)
        uids = stored_uids(store)
        assert uids == list(range(1, len(uids) + 1)) and len(uids) == done, (done, uids)

    def store_fetched(st: Store, acc: str, folder: str, uidvalidity: int,
                      messages: Sequence[Any], **kwargs: Any) -> Any:
        invariant()
        uids = [m.uid for m in messages]
        if fail_at in uids and where == "before":
            raise InjectedFailure(f"store refused UIDs {uids[0]}-{uids[-1]}")
        result = real_store(st, acc, folder, uidvalidity, messages, **kwargs)
        commits.append((uids[0], uids[-1]))
        invariant()
        return result

    def advance(s: Any, acc: str, folder: str, uidvalidity: int, uid: int, now: Any) -> None:
        if where == "inside" and fail_at is not None and uid >= fail_at:
            raise InjectedFailure(f"commit failed at UID {uid}")
        real_advance(s, acc, folder, uidvalidity, uid, now)

    monkeypatch.setattr(mailstore, "store_fetched", store_fetched)
    monkeypatch.setattr(mailstore, "_advance", advance)
    return commits


@pytest.mark.parametrize("mode", list(POLICIES))
@pytest.mark.parametrize(("fail_at", "where"), [
    (1, "before"),  # the very first batch
    (3 * BATCH + 1, "before"),  # a batch in the middle
    (3 * BATCH + 1, "inside"),  # rolled back after its rows were inserted
    (COUNT, "inside"),  # the last batch: the final advance must not paper over it
])
def test_a_store_failure_fails_the_folder_and_the_next_sync_completes_it(
        store: Store, dovecot: Any, clock: ManualClock, filled: list[bytes], mode: str,
        fail_at: int, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = POLICIES[mode]
    commits = checked_store(store, fail_at, where, monkeypatch)
    broken = sync_inbox(store, dovecot.port, clock, policy)
    assert broken.error and "InjectedFailure" in broken.error, broken.line()
    kept = stored_uids(store)
    # Whole commits only, in UID order, all before the failing one; progress matches them.
    assert kept == list(range(1, len(kept) + 1)) and last_uid(store) == len(kept) < fail_at
    assert kept == [u for first, last in commits for u in range(first, last + 1)]
    assert broken.new == len(kept) == len(statuses(store))
    # What was committed was parsed, and its results recorded, despite the failure.
    assert ParseStatus.PENDING not in statuses(store)

    monkeypatch.undo()
    again = sync_inbox(store, dovecot.port, clock, policy)
    assert again.error is None, again.line()
    assert (again.new, again.duplicates) == (COUNT - len(kept), 0)
    assert stored_uids(store) == list(range(1, COUNT + 1)) and last_uid(store) == COUNT
    assert statuses(store) == [ParseStatus.OK] * COUNT
    assert sync_inbox(store, dovecot.port, clock, policy).new == 0


@pytest.mark.parametrize("mode", list(POLICIES))
def test_progress_is_recorded_only_with_the_messages_up_to_it(
        store: Store, dovecot: Any, clock: ManualClock, filled: list[bytes], mode: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    commits = checked_store(store, None, "before", monkeypatch)  # checks every commit
    report = sync_inbox(store, dovecot.port, clock, POLICIES[mode])
    assert report.error is None and report.new == COUNT, report.line()
    assert commits[0][0] == 1 and commits[-1][1] == COUNT
    assert all(b[0] == a[1] + 1 for a, b in pairwise(commits))
    assert statuses(store) == [ParseStatus.OK] * COUNT


def test_a_failed_parse_record_leaves_messages_for_the_pending_pass(
        store: Store, dovecot: Any, clock: ManualClock, filled: list[bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording the last parse results fails: the folder fails, nothing is lost, and the
    tick's pass over unparsed messages parses them once a lease's length has passed."""
    real: Callable[..., None] = mailstore.mark_parsed

    def mark_parsed(*args: Any, **kwargs: Any) -> None:
        raise InjectedFailure("cannot record parse results")

    monkeypatch.setattr(mailstore, "mark_parsed", mark_parsed)
    report = sync_inbox(store, dovecot.port, clock, POLICIES["workers"])
    assert report.error and "InjectedFailure" in report.error
    assert stored_uids(store) == list(range(1, COUNT + 1)) and last_uid(store) == COUNT
    assert ParseStatus.PENDING in statuses(store)
    monkeypatch.setattr(mailstore, "mark_parsed", real)
    assert sync_inbox(store, dovecot.port, clock, SMALL).new == 0  # nothing fetched again
    assert parse_pending(store, clock, SMALL) == 0  # too young: a sync may be on them
    clock.advance(SMALL.lease + timedelta(seconds=1))
    assert parse_pending(store, clock, SMALL) > 0
    assert statuses(store) == [ParseStatus.OK] * COUNT
