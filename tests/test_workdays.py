"""The work calendar: 2015 golden cases, the 民法典 counting rule, overrides and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprobe.errors import CalendarError, ConfigError, InputError
from mailprobe.paths import config_dir
from mailprobe.workdays import (
    DayKind,
    WorkCalendar,
    default_calendar,
    load_calendar,
    package_known_years,
    parse_when,
)

CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return default_calendar()


def at(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calendar.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the 2015 notices (国办发明电〔2014〕28号; 〔2015〕1号 for September 3) ------------------


def test_2015_make_up_working_days(cal: WorkCalendar) -> None:
    assert date(2015, 1, 4).weekday() == 6 and cal.is_working_day(date(2015, 1, 4))
    assert date(2015, 10, 10).weekday() == 5 and cal.is_working_day(date(2015, 10, 10))
    assert cal.day_kind(date(2015, 10, 10)) is DayKind.MAKEUP_WORKDAY
    assert cal.weekend_workdays(2015) == (
        date(2015, 1, 4), date(2015, 2, 15), date(2015, 2, 28), date(2015, 9, 6),
        date(2015, 10, 10),
    )


def test_2015_victory_day_days_off(cal: WorkCalendar) -> None:
    for day in (date(2015, 9, 3), date(2015, 9, 4)):
        assert day.weekday() < 5
        assert cal.day_kind(day) is DayKind.HOLIDAY


def test_fifteenth_working_day_after_2015_09_30(cal: WorkCalendar) -> None:
    d = cal.deadline(date(2015, 9, 30), 15)
    assert d.last_day == date(2015, 10, 27)
    assert d.ends_at == datetime(2015, 10, 28, tzinfo=CST)
    assert cal.between(date(2015, 9, 30), date(2015, 10, 27)).working_days == 15
    sent = at("2015-09-30T17:00+08:00")
    assert cal.between(sent, at("2015-10-27T23:59:59+08:00")).working_days == 15
    assert cal.between(sent, at("2015-10-28T00:00+08:00")).working_days == 16


def test_reply_on_a_rest_day_after_the_deadline_is_late(cal: WorkCalendar) -> None:
    # Sent Friday 2015-11-06: the 5th working day is Friday 11-13, over at 24:00.
    count = cal.between(date(2015, 11, 6), at("2015-11-14T10:00+08:00"))
    assert (count.working_days, count.within) == (5, 6)
    assert cal.deadline(date(2015, 11, 6), 5).last_day == date(2015, 11, 13)
    on_time = cal.between(date(2015, 11, 6), date(2015, 11, 13))
    assert (on_time.working_days, on_time.within) == (5, 5)
    saturday = cal.between(date(2015, 11, 6), date(2015, 11, 7))
    assert (saturday.working_days, saturday.within) == (0, 1)


@pytest.mark.parametrize(
    ("sent", "last_day"),
    [
        # round 1: probes sent 2015-11-02 .. 11-14
        ("2015-11-02T09:00+08:00", date(2015, 11, 23)),
        ("2015-11-06T18:30+08:00", date(2015, 11, 27)),
        ("2015-11-13T10:00+08:00", date(2015, 12, 4)),
        ("2015-11-14T10:00+08:00", date(2015, 12, 4)),  # a Saturday: counting starts Monday
        # round 2: probes sent 2015-11-25 .. 12-09
        ("2015-11-25T09:00+08:00", date(2015, 12, 16)),
        ("2015-12-01T09:00+08:00", date(2015, 12, 22)),
        ("2015-12-09T09:00+08:00", date(2015, 12, 30)),
        # across New Year: 2016-01-01 is a day off
        ("2015-12-11T09:00+08:00", date(2016, 1, 4)),
    ],
)
def test_2015_round_deadlines(cal: WorkCalendar, sent: str, last_day: date) -> None:
    assert cal.deadline(at(sent), 15).last_day == last_day
    assert cal.between(at(sent), last_day).working_days == 15


def test_same_day_reply_is_zero_and_next_day_is_one(cal: WorkCalendar) -> None:
    sent = at("2015-11-02T09:00+08:00")
    assert cal.between(sent, at("2015-11-02T23:59:59+08:00")).working_days == 0
    assert cal.between(sent, at("2015-11-03T00:00:01+08:00")).working_days == 1
    assert cal.deadline(sent, 0).last_day == date(2015, 11, 2)


def test_package_counts_both_ends_we_do_not(cal: WorkCalendar) -> None:
    import holidays

    china = holidays.China(years=2015)
    start, end = date(2015, 11, 2), date(2015, 11, 6)
    assert china.get_working_days_count(start, end) == 5
    assert cal.between(start, end).working_days == 4


def test_dates_are_taken_in_shanghai_whatever_the_input_zone(cal: WorkCalendar) -> None:
    # 20:00 UTC on Sunday 1 November is 04:00 on Monday 2 November in Shanghai.
    sent = at("2015-11-01T20:00Z")
    assert cal.local_date(sent) == date(2015, 11, 2)
    assert cal.between(sent, at("2015-11-02T15:59:59Z")).working_days == 0
    assert cal.between(sent, at("2015-11-02T16:00Z")).working_days == 1
    assert cal.between(sent, at("2015-11-02T11:00-05:00")).working_days == 1


def test_reply_before_sending_is_refused(cal: WorkCalendar) -> None:
    with pytest.raises(CalendarError, match="the end is before the start"):
        cal.between(at("2015-11-02T10:00+08:00"), at("2015-11-02T09:00+08:00"))
    with pytest.raises(CalendarError, match="the end is before the start"):
        cal.between(date(2015, 11, 3), date(2015, 11, 2))


def test_explanation_names_every_skipped_day(cal: WorkCalendar) -> None:
    e = cal.explain(date(2015, 9, 30), date(2015, 10, 12))
    assert e.working_days == 4
    skipped = {n.day: (n.kind, n.name) for n in e.skipped}
    assert skipped[date(2015, 10, 1)] == (DayKind.HOLIDAY, "国庆节")
    assert skipped[date(2015, 10, 4)] == (DayKind.WEEKEND, None)
    assert skipped[date(2015, 10, 7)][1] == "休息日（由 2015-10-10 调休）"
    assert e.makeup_workdays == (date(2015, 10, 10),)
    counted = [(n.day, n.number) for n in e.days if n.counted]
    assert counted == [
        (date(2015, 10, 8), 1), (date(2015, 10, 9), 2), (date(2015, 10, 10), 3),
        (date(2015, 10, 12), 4),
    ]
    assert e.days[0].day == date(2015, 10, 1)  # the day of sending is not listed as counted


# --- errors the user must be able to act on ----------------------------------------------------


def test_naive_datetime_is_an_error_naming_the_fix(cal: WorkCalendar) -> None:
    with pytest.raises(CalendarError) as info:
        cal.between(datetime(2015, 11, 2, 9), date(2015, 11, 10))
    text = str(info.value)
    assert "a date-time without a time zone is ambiguous" in text
    assert "got '2015-11-02T09:00:00'" in text
    assert "input_zone" in text and "+08:00" in text


def test_naive_datetime_accepted_with_an_input_zone(cal: WorkCalendar) -> None:
    utc_input = cal.with_input_zone("UTC")
    # 20:00 UTC is already the next day in Shanghai.
    assert utc_input.local_date(datetime(2015, 11, 1, 20)) == date(2015, 11, 2)
    assert cal.with_input_zone("Asia/Shanghai").between(
        datetime(2015, 9, 30, 9), datetime(2015, 10, 27, 18)
    ).working_days == 15


def test_unknown_year_names_the_override(cal: WorkCalendar) -> None:
    with pytest.raises(CalendarError) as info:
        cal.deadline(date(2026, 12, 20), 15)
    text = str(info.value)
    assert "runs into 2027" in text
    assert "without the official schedule" in text
    assert "[[known_years]] year = 2027" in text
    assert "calendar.toml" in text
    with pytest.raises(CalendarError, match="runs into 2027"):
        cal.between(date(2026, 12, 30), date(2027, 1, 5))
    with pytest.raises(CalendarError, match="runs into 2000"):
        cal.between(date(2000, 6, 1), date(2001, 1, 5))


def test_start_day_in_an_unknown_year_is_not_counted(cal: WorkCalendar) -> None:
    # 2000-12-31 itself is never counted, so 2000 need not be known.
    assert cal.between(date(2000, 12, 31), date(2001, 1, 5)).working_days == 4


def test_package_known_years_are_its_notices() -> None:
    years = package_known_years()
    assert set(range(2010, 2027)) <= years
    assert 2027 not in years


def test_parse_when() -> None:
    assert parse_when("2015-11-02") == date(2015, 11, 2)
    assert parse_when("2015-11-02T09:30Z") == datetime(2015, 11, 2, 9, 30, tzinfo=UTC)
    with pytest.raises(InputError, match=r"not an ISO date or date-time .*got '2015-13-01'"):
        parse_when("2015-13-01")


# --- calendar.toml -------------------------------------------------------------------------------


def test_shipped_calendar_has_no_redundant_correction(cal: WorkCalendar) -> None:
    assert cal.redundant_corrections == ()
    assert cal.version.startswith("holidays-")
    assert "+cal." in cal.version
    assert (config_dir() / "calendar.toml").exists()


def test_declared_year_extends_the_calendar(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[known_years]]
year = 2027
source = "test notice"

[[days_off]]
date = 2027-01-01
name = "元旦"
source = "test notice"
""")
    cal = load_calendar(path)
    assert 2027 in cal.known_years
    assert cal.deadline(date(2026, 12, 20), 15).last_day.year == 2027
    assert cal.version != default_calendar().version


