"""calendar.toml: the work calendar's zone, corrections with their notices, and known years."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailprobe.errors import ConfigError
from mailprobe.paths import config_dir

__all__ = [
    "DEFAULT_ZONE",
    "CalendarConfig",
    "Correction",
    "KnownYear",
    "as_date",
    "load_calendar_config",
]

DEFAULT_ZONE = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class Correction:
    """One day the holidays package gets wrong or does not know yet, with its notice."""

    day: date
    working: bool
    name: str
    source: str
    layer: str = "national"


@dataclass(frozen=True, slots=True)
class KnownYear:
    """A year declared complete in calendar.toml (its notice is encoded in the corrections)."""

    year: int
    source: str


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    """calendar.toml, validated: the zone, the corrections in force and the declared years."""

    zone: str = DEFAULT_ZONE
    input_zone: str | None = None
    province: str | None = None
    known_years: tuple[KnownYear, ...] = ()
    corrections: tuple[Correction, ...] = ()
    source: str = "config/calendar.toml"

    def digest(self) -> str:
        """A short hash of everything in the file that changes a count."""
        payload = {
            "zone": self.zone,
            "province": self.province,
            "known_years": [[k.year, k.source] for k in self.known_years],
            "corrections": [
                [c.day.isoformat(), c.working, c.name, c.source, c.layer]
                for c in self.corrections
            ],
        }
        text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


_TOP_KEYS = {"calendar", "known_years", "days_off", "working_days", "provinces"}
_CALENDAR_KEYS = {"zone", "input_zone", "province"}
_DAY_KEYS = {"date", "name", "source"}
_PROVINCE_KEYS = {"name", "days_off", "working_days"}


def _check_keys(table: object, allowed: set[str], source: str, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError("not a table", source=source, location=where.rstrip(".") or "(top)",
                          expected="a TOML table", got=type(table).__name__)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            "unknown key", source=source, location=f"{where}{unknown[0]}",
            expected="one of " + ", ".join(sorted(allowed)), got=unknown[0],
        )


def _text(table: Mapping[str, Any], key: str, source: str, where: str, default: str = "") -> str:
    value = table.get(key, default)
    if isinstance(value, str) and not value.strip() and default:
        return default
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "missing or empty text", source=source, location=f"{where}.{key}",
            expected="a non-empty string", got=value,
        )
    return value.strip()


def as_date(value: object) -> date | None:
    """A TOML value as a calendar date: a TOML date, or text in ISO form; else None."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _day(value: object, source: str, where: str) -> date:
    day = as_date(value)
    if day is not None:
        return day
    raise ConfigError(
        "not a date", source=source, location=f"{where}.date",
        expected="an ISO date such as 2015-09-03", got=value,
    )


def _table_list(value: object, source: str, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(
            "not an array of tables", source=source, location=where,
            expected=f"[[{where}]] entries", got=type(value).__name__,
        )
    return value


def _corrections(raw: Mapping[str, Any], source: str, prefix: str, layer: str) -> list[Correction]:
    found: list[Correction] = []
    for key, working, default_name in (("days_off", False, ""), ("working_days", True, "调休上班")):
        for i, item in enumerate(_table_list(raw.get(key, []), source, f"{prefix}{key}")):
            where = f"{prefix}{key}[{i}]"
            _check_keys(item, _DAY_KEYS, source, f"{where}.")
            day = _day(item.get("date"), source, where)
            name = _text(item, "name", source, where, default_name)
            cite = _text(item, "source", source, where)
            found.append(Correction(day, working, name, cite, layer))
    seen: dict[date, str] = {}
    for c in found:
        if c.day in seen:
            raise ConfigError(
                "the same date is corrected twice", source=source, location=f"{prefix}{c.day}",
                expected="one entry per date and layer", got=f"{seen[c.day]} and {c.name}",
            )
        seen[c.day] = c.name
    return found


def _zone_name(value: object, source: str, key: str, optional: bool) -> str | None:
    if optional and (value is None or value == ""):
        return None
    if isinstance(value, str):
        try:
            ZoneInfo(value)
            return value
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ConfigError(
        "unknown time zone", source=source, location=f"calendar.{key}",
        expected="an IANA zone such as Asia/Shanghai", got=value,
    )


def _known_years(raw: Mapping[str, Any], source: str) -> tuple[KnownYear, ...]:
    years = []
    for i, item in enumerate(_table_list(raw.get("known_years", []), source, "known_years")):
        where = f"known_years[{i}]"
        _check_keys(item, {"year", "source"}, source, f"{where}.")
        year = item.get("year")
        if not isinstance(year, int) or isinstance(year, bool) or not 1950 <= year <= 2200:
            raise ConfigError(
                "not a year", source=source, location=f"{where}.year",
                expected="a year such as 2027", got=year,
            )
        years.append(KnownYear(year, _text(item, "source", source, where)))
    return tuple(years)


def _province_layer(raw: Mapping[str, Any], province: str | None, source: str) -> list[Correction]:
    provinces = raw.get("provinces", {})
    if not isinstance(provinces, dict):
        raise ConfigError("not a table", source=source, location="provinces", got=provinces)
    if province is None:
        return []
    if province not in provinces:
        raise ConfigError(
            "no such provincial layer", source=source, location="calendar.province",
            expected="one of: " + (", ".join(sorted(provinces)) or "(none defined)"), got=province,
            hint=f"add a [provinces.{province}] table or leave calendar.province empty",
        )
    layer = provinces[province]
    _check_keys(layer, _PROVINCE_KEYS, source, f"provinces.{province}.")
    return _corrections(layer, source, f"provinces.{province}.", province)


def load_calendar_config(
    path: str | Path | None = None, *, province: str | None = None
) -> CalendarConfig:
    """Read and validate calendar.toml (config/calendar.toml by default; absent: none)."""
    file = Path(path) if path is not None else config_dir() / "calendar.toml"
    source = str(file)
    if path is None and not file.exists():
        return CalendarConfig(source=source)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("cannot read the calendar file", source=source, got=str(exc)) from exc
    _check_keys(raw, _TOP_KEYS, source, "")
    head = raw.get("calendar", {})
    _check_keys(head, _CALENDAR_KEYS, source, "calendar.")
    chosen = province if province is not None else (head.get("province") or None)
    national = _corrections(raw, source, "", "national")
    regional = _province_layer(raw, chosen, source)
    overridden = {c.day for c in regional}
    return CalendarConfig(
        zone=_zone_name(head.get("zone", DEFAULT_ZONE), source, "zone", False) or DEFAULT_ZONE,
        input_zone=_zone_name(head.get("input_zone"), source, "input_zone", True),
        province=chosen,
        known_years=_known_years(raw, source),
        corrections=tuple(c for c in national if c.day not in overridden) + tuple(regional),
        source=source,
    )


