"""The queue method (排队法): working days to the first substantive reply → stage → points."""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mailprobe.errors import ConfigError, InputError, MailprobeError
from mailprobe.paths import config_dir
from mailprobe.workdays import Deadline, When, WorkCalendar, default_calendar

__all__ = [
    "AgencyTimeliness",
    "Combine",
    "ProbeOutcome",
    "ProbeTiming",
    "QueueMethod",
    "RoundSummary",
    "RoundTimeliness",
    "Stage",
    "StageCount",
    "StageKind",
    "StageMode",
    "StageRule",
    "TimedProbe",
    "assess_round",
    "combine_points",
    "load_queue_method",
    "resolve_stages",
    "score_round",
    "stage_for",
    "stage_points_batch",
    "summarize",
    "time_probe",
    "timeliness_points",
]

_SEED_LIMIT_SOURCE = (
    "2015 广东省环保部门政府网站绩效评估报告，附件1 公众互动/咨询投诉/答复实效："
    "用户咨询或投诉15个工作日内给予答复，答复内容详细有效，得2分"
)


class Combine(StrEnum):
    """How the points of several probes to one agency make its 答复实效 points."""

    MEAN = "mean"
    WORST = "worst"
    BEST = "best"


class StageMode(StrEnum):
    """Fixed working-day stages, or stages cut at quantiles of the round's reply times."""

    FIXED = "fixed"
    QUANTILE = "quantile"


class StageKind(StrEnum):
    IN_TIME = "in_time"
    LATE = "late"
    NO_REPLY = "no_reply"


@dataclass(frozen=True, slots=True)
class StageRule:
    """A configured stage: its share of the maximum points and (fixed mode) its upper bound."""

    key: str
    label: str
    share: float
    max_working_days: int | None = None


_DEFAULT_STAGES = (
    StageRule("within_5", "5个工作日内", 1.0, 5),
    StageRule("days_6_10", "6-10个工作日", 0.75, 10),
    StageRule("days_11_15", "11-15个工作日", 0.5, 15),
)


@dataclass(frozen=True, slots=True)
class QueueMethod:
    """queue_method.toml, validated. Points of a stage = share × ``max_points``.

    ``rounding_step`` 0 keeps the combined points exact: rounding a mean of 1.75 to a half
    point would move agencies across ranks for no reason in the data.
    """

    limit: int = 15
    max_points: float = 2.0
    combine: Combine = Combine.MEAN
    rounding_step: float = 0.0
    late_reply_earns: bool = False
    mode: StageMode = StageMode.FIXED
    stages: tuple[StageRule, ...] = _DEFAULT_STAGES
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75)
    quantile_stages: tuple[StageRule, ...] = (
        StageRule("q1", "最快四分之一", 1.0),
        StageRule("q2", "第二个四分之一", 0.75),
        StageRule("q3", "第三个四分之一", 0.5),
        StageRule("q4", "最慢四分之一（限期内）", 0.25),
    )
    late: StageRule = StageRule("late", "超过15个工作日", 0.0)
    no_reply: StageRule = StageRule("no_reply", "未答复", 0.0)
    limit_source: str = _SEED_LIMIT_SOURCE
    source: str = "config/queue_method.toml"

    def __post_init__(self) -> None:
        _validate(self)


def _fail(method: QueueMethod, key: str, message: str, expected: str, got: object) -> ConfigError:
    return ConfigError(message, source=method.source, location=key, expected=expected, got=got)


