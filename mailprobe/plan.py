"""Planning a round (pure): who writes which template to which channel, and when."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

from mailprobe.directory import Channel, ChannelKind, Persona, ProbeSpec
from mailprobe.errors import ConfigError
from mailprobe.schedule import OfficeTime, Schedule
from mailprobe.sheets import Agency, Level
from mailprobe.workdays import WorkCalendar

__all__ = ["Details", "Plan", "PlanSummary", "SkippedProbe", "TemplateInfo", "plan_round"]

Details = Callable[[str, Agency, date], Mapping[str, str]]
"""Details unique to one probe: called with its probe id, the agency and the local send date."""

_HOUR = 3600
_DAY = 86_400


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What the planner knows of a probe template: the channel kinds it is written for."""

    kinds: frozenset[ChannelKind]
    title: str = ""


@dataclass(frozen=True, slots=True)
class SkippedProbe:
    """Probes a quota asked for but that cannot go out: the agency lacks a usable channel."""

    agency: str
    level: Level
    city: str
    kind: ChannelKind
    count: int
    reason: str


@dataclass(frozen=True)
class PlanSummary:
    """Counts for review before anything is sent.

    ``persona_balance`` is, per level, the most minus the fewest probes any listed persona
    writes; ``template_balance`` the same per level and channel kind over the listed
    templates that fit the kind (templates fit different kinds, so one level-wide figure
    would mix unequal pools).
    """

    per_day: Mapping[date, int]  # every working day of the window, local dates
    per_persona: Mapping[str, int]
    per_template: Mapping[str, int]
    per_level: Mapping[Level, int]
    per_city: Mapping[str, int]
    per_kind: Mapping[ChannelKind, int]
    per_domain: Mapping[str, int]
    persona_by_level: Mapping[Level, Mapping[str, int]]
    template_by_level_kind: Mapping[tuple[Level, ChannelKind], Mapping[str, int]]
    persona_balance: Mapping[Level, int]
    template_balance: Mapping[tuple[Level, ChannelKind], int]
    skipped: int

    def rows(self) -> tuple[tuple[str, str, int], ...]:
        """(section, key, count) rows, for a table, JSON or CSV."""
        rows: list[tuple[str, str, int]] = []
        sections: Iterable[tuple[str, Mapping[str, int]]] = (
            ("day", {d.isoformat(): n for d, n in self.per_day.items()}),
            ("persona", self.per_persona),
            ("template", self.per_template),
            ("level", {k.value: n for k, n in self.per_level.items()}),
            ("city", self.per_city),
            ("kind", {k.value: n for k, n in self.per_kind.items()}),
            ("domain", self.per_domain),
            ("persona_balance", {k.value: n for k, n in self.persona_balance.items()}),
            ("template_balance",
             {f"{lv.value}/{kd.value}": n for (lv, kd), n in self.template_balance.items()}),
        )
        for section, counts in sections:
            rows.extend((section, key, n) for key, n in counts.items())
        rows.append(("skipped", "probes", self.skipped))
        return tuple(rows)


@dataclass(frozen=True)
class Plan:
    """A planned round: probes sorted by send time, what was skipped and why, the counts."""

    schedule: Schedule
    probes: tuple[ProbeSpec, ...]
    skipped: tuple[SkippedProbe, ...]
    summary: PlanSummary
    closes_on: date | None  # the reply window's last working day after the last probe

    @property
    def round(self) -> str:
        return self.schedule.id

    def assignments(self) -> tuple[tuple[str, str], ...]:
        """(persona, agency) pairs: pass them to the next round's ``already_assigned``."""
        return tuple(sorted({(p.persona, p.agency) for p in self.probes}))


@dataclass(slots=True)
class _Task:
    agency: Agency
    kind: ChannelKind
    channel: Channel
    domain: str
    persona: str = ""
    template: str = ""
    at: int = 0  # UTC seconds since 1970


