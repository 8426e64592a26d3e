"""The store's behaviour, run unchanged on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, select, text

from mailprobe.cli import main
from mailprobe.clock import ManualClock
from mailprobe.directory import Account, Channel, ChannelKind, Endpoint, Persona, TlsMode
from mailprobe.errors import ConfigError, InputError
from mailprobe.models import Base, ProbeRow, ProbeState, UtcDateTime
from mailprobe.settings import load_settings, token_secret
from mailprobe.sheets import Agency, Level
from mailprobe.store import Accepted, ProbeRecord, RoundRecord, StateError, Store
from tests.conftest import ROOT
from tests.pg import throwaway_database

T0 = datetime(2015, 10, 12, 1, 0, tzinfo=UTC)  # 09:00 in Guangzhou, a Monday
LEASE = timedelta(minutes=5)
SECRET = "pw-Zq8!never-in-the-db"
S = ProbeState

AGENCIES = (Agency("甲市", Level.CITY, "甲市", "https://hbj.a.gd.test/", 2),
            Agency("乙县", Level.COUNTY, "甲市", "https://hbj.b.gd.test/", 3),
            Agency("丙县", Level.COUNTY, "甲市", "https://hbj.c.gd.test/", 4))
CHANNELS = (Channel("甲市", ChannelKind.CONSULTATION, address="zixun@hbj.a.gd.test"),
            Channel("甲市", ChannelKind.COMPLAINT, address="tousu@hbj.a.gd.test"),
            Channel("乙县", ChannelKind.CONSULTATION, address="b.zixun@hbj.a.gd.test"),
            Channel("丙县", ChannelKind.COMPLAINT, form_url="https://hbj.c.gd.test/hdjl/"))
LOOP = Endpoint("127.0.0.1", 2525, TlsMode.NONE)
REAL = Endpoint("smtp.mail.test", 465, TlsMode.TLS)
ACCOUNTS = (Account("loop", "a@mail.test", "a@mail.test", LOOP, LOOP, "MP_TEST_PW_LOOP"),
            Account("real", "b@mail.test", "b@mail.test", REAL, REAL, "MP_TEST_PW_REAL"))
PERSONAS = (Persona("chen", "陈建国", "广州市天河区", "loop", {"职业": "退休教师"}),
            Persona("li", "李秀梅", "佛山市南海区", "real"))


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[str]:
    """One migrated PostgreSQL database for the module; each test empties it first."""
    with throwaway_database() as pg, Store(pg) as store:
        store.upgrade()
        yield pg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (for the migration tests)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'work' / 'mailprobe.db'}"
    else:
        with throwaway_database() as pg:
            yield pg


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 - timedelta(days=3))


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
          clock: ManualClock) -> Iterator[Store]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'work' / 'mailprobe.db'}"
    else:
        url = request.getfixturevalue("shared_pg")
    with Store(url, clock=clock) as s:
        s.upgrade()
        if backend == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            with s.engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        s.import_directory(AGENCIES, CHANNELS, ACCOUNTS, PERSONAS)
        yield s


def _round(rid: str = "2015-r1", sha: str = "0" * 64) -> RoundRecord:
    return RoundRecord(rid, "第一轮", f"schedules/{rid}.toml", sha, T0, T0 + timedelta(days=20),
                       2015)


def _probe(i: int, channel: Channel = CHANNELS[0], persona: str = "chen",
           minutes: int | None = None, rid: str = "r1") -> ProbeRecord:
    send_at = T0 + timedelta(minutes=i if minutes is None else minutes)
    email = channel.is_email
    return ProbeRecord(f"{rid}-{i:04d}", channel.agency, channel, persona, "eia-approval",
                       send_at, token=f"tok{i}", subject="咨询环评审批", body=f"正文 {i}",
                       message_id=f"<{rid}.{i}@mail.test>" if email else None,
                       raw=f"Subject: {i}\r\n\r\n正文 {i}".encode() if email else None,
                       details={"street": f"{i}号"})


def _plan(store: Store, n: int) -> list[ProbeRecord]:
    probes = [_probe(i) for i in range(n)]
    store.save_plan(_round(), probes)
    return probes


# --- migrations ------------------------------------------------------------------------------


def _schema(store: Store) -> dict[str, list[str]]:
    with store.engine.connect() as conn:
        insp = inspect(conn)
        return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names()}


def test_migrations_apply_from_empty_and_upgrade_twice_is_a_no_op(url: str) -> None:
    with Store(url) as store:
        assert store.current_revision() is None
        with pytest.raises(ConfigError, match="mailprobe db upgrade"):
            store.check_current()
        head = store.upgrade()
        assert store.current_revision() == head == store.head_revision()
        before = _schema(store)
        assert {"agencies", "channels", "accounts", "personas", "rounds", "probes",
                "probe_events", "settings"} <= set(before)
        assert store.upgrade() == head
        assert _schema(store) == before
        store.check_current()


def test_models_match_the_migration(url: str) -> None:
    with Store(url) as store:
        store.upgrade()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []


def test_instants_are_aware_utc_and_naive_ones_are_refused(store: Store) -> None:
    _plan(store, 1)
    with store.session(write=False) as s:
        send_at = s.scalars(select(ProbeRow.send_at)).one()
    assert send_at == T0 and send_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        UtcDateTime().process_bind_param(datetime(2015, 1, 1), store.engine.dialect)
    with pytest.raises(InputError, match="naive"):
        store.save_plan(_round(), [replace(_probe(0), send_at=datetime(2015, 10, 12))])


# --- the directory -----------------------------------------------------------------------------


def test_import_directory_upserts_and_never_deletes(store: Store) -> None:
    again = store.import_directory(AGENCIES, CHANNELS, ACCOUNTS, PERSONAS)
    assert (again.agencies.unchanged, again.channels.unchanged) == (3, 4)
    moved = Agency("甲市", Level.CITY, "甲市", "https://new.a.gd.test/", 2)
    counts = store.import_directory((moved,), CHANNELS[:1], (), ())
    assert (counts.agencies.updated, counts.agencies.absent) == (1, 2)
    assert (counts.channels.unchanged, counts.channels.absent) == (1, 3)
    found = store.directory()
    assert len(found.agencies) == 3 and len(found.channels) == 4
    assert found.accounts == ACCOUNTS and found.personas[0] == PERSONAS[0]


def test_import_refuses_unknown_references_and_writes_nothing(store: Store) -> None:
    stray = Persona("wu", "吴丽华", "汕头市", "nobody")
    with pytest.raises(InputError, match="unknown account nobody"):
        store.import_directory((Agency("丁县", Level.COUNTY, "甲市", None, 9),), (), (), (stray,))
    assert "丁县" not in {a.name for a in store.directory().agencies}


def test_password_is_never_stored(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_TEST_PW_LOOP", SECRET)
    from mailprobe.directory_io import resolve_password
    assert resolve_password(ACCOUNTS[0]) == SECRET
    store.import_directory(AGENCIES, CHANNELS, ACCOUNTS, PERSONAS)
    _plan(store, 3)
    token_secret(store, env={})
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                assert SECRET not in repr(tuple(row)), f"password found in {table.name}"
    if store.dialect == "sqlite":
        for f in Path(store.url.removeprefix("sqlite:///")).parent.iterdir():
            assert SECRET.encode() not in f.read_bytes(), f"password found in {f.name}"


# --- plans -------------------------------------------------------------------------------------


def test_save_plan_is_idempotent(store: Store) -> None:
    probes = _plan(store, 5)
    events = len(store.events(probes[0].probe_id))
    again = store.save_plan(_round(), probes)
    assert (again.changed, again.unchanged) == (False, 5)
    assert len(store.events(probes[0].probe_id)) == events


def test_a_changed_plan_is_applied_while_unarmed_and_refused_when_armed(store: Store) -> None:
    probes = _plan(store, 4)
    moved = [*probes[:3], _probe(9)]
    saved = store.save_plan(_round(), [_probe(0, minutes=30), *moved[1:]])
    assert (saved.added, saved.updated, saved.removed, saved.unchanged) == (1, 1, 1, 2)
    store.set_round_flags("2015-r1", armed=True)
    with pytest.raises(InputError, match="armed"):
        store.save_plan(_round(sha="1" * 64), [_probe(0, minutes=30), *moved[1:]])
    assert not store.save_plan(_round(), [_probe(0, minutes=30), *moved[1:]]).changed


def test_a_probe_that_left_planned_cannot_be_replanned(store: Store) -> None:
    probes = _plan(store, 2)
    claimed = store.claim_due(T0 + timedelta(minutes=5), "w1", 1, LEASE)
    assert [c.probe_id for c in claimed] == [probes[0].probe_id]
    with pytest.raises(InputError, match="already claimed"):
        store.save_plan(_round(), [_probe(0, minutes=40), probes[1]])


def test_plan_references_must_exist(store: Store) -> None:
    stray = Channel("甲市", ChannelKind.SUPERVISION, address="jiandu@hbj.a.gd.test")
    with pytest.raises(InputError, match="unknown 监督 channel of 甲市"):
        store.save_plan(_round(), [_probe(0, channel=stray)])
    with pytest.raises(InputError, match="probe r1-0000: an email probe needs its rendered"):
        store.save_plan(_round(), [replace(_probe(0), raw=None)])
    with pytest.raises(InputError, match="probe r1-0001: used twice"):
        store.save_plan(_round(), [_probe(0), replace(_probe(1), message_id="<r1.0@mail.test>")])


# --- claiming ----------------------------------------------------------------------------------


def test_only_due_probes_are_claimed_in_send_order(store: Store) -> None:
    _plan(store, 10)
    assert store.claim_due(T0 - timedelta(seconds=1), "w1", 10, LEASE) == []
    got = store.claim_due(T0 + timedelta(minutes=4), "w1", 3, LEASE)
    assert [c.probe_id for c in got] == ["r1-0000", "r1-0001", "r1-0002"]
    first = got[0]
    assert (first.to_address, first.account, first.from_address) == (
        "zixun@hbj.a.gd.test", "loop", "a@mail.test")
    assert first.raw.startswith(b"Subject: 0")
    assert first.claim_until == T0 + timedelta(minutes=4) + LEASE
    assert store.probe_state("r1-0000") is S.CLAIMED


def _claim_all(url: str, workers: int, now: datetime) -> list[str]:
    barrier = threading.Barrier(workers)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        with Store(url) as store:
            barrier.wait()
            while batch := store.claim_due(now, f"w{n}", 7, LEASE):
                with lock:
                    claimed.extend(c.probe_id for c in batch)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return claimed


def test_concurrent_workers_claim_each_probe_exactly_once(store: Store) -> None:
    probes = [_probe(i, minutes=i % 30) for i in range(150)]
    store.save_plan(_round(), probes)
    claimed = _claim_all(store.url, 6, T0 + timedelta(hours=1))
    assert len(claimed) == 150 and Counter(claimed).most_common(1)[0][1] == 1
    assert store.round_status("2015-r1").by_state == {S.CLAIMED: 150}


def test_paused_and_unarmed_rounds_send_nothing_to_real_servers(store: Store) -> None:
    store.save_plan(_round(), [_probe(0), _probe(1, persona="li")])
    now = T0 + timedelta(minutes=5)
    store.set_round_flags("2015-r1", paused=True)
    assert store.claim_due(now, "w1", 10, LEASE) == []
    store.set_round_flags("2015-r1", paused=False)
    # Unarmed: only the loopback account's probe may go (the demo); armed: both.
    assert [c.persona for c in store.claim_due(now, "w1", 10, LEASE)] == ["chen"]
    store.set_round_flags("2015-r1", armed=True)
    assert [c.persona for c in store.claim_due(now, "w1", 10, LEASE)] == ["li"]


def test_pausing_after_the_claim_stops_the_send(store: Store) -> None:
    _plan(store, 1)
    now = T0 + timedelta(minutes=1)
    [probe] = store.claim_due(now, "w1", 1, LEASE)
    store.set_round_flags("2015-r1", paused=True)
    assert not store.mark_sending(probe.probe_id, "w1", at=now)
    assert store.probe_state(probe.probe_id) is S.PLANNED


def test_web_form_probes_are_submitted_by_hand_not_claimed(store: Store) -> None:
    store.save_plan(_round(), [_probe(0, channel=CHANNELS[3]), _probe(1)])
    form = store.probe("r1-0000")
    assert (form.channel.form_url, form.message_id, form.body) == (
        "https://hbj.c.gd.test/hdjl/", None, "正文 0")
    assert [c.probe_id for c in store.claim_due(T0 + timedelta(hours=1), "w", 9, LEASE)] == [
        "r1-0001"]
    with pytest.raises(StateError, match="sent, not submitted"):
        store.record_submission("r1-0001", T0, "operator")
    store.record_submission("r1-0000", T0 + timedelta(hours=2), "operator 王")
    assert store.probe_state("r1-0000") is S.SUBMITTED


# --- the exactly-once protocol -----------------------------------------------------------------


def test_sending_then_sent(store: Store) -> None:
    _plan(store, 1)
    now = T0 + timedelta(minutes=1)
    [p] = store.claim_due(now, "w1", 5, LEASE)
    assert not store.mark_sending(p.probe_id, "someone-else", at=now)
    assert store.mark_sending(p.probe_id, "w1", at=now)
    store.mark_sent(p.probe_id, now + timedelta(seconds=2), 250, "2.0.0 Ok: queued")
    assert store.probe_state(p.probe_id) is S.SENT
    assert [e.kind for e in store.events(p.probe_id)] == ["planned", "claimed", "sending", "sent"]
    with pytest.raises(StateError, match="is sent"):
        store.mark_sent(p.probe_id, now, 250, "again")


def test_an_expired_claim_goes_back_to_planned_and_the_old_worker_cannot_send(
        store: Store) -> None:
    _plan(store, 1)
    [p] = store.claim_due(T0, "w1", 1, LEASE)
    later = T0 + LEASE + timedelta(seconds=1)
    [again] = store.claim_due(later, "w2", 1, LEASE)  # releases w1's expired claim first
    assert again.probe_id == p.probe_id and again.claimed_by == "w2"
    assert not store.mark_sending(p.probe_id, "w1", at=later)
    assert store.mark_sending(p.probe_id, "w2", at=later)


def test_a_worker_whose_lease_ran_out_does_not_start(store: Store) -> None:
    _plan(store, 1)
    [p] = store.claim_due(T0, "w1", 1, LEASE)
    assert not store.mark_sending(p.probe_id, "w1", at=T0 + LEASE)
    assert store.probe_state(p.probe_id) is S.PLANNED


def test_an_expired_send_becomes_uncertain_never_planned(store: Store) -> None:
    _plan(store, 2)
    a, b = store.claim_due(T0 + timedelta(minutes=1), "w1", 2, LEASE)
    assert store.mark_sending(a.probe_id, "w1", at=T0 + timedelta(minutes=1))
    released = store.release_expired(T0 + timedelta(hours=1))
    assert (released.to_planned, released.to_uncertain) == (1, 1)
    assert store.probe_state(a.probe_id) is S.UNCERTAIN
    assert store.probe_state(b.probe_id) is S.PLANNED
    # Never claimed again: only evidence or an operator settles it.
    assert [c.probe_id for c in store.claim_due(T0 + timedelta(hours=2), "w2", 9, LEASE)] == [
        b.probe_id]
    assert [u.message_id for u in store.list_uncertain()] == ["<r1.0@mail.test>"]


def test_resolving_uncertain_probes(store: Store) -> None:
    _plan(store, 2)
    now = T0 + timedelta(minutes=2)
    for p in store.claim_due(now, "w1", 2, LEASE):
        assert store.mark_sending(p.probe_id, "w1", at=now)
    store.release_expired(now + LEASE * 2)
    store.resolve_uncertain("r1-0000", True, "sent-folder", accepted_at=now)
    store.resolve_uncertain("r1-0001", False, "operator 王", at=now + LEASE * 3)
    assert store.probe_state("r1-0000") is S.SENT
    assert store.probe_state("r1-0001") is S.PLANNED
    assert "operator 王" in store.events("r1-0001")[-1].detail
    with pytest.raises(StateError, match="is sent"):
        store.resolve_uncertain("r1-0000", False, "operator")


def test_a_late_acceptance_settles_an_uncertain_probe(store: Store) -> None:
    _plan(store, 1)
    [p] = store.claim_due(T0, "w1", 1, LEASE)
    assert store.mark_sending(p.probe_id, "w1", at=T0)
    store.release_expired(T0 + LEASE * 2)
    store.mark_sent(p.probe_id, T0 + timedelta(seconds=1), 250, "ok")
    assert store.probe_state(p.probe_id) is S.SENT


def test_temporary_failures_are_retried_later_and_permanent_ones_fail(store: Store) -> None:
    _plan(store, 2)
    now = T0 + timedelta(minutes=2)
    a, b = store.claim_due(now, "w1", 2, LEASE)
    assert store.mark_sending(a.probe_id, "w1", at=now)
    store.reschedule(a.probe_id, now + timedelta(minutes=10), "451 4.7.1 try later")
    store.reschedule(b.probe_id, now + timedelta(minutes=10), "connection refused")
    assert store.claim_due(now + timedelta(minutes=9), "w1", 9, LEASE) == []
    again = store.claim_due(now + timedelta(minutes=10), "w1", 9, LEASE)
    assert [(c.probe_id, c.attempts) for c in again] == [(a.probe_id, 1), (b.probe_id, 1)]
    store.mark_failed(b.probe_id, 550, "5.1.1 user unknown")
    assert store.probe_state(b.probe_id) is S.FAILED
    with pytest.raises(StateError):
        store.reschedule(b.probe_id, now, "nope")


def test_round_status_counts_by_state_day_and_agency(store: Store) -> None:
    probes = [_probe(0), _probe(1, channel=CHANNELS[2]),
              _probe(2, minutes=60 * 24 * 3), _probe(3, channel=CHANNELS[3])]
    store.save_plan(_round(), probes)
    assert len(store.claim_due(T0, "w1", 1, LEASE)) == 1
    status = store.round_status("2015-r1")
    assert (status.total, status.armed, status.paused) == (4, False, False)
    assert status.by_state == {S.CLAIMED: 1, S.PLANNED: 3}
    assert status.by_day == {date(2015, 10, 12): {S.CLAIMED: 1, S.PLANNED: 2},
                             date(2015, 10, 15): {S.PLANNED: 1}}
    assert status.by_agency["乙县"] == {S.PLANNED: 1}
    with pytest.raises(InputError, match="no round 2099"):
        store.round_status("2099")


# --- settings ----------------------------------------------------------------------------------


def test_token_secret_comes_from_the_environment_or_is_generated_once(store: Store) -> None:
    assert token_secret(store, env={"MAILPROBE_TOKEN_SECRET": "x" * 32}) == b"x" * 32
    first = token_secret(store, env={})
    assert len(first) >= 32 and token_secret(store, env={}) == first
    with pytest.raises(ConfigError, match="MAILPROBE_TOKEN_SECRET"):
        token_secret(store, env={"MAILPROBE_TOKEN_SECRET": "short"})


def test_settings_sources_in_order(tmp_path: Path) -> None:
    file = tmp_path / "mailprobe.toml"
    file.write_text('[database]\nurl = "postgresql://u@db/x"\n', encoding="utf-8")
    s = load_settings(file, env={})
    assert s.database_url == "postgresql+psycopg://u@db/x"
    assert s.database_url_from == f"{file} [database] url"
    s = load_settings(file, env={"MAILPROBE_DATABASE_URL": "sqlite:///a.db"})
    assert (s.database_url, s.database_url_from) == ("sqlite:///a.db", "MAILPROBE_DATABASE_URL")
    s = load_settings(file, db_url="sqlite:///b.db", env={"MAILPROBE_DATABASE_URL": "x"})
    assert (s.database_url, s.database_url_from) == ("sqlite:///b.db", "--db")
    assert load_settings(ROOT / "config" / "mailprobe.toml", env={}).claim_batch == 200


@pytest.mark.parametrize(("toml", "message"), [
    ('[database]\nurl = "mysql://x/y"\n', r"mailprobe.toml \[database\] url: unsupported"),
    ('[database]\nurll = "x"\n', r"mailprobe.toml: \[database\] urll: unknown key"),
    ('[campaign]\ntoken_secret = "x"\n', "secrets never go in files"),
    ('[campaign]\nclaim_batch = 0\n', r"\[campaign\] claim_batch: must be a positive"),
])
def test_settings_errors_name_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    file = tmp_path / "mailprobe.toml"
    file.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(file, env={})


# --- the commands ------------------------------------------------------------------------------


def test_db_and_directory_commands(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ws' / 'm.db'}"
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--db", db])
    with Store(db) as store:
        head = store.head_revision()
    assert first.exit_code == 0 and f"to revision {head}" in first.output
    again = runner.invoke(main, ["db", "upgrade", "--db", db]).output
    assert f"already at revision {head}" in again
    files = ["--agencies", ROOT / "samples/2015/agencies.csv", "--channels",
             ROOT / "samples/2015/channels.csv", "--personas", ROOT / "config/personas.toml"]
    imported = runner.invoke(main, ["directory", "import", *map(str, files), "--db", db])
    assert imported.exit_code == 0, imported.output
    assert "agencies    233" in imported.output
    shown = runner.invoke(main, ["directory", "show", "--format", "json", "--db", db])
    data = json.loads(shown.output)
    assert len(data["personas"]) >= 6 and "password" not in json.dumps(data).replace(
        "password_env", "")
    with Store(db) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM channels")).scalar() == 332


def test_batches_mark_only_their_own_probes_and_record_every_valid_acceptance(
        store: Store) -> None:
    _plan(store, 3)
    now = T0 + timedelta(minutes=5)
    mine = [c.probe_id for c in store.claim_due(now, "w1", 2, LEASE)]
    theirs = [c.probe_id for c in store.claim_due(now, "w2", 1, LEASE)]
    assert store.mark_sending_many([*mine, *theirs], "w1", at=now) == mine
    assert store.probe_state(theirs[0]) is S.CLAIMED
    with pytest.raises(StateError, match=f"probe {theirs[0]} is claimed"):
        store.mark_sent_many([Accepted(theirs[0], now, 250, "ok"),
                              *(Accepted(i, now, 250, "ok") for i in mine)])
    assert [store.probe_state(i) for i in mine] == [S.SENT, S.SENT]
