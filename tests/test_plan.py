"""Planning rounds: the schedule files, the 2015 rounds replayed, limits, balance and errors."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import time as stopwatch
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprobe.directory import Channel, ChannelKind, Persona
from mailprobe.errors import ConfigError
from mailprobe.plan import Plan, TemplateInfo, plan_round
from mailprobe.schedule import Limits, OfficeHours, Quota, Schedule, load_schedule
from mailprobe.sheets import Agency, Level, read_agencies
from mailprobe.workdays import WorkCalendar, default_calendar

ROOT = Path(__file__).resolve().parent.parent
ROUND1 = ROOT / "schedules" / "2015-round1.toml"
ROUND2 = ROOT / "schedules" / "2015-round2.toml"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
ZX, TS, JD, XX = (ChannelKind.CONSULTATION, ChannelKind.COMPLAINT, ChannelKind.SUPERVISION,
                  ChannelKind.MAILBOX)

# The template ids of the 2015 schedule files (templates/probes/index.toml), built in code:
# consultations fit consultation and mailbox (信箱) channels; complaints fit complaint,
# supervision (监督: reporting a violation) and mailbox channels.
_CONSULTATIONS = ("eia_restaurant_1", "eia_notice_1", "env_data_air_1", "env_data_water_2",
                  "hazwaste_garage_1", "eia_workshop_2", "eia_restaurant_3", "eia_notice_2",
                  "env_data_air_3", "hazwaste_print_2")
_COMPLAINTS = ("noise_night_1", "odour_factory_1", "odour_eatery_2", "river_pipe_1",
               "dust_site_1", "noise_night_2", "odour_refuse_3", "river_dumping_2", "river_fish_3",
               "dust_plant_2")
TEMPLATES = {**{t: TemplateInfo(frozenset({ZX, XX})) for t in _CONSULTATIONS},
             **{t: TemplateInfo(frozenset({TS, JD, XX})) for t in _COMPLAINTS}}


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return default_calendar()


@pytest.fixture(scope="module")
def agencies() -> tuple[Agency, ...]:
    return read_agencies(ROOT / "samples" / "2015" / "agencies.csv")


def channels_2015(agencies: Sequence[Agency]) -> list[Channel]:
    """A consultation and a complaint address per city; a consultation address per county,
    on its city's mail domain (as many county bureaus are)."""
    domain = {a.name: (urlsplit(a.website or "").hostname or "").removeprefix("hbj.")
              for a in agencies if a.level is Level.CITY}
    channels = []
    for a in agencies:
        if a.level is Level.CITY:
            channels += [Channel(a.name, ZX, f"zixun@{domain[a.name]}", line=a.line),
                         Channel(a.name, TS, f"tousu@{domain[a.name]}", line=a.line)]
        else:
            channels.append(Channel(a.name, ZX, f"county{a.line}@{domain[a.city]}", line=a.line))
    return channels


def personas_for(ids: Sequence[str]) -> list[Persona]:
    return [Persona(pid, f"市民{i}", "越秀区", "loopback") for i, pid in enumerate(ids)]


def eight_personas(s: Schedule) -> Schedule:
    """The file's personas, topped up to eight with test-only ones."""
    extra = tuple(f"extra-{i}" for i in range(8 - len(s.personas)))
    return dataclasses.replace(s, personas=s.personas + extra)


@pytest.fixture(scope="module")
def round1() -> Schedule:
    return eight_personas(load_schedule(ROUND1))


@pytest.fixture(scope="module")
def round2() -> Schedule:
    return eight_personas(load_schedule(ROUND2))


@pytest.fixture(scope="module")
def plan1(round1: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar) -> Plan:
    return plan_round(round1, agencies, channels_2015(agencies), personas_for(round1.personas),
                      TEMPLATES, cal)