def plan_round(
    schedule: Schedule,
    agencies: Sequence[Agency],
    channels: Sequence[Channel],
    personas: Sequence[Persona],
    templates: Mapping[str, TemplateInfo],
    calendar: WorkCalendar,
    *,
    already_assigned: Collection[tuple[str, str]] = (),
    details: Details | None = None,
) -> Plan:
    """Plan ``schedule``: the same inputs and seed always give the same plan.

    Raises ConfigError naming the schedule file and key when the schedule refers to unknown
    personas, templates, agencies or cities, when a persona would have to write to an
    agency twice (this round or ``already_assigned``), or when the round does not fit its
    window under its limits (the message names the limit that binds).
    """
    _check_references(schedule, personas, templates)
    tasks, skipped = _tasks(schedule, _select(schedule, agencies), channels)
    # Separate streams: a change to the timing rules does not reshuffle who writes what.
    assign_rng = random.Random(f"{schedule.seed}/assign")
    _assign_personas(schedule, tasks, already_assigned, assign_rng)
    _assign_templates(schedule, tasks, templates, assign_rng)
    timeline = schedule.office_time(calendar)
    if tasks:
        schedule.check_room(timeline, len(tasks), _busiest(t.domain for t in tasks),
                            _busiest(t.agency.name for t in tasks))
    _Pacer(schedule, timeline, random.Random(f"{schedule.seed}/time")).run(tasks)
    probes = _probes(schedule, tasks, details)
    summary = _summarise(schedule, templates, tasks, skipped, timeline)
    closes_on = None
    if probes:
        deadline = calendar.deadline(probes[-1].send_at, schedule.reply_window_working_days)
        closes_on = deadline.last_day
    return Plan(schedule, probes, tuple(skipped), summary, closes_on)


# --- what is sent to whom ----------------------------------------------------------------------


def _check_references(
    s: Schedule, personas: Sequence[Persona], templates: Mapping[str, TemplateInfo]
) -> None:
    known = [p.id for p in personas]
    for pid in s.personas:
        if pid not in known:
            raise s.error(f"unknown persona {pid}", "assign.personas",
                          "ids from the persona list: " + _some(known), pid)
    for tid in s.templates:
        if tid not in templates:
            raise s.error(f"unknown template {tid}", "assign.templates",
                          "ids of templates under templates/probes: " + _some(list(templates)), tid)
    for level in s.levels:
        for quota in s.quotas_for(level):
            if not any(quota.kind in templates[t].kinds for t in s.templates):
                raise s.error(f"no listed template fits {quota.kind.value} ({quota.kind.label})",
                              "assign.templates", f"a template written for {quota.kind.value}",
                              ", ".join(s.templates))


def _some(ids: Sequence[str]) -> str:
    shown = ", ".join(sorted(ids)[:8])
    return (shown + ", ...") if len(ids) > 8 else (shown or "(none)")


def _select(s: Schedule, agencies: Sequence[Agency]) -> list[Agency]:
    sel = s.agencies
    by_name = {a.name: a for a in agencies}
    for name in sel.names:
        if name not in by_name:
            raise s.error(f"unknown agency {name}", "agencies.names",
                          "names from the agency list", name)
    cities = {a.city for a in agencies}
    for city in sel.cities:
        if city not in cities:
            raise s.error(f"unknown city {city}", "agencies.cities", "cities of the agency list",
                          city)
    names, wanted = set(sel.names), set(sel.cities)

    def excluded_by(a: Agency) -> str | None:
        if a.level not in s.levels:
            return "levels"
        if wanted and a.city not in wanted:
            return "cities"
        if sel.opened_only and not a.opened:
            return "opened_only"
        return None

    for name in sel.names:
        reason = excluded_by(by_name[name])
        if reason is not None:
            raise s.error(f"agency {name} is listed but agencies.{reason} leaves it out",
                          "agencies.names", f"names that pass agencies.{reason}", name)
    return [a for a in agencies if (not names or a.name in names) and excluded_by(a) is None]


def _usable(channel: Channel) -> bool:
    return bool(channel.address and "@" in channel.address) or bool(channel.form_url)


def _domain(channel: Channel) -> str:
    if channel.address and "@" in channel.address:
        return channel.address.rpartition("@")[2].lower()
    host = urlsplit(channel.form_url or "").hostname or channel.form_url or ""
    return f"form:{host}"