def _validate(m: QueueMethod) -> None:
    if m.limit < 1:
        raise _fail(m, "queue_method.limit_working_days", "bad limit", "an integer >= 1", m.limit)
    if not m.max_points > 0:
        raise _fail(m, "queue_method.max_points", "bad maximum", "a number > 0", m.max_points)
    if m.rounding_step < 0 or m.rounding_step > m.max_points:
        raise _fail(m, "queue_method.rounding_step", "bad rounding step",
                    f"0 (no rounding) or a step up to {m.max_points}", m.rounding_step)
    rules = (*m.stages, *m.quantile_stages, m.late, m.no_reply)
    for rule in rules:
        if not 0.0 <= rule.share <= 1.0:
            raise _fail(m, f"stage {rule.key}.share", "bad share", "0 <= share <= 1", rule.share)
    if m.no_reply.share != 0.0:
        raise _fail(m, "no_reply.share", "no reply cannot earn points", "0", m.no_reply.share)
    if m.late.share > 0 and not m.late_reply_earns:
        raise _fail(m, "late.share", "a late reply earns points but late_reply_earns is false",
                    "share = 0, or late_reply_earns = true", m.late.share)
    _validate_fixed(m)
    _validate_quantile(m)
    keys = [r.key for r in (*m.stages, m.late, m.no_reply)]
    keys_q = [r.key for r in (*m.quantile_stages, m.late, m.no_reply)]
    for group in (keys, keys_q):
        if len(set(group)) != len(group):
            raise _fail(m, "stages", "stage keys repeat", "distinct keys", ", ".join(group))


def _validate_fixed(m: QueueMethod) -> None:
    if not m.stages:
        raise _fail(m, "stages", "no stage", "at least one [[stages]] entry", 0)
    highs = [-1 if r.max_working_days is None else r.max_working_days for r in m.stages]
    if min(highs) < 0 or highs != sorted(set(highs)):
        raise _fail(m, "stages.max_working_days", "stage bounds must rise",
                    "strictly increasing integers >= 0", highs)
    if highs[-1] != m.limit:
        raise _fail(m, "stages.max_working_days", "the last stage must end at the limit",
                    f"{m.limit} (limit_working_days)", highs[-1])
    _check_falling(m, "stages", [r.share for r in m.stages])


def _validate_quantile(m: QueueMethod) -> None:
    qs = list(m.quantiles)
    if any(not 0 < q < 1 for q in qs) or qs != sorted(set(qs)):
        raise _fail(m, "queue_method.quantiles", "bad quantiles",
                    "strictly increasing numbers between 0 and 1", qs)
    if len(m.quantile_stages) != len(qs) + 1:
        raise _fail(m, "quantile_stages", "one stage more than cut points is needed",
                    f"{len(qs) + 1} [[quantile_stages]]", len(m.quantile_stages))
    _check_falling(m, "quantile_stages", [r.share for r in m.quantile_stages])


def _check_falling(m: QueueMethod, key: str, shares: list[float]) -> None:
    # A slower reply never earns more than a faster one, or the ranking rewards waiting.
    chain = [*shares, m.late.share]
    if any(later > earlier for earlier, later in itertools.pairwise(chain)):
        raise _fail(m, f"{key}.share", "a slower stage earns more than a faster one",
                    "shares that never rise from stage to stage (late included)", chain)


# --- loading ----------------------------------------------------------------------------------

_HEAD_KEYS = {
    "limit_working_days", "limit_source", "max_points", "combine", "rounding_step",
    "late_reply_earns", "stage_mode", "quantiles",
}
_TOP_KEYS = {"queue_method", "stages", "quantile_stages", "late", "no_reply"}


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], source: str,
         where: str, default: Any) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError("wrong type", source=source, location=f"{where}{key}",
                          expected=getattr(kind, "__name__", "a number"), got=value)
    return value


