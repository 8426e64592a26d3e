"""Report writers: render a finished ``Report`` as an HTML page, CSV files and an XLSX workbook.

The writers only present what the engine computed: they never score or rank, and they
round only what is displayed (the HTML, and PERCENT cells in CSV as said below).

- HTML (``render_html``): one self-contained page in Chinese with inline CSS and inline
  SVG charts; no script and no external resource, so it can be published or mailed as is.
  Numbers are shown per column ``Format``: SCORE with up to two decimals and trailing zeros
  trimmed (92.5, 80.95), PERCENT as 77.27%, INT as a whole number, missing cells as "—".
  Rounding is half-up on the decimal value, as in printed Chinese statistics. Charts are
  inline SVG; the axis runs from 0 to ``max_value``, or without it to the round tick
  at or above the largest value.
- CSV (``write_csv``): one ``<table.id>.csv`` per table, UTF-8 with BOM so that Excel
  detects the encoding. Header, body rows, then footer rows. Numbers are written plainly
  (never in exponent notation); PERCENT cells are written as the fraction rounded to six
  places (0.772727, not 77.27%), so that they stay numbers for whoever re-computes them.
  Missing cells are empty. A text cell that a spreadsheet would run as a formula
  (starting with = + - @ and not a number) is prefixed with an apostrophe.
- XLSX (``write_xlsx``): one sheet per table: the full title in row 1, the bold header in
  row 2 (frozen), body, bold footer rows, then the note. Values are raw numbers with the
  formats '0.00' (SCORE), '0.00%' (PERCENT) and '0' (INT).

Every writer checks the whole report before touching the disk and writes each file to a
temporary file beside it, replacing the targets only once all of them are written.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from mailprobe.errors import ConfigError, InputError
from mailprobe.paths import templates_dir
from mailprobe.tables import (
    Cell,
    Chart,
    ChartKind,
    Format,
    Report,
    Table,
    format_cell,
    plain_number,
    trim_number,
)

__all__ = ["FORMATS", "format_cell", "main_file", "render_html", "write_csv", "write_report",
           "write_xlsx"]

FORMATS = ("html", "csv", "xlsx")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_SOURCE = "report"

def _tick_text(value: float, fmt: Format) -> str:
    if fmt is Format.PERCENT:
        return f"{trim_number(value * 100, 2)}%"
    return trim_number(value, 2)


# ---------------------------------------------------------------------------- checks


def _check_cell(value: object, where: str) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(
            "a report cell must be text, a number or empty",
            source=_SOURCE, location=where, expected="str, int, float or None",
            got=type(value).__name__,
        )
    if not math.isfinite(value):
        raise InputError(
            "a report cell is not a finite number", source=_SOURCE, location=where,
            expected="a finite number", got=value,
            hint="the engine should leave a cell empty (None) when it has no value",
        )


def _check_id(kind: str, ident: str, seen: set[str]) -> None:
    if not _ID_RE.match(ident):
        raise InputError(
            f"{kind} id cannot name a file or an anchor", source=_SOURCE,
            location=f"{kind} {ident!r}", expected="ASCII letters, digits, '_', '.', '-'",
            got=ident,
        )
    if ident.lower() in seen:
        raise InputError(
            f"two {kind}s share one id", source=_SOURCE, location=f"{kind} {ident!r}",
            hint=f"give every {kind} its own id",
        )
    seen.add(ident.lower())


def _check_table(table: Table) -> None:
    width = len(table.columns)
    for part, rows in (("row", table.rows), ("footer row", table.footer)):
        for number, row in enumerate(rows, start=1):
            where = f"table {table.id!r}, {part} {number}"
            if len(row) != width:
                raise InputError(
                    "a row does not have one cell per column", source=_SOURCE,
                    location=where, expected=f"{width} cells", got=len(row),
                )
            for column, value in zip(table.columns, row, strict=True):
                _check_cell(value, f"{where}, column {column.title!r}")


def _check_chart(chart: Chart) -> None:
    where = f"chart {chart.id!r}"
    if len(chart.labels) != len(chart.values):
        raise InputError(
            "a chart needs one value per label", source=_SOURCE, location=where,
            expected=f"{len(chart.labels)} values", got=len(chart.values),
        )
    for label, value in zip(chart.labels, chart.values, strict=True):
        _check_cell(value, f"{where}, bar {label!r}")
        if value is None or isinstance(value, str) or value < 0:
            raise InputError(
                "a bar needs a number of at least 0, since the axis starts at 0",
                source=_SOURCE, location=f"{where}, bar {label!r}", got=value,
            )
    top = chart.max_value
    if top is not None and (not math.isfinite(top) or top <= 0):
        raise InputError(
            "a chart axis must end above 0", source=_SOURCE, location=where,
            expected="max_value > 0 or None", got=top,
        )


def _check_report(report: Report) -> None:
    """Refuse a report that would be exported wrong, before any file is touched."""
    table_ids: set[str] = set()
    chart_ids: set[str] = set()
    for section in report.sections:
        for table in section.tables:
            _check_id("table", table.id, table_ids)
            _check_table(table)
        for chart in section.charts:
            _check_id("chart", chart.id, chart_ids)
            _check_chart(chart)


# ---------------------------------------------------------------------------- charts

_LABEL_FONT = 12
_VALUE_FONT = 11
_PLOT_HEIGHT = 240.0
_HBAR_PLOT_WIDTH = 480.0
_HBAR_ROW = 26.0
_SIN45 = math.sqrt(0.5)


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _text_width(text: str, size: float) -> float:
    # SVG cannot measure text without a browser; CJK glyphs are one em wide and Latin
    # digits about 0.6 em, which is close enough to keep labels from overlapping.
    return sum(size if _is_wide(char) else size * 0.6 for char in text)


@dataclass(frozen=True)
class _Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    label_x: float
    label_y: float
    value_text: str
    value_x: float
    value_y: float


@dataclass(frozen=True)
class _Tick:
    x1: float
    y1: float
    x2: float
    y2: float
    text: str
    text_x: float
    text_y: float


@dataclass(frozen=True)
class _ChartLayout:
    chart: Chart
    width: float
    height: float
    bars: tuple[_Bar, ...]
    ticks: tuple[_Tick, ...]
    axis: tuple[float, float, float, float]
    rotate_labels: bool
    description: str


def _tick_step(end: float) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about five ticks up to ``end``."""
    raw = end / 5
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def _axis_end(chart: Chart) -> float:
    if chart.max_value is not None:
        return chart.max_value
    largest = max((*chart.values, 0.0)) or 1.0
    # Without a given end the axis stops at the round tick above the largest bar, so the
    # tallest bar does not rise past the last labelled grid line.
    step = _tick_step(largest)
    return math.ceil(largest / step - 1e-9) * step


