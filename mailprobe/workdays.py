"""Working days on the Chinese calendar, counted by the 民法典 rule for periods (arts. 201-203)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from holidays.countries.china import China, ChinaStaticHolidays

from mailprobe.calendar_config import (
    CalendarConfig,
    Correction,
    KnownYear,
    load_calendar_config,
)
from mailprobe.errors import CalendarError, ConfigError, InputError
from mailprobe.paths import config_dir

__all__ = [
    "BatchCount",
    "CalendarConfig",
    "Correction",
    "DayKind",
    "DayNote",
    "Deadline",
    "Explanation",
    "KnownYear",
    "When",
    "WorkCalendar",
    "WorkdayCount",
    "default_calendar",
    "load_calendar",
    "load_calendar_config",
    "package_known_years",
    "parse_when",
]

When = date | datetime
"""A calendar date (already local to the calendar) or an instant (a datetime)."""

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SECONDS_PER_DAY = 86_400
_NAT = np.iinfo(np.int64).min  # how numpy stores NaT
_HOLIDAYS_VERSION = version("holidays")
_DATE_IN_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")
_WEEKDAYS = "一二三四五六日"


class DayKind(StrEnum):
    """Why a day is or is not a working day."""

    WORKDAY = "workday"
    MAKEUP_WORKDAY = "makeup_workday"
    WEEKEND = "weekend"
    HOLIDAY = "holiday"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]

    @property
    def working(self) -> bool:
        return self in (DayKind.WORKDAY, DayKind.MAKEUP_WORKDAY)


_KIND_LABELS = {
    DayKind.WORKDAY: "工作日",
    DayKind.MAKEUP_WORKDAY: "调休上班日",
    DayKind.WEEKEND: "周末",
    DayKind.HOLIDAY: "节假日",
}
_KIND_CODES = tuple(DayKind)


def package_known_years() -> frozenset[int]:
    """Years for which holidays.China ships the State Council's official schedule.

    Outside these years the package estimates holidays from the fixed rules and has no
    make-up working days, which is a guess; the years of its substitution table are the ones
    it really knows.
    """
    table = getattr(ChinaStaticHolidays, "special_public_holidays", {})
    return frozenset(year for year in table if isinstance(year, int))


def _year_ranges(years: frozenset[int]) -> str:
    spans: list[str] = []
    for year in sorted(years):
        if spans and spans[-1].endswith(str(year - 1)):
            spans[-1] = spans[-1].split("-")[0] + f"-{year}"
        else:
            spans.append(str(year))
    return ", ".join(spans) or "none"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkdayCount:
    """Working days after the day of ``start`` up to and including the day of ``end``.

    ``within`` is the smallest N whose deadline ``end`` met (no later than 24:00 of the Nth
    working day). It equals ``working_days`` unless ``end`` falls on a rest day after the
    start day: then the last counted working day had already ended, so it is one more.
    In-time checks and stages use ``within``.
    """

    start: date
    end: date
    working_days: int
    within: int
    calendar_version: str


@dataclass(frozen=True, slots=True)
class Deadline:
    """The Nth working day after ``start``; it ends at 24:00 local time (``ends_at``, exclusive)."""

    start: date
    n: int
    last_day: date
    ends_at: datetime
    calendar_version: str


@dataclass(frozen=True, slots=True)
class DayNote:
    """One day of an explanation: what it is and whether it was counted."""

    day: date
    kind: DayKind
    counted: bool
    number: int | None
    name: str | None
    source: str | None

    @property
    def weekday(self) -> str:
        return "周" + _WEEKDAYS[self.day.weekday()]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every day after the start day up to the end day, with the reason it counted or not."""

    start: date
    end: date
    working_days: int
    days: tuple[DayNote, ...]
    calendar_version: str

    @property
    def makeup_workdays(self) -> tuple[date, ...]:
        return tuple(n.day for n in self.days if n.kind is DayKind.MAKEUP_WORKDAY)

    @property
    def skipped(self) -> tuple[DayNote, ...]:
        return tuple(n for n in self.days if not n.counted)


@dataclass(frozen=True, slots=True, eq=False)
class BatchCount:
    """Vectorised results for arrays of (sent, replied) instants.

    ``working_days`` and ``within`` (see WorkdayCount) are -1 where there was no reply
    (NaT); ``deadline`` is the limit-th working day after sending; ``in_time`` is False
    where there was no reply.
    """

    working_days: npt.NDArray[np.int64]
    within: npt.NDArray[np.int64]
    deadline: npt.NDArray[np.datetime64]
    in_time: npt.NDArray[np.bool_]
    calendar_version: str


