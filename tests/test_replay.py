"""Round 1 of 2015 replayed on a manual clock: every probe goes out in office hours."""

from __future__ import annotations

import asyncio
import email
import email.policy
from bisect import bisect_right
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailprobe.campaign import plan_and_save
from mailprobe.clock import ManualClock
from mailprobe.compose import TemplateSet
from mailprobe.directory import Endpoint, TlsMode
from mailprobe.directory_io import load_directory
from mailprobe.models import ProbeState, ProbeView
from mailprobe.send import SendPolicy, send_due
from mailprobe.store import Store
from mailprobe.workdays import default_calendar
from tests.conftest import ROOT

CST = ZoneInfo("Asia/Shanghai")
OFFICE = ((time(9), time(12)), (time(14, 30), time(17, 30)))  # schedules/2015-round1.toml


def import_2015(store: Store, smtp_port: int) -> None:
    """The 2015 sample directory, every account sending to the test server."""
    found = load_directory(ROOT / "samples/2015/agencies.csv", ROOT / "samples/2015/channels.csv",
                           ROOT / "config/personas.toml")
    loop = Endpoint("127.0.0.1", smtp_port, TlsMode.NONE)
    accounts = [replace(a, smtp=loop) for a in found.accounts]
    store.import_directory(found.agencies, found.channels, accounts, found.personas)


def in_office_hours(when: datetime) -> bool:
    local = when.astimezone(CST).time()
    return any(start <= local < end for start, end in OFFICE)


@pytest.mark.parametrize("at_planned_times", [True, False], ids=["ticks-at-send-times",
                                                                   "hourly-ticks"])
def test_a_replayed_round_sends_every_probe_in_office_hours_on_working_days(
        tmp_path: Path, smtp_server: Any, at_planned_times: bool) -> None:
    """Ticks every two hours and at each planned send time, or only every hour.

    Hourly ticks find probes due at the end of a span (12:00, 17:30) after it: they wait
    for the next office hours, on the next working day if need be.
    """
    clock = ManualClock(datetime(2015, 11, 1, 0, 0, tzinfo=CST))  # the Sunday before
    calendar = default_calendar()
    with Store(f"sqlite:///{tmp_path / 'replay.db'}", clock=clock) as store:
        store.upgrade()
        import_2015(store, smtp_server.port)
        plan, saved = plan_and_save(store, ROOT / "schedules/2015-round1.toml",
                                    templates=TemplateSet.load(), calendar=calendar,
                                    secret=b"replay-secret-of-the-2015-round", clock=clock)
        assert saved.added == len(plan.probes) == 236
        times = sorted({p.send_at for p in plan.probes}) if at_planned_times else []
        total = asyncio.run(_replay(store, clock, times, timedelta(hours=2 if times else 1)))
        views = [store.probe(p.probe_id) for p in plan.probes]
    emails = [v for v in views if v.channel.is_email]
    assert len(emails) == 224 and total["sent"] == 224 and total["failed"] == 0
    assert {v.state for v in emails} == {ProbeState.SENT}
    assert {v.state for v in views if not v.channel.is_email} == {ProbeState.PLANNED}
    assert (total["held"] > 0) is not at_planned_times
    for v in emails:
        assert v.accepted_at is not None and v.accepted_at >= v.send_at
        day = v.accepted_at.astimezone(CST).date()
        assert calendar.is_working_day(day), (v.probe_id, v.accepted_at)
        assert in_office_hours(v.accepted_at), (v.probe_id, v.accepted_at.astimezone(CST))
        if at_planned_times:
            assert v.accepted_at == v.send_at
            assert date(2015, 11, 2) <= day <= date(2015, 11, 13)
        else:  # a probe due at 17:29 on the last day goes out on the next working day
            assert v.accepted_at - v.send_at < timedelta(days=4)
    _check_received(smtp_server, emails)


async def _replay(store: Store, clock: ManualClock, times: list[datetime],
                  step: timedelta) -> Counter[str]:
    passwords = {a.id: "unused" for a in store.directory().accounts}
    policy = SendPolicy(sent_copies=False, seed=1)
    total: Counter[str] = Counter()
    end = datetime(2015, 11, 14 if times else 17, tzinfo=CST)
    while clock.now() < end:
        report = await send_due(store, clock, "replay", passwords, policy=policy)
        total.update({k: v for k, v in vars(report).items() if isinstance(v, int)})
        later = [t for t in times[bisect_right(times, clock.now()):][:1]]
        clock.set(min([clock.now() + step, *later]))
    return total


def _check_received(smtp_server: Any, emails: list[ProbeView]) -> None:
    received = [email.message_from_bytes(m.data, policy=email.policy.default)
                for m in smtp_server.messages]
    assert len(received) == 224
    planned = {v.message_id: v.send_at for v in emails}
    for message in received:
        sent_date = message["Date"].datetime  # the planned time, in Asia/Shanghai
        assert sent_date == planned[message["Message-ID"]]
        assert sent_date.utcoffset() == timedelta(hours=8)
