"""Round schedules (schedules/<round>.toml): who is probed, by whom, when and how fast."""

from __future__ import annotations

import math
import re
import tomllib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailprobe.calendar_config import as_date
from mailprobe.directory import ChannelKind
from mailprobe.errors import ConfigError
from mailprobe.sheets import Level

if TYPE_CHECKING:
    from mailprobe.workdays import WorkCalendar

__all__ = [
    "AgencySelection",
    "Limits",
    "OfficeHours",
    "OfficeTime",
    "Quota",
    "Schedule",
    "load_schedule",
]

DEFAULT_ZONE = "Asia/Shanghai"
_ROOM_HINT = "raise the limit, lengthen the window or send fewer probes"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*[-–~]\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True, slots=True)
class OfficeHours:
    """One span of local office time, [start, end): a probe may go out at start, not at end."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class AgencySelection:
    """Which agencies a round probes: filters that all apply.

    Empty ``levels`` means the levels that have a quota; empty ``cities`` or ``names``: any.
    """

    levels: tuple[Level, ...] = ()
    cities: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    opened_only: bool = True  # only sites that exist (未开通 counties are left out)


@dataclass(frozen=True, slots=True)
class Quota:
    """How many probes each selected agency of ``level`` gets on channels of ``kind``."""

    level: Level
    kind: ChannelKind
    per_agency: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Pacing. Rates hold in every sliding window: any 60 minutes, any 24 hours.

    ``min_gap_working_hours`` counts office time only (minutes inside office hours on
    working days): nights, weekends and holidays do not wear it down, and 6 means one
    working day with the 2015 office hours. Per-domain limits group channels by their mail
    domain (a web form by its host), because county bureaus often share their city's server.
    """

    min_gap_working_hours: float = 6.0
    per_domain_per_hour: int = 2
    per_domain_per_day: int = 8
    overall_per_hour: int = 20
    overall_per_day: int | None = None

    @property
    def min_gap_seconds(self) -> int:
        return round(self.min_gap_working_hours * 3600)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A round, validated: every field is checked here, so a Schedule built in code is safe too."""

    id: str
    name: str
    start: date
    end: date
    seed: int
    personas: tuple[str, ...]
    templates: tuple[str, ...]
    quotas: tuple[Quota, ...]
    agencies: AgencySelection = AgencySelection()
    office_hours: tuple[OfficeHours, ...] = (
        OfficeHours(time(9), time(12)), OfficeHours(time(14, 30), time(17, 30)),
    )
    time_zone: str = DEFAULT_ZONE
    jitter_minutes: int = 15
    limits: Limits = Limits()
    reply_window_working_days: int = 15
    previous_rounds: tuple[str, ...] = ()
    source: str = field(default="<schedule>", compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def quotas_for(self, level: Level) -> tuple[Quota, ...]:
        return tuple(q for q in self.quotas if q.level is level and q.per_agency > 0)

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels probed: those selected, or else every level with a quota."""
        return self.agencies.levels or tuple(
            dict.fromkeys(q.level for q in self.quotas if q.per_agency > 0))

    def office_time(self, calendar: WorkCalendar) -> OfficeTime:
        """The window's office hours on the calendar's working days (dates in ``time_zone``)."""
        return OfficeTime.of(self, calendar)

    def check_room(self, office: OfficeTime, probes: int, busiest_domain: tuple[str, int],
                   busiest_agency: tuple[str, int]) -> None:
        """Refuse a round that no timing can fit, naming the limit that binds.

        These are necessary conditions only (each hour block, each working day, each gap
        holds so many probes); the planner reports what binds when a tighter fit fails.
        """
        lim, hours, days = self.limits, office.hour_blocks, len(office.days)
        if office.total == 0:
            raise self.error("the window has no working day", "window.end",
                             f"working days between {self.start} and {self.end}", str(self.end))
        overall = f"{_count(probes)} in all"
        per_domain = busiest_domain[1]
        domain = f"{_count(per_domain)} to {busiest_domain[0]}"
        for key, what, need, rate, span, unit in (
            ("overall_per_hour", overall, probes, lim.overall_per_hour, hours, "office hours"),
            ("overall_per_day", overall, probes, lim.overall_per_day, days, "working days"),
            ("per_domain_per_hour", domain, per_domain, lim.per_domain_per_hour, hours,
             "office hours"),
            ("per_domain_per_day", domain, per_domain, lim.per_domain_per_day, days,
             "working days"),
        ):
            if rate is not None and need > rate * span:
                raise self.error(
                    f"the round does not fit its window: {what} but limits.{key} = {rate} "
                    f"allows at most {rate * span} over {span} {unit}", f"limits.{key}",
                    f"at most {rate * span}", need, _ROOM_HINT)
        agency, most = busiest_agency
        if lim.min_gap_seconds and (most - 1) * lim.min_gap_seconds >= office.total:
            raise self.error(
                f"the round does not fit its window: {_count(most)} to {agency} "
                f"{lim.min_gap_working_hours:g} working hours apart need more than the window's "
                f"{office.total / 3600:g} office hours", "limits.min_gap_working_hours",
                f"less than {office.total / 3600 / max(most - 1, 1):g} hours", most, _ROOM_HINT)

    def error(self, message: str, key: str, expected: str | None = None, got: object = None,
              hint: str | None = None) -> ConfigError:
        """A ConfigError naming this schedule's file and ``key``."""
        return ConfigError(message, source=self.source, location=key, expected=expected, got=got,
                           hint=hint)


