"""Incoming mail in the store: idempotent storage, mailbox progress, watcher leases, parse marks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailprobe.examine import JsonText
from mailprobe.models_mail import (
    LocationRow,
    MailboxState,
    MailboxStateRow,
    MessageRow,
    ParseStatus,
    StoredMessage,
)
from mailprobe.store import Store

__all__ = [
    "Incoming",
    "Mailbox",
    "Opened",
    "ParseOutcome",
    "StoredBatch",
    "acquire_leases",
    "advance",
    "get_state",
    "insert_new",
    "mark_failed",
    "mark_parsed",
    "open_mailbox",
    "pending_parse",
    "record_error",
    "record_parsed",
    "release_leases",
    "renew_lease",
    "store_fetched",
    "uidvalidity_changed",
    "unprocessed",
]

Mailbox = tuple[str, str]  # (account id, folder)
_MESSAGES = cast(Table, MessageRow.__table__)
_LOCATIONS = cast(Table, LocationRow.__table__)
_STATES = cast(Table, MailboxStateRow.__table__)
_NO_SYNC = {"synchronize_session": False}  # bulk UPDATEs: no ORM objects to keep in step


class Incoming(Protocol):
    """What ``store_fetched`` needs of a fetched message (``mailprobe.imap.Fetched``)."""

    @property
    def uid(self) -> int: ...
    @property
    def internaldate(self) -> datetime: ...
    @property
    def size(self) -> int: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def truncated(self) -> bool: ...


@dataclass(frozen=True)
class StoredBatch:
    """``new``: (message id, index into the input) of messages stored for the first time."""

    new: tuple[tuple[int, int], ...]
    duplicates: int  # already stored: seen in another folder, or read again
    truncated: int


@dataclass(frozen=True)
class Opened:
    """Where a sync of one mailbox starts: above ``last_uid`` (0 after a UIDVALIDITY change)."""

    last_uid: int
    resync: bool  # the UIDVALIDITY changed: the folder is read again from the start
    previous_uidvalidity: int | None


@dataclass(frozen=True)
class ParseOutcome:
    message_id: int
    status: ParseStatus
    error: str | None = None
    header_message_id: str | None = None
    header_date: str | None = None


# Bulk statements run at DBAPI speed on SQLite: SQLAlchemy's per-row bookkeeping is half the
# CPU of storing a large first sync there. Values still go through each column's own bind
# processor, so they are stored exactly as the ORM would store them.


def _rows(conn: Connection, table: Table, columns: Sequence[str],
          rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    values: list[list[Any]] = []
    for c in columns:  # column by column: one bind processor call per distinct value
        column = [r[c] for r in rows]
        kind = table.c[c].type
        # The dialect's own variant: a decorated type's processor on its own leaves out the
        # dialect's (on SQLite, instants as text with microseconds: "...:00.000000"), and
        # sqlite3's fallback adapter writes "...:00", which compares below the same instant
        # written by the ORM.
        process = kind.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        if process is not None and isinstance(kind, JSON):  # lists and dicts: not hashable
            column = [v if isinstance(v, JsonText) else process(v) for v in column]
        elif process is not None:
            done: dict[Any, Any] = {}  # a batch shares fetched_at, parsed_at, account, folder
            column = [done[v] if v in done else done.setdefault(v, process(v)) for v in column]
        values.append(column)
    return list(zip(*values, strict=True)) if values else [() for _ in rows]


def _decoded(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their pre-encoded JSON values decoded, for SQLAlchemy's own JSON binding."""
    return [{k: json.loads(v) if isinstance(v, JsonText) else v for k, v in r.items()}
            for r in rows]


def _dialect_insert(conn: Connection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def insert_new(conn: Connection, table: Table, unique: Sequence[str],
               rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (unique) DO NOTHING for many rows, at DBAPI speed."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(_dialect_insert(conn, table)
                     .on_conflict_do_nothing(index_elements=list(unique)), _decoded(rows))
        return
    columns = list(rows[0])
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
        f"({', '.join('?' * len(columns))}) ON CONFLICT ({', '.join(unique)}) DO NOTHING",
        _rows(conn, table, columns, rows))


