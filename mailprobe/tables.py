"""Report tables and charts as plain data, shared by the engine and every writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Cell",
    "Chart",
    "ChartKind",
    "Column",
    "Format",
    "Report",
    "Section",
    "Table",
    "format_cell",
]

Cell = str | int | float | None


class Format(StrEnum):
    TEXT = "text"
    INT = "int"
    SCORE = "score"  # points, shown with up to 2 decimals
    PERCENT = "percent"  # a share in [0, 1], shown as 77.27%


@dataclass(frozen=True)
class Column:
    key: str
    title: str  # Chinese, as printed
    format: Format = Format.TEXT


@dataclass(frozen=True)
class Table:
    """One table of the report: rows of cells under named columns.

    ``footer`` rows (the average row, totals) are printed under a rule and exported
    after the body; ``note`` says how the numbers were computed (population, method).
    """

    id: str  # stable, ASCII: used for CSV file names, XLSX sheet names and HTML anchors
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    footer: tuple[tuple[Cell, ...], ...] = ()
    note: str = ""


class ChartKind(StrEnum):
    BAR = "bar"  # one bar per label
    HBAR = "hbar"  # horizontal bars, for long Chinese labels


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    kind: ChartKind
    labels: tuple[str, ...]
    values: tuple[float, ...]
    format: Format = Format.SCORE  # how values are printed on the bars
    max_value: float | None = None  # the axis end; None: the largest value
    note: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()
    text: str = ""  # a plain-text paragraph (escaped when rendered)


@dataclass(frozen=True)
class Report:
    title: str
    subtitle: str
    sections: tuple[Section, ...]
    facts: tuple[tuple[str, str], ...] = field(default=())  # (label, value) lines under the title

    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]


def format_cell(value: Cell, fmt: Format) -> str:
    """A cell as printed: scores without trailing zeros (92.5, 80.95), shares as 77.27%."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if fmt is Format.PERCENT:
        return f"{value * 100:.2f}%"
    if fmt is Format.INT:
        return str(int(value))
    if fmt is Format.SCORE:
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)
