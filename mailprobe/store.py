"""The store: a sync SQLAlchemy engine (async callers use asyncio.to_thread) and probe states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Engine,
    Select,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from mailprobe.clock import Clock, SystemClock
from mailprobe.directory import Account, Channel, ChannelKind, Persona
from mailprobe.directory_io import Directory, is_loopback_host
from mailprobe.errors import ConfigError, InputError, MailprobeError
from mailprobe.models import (
    Accepted,
    AccountRow,
    AgencyRow,
    Base,
    ChannelRow,
    ClaimedProbe,
    Counts,
    DirectoryCounts,
    PersonaRow,
    PlanSaved,
    ProbeEvent,
    ProbeEventRow,
    ProbeRecord,
    ProbeRow,
    ProbeState,
    ProbeView,
    Released,
    RoundRecord,
    RoundRow,
    RoundStatus,
    SettingRow,
    account_from_row,
    account_values,
    agency_from_row,
    agency_values,
    channel_from_row,
    persona_from_row,
    persona_values,
)
from mailprobe.sheets import Agency

__all__ = [
    "Accepted",
    "ClaimedProbe",
    "Counts",
    "DirectoryCounts",
    "PlanSaved",
    "ProbeEvent",
    "ProbeRecord",
    "ProbeState",
    "ProbeView",
    "Released",
    "RoundRecord",
    "RoundStatus",
    "StateError",
    "Store",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_SQLITE_BUSY_MS = 30_000
_SHANGHAI = ZoneInfo("Asia/Shanghai")
_NO_SYNC = {"synchronize_session": False}  # bulk UPDATEs: no ORM objects to keep in step
# Where a probe may come from for each transition; anything else is a StateError.
_S = ProbeState
_FROM_SENT = (_S.SENDING, _S.UNCERTAIN)
_FROM_FAILED = (_S.PLANNED, _S.CLAIMED, _S.SENDING, _S.UNCERTAIN)
_FROM_RETRY = (_S.CLAIMED, _S.SENDING)
_FROM_SUBMITTED = (_S.PLANNED, _S.CLAIMED)
# What the sending transitions read and write: not the message, its text or its details,
# which are the bulk of a row (loading them cost more than the rest of the commit).
_STATE_ONLY = load_only(ProbeRow.probe_id, ProbeRow.state, ProbeRow.claimed_by,
                        ProbeRow.claim_until, ProbeRow.attempts, ProbeRow.sending_at,
                        ProbeRow.accepted_at, ProbeRow.smtp_code, ProbeRow.smtp_text)


class StateError(MailprobeError, RuntimeError):
    """A transition the probe's current state does not allow (or an unknown probe)."""


