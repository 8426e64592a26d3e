"""Report tables and charts as plain data, shared by the engine and every writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

__all__ = [
    "MISSING",
    "Cell",
    "Chart",
    "ChartKind",
    "Column",
    "Format",
    "Report",
    "Section",
    "Table",
    "format_cell",
    "plain_number",
    "trim_number",
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



MISSING = "—"


def _decimal(value: int | float) -> Decimal:
    # str() of a float is its shortest round-trip form, so 80.945 rounds up to 80.95
    # instead of down from its binary approximation 80.94499…
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def _plain(number: Decimal) -> str:
    text = f"{number:f}"
    return "0" if number.is_zero() and text.startswith("-") else text


def plain_number(value: int | float) -> str:
    """A number in plain decimal notation, never with an exponent."""
    return _plain(_decimal(value))


def trim_number(value: int | float, places: int) -> str:
    """Rounded half up to ``places`` decimals, trailing zeros trimmed: 92.50 -> 92.5."""
    number = _decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = _plain(number)
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_cell(value: Cell, fmt: Format) -> str:
    """The text a reader sees for one cell: '92.5', '77.27%', '3', '—'.

    Text in a numeric column (such as 未开通) is shown as given.
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if fmt is Format.PERCENT:
        number = (_decimal(value) * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return f"{_plain(number)}%"
    if fmt is Format.SCORE:
        return trim_number(value, 2)
    if fmt is Format.INT:
        return trim_number(value, 0)
    return plain_number(value)