@pytest.fixture(scope="module")
def plan2(round2: Schedule, plan1: Plan, agencies: tuple[Agency, ...], cal: WorkCalendar) -> Plan:
    return plan_round(round2, agencies, channels_2015(agencies), personas_for(round2.personas),
                      TEMPLATES, cal, already_assigned=plan1.assignments())


# --- the invariants, checked independently of the planner's own bookkeeping -------------------


def office_seconds(s: Schedule, cal: WorkCalendar, a: datetime, b: datetime) -> int:
    """Office time in [a, b), counted day by day."""
    zone, total = ZoneInfo(s.time_zone), 0
    day = a.astimezone(zone).date()
    while day <= b.astimezone(zone).date():
        if cal.is_working_day(day):
            for h in s.office_hours:
                lo = max(a, datetime.combine(day, h.start, zone))
                hi = min(b, datetime.combine(day, h.end, zone))
                total += max(0, int((hi - lo).total_seconds()))
        day += DAY
    return total


def assert_rate(times: list[datetime], limit: int | None, width: timedelta, what: str) -> None:
    if limit is None:
        return
    times = sorted(times)
    for k in range(len(times) - limit):
        assert times[k + limit] - times[k] >= width, f"{what}: {limit + 1} within {width}"


def domain_of(channel: Channel) -> str:
    if channel.address:
        return channel.address.rpartition("@")[2]
    return "form:" + (urlsplit(channel.form_url or "").hostname or "")


def assert_plan_holds(
    plan: Plan, s: Schedule, cal: WorkCalendar, agencies: Sequence[Agency],
    templates: Mapping[str, TemplateInfo], already: Collection[tuple[str, str]] = (),
) -> None:
    zone, probes, lim = ZoneInfo(s.time_zone), plan.probes, s.limits
    assert [p.send_at for p in probes] == sorted(p.send_at for p in probes)
    width = max(4, len(str(len(probes))))
    assert [p.probe_id for p in probes] == [f"{s.id}-{n:0{width}d}" for n in
                                            range(1, len(probes) + 1)]
    for p in probes:
        assert p.send_at.utcoffset() == timedelta(0)
        local = p.send_at.astimezone(zone)
        assert s.start <= local.date() <= s.end
        assert cal.is_working_day(local.date()), p
        assert any(h.start <= local.time() < h.end for h in s.office_hours), local
        assert p.persona in s.personas and p.template in s.templates and p.round == s.id
        assert p.channel.kind in templates[p.template].kinds and p.channel.agency == p.agency
    by_agency: dict[str, list[datetime]] = defaultdict(list)
    by_domain: dict[str, list[datetime]] = defaultdict(list)
    for p in probes:
        by_agency[p.agency].append(p.send_at)
        by_domain[domain_of(p.channel)].append(p.send_at)
    for times in by_agency.values():
        times.sort()
        for a, b in itertools.pairwise(times):
            assert office_seconds(s, cal, a, b) >= lim.min_gap_seconds
    everything = [p.send_at for p in probes]
    assert_rate(everything, lim.overall_per_hour, HOUR, "overall per hour")
    assert_rate(everything, lim.overall_per_day, DAY, "overall per day")
    for domain, times in by_domain.items():
        assert_rate(times, lim.per_domain_per_hour, HOUR, f"{domain} per hour")
        assert_rate(times, lim.per_domain_per_day, DAY, f"{domain} per day")
    pairs = [(p.persona, p.agency) for p in probes]
    assert len(set(pairs)) == len(pairs), "a persona writes twice to one agency"
    assert not set(pairs) & set(already), "a persona writes again to an agency of a past round"
    assert_quotas_met(plan, s, agencies)
    assert_summary_adds_up(plan, s, agencies)