def _tick_values(end: float) -> list[float]:
    step = _tick_step(end)
    return [k * step for k in range(int(end / step + 1e-9) + 1)]


def _describe(chart: Chart) -> str:
    return "；".join(
        f"{label}：{format_cell(value, chart.format)}"
        for label, value in zip(chart.labels, chart.values, strict=True)
    )


def _bar_layout(chart: Chart) -> _ChartLayout:
    end = _axis_end(chart)
    texts = [format_cell(v, chart.format) for v in chart.values]
    count = max(len(chart.values), 1)
    value_width = max((_text_width(t, _VALUE_FONT) for t in texts), default=0.0)
    slot = min(max(560 / count, 28.0, value_width + 6), 96.0)
    label_width = max((_text_width(label, _LABEL_FONT) for label in chart.labels), default=0.0)
    rotate = label_width > slot - 4
    left = max(52.0, label_width * _SIN45 - slot / 2 + 8) if rotate else 52.0
    top = 24.0
    bottom = label_width * _SIN45 + 24 if rotate else 30.0
    base = top + _PLOT_HEIGHT
    bars = []
    for index, (label, value) in enumerate(zip(chart.labels, chart.values, strict=True)):
        height = _PLOT_HEIGHT * min(value, end) / end
        centre = left + (index + 0.5) * slot
        bars.append(_Bar(
            x=centre - slot * 0.3, y=base - height, width=slot * 0.6, height=height,
            label=label, label_x=centre, label_y=base + (14 if rotate else 18),
            value_text=texts[index], value_x=centre, value_y=base - height - 5,
        ))
    right = left + count * slot
    ticks = tuple(
        _Tick(left, y, right, y, _tick_text(t, chart.format), left - 6, y + 4)
        for t in _tick_values(end)
        for y in [base - _PLOT_HEIGHT * t / end]
    )
    return _ChartLayout(
        chart=chart, width=right + 16, height=base + bottom, bars=tuple(bars), ticks=ticks,
        axis=(left, base, right, base), rotate_labels=rotate, description=_describe(chart),
    )