class OfficeTime:
    """A window's office time laid end to end: office second ``o`` <-> UTC second ``t``.

    Office second 0 is the first office minute of the window; nights, weekends and holidays
    take no office time, so a gap measured here is a gap in working hours. Instants are
    whole UTC seconds since 1970 (``int(datetime.timestamp())``), which keeps the planner's
    arithmetic exact and fast.
    """

    def __init__(self, spans: Sequence[tuple[int, int]], days: Sequence[date]) -> None:
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]
        self.offsets: list[int] = []
        total = 0
        for a, b in spans:
            self.offsets.append(total)
            total += b - a
        self.total = total
        self.days = tuple(days)
        self.hour_blocks = sum(math.ceil((b - a) / 3600) for a, b in spans)
        self.beyond = self.ends[-1] if spans else 0  # the first second after all office time

    @classmethod
    def of(cls, s: Schedule, calendar: WorkCalendar) -> OfficeTime:
        zone = s.zone
        spans: list[tuple[int, int]] = []
        days: list[date] = []
        day = s.start
        while day <= s.end:
            if calendar.is_working_day(day):
                days.append(day)
                for hours in s.office_hours:
                    a = datetime.combine(day, hours.start, tzinfo=zone).timestamp()
                    b = datetime.combine(day, hours.end, tzinfo=zone).timestamp()
                    spans.append((int(a), int(b)))
            day += timedelta(days=1)
        return cls(spans, days)

    def at(self, o: int) -> int:
        """The instant of office second ``o`` (``beyond`` once the window's office time is out)."""
        if o >= self.total:
            return self.beyond
        i = bisect_right(self.offsets, o) - 1
        return self.starts[i] + (o - self.offsets[i])

    def offset(self, t: int) -> int:
        """The office second of ``t``, an instant inside office time."""
        i = bisect_right(self.starts, t) - 1
        return self.offsets[i] + (t - self.starts[i])

    def next_office(self, t: int) -> int | None:
        """``t`` if it is office time, else the next office second, or None after the window."""
        i = bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return t
        return self.starts[i + 1] if i + 1 < len(self.starts) else None

    def contains(self, when: datetime) -> bool:
        """Whether an aware instant falls inside the window's office time."""
        t = math.floor(when.timestamp())
        return self.next_office(t) == t


