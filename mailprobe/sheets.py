"""Reading the evaluators' spreadsheets: agency lists and score sheets (CSV or XLSX)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from mailprobe.errors import InputError, RubricError, SheetError
from mailprobe.rubric import Rubric

__all__ = [
    "Agency",
    "Level",
    "ScoreSheet",
    "read_agencies",
    "read_score_sheet",
    "read_table",
    "write_score_sheet",
]

_AGENCY_HEADERS = ("单位", "单位名称", "agency", "name")
_ROUND_HEADERS = ("轮次", "round")
_NO_SITE = {"", "无", "未开通", "none", "-", "—"}


class Level(StrEnum):
    CITY = "city"
    COUNTY = "county"

    @classmethod
    def parse(cls, text: str) -> Level | None:
        t = text.strip().lower()
        return {"city": cls.CITY, "市级": cls.CITY, "地市": cls.CITY, "地级市": cls.CITY,
                "county": cls.COUNTY, "县级": cls.COUNTY, "县区级": cls.COUNTY,
                "县区": cls.COUNTY}.get(t)


@dataclass(frozen=True)
class Agency:
    name: str
    level: Level
    city: str  # the parent city for a county; the city itself for a city-level site
    website: str | None  # None: no site (未开通)
    line: int

    @property
    def opened(self) -> bool:
        return self.website is not None


@dataclass(frozen=True)
class ScoreSheet:
    """A score sheet as columns: one row per agency and round.

    ``points`` maps a leaf index to its points column; ``observed`` maps (leaf index,
    observation name) to a column of counts. Empty cells are NaN (not scored in that
    round). ``lines`` holds each row's line (CSV) or row number (XLSX) for errors.
    """

    source: str
    agency: np.ndarray  # object array of names
    round: np.ndarray  # int64
    lines: np.ndarray  # int64
    points: dict[int, np.ndarray]
    observed: dict[tuple[int, str], np.ndarray]
    labels: dict[object, str]  # column key -> header as written

    @property
    def n_rows(self) -> int:
        return int(self.agency.shape[0])


def _label(path: Path, sheet: str | None) -> str:
    return f"{path}[{sheet}]" if sheet else str(path)


def read_table(path: str | Path, *, sheet: str | None = None) -> pd.DataFrame:
    """A CSV or XLSX file as a DataFrame; only empty cells are missing values."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", source=p, expected="a CSV or XLSX file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            frame = pd.read_excel(p, sheet_name=sheet or 0, engine="openpyxl",
                                  keep_default_na=False, na_values=[""])
        elif suffix in (".csv", ".txt"):
            frame = pd.read_csv(p, keep_default_na=False, na_values=[""],
                                skipinitialspace=True, encoding="utf-8-sig")
        else:
            raise InputError("unknown file type", source=p, expected=".csv or .xlsx",
                             got=suffix or "no suffix")
    except (ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read it: {exc}", source=_label(p, sheet),
                         expected="a UTF-8 CSV or an XLSX workbook") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise InputError("a column appears twice", source=_label(p, sheet),
                         location=f"column {dupes[0]}", expected="unique column names")
    return frame


def _find_column(frame: pd.DataFrame, names: Sequence[str], source: str, what: str) -> str:
    for name in names:
        if name in frame.columns:
            return name
    raise InputError(f"no {what} column", source=source, location="header row",
                     expected=" or ".join(repr(n) for n in names),
                     got=", ".join(map(str, frame.columns[:8])))


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _names(series: pd.Series) -> np.ndarray:
    """A name column as stripped text (vectorised: a sheet may hold 200,000 rows)."""
    # Strip each distinct name once: every agency appears once per round.
    codes, uniques = pd.factorize(series, use_na_sentinel=False)
    stripped = np.array([_text(u) for u in uniques], dtype=object)
    return stripped[codes]


def read_agencies(path: str | Path, *, sheet: str | None = None) -> tuple[Agency, ...]:
    """The list of agencies: name, level, parent city, website (or none: 未开通)."""
    frame = read_table(path, sheet=sheet)
    source = _label(Path(path), sheet)
    c_name = _find_column(frame, _AGENCY_HEADERS, source, "agency name")
    c_level = _find_column(frame, ("级别", "level"), source, "level")
    c_city = _find_column(frame, ("所属地市", "地市", "city"), source, "parent city")
    c_site = _find_column(frame, ("网站", "website", "url"), source, "website")
    agencies: list[Agency] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(frame.itertuples(index=False), start=2):
        values = dict(zip(frame.columns, row, strict=True))
        name = _text(values[c_name])
        if not name:
            raise InputError("empty agency name", source=source,
                             location=f"row {i}, column {c_name}",
                             expected="a name")
        if name in seen:
            raise InputError(f"agency {name} is listed twice (rows {seen[name]} and {i})",
                             source=source, location=f"row {i}, column {c_name}",
                             expected="one row per agency")
        seen[name] = i
        level_text = _text(values[c_level])
        level = Level.parse(level_text)
        if level is None:
            raise InputError("unknown level", source=source, location=f"row {i}, column {c_level}",
                             expected="市级/city or 县级/county", got=level_text)
        city = _text(values[c_city]) or (name if level is Level.CITY else "")
        if not city:
            raise InputError("a county needs its parent city", source=source,
                             location=f"row {i}, column {c_city}", expected="a city name")
        site = _text(values[c_site])
        agencies.append(Agency(name, level, city, None if site.lower() in _NO_SITE else site, i))
    if not agencies:
        raise InputError("no agencies", source=source, expected="at least one row")
    return tuple(agencies)