def assert_quotas_met(plan: Plan, s: Schedule, agencies: Sequence[Agency]) -> None:
    """Every selected agency gets its quota of each kind, or the shortfall is listed."""
    sent = Counter((p.agency, p.channel.kind) for p in plan.probes)
    skipped = {(x.agency, x.kind): x.count for x in plan.skipped}
    for a in agencies:
        chosen = (a.level in s.levels and (not s.agencies.cities or a.city in s.agencies.cities)
                  and (not s.agencies.names or a.name in s.agencies.names)
                  and (a.opened or not s.agencies.opened_only))
        for q in s.quotas_for(a.level):
            got = sent[a.name, q.kind] + skipped.get((a.name, q.kind), 0)
            assert got == (q.per_agency if chosen else 0), (a.name, q.kind)


def assert_summary_adds_up(plan: Plan, s: Schedule, agencies: Sequence[Agency]) -> None:
    summary, n = plan.summary, len(plan.probes)
    level = {a.name: a.level for a in agencies}
    assert sum(summary.per_day.values()) == sum(summary.per_persona.values()) == n
    assert sum(summary.per_template.values()) == sum(summary.per_level.values()) == n
    assert summary.skipped == sum(x.count for x in plan.skipped)
    for lv, counts in summary.persona_by_level.items():
        mine = Counter(p.persona for p in plan.probes if level[p.agency] is lv)
        assert counts == {pid: mine[pid] for pid in s.personas}
        assert summary.persona_balance[lv] == max(counts.values()) - min(counts.values())
    for (lv, kind), counts in summary.template_by_level_kind.items():
        mine = Counter(p.template for p in plan.probes
                       if level[p.agency] is lv and p.channel.kind == kind)
        assert sum(counts.values()) == sum(mine.values())
        assert summary.template_balance[lv, kind] == max(counts.values()) - min(counts.values())
    if plan.probes:
        assert plan.closes_on is not None


# --- the schedule files -----------------------------------------------------------------------


def test_both_2015_schedule_files_load() -> None:
    round1, round2 = load_schedule(ROUND1), load_schedule(ROUND2)
    assert (round1.id, round1.start, round1.end) == ("2015-r1", date(2015, 11, 2),
                                                     date(2015, 11, 14))
    assert (round2.id, round2.start, round2.end) == ("2015-r2", date(2015, 11, 25),
                                                     date(2015, 12, 9))
    assert round2.previous_rounds == ("2015-r1",) and round1.previous_rounds == ()
    for s in (round1, round2):
        assert s.time_zone == "Asia/Shanghai" and s.reply_window_working_days == 15
        assert [str(h) for h in s.office_hours] == ["09:00-12:00", "14:30-17:30"]
        assert {(q.level, q.kind) for q in s.quotas} == {
            (Level.CITY, ZX), (Level.CITY, TS), (Level.COUNTY, ZX), (Level.COUNTY, JD)}
        assert s.agencies.opened_only and set(s.levels) == {Level.CITY, Level.COUNTY}
        assert len(s.templates) == 10 and set(s.templates) <= set(TEMPLATES)
    assert round1.personas == round2.personas
    assert not set(round1.templates) & set(round2.templates)  # round 2: other wordings
    assert round1.seed != round2.seed


# --- the 2015 rounds replayed -----------------------------------------------------------------


def test_round1_replayed_keeps_every_rule(
    plan1: Plan, round1: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar
) -> None:
    assert_plan_holds(plan1, round1, cal, agencies, TEMPLATES)
    assert len(plan1.probes) == 22 * 2 + 96
    assert dict(plan1.summary.per_level) == {Level.CITY: 44, Level.COUNTY: 96}
    # The test directory has no supervision channels: every opened county is listed, not dropped.
    assert len(plan1.skipped) == 96
    assert {(x.level, x.kind, x.reason) for x in plan1.skipped} == {
        (Level.COUNTY, JD, "no supervision (监督) channel")}
    assert all(n <= 1 for n in plan1.summary.persona_balance.values())
    assert all(n <= 1 for n in plan1.summary.template_balance.values())
    # Spread: every one of the ten working days carries its share.
    assert len(plan1.summary.per_day) == 10
    assert min(plan1.summary.per_day.values()) >= 140 // 10 - 3
    office = round1.office_time(cal)
    assert all(office.contains(p.send_at) for p in plan1.probes)