def _count(n: int) -> str:
    return f"{n} probe" if n == 1 else f"{n} probes"


# --- validation of the values (shared by the loader and by code that builds a Schedule) -------


def _validate(s: Schedule) -> None:
    if not _ID.fullmatch(s.id):
        raise s.error("bad round id", "round.id", "letters, digits, '.', '_' or '-'", s.id)
    if not s.name.strip():
        raise s.error("empty round name", "round.name", "a name such as 2015年第一轮检查", s.name)
    if s.end < s.start:
        raise s.error("the window ends before it starts", "window.end",
                      f"a date on or after window.start ({s.start})", str(s.end))
    try:
        ZoneInfo(s.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise s.error("unknown time zone", "window.time_zone",
                      "an IANA zone such as Asia/Shanghai", s.time_zone) from None
    _validate_hours(s)
    if s.jitter_minutes < 0:
        raise s.error("negative jitter", "window.jitter_minutes", "minutes >= 0", s.jitter_minutes)
    _validate_ids(s, s.personas, "assign.personas")
    _validate_ids(s, s.templates, "assign.templates")
    _validate_quotas(s)
    _validate_limits(s)
    if s.reply_window_working_days < 1:
        raise s.error("bad reply window", "round.reply_window_working_days", "an integer >= 1",
                      s.reply_window_working_days)
    if s.id in s.previous_rounds:
        raise s.error("a round cannot precede itself", "round.previous_rounds",
                      "ids of earlier rounds", s.id)


def _validate_hours(s: Schedule) -> None:
    if not s.office_hours:
        raise s.error("no office hours", "window.office_hours", 'spans such as "09:00-12:00"', [])
    previous: OfficeHours | None = None
    for span in s.office_hours:
        if span.end <= span.start:
            raise s.error("office hours end before they start", "window.office_hours",
                          "HH:MM-HH:MM with the end after the start", str(span))
        if previous is not None and span.start < previous.end:
            raise s.error("office hours overlap or are out of order", "window.office_hours",
                          "spans in time order, not overlapping", f"{previous}, {span}")
        previous = span


def _validate_ids(s: Schedule, ids: tuple[str, ...], key: str) -> None:
    if not ids:
        raise s.error("empty list", key, "at least one id", [])
    seen: set[str] = set()
    for item in ids:
        if not item.strip():
            raise s.error("empty id", key, "non-empty ids", item)
        if item in seen:
            raise s.error("an id is listed twice", key, "each id once", item)
        seen.add(item)


def _validate_quotas(s: Schedule) -> None:
    seen: set[tuple[Level, ChannelKind]] = set()
    for q in s.quotas:
        key = f"probes.{q.level.value}.{q.kind.value}"
        if q.per_agency < 0:
            raise s.error("negative count", key, "probes per agency >= 0", q.per_agency)
        if (q.level, q.kind) in seen:
            raise s.error("a channel kind is given twice", key, "each kind once per level")
        seen.add((q.level, q.kind))
    if not any(q.per_agency for q in s.quotas):
        raise s.error("the round sends nothing", "probes", "[probes.<level>] tables with counts")
    for level in s.agencies.levels:
        if not s.quotas_for(level):
            raise s.error(f"level {level.value} is selected but gets no probes", "agencies.levels",
                          f"a [probes.{level.value}] table, or drop the level", level.value)


def _validate_limits(s: Schedule) -> None:
    lim = s.limits
    if lim.min_gap_working_hours < 0:
        raise s.error("negative gap", "limits.min_gap_working_hours", "hours >= 0",
                      lim.min_gap_working_hours)
    rates = {
        "per_domain_per_hour": lim.per_domain_per_hour,
        "per_domain_per_day": lim.per_domain_per_day,
        "overall_per_hour": lim.overall_per_hour,
        "overall_per_day": lim.overall_per_day,
    }
    for key, value in rates.items():
        if value is not None and value < 1:
            raise s.error("bad rate limit", f"limits.{key}", "an integer >= 1", value)


# --- the file -----------------------------------------------------------------------------------

_KEYS: Mapping[str, set[str]] = {
    "round": {"id", "name", "seed", "previous_rounds", "reply_window_working_days"},
    "window": {"start", "end", "time_zone", "office_hours", "jitter_minutes"},
    "agencies": {"levels", "cities", "names", "opened_only"},
    "assign": {"personas", "templates"},
    "limits": {"min_gap_working_hours", "per_domain_per_hour", "per_domain_per_day",
               "overall_per_hour", "overall_per_day"},
    "probes": set(),  # checked per level
}
_REQUIRED = ("round", "window", "assign", "probes")


class _Reader:
    """Typed access to the raw TOML that raises ConfigErrors naming the file and key."""

    def __init__(self, raw: Mapping[str, Any], source: str) -> None:
        self.raw, self.source = raw, source

    def fail(self, message: str, key: str, expected: str, got: object = None) -> ConfigError:
        return ConfigError(message, source=self.source, location=key, expected=expected, got=got)

    def table(self, name: str) -> Mapping[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise self.fail("not a table", name, f"a [{name}] table", type(value).__name__)
        allowed = _KEYS[name]
        unknown = sorted(set(value) - allowed) if allowed else []
        if unknown:
            raise self.fail("unknown key", f"{name}.{unknown[0]}",
                            "one of " + ", ".join(sorted(allowed)), unknown[0])
        return value

    def text(self, t: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = t.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail("missing or empty text", f"{where}.{key}", "a non-empty string", value)
        return value.strip()

    def integer(self, t: Mapping[str, Any], key: str, where: str, default: int | None) -> int:
        value = t.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail("not an integer", f"{where}.{key}", "a whole number", value)
        return value

    def number(self, t: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = t.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail("not a number", f"{where}.{key}", "a number", value)
        return float(value)

    def day(self, t: Mapping[str, Any], key: str, where: str) -> date:
        value = t.get(key)
        day = as_date(value)
        if day is not None:
            return day
        raise self.fail("not a date", f"{where}.{key}", "a date such as 2015-11-02", value)

    def strings(self, t: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = t.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail("not a list of strings", f"{where}.{key}", 'e.g. ["a", "b"]', value)
        return tuple(v.strip() for v in value)


def _levels(r: _Reader, names: tuple[str, ...], key: str) -> tuple[Level, ...]:
    levels = []
    for name in names:
        level = Level.parse(name)
        if level is None:
            raise r.fail("unknown level", key, "city/市级 or county/县级", name)
        levels.append(level)
    return tuple(levels)


def _quotas(r: _Reader) -> tuple[Quota, ...]:
    quotas = []
    for level_name, kinds in r.table("probes").items():
        level = Level.parse(level_name)
        if level is None:
            raise r.fail("unknown level", f"probes.{level_name}",
                         "[probes.city] or [probes.county]", level_name)
        if not isinstance(kinds, dict):
            raise r.fail("not a table", f"probes.{level_name}", "kind = count entries", kinds)
        for kind_name in kinds:
            kind = ChannelKind.parse(kind_name)
            if kind is None:
                raise r.fail("unknown channel kind", f"probes.{level_name}.{kind_name}",
                             "consultation, complaint, supervision or mailbox", kind_name)
            count = r.integer(kinds, kind_name, f"probes.{level_name}", None)
            quotas.append(Quota(level, kind, count))
    return tuple(quotas)


def _office_hours(r: _Reader, window: Mapping[str, Any]) -> tuple[OfficeHours, ...] | None:
    if "office_hours" not in window:
        return None
    spans = []
    for text in r.strings(window, "office_hours", "window"):
        m = _HOURS.fullmatch(text)
        try:
            if m is None:
                raise ValueError(text)
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            spans.append(OfficeHours(time(h1, m1), time(h2, m2)))
        except ValueError:
            raise r.fail("bad office hours", "window.office_hours", '"HH:MM-HH:MM"', text) from None
    return tuple(spans)


def _limits(r: _Reader) -> Limits:
    t, d = r.table("limits"), Limits()
    per_day = t.get("overall_per_day")
    return Limits(
        min_gap_working_hours=r.number(t, "min_gap_working_hours", "limits",
                                       d.min_gap_working_hours),
        per_domain_per_hour=r.integer(t, "per_domain_per_hour", "limits", d.per_domain_per_hour),
        per_domain_per_day=r.integer(t, "per_domain_per_day", "limits", d.per_domain_per_day),
        overall_per_hour=r.integer(t, "overall_per_hour", "limits", d.overall_per_hour),
        overall_per_day=None if per_day is None else r.integer(t, "overall_per_day", "limits", 0),
    )


def _selection(r: _Reader) -> AgencySelection:
    t = r.table("agencies")
    levels = _levels(r, r.strings(t, "levels", "agencies"), "agencies.levels")
    opened = t.get("opened_only", True)
    if not isinstance(opened, bool):
        raise r.fail("not a boolean", "agencies.opened_only", "true or false", opened)
    return AgencySelection(levels, r.strings(t, "cities", "agencies"),
                           r.strings(t, "names", "agencies"), opened)


def _parse(r: _Reader) -> Schedule:
    for name in r.raw:
        if name not in _KEYS:
            raise r.fail("unknown table", name, "one of " + ", ".join(sorted(_KEYS)), name)
    for name in _REQUIRED:
        if name not in r.raw:
            raise r.fail("missing table", name, f"a [{name}] table")
    head, window, assign = r.table("round"), r.table("window"), r.table("assign")
    quotas = _quotas(r)
    optional: dict[str, Any] = {}
    hours = _office_hours(r, window)
    if hours is not None:
        optional["office_hours"] = hours
    return Schedule(
        id=r.text(head, "id", "round"),
        name=r.text(head, "name", "round"),
        start=r.day(window, "start", "window"),
        end=r.day(window, "end", "window"),
        seed=r.integer(head, "seed", "round", None),
        personas=r.strings(assign, "personas", "assign"),
        templates=r.strings(assign, "templates", "assign"),
        quotas=quotas,
        agencies=_selection(r),
        time_zone=r.text(window, "time_zone", "window", DEFAULT_ZONE),
        jitter_minutes=r.integer(window, "jitter_minutes", "window", 15),
        limits=_limits(r),
        reply_window_working_days=r.integer(head, "reply_window_working_days", "round", 15),
        previous_rounds=r.strings(head, "previous_rounds", "round"),
        source=r.source,
        **optional,
    )


def load_schedule(path: str | Path) -> Schedule:
    """Read and validate a round file; every error names the file and the key.

    The file (see schedules/2015-round1.toml; optional keys show their defaults)::

        [round]    id = "2015-r1", name = "...", seed = 20151101,
                   previous_rounds = [], reply_window_working_days = 15
        [window]   start = 2015-11-02, end = 2015-11-14 (local dates, both included),
                   time_zone = "Asia/Shanghai", jitter_minutes = 15,
                   office_hours = ["09:00-12:00", "14:30-17:30"]
        [agencies] levels = [] (the levels with probes), cities = [], names = [],
                   opened_only = true
        [probes.city]    consultation = 1, complaint = 1      (per agency and kind)
        [probes.county]  consultation = 1, supervision = 1
        [assign]   personas = ["..."], templates = ["..."]   (ids)
        [limits]   min_gap_working_hours = 6, per_domain_per_hour = 2,
                   per_domain_per_day = 8, overall_per_hour = 20, overall_per_day (none)
    """
    file = Path(path)
    source = str(file)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("cannot read the schedule", source=source, got=str(exc)) from None
    return _parse(_Reader(raw, source))