def _hbar_layout(chart: Chart) -> _ChartLayout:
    end = _axis_end(chart)
    texts = [format_cell(v, chart.format) for v in chart.values]
    label_width = max((_text_width(label, _LABEL_FONT) for label in chart.labels), default=0.0)
    value_width = max((_text_width(t, _VALUE_FONT) for t in texts), default=0.0)
    left = max(label_width + 14, 48.0)
    top = 10.0
    base = top + max(len(chart.values), 1) * _HBAR_ROW
    bars = []
    for index, (label, value) in enumerate(zip(chart.labels, chart.values, strict=True)):
        length = _HBAR_PLOT_WIDTH * min(value, end) / end
        middle = top + (index + 0.5) * _HBAR_ROW
        bars.append(_Bar(
            x=left, y=middle - 8, width=length, height=16,
            label=label, label_x=left - 8, label_y=middle + 4,
            value_text=texts[index], value_x=left + length + 5, value_y=middle + 4,
        ))
    ticks = tuple(
        _Tick(x, top, x, base, _tick_text(t, chart.format), x, base + 16)
        for t in _tick_values(end)
        for x in [left + _HBAR_PLOT_WIDTH * t / end]
    )
    return _ChartLayout(
        chart=chart, width=left + _HBAR_PLOT_WIDTH + value_width + 16, height=base + 26,
        bars=tuple(bars), ticks=ticks, axis=(left, top, left, base), rotate_labels=False,
        description=_describe(chart),
    )


def _chart_layout(chart: Chart) -> _ChartLayout:
    return _hbar_layout(chart) if chart.kind is ChartKind.HBAR else _bar_layout(chart)


# ---------------------------------------------------------------------------- HTML