def _tasks(
    s: Schedule, selected: Sequence[Agency], channels: Sequence[Channel]
) -> tuple[list[_Task], list[SkippedProbe]]:
    by_agency: dict[str, list[Channel]] = defaultdict(list)
    for channel in channels:
        by_agency[channel.agency].append(channel)
    tasks: list[_Task] = []
    skipped: list[SkippedProbe] = []
    for agency in selected:
        for quota in s.quotas_for(agency.level):
            of_kind = [c for c in by_agency.get(agency.name, ()) if c.kind == quota.kind]
            # Email before web forms: a form needs an operator at the keyboard.
            usable = sorted((c for c in of_kind if _usable(c)),
                            key=lambda c: (not c.is_email, c.line, c.address or c.form_url or ""))
            if not usable:
                what = f"{quota.kind.value} ({quota.kind.label})"
                reason = (f"its {what} channel has neither an email address nor a web form"
                          if of_kind else f"no {what} channel")
                skipped.append(SkippedProbe(agency.name, agency.level, agency.city, quota.kind,
                                            quota.per_agency, reason))
                continue
            for i in range(quota.per_agency):
                channel = usable[i % len(usable)]
                tasks.append(_Task(agency, quota.kind, channel, _domain(channel)))
    return tasks, skipped


def _by_agency(tasks: Iterable[_Task]) -> dict[str, list[_Task]]:
    groups: dict[str, list[_Task]] = defaultdict(list)
    for task in tasks:
        groups[task.agency.name].append(task)
    return groups


def _assign_personas(
    s: Schedule, tasks: list[_Task], already: Collection[tuple[str, str]], rng: random.Random
) -> None:
    blocked: dict[str, set[str]] = defaultdict(set)
    for persona, agency in already:
        blocked[agency].add(persona)
    _check_enough_personas(s, tasks, blocked)
    for level in s.levels:
        level_tasks = [t for t in tasks if t.agency.level is level]
        _greedy_personas(s.personas, level_tasks, blocked, rng)
        _rebalance(s.personas, level_tasks, blocked)


def _check_enough_personas(s: Schedule, tasks: list[_Task], blocked: dict[str, set[str]]) -> None:
    worst: tuple[int, str, int, int] | None = None
    for name, group in sorted(_by_agency(tasks).items()):
        used = len(blocked.get(name, set()) & set(s.personas))
        need = len(group) + used
        if need > len(s.personas) and (worst is None or need > worst[0]):
            worst = (need, name, len(group), used)
    if worst is not None:
        need, name, count, used = worst
        raise s.error(
            f"too few personas: {name} gets {_count(count)} and {used} of the listed personas "
            "already wrote to it (a persona never writes twice to one agency)",
            "assign.personas", f"at least {need} personas", len(s.personas),
        )


def _greedy_personas(
    personas: Sequence[str], tasks: list[_Task], blocked: dict[str, set[str]],
    rng: random.Random,
) -> None:
    count = dict.fromkeys(personas, 0)
    in_city: Counter[tuple[str, str]] = Counter()
    groups = _by_agency(tasks)
    order = list(groups)
    rng.shuffle(order)
    for name in order:
        used = set(blocked.get(name, ()))
        for task in groups[name]:
            city = task.agency.city
            pick = min((p for p in personas if p not in used),
                       key=lambda p: (count[p], in_city[city, p], rng.random()))
            task.persona = pick
            used.add(pick)
            count[pick] += 1
            in_city[city, pick] += 1


def _rebalance(personas: Sequence[str], tasks: list[_Task], blocked: dict[str, set[str]]) -> None:
    """Move probes along exchange paths until no persona has 2 more than another could take.

    The greedy pass can strand a persona that previous rounds bar from the agencies left.
    A path p0 → p1 → ... → pk hands one probe of each p(i) to p(i+1), so only p0 loses
    and pk gains; when no such path improves the spread, no assignment does better.
    """
    while True:
        counts = Counter(t.persona for t in tasks)
        path: list[tuple[_Task, str]] | None = None
        for source in sorted(personas, key=lambda p: -counts[p]):
            path = _exchange_path(source, personas, counts, tasks, blocked)
            if path:
                break
        if not path:
            return
        for task, persona in path:
            task.persona = persona