def test_round1_stays_open_fifteen_working_days_after_its_last_probe(
    plan1: Plan, cal: WorkCalendar
) -> None:
    last = plan1.probes[-1].send_at
    assert plan1.closes_on == cal.deadline(last, 15).last_day
    assert plan1.closes_on == date(2015, 12, 4)  # last probe on Friday 11-13


def test_round2_never_writes_twice_to_an_agency_of_round1(
    plan1: Plan, plan2: Plan, round2: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar
) -> None:
    assert_plan_holds(plan2, round2, cal, agencies, TEMPLATES, plan1.assignments())
    both = plan1.assignments() + plan2.assignments()
    assert len(both) == len(set(both)) == 280
    assert all(n <= 1 for n in plan2.summary.persona_balance.values())
    assert all(n <= 1 for n in plan2.summary.template_balance.values())


def test_the_same_seed_gives_the_same_plan_and_another_seed_another(
    round1: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar, plan1: Plan
) -> None:
    args = (agencies, channels_2015(agencies), personas_for(round1.personas), TEMPLATES, cal)
    assert plan_round(round1, *args) == plan1
    other = plan_round(dataclasses.replace(round1, seed=round1.seed + 1), *args)
    assert [p.send_at for p in other.probes] != [p.send_at for p in plan1.probes]
    assert ({(p.persona, p.agency, p.template) for p in other.probes}
            != {(p.persona, p.agency, p.template) for p in plan1.probes})


def test_details_are_asked_for_each_probe_with_its_id_and_local_day(
    round1: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar
) -> None:
    def details(probe_id: str, agency: Agency, day: date) -> Mapping[str, str]:
        return {"ref": f"{probe_id}/{agency.name}", "day": day.isoformat()}

    plan = plan_round(round1, agencies, channels_2015(agencies), personas_for(round1.personas),
                      TEMPLATES, cal, details=details)
    zone = ZoneInfo("Asia/Shanghai")
    for p in plan.probes:
        assert p.details == {"ref": f"{p.probe_id}/{p.agency}",
                             "day": p.send_at.astimezone(zone).date().isoformat()}


def test_web_forms_are_planned_and_unusable_channels_are_listed(cal: WorkCalendar) -> None:
    agencies = [Agency("甲市", Level.CITY, "甲市", "https://a.test/", 2),
                Agency("乙市", Level.CITY, "乙市", "https://b.test/", 3)]
    channels = [Channel("甲市", ZX, form_url="https://hd.a.test/zx"),
                Channel("甲市", TS, "ts@a.test"),
                Channel("乙市", ZX)]  # neither an address nor a form
    s = small_schedule(quotas=(Quota(Level.CITY, ZX, 1), Quota(Level.CITY, TS, 1)))
    plan = plan_round(s, agencies, channels, personas_for(s.personas), TEMPLATES, cal)
    assert sorted((p.agency, p.channel.kind) for p in plan.probes) == [("甲市", TS), ("甲市", ZX)]
    assert [(x.agency, x.kind, x.reason) for x in plan.skipped] == [
        ("乙市", ZX, "its consultation (咨询) channel has neither an email address nor a web form"),
        ("乙市", TS, "no complaint (投诉) channel")]
    assert set(plan.summary.per_domain) == {"form:hd.a.test", "a.test"}
    assert_plan_holds(plan, s, cal, agencies, TEMPLATES)


