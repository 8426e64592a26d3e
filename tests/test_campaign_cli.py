"""The campaign commands as an operator runs them, and planning a campaign across rounds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailprobe.cli import run
from mailprobe.clock import ManualClock, SystemClock
from mailprobe.models import AgencyRow, ProbeRow, ProbeState
from mailprobe.probe_details import place_key
from mailprobe.send import SendPolicy, TickReport
from mailprobe.store import Store
from mailprobe.worker import run_worker
from tests.conftest import ROOT
from tests.test_send import PASSWORD, World, account, persona

R1, R2 = ROOT / "schedules/2015-round1.toml", ROOT / "schedules/2015-round2.toml"
S = ProbeState


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """One command in this process (fast), as ``mailprobe`` runs it: (status, out, err)."""
    try:
        run([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path, smtp_server: Any, monkeypatch: pytest.MonkeyPatch,
       capsys: pytest.CaptureFixture[str]) -> str:
    """A workspace with the 2015 directory; the demo accounts send to the test server."""
    url = f"sqlite:///{tmp_path / 'ws' / 'm.db'}"
    personas = tmp_path / "personas.toml"
    personas.write_text((ROOT / "config/personas.toml").read_text(encoding="utf-8").replace(
        "port = 2525", f"port = {smtp_server.port}"), encoding="utf-8")
    monkeypatch.setenv("MAILPROBE_TOKEN_SECRET", "cli-test-secret-" * 2)
    for n in (1, 2, 3):
        monkeypatch.setenv(f"MAILPROBE_PASSWORD_CITIZEN{n}", "unused-by-the-test-server")
    assert cli(capsys, "db", "upgrade", "--db", url)[0] == 0
    code, _, err = cli(capsys, "directory", "import", "--agencies",
                       ROOT / "samples/2015/agencies.csv", "--channels",
                       ROOT / "samples/2015/channels.csv", "--personas", personas, "--db", url)
    assert code == 0, err
    return url


# --- plan --------------------------------------------------------------------------------------


def test_plan_shows_the_counts_and_saves_only_when_asked(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "plan", "--schedule", R1, "--db", db)
    assert code == 0, err
    assert "236 probes, 224 by e-mail, 12 by web form" in out
    assert "replies timed until 2015-12-04" in out
    for section in ("per day", "per persona", "per template", "balance", "skipped: 0 probes",
                    "not saved"):
        assert section in out
    assert "2015-11-02" in out and "chen-jianguo" in out and "noise_night_1" in out
    code, _, err = cli(capsys, "status", "2015-r1", "--db", db)
    assert code == 1 and "no round 2015-r1" in err and err.count("\n") == 1

    eml = tmp_path / "eml"
    code, out, err = cli(capsys, "plan", "--schedule", R1, "--save", "--eml-dir", eml,
                         "--format", "json", "--db", db)
    assert code == 0, err
    data = json.loads(out)
    assert (data["probes"], data["email"], data["web_forms"]) == (236, 224, 12)
    assert data["saved"] == {"added": 236, "updated": 0, "removed": 0, "unchanged": 0}
    assert {"section": "persona_balance", "key": "city", "count": 1} in data["summary"]
    assert len(list(eml.glob("*.eml"))) == 224 and len(list(eml.glob("*.txt"))) == 12
    assert b"Message-ID: <" in (eml / "2015-r1-0001.eml").read_bytes()
    _, out, _ = cli(capsys, "plan", "--schedule", R1, "--save", "--db", db)
    assert "saved: 0 added, 0 updated, 0 removed, 236 unchanged" in out


def test_round_two_never_repeats_a_persona_or_a_place(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "plan", "--schedule", R2, "--db", db)
    assert code == 1 and "previous round 2015-r1 is not in the database" in err
    assert cli(capsys, "plan", "--schedule", R1, "--save", "--db", db)[0] == 0
    code, _, err = cli(capsys, "plan", "--schedule", R2, "--save", "--db", db)
    assert code == 0, err
    with Store(db) as store, store.session(write=False) as s:
        rows = s.execute(select(ProbeRow.round_id, ProbeRow.persona_id, AgencyRow.name,
                                ProbeRow.details)
                         .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)).all()
    pairs = {r: {(p, a) for rr, p, a, _ in rows if rr == r} for r in ("2015-r1", "2015-r2")}
    places = {r: [place_key(d) for rr, _, _, d in rows if rr == r] for r in pairs}
    assert pairs["2015-r2"] and not pairs["2015-r1"] & pairs["2015-r2"]
    assert len(set(places["2015-r1"] + places["2015-r2"])) == len(rows)


# --- steering ----------------------------------------------------------------------------------


def test_arm_pause_resume_disarm_and_status(db: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "plan", "--schedule", R1, "--save", "--db", db)[0] == 0
    assert "armed, sending when due" in cli(capsys, "arm", "2015-r1", "--db", db)[1]
    assert "armed, paused" in cli(capsys, "pause", "2015-r1", "--db", db)[1]
    code, out, _ = cli(capsys, "status", "2015-r1", "--format", "json", "--db", db)
    data = json.loads(out)
    assert (data["armed"], data["paused"], data["total"]) == (True, True, 236)
    assert data["by_state"] == {"planned": 236} and data["by_day"]["2015-11-02"] == {
        "planned": 23}
    assert cli(capsys, "resume", "2015-r1", "--db", db)[1].endswith("sending when due\n")
    assert "not armed" in cli(capsys, "disarm", "2015-r1", "--db", db)[1]
    code, out, err = cli(capsys, "status", "2015-r1", "--wait", "--timeout", "0", "--db", db)
    assert code == 0 and "round 2015-r1" in err  # the progress bar
    assert "by planned day" in out and "by agency" in out and "广州市" in out
    code, _, err = cli(capsys, "arm", "2099-r9", "--db", db)
    assert code == 1 and "no round 2099-r9" in err and "mailprobe plan" in err


def test_web_form_probes_are_shown_and_their_submission_recorded(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "plan", "--schedule", R1, "--save", "--db", db)[0] == 0
    with Store(db) as store:
        views = [store.probe(f"2015-r1-{i:04d}") for i in range(1, 237)]
    form = next(v for v in views if v.channel.form_url)
    mail = next(v for v in views if v.channel.address)
    code, out, _ = cli(capsys, "probes", "show-form", form.probe_id, "--db", db)
    assert code == 0 and f"网址: {form.channel.form_url}" in out
    assert form.subject in out and form.body.strip() in out
    code, _, err = cli(capsys, "probes", "show-form", mail.probe_id, "--db", db)
    assert code == 1 and "goes to an e-mail address" in err
    code, _, err = cli(capsys, "probes", "submitted", form.probe_id, "--at", "2015-11-03T10:20",
                       "--db", db)
    assert code == 1 and "without a UTC offset" in err
    code, out, err = cli(capsys, "probes", "submitted", form.probe_id, "--at",
                         "2015-11-03T10:20+08:00", "--by", "王芳", "--db", db)
    assert code == 0, err
    with Store(db) as store:
        view = store.probe(form.probe_id)
        assert view.state is S.SUBMITTED and view.submitted_at is not None
        assert view.submitted_at.isoformat() == "2015-11-03T02:20:00+00:00"
        assert "王芳" in store.events(form.probe_id)[-1].detail


# --- sending and the uncertain -----------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path, smtp_server: Any) -> Iterator[World]:
    """A round due now by the real clock (the commands use it)."""
    clock = ManualClock(SystemClock().now())
    world = World(f"sqlite:///{tmp_path / 'live.db'}", clock, [account(smtp_server.port)],
                  [persona()])
    world.plan(3, at=clock.now() - timedelta(minutes=5))
    yield world
    world.store.close()


def test_send_due_needs_every_password_first(live: World, smtp_server: Any,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = live.store.url
    monkeypatch.delenv("MP_TEST_PW", raising=False)
    code, out, err = cli(capsys, "send", "--due", "--db", url)
    assert code == 1 and err.startswith("mailprobe: error: no password for account c1")
    assert "set $MP_TEST_PW" in err
    assert err.count("\n") == 1 and smtp_server.messages == []
    code, _, err = cli(capsys, "send", "--db", url)
    assert code == 1 and "expected --due" in err
    monkeypatch.setenv("MP_TEST_PW", PASSWORD)
    code, out, err = cli(capsys, "send", "--due", "--no-sent-copies", "--db", url)
    assert code == 0, err
    assert "claimed 3, sent 3" in out and len(smtp_server.messages) == 3


def test_uncertain_probes_are_listed_and_resolved_by_an_operator(
        live: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, now = live.store, SystemClock().now()
    claimed = store.claim_due(now, "ghost", 2, timedelta(seconds=1))
    assert len(store.mark_sending_many([c.probe_id for c in claimed], "ghost", at=now)) == 2
    store.release_expired(now + timedelta(minutes=1))  # the ghost worker died mid-send
    a, b = (c.probe_id for c in claimed)
    code, out, _ = cli(capsys, "probes", "uncertain", "--no-search", "--db", store.url)
    assert code == 0 and "uncertain: 2 probes" in out and a in out
    # The account's IMAP server is down (port 1): say so, and still list them.
    monkeypatch.setenv("MP_TEST_PW", PASSWORD)
    code, out, _ = cli(capsys, "probes", "uncertain", "--db", store.url)
    assert code == 0 and "uncertain: 2 probes" in out
    assert "warning: account c1: cannot search the Sent folder" in out
    code, _, err = cli(capsys, "probes", "resolve", a, "--by", "王芳", "--db", store.url)
    assert code == 1 and "--sent or --resend" in err
    assert cli(capsys, "probes", "resolve", a, "--resend", "--by", "王芳", "--db",
               store.url)[0] == 0
    assert cli(capsys, "probes", "resolve", b, "--sent", "--by", "王芳", "--db",
               store.url)[0] == 0
    assert (store.probe_state(a), store.probe_state(b)) == (S.PLANNED, S.SENT)
    assert "operator 王芳" in store.events(a)[-1].detail
    code, _, err = cli(capsys, "probes", "resolve", b, "--resend", "--by", "x", "--db",
                       store.url)
    assert code == 1 and "is sent" in err


def test_the_worker_ticks_until_stopped(live: World, smtp_server: Any) -> None:
    reports: list[TickReport] = []

    async def run_for_a_while() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await run_worker(live.store, SystemClock(), tick_seconds=0.1, stop_event=stop,
                                worker_id="w-test", passwords={"c1": PASSWORD},
                                policy=SendPolicy(sent_copies=False), on_tick=reports.append)

    ticks = asyncio.run(run_for_a_while())
    assert ticks >= 3 and sum(r.sent for r in reports) == 3
    assert len(smtp_server.messages) == 3


# --- configuration errors stop the command before anything is sent ------------------------------


def _schedule(tmp_path: Path, old: str, new: str) -> Path:
    text = R1.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "bad-round.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _nothing_planned(capsys: pytest.CaptureFixture[str], db: str, smtp_server: Any) -> None:
    code, _, err = cli(capsys, "status", "2015-r1", "--db", db)
    assert code == 1 and "no round 2015-r1" in err
    assert smtp_server.messages == []


@pytest.mark.parametrize(("old", "new", "message"), [
    ('names = []                       # empty: no explicit list',
     'names = ["火星市环保局"]', "unknown agency 火星市环保局"),
    ("end = 2015-11-14", "end = 2015-10-30", "the window ends before it starts"),
])
def test_a_bad_schedule_stops_planning_with_one_line(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], smtp_server: Any,
        old: str, new: str, message: str) -> None:
    bad = _schedule(tmp_path, old, new)
    code, out, err = cli(capsys, "plan", "--schedule", bad, "--save", "--db", db)
    assert code == 1 and message in err and str(bad) in err, err
    assert err.count("\n") == 1 and out == ""
    _nothing_planned(capsys, db, smtp_server)


def test_a_template_variable_never_set_stops_planning(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], smtp_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    home = tmp_path / "home"
    for part in ("config", "templates", "schedules"):
        shutil.copytree(ROOT / part, home / part)
    template = home / "templates/probes/noise_night_1.txt.j2"
    text = template.read_text(encoding="utf-8")
    template.write_text(text.replace("{% endblock %}", "{{ never_set_anywhere }}{% endblock %}",
                                     1), encoding="utf-8")
    monkeypatch.setenv("MAILPROBE_HOME", str(home))
    code, _, err = cli(capsys, "plan", "--schedule", home / "schedules/2015-round1.toml",
                         "--save", "--db", db)
    assert code == 1 and "never_set_anywhere" in err and "noise_night_1" in err, err
    assert err.count("\n") == 1
    _nothing_planned(capsys, db, smtp_server)


def test_run_needs_every_password_before_it_starts(live: World, smtp_server: Any,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MP_TEST_PW", raising=False)
    code, _, err = cli(capsys, "run", "--db", live.store.url)
    assert code == 1 and "no password for account c1" in err and err.count("\n") == 1
    assert smtp_server.messages == []
    with live.store.session(write=False) as s:
        states = list(s.scalars(select(ProbeRow.state)))
    assert states == [S.PLANNED] * 3