def _exchange_path(
    source: str, personas: Sequence[str], counts: Counter[str], tasks: list[_Task],
    blocked: dict[str, set[str]],
) -> list[tuple[_Task, str]] | None:
    on_agency: dict[str, set[str]] = defaultdict(set)
    held: dict[str, list[_Task]] = defaultdict(list)
    for task in tasks:
        on_agency[task.agency.name].add(task.persona)
        held[task.persona].append(task)
    parent: dict[str, tuple[str, _Task]] = {}
    queue, seen = [source], {source}
    for current in queue:
        for task in held[current]:
            barred = on_agency[task.agency.name] | blocked.get(task.agency.name, set())
            for other in personas:
                if other in seen or other in barred:
                    continue
                seen.add(other)
                parent[other] = (current, task)
                if counts[other] <= counts[source] - 2:
                    moves, end = [], other
                    while end != source:
                        moves.append((parent[end][1], end))
                        end = parent[end][0]
                    return moves
                queue.append(other)
    return None


def _assign_templates(
    s: Schedule, tasks: list[_Task], templates: Mapping[str, TemplateInfo], rng: random.Random
) -> None:
    count: Counter[tuple[Level, ChannelKind, str]] = Counter()
    in_city: Counter[tuple[str, str]] = Counter()
    on_agency: dict[str, set[str]] = defaultdict(set)
    fits = {kind: [t for t in s.templates if kind in templates[t].kinds] for kind in ChannelKind}
    order = list(tasks)
    rng.shuffle(order)
    for task in order:
        level, kind, city = task.agency.level, task.kind, task.agency.city
        seen = on_agency[task.agency.name]
        # Balance first (the least used template always wins), then variety per agency and city.
        pick = min(fits[kind], key=lambda t: (count[level, kind, t], t in seen, in_city[city, t],
                                              rng.random()))
        task.template = pick
        count[level, kind, pick] += 1
        in_city[city, pick] += 1
        seen.add(pick)


# --- when --------------------------------------------------------------------------------------


def _count(n: int) -> str:
    return f"{n} probe" if n == 1 else f"{n} probes"


def _busiest(names: Iterable[str]) -> tuple[str, int]:
    return Counter(names).most_common(1)[0]


def _rate_push(times: list[int], t: int, limit: int, width: int) -> int | None:
    """The first time from which ``t`` keeps at most ``limit`` of ``times`` + t in any window
    [x, x + width), or None if ``t`` already does. ``times`` is sorted."""
    lo, hi = bisect_right(times, t - width), bisect_left(times, t + width)
    if hi - lo < limit:
        return None
    push: int | None = None
    for j in range(lo, hi - limit + 1):
        first, last = times[j], times[j + limit - 1]
        if max(t, last) - min(t, first) < width:
            push = first + width  # ``first`` grows with j: the last conflict pushes furthest
    return push