def test_planning_a_thousand_probes_takes_well_under_a_second(cal: WorkCalendar) -> None:
    agencies = [Agency(f"单位{i:03d}", Level.COUNTY if i % 5 else Level.CITY, f"市{i % 21}",
                       "https://x.test/", i) for i in range(500)]
    channels = [Channel(a.name, kind, f"{kind.value}{a.line}@d{a.line % 60}.test")
                for a in agencies for kind in (ZX, TS)]
    s = small_schedule(
        start=date(2015, 11, 2), end=date(2015, 11, 27),
        quotas=tuple(Quota(lv, k, 1) for lv in Level for k in (ZX, TS)),
        limits=Limits(6, 2, 6, 12))
    began = stopwatch.perf_counter()
    plan = plan_round(s, agencies, channels, personas_for(s.personas), TEMPLATES, cal)
    assert stopwatch.perf_counter() - began < 0.5
    assert len(plan.probes) == 1000
    assert_plan_holds(plan, s, cal, agencies, TEMPLATES)


def test_the_summary_reads_as_rows(plan1: Plan) -> None:
    rows = plan1.summary.rows()
    assert ("level", "city", 44) in rows and ("level", "county", 96) in rows
    assert ("day", "2015-11-02", plan1.summary.per_day[date(2015, 11, 2)]) in rows
    assert ("skipped", "probes", 96) in rows
    assert {section for section, _, _ in rows} == {
        "day", "persona", "template", "level", "city", "kind", "domain", "persona_balance",
        "template_balance", "skipped"}


def test_office_time_includes_the_opening_minute_and_not_the_closing_one(
    round1: Schedule, cal: WorkCalendar
) -> None:
    office, zone = round1.office_time(cal), ZoneInfo("Asia/Shanghai")
    monday, saturday = date(2015, 11, 2), date(2015, 11, 7)
    assert office.contains(datetime.combine(monday, time(9), zone))
    assert not office.contains(datetime.combine(monday, time(12), zone))
    assert office.contains(datetime.combine(monday, time(17, 29, 59), zone))
    assert not office.contains(datetime.combine(saturday, time(10), zone))
    assert office.total == 10 * 6 * 3600 and len(office.days) == 10


def test_the_planner_is_pure() -> None:
    tree = ast.parse((ROOT / "mailprobe" / "plan.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"asyncio", "sqlalchemy", "aiosmtplib", "aioimaplib", "apscheduler",
                           "smtplib", "imaplib", "os", "time", "pathlib", "socket"}
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not {c for c in calls if c.endswith((".now", ".today", ".utcnow", "open"))}
    assert "random.seed" not in calls and "random.random" not in calls


# --- errors: one line, naming the file and the key --------------------------------------------


def small_schedule(**changes: object) -> Schedule:
    base: dict[str, object] = dict(
        id="t-r1", name="test round", start=date(2015, 11, 2), end=date(2015, 11, 6), seed=7,
        personas=("p1", "p2", "p3"), templates=tuple(TEMPLATES),
        quotas=(Quota(Level.CITY, ZX, 1),), source="schedules/test.toml")
    base.update(changes)
    return Schedule(**base)  # type: ignore[arg-type]


def assert_one_line(error: ConfigError, source: str, key: str, *words: str) -> None:
    text = str(error)
    assert "\n" not in text
    assert text.startswith(f"{source}: {key}: "), text
    for word in words:
        assert word in text, (word, text)


@pytest.mark.parametrize(("old", "new", "key", "words"), [
    ("end = 2015-11-14", "end = 2015-10-30", "window.end",
     ("ends before it starts", "2015-11-02", "2015-10-30")),
    ("jitter_minutes = 20", "jitter = 20", "window.jitter", ("unknown key",)),
    ('"09:00-12:00", ', '"9h-12h", ', "window.office_hours", ("9h-12h",)),
    ('["09:00-12:00", "14:30-17:30"]', '["14:30-17:30", "09:00-12:00"]', "window.office_hours",
     ("out of order",)),
    ("supervision = 1", "letters = 1", "probes.county.letters", ("unknown channel kind",)),
    ("seed = 20151101", 'seed = "x"', "round.seed", ("not an integer",)),
    ('levels = ["city", "county"]', 'levels = ["city", "province"]', "agencies.levels",
     ("province",)),
    ("per_domain_per_hour = 2", "per_domain_per_hour = 0", "limits.per_domain_per_hour",
     ("an integer >= 1",)),
])
def test_schedule_file_errors_name_the_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, words: tuple[str, ...]
) -> None:
    text = ROUND1.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "round.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_schedule(path)
    assert_one_line(caught.value, str(path), key, *words)