# --- the calendar -----------------------------------------------------------------------------


def parse_when(text: str) -> When:
    """An ISO date (2015-11-02) or date-time (2015-11-02T09:30+08:00, Z allowed)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            "not an ISO date or date-time",
            expected="2015-11-02 or 2015-11-02T09:30+08:00", got=text,
        ) from None


@dataclass(frozen=True, slots=True)
class _Days:
    """Per-day tables over the calendar's range; index 0 is the day before the first year."""

    base: int
    kinds: npt.NDArray[np.int8]
    rest: npt.NDArray[np.int64]
    cum: npt.NDArray[np.int64]
    unknown_cum: npt.NDArray[np.int64]
    names: dict[date, str]
    sources: dict[date, str]


class WorkCalendar:
    """holidays.China plus calendar.toml, with a cumulative working-day index for O(1) counts.

    ``between`` and ``deadline`` follow the 民法典 rule: the day of the start instant is not
    counted, counting begins the next day, and the Nth working day lasts until 24:00 local
    time. Dates are taken in ``zone`` whatever zone an instant was written in.
    """

    def __init__(self, config: CalendarConfig | None = None) -> None:
        self.config = config or CalendarConfig()
        self.zone = ZoneInfo(self.config.zone)
        self.input_zone: tzinfo | None = (
            ZoneInfo(self.config.input_zone) if self.config.input_zone else None
        )
        declared = {k.year for k in self.config.known_years}
        self.known_years = package_known_years() | frozenset(declared)
        self.version = f"holidays-{_HOLIDAYS_VERSION}+cal.{self.config.digest()}"
        self._days, self.redundant_corrections = _build_days(self.config, self.known_years)
        self._last = len(self._days.cum) - 1
        self._has_gaps = bool(self._days.unknown_cum[self._last] - self._days.unknown_cum[0])
        self._midnights, self._fixed_offset = _midnights(self._days.base, self._last, self.zone)
        self._tables: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], int]] = {}

    def with_input_zone(self, zone: str | None) -> WorkCalendar:
        """The same calendar, taking naive date-times in ``zone`` (None refuses them)."""
        try:
            input_zone = ZoneInfo(zone) if zone else None
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("unknown time zone", location="input zone",
                              expected="an IANA zone such as Asia/Shanghai", got=zone) from None
        # The day tables and the deadline cache do not depend on the input zone: share them.
        clone = object.__new__(WorkCalendar)
        clone.__dict__.update(self.__dict__)
        clone.config = dataclasses.replace(self.config, input_zone=zone or None)
        clone.input_zone = input_zone
        return clone

    # -- single values --

    def aware(self, when: datetime) -> datetime:
        """``when`` with a zone: naive date-times take the input zone, or are refused."""
        if when.tzinfo is not None and when.utcoffset() is not None:
            return when
        if self.input_zone is None:
            raise CalendarError(
                "a date-time without a time zone is ambiguous",
                expected="an offset such as +08:00 or Z",
                got=when.isoformat(),
                hint="write e.g. 2015-11-02T09:30+08:00, or set [calendar] input_zone "
                f"in {self.config.source} (CLI: --input-zone Asia/Shanghai)",
            )
        return when.replace(tzinfo=self.input_zone)

    def local_date(self, when: When) -> date:
        """The calendar date of ``when`` in the calendar's zone."""
        if not isinstance(when, datetime):
            return when
        return self.aware(when).astimezone(self.zone).date()

    def day_kind(self, day: date) -> DayKind:
        i = self._index(day)
        if self._first_unknown_year(i - 1, i) is not None:
            raise self._unknown_year_error(day.year, f"looking up {day}")
        return _KIND_CODES[int(self._days.kinds[i])]

    def is_working_day(self, day: date) -> bool:
        return self.day_kind(day).working

    def weekend_workdays(self, year: int) -> tuple[date, ...]:
        """The weekend days declared working days (调休上班) in ``year``."""
        start = self._index(date(year, 1, 1))
        stop = self._index(date(year, 12, 31))
        if self._first_unknown_year(start - 1, stop) is not None:
            raise self._unknown_year_error(year, f"listing the make-up working days of {year}")
        codes = self._days.kinds[start : stop + 1]
        hits = np.flatnonzero(codes == _KIND_CODES.index(DayKind.MAKEUP_WORKDAY))
        return tuple(self._date_at(start + int(k)) for k in hits)

    def between(self, start: When, end: When) -> WorkdayCount:
        """Working days from ``start`` to ``end``: same day = 0, next working day = 1.

        ``within`` on the result is the number a reply's timeliness is judged by.
        """
        s, e = self._span(start, end)
        count = self._count(s, e)
        rest_day = e > s and bool(self._days.rest[self._index(e)])
        return WorkdayCount(s, e, count, count + rest_day, self.version)

    def deadline(self, start: When, n: int) -> Deadline:
        """The Nth working day after the day of ``start``; a reply on it is in time."""
        if n < 0:
            raise CalendarError("a period cannot be negative", expected="N >= 0", got=n)
        s = self.local_date(start)
        last = s if n == 0 else self._nth_after(s, n)
        ends_at = datetime.combine(last + timedelta(days=1), time(0), tzinfo=self.zone)
        return Deadline(s, n, last, ends_at, self.version)

    def explain(self, start: When, end: When) -> Explanation:
        """Which days after ``start`` were counted or skipped, and why."""
        s, e = self._span(start, end)
        total = self._count(s, e)
        notes: list[DayNote] = []
        number = 0
        for i in range(self._index(s) + 1, self._index(e) + 1):
            day = self._date_at(i)
            kind = _KIND_CODES[int(self._days.kinds[i])]
            number += kind.working
            notes.append(DayNote(
                day, kind, kind.working, number if kind.working else None,
                self._days.names.get(day), self._days.sources.get(day),
            ))
        return Explanation(s, e, total, tuple(notes), self.version)

    # -- arrays --

    def local_days(self, instants: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
        """Calendar-zone day numbers (days since 1970-01-01) of UTC instants."""
        return self._indices(_seconds(instants)) + (self._days.base - _EPOCH_ORDINAL)

    def count_batch(
        self,
        sent: npt.NDArray[np.datetime64],
        replied: npt.NDArray[np.datetime64],
        limit: int,
    ) -> BatchCount:
        """Working days, limit-th working day and in-time flags for arrays of UTC instants.

        ``replied`` is NaT where there was no reply. Any pair the scalar API would refuse
        (reply before sending, unknown year) raises the same error, naming the pair.
        """
        secs_s, secs_r = _seconds(sent), _seconds(replied)
        answered = secs_r != _NAT
        s = self._indices(secs_s)
        e = np.where(answered, self._indices(secs_r), s)
        self._check_batch(secs_s, secs_r, s, e, answered, limit)
        cum = self._days.cum
        count = np.take(cum, e) - np.take(cum, s)
        within = count + (np.take(self._days.rest, e) & (e > s))
        last_index = np.take(self._deadline_table(limit)[0], s)
        offset = self._days.base - _EPOCH_ORDINAL
        return BatchCount(
            working_days=np.where(answered, count, -1),
            within=np.where(answered, within, -1),
            deadline=(last_index + offset).view("datetime64[D]"),
            in_time=answered & (e <= last_index),
            calendar_version=self.version,
        )

    # -- internals --

    def _index(self, day: date) -> int:
        return day.toordinal() - self._days.base

    def _date_at(self, index: int) -> date:
        return date.fromordinal(index + self._days.base)

    def _span(self, start: When, end: When) -> tuple[date, date]:
        s, e = self.local_date(start), self.local_date(end)
        same_day_earlier = (
            e == s and isinstance(start, datetime) and isinstance(end, datetime)
            and self.aware(end) < self.aware(start)
        )
        if e < s or same_day_earlier:
            raise CalendarError(
                "the end is before the start", expected=f"an end at or after {start}", got=str(end)
            )
        return s, e

    def _count(self, s: date, e: date) -> int:
        if s == e:
            return 0
        si, ei = self._index(s), self._index(e)
        year = self._first_unknown_year(si, ei)
        if year is not None:
            raise self._unknown_year_error(year, f"counting from {s} to {e}")
        return int(self._days.cum[ei] - self._days.cum[si])

    def _nth_after(self, s: date, n: int) -> date:
        si = self._index(s)
        cum = self._days.cum
        if 0 <= si <= self._last:
            di = int(np.searchsorted(cum, cum[si] + n, side="left"))
            year = self._first_unknown_year(si, di)
            if year is None:
                return self._date_at(di)
        else:
            year = self._first_unknown_year(si, si + 1)
        raise self._unknown_year_error(year or s.year, f"counting {n} working days from {s}")

    def _first_unknown_year(self, si: int, ei: int) -> int | None:
        """The year of the first day in (si, ei] the calendar does not know, if any."""
        if ei <= si:
            return None
        if si < 0 or si >= self._last:
            return self._date_at(si + 1).year
        unknown = self._days.unknown_cum
        seen = unknown[si]
        if unknown[min(ei, self._last)] != seen:
            first = int(np.searchsorted(unknown, seen + 1, side="left"))
            return self._date_at(first).year
        return self._date_at(self._last + 1).year if ei > self._last else None

    def _unknown_year_error(self, year: int, what: str) -> CalendarError:
        return CalendarError(
            f"{what} runs into {year}, a year without the official schedule of holidays "
            f"and make-up working days (holidays {_HOLIDAYS_VERSION} would only guess it)",
            source=self.config.source,
            location="known_years",
            expected=f"dates in the known years {_year_ranges(self.known_years)}",
            got=year,
            hint=f"once the State Council notice for {year} is out, add [[known_years]] "
            f"year = {year} with its source, plus a [[days_off]] or [[working_days]] entry "
            f"for every day of the notice the package lacks, to {self.config.source}",
        )

    def _indices(self, secs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Calendar indices of UTC seconds (NaT gives garbage; callers mask it)."""
        if self._fixed_offset is not None:
            shift = self._fixed_offset - (self._days.base - _EPOCH_ORDINAL) * _SECONDS_PER_DAY
            return (secs + shift) // _SECONDS_PER_DAY
        # A zone with offset changes: find the local midnight each instant follows.
        return np.searchsorted(self._midnights, secs, side="right").astype(np.int64) - 1

    def _deadline_table(self, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], int]:
        """For every start index: its Nth working day, whether that is known, and the last
        start index before which every deadline is known."""
        if n < 0:
            raise CalendarError("a period cannot be negative", expected="N >= 0", got=n)
        if n not in self._tables:
            cum, unknown = self._days.cum, self._days.unknown_cum
            if n == 0:
                target = np.arange(len(cum), dtype=np.int64)
            else:
                target = np.searchsorted(cum, cum + n, side="left").astype(np.int64)
            clipped = np.minimum(target, self._last)
            ok = (target <= self._last) & (unknown[clipped] == unknown)
            until = int(np.argmin(ok)) - 1 if not ok.all() else self._last
            self._tables[n] = (np.where(ok, target, 0), ok, until)
        return self._tables[n]

    def _check_batch(
        self,
        secs_s: npt.NDArray[np.int64],
        secs_r: npt.NDArray[np.int64],
        s: npt.NDArray[np.int64],
        e: npt.NDArray[np.int64],
        answered: npt.NDArray[np.bool_],
        limit: int,
    ) -> None:
        if len(s) == 0:
            return
        _, ok, until = self._deadline_table(limit)
        fine = bool(s.min() >= 0 and s.max() <= until and e.max() <= self._last)
        fine = fine and not (answered & (secs_r < secs_s)).any()
        if fine and self._has_gaps:
            unknown = self._days.unknown_cum
            fine = bool(ok[s].all() and (unknown[e] == unknown[s]).all())
        if fine:
            return
        # Slow path, only to name the first refused pair.
        inside = (s >= 0) & (s <= self._last) & (e <= self._last)
        si, ei = np.where(inside, s, 0), np.where(inside, e, 0)
        unknown = self._days.unknown_cum
        bad = ~inside | (answered & (secs_r < secs_s)) | ~ok[si] | (unknown[ei] != unknown[si])
        i = int(np.argmax(bad))
        self._raise_for_pair(i, secs_s[i], int(secs_r[i]) if answered[i] else None, limit)

    def _raise_for_pair(self, i: int, sent: int, replied: int | None, limit: int) -> None:
        """Redo one refused pair with the scalar API, so the error reads the same."""
        where = f"pair {i}"
        if sent == _NAT:
            raise CalendarError("no sending instant", location=where, got="NaT")
        try:
            self.deadline(_utc(sent), limit)
            if replied is not None:
                self.between(_utc(sent), _utc(replied))
        except CalendarError as exc:
            raise CalendarError(
                exc.message, source=exc.source, location=where, expected=exc.expected,
                got=exc.got, hint=exc.hint,
            ) from None
        raise CalendarError("cannot be counted", location=where, got=str(sent))  # pragma: no cover

    def __repr__(self) -> str:
        return f"WorkCalendar(zone={self.config.zone!r}, version={self.version!r})"


def _utc(seconds: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=int(seconds))


def _seconds(instants: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """UTC seconds since 1970 as int64, without a copy when already datetime64[s]."""
    return np.asarray(instants, dtype="datetime64[s]").view(np.int64)


def _build_days(
    config: CalendarConfig, known: frozenset[int]
) -> tuple[_Days, tuple[Correction, ...]]:
    years = known | {c.day.year for c in config.corrections}
    if not years:
        raise ConfigError(
            "the calendar knows no year at all", source=config.source, location="known_years",
            hint="declare the years you have encoded with [[known_years]]",
        )
    first, last = min(years), max(years)
    base = date(first, 1, 1).toordinal() - 1
    size = date(last, 12, 31).toordinal() - base + 1
    # One year beyond: a notice may declare a make-up working day in the previous December.
    china = cast(Any, China)(years=range(first, last + 2), language="zh_CN")  # untyped __init__
    kinds = np.zeros(size, dtype=np.int8)
    names: dict[date, str] = {}
    for i in range(1, size):
        day = date.fromordinal(base + i)
        kinds[i] = _KIND_CODES.index(_package_kind(china, day))
        if day in china:
            names[day] = str(china[day])
    names.update(_makeup_names(names, kinds, base))
    sources, redundant = _apply_corrections(config.corrections, kinds, names, base)
    unknown = np.array([True] + [
        date.fromordinal(base + i).year not in known for i in range(1, size)
    ])
    working = np.isin(kinds, [_KIND_CODES.index(k) for k in _KIND_CODES if k.working])
    working[0] = False  # the day before the range is never counted
    cum = np.cumsum(working, dtype=np.int64)
    rest = (~working).astype(np.int64)
    days = _Days(base, kinds, rest, cum, np.cumsum(unknown, dtype=np.int64), names, sources)
    return days, redundant


def _apply_corrections(
    corrections: tuple[Correction, ...], kinds: npt.NDArray[np.int8], names: dict[date, str],
    base: int,
) -> tuple[dict[date, str], tuple[Correction, ...]]:
    """Write the corrections over the package's days; return their sources and the no-ops."""
    sources: dict[date, str] = {}
    redundant = []
    for c in corrections:
        i = c.day.toordinal() - base
        if _KIND_CODES[int(kinds[i])].working == c.working:
            redundant.append(c)
        kinds[i] = _KIND_CODES.index(_corrected_kind(c))
        names[c.day], sources[c.day] = c.name, c.source
    return sources, tuple(redundant)


def _package_kind(china: Any, day: date) -> DayKind:
    working = bool(china.is_working_day(day))
    weekend = day.weekday() >= 5
    if working:
        return DayKind.MAKEUP_WORKDAY if weekend else DayKind.WORKDAY
    return DayKind.HOLIDAY if day in china else DayKind.WEEKEND


def _corrected_kind(c: Correction) -> DayKind:
    weekend = c.day.weekday() >= 5
    if c.working:
        return DayKind.MAKEUP_WORKDAY if weekend else DayKind.WORKDAY
    return DayKind.HOLIDAY


def _makeup_names(
    names: Mapping[date, str], kinds: npt.NDArray[np.int8], base: int
) -> dict[date, str]:
    """Name each make-up working day after the day off it pays for ("由 X 调休")."""
    makeup = _KIND_CODES.index(DayKind.MAKEUP_WORKDAY)
    found: dict[date, str] = {}
    for day_off, name in names.items():
        for text in _DATE_IN_NAME.findall(name):
            worked = date.fromisoformat(text)
            i = worked.toordinal() - base
            if 0 < i < len(kinds) and kinds[i] == makeup:
                found[worked] = f"调休上班（{day_off.isoformat()} 休息）"
    return found


def _midnights(base: int, last: int, zone: ZoneInfo) -> tuple[npt.NDArray[np.int64], int | None]:
    """UTC seconds of each local midnight of the range, and the offset if it never changes."""
    stamps = np.array([
        int(datetime.combine(date.fromordinal(base + i), time(0), tzinfo=zone).timestamp())
        for i in range(last + 2)
    ], dtype=np.int64)
    steps = np.diff(stamps)
    if np.all(steps == _SECONDS_PER_DAY):
        return stamps, int((base - _EPOCH_ORDINAL) * _SECONDS_PER_DAY - stamps[0])
    return stamps, None


def load_calendar(
    path: str | Path | None = None,
    *,
    province: str | None = None,
    input_zone: str | None = None,
) -> WorkCalendar:
    """The work calendar from calendar.toml (config/calendar.toml by default)."""
    calendar = WorkCalendar(load_calendar_config(path, province=province))
    return calendar.with_input_zone(input_zone) if input_zone else calendar


@lru_cache(maxsize=4)
def _cached_default(path: str, mtime: float) -> WorkCalendar:
    return load_calendar(path if mtime >= 0 else None)


def default_calendar() -> WorkCalendar:
    """The calendar of config/calendar.toml, built once (and again if the file changes)."""
    file = config_dir() / "calendar.toml"
    mtime = file.stat().st_mtime if file.exists() else -1.0
    return _cached_default(str(file), mtime)