def _numeric(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """A column as float64 with NaN for empty cells; text in it is an error naming the cell."""
    series = frame[column]
    if series.dtype.kind in "fiu":
        return series.to_numpy(dtype=np.float64, copy=False)
    if series.dtype.kind == "b":
        return series.to_numpy(dtype=np.float64)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SheetError("text where a number belongs", source=source,
                         location=f"row {i + 2}, column {column}", expected="a number",
                         got=str(series.iloc[i]))
    return converted.to_numpy(dtype=np.float64)


def _rounds(frame: pd.DataFrame, column: str | None, source: str) -> np.ndarray:
    if column is None:
        return np.ones(len(frame), dtype=np.int64)
    values = _numeric(frame, column, source)
    bad = ~np.isfinite(values) | (values < 1) | (values != np.round(values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SheetError("not a round number", source=source,
                         location=f"row {i + 2}, column {column}",
                         expected="a whole number >= 1", got=_text(frame[column].iloc[i]))
    return values.astype(np.int64)


def _resolve_column(rubric: Rubric, header: str, source: str) -> tuple[int, str | None]:
    """A header names a leaf (points) or ``leaf:observation`` (what was observed)."""
    ref, _, obs = header.partition(":")
    if not _ and "：" in header:  # evaluators type the full-width colon too
        ref, _, obs = header.partition("：")
    try:
        index = rubric.leaf_index(ref, source=source, location=f"column {header}")
    except RubricError as exc:
        raise SheetError(exc.message, source=source, location=exc.location,
                         expected=exc.expected, hint=_close(ref, rubric.short_names())) from None
    if not _:
        return index, None
    leaf = rubric.leaves[index]
    names = [o.name for o in leaf.observations]
    if obs.strip() not in names:
        expected = ("one of " + ", ".join(f"{leaf.name}:{n}" for n in names)) if names else (
            f"points only: {leaf.name} ({leaf.rule.value}) has nothing to observe")
        raise SheetError(f"leaf {leaf.key} has no observation {obs.strip()!r}", source=source,
                         location=f"column {header}", expected=expected)
    return index, obs.strip()


def _close(word: str, candidates: Sequence[str]) -> str | None:
    near = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.5)
    return f"did you mean {' or '.join(near)}?" if near else None


def read_score_sheet(path: str | Path, rubric: Rubric, *, sheet: str | None = None) -> ScoreSheet:
    """Read a score sheet: an agency column, an optional round column, one column per leaf."""
    frame = read_table(path, sheet=sheet)
    source = _label(Path(path), sheet)
    c_agency = _find_column(frame, _AGENCY_HEADERS, source, "agency name")
    c_round = next((c for c in _ROUND_HEADERS if c in frame.columns), None)
    points: dict[int, np.ndarray] = {}
    observed: dict[tuple[int, str], np.ndarray] = {}
    labels: dict[object, str] = {}
    for header in frame.columns:
        if header in (c_agency, c_round) or header.startswith(("备注", "note")):
            continue
        index, obs = _resolve_column(rubric, header, source)
        key: object = index if obs is None else (index, obs)
        if key in labels:
            raise SheetError(f"two columns name the same leaf ({labels[key]} and {header})",
                             source=source, location=f"column {header}",
                             expected="one column per leaf")
        labels[key] = header
        column = _numeric(frame, header, source)
        if obs is None:
            points[index] = column
        else:
            observed[(index, obs)] = column
    agency = _names(frame[c_agency])
    empty = np.flatnonzero(agency == "")
    if empty.size:
        raise SheetError("empty agency name", source=source,
                         location=f"row {int(empty[0]) + 2}, column {c_agency}", expected="a name")
    return ScoreSheet(source=source, agency=agency, round=_rounds(frame, c_round, source),
                      lines=np.arange(2, len(frame) + 2, dtype=np.int64), points=points,
                      observed=observed, labels=labels)


def write_score_sheet(path: str | Path, agencies: Sequence[str], rubric: Rubric,
                      leaf_points: np.ndarray, *, round_no: int = 1) -> Path:
    """Write leaf points as a score sheet that ``read_score_sheet`` reads back unchanged.

    Used to hand evaluators the merged sheet after several rounds, as CSV or XLSX.
    """
    p = Path(path)
    frame = pd.DataFrame(leaf_points, columns=rubric.short_names())
    frame.insert(0, "轮次", round_no)
    frame.insert(0, "单位", list(agencies))
    suffix = p.suffix.lower()
    if suffix == ".xlsx":
        frame.to_excel(p, index=False, sheet_name="评分表", engine="openpyxl")
    elif suffix == ".csv":
        frame.to_csv(p, index=False, float_format="%.10g", encoding="utf-8")
    else:
        raise InputError("unknown file type", source=p, expected=".csv or .xlsx",
                         got=suffix or "no suffix")
    return p