@pytest.mark.parametrize(("old", "new", "key", "words"), [
    ('"wu-lihua"', '"ghost"', "assign.personas", ("unknown persona ghost",)),
    ('"odour_factory_1"', '"odor"', "assign.templates", ("unknown template odor",)),
    ("cities = []", 'cities = ["火星市"]', "agencies.cities", ("unknown city 火星市",)),
    ("names = []", 'names = ["广州市", "不存在局"]', "agencies.names",
     ("unknown agency 不存在局",)),
    ("names = []", 'names = ["深圳市第04县区"]', "agencies.names", ("opened_only",)),
])
def test_plan_errors_name_the_schedule_file_and_key(
    tmp_path: Path, agencies: tuple[Agency, ...], cal: WorkCalendar, old: str, new: str,
    key: str, words: tuple[str, ...]
) -> None:
    text = ROUND1.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "round.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    s = load_schedule(path)
    with pytest.raises(ConfigError) as caught:
        plan_round(s, agencies, channels_2015(agencies), personas_for(load_schedule(ROUND1)
                   .personas), TEMPLATES, cal)
    assert_one_line(caught.value, str(path), key, *words)


@pytest.mark.parametrize(("limits", "end", "key", "words"), [
    (Limits(6, 2, 3, 12), 14, "limits.per_domain_per_day",
     ("34 probes to dg.gd.test", "at most 30 over 10 working days")),
    (Limits(6, 1, 10, 12), 6, "limits.per_domain_per_hour",
     ("34 probes to dg.gd.test", "at most 30 over 30 office hours")),
    (Limits(6, 2, 10, 2), 14, "limits.overall_per_hour", ("140 probes in all", "at most 120")),
    (Limits(6, 2, 10, 12, 13), 14, "limits.overall_per_day", ("at most 130",)),
    (Limits(31, 2, 10, 12), 6, "limits.min_gap_working_hours", ("2 probes to",)),
])
def test_a_round_that_cannot_fit_names_the_limit_that_binds(
    round1: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar, limits: Limits, end: int,
    key: str, words: tuple[str, ...]
) -> None:
    s = dataclasses.replace(round1, limits=limits, end=date(2015, 11, end))
    with pytest.raises(ConfigError) as caught:
        plan_round(s, agencies, channels_2015(agencies), personas_for(s.personas), TEMPLATES, cal)
    assert_one_line(caught.value, str(ROUND1), key, "does not fit its window", *words)


def test_a_round_that_only_greed_cannot_fit_is_packed_instead(cal: WorkCalendar) -> None:
    # Three probes to one agency 14 working hours apart fit a 30-hour window only at its edges.
    agency = [Agency("甲市", Level.CITY, "甲市", "https://a.test/", 2)]
    channels = [Channel("甲市", ZX, f"zx{i}@a.test") for i in range(3)]
    s = small_schedule(quotas=(Quota(Level.CITY, ZX, 3),), limits=Limits(14, 2, 8, 20))
    plan = plan_round(s, agency, channels, personas_for(s.personas), TEMPLATES, cal)
    assert_plan_holds(plan, s, cal, agency, TEMPLATES)
    with pytest.raises(ConfigError) as caught:
        plan_round(dataclasses.replace(s, limits=Limits(15, 2, 8, 20)), agency, channels,
                   personas_for(s.personas), TEMPLATES, cal)
    assert_one_line(caught.value, "schedules/test.toml", "limits.min_gap_working_hours")