@functools.cache
def _environment(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        # Agency names and notes come from user files: every value is escaped.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = format_cell
    env.filters["num"] = lambda value: f"{value:.1f}"
    env.globals["chart_layout"] = _chart_layout
    env.globals["is_number_column"] = lambda column: column.format is not Format.TEXT
    env.globals["paragraphs"] = _paragraphs
    return env


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def render_html(report: Report) -> str:
    """The report as one self-contained HTML5 page (inline CSS and SVG, no script)."""
    _check_report(report)
    return _html_text(report)


def _html_text(report: Report) -> str:
    env = _environment(templates_dir() / "report")
    try:
        template = env.get_template("report.html.j2")
    except jinja2.TemplateNotFound as error:
        raise ConfigError(
            "the report template is missing", source=templates_dir() / "report",
            expected=str(error.name),
            hint="set MAILPROBE_HOME to a folder holding templates/report/",
        ) from error
    return template.render(report=report)


# ---------------------------------------------------------------------------- CSV

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_text(value: Cell, fmt: Format) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        # A spreadsheet would run "=HYPERLINK(…)" from an agency name as a formula.
        if len(value) > 1 and value.startswith(_FORMULA_START) and not _is_number(value):
            return "'" + value
        return value
    if fmt is Format.PERCENT:
        return plain_number(round(float(value), 6))
    return plain_number(value)


def _csv_bytes(table: Table) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([column.title for column in table.columns])
    for row in (*table.rows, *table.footer):
        writer.writerow(
            [
                _csv_text(value, column.format)
                for column, value in zip(table.columns, row, strict=True)
            ]
        )
    return buffer.getvalue().encode("utf-8-sig")


# ---------------------------------------------------------------------------- XLSX

_SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
_NUMBER_FORMATS = {Format.SCORE: "0.00", Format.PERCENT: "0.00%", Format.INT: "0"}
_HEADER_FILL = PatternFill("solid", fgColor="DDEFEC")
_FOOTER_BORDER = Border(top=Side(style="thin", color="0F766E"))


def _sheet_name(title: str, fallback: str, taken: set[str]) -> str:
    name = _SHEET_FORBIDDEN.sub("", ILLEGAL_CHARACTERS_RE.sub("", title)).strip().strip("'")
    name = name[:31].strip() or fallback[:31]
    candidate, number = name, 1
    # Excel compares sheet names without case; "History" is reserved by Excel itself.
    while candidate.lower() in taken:
        number += 1
        suffix = f"({number})"
        candidate = name[: 31 - len(suffix)] + suffix
    taken.add(candidate.lower())
    return candidate


def _display_width(text: str) -> int:
    return sum(2 if _is_wide(char) else 1 for char in text)


def _put(sheet: Worksheet, row: int, col: int, value: Cell, fmt: Format) -> None:
    cell = sheet.cell(row=row, column=col)
    if isinstance(value, str):
        cell.value = ILLEGAL_CHARACTERS_RE.sub("", value)
        # openpyxl turns "=…" into a formula and "#N/A" into an error; these are names.
        cell.data_type = "s"
    else:
        cell.value = value
        if value is not None and fmt in _NUMBER_FORMATS:
            cell.number_format = _NUMBER_FORMATS[fmt]


def _fill_sheet(sheet: Worksheet, table: Table) -> None:
    _put(sheet, 1, 1, table.title, Format.TEXT)
    sheet.cell(row=1, column=1).font = Font(bold=True, size=13)
    for col, column in enumerate(table.columns, start=1):
        _put(sheet, 2, col, column.title, Format.TEXT)
        header = sheet.cell(row=2, column=col)
        header.font = Font(bold=True)
        header.fill = _HEADER_FILL
        header.alignment = Alignment(horizontal="center", vertical="center")
    for offset, row in enumerate((*table.rows, *table.footer)):
        in_footer = offset >= len(table.rows)
        for col, (column, value) in enumerate(zip(table.columns, row, strict=True), start=1):
            _put(sheet, 3 + offset, col, value, column.format)
            if in_footer:
                sheet.cell(row=3 + offset, column=col).font = Font(bold=True)
                if offset == len(table.rows):
                    sheet.cell(row=3 + offset, column=col).border = _FOOTER_BORDER
    if table.note:
        note_row = 3 + len(table.rows) + len(table.footer) + 1
        _put(sheet, note_row, 1, table.note, Format.TEXT)
        sheet.cell(row=note_row, column=1).font = Font(italic=True, color="6B7280")
    sheet.freeze_panes = "A3"
    _fit_columns(sheet, table)


def _fit_columns(sheet: Worksheet, table: Table) -> None:
    for col, column in enumerate(table.columns, start=1):
        texts: Iterable[str] = (
            column.title,
            *(format_cell(row[col - 1], column.format) for row in (*table.rows, *table.footer)),
        )
        width = max(_display_width(text) for text in texts) + 2
        sheet.column_dimensions[get_column_letter(col)].width = min(max(width, 6), 60)


def _xlsx_bytes(report: Report) -> bytes:
    book = Workbook()
    first = book.active
    taken = {"history"}
    tables = report.tables()
    for table in tables:
        _fill_sheet(book.create_sheet(_sheet_name(table.title, table.id, taken)), table)
    if tables and first is not None:
        book.remove(first)
    elif first is not None:
        first.title = "说明"
        first["A1"] = "本报告没有表格。"
    book.properties.title = report.title
    book.properties.creator = "mailprobe"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- files


def _commit(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write every file beside its target, then move them all into place.

    A failure while writing leaves the old files as they were and no temporary file.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            staged.append((temporary, target))
            # "x" keeps the umask's permissions, which mkstemp's 0600 would not.
            with open(temporary, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        while staged:
            temporary, target = staged[0]
            os.replace(temporary, target)
            staged.pop(0)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _csv_files(report: Report, folder: Path) -> list[tuple[Path, bytes]]:
    return [(folder / f"{table.id}.csv", _csv_bytes(table)) for table in report.tables()]


def write_csv(report: Report, folder: str | os.PathLike[str]) -> list[Path]:
    """Write one ``<table.id>.csv`` per table into ``folder``; return their paths in order."""
    _check_report(report)
    files = _csv_files(report, Path(folder))
    _commit(files)
    return [path for path, _ in files]


def write_xlsx(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write one workbook with a sheet per table; return its path."""
    _check_report(report)
    target = Path(path)
    _commit([(target, _xlsx_bytes(report))])
    return target


def main_file(written: dict[str, Path | list[Path]], out_dir: Path) -> Path:
    """What to tell the reader to open: the HTML page, else the first single file written,
    else (CSV only: one file per table) the folder."""
    first = written.get("html") or next(iter(written.values()))
    return first if isinstance(first, Path) else out_dir


def write_report(
    report: Report,
    out_dir: str | os.PathLike[str],
    *,
    formats: Iterable[str] = FORMATS,
) -> dict[str, Path | list[Path]]:
    """Write ``report.html``, ``csv/<table.id>.csv`` and ``report.xlsx`` under ``out_dir``.

    Every output is built in memory first and the files are replaced together, so a
    failure leaves the previous report in place rather than half of a new one.
    """
    wanted = tuple(dict.fromkeys(formats))
    unknown = [name for name in wanted if name not in FORMATS]
    if unknown or not wanted:
        raise ConfigError(
            "unknown report format", location="formats", expected=", ".join(FORMATS),
            got=", ".join(unknown) or "nothing",
        )
    _check_report(report)
    folder = Path(out_dir)
    files: list[tuple[Path, bytes]] = []
    written: dict[str, Path | list[Path]] = {}
    if "html" in wanted:
        written["html"] = folder / "report.html"
        files.append((folder / "report.html", _html_text(report).encode("utf-8")))
    if "csv" in wanted:
        csv_files = _csv_files(report, folder / "csv")
        written["csv"] = [path for path, _ in csv_files]
        files.extend(csv_files)
    if "xlsx" in wanted:
        written["xlsx"] = folder / "report.xlsx"
        files.append((folder / "report.xlsx", _xlsx_bytes(report)))
    _commit(files)
    return written