def test_corrections_apply_with_their_source(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[days_off]]
date = "2015-11-03"
name = "test day off"
source = "test notice 1"

[[working_days]]
date = 2015-11-07
source = "test notice 2"

[[days_off]]
date = 2015-10-01
name = "国庆节"
source = "redundant"
""")
    cal = load_calendar(path)
    assert not cal.is_working_day(date(2015, 11, 3))
    assert cal.day_kind(date(2015, 11, 7)) is DayKind.MAKEUP_WORKDAY
    assert cal.between(date(2015, 11, 2), date(2015, 11, 9)).working_days == 5
    notes = {n.day: n for n in cal.explain(date(2015, 11, 2), date(2015, 11, 9)).days}
    assert notes[date(2015, 11, 3)].source == "test notice 1"
    assert notes[date(2015, 11, 7)].name == "调休上班"
    assert [c.day for c in cal.redundant_corrections] == [date(2015, 10, 1)]


def test_provincial_layer(tmp_path: Path) -> None:
    path = write(tmp_path, """
[provinces.GD]
name = "广东省"
[[provinces.GD.days_off]]
date = 2015-11-04
name = "test provincial day off"
source = "test provincial notice"
""")
    assert load_calendar(path).is_working_day(date(2015, 11, 4))
    assert not load_calendar(path, province="GD").is_working_day(date(2015, 11, 4))
    with pytest.raises(ConfigError, match=r"no such provincial layer.*expected one of: GD"):
        load_calendar(path, province="HN")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[days_off]]\ndate = "2015-11-31"\nname = "x"\nsource = "y"\n',
         "days_off[0].date: not a date (expected an ISO date such as 2015-09-03, "
         "got '2015-11-31')"),
        ('[[days_off]]\ndate = 2015-11-30\nname = "x"\n',
         "days_off[0].source: missing or empty text"),
        ('[calendar]\nzone = "Asia/Shanghia"\n', "calendar.zone: unknown time zone"),
        ('[calender]\n', "calender: unknown key"),
        ('[[known_years]]\nyear = "2027"\nsource = "x"\n', "known_years[0].year: not a year"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_calendar(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


# --- cross-checks ------------------------------------------------------------------------------


def test_agrees_with_chinesecalendar_2010_2025(cal: WorkCalendar) -> None:
    chinese_calendar = pytest.importorskip("chinese_calendar")
    day, disagreements = date(2010, 1, 1), []
    while day <= date(2025, 12, 31):
        ours, theirs = cal.is_working_day(day), chinese_calendar.is_workday(day)
        if ours != theirs:
            disagreements.append(f"{day} ({day:%a}): mailprobe {ours}, chinesecalendar {theirs}")
        day += timedelta(days=1)
    # Any date listed here needs a checked entry in config/calendar.toml, with its notice.
    assert disagreements == []


def test_2026_matches_the_state_council_notice(cal: WorkCalendar) -> None:
    # 国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）
    days_off = [
        (1, 1), (1, 2), (1, 3), *[(2, d) for d in range(15, 24)], (4, 4), (4, 5), (4, 6),
        *[(5, d) for d in range(1, 6)], (6, 19), (6, 20), (6, 21), (9, 25), (9, 26), (9, 27),
        *[(10, d) for d in range(1, 8)],
    ]
    for month, day in days_off:
        assert not cal.is_working_day(date(2026, month, day)), (month, day)
    assert cal.weekend_workdays(2026) == tuple(
        date(2026, m, d) for m, d in ((1, 4), (2, 14), (2, 28), (5, 9), (9, 20), (10, 10))
    )


# --- the vectorised path -----------------------------------------------------------------------


def _pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2014-01-01T00:00:00", "s").astype(np.int64)
    stop = np.datetime64("2026-10-01T00:00:00", "s").astype(np.int64)
    sent = rng.integers(start, stop, n)
    replied = sent + rng.integers(0, 50 * 86_400, n)
    out = replied.astype("datetime64[s]")
    out[rng.random(n) < 0.15] = np.datetime64("NaT")
    return sent.astype("datetime64[s]"), out


def _utc(value: np.datetime64) -> datetime:
    return datetime.fromtimestamp(int(value.astype(np.int64)), UTC)


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
def test_batch_matches_scalar(tmp_path: Path, zone: str) -> None:
    cal = default_calendar() if zone == "Asia/Shanghai" else load_calendar(
        write(tmp_path, f'[calendar]\nzone = "{zone}"\n'))
    sent, replied = _pairs(1500, 7)
    batch = cal.count_batch(sent, replied, 15)
    for i in range(len(sent)):
        s = _utc(sent[i])
        deadline = cal.deadline(s, 15)
        assert batch.deadline[i] == np.datetime64(deadline.last_day)
        if np.isnat(replied[i]):
            assert batch.working_days[i] == -1 and not batch.in_time[i]
        else:
            count = cal.between(s, _utc(replied[i]))
            assert batch.working_days[i] == count.working_days
            assert batch.within[i] == count.within
            assert batch.in_time[i] == (count.within <= 15)
            assert batch.in_time[i] == (count.end <= deadline.last_day)


def test_batch_errors_name_the_pair(cal: WorkCalendar) -> None:
    sent = np.array(["2015-11-02T01:00", "2026-12-20T01:00"], dtype="datetime64[s]")
    replied = np.array(["2015-11-03T01:00", "NaT"], dtype="datetime64[s]")
    with pytest.raises(CalendarError, match=r"pair 1: counting 15 working days .* into 2027"):
        cal.count_batch(sent, replied, 15)
    backwards = np.array(["2015-11-02T00:00", "2015-11-02T00:00"], dtype="datetime64[s]")
    with pytest.raises(CalendarError, match="pair 0: the end is before the start"):
        cal.count_batch(sent[:1], backwards[:1], 15)


# --- properties --------------------------------------------------------------------------------

_instants = st.datetimes(
    min_value=datetime(2001, 1, 2), max_value=datetime(2026, 9, 30), timezones=st.just(UTC)
)
_zones = st.integers(min_value=-12 * 4, max_value=14 * 4).map(
    lambda q: timezone(timedelta(minutes=15 * q))
)


@settings(max_examples=200, deadline=None)
@given(start=_instants, n=st.integers(min_value=0, max_value=60))
def test_counting_to_the_nth_deadline_gives_n(start: datetime, n: int) -> None:
    cal = default_calendar()
    d = cal.deadline(start, n)
    assert cal.between(start, d.last_day).working_days == n
    assert cal.between(start, d.ends_at - timedelta(microseconds=1)).working_days == n
    assert n == 0 or cal.is_working_day(d.last_day)


@settings(max_examples=200, deadline=None)
@given(start=_instants, a=st.timedeltas(timedelta(0), timedelta(days=90)),
       b=st.timedeltas(timedelta(0), timedelta(days=90)))
def test_count_is_monotone_in_the_end_instant(start: datetime, a: timedelta, b: timedelta) -> None:
    cal = default_calendar()
    early = cal.between(start, start + min(a, b))
    late = cal.between(start, start + max(a, b))
    assert early.working_days <= late.working_days
    assert early.within <= late.within
    # within is the deadline rule: the reply met the deadline of `within` and not the one before.
    assert late.end <= cal.deadline(start, late.within).last_day
    assert late.within == 0 or late.end > cal.deadline(start, late.within - 1).last_day


@settings(max_examples=200, deadline=None)
@given(start=_instants, gap=st.timedeltas(timedelta(0), timedelta(days=60)), z1=_zones, z2=_zones)
def test_input_zone_never_changes_the_answer(
    start: datetime, gap: timedelta, z1: timezone, z2: timezone
) -> None:
    cal = default_calendar()
    end = start + gap
    expected = cal.between(start, end).working_days
    assert cal.between(start.astimezone(z1), end.astimezone(z2)).working_days == expected
    assert cal.deadline(start.astimezone(z1), 15) == cal.deadline(start, 15)


@settings(max_examples=100, deadline=None)
@given(start=_instants, seconds=st.integers(min_value=0, max_value=86_399))
def test_same_local_day_is_zero(start: datetime, seconds: int) -> None:
    cal = default_calendar()
    local = start.astimezone(cal.zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    later = min(midnight + timedelta(seconds=seconds), midnight + timedelta(hours=23, minutes=59))
    first, second = sorted((local, later))
    assert cal.between(first, second).working_days == 0
