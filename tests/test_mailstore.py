"""Incoming-mail storage, mailbox progress and watcher leases, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from mailprobe import mailstore
from mailprobe.clock import ManualClock
from mailprobe.directory import Account, Endpoint, TlsMode
from mailprobe.imap import Fetched
from mailprobe.mailstore import ParseOutcome
from mailprobe.models import Base
from mailprobe.models_mail import LocationRow, MessageRow, ParseStatus
from mailprobe.store import Store
from tests.pg import throwaway_database

T0 = datetime(2015, 10, 12, 1, 0, tzinfo=UTC)
LOOP = Endpoint("127.0.0.1", 143, TlsMode.NONE)
ACCOUNTS = (Account("c1", "c1@mail.test", "c1@mail.test", LOOP, LOOP, "MP_PW_C1"),
            Account("c2", "c2@mail.test", "c2@mail.test", LOOP, LOOP, "MP_PW_C2"))
LEASE = timedelta(minutes=5)


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: once a browser test has run, the session's
    sync Playwright keeps an event loop running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[str]:
    with throwaway_database() as pg, Store(pg) as store:
        store.upgrade()
        yield pg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = ManualClock(T0)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mail.db'}"
    else:
        url = request.getfixturevalue("shared_pg")
    with Store(url, clock=clock) as s:
        s.upgrade()
        if request.param == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            with s.engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        s.import_directory((), (), ACCOUNTS, ())
        yield s


def msg(uid: int, body: str, *, minutes: int = 0, size: int | None = None) -> Fetched:
    raw = f"Message-ID: <{body}@x.test>\r\nSubject: {body}\r\n\r\n{body}\r\n".encode()
    whole = len(raw) if size is None else size
    return Fetched(uid, T0 + timedelta(minutes=minutes), whole, raw, truncated=whole > len(raw))


def counts(store: Store) -> tuple[int, int]:
    with store.session(write=False) as s:
        return (s.scalar(select(func.count()).select_from(MessageRow)) or 0,
                s.scalar(select(func.count()).select_from(LocationRow)) or 0)


# --- schema --------------------------------------------------------------------------------------


MAIL_TABLES = {"messages", "message_locations", "mailbox_state"}


def _table_of(diff: Any) -> str:
    op = diff[0] if isinstance(diff, list) else diff  # modify_* diffs come in lists
    for part in op[1:]:
        if isinstance(part, str):  # (kind, schema, table name, ...)
            return part
        table = getattr(part, "table", part)  # an index, column or constraint; or a table
        if isinstance(getattr(table, "name", None), str):
            return str(table.name)
    return ""


def test_the_migration_creates_what_the_models_say(store: Store) -> None:
    assert store.current_revision() == store.head_revision()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    # Other stages' tables are checked by their own tests (their models may not be imported).
    assert [d for d in diffs if _table_of(d) in MAIL_TABLES] == []


# --- storing -------------------------------------------------------------------------------------


def test_instants_written_in_bulk_compare_equal_to_the_same_instant_in_a_query(
        store: Store) -> None:
    # Whole seconds, as INTERNALDATE has them: SQLite compares instants as text, and text
    # written by sqlite3's fallback adapter ("...:00") sorted below SQLAlchemy's ("...:00.000000").
    [(mid, _)] = mailstore.store_fetched(store, "c1", "INBOX", 7, [msg(1, "a")], now=T0).new
    mailstore.mark_parsed(store, [ParseOutcome(mid, ParseStatus.OK)], now=T0)
    with store.session(write=False) as s:
        assert s.scalars(select(MessageRow.id).where(MessageRow.internaldate >= T0,
                                                     MessageRow.fetched_at >= T0,
                                                     MessageRow.parsed_at >= T0)).all() == [mid]
        assert s.scalars(select(LocationRow.uid).where(LocationRow.internaldate >= T0)).all() \
            == [1]
        assert s.scalars(select(MessageRow.id).where(MessageRow.internaldate < T0)).all() == []


def test_the_instant_text_migration_lengthens_what_sqlite_wrote_in_bulk(tmp_path: Path) -> None:
    from alembic import command
    with Store(f"sqlite:///{tmp_path / 'old.db'}") as store:
        store.upgrade()
        store.import_directory((), (), ACCOUNTS, ())
        mailstore.store_fetched(store, "c1", "INBOX", 7, [msg(1, "a")], now=T0)
        with store.engine.begin() as conn:  # as an earlier version wrote it
            conn.exec_driver_sql("UPDATE messages SET internaldate = '2015-10-12 01:00:00'")
            cfg = store._alembic()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
        store.upgrade()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT internaldate, fetched_at FROM messages").all() \
                == [("2015-10-12 01:00:00.000000", "2015-10-12 01:00:00.000000")]


def test_storing_a_batch_twice_stores_each_message_once(store: Store) -> None:
    batch = [msg(1, "a"), msg(2, "b", minutes=5), msg(3, "c")]
    first = mailstore.store_fetched(store, "c1", "INBOX", 7, batch, now=T0)
    assert [i for _, i in first.new] == [0, 1, 2] and first.duplicates == 0
    again = mailstore.store_fetched(store, "c1", "INBOX", 7, batch, now=T0)
    assert again.new == () and again.duplicates == 3
    assert counts(store) == (3, 3)
    with store.session(write=False) as s:
        row = s.scalars(select(MessageRow).where(MessageRow.id == first.new[1][0])).one()
        assert row.internaldate == T0 + timedelta(minutes=5) and row.internaldate.tzinfo is UTC
        assert row.raw == batch[1].raw and row.parse_status is ParseStatus.PENDING
        assert row.account_id == "c1" and not row.truncated


def test_the_same_message_in_two_folders_is_one_message_with_two_locations(store: Store) -> None:
    copy = msg(1, "same")
    stored = mailstore.store_fetched(store, "c1", "INBOX", 7, [copy], now=T0)
    junk = mailstore.store_fetched(store, "c1", "Junk", 9, [msg(40, "same")], now=T0)
    assert len(stored.new) == 1 and junk.new == () and junk.duplicates == 1
    twice = mailstore.store_fetched(store, "c1", "INBOX", 7, [msg(2, "dup"), msg(3, "dup")],
                                    now=T0)
    assert len(twice.new) == 1 and twice.duplicates == 1
    assert counts(store) == (2, 4)
    with store.session(write=False) as s:
        places = s.execute(select(LocationRow.folder, LocationRow.uidvalidity, LocationRow.uid)
                           .where(LocationRow.message_id == stored.new[0][0])
                           .order_by(LocationRow.folder)).all()
    assert places == [("INBOX", 7, 1), ("Junk", 9, 40)]


def test_a_cut_message_records_the_cut(store: Store) -> None:
    big = msg(5, "big", size=20_000_000)
    stored = mailstore.store_fetched(store, "c1", "INBOX", 7, [big], now=T0)
    assert stored.truncated == 1
    with store.session(write=False) as s:
        row = s.get_one(MessageRow, stored.new[0][0])
    assert row.truncated and row.size == 20_000_000
    assert row.truncated_note == f"over the size limit: stored the first {len(big.raw)} of " \
                                 "20,000,000 bytes (UID 5)"


# --- progress ------------------------------------------------------------------------------------


def test_progress_only_moves_forward_and_a_new_uidvalidity_starts_again(store: Store) -> None:
    assert mailstore.open_mailbox(store, "c1", "INBOX", 7) == mailstore.Opened(0, False, None)
    mailstore.store_fetched(store, "c1", "INBOX", 7, [msg(1, "a"), msg(2, "b")], now=T0,
                            advance_to=2)
    mailstore.advance(store, "c1", "INBOX", 7, 1, now=T0)  # never backwards
    mailstore.advance(store, "c1", "INBOX", 6, 99, now=T0)  # a stale UIDVALIDITY: ignored
    assert mailstore.open_mailbox(store, "c1", "INBOX", 7) == mailstore.Opened(2, False, 7)
    assert mailstore.open_mailbox(store, "c1", "INBOX", 8) == mailstore.Opened(0, True, 7)
    # Read again under the new UIDVALIDITY: the same messages, new locations, no new message.
    again = mailstore.store_fetched(store, "c1", "INBOX", 8, [msg(1, "b"), msg(2, "a")],
                                    now=T0, advance_to=2)
    assert again.new == () and again.duplicates == 2 and counts(store) == (2, 4)
    state = mailstore.get_state(store, "c1", "INBOX")
    assert state is not None and (state.uidvalidity, state.last_uid, state.resyncs) == (8, 2, 1)
    assert mailstore.uidvalidity_changed(store, "c1", "INBOX", 9) == 8
    state = mailstore.get_state(store, "c1", "INBOX")
    assert state is not None and (state.uidvalidity, state.last_uid, state.resyncs) == (9, 0, 2)


def test_errors_back_off_and_a_good_sync_clears_them(store: Store) -> None:
    def delay(n: int) -> timedelta:
        return timedelta(seconds=10 * 2 ** (n - 1))

    mailstore.record_error(store, "c1", "INBOX", "connection refused", now=T0, delay=delay)
    state = mailstore.record_error(store, "c1", "INBOX", "timed out", now=T0, delay=delay)
    assert state.consecutive_errors == 2 and state.last_error == "timed out"
    assert state.retry_at == T0 + timedelta(seconds=20)
    assert mailstore.acquire_leases(store, [("c1", "INBOX")], "w1", now=T0, ttl=LEASE,
                                    due_only=True) == []
    later = T0 + timedelta(seconds=21)
    assert mailstore.acquire_leases(store, [("c1", "INBOX")], "w1", now=later, ttl=LEASE,
                                    due_only=True) == [("c1", "INBOX")]
    mailstore.open_mailbox(store, "c1", "INBOX", 7)
    mailstore.advance(store, "c1", "INBOX", 7, 0, now=later)
    state2 = mailstore.get_state(store, "c1", "INBOX")
    assert state2 is not None and state2.consecutive_errors == 0 and state2.retry_at is None
    assert state2.last_sync_at == later


# --- parsing marks -------------------------------------------------------------------------------


def test_parse_marks_and_the_next_stage_queue(store: Store) -> None:
    stored = mailstore.store_fetched(store, "c1", "INBOX", 7,
                                     [msg(1, "a"), msg(2, "b"), msg(3, "c")], now=T0)
    ids = [i for i, _ in stored.new]
    assert [i for i, _ in mailstore.pending_parse(store, 10)] == ids
    assert mailstore.unprocessed(store, 10) == []  # not parsed yet
    mailstore.mark_parsed(store, [ParseOutcome(ids[0], ParseStatus.OK, None, "<a@x.test>",
                                               "Mon, 12 Oct 2015 09:00:00 +0800"),
                                  ParseOutcome(ids[1], ParseStatus.DEFECTS, "bad base64")],
                          now=T0)
    mailstore.mark_failed(store, ids[2], "no header fields", now=T0)
    assert mailstore.pending_parse(store, 10) == []
    queue = mailstore.unprocessed(store, 10)
    assert [(m.id, m.parse_status, m.parse_error) for m in queue] == [
        (ids[0], ParseStatus.OK, None), (ids[1], ParseStatus.DEFECTS, "bad base64"),
        (ids[2], ParseStatus.FAILED, "no header fields")]
    assert queue[0].raw == msg(1, "a").raw and queue[0].internaldate == T0
    assert [m.id for m in mailstore.unprocessed(store, 10, after_id=ids[0])] == ids[1:]
    with store.session(write=False) as s:
        row = s.get_one(MessageRow, ids[0])
    assert row.header_message_id == "<a@x.test>" and (row.header_date or "").startswith("Mon")


# --- leases --------------------------------------------------------------------------------------


def test_a_mailbox_has_one_watcher_until_its_lease_expires(store: Store) -> None:
    boxes = [("c1", "INBOX"), ("c1", "Junk"), ("c2", "INBOX")]
    assert mailstore.acquire_leases(store, boxes[:2], "w1", now=T0, ttl=LEASE) == boxes[:2]
    assert mailstore.acquire_leases(store, boxes, "w2", now=T0, ttl=LEASE) == [("c2", "INBOX")]
    # Ours again: renewing by acquiring is fine.
    assert mailstore.acquire_leases(store, boxes[:1], "w1", now=T0, ttl=LEASE) == boxes[:1]
    half = T0 + LEASE / 2
    assert mailstore.renew_lease(store, "c1", "INBOX", "w1", now=half, ttl=LEASE)
    assert not mailstore.renew_lease(store, "c1", "INBOX", "w2", now=half, ttl=LEASE)
    # w1 vanishes: its Junk lease expires at T0 + LEASE, its renewed INBOX lease later.
    after = T0 + LEASE + timedelta(seconds=1)
    assert mailstore.acquire_leases(store, boxes[:2], "w2", now=after, ttl=LEASE) == boxes[1:2]
    assert not mailstore.renew_lease(store, "c1", "Junk", "w1", now=after, ttl=LEASE)
    mailstore.release_leases(store, boxes, "w1")  # releases only what w1 still holds
    state = mailstore.get_state(store, "c1", "Junk")
    assert state is not None and state.lease_holder == "w2"
    assert mailstore.acquire_leases(store, boxes[:1], "w2", now=after, ttl=LEASE) == boxes[:1]


def test_racing_workers_never_share_a_mailbox(store: Store) -> None:
    boxes = [("c1", "INBOX"), ("c1", "Junk"), ("c2", "INBOX"), ("c2", "Junk")]
    won: dict[str, list[tuple[str, str]]] = {}
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        won[name] = mailstore.acquire_leases(store, boxes, name, now=T0, ttl=LEASE)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [box for boxes_won in won.values() for box in boxes_won]
    assert sorted(held) == sorted(boxes)  # each mailbox leased exactly once
    for box in boxes:
        state = mailstore.get_state(store, *box)
        assert state is not None and box in won[state.lease_holder or ""]


def test_messages_a_crash_left_unparsed_are_parsed_by_the_next_tick(store: Store) -> None:

    from mailprobe.watch import WatchPolicy, sync_mailboxes

    clock = ManualClock(T0)
    batch = [msg(1, "a"), Fetched(2, T0, 12, b"\x00\x01 junk \xff")]
    stored = mailstore.store_fetched(store, "c1", "INBOX", 7, batch, now=T0)
    policy = WatchPolicy(lease=LEASE)
    run_async(sync_mailboxes(store, [], {}, clock, "w1", policy=policy))
    assert len(mailstore.pending_parse(store, 10)) == 2  # young: a running sync's
    clock.advance(LEASE + timedelta(seconds=1))
    run_async(sync_mailboxes(store, [], {}, clock, "w1", policy=policy))
    assert mailstore.pending_parse(store, 10) == []
    queue = {m.id: m.parse_status for m in mailstore.unprocessed(store, 10)}
    assert queue == {stored.new[0][0]: ParseStatus.OK, stored.new[1][0]: ParseStatus.FAILED}
