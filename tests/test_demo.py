"""`mailprobe demo` end to end: a real process replays both 2015 rounds and writes the report.

The run takes about a minute, so it happens once (module fixture); the tests read its
output and its database. No assertion on time: a slow machine must still pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from mailprobe.models import ProbeEventRow, ProbeRow, ProbeState
from mailprobe.models_mail import MessageRow
from mailprobe.models_review import MatchRow
from mailprobe.store import Store
from mailprobe.workdays import default_calendar

pytestmark = pytest.mark.slow

CST = ZoneInfo("Asia/Shanghai")
ROUND = re.compile(r"^(?P<name>2015年第[一二]轮检查[^：]*)：(?P<probes>\d+) 封模拟来信，发出 "
                   r"(?P<sent>\d+) 封；15 个工作日内答复 (?P<in_time>\d+)，逾期答复 (?P<late>\d+)，"
                   r"未答复 (?P<unanswered>\d+)，退信或拒收 (?P<bounced>\d+)$", re.M)


@dataclass(frozen=True)
class Run:
    out: Path
    process: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    home = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
    process = subprocess.run([sys.executable, "-m", "mailprobe", "demo", "--out", "tmp"],
                             capture_output=True, text=True, cwd=home, env=env, timeout=1200)
    assert process.returncode == 0, process.stderr[-3000:]
    return Run(home / "tmp", process)


@pytest.fixture(scope="module")
def store(run: Run) -> Store:
    return Store(f"sqlite:///{run.out / 'demo.db'}")


def rounds(run: Run) -> dict[str, dict[str, int]]:
    found = {m["name"]: {k: int(v) for k, v in m.groupdict().items() if k != "name"}
             for m in ROUND.finditer(run.process.stdout)}
    assert len(found) == 2, run.process.stdout
    return found


def test_it_ends_with_the_report_and_a_summary(run: Run) -> None:
    out = run.process.stdout
    assert "\nreport written: tmp/report.html\n" in out  # as given: --out tmp
    assert re.search(r"^地级市：22 个网站参评；前三 广州市 [\d.]+、", out, re.M)
    assert re.search(r"^县区级：96 个网站参评；前三 .+；末三 .+$", out, re.M)
    html = (run.out / "report.html").read_text(encoding="utf-8")
    for section in ("地级市 · 综合排名", "县区级 · 网站开通情况",
                    "2015年第一轮检查（邮件模拟测试） · 三、逐件记录",
                    "2015年第二轮检查（整改情况复查，邮件模拟测试） · 三、逐件记录"):
        assert section in html
    assert (run.out / "report.xlsx").stat().st_size > 0
    assert (run.out / "csv" / "rt_2015_r2_rt-probes.csv").exists()


def test_progress_goes_to_stderr_without_noise(run: Run) -> None:
    err = run.process.stderr
    assert err.count("模拟时间 2015-1") >= 5 and "已发出" in err
    assert "Traceback" not in err and "ERROR" not in err and "Warning" not in err


def test_the_summary_adds_up_and_has_every_outcome(run: Run) -> None:
    for name, r in rounds(run).items():
        assert r["probes"] == 236, name
        assert r["in_time"] + r["late"] + r["unanswered"] + r["bounced"] == r["probes"]
        assert r["in_time"] > r["unanswered"] > 0 and r["late"] > 0 and r["bounced"] > 0
        assert r["sent"] + r["bounced"] >= r["probes"]


def test_the_summary_agrees_with_the_database(run: Run, store: Store) -> None:
    with store.session(write=False) as s:
        by_round = {rid: Counter(dict(s.execute(
            select(ProbeRow.state, func.count()).where(ProbeRow.round_id == rid)
            .group_by(ProbeRow.state)).all())) for rid in ("2015-r1", "2015-r2")}
        accepted = s.scalar(select(func.count()).select_from(ProbeRow)
                            .where(ProbeRow.accepted_at.is_not(None)))
        refused = s.scalar(select(func.count()).select_from(ProbeRow)
                           .where(ProbeRow.state == ProbeState.FAILED,
                                  ProbeRow.accepted_at.is_(None)))
    parsed = rounds(run)
    for (name, r), rid in zip(parsed.items(), ("2015-r1", "2015-r2"), strict=True):
        states = by_round[rid]
        assert sum(states.values()) == r["probes"], name
        assert not {ProbeState.PLANNED, ProbeState.CLAIMED, ProbeState.SENDING,
                    ProbeState.UNCERTAIN} & set(states), states
        assert states[ProbeState.SUBMITTED] > 0  # the web forms, by the demo's evaluator
        assert r["sent"] == r["probes"] - states[ProbeState.FAILED]
    assert f"SMTP 服务器收下 {accepted} 封" in run.process.stdout
    assert refused and refused <= sum(r["bounced"] for r in parsed.values())


def test_every_probe_went_out_once(store: Store) -> None:
    with store.session(write=False) as s:
        sent = s.execute(select(ProbeEventRow.probe_id, func.count())
                         .where(ProbeEventRow.kind == "sent")
                         .group_by(ProbeEventRow.probe_id)).all()
        accepted = s.execute(select(ProbeRow.probe_id, ProbeRow.send_at, ProbeRow.accepted_at)
                             .where(ProbeRow.accepted_at.is_not(None))).all()
    assert sent and {n for _, n in sent} == {1}
    assert {p for p, _ in sent} == {p for p, _, _ in accepted}
    calendar = default_calendar()
    for probe_id, send_at, accepted_at in accepted:
        assert accepted_at is not None and accepted_at >= send_at
        local = accepted_at.astimezone(CST)
        assert calendar.is_working_day(local.date()), probe_id
        assert time(9) <= local.time() < time(17, 30), probe_id


def test_replies_arrive_in_simulated_time_and_are_matched(run: Run, store: Store) -> None:
    with store.session(write=False) as s:
        messages = s.execute(select(MessageRow.internaldate, MessageRow.kind, MatchRow.probe_id,
                                    MatchRow.needs_review, MatchRow.rule, ProbeRow.accepted_at,
                                    ProbeRow.submitted_at)
                             .join(MatchRow, MatchRow.message_id == MessageRow.id)
                             .outerjoin(ProbeRow, ProbeRow.probe_id == MatchRow.probe_id)).all()
    kinds = Counter(m.kind for m in messages)
    assert kinds["reply"] > kinds["acknowledgement"] > kinds["bounce"] > 0
    assert kinds["auto_reply"] > 0 and not kinds["unrelated"]
    matched = [m for m in messages if m.probe_id is not None]
    assert len(matched) >= 0.97 * len(messages)
    assert f"自动匹配 {len(matched)} 封" in run.process.stdout
    assert {"quoted_details", "bounce_returned_message"} <= {m.rule for m in matched}
    assert len({m.rule for m in matched}) >= 4
    for m in matched:
        sent = m.accepted_at or m.submitted_at
        assert sent is not None and sent < m.internaldate < datetime(2016, 2, 1, tzinfo=CST)
        if m.kind == "reply":  # people answer in office hours
            assert time(8, 40) <= m.internaldate.astimezone(CST).time() <= time(17, 50)


def test_nothing_secret_is_kept_or_shown(run: Run, store: Store) -> None:
    directory = store.directory()
    assert {a.password_env for a in directory.accounts} == {
        "MAILPROBE_PASSWORD_CITIZEN1", "MAILPROBE_PASSWORD_CITIZEN2",
        "MAILPROBE_PASSWORD_CITIZEN3"}
    assert all(a.smtp.host == a.imap.host == "127.0.0.1" for a in directory.accounts)
    assert "password" not in (run.process.stdout + run.process.stderr).lower()