def _rule(item: Mapping[str, Any], source: str, where: str, fixed: bool) -> StageRule:
    allowed = {"key", "label", "share", "max_working_days"} if fixed else {"key", "label", "share"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ConfigError("unknown key", source=source, location=f"{where}.{unknown[0]}",
                          expected="one of " + ", ".join(sorted(allowed)), got=unknown[0])
    for key in ("key", "label"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise ConfigError("missing text", source=source, location=f"{where}.{key}",
                              expected="a non-empty string", got=item.get(key))
    share = float(_get(item, "share", (int, float), source, f"{where}.", None))
    high = _get(item, "max_working_days", int, source, f"{where}.", 0) if fixed else None
    if fixed and "max_working_days" not in item:
        raise ConfigError("missing bound", source=source, location=f"{where}.max_working_days",
                          expected="an integer number of working days", got=None)
    return StageRule(item["key"].strip(), item["label"].strip(), share, high)


def _rules(raw: Mapping[str, Any], key: str, source: str, fixed: bool) -> tuple[StageRule, ...]:
    items = raw.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError("not an array of tables", source=source, location=key,
                          expected=f"[[{key}]] entries", got=type(items).__name__)
    return tuple(_rule(item, source, f"{key}[{i}]", fixed) for i, item in enumerate(items))


def _enum(value: object, kind: type[StrEnum], source: str, key: str) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        raise ConfigError("unknown choice", source=source, location=key,
                          expected=" | ".join(m.value for m in kind), got=value) from None


def load_queue_method(path: str | Path | None = None) -> QueueMethod:
    """Read and validate queue_method.toml (config/queue_method.toml by default)."""
    file = Path(path) if path is not None else config_dir() / "queue_method.toml"
    source = str(file)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("cannot read the queue-method file", source=source, got=str(exc)) from exc
    for table, allowed, where in ((raw, _TOP_KEYS, ""),
                                  (raw.get("queue_method", {}), _HEAD_KEYS, "queue_method.")):
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError("unknown key", source=source, location=f"{where}{unknown[0]}",
                              expected="one of " + ", ".join(sorted(allowed)), got=unknown[0])
    head = raw.get("queue_method", {})
    h = "queue_method."
    defaults = QueueMethod()
    return QueueMethod(
        limit=_get(head, "limit_working_days", int, source, h, defaults.limit),
        max_points=float(_get(head, "max_points", (int, float), source, h, defaults.max_points)),
        combine=_enum(head.get("combine", "mean"), Combine, source, f"{h}combine"),
        rounding_step=float(_get(head, "rounding_step", (int, float), source, h, 0.0)),
        late_reply_earns=_get(head, "late_reply_earns", bool, source, h, False),
        mode=_enum(head.get("stage_mode", "fixed"), StageMode, source, f"{h}stage_mode"),
        stages=_rules(raw, "stages", source, True) or defaults.stages,
        quantiles=tuple(float(q) for q in _get(head, "quantiles", list, source, h,
                                               list(defaults.quantiles))),
        quantile_stages=_rules(raw, "quantile_stages", source, False) or defaults.quantile_stages,
        late=_single(raw, "late", source, defaults.late),
        no_reply=_single(raw, "no_reply", source, defaults.no_reply),
        limit_source=_get(head, "limit_source", str, source, h, defaults.limit_source),
        source=source,
    )


def _single(raw: Mapping[str, Any], key: str, source: str, default: StageRule) -> StageRule:
    item = raw.get(key)
    if item is None:
        return default
    if not isinstance(item, dict):
        raise ConfigError("not a table", source=source, location=key, expected=f"[{key}]", got=item)
    return _rule({"share": default.share, **item}, source, key, False)


# --- probes and stages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeTiming:
    """What the pipeline knows about one probe. Instants should carry their zone.

    ``replied_at`` is the first substantive reply; acknowledgements and auto-replies never
    go there (``first_ack_at`` is reported, never counted). ``round_end`` closes the
    window: a reply after it is treated as no reply (the probe is censored, not dropped).
    """

    probe_id: str
    agency: str
    sent_at: When
    first_ack_at: When | None = None
    replied_at: When | None = None
    round_end: When | None = None


@dataclass(frozen=True, slots=True)
class TimedProbe:
    """A probe on the calendar, before the round's stages are known.

    ``working_days`` is the smallest N whose deadline the counted reply met (WorkdayCount's
    ``within``): a reply on the Saturday after the 15th working day took 16, not 15, since
    the 15th working day had ended at 24:00 on Friday. None when no reply counts.
    """

    probe: ProbeTiming
    deadline: Deadline
    working_days: int | None
    ack_working_days: int | None
    censored: bool
    censored_before_deadline: bool

    @property
    def in_time(self) -> bool:
        return self.working_days is not None and self.working_days <= self.deadline.n


@dataclass(frozen=True, slots=True)
class Stage:
    """A stage resolved for a round: bounds in working days (inclusive) and points."""

    key: str
    label: str
    kind: StageKind
    low: int | None
    high: int | None
    share: float
    points: float


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    timed: TimedProbe
    stage: Stage
    points: float

    @property
    def probe_id(self) -> str:
        return self.timed.probe.probe_id

    @property
    def agency(self) -> str:
        return self.timed.probe.agency

    @property
    def working_days(self) -> int | None:
        return self.timed.working_days

    @property
    def in_time(self) -> bool:
        return self.timed.in_time


@dataclass(frozen=True, slots=True)
class StageCount:
    key: str
    label: str
    count: int
    share: float
    cumulative_share: float


@dataclass(frozen=True, slots=True)
class RoundSummary:
    """Shares over all probes; the median counts an unanswered probe as beyond the limit.

    ``median_working_days`` is None when the median probe got no reply in the round.
    """

    probes: int
    answered: int
    answered_in_time: int
    censored: int
    acknowledged: int
    stages: tuple[StageCount, ...]
    median_working_days: float | None
    median_beyond_limit: bool
    limit: int


@dataclass(frozen=True, slots=True)
class AgencyTimeliness:
    """The probe part of the 答复实效 leaf for one agency, with the probes it came from."""

    agency: str
    points: float
    max_points: float
    combine: Combine
    probe_ids: tuple[str, ...]
    probe_points: tuple[float, ...]
    answered_in_time: int
    calendar_version: str


@dataclass(frozen=True, slots=True)
class RoundTimeliness:
    outcomes: tuple[ProbeOutcome, ...]
    stages: tuple[Stage, ...]
    summary: RoundSummary
    agencies: tuple[AgencyTimeliness, ...]
    calendar_version: str
    method_source: str
    notes: tuple[str, ...] = field(default=())


def _located(exc: MailprobeError, where: str) -> MailprobeError:
    location = f"{where}: {exc.location}" if exc.location else where
    return type(exc)(exc.message, source=exc.source, location=location,
                     expected=exc.expected, got=exc.got, hint=exc.hint)


def _after(calendar: WorkCalendar, a: When, b: When) -> bool:
    """Whether ``a`` is strictly later than ``b``; a bare date covers its whole day."""
    da, db = calendar.local_date(a), calendar.local_date(b)
    if isinstance(a, datetime) and isinstance(b, datetime) and da == db:
        return calendar.aware(a) > calendar.aware(b)
    return da > db


def _check_fields(probe: ProbeTiming, calendar: WorkCalendar) -> None:
    """Refuse naive date-times and events before sending, naming the field."""
    for name in ("sent_at", "first_ack_at", "replied_at", "round_end"):
        value = getattr(probe, name)
        try:
            if value is not None:
                calendar.local_date(value)
        except MailprobeError as exc:
            raise _located(exc, name) from None
        if name != "sent_at" and value is not None and _after(calendar, probe.sent_at, value):
            raise InputError(f"{name} is before sent_at", location=name,
                             expected=f"a time at or after {probe.sent_at.isoformat()}",
                             got=value.isoformat())


def time_probe(probe: ProbeTiming, calendar: WorkCalendar, limit: int) -> TimedProbe:
    """Count one probe on the calendar: deadline, working days to the reply, censoring."""
    end, reply, ack = probe.round_end, probe.replied_at, probe.first_ack_at
    try:
        _check_fields(probe, calendar)
        deadline = calendar.deadline(probe.sent_at, limit)
        if reply is not None and end is not None and _after(calendar, reply, end):
            reply = None
        days = None if reply is None else calendar.between(probe.sent_at, reply).within
        ack_days = None if ack is None else calendar.between(probe.sent_at, ack).within
    except MailprobeError as exc:
        raise _located(exc, f"probe {probe.probe_id}") from None
    censored = reply is None and end is not None
    early = censored and end is not None and calendar.local_date(end) < deadline.last_day
    return TimedProbe(probe, deadline, days, ack_days, censored, early)


def _quantile_highs(method: QueueMethod, answered: Sequence[int]) -> list[int]:
    if not answered:
        return [method.limit] * (len(method.quantiles) + 1)
    values = np.asarray(answered, dtype=np.int64)
    # inverted_cdf picks observed values, so every cut is a real reply time.
    cuts = np.quantile(values, list(method.quantiles), method="inverted_cdf")
    return [min(int(c), method.limit) for c in cuts] + [method.limit]


def resolve_stages(method: QueueMethod, answered: Iterable[int] = ()) -> tuple[Stage, ...]:
    """The round's stages: in-time stages, then late, then no reply (always last).

    ``answered`` are the working days of every reply counted in the round; only the
    quantile mode looks at them.
    """
    if method.mode is StageMode.FIXED:
        rules = method.stages
        highs = [r.max_working_days or 0 for r in rules]
    else:
        rules = method.quantile_stages
        highs = _quantile_highs(method, list(answered))
    stages, low = [], 0
    for rule, high in zip(rules, highs, strict=True):
        stages.append(Stage(rule.key, rule.label, StageKind.IN_TIME, low, high, rule.share,
                            _points(method, rule.share)))
        low = max(low, high + 1)
    late_share = method.late.share if method.late_reply_earns else 0.0
    stages.append(Stage(method.late.key, method.late.label, StageKind.LATE, method.limit + 1,
                        None, late_share, _points(method, late_share)))
    stages.append(Stage(method.no_reply.key, method.no_reply.label, StageKind.NO_REPLY,
                        None, None, 0.0, 0.0))
    return tuple(stages)


def _points(method: QueueMethod, share: float) -> float:
    return round(share * method.max_points, 6)


def stage_for(stages: Sequence[Stage], working_days: int | None) -> Stage:
    """The stage of a reply after ``working_days`` (None: no reply)."""
    if working_days is None:
        return stages[-1]
    for stage in stages[:-1]:
        if stage.high is None or working_days <= stage.high:
            return stage
    return stages[-2]  # pragma: no cover - the late stage is open-ended


def stage_points_batch(
    stages: Sequence[Stage], working_days: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Stage index and points for an array of working days (-1 = no reply)."""
    # A lookup table over -1 .. limit + 1 (everything beyond is late) beats searchsorted.
    limit = max(s.high or 0 for s in stages[:-2])
    table = np.array([stages.index(stage_for(stages, d if d >= 0 else None))
                      for d in range(-1, limit + 2)], dtype=np.int64)
    index = np.take(table, np.minimum(working_days, limit + 1) + 1)
    points = np.array([s.points for s in stages], dtype=np.float64)
    return index, np.take(points, index)


def combine_points(method: QueueMethod, points: Sequence[float]) -> float:
    """Several probes' points → one agency's points (mean, worst or best), then rounded."""
    if not points:
        return 0.0
    if method.combine is Combine.WORST:
        value = min(points)
    elif method.combine is Combine.BEST:
        value = max(points)
    else:
        value = math.fsum(points) / len(points)
    if method.rounding_step > 0:
        # Half up, not half to even: an evaluator rounds 1.25 to 1.5 on a half-point sheet.
        value = math.floor(value / method.rounding_step + 0.5 + 1e-9) * method.rounding_step
    return round(min(value, method.max_points), 6)


def summarize(
    outcomes: Sequence[ProbeOutcome], stages: Sequence[Stage], limit: int
) -> RoundSummary:
    """Shares per stage over all probes and the median with no reply counted as beyond."""
    total = len(outcomes)
    counts = {s.key: 0 for s in stages}
    for o in outcomes:
        counts[o.stage.key] += 1
    rows, running = [], 0
    for s in stages:
        running += counts[s.key]
        rows.append(StageCount(s.key, s.label, counts[s.key], _share(counts[s.key], total),
                               _share(running, total)))
    median, beyond = _median(outcomes, limit)
    return RoundSummary(
        probes=total,
        answered=sum(o.working_days is not None for o in outcomes),
        answered_in_time=sum(o.in_time for o in outcomes),
        censored=sum(o.timed.censored for o in outcomes),
        acknowledged=sum(o.timed.ack_working_days is not None for o in outcomes),
        stages=tuple(rows), median_working_days=median, median_beyond_limit=beyond, limit=limit,
    )


def _share(part: int, total: int) -> float:
    return round(part / total, 6) if total else 0.0


def _median(outcomes: Sequence[ProbeOutcome], limit: int) -> tuple[float | None, bool]:
    if not outcomes:
        return None, False
    values = [math.inf if o.working_days is None else float(o.working_days) for o in outcomes]
    middle = float(np.median(values))
    if math.isinf(middle) or math.isnan(middle):
        return None, True
    return middle, middle > limit


def score_round(timed: Sequence[TimedProbe], method: QueueMethod) -> RoundTimeliness:
    """Stages, points, summary and agency points for probes already on the calendar."""
    stages = resolve_stages(method, [t.working_days for t in timed if t.working_days is not None])
    outcomes = []
    for t in timed:
        stage = stage_for(stages, t.working_days)
        outcomes.append(ProbeOutcome(t, stage, stage.points))
    version = timed[0].deadline.calendar_version if timed else ""
    agencies: dict[str, list[ProbeOutcome]] = {}
    for o in outcomes:
        agencies.setdefault(o.agency, []).append(o)
    points = tuple(
        AgencyTimeliness(
            agency=name,
            points=combine_points(method, [o.points for o in group]),
            max_points=method.max_points, combine=method.combine,
            probe_ids=tuple(o.probe_id for o in group),
            probe_points=tuple(o.points for o in group),
            answered_in_time=sum(o.in_time for o in group), calendar_version=version,
        )
        for name, group in agencies.items()
    )
    notes = tuple(
        f"probe {t.probe.probe_id}: the round ended before its deadline {t.deadline.last_day}"
        for t in timed if t.censored_before_deadline
    )
    return RoundTimeliness(tuple(outcomes), stages, summarize(outcomes, stages, method.limit),
                           points, version, method.source, notes)


def assess_round(
    probes: Iterable[ProbeTiming],
    method: QueueMethod | None = None,
    calendar: WorkCalendar | None = None,
) -> RoundTimeliness:
    """Every probe of a round through the calendar and the queue method."""
    method = method or load_queue_method()
    calendar = calendar or default_calendar()
    seen: set[str] = set()
    timed = []
    for probe in probes:
        if probe.probe_id in seen:
            raise InputError("the same probe id appears twice", location=f"probe {probe.probe_id}",
                             expected="one record per probe", got=probe.probe_id)
        seen.add(probe.probe_id)
        timed.append(time_probe(probe, calendar, method.limit))
    return score_round(timed, method)


def timeliness_points(
    probes: Iterable[ProbeTiming],
    method: QueueMethod | None = None,
    calendar: WorkCalendar | None = None,
) -> tuple[AgencyTimeliness, ...]:
    """The 答复实效 timeliness points per agency (the leaf's probe part), with probe ids."""
    return assess_round(probes, method, calendar).agencies