def test_too_few_personas_says_how_many_are_needed(
    round1: Schedule, round2: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar
) -> None:
    args = (agencies, channels_2015(agencies))
    one = dataclasses.replace(round1, personas=round1.personas[:1])
    with pytest.raises(ConfigError) as caught:
        plan_round(one, *args, personas_for(one.personas), TEMPLATES, cal)
    assert_one_line(caught.value, str(ROUND1), "assign.personas",
                    "gets 2 probes", "at least 2 personas", "got 1")
    three = round1.personas[:3]
    first = plan_round(dataclasses.replace(round1, personas=three), *args, personas_for(three),
                       TEMPLATES, cal)
    with pytest.raises(ConfigError) as caught:
        plan_round(dataclasses.replace(round2, personas=three), *args, personas_for(three),
                   TEMPLATES, cal, already_assigned=first.assignments())
    assert_one_line(caught.value, str(ROUND2), "assign.personas",
                    "2 of the listed personas already wrote to it", "at least 4 personas")


def test_a_kind_without_a_fitting_template_is_refused(
    round1: Schedule, agencies: tuple[Agency, ...], cal: WorkCalendar
) -> None:
    s = dataclasses.replace(round1, templates=_CONSULTATIONS[:2])
    with pytest.raises(ConfigError) as caught:
        plan_round(s, agencies, channels_2015(agencies), personas_for(s.personas), TEMPLATES, cal)
    assert_one_line(caught.value, str(ROUND1), "assign.templates",
                    "no listed template fits complaint (投诉)")


def test_a_window_without_working_days_is_refused(cal: WorkCalendar) -> None:
    agency = [Agency("甲市", Level.CITY, "甲市", "https://a.test/", 2)]
    s = small_schedule(start=date(2016, 2, 7), end=date(2016, 2, 13))  # 春节 2016
    with pytest.raises(ConfigError) as caught:
        plan_round(s, agency, [Channel("甲市", ZX, "zx@a.test")], personas_for(s.personas),
                   TEMPLATES, cal)
    assert_one_line(caught.value, "schedules/test.toml", "window.end", "no working day")


def test_schedules_built_in_code_are_validated_too() -> None:
    with pytest.raises(ConfigError) as caught:
        small_schedule(end=date(2015, 11, 1))
    assert_one_line(caught.value, "schedules/test.toml", "window.end", "2015-11-02", "2015-11-01")
    with pytest.raises(ConfigError, match="level county is selected but gets no probes"):
        small_schedule(agencies=dataclasses.replace(
            load_schedule(ROUND1).agencies, levels=(Level.CITY, Level.COUNTY)))


# --- property: any small directory and window is planned within the rules, or refused --------