# --- the engine ------------------------------------------------------------------------------


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: ConnectionPoolEntry) -> None:
        # pysqlite's own BEGIN is deferred and cannot be made IMMEDIATE; we issue ours.
        dbapi.isolation_level = None
        cursor = dbapi.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", f"busy_timeout={_SQLITE_BUSY_MS}",
                       # FULL: the "sending" mark must survive a power cut, not only kill -9.
                       "synchronous=FULL",
                       # 64 MiB of pages, not 2: the indexes of a large mailbox's messages
                       # (a random digest per message) stay in memory while a sync adds to them.
                       "cache_size=-65536"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading
        # a read lock, and a claim's SELECT and UPDATE see the same rows.
        mode = conn.get_execution_options().get("mailprobe_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Store:
    """The database behind a workspace: open with a URL, then ``upgrade()`` once.

    Synchronous on purpose: async code (the sender, the watcher) calls these methods
    through ``asyncio.to_thread``. One sync engine keeps a single code path for SQLite
    and PostgreSQL, lets SQLite take its write lock with ``BEGIN IMMEDIATE``, and lets the
    tests run without an event loop; next to SMTP round trips the calls are cheap.

    Exactly once: ``planned → claimed`` (a lease) ``→ sending`` (committed before DATA)
    ``→ sent | failed | planned`` (a retry the server's answer proves safe). A claim
    whose lease expires goes back to ``planned``: nothing was handed to SMTP. A
    ``sending`` row whose lease expires becomes ``uncertain``; only evidence (the Sent
    folder, a late acceptance) or an operator settles it, never a silent resend.
    """

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self.dialect = make_url(url).get_backend_name()
        if self.dialect == "sqlite" and make_url(url).database in (None, "", ":memory:"):
            raise ConfigError("an in-memory SQLite database is private to one connection",
                              source=url, expected="sqlite:///PATH to a file")
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url)
            writer: Engine = self.engine.execution_options(mailprobe_begin="IMMEDIATE")
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
            writer = self.engine
        self._writer = sessionmaker(writer, expire_on_commit=False)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with (self._writer if write else self._reader)() as s, s.begin():
            yield s

    # --- migrations --------------------------------------------------------------------------

    def _alembic(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        return cfg

    def upgrade(self) -> str:
        """Apply every migration not applied yet (a no-op when current); returns the head."""
        cfg = self._alembic()
        with self.engine.execution_options(mailprobe_begin="IMMEDIATE").begin() as conn:
            if self.dialect == "postgresql":
                # Two workers starting at once: the second waits, then finds nothing to do.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(20151)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.head_revision()

    def head_revision(self) -> str:
        head = ScriptDirectory.from_config(self._alembic()).get_current_head()
        assert head is not None  # the package always ships its migrations
        return head

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_current(self) -> None:
        """Refuse to work on a database whose schema is missing or out of date."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            shown = make_url(self.url).render_as_string(hide_password=True)
            raise ConfigError("the database schema is not up to date", source=shown,
                              expected=f"revision {head}", got=current or "no schema",
                              hint="run `mailprobe db upgrade`")

    # --- settings ----------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self.session(write=False) as s:
            row = s.get(SettingRow, key)
            return row.value if row else None

    def setting_or_create(self, key: str, make: Callable[[], str]) -> str:
        """The stored value, or ``make()`` stored now; the first writer wins a race."""
        found = self.get_setting(key)
        if found is not None:
            return found
        try:
            with self.session() as s:
                s.add(SettingRow(key=key, value=make()))
        except IntegrityError:
            pass  # another worker stored it first: use theirs
        stored = self.get_setting(key)
        assert stored is not None
        return stored

    # --- the directory -----------------------------------------------------------------------

    def import_directory(self, agencies: Sequence[Agency], channels: Sequence[Channel],
                         accounts: Sequence[Account], personas: Sequence[Persona]
                         ) -> DirectoryCounts:
        """Insert new rows, update changed ones, keep (and count) rows absent from the input.

        One transaction: a reference to an unknown agency or account writes nothing.
        """
        with self.session() as s:
            a = _upsert(s, AgencyRow, "name", [agency_values(x) for x in agencies])
            ids = dict(s.execute(select(AgencyRow.name, AgencyRow.id)).all())
            c = _upsert_channels(s, channels, ids)
            b = _upsert(s, AccountRow, "id", [account_values(x) for x in accounts])
            known = set(s.scalars(select(AccountRow.id)))
            for p in personas:
                if p.account not in known:
                    raise InputError(f"persona {p.id} uses unknown account {p.account}",
                                     source="personas", location=f"persona {p.id}",
                                     expected="an account from [[accounts]]", got=p.account)
            d = _upsert(s, PersonaRow, "id", [persona_values(x) for x in personas])
        return DirectoryCounts(a, c, b, d)

    def directory(self) -> Directory:
        """The imported directory as the frozen types it was imported from."""
        with self.session(write=False) as s:
            agencies = s.scalars(select(AgencyRow).order_by(AgencyRow.id)).all()
            names = {a.id: a.name for a in agencies}
            channels = s.scalars(select(ChannelRow).order_by(ChannelRow.id)).all()
            accounts = s.scalars(select(AccountRow).order_by(AccountRow.id)).all()
            personas = s.scalars(select(PersonaRow).order_by(PersonaRow.id)).all()
        return Directory(tuple(agency_from_row(a) for a in agencies),
                         tuple(channel_from_row(c, names[c.agency_id]) for c in channels),
                         tuple(account_from_row(a) for a in accounts),
                         tuple(persona_from_row(p) for p in personas))

    # --- rounds and plans ----------------------------------------------------------------------

    def save_plan(self, round: RoundRecord, probes: Sequence[ProbeRecord]) -> PlanSaved:
        """Store a round's plan; saving the same plan again changes nothing.

        A changed plan is refused for an armed round, and for any probe that has left
        ``planned`` (claimed, sent, ...). Probes dropped from the plan are removed only
        while they were never attempted.
        """
        with self.session() as s:
            rows = _plan_rows(s, round.id, probes)
            existing = s.get(RoundRow, round.id, with_for_update=True)
            if existing is None:
                s.add(RoundRow(**_round_values(round), armed=False, paused=False,
                               created_at=self.clock.now()))
                s.flush()
                s.execute(insert(ProbeRow), rows)
                self._events(s, [r["probe_id"] for r in rows], "planned", round.id)
                saved = PlanSaved(round.id, len(rows), 0, 0, 0)
            else:
                saved = self._replan(s, existing, _round_values(round), rows)
        if self.dialect == "postgresql" and saved.added:
            # Fresh statistics before the first claim: with the planner's old ones (a table
            # with no planned probes) the due query joins by nested loop, and a claim from
            # 20,000 new probes took a second instead of 25 ms, until autovacuum came by.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE probes, channels, personas, rounds")
                conn.commit()
        return saved

    def _replan(self, s: Session, existing: RoundRow, values: Mapping[str, Any],
                rows: Sequence[dict[str, Any]]) -> PlanSaved:
        old = {p.probe_id: p for p in s.scalars(
            select(ProbeRow).where(ProbeRow.round_id == existing.id).with_for_update())}
        new = {r["probe_id"]: r for r in rows}
        changed = [k for k, r in new.items() if k in old and not _same(old[k], r)]
        added = [k for k in new if k not in old]
        removed = [k for k in old if k not in new]
        if not (changed or added or removed
                or any(getattr(existing, k) != v for k, v in values.items())):
            return PlanSaved(existing.id, 0, 0, 0, len(new))
        _check_replan(existing, [old[k] for k in changed + removed])
        for k, v in values.items():
            setattr(existing, k, v)
        for k in changed:
            for f, v in new[k].items():
                setattr(old[k], f, v)
        for k in removed:
            # Never attempted (checked above): its trail holds only planning events.
            s.execute(delete(ProbeEventRow).where(ProbeEventRow.probe_id == k))
            s.delete(old[k])
        s.flush()
        if added:
            s.execute(insert(ProbeRow), [new[k] for k in added])
        self._events(s, added, "planned", existing.id)
        self._events(s, changed, "replanned", existing.id)
        return PlanSaved(existing.id, len(added), len(changed), len(removed),
                         len(new) - len(added) - len(changed))

    def set_round_flags(self, round_id: str, *, armed: bool | None = None,
                        paused: bool | None = None) -> RoundStatus:
        """Arm/disarm or pause/resume a round; takes effect at the next claim or send."""
        with self.session() as s:
            row = _round(s, round_id)
            if armed is not None:
                row.armed = armed
            if paused is not None:
                row.paused = paused
        return self.round_status(round_id)

    def round_status(self, round_id: str, *, zone: ZoneInfo = _SHANGHAI) -> RoundStatus:
        """Counts by state, by planned day (in ``zone``) and by agency."""
        with self.session(write=False) as s:
            row = _round(s, round_id)
            probes = s.execute(
                select(ProbeRow.state, ProbeRow.send_at, AgencyRow.name)
                .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
                .where(ProbeRow.round_id == round_id)).all()
        by_day: dict[date, Counter[ProbeState]] = {}
        by_agency: dict[str, Counter[ProbeState]] = {}
        for state, send_at, agency in probes:
            by_day.setdefault(send_at.astimezone(zone).date(), Counter())[state] += 1
            by_agency.setdefault(agency, Counter())[state] += 1
        return RoundStatus(
            row.id, row.name, row.armed, row.paused, len(probes),
            dict(Counter(state for state, _, _ in probes)),
            {d: dict(c) for d, c in sorted(by_day.items())},
            {a: dict(c) for a, c in sorted(by_agency.items())},
        )

    # --- claiming and sending ------------------------------------------------------------------

    def claim_due(self, now: datetime, worker_id: str, limit: int,
                  lease: timedelta) -> list[ClaimedProbe]:
        """Lease up to ``limit`` due probes to ``worker_id``; each goes to exactly one worker.

        Due: planned, send time (and retry time) reached, an email channel, the round not
        paused, and either armed or sending through a loopback SMTP server (the demo).
        Expired leases are released first (see ``release_expired``).
        """
        self.release_expired(now)
        with self.session() as s:
            due = self._due(s, now, limit)
            claim = (update(ProbeRow)
                     .where(ProbeRow.state == _S.PLANNED)
                     .values(state=_S.CLAIMED, claimed_by=worker_id, claim_until=now + lease)
                     .returning(ProbeRow.probe_id))
            if self.dialect == "postgresql":
                # Rows locked by another worker's claim are skipped, not waited for.
                ids = s.scalars(due.with_for_update(skip_locked=True, of=ProbeRow)).all()
                claimed = s.scalars(claim.where(ProbeRow.probe_id.in_(ids)),
                                    execution_options=_NO_SYNC).all() if ids else []
            else:
                # BEGIN IMMEDIATE already serialises writers: one statement is enough.
                claimed = s.scalars(claim.where(ProbeRow.probe_id.in_(due.scalar_subquery())),
                                    execution_options=_NO_SYNC).all()
            self._events(s, claimed, "claimed", worker_id, at=now)
            return _claimed(s, claimed)

    def _due(self, s: Session, now: datetime, limit: int) -> Select[Any]:
        hosts = s.execute(select(AccountRow.id, AccountRow.smtp_host)).all()
        loopback = [a for a, host in hosts if is_loopback_host(host)]
        return (select(ProbeRow.probe_id)
                .join(RoundRow, RoundRow.id == ProbeRow.round_id)
                .join(ChannelRow, ChannelRow.id == ProbeRow.channel_id)
                .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
                .where(ProbeRow.state == _S.PLANNED, ProbeRow.send_at <= now,
                       or_(ProbeRow.next_attempt_at.is_(None), ProbeRow.next_attempt_at <= now),
                       ChannelRow.address.is_not(None), RoundRow.paused.is_(False),
                       or_(RoundRow.armed.is_(True), PersonaRow.account_id.in_(loopback)))
                .order_by(func.coalesce(ProbeRow.next_attempt_at, ProbeRow.send_at),
                          ProbeRow.probe_id)
                .limit(limit))

    def mark_sending(self, probe_id: str, worker_id: str, *, at: datetime | None = None) -> bool:
        """Record, durably, that this worker is about to hand the message to SMTP.

        Call it after connecting and before DATA. False: do not send (the lease was lost
        or expired, or the round was paused or disarmed meanwhile; the probe is back in
        ``planned`` where that is safe).
        """
        return bool(self.mark_sending_many([probe_id], worker_id, at=at))

    def mark_sending_many(self, probe_ids: Sequence[str], worker_id: str, *,
                          at: datetime | None = None,
                          lease: timedelta | None = None) -> list[str]:
        """``mark_sending`` for a batch in one commit; returns the ids cleared to send.

        One durable commit per batch instead of per probe; if the worker dies, every
        probe of the batch not yet recorded as sent becomes uncertain (never resent).
        ``lease`` extends the claims to ``at + lease``, for a batch that takes a while.
        """
        at = at or self.clock.now()
        with self.session() as s:
            rows = s.execute(
                select(ProbeRow, RoundRow.paused, RoundRow.armed, AccountRow.smtp_host)
                .join(RoundRow, RoundRow.id == ProbeRow.round_id)
                .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
                .join(AccountRow, AccountRow.id == PersonaRow.account_id)
                .where(ProbeRow.probe_id.in_(probe_ids))
                .options(_STATE_ONLY)
                .with_for_update(of=ProbeRow)).all()
            go: dict[str, ProbeRow] = {}
            for row, paused, armed, host in rows:
                if row.state is not _S.CLAIMED or row.claimed_by != worker_id:
                    continue  # someone else's now: not ours to touch
                why = ("the round is paused" if paused else
                       "the lease expired" if row.claim_until is None or row.claim_until <= at
                       else None if armed or is_loopback_host(host) else
                       "the round is not armed")
                if why:
                    _release(row)
                    self._events(s, [row.probe_id], "released", f"{worker_id}: {why}", at=at)
                    continue
                row.state, row.attempts, row.sending_at = _S.SENDING, row.attempts + 1, at
                if lease is not None:
                    row.claim_until = at + lease
                go[row.probe_id] = row
            self._events(s, list(go), "sending", worker_id, at=at)
        return [i for i in probe_ids if i in go]

    def mark_sent(self, probe_id: str, accepted_at: datetime, code: int, text: str) -> None:
        """The server accepted the message (also settles an ``uncertain`` probe)."""
        self.mark_sent_many([Accepted(probe_id, accepted_at, code, text)])

    def mark_sent_many(self, accepted: Sequence[Accepted]) -> None:
        """Record several acceptances in one commit.

        Every acceptance that fits its probe's state is recorded, even if another does
        not; then a StateError names the first that did not.
        """
        refused: StateError | None = None
        with self.session() as s:
            rows = {r.probe_id: r for r in s.scalars(
                select(ProbeRow).where(ProbeRow.probe_id.in_([a.probe_id for a in accepted]))
                .options(_STATE_ONLY).with_for_update())}
            events = []
            for a in accepted:
                row = rows.get(a.probe_id) or _probe(s, a.probe_id)
                if row.state not in _FROM_SENT:
                    refused = refused or _state_error(row, _FROM_SENT, "sent")
                    continue
                row.state, row.accepted_at, row.smtp_code, row.smtp_text = (
                    _S.SENT, a.accepted_at, a.code, a.text)
                row.claim_until = None
                events.append({"probe_id": a.probe_id, "at": self.clock.now(), "kind": "sent",
                               "detail": f"{a.code} {a.text}"})
            if events:
                s.execute(insert(ProbeEventRow), events)
        if refused:
            raise refused

    def mark_failed(self, probe_id: str, code: int | None, text: str, *,
                    at: datetime | None = None) -> None:
        """A permanent refusal: the channel is not usable (itself a result)."""
        def change(row: ProbeRow) -> None:
            row.state, row.smtp_code, row.smtp_text, row.claim_until = (
                _S.FAILED, code, text, None)
        self._move(probe_id, _FROM_FAILED, "failed", f"{code or ''} {text}".strip(), at, change)

    def mark_uncertain(self, probe_id: str, reason: str, *, at: datetime | None = None) -> None:
        """The worker cannot tell whether the server accepted (e.g. dropped during DATA)."""
        def change(row: ProbeRow) -> None:
            row.state, row.last_error = _S.UNCERTAIN, reason
        self._move(probe_id, (_S.SENDING,), "uncertain", reason, at, change)

    def reschedule(self, probe_id: str, next_at: datetime, reason: str) -> None:
        """A temporary failure the server has answered (4xx, refused connection): retry later.

        Only for failures that prove the server did not accept the message.
        """
        def change(row: ProbeRow) -> None:
            if row.state is _S.CLAIMED:  # failed before mark_sending: still an attempt
                row.attempts += 1
            _release(row)
            row.next_attempt_at, row.last_error = next_at, reason
        self._move(probe_id, _FROM_RETRY, "retry", f"at {next_at.isoformat()}: {reason}",
                   None, change)

    def release_expired(self, now: datetime) -> Released:
        """Expired claims go back to ``planned``; expired ``sending`` rows become uncertain."""
        expired = ProbeRow.claim_until < now
        with self.session() as s:
            back = s.scalars(
                update(ProbeRow).where(ProbeRow.state == _S.CLAIMED, expired)
                .values(state=_S.PLANNED, claimed_by=None, claim_until=None)
                .returning(ProbeRow.probe_id), execution_options=_NO_SYNC
            ).all()
            lost = s.scalars(
                update(ProbeRow).where(ProbeRow.state == _S.SENDING, expired)
                .values(state=_S.UNCERTAIN, last_error="the worker's lease expired while sending")
                .returning(ProbeRow.probe_id), execution_options=_NO_SYNC
            ).all()
            self._events(s, back, "released", "lease expired before sending", at=now)
            self._events(s, lost, "uncertain", "lease expired while sending", at=now)
        return Released(len(back), len(lost))

    def resolve_uncertain(self, probe_id: str, found_in_sent: bool, by: str, *,
                          at: datetime | None = None,
                          accepted_at: datetime | None = None) -> None:
        """Settle an uncertain probe: found in the Sent folder → sent; else → planned again.

        Resending is an explicit decision recorded with ``by`` (an operator, or a resolver
        that searched a folder the server fills itself), never a silent retry.
        """
        at = at or self.clock.now()

        def change(row: ProbeRow) -> None:
            if found_in_sent:
                row.state, row.accepted_at = _S.SENT, accepted_at or row.sending_at
                row.claim_until = None
            else:
                _release(row)
                row.next_attempt_at = at
        kind, how = (("resolved-sent", "found in the Sent folder") if found_in_sent else
                     ("resolved-resend", "not found in the Sent folder: resend"))
        self._move(probe_id, (_S.UNCERTAIN,), kind, f"{how} (by {by})", at, change)

    def record_submission(self, probe_id: str, at: datetime, by: str) -> None:
        """An operator submitted a web-form probe at ``at``; it is timed from then on."""
        with self.session() as s:
            channel = s.get(ChannelRow, _probe(s, probe_id).channel_id)
            if channel is None or channel.form_url is None:
                raise StateError(f"probe {probe_id} goes to an email address: it is sent, not "
                                 "submitted", location=f"probe {probe_id}",
                                 expected="a web-form probe")

        def change(row: ProbeRow) -> None:
            _release(row)
            row.state, row.submitted_at = _S.SUBMITTED, at
        self._move(probe_id, _FROM_SUBMITTED, "submitted", f"at {at.isoformat()} by {by}",
                   None, change)

    # --- reading -------------------------------------------------------------------------------

    def probe(self, probe_id: str) -> ProbeView:
        with self.session(write=False) as s:
            p = _probe(s, probe_id, lock=False)
            agency = s.get_one(AgencyRow, p.agency_id).name
            channel = channel_from_row(s.get_one(ChannelRow, p.channel_id), agency)
        return ProbeView(p.probe_id, p.round_id, agency, channel, p.persona_id, p.template,
                         p.send_at, p.state, p.token, p.subject, p.body, p.message_id,
                         p.attempts, p.accepted_at, p.smtp_code, p.smtp_text, p.submitted_at)

    def probe_state(self, probe_id: str) -> ProbeState:
        with self.session(write=False) as s:
            return _probe(s, probe_id, lock=False).state

    def events(self, probe_id: str) -> list[ProbeEvent]:
        with self.session(write=False) as s:
            rows = s.scalars(select(ProbeEventRow).where(ProbeEventRow.probe_id == probe_id)
                             .order_by(ProbeEventRow.id)).all()
            return [ProbeEvent(r.probe_id, r.at, r.kind, r.detail) for r in rows]

    def list_uncertain(self, round_id: str | None = None) -> list[ClaimedProbe]:
        """Uncertain probes with what a resolver needs (Message-ID, account)."""
        with self.session(write=False) as s:
            query = select(ProbeRow.probe_id).where(ProbeRow.state == _S.UNCERTAIN)
            if round_id is not None:
                query = query.where(ProbeRow.round_id == round_id)
            return _claimed(s, s.scalars(query).all())

    # --- internals -----------------------------------------------------------------------------

    def _move(self, probe_id: str, allowed: Sequence[ProbeState], kind: str, detail: str,
              at: datetime | None, change: Callable[[ProbeRow], None]) -> None:
        with self.session() as s:
            row = _probe(s, probe_id)
            if row.state not in allowed:
                raise _state_error(row, allowed, kind)
            change(row)
            self._events(s, [probe_id], kind, detail, at=at)

    def _events(self, s: Session, ids: Sequence[str], kind: str, detail: str, *,
                at: datetime | None = None) -> None:
        if ids:
            when = at or self.clock.now()
            s.execute(insert(ProbeEventRow),
                      [{"probe_id": i, "at": when, "kind": kind, "detail": detail} for i in ids])



# --- helpers: rows and checks ------------------------------------------------------------------

_PLAN_FIELDS = ("agency_id", "channel_id", "persona_id", "template", "send_at", "details",
                "message_id", "token", "subject", "body", "raw")


def _probe(s: Session, probe_id: str, *, lock: bool = True) -> ProbeRow:
    row = s.get(ProbeRow, probe_id, with_for_update=lock)
    if row is None:
        raise StateError("no such probe", location=f"probe {probe_id}", got=probe_id)
    return row


def _state_error(row: ProbeRow, allowed: Sequence[ProbeState], kind: str) -> StateError:
    return StateError(f"probe {row.probe_id} is {row.state.value}: cannot record {kind}",
                      location=f"probe {row.probe_id}",
                      expected=" or ".join(a.value for a in allowed), got=row.state.value)


def _round(s: Session, round_id: str) -> RoundRow:
    row = s.get(RoundRow, round_id)
    if row is None:
        known = ", ".join(s.scalars(select(RoundRow.id).order_by(RoundRow.id))) or "none yet"
        raise InputError(f"no round {round_id}", location=f"round {round_id}",
                         expected=f"a planned round ({known})", got=round_id,
                         hint="plan it first with `mailprobe plan`")
    return row


def _release(row: ProbeRow) -> None:
    row.state, row.claimed_by, row.claim_until = _S.PLANNED, None, None


def _claimed(s: Session, ids: Sequence[str]) -> list[ClaimedProbe]:
    if not ids:
        return []
    rows = s.execute(
        select(ProbeRow, AgencyRow.name, ChannelRow.kind, ChannelRow.address,
               PersonaRow.account_id, AccountRow.address)
        .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
        .join(ChannelRow, ChannelRow.id == ProbeRow.channel_id)
        .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
        .join(AccountRow, AccountRow.id == PersonaRow.account_id)
        .where(ProbeRow.probe_id.in_(ids))
        .order_by(ProbeRow.send_at, ProbeRow.probe_id)).all()
    # Only email probes get here (the due query and the uncertain state need an address).
    return [ClaimedProbe(p.probe_id, p.round_id, agency, ChannelKind(kind), to or "",
                         p.persona_id, account, sender, p.message_id or "", p.subject,
                         p.raw or b"",
                         p.send_at, p.attempts, p.claimed_by or "",
                         p.claim_until or p.send_at)
            for p, agency, kind, to, account, sender in rows]


def _round_values(r: RoundRecord) -> dict[str, Any]:
    for name in ("window_start", "window_end"):
        if getattr(r, name).utcoffset() is None:
            raise InputError("a naive date-time", source=r.schedule_file,
                             location=f"round {r.id} {name}", expected="an aware instant")
    return {"id": r.id, "name": r.name, "schedule_file": r.schedule_file,
            "schedule_sha256": r.schedule_sha256, "window_start": r.window_start.astimezone(UTC),
            "window_end": r.window_end.astimezone(UTC), "seed": r.seed}


def _plan_rows(s: Session, round_id: str, probes: Sequence[ProbeRecord]) -> list[dict[str, Any]]:
    """The probes as rows, every reference resolved; an unknown one names the probe."""
    agencies = dict(s.execute(select(AgencyRow.name, AgencyRow.id)).all())
    channels = {(a, k, t): i for i, a, k, t in s.execute(
        select(ChannelRow.id, ChannelRow.agency_id, ChannelRow.kind, ChannelRow.target))}
    personas = set(s.scalars(select(PersonaRow.id)))
    taken: set[str | None] = set()  # probe ids and Message-IDs are unique across rounds
    for probe_id, message_id in s.execute(select(ProbeRow.probe_id, ProbeRow.message_id)
                                          .where(ProbeRow.round_id != round_id)):
        taken |= {probe_id, message_id} - {None}
    rows: list[dict[str, Any]] = []
    for p in probes:
        def bad(message: str, got: object = None, *, p: ProbeRecord = p) -> InputError:
            return InputError(message, source=f"round {round_id}",
                              location=f"probe {p.probe_id}", got=got)
        for value in {p.probe_id, p.message_id} - {None}:
            if value in taken:
                raise bad("used twice (in this plan or another round)", value)
            taken.add(value)
        agency = agencies.get(p.agency)
        if agency is None or p.channel.agency != p.agency:
            raise bad("unknown agency (import the directory first)", p.agency)
        target = p.channel.address or p.channel.form_url or ""
        channel = channels.get((agency, p.channel.kind.value, target))
        if channel is None:
            raise bad(f"unknown {p.channel.kind.label} channel of {p.agency}", target)
        if p.persona not in personas:
            raise bad("unknown persona", p.persona)
        if p.channel.is_email and (p.raw is None or p.message_id is None):
            raise bad("an email probe needs its rendered message (raw and message_id)")
        if p.send_at.utcoffset() is None:
            raise bad("send_at is a naive date-time", p.send_at.isoformat())
        rows.append({"probe_id": p.probe_id, "round_id": round_id, "agency_id": agency,
                     "channel_id": channel, "persona_id": p.persona, "template": p.template,
                     "send_at": p.send_at.astimezone(UTC), "details": dict(p.details),
                     "message_id": p.message_id, "token": p.token, "subject": p.subject,
                     "body": p.body, "raw": p.raw, "state": _S.PLANNED, "attempts": 0})
    return rows


def _same(row: ProbeRow, new: Mapping[str, Any]) -> bool:
    return all(getattr(row, f) == new[f] for f in _PLAN_FIELDS)


def _check_replan(rnd: RoundRow, touched: Sequence[ProbeRow]) -> None:
    if rnd.armed:
        raise InputError(f"round {rnd.id} is armed: its plan cannot change",
                         source=rnd.schedule_file, location=f"round {rnd.id}",
                         hint="disarm it first, or plan the change as a new round")
    for row in touched:
        if row.state is not _S.PLANNED or row.attempts:
            raise InputError(f"probe {row.probe_id} is already {row.state.value} "
                             f"(attempts {row.attempts}): the plan cannot change it",
                             source=rnd.schedule_file, location=f"probe {row.probe_id}")


def _upsert(s: Session, model: type[Base], key: str, rows: Sequence[dict[str, Any]]) -> Counts:
    """Insert new rows and update changed ones by ``key``; count those absent from ``rows``."""
    existing = {getattr(r, key): r for r in s.scalars(select(model))}
    added = updated = unchanged = 0
    seen: set[object] = set()
    for values in rows:
        k = values[key]
        if k in seen:
            raise InputError(f"{model.__tablename__}: {k} appears twice", location=str(k),
                             expected="each once")
        seen.add(k)
        row = existing.get(k)
        if row is None:
            s.add(model(**values))
            added += 1
        elif all(getattr(row, f) == v for f, v in values.items()):
            unchanged += 1
        else:
            for f, v in values.items():
                setattr(row, f, v)
            updated += 1
    s.flush()
    return Counts(added, updated, unchanged, len(set(existing) - seen))


def _upsert_channels(s: Session, channels: Sequence[Channel], agencies: Mapping[str, int]
                     ) -> Counts:
    existing = set(s.execute(select(ChannelRow.agency_id, ChannelRow.kind, ChannelRow.target))
                   )
    added = unchanged = 0
    seen: set[tuple[int, str, str]] = set()
    for c in channels:
        agency = agencies.get(c.agency)
        if agency is None:
            raise InputError(f"channel of unknown agency {c.agency}", source="channels",
                             location=f"row {c.line}", expected="an imported agency",
                             got=c.agency)
        key = (agency, c.kind.value, c.address or c.form_url or "")
        if key in existing or key in seen:
            unchanged += key in existing
            seen.add(key)
            continue
        seen.add(key)
        s.add(ChannelRow(agency_id=agency, kind=c.kind.value, address=c.address,
                         form_url=c.form_url, target=key[2]))
        added += 1
    s.flush()
    return Counts(added, 0, unchanged, len(existing - seen))