def _insert_messages(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert messages not stored yet; returns the sha256 of those inserted now."""
    if conn.dialect.name != "sqlite":  # RETURNING says exactly which, even under concurrency
        return set(conn.execute(_dialect_insert(conn, _MESSAGES)
                                .on_conflict_do_nothing(index_elements=["sha256"])
                                .returning(_MESSAGES.c.sha256), rows).scalars())
    # SQLite: the write lock (BEGIN IMMEDIATE) is held, so what is absent now is ours to add.
    known = set(conn.execute(select(_MESSAGES.c.sha256)
                             .where(_MESSAGES.c.sha256.in_([r["sha256"] for r in rows])))
                .scalars())
    fresh = [r for r in rows if r["sha256"] not in known]
    insert_new(conn, _MESSAGES, ("sha256",), fresh)
    return {r["sha256"] for r in fresh}


# --- messages ------------------------------------------------------------------------------------


def store_fetched(store: Store, account: str, folder: str, uidvalidity: int,
                  messages: Sequence[Incoming], *, now: datetime,
                  advance_to: int | None = None,
                  outcomes: Sequence[ParseOutcome] = (),
                  also: Callable[[Session], None] | None = None) -> StoredBatch:
    """Store a fetched batch and where it was seen, in one transaction; repeating it is harmless.

    A message is its bytes: the same bytes in another folder (or read again) add a location,
    never a second message. ``advance_to`` also moves the mailbox's ``last_uid`` forward in
    the same transaction, so progress is never recorded without the messages. ``outcomes``
    of earlier batches are recorded in the same commit (one durable commit per batch), and
    so is whatever ``also`` writes with the session (their classification).
    """
    digests = [hashlib.sha256(m.raw).hexdigest() for m in messages]
    cut = any(m.truncated for m in messages)  # else the columns keep their server defaults
    rows: dict[str, dict[str, Any]] = {}
    for digest, m in zip(digests, messages, strict=True):
        if digest not in rows:
            rows[digest] = {"sha256": digest, "account_id": account, "raw": m.raw,
                            "size": m.size, "internaldate": m.internaldate, "fetched_at": now}
            if cut:
                rows[digest].update(truncated=m.truncated,
                                    truncated_note=_cut_note(m) if m.truncated else None)
    with store.session() as s:
        conn = s.connection()
        inserted: set[str] = set()
        ids: dict[str, int] = {}
        if rows:
            inserted = _insert_messages(conn, list(rows.values()))
            ids = {sha: i for sha, i in conn.execute(
                select(_MESSAGES.c.sha256, _MESSAGES.c.id)
                .where(_MESSAGES.c.sha256.in_(list(rows))))}
            insert_new(conn, _LOCATIONS, ("account_id", "folder", "uidvalidity", "uid"),
                       [{"message_id": ids[d], "account_id": account, "folder": folder,
                         "uidvalidity": uidvalidity, "uid": m.uid,
                         "internaldate": m.internaldate}
                        for d, m in zip(digests, messages, strict=True)])
        record_parsed(conn, outcomes, now)
        if also is not None:
            also(s)
        if advance_to is not None:
            _advance(s, account, folder, uidvalidity, advance_to, now)
    first: dict[str, int] = {}
    for i, d in enumerate(digests):
        if d in inserted:
            first.setdefault(d, i)
    return StoredBatch(tuple((ids[d], i) for d, i in first.items()),
                       len(messages) - len(first), sum(m.truncated for m in messages))


def _cut_note(m: Incoming) -> str:
    return (f"over the size limit: stored the first {len(m.raw):,} of {m.size:,} bytes "
            f"(UID {m.uid})")


def pending_parse(store: Store, limit: int, *,
                  stored_before: datetime | None = None) -> list[tuple[int, bytes]]:
    """(id, raw) of stored messages not parsed yet (a crash between the two steps).

    ``stored_before`` leaves out newer ones, which a running sync is still parsing.
    """
    query = select(MessageRow.id, MessageRow.raw).where(
        MessageRow.parse_status == ParseStatus.PENDING)
    if stored_before is not None:
        query = query.where(MessageRow.fetched_at < stored_before)
    with store.session(write=False) as s:
        return [(i, r) for i, r in s.execute(query.order_by(MessageRow.id).limit(limit))]


def mark_parsed(store: Store, outcomes: Sequence[ParseOutcome], *, now: datetime,
                also: Callable[[Session], None] | None = None) -> None:
    """Record parse results (status, error text, the Message-ID and Date headers) in bulk,
    and in the same transaction whatever ``also`` writes with the session."""
    if outcomes or also is not None:
        with store.session() as s:
            record_parsed(s.connection(), outcomes, now)
            if also is not None:
                also(s)


_MARK_COLUMNS = ("parse_status", "parse_error", "header_message_id", "header_date", "parsed_at")
# What classification writes (``process``); recorded with the parse status when both are known.
CLASSIFY_COLUMNS = ("kind", "bounce_type", "evidence", "new_text", "classified_at",
                    "rules_version")


def record_parsed(conn: Connection, outcomes: Sequence[ParseOutcome], now: datetime,
                  classified: Mapping[int, Mapping[str, Any]] | None = None) -> None:
    """Record parse outcomes and the classification (``CLASSIFY_COLUMNS``, by message id)
    of the messages in ``classified``: one UPDATE per message, however many of the two."""
    parsed = {o.message_id: {
        "parse_status": o.status, "parse_error": o.error,
        "header_message_id": (o.header_message_id or None) and o.header_message_id[:998],
        "header_date": o.header_date or None, "parsed_at": now, "id": o.message_id}
        for o in outcomes}
    classified = classified or {}
    _update_by_id(conn, (*_MARK_COLUMNS, *CLASSIFY_COLUMNS),
                  [{**row, **classified[i]} for i, row in parsed.items() if i in classified])
    _update_by_id(conn, _MARK_COLUMNS,
                  [row for i, row in parsed.items() if i not in classified])
    _update_by_id(conn, CLASSIFY_COLUMNS,
                  [{**c, "id": i} for i, c in classified.items() if i not in parsed])


def _update_by_id(conn: Connection, columns: Sequence[str],
                  rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE messages SET ``columns`` WHERE id = each row's id, for many rows."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(update(_MESSAGES).where(_MESSAGES.c.id == bindparam("b_id"))
                     .values({c: bindparam(f"b_{c}") for c in columns}),
                     [{f"b_{c}": r[c] for c in (*columns, "id")} for r in _decoded(rows)])
        return
    conn.exec_driver_sql(
        f"UPDATE messages SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
        _rows(conn, _MESSAGES, (*columns, "id"), rows))


def mark_failed(store: Store, message_id: int, error: str, *, now: datetime) -> None:
    """The message could not be parsed at all: it stays stored, marked with why."""
    mark_parsed(store, [ParseOutcome(message_id, ParseStatus.FAILED, error)], now=now)


def unprocessed(store: Store, limit: int, *, after_id: int = 0) -> list[StoredMessage]:
    """Parsed messages not classified yet, oldest first: the next stage's input."""
    with store.session(write=False) as s:
        rows = s.scalars(
            select(MessageRow)
            # IN, not "!= pending": the index on (parse_status, classified_at) then finds
            # the few unclassified rows instead of the query reading the whole table.
            .where(MessageRow.parse_status.in_([s for s in ParseStatus
                                                if s is not ParseStatus.PENDING]),
                   MessageRow.classified_at.is_(None), MessageRow.id > after_id)
            .order_by(MessageRow.id).limit(limit)).all()
        return [StoredMessage(r.id, r.account_id, r.internaldate, r.raw, r.size, r.truncated,
                              r.parse_status, r.parse_error) for r in rows]


# --- mailbox progress ----------------------------------------------------------------------------


def _state(row: MailboxStateRow) -> MailboxState:
    return MailboxState(row.account_id, row.folder, row.uidvalidity, row.last_uid,
                        row.last_sync_at, row.lease_holder, row.lease_until,
                        row.consecutive_errors, row.last_error, row.retry_at, row.resyncs)


def _ensure(s: Session, store: Store, mailboxes: Sequence[Mailbox]) -> None:
    insert_new(s.connection(), _STATES, ("account_id", "folder"),
            [{"account_id": a, "folder": f, "last_uid": 0, "consecutive_errors": 0,
              "resyncs": 0} for a, f in mailboxes])


def get_state(store: Store, account: str, folder: str) -> MailboxState | None:
    with store.session(write=False) as s:
        row = s.get(MailboxStateRow, (account, folder))
        return _state(row) if row else None


def open_mailbox(store: Store, account: str, folder: str, uidvalidity: int) -> Opened:
    """Start a sync: where to read from, given the UIDVALIDITY the server just reported."""
    with store.session() as s:
        _ensure(s, store, [(account, folder)])
        row = s.get_one(MailboxStateRow, (account, folder), with_for_update=True)
        previous = row.uidvalidity
        if previous is None:
            row.uidvalidity, row.last_uid = uidvalidity, 0
        elif previous != uidvalidity:
            _reset(row, uidvalidity)
        return Opened(row.last_uid, previous not in (None, uidvalidity), previous)


def _reset(row: MailboxStateRow, uidvalidity: int) -> None:
    row.uidvalidity, row.last_uid, row.resyncs = uidvalidity, 0, row.resyncs + 1


def uidvalidity_changed(store: Store, account: str, folder: str, new: int) -> int | None:
    """Read the folder again from UID 1 under ``new``; returns the previous UIDVALIDITY.

    Nothing is deleted: the old locations stay as history, and messages read again are
    recognised by their bytes, so the resync never counts a message twice.
    """
    with store.session() as s:
        _ensure(s, store, [(account, folder)])
        row = s.get_one(MailboxStateRow, (account, folder), with_for_update=True)
        previous = row.uidvalidity
        if previous != new:
            _reset(row, new)
        return previous


def _advance(s: Session, account: str, folder: str, uidvalidity: int, last_uid: int,
             now: datetime) -> None:
    s.execute(update(MailboxStateRow)
              .where(MailboxStateRow.account_id == account, MailboxStateRow.folder == folder,
                     MailboxStateRow.uidvalidity == uidvalidity,
                     MailboxStateRow.last_uid < last_uid)
              .values(last_uid=last_uid), execution_options=_NO_SYNC)
    s.execute(update(MailboxStateRow)
              .where(MailboxStateRow.account_id == account, MailboxStateRow.folder == folder)
              .values(last_sync_at=now, consecutive_errors=0, retry_at=None, last_error=None),
              execution_options=_NO_SYNC)


def advance(store: Store, account: str, folder: str, uidvalidity: int, last_uid: int, *,
            now: datetime) -> None:
    """Everything up to ``last_uid`` is stored (never moves back; a stale UIDVALIDITY is
    ignored); also records a successful sync at ``now``, clearing the error count."""
    with store.session() as s:
        _advance(s, account, folder, uidvalidity, last_uid, now)


def record_error(store: Store, account: str, folder: str, error: str, *, now: datetime,
                 delay: Callable[[int], timedelta]) -> MailboxState:
    """Count a failed sync and set when to try again: ``now + delay(consecutive errors)``."""
    with store.session() as s:
        _ensure(s, store, [(account, folder)])
        row = s.get_one(MailboxStateRow, (account, folder), with_for_update=True)
        row.consecutive_errors += 1
        row.last_error = error[:2000]
        row.retry_at = now + delay(row.consecutive_errors)
        return _state(row)


# --- leases: one watcher per mailbox -------------------------------------------------------------


def _among(mailboxes: Sequence[Mailbox]) -> ColumnElement[bool]:
    return tuple_(MailboxStateRow.account_id, MailboxStateRow.folder).in_(list(mailboxes))


def acquire_leases(store: Store, mailboxes: Sequence[Mailbox], holder: str, *,
                   now: datetime, ttl: timedelta, due_only: bool = False) -> list[Mailbox]:
    """Lease the mailboxes that are free (or already ours, or whose lease expired).

    Returns the ones now held by ``holder`` until ``now + ttl``. ``due_only`` also skips
    mailboxes still backing off after errors. On PostgreSQL rows another worker is
    leasing at this moment are skipped, not waited for; SQLite serialises writers.
    """
    if not mailboxes:
        return []
    free = or_(MailboxStateRow.lease_holder.is_(None), MailboxStateRow.lease_holder == holder,
               MailboxStateRow.lease_until < now)
    if due_only:
        free = and_(free, or_(MailboxStateRow.retry_at.is_(None), MailboxStateRow.retry_at <= now))
    with store.session() as s:
        _ensure(s, store, mailboxes)
        wanted = (select(MailboxStateRow.account_id, MailboxStateRow.folder)
                  .where(_among(mailboxes), free)
                  .order_by(MailboxStateRow.account_id, MailboxStateRow.folder)
                  .with_for_update(skip_locked=True))
        found = [(a, f) for a, f in s.execute(wanted)]
        if not found:
            return []
        s.execute(update(MailboxStateRow).where(_among(found), free)
                  .values(lease_holder=holder, lease_until=now + ttl),
                  execution_options=_NO_SYNC)
        return found


def renew_lease(store: Store, account: str, folder: str, holder: str, *, now: datetime,
                ttl: timedelta) -> bool:
    """Extend our lease; False when another worker has taken the mailbox over."""
    with store.session() as s:
        result = s.execute(
            update(MailboxStateRow)
            .where(MailboxStateRow.account_id == account, MailboxStateRow.folder == folder,
                   MailboxStateRow.lease_holder == holder)
            .values(lease_until=now + ttl), execution_options=_NO_SYNC)
        return bool(getattr(result, "rowcount", 0))


def release_leases(store: Store, mailboxes: Sequence[Mailbox], holder: str) -> None:
    """Give up our leases (someone else's are left alone)."""
    if not mailboxes:
        return
    with store.session() as s:
        s.execute(update(MailboxStateRow)
                  .where(_among(mailboxes), MailboxStateRow.lease_holder == holder)
                  .values(lease_holder=None, lease_until=None), execution_options=_NO_SYNC)