_HOURS = [(OfficeHours(time(9), time(12)), OfficeHours(time(14, 30), time(17, 30))),
          (OfficeHours(time(9), time(17)),), (OfficeHours(time(10), time(10, 45)),)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Agency], list[Channel], Mapping[str, TemplateInfo],
                                       dict[str, object], list[tuple[str, str]]]:
    agencies: list[Agency] = []
    for c in range(draw(st.integers(1, 3))):
        city = f"市{c}"
        agencies.append(Agency(city, Level.CITY, city, "https://c.test/", len(agencies) + 2))
        for k in range(draw(st.integers(0, 4))):
            site = draw(st.sampled_from(["https://k.test/", None]))
            agencies.append(Agency(f"{city}县{k}", Level.COUNTY, city, site, len(agencies) + 2))
    channels = []
    for a in agencies:
        for kind in sorted(draw(st.sets(st.sampled_from(list(ChannelKind)), max_size=4))):
            where = draw(st.sampled_from(["own", "city", "shared", "form", "none"]))
            address = {"own": f"{kind.value}@{a.name}.test", "city": f"{a.name}@{a.city}.test",
                       "shared": f"{a.name}{kind.value}@shared.test"}.get(where)
            form = "https://form.test/x" if where == "form" else None
            channels.append(Channel(a.name, kind, address, form))
    kinds = st.sets(st.sampled_from(list(ChannelKind)), min_size=1)
    templates = {f"t{i}": TemplateInfo(frozenset(draw(kinds)))
                 for i in range(draw(st.integers(1, 4)))}
    if draw(st.booleans()):  # often one template fits every kind, so more rounds get planned
        templates["t-any"] = TemplateInfo(frozenset(ChannelKind))
    personas = [f"p{i}" for i in range(draw(st.integers(1, 5)))]
    quotas = tuple(Quota(lv, k, draw(st.integers(1, 2)))
                   for lv in Level for k in sorted(draw(st.sets(st.sampled_from(list(ChannelKind)),
                                                                min_size=1, max_size=2))))
    start = date(2015, 1, 1) + timedelta(days=draw(st.integers(0, 700)))
    fields: dict[str, object] = dict(
        start=start, end=start + timedelta(days=draw(st.integers(0, 2) | st.integers(3, 14))),
        seed=draw(st.integers(0, 2**32)), personas=tuple(personas), templates=tuple(templates),
        quotas=quotas, office_hours=draw(st.sampled_from(_HOURS)),
        jitter_minutes=draw(st.integers(0, 60)),
        limits=Limits(draw(st.sampled_from([0, 0.5, 3, 6, 9])), draw(st.integers(1, 3)),
                      draw(st.integers(1, 6)), draw(st.integers(1, 6)),
                      draw(st.none() | st.integers(2, 20))))
    already = draw(st.lists(st.tuples(st.sampled_from(personas),
                                      st.sampled_from([a.name for a in agencies])), max_size=4))
    return agencies, channels, templates, fields, already


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_small_round_keeps_every_rule_or_is_refused(
    scenario: tuple[list[Agency], list[Channel], Mapping[str, TemplateInfo], dict[str, object],
                    list[tuple[str, str]]],
) -> None:
    agencies, channels, templates, fields, already = scenario
    cal = default_calendar()
    try:
        s = small_schedule(**fields)
        plan = plan_round(s, agencies, channels, personas_for(s.personas), templates, cal,
                          already_assigned=already)
    except ConfigError as error:
        assert "\n" not in str(error) and error.location and error.source
        return
    assert_plan_holds(plan, s, cal, agencies, templates, already)
    assert plan == plan_round(s, agencies, channels, personas_for(s.personas), templates, cal,
                              already_assigned=already)
    if not already:
        assert all(n <= 1 for n in plan.summary.persona_balance.values())
    assert all(n <= 1 for n in plan.summary.template_balance.values())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(0, 3), st.integers(0, 2**32), st.integers(0, 20))
def test_a_round_with_room_to_spare_is_always_planned(
    n_agencies: int, extra_personas: int, seed: int, offset: int
) -> None:
    cal = default_calendar()
    agencies = [Agency(f"局{i}", Level.CITY, f"市{i % 3}", "https://x.test/", i)
                for i in range(n_agencies)]
    channels = [Channel(a.name, k, f"{k.value}{a.line}@{a.city}.test")
                for a in agencies for k in (ZX, TS)]
    start = date(2015, 3, 2) + timedelta(days=offset)
    s = small_schedule(start=start, end=start + timedelta(days=6), seed=seed,
                       personas=tuple(f"p{i}" for i in range(2 + extra_personas)),
                       quotas=(Quota(Level.CITY, ZX, 1), Quota(Level.CITY, TS, 1)),
                       limits=Limits(1, 4, 24, 30))
    plan = plan_round(s, agencies, channels, personas_for(s.personas), TEMPLATES, cal)
    assert len(plan.probes) == 2 * n_agencies
    assert_plan_holds(plan, s, cal, agencies, TEMPLATES)
    assert all(n <= 1 for n in plan.summary.persona_balance.values())
