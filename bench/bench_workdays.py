"""Benchmark: working days, deadline, stage and points for 1,000,000 (sent, replied) pairs.

Compares, in the same run, mailprobe's cumulative working-day index (vectorised) with
numpy.busday_count (holidays passed as holidays=, make-up weekend days added back with
searchsorted) and with the holidays package counting pair by pair on a sample.

Run: python bench/bench_workdays.py [--pairs N] [--sample N] [--repeat N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import holidays
import numpy as np
import numpy.typing as npt

from mailprobe.timeliness import QueueMethod, resolve_stages, stage_points_batch
from mailprobe.workdays import WorkCalendar, default_calendar

LIMIT = 15
FIRST, LAST = date(2014, 1, 1), date(2026, 12, 31)
SHANGHAI = 8 * 3600

Days = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Row:
    method: str
    pairs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds


def make_pairs(n: int, seed: int = 2015) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """UTC instants: sent over 2014-2026, replied 0-45 days later, or never (15%)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(FIRST, "s").astype(np.int64) - SHANGHAI
    # Every deadline must stay inside the known years, so sending stops in late November.
    stop = np.datetime64(date(2026, 11, 27), "s").astype(np.int64) - SHANGHAI
    sent = rng.integers(start, stop, n)
    # Delays spread evenly over 0-45 calendar days: around and beyond the 15-working-day limit.
    replied = sent + rng.integers(0, 45 * 86_400, n)
    replied = np.minimum(replied, np.datetime64(LAST, "s").astype(np.int64) + 86_399 - SHANGHAI)
    out = replied.astype("datetime64[s]")
    out[rng.random(n) < 0.15] = np.datetime64("NaT")
    return sent.astype("datetime64[s]"), out


def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def ours(cal: WorkCalendar, sent: npt.NDArray[Any], replied: npt.NDArray[Any]) -> tuple[
        Days, npt.NDArray[Any], npt.NDArray[np.float64]]:
    stages = resolve_stages(QueueMethod())
    batch = cal.count_batch(sent, replied, LIMIT)
    _, points = stage_points_batch(stages, batch.within)
    return batch.working_days, batch.deadline, points


def numpy_baseline(sent: npt.NDArray[Any], replied: npt.NDArray[Any],
                   busdays: np.busdaycalendar, makeup: npt.NDArray[Any]) -> Days:
    """Working days after the sending day up to the reply day, by numpy.busday_count."""
    answered = ~np.isnat(replied)
    s = ((sent.astype(np.int64) + SHANGHAI) // 86_400).astype("datetime64[D]")
    e_secs = np.where(answered, replied.astype(np.int64), sent.astype(np.int64))
    e = ((e_secs + SHANGHAI) // 86_400).astype("datetime64[D]")
    count = np.busday_count(s + 1, e + 1, busdaycal=busdays)
    extra = np.searchsorted(makeup, e, side="right") - np.searchsorted(makeup, s, side="right")
    return np.where(answered, count + extra, -1)


def numpy_calendar(cal: WorkCalendar) -> tuple[np.busdaycalendar, npt.NDArray[Any]]:
    """The same calendar as numpy wants it: weekday days off, and weekend working days."""
    off, makeup = [], []
    day = date(FIRST.year - 1, 1, 1)
    while day <= LAST:
        working = cal.is_working_day(day)
        if day.weekday() < 5 and not working:
            off.append(day)
        elif day.weekday() >= 5 and working:
            makeup.append(day)
        day += timedelta(days=1)
    return (np.busdaycalendar(holidays=np.array(off, dtype="datetime64[D]")),
            np.array(makeup, dtype="datetime64[D]"))


def local_dates(sent: npt.NDArray[Any], replied: npt.NDArray[Any]) -> list[tuple[date, date]]:
    out = []
    for s, r in zip(sent, replied, strict=True):
        end = s if np.isnat(r) else r
        s_day = ((s.astype(np.int64) + SHANGHAI) // 86_400).astype("datetime64[D]").item()
        e_day = ((end.astype(np.int64) + SHANGHAI) // 86_400).astype("datetime64[D]").item()
        out.append((s_day, e_day))
    return out


def holidays_per_pair(china: Any, pairs: list[tuple[date, date]]) -> list[int]:
    # get_working_days_count counts both ends and swaps reversed arguments: start the day after.
    return [china.get_working_days_count(s + timedelta(days=1), e) if e > s else 0
            for s, e in pairs]


def scalar_per_pair(cal: WorkCalendar, pairs: list[tuple[date, date]]) -> list[int]:
    return [cal.between(s, e).working_days for s, e in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    cal = default_calendar()
    sent, replied = make_pairs(args.pairs)
    busdays, makeup = numpy_calendar(cal)
    china = holidays.China(years=range(FIRST.year - 1, LAST.year + 2))

    working, _, _ = ours(cal, sent, replied)  # warm-up: builds the deadline table once
    baseline = numpy_baseline(sent, replied, busdays, makeup)
    assert np.array_equal(working, baseline), "mailprobe and numpy disagree"
    pairs = local_dates(sent[: args.sample], replied[: args.sample])
    assert holidays_per_pair(china, pairs) == scalar_per_pair(cal, pairs) == list(
        working[: args.sample].clip(0)), "mailprobe and holidays disagree"

    rows = [
        Row("mailprobe index, vectorised: days+deadline+stage+points", args.pairs,
            best_of(args.repeat, lambda: ours(cal, sent, replied))),
        Row("numpy.busday_count + make-up days (days only)", args.pairs,
            best_of(args.repeat, lambda: numpy_baseline(sent, replied, busdays, makeup))),
        Row("mailprobe WorkCalendar.between, per pair (Python)", len(pairs),
            best_of(1, lambda: scalar_per_pair(cal, pairs))),
        Row("holidays get_working_days_count, per pair", len(pairs),
            best_of(1, lambda: holidays_per_pair(china, pairs))),
    ]
    report(rows, cal)


def report(rows: list[Row], cal: WorkCalendar) -> None:
    width = max(len(r.method) for r in rows)
    print(f"calendar {cal.version}; pairs over {FIRST.year}-{LAST.year}, limit {LIMIT}")
    print(f"{'method':<{width}}  {'pairs':>9}  {'seconds':>8}  {'pairs/s':>13}")
    for r in rows:
        print(f"{r.method:<{width}}  {r.pairs:>9,}  {r.seconds:>8.4f}  {r.rate:>13,.0f}")
    vs_numpy = rows[0].rate / rows[1].rate
    vs_holidays = rows[0].rate / rows[3].rate
    print(f"mailprobe / numpy baseline: {vs_numpy:.1f}x (target >= 1x: "
          f"{'met' if vs_numpy >= 1 else 'NOT met'})")
    print(f"mailprobe / holidays per pair: {vs_holidays:,.0f}x (target > 100x: "
          f"{'met' if vs_holidays > 100 else 'NOT met'})")


if __name__ == "__main__":
    main()