class _Pacer:
    """Spreads probes over office time: even slots with jitter, each slot given to the domain
    and then the agency furthest behind its own even share, within every limit."""

    def __init__(self, s: Schedule, tl: OfficeTime, rng: random.Random) -> None:
        self.s, self.tl, self.rng = s, tl, rng
        self.gap = s.limits.min_gap_seconds
        self._forget()

    def _forget(self) -> None:
        self.overall: list[int] = []
        self.by_domain: dict[str, list[int]] = defaultdict(list)
        self.by_agency: dict[str, list[int]] = defaultdict(list)  # office offsets

    def _rate_block(self, domain: str | None, t: int) -> tuple[int, str] | None:
        """Where the overall (``domain`` None) or the domain's rates would push ``t``."""
        lim = self.s.limits
        if domain is None:
            rules = [(self.overall, lim.overall_per_hour, _HOUR, "overall_per_hour"),
                     (self.overall, lim.overall_per_day, _DAY, "overall_per_day")]
        else:
            times = self.by_domain[domain]
            rules = [(times, lim.per_domain_per_hour, _HOUR, "per_domain_per_hour"),
                     (times, lim.per_domain_per_day, _DAY, "per_domain_per_day")]
        for times, limit, width, key in rules:
            push = None if limit is None else _rate_push(times, t, limit, width)
            if push is not None:
                return push, key
        return None

    def _gap_block(self, agency: str, t: int) -> tuple[int, str] | None:
        if not self.gap:
            return None
        o = self.tl.offset(t)
        clash = [p + self.gap for p in self.by_agency[agency] if abs(o - p) < self.gap]
        return (self.tl.at(max(clash)), "min_gap_working_hours") if clash else None

    def _block(self, agency: str, domain: str, t: int) -> tuple[int, str] | None:
        return (self._rate_block(None, t) or self._rate_block(domain, t)
                or self._gap_block(agency, t))

    def earliest(self, agency: str, domain: str, t: int) -> tuple[int | None, str]:
        """The first office second from ``t`` on when the agency may get a probe, or None and
        the limit that pushed it out of the window."""
        reason = "end"
        while True:
            at = self.tl.next_office(t)
            if at is None:
                return None, reason
            block = self._block(agency, domain, at)
            if block is None:
                return at, reason
            t, reason = block

    def place(self, task: _Task, t: int) -> None:
        task.at = t
        for times in (self.overall, self.by_domain[task.domain]):
            times.insert(bisect_left(times, t), t)
        self.by_agency[task.agency.name].append(self.tl.offset(t))

    def run(self, tasks: list[_Task]) -> None:
        """Spread the probes; if that cannot fit, pack them as early as the limits allow."""
        try:
            self.spread(tasks)
        except ConfigError:
            self._forget()
            self.pack(tasks)

    def pack(self, tasks: list[_Task]) -> None:
        # Busiest domains and agencies first: they have the fewest ways to fit.
        per_domain = Counter(t.domain for t in tasks)
        per_agency = Counter(t.agency.name for t in tasks)
        order = sorted(tasks, key=lambda t: (-per_domain[t.domain], -per_agency[t.agency.name],
                                             t.agency.name, t.kind.value))
        for task in order:
            at, reason = self.earliest(task.agency.name, task.domain, self.tl.starts[0])
            if at is None:
                raise self._no_room(reason, len(tasks) - order.index(task), task)
            self.place(task, at)

    def spread(self, tasks: list[_Task]) -> None:
        if not tasks:
            return
        n, total, jitter = len(tasks), self.tl.total, self.s.jitter_minutes * 60
        targets = sorted(
            min(total - 1, max(0, round((i + 0.5) * total / n + self.rng.uniform(-jitter, jitter))))
            for i in range(n))
        queue = _Queue(tasks, self.rng)
        for i, target in enumerate(targets):
            agency, domain, at = self._pick(queue, (i + 1) / n, self.tl.at(target))
            self.place(queue.pop(agency, domain), at)

    def _pick(self, queue: _Queue, progress: float, t: int) -> tuple[str, str, int]:
        if self._rate_block(None, t) is None:
            for domain in queue.domains_by_lag(progress):
                if self._rate_block(domain, t) is not None:
                    continue
                for agency in queue.agencies_by_lag(domain, progress):
                    if self._gap_block(agency, t) is None:
                        return agency, domain, t
        return self._first_free(queue, t)

    def _first_free(self, queue: _Queue, t: int) -> tuple[str, str, int]:
        """Nothing may go at ``t``: take the earliest time any agency may, from ``t`` on, or
        else from the start of the window (an earlier slot may have room left)."""
        reasons: Counter[str] = Counter()
        for start in (t, self.tl.starts[0]):
            best: tuple[int, str, str] | None = None
            for agency, domain in queue.remaining():
                at, reason = self.earliest(agency, domain, start)
                if at is None:
                    reasons[reason] += 1
                elif best is None or at < best[0]:
                    best = (at, agency, domain)
            if best is not None:
                return best[1], best[2], best[0]
        key = queue.remaining()[0]
        raise self._no_room(reasons.most_common(1)[0][0], queue.count(), queue.left[key][-1])

    def _no_room(self, key: str, left: int, task: _Task) -> ConfigError:
        location = "window.end" if key == "end" else f"limits.{key}"
        return self.s.error(
            f"the round does not fit its window: no time is left for {_count(left)} under "
            f"this limit (e.g. to {task.agency.name}, domain {task.domain})", location,
            "a window and limits with room for every probe", left,
            hint="raise the limit, lengthen the window or send fewer probes")


