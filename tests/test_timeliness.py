"""The queue method: stages, censoring, acknowledgements, summaries and agency points."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailprobe.errors import ConfigError, InputError
from mailprobe.timeliness import (
    Combine,
    ProbeTiming,
    QueueMethod,
    StageKind,
    StageMode,
    assess_round,
    combine_points,
    load_queue_method,
    resolve_stages,
    stage_for,
    stage_points_batch,
    timeliness_points,
)
from mailprobe.workdays import WorkCalendar, default_calendar


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return default_calendar()


@pytest.fixture(scope="module")
def method() -> QueueMethod:
    return QueueMethod()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def probe(pid: str, sent: str, replied: str | None = None, *, agency: str = "甲市",
          ack: str | None = None, round_end: str | None = None) -> ProbeTiming:
    return ProbeTiming(
        pid, agency, at(sent), first_ack_at=at(ack) if ack else None,
        replied_at=at(replied) if replied else None,
        round_end=at(round_end) if round_end else None,
    )


def test_shipped_config_is_the_documented_default() -> None:
    loaded = load_queue_method()
    assert dataclasses.replace(loaded, source="x") == dataclasses.replace(QueueMethod(),
                                                                          source="x")
    assert loaded.limit == 15 and "15个工作日" in loaded.limit_source
    assert loaded.rounding_step == 0.0


@pytest.mark.parametrize(
    ("days", "key", "points"),
    [(0, "within_5", 2.0), (5, "within_5", 2.0), (6, "days_6_10", 1.5), (10, "days_6_10", 1.5),
     (11, "days_11_15", 1.0), (15, "days_11_15", 1.0), (16, "late", 0.0), (90, "late", 0.0),
     (None, "no_reply", 0.0)],
)
def test_fixed_stages(method: QueueMethod, days: int | None, key: str, points: float) -> None:
    stage = stage_for(resolve_stages(method), days)
    assert (stage.key, stage.points) == (key, points)


def test_batch_stages_agree_with_scalar(method: QueueMethod) -> None:
    stages = resolve_stages(method)
    days = np.arange(-1, 40, dtype=np.int64)
    index, points = stage_points_batch(stages, days)
    for d, i, p in zip(days, index, points, strict=True):
        stage = stage_for(stages, None if d < 0 else int(d))
        assert stages[int(i)] == stage and p == stage.points


def test_round_one_probes(cal: WorkCalendar, method: QueueMethod) -> None:
    # Round 1 of 2015 sent 2015-11-02 .. 11-14; the round closed on 11-14.
    end = "2015-11-14T23:59:59+08:00"
    probes = [
        probe("a1", "2015-11-02T09:00+08:00", "2015-11-06T17:00+08:00", round_end=end),
        probe("a2", "2015-11-03T09:00+08:00", "2015-11-13T10:00+08:00", round_end=end),
        probe("b1", "2015-11-09T09:00+08:00", None, agency="乙市", round_end=end),
        probe("b2", "2015-11-10T09:00+08:00", "2015-11-20T09:00+08:00", agency="乙市",
              round_end=end),
    ]
    result = assess_round(probes, method, cal)
    by_id = {o.probe_id: o for o in result.outcomes}
    assert (by_id["a1"].working_days, by_id["a1"].stage.key) == (4, "within_5")
    assert (by_id["a2"].working_days, by_id["a2"].stage.key) == (8, "days_6_10")
    # A reply after the end of the round does not count: the probe is censored, not dropped.
    for pid in ("b1", "b2"):
        assert by_id[pid].stage.kind is StageKind.NO_REPLY
        assert by_id[pid].timed.censored and by_id[pid].timed.censored_before_deadline
    assert result.summary.probes == 4 and result.summary.censored == 2
    assert [n.split(":")[0] for n in result.notes] == ["probe b1", "probe b2"]
    points = {a.agency: a for a in result.agencies}
    assert points["甲市"].points == 1.75 and points["甲市"].probe_ids == ("a1", "a2")
    assert points["乙市"].points == 0.0 and points["乙市"].probe_ids == ("b1", "b2")


def test_round_two_deadline_and_rest_day(cal: WorkCalendar, method: QueueMethod) -> None:
    # Round 2 sent 2015-11-25 .. 12-09: the 15th working day after 11-25 is Wednesday 12-16.
    on_time = probe("r2a", "2015-11-25T10:00+08:00", "2015-12-16T23:59+08:00")
    late = probe("r2b", "2015-12-04T10:00+08:00", "2015-12-26T10:00+08:00")  # Saturday
    a, b = assess_round([on_time, late], method, cal).outcomes
    assert (a.working_days, a.in_time, a.stage.key) == (15, True, "days_11_15")
    assert a.timed.deadline.last_day == date(2015, 12, 16)
    # 12-25 (Friday) is the 15th working day after 12-04; a Saturday reply missed it.
    assert b.timed.deadline.last_day == date(2015, 12, 25)
    assert (b.working_days, b.in_time, b.stage.key) == (16, False, "late")


def test_acknowledgement_does_not_stop_the_clock(cal: WorkCalendar, method: QueueMethod) -> None:
    p = probe("p", "2015-11-02T09:00+08:00", "2015-11-17T09:00+08:00",
              ack="2015-11-02T09:01+08:00")
    (outcome,) = assess_round([p], method, cal).outcomes
    assert outcome.timed.ack_working_days == 0
    assert outcome.working_days == 11 and outcome.stage.key == "days_11_15"
    unanswered = probe("q", "2015-11-02T09:00+08:00", ack="2015-11-03T09:00+08:00")
    result = assess_round([unanswered], method, cal)
    assert result.outcomes[0].stage.kind is StageKind.NO_REPLY
    assert result.summary.acknowledged == 1 and result.summary.answered == 0


def test_summary_counts_unanswered_as_beyond_the_limit(cal: WorkCalendar,
                                                        method: QueueMethod) -> None:
    sent = "2015-11-02T09:00+08:00"
    replies = ["2015-11-03T09:00+08:00", "2015-11-04T09:00+08:00", None, None, None]
    result = assess_round([probe(f"p{i}", sent, r) for i, r in enumerate(replies)], method, cal)
    s = result.summary
    assert (s.probes, s.answered, s.answered_in_time) == (5, 2, 2)
    assert s.median_working_days is None and s.median_beyond_limit
    shares = {c.key: (c.count, c.share, c.cumulative_share) for c in s.stages}
    assert shares["within_5"] == (2, 0.4, 0.4)
    assert shares["no_reply"] == (3, 0.6, 1.0)
    answered = assess_round([probe(f"p{i}", sent, r) for i, r in enumerate(replies[:3])],
                            method, cal).summary
    assert answered.median_working_days == 2.0 and not answered.median_beyond_limit


@pytest.mark.parametrize(
    ("combine", "step", "expected"),
    [(Combine.MEAN, 0.0, 1.166667), (Combine.WORST, 0.0, 0.5), (Combine.BEST, 0.0, 2.0),
     (Combine.MEAN, 0.5, 1.0), (Combine.MEAN, 0.25, 1.25)],
)
def test_combining_probes(combine: Combine, step: float, expected: float) -> None:
    m = QueueMethod(combine=combine, rounding_step=step)
    assert combine_points(m, [2.0, 1.0, 0.5]) == expected


def test_rounding_is_half_up() -> None:
    assert combine_points(QueueMethod(rounding_step=0.5), [2.0, 0.5]) == 1.5  # 1.25 -> 1.5


def test_late_reply_earns_only_when_allowed() -> None:
    with pytest.raises(ConfigError, match="late_reply_earns is false"):
        QueueMethod(late=dataclasses.replace(QueueMethod().late, share=0.25))
    m = QueueMethod(late_reply_earns=True,
                    late=dataclasses.replace(QueueMethod().late, share=0.25))
    assert stage_for(resolve_stages(m), 30).points == 0.5


def test_quantile_stages_cut_at_observed_reply_times() -> None:
    m = QueueMethod(mode=StageMode.QUANTILE)
    stages = resolve_stages(m, [1, 2, 3, 4, 5, 6, 7, 8])
    assert [(s.key, s.low, s.high) for s in stages[:4]] == [
        ("q1", 0, 2), ("q2", 3, 4), ("q3", 5, 6), ("q4", 7, 15)]
    assert stage_for(stages, 7).points == 0.5
    assert stage_for(stages, 16).kind is StageKind.LATE
    # With no reply at all every cut sits at the limit.
    assert [s.high for s in resolve_stages(m, [])[:4]] == [15, 15, 15, 15]


def test_timeliness_points_for_the_indicator_engine(cal: WorkCalendar) -> None:
    probes = [
        probe("x1", "2015-11-02T09:00+08:00", "2015-11-03T09:00+08:00", agency="甲市"),
        probe("x2", "2015-11-02T09:00+08:00", None, agency="乙市"),
    ]
    points = timeliness_points(probes, QueueMethod(max_points=3.0), cal)
    assert [(a.agency, a.points, a.max_points, a.probe_ids) for a in points] == [
        ("甲市", 3.0, 3.0, ("x1",)), ("乙市", 0.0, 3.0, ("x2",))]


def test_input_errors_name_the_probe(cal: WorkCalendar, method: QueueMethod) -> None:
    backwards = probe("p7", "2015-11-02T09:00+08:00", "2015-11-02T08:00+08:00")
    with pytest.raises(InputError) as info:
        assess_round([backwards], method, cal)
    assert str(info.value).startswith("probe p7: replied_at: replied_at is before sent_at")
    naive = ProbeTiming("p8", "甲市", datetime(2015, 11, 2, 9))
    with pytest.raises(Exception, match="probe p8: sent_at: a date-time without a time zone"):
        assess_round([naive], method, cal)
    twice = [probe("p9", "2015-11-02T09:00+08:00")] * 2
    with pytest.raises(InputError, match="the same probe id appears twice"):
        assess_round(twice, method, cal)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[queue_method]\ncombine = \"median\"\n",
         "queue_method.combine: unknown choice (expected mean | worst | best, got 'median')"),
        ("[queue_method]\nlimit_working_days = 10\n",
         "stages.max_working_days: the last stage must end at the limit"),
        ("[[stages]]\nkey = \"a\"\nlabel = \"a\"\nmax_working_days = 5\nshare = 0.5\n"
         "[[stages]]\nkey = \"b\"\nlabel = \"b\"\nmax_working_days = 15\nshare = 0.8\n",
         "stages.share: a slower stage earns more than a faster one"),
        ("[queue_method]\nlimit = 15\n", "queue_method.limit: unknown key"),
        ("[no_reply]\nkey = \"n\"\nlabel = \"n\"\nshare = 0.5\n",
         "no_reply.share: no reply cannot earn points"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "queue_method.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_queue_method(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@given(st.lists(st.one_of(st.none(), st.integers(0, 40)), min_size=1, max_size=30))
def test_points_stay_within_zero_and_the_maximum(days: list[int | None]) -> None:
    m = QueueMethod()
    stages = resolve_stages(m, [d for d in days if d is not None])
    points = [stage_for(stages, d).points for d in days]
    assert all(0 <= p <= m.max_points for p in points)
    assert 0 <= combine_points(m, points) <= m.max_points
    # Faster never earns less than slower.
    ordered = sorted(d for d in days if d is not None)
    earned = [stage_for(stages, d).points for d in ordered]
    assert earned == sorted(earned, reverse=True)