class _Queue:
    """The probes still to place, grouped by (agency, domain), with the shares placed so far."""

    def __init__(self, tasks: list[_Task], rng: random.Random) -> None:
        self.rng = rng
        self.left: dict[tuple[str, str], list[_Task]] = defaultdict(list)
        for task in sorted(tasks, key=lambda t: (t.agency.name, t.domain, t.kind.value)):
            self.left[task.agency.name, task.domain].append(task)
        self.keys_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for key, group in self.left.items():
            rng.shuffle(group)  # which of an agency's probes goes first
            self.keys_of[key[1]].append(key)
        self.total = Counter(("d", t.domain) for t in tasks)
        self.total.update(("a", t.agency.name) for t in tasks)
        self.done: Counter[tuple[str, str]] = Counter()

    def count(self) -> int:
        return sum(len(g) for g in self.left.values())

    def remaining(self) -> list[tuple[str, str]]:
        return [key for key, group in self.left.items() if group]

    def _lag(self, name: tuple[str, str], progress: float) -> float:
        # The even share so far minus what is placed; the random part (< 1 probe) breaks ties.
        return progress * self.total[name] - self.done[name] + self.rng.random()

    def domains_by_lag(self, progress: float) -> list[str]:
        lag = {d: self._lag(("d", d), progress) for d, keys in self.keys_of.items()
               if any(self.left[k] for k in keys)}
        return sorted(lag, key=lambda d: -lag[d])

    def agencies_by_lag(self, domain: str, progress: float) -> list[str]:
        lag = {a: self._lag(("a", a), progress)
               for a, _ in self.keys_of[domain] if self.left[a, domain]}
        return sorted(lag, key=lambda a: -lag[a])

    def pop(self, agency: str, domain: str) -> _Task:
        task = self.left[agency, domain].pop()
        self.done["d", domain] += 1
        self.done["a", agency] += 1
        return task


# --- output ------------------------------------------------------------------------------------


def _probes(s: Schedule, tasks: list[_Task], details: Details | None) -> tuple[ProbeSpec, ...]:
    ordered = sorted(tasks, key=lambda t: (t.at, t.agency.name, t.kind.value, t.persona))
    width = max(4, len(str(len(ordered))))
    zone = s.zone
    probes = []
    for number, task in enumerate(ordered, start=1):
        probe_id = f"{s.id}-{number:0{width}d}"
        when = datetime.fromtimestamp(task.at, UTC)
        local_day = when.astimezone(zone).date()
        extra = dict(details(probe_id, task.agency, local_day)) if details else {}
        probes.append(ProbeSpec(probe_id, s.id, task.agency.name, task.channel, task.persona,
                                task.template, when, extra))
    return tuple(probes)


def _spread(counts: Mapping[str, int]) -> int:
    return max(counts.values()) - min(counts.values()) if counts else 0


def _summarise(
    s: Schedule, templates: Mapping[str, TemplateInfo], tasks: Sequence[_Task],
    skipped: Sequence[SkippedProbe], tl: OfficeTime,
) -> PlanSummary:
    zone = s.zone
    per_day = dict.fromkeys(tl.days, 0)
    for task in tasks:
        per_day[datetime.fromtimestamp(task.at, zone).date()] += 1
    by_level: dict[Level, dict[str, int]] = {}
    by_level_kind: dict[tuple[Level, ChannelKind], dict[str, int]] = {}
    for level in s.levels:
        of_level = [t for t in tasks if t.agency.level is level]
        used = Counter(t.persona for t in of_level)
        by_level[level] = {p: used[p] for p in s.personas}
        for quota in s.quotas_for(level):
            chosen = Counter(t.template for t in of_level if t.kind == quota.kind)
            by_level_kind[level, quota.kind] = {
                t: chosen[t] for t in s.templates if quota.kind in templates[t].kinds}
    personas = Counter(t.persona for t in tasks)
    chosen_templates = Counter(t.template for t in tasks)
    return PlanSummary(
        per_day=per_day,
        per_persona={p: personas[p] for p in s.personas},
        per_template={t: chosen_templates[t] for t in s.templates},
        per_level=dict(Counter(t.agency.level for t in tasks)),
        per_city=dict(sorted(Counter(t.agency.city for t in tasks).items())),
        per_kind=dict(Counter(t.kind for t in tasks)),
        per_domain=dict(Counter(t.domain for t in tasks).most_common()),
        persona_by_level=by_level,
        template_by_level_kind=by_level_kind,
        persona_balance={lv: _spread(c) for lv, c in by_level.items()},
        template_balance={k: _spread(c) for k, c in by_level_kind.items()},
        skipped=sum(x.count for x in skipped),
    )
