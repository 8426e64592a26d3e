"""Commands for reply timing: working days on the Chinese calendar and the queue method."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mailprobe.cli import main
from mailprobe.cli._output import display_width
from mailprobe.errors import InputError, MailprobeError
from mailprobe.timeliness import (
    ProbeOutcome,
    ProbeTiming,
    QueueMethod,
    RoundTimeliness,
    TimedProbe,
    load_queue_method,
    score_round,
    time_probe,
)
from mailprobe.workdays import (
    Deadline,
    Explanation,
    When,
    WorkCalendar,
    default_calendar,
    load_calendar,
    parse_when,
)

_ADDED = ("working_days", "deadline", "in_time", "stage", "points")
_ERRORS_SHOWN = 8


def _calendar_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--input-zone", metavar="ZONE",
        help="Zone for date-times written without an offset (e.g. Asia/Shanghai); "
             "without it they are refused.",
    )(f)
    return click.option(
        "--calendar", "calendar_file", metavar="FILE",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="A calendar.toml to use instead of config/calendar.toml.",
    )(f)


def _calendar(calendar_file: Path | None, input_zone: str | None) -> WorkCalendar:
    calendar = load_calendar(calendar_file) if calendar_file else default_calendar()
    return calendar.with_input_zone(input_zone) if input_zone else calendar


def _when(text: str, name: str, calendar: WorkCalendar) -> When:
    """Parse a command-line date or date-time, naming the argument in any error."""
    try:
        when = parse_when(text)
        calendar.local_date(when)  # refuses a naive date-time here, where we know its name
    except MailprobeError as exc:
        raise type(exc)(exc.message, location=name, expected=exc.expected, got=text,
                        hint=exc.hint) from None
    return when


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


# --- mailprobe workdays -----------------------------------------------------------------------


@main.group("workdays")
def workdays() -> None:
    """Working days on the Chinese calendar (民法典 arts. 201-203: the start day is not counted).

    Dates are taken in the calendar's zone (Asia/Shanghai); a date-time may be written in
    any zone, with an offset. Statutory holidays and make-up working days (调休) come from
    the holidays package plus config/calendar.toml.

    \b
    Example:
      mailprobe workdays between 2015-09-30 2015-10-27
      mailprobe workdays deadline 2015-11-02T09:30+08:00 15 --explain
    """


def _day_rows(explanation: Explanation) -> list[dict[str, Any]]:
    return [
        {
            "date": n.day.isoformat(), "weekday": n.weekday, "kind": n.kind.value,
            "counted": n.counted, "number": n.number, "name": n.name, "source": n.source,
        }
        for n in explanation.days
    ]


def _explain_text(explanation: Explanation) -> list[str]:
    lines = [f"  {explanation.start.isoformat()}  起算日，不计入（民法典第二百零一条）"]
    labels = [n.kind.label + (f"：{n.name}" if n.name else "") for n in explanation.days]
    width = max((display_width(label) for label in labels), default=0) + 2
    for n, label in zip(explanation.days, labels, strict=True):
        status = f"第 {n.number} 个工作日" if n.counted else "不计"
        cite = f"  [{n.source}]" if n.source else ""
        pad = " " * (width - display_width(label))
        lines.append(f"  {n.day.isoformat()} {n.weekday}  {label}{pad}{status}{cite}")
    makeup = "、".join(d.isoformat() for d in explanation.makeup_workdays) or "无"
    lines.append(f"  其中调休上班日：{makeup}")
    return lines


@workdays.command("between")
@click.argument("start")
@click.argument("end")
@click.option("--explain", is_flag=True, help="List every day: counted or skipped, and why.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@_calendar_options
def between_command(start: str, end: str, explain: bool, fmt: str,
                    calendar_file: Path | None, input_zone: str | None) -> None:
    """Working days from START to END: a reply on the day of sending is 0.

    START and END are ISO dates (2015-11-02) or date-times with an offset
    (2015-11-02T09:30+08:00, 2015-11-02T01:30Z).

    \b
    Example:
      mailprobe workdays between 2015-09-30 2015-10-27
      mailprobe workdays between 2015-11-02T16:00+08:00 2015-11-20T09:12Z --explain
      mailprobe workdays between 2015-12-25 2016-01-04 --format json
    """
    calendar = _calendar(calendar_file, input_zone)
    s, e = _when(start, "START", calendar), _when(end, "END", calendar)
    count = calendar.between(s, e)
    explanation = calendar.explain(s, e) if explain else None
    if fmt == "json":
        data: dict[str, Any] = {
            "start": count.start.isoformat(), "end": count.end.isoformat(),
            "working_days": count.working_days, "within": count.within,
            "zone": calendar.config.zone,
            "calendar_version": count.calendar_version,
        }
        if explanation:
            data["days"] = _day_rows(explanation)
        _echo_json(data)
        return
    click.echo(f"{count.start.isoformat()} → {count.end.isoformat()}：{count.working_days} 个工作日"
               f"（起算日不计；日历 {count.calendar_version}）")
    if count.within != count.working_days:
        click.echo(f"{count.end.isoformat()} 是休息日：第 {count.working_days} 个工作日已在此前的"
                   f" 24:00 届满，这时收到的答复计为第 {count.within} 个工作日内")
    if explanation:
        click.echo("\n".join(_explain_text(explanation)))


def _deadline_text(d: Deadline) -> str:
    weekday = "一二三四五六日"[d.last_day.weekday()]
    return (f"{d.start.isoformat()} 之后第 {d.n} 个工作日：{d.last_day.isoformat()}"
            f"（周{weekday}），截至当日 24:00，即 {d.ends_at.isoformat()} 之前"
            f"（日历 {d.calendar_version}）")


@workdays.command("deadline")
@click.argument("start")
@click.argument("n", type=click.IntRange(min=0))
@click.option("--explain", is_flag=True, help="List every day up to the deadline, and why.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@_calendar_options
def deadline_command(start: str, n: int, explain: bool, fmt: str,
                     calendar_file: Path | None, input_zone: str | None) -> None:
    """The Nth working day after START; a reply at any time on that day is in time.

    \b
    Example:
      mailprobe workdays deadline 2015-09-30 15
      mailprobe workdays deadline 2015-11-13T18:30+08:00 15 --explain
      mailprobe workdays deadline 2015-11-25 15 --format json
    """
    calendar = _calendar(calendar_file, input_zone)
    d = calendar.deadline(_when(start, "START", calendar), n)
    explanation = calendar.explain(d.start, d.last_day) if explain else None
    if fmt == "json":
        data: dict[str, Any] = {
            "start": d.start.isoformat(), "n": d.n, "last_day": d.last_day.isoformat(),
            "ends_at": d.ends_at.isoformat(), "zone": calendar.config.zone,
            "calendar_version": d.calendar_version,
        }
        if explanation:
            data["days"] = _day_rows(explanation)
        _echo_json(data)
        return
    click.echo(_deadline_text(d))
    if explanation:
        click.echo("\n".join(_explain_text(explanation)))


# --- mailprobe timeliness ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    values: dict[str, str]
    probe: ProbeTiming


def _optional(values: dict[str, str], column: str, default: When | None = None) -> When | None:
    text = (values.get(column) or "").strip()
    if not text:
        return default
    try:
        return parse_when(text)
    except InputError as exc:
        raise InputError(exc.message, location=column, expected=exc.expected, got=text) from None


def _probe(line: int, values: dict[str, str], round_end: When | None) -> ProbeTiming:
    sent = _optional(values, "sent_at")
    if sent is None:
        raise InputError("no sending time", location="sent_at", expected="an ISO date-time",
                         got="")
    probe_id = (values.get("probe_id") or values.get("id") or "").strip() or f"line {line}"
    return ProbeTiming(
        probe_id=probe_id, agency=(values.get("agency") or "").strip(), sent_at=sent,
        first_ack_at=_optional(values, "first_ack_at"), replied_at=_optional(values, "replied_at"),
        round_end=_optional(values, "round_end", round_end),
    )


def _read_rows(
    path: Path, round_end: When | None
) -> tuple[list[str], list[_Row], list[tuple[int, MailprobeError]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("cannot read the file", source=path, expected="UTF-8 CSV",
                         got=str(exc)) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = list(reader.fieldnames or [])
    missing = [c for c in ("sent_at", "replied_at") if c not in header]
    if missing:
        raise InputError("missing column", source=path, location="line 1",
                         expected="a header with sent_at and replied_at", got=",".join(header))
    rows: list[_Row] = []
    bad: list[tuple[int, MailprobeError]] = []
    seen: set[str] = set()
    for values in reader:
        line = reader.line_num
        try:
            if None in values:
                raise InputError("more fields than the header", got=len(header) + 1)
            probe = _probe(line, values, round_end)
            if probe.probe_id in seen:
                raise InputError("the same probe id appears twice", got=probe.probe_id)
            seen.add(probe.probe_id)
            rows.append(_Row(line, values, probe))
        except MailprobeError as exc:
            bad.append((line, exc))
    return header, rows, bad


def _describe(line: int, exc: MailprobeError) -> str:
    where = f"line {line}" + (f", {exc.location}" if exc.location else "")
    text = f"{where}: {exc.message}"
    details = [f"expected {exc.expected}"] if exc.expected else []
    if exc.got is not None:
        details.append(f"got {exc.got!r}" if isinstance(exc.got, str) else f"got {exc.got}")
    return text + (f" ({', '.join(details)})" if details else "")


def _time_rows(
    rows: list[_Row], calendar: WorkCalendar, limit: int
) -> tuple[list[tuple[_Row, TimedProbe]], list[tuple[int, MailprobeError]]]:
    good: list[tuple[_Row, TimedProbe]] = []
    bad: list[tuple[int, MailprobeError]] = []
    for row in rows:
        try:
            good.append((row, time_probe(row.probe, calendar, limit)))
        except MailprobeError as exc:
            # The row's line replaces the probe id; a location inside another file
            # (calendar.toml's known_years) says nothing about the row.
            location = (exc.location or "").removeprefix(f"probe {row.probe.probe_id}")
            location = "" if exc.source else location.lstrip(": ")
            bad.append((row.line, type(exc)(
                exc.message, source=exc.source, location=location or None,
                expected=exc.expected, got=exc.got, hint=exc.hint,
            )))
    return good, bad


def _report_bad(path: Path, bad: list[tuple[int, MailprobeError]], skip_bad: bool) -> None:
    notes = [_describe(line, exc) for line, exc in sorted(bad, key=lambda b: b[0])]
    if skip_bad:
        for note in notes:
            click.echo(f"mailprobe: skipped {note}", err=True)
        return
    shown = "; ".join(notes[:_ERRORS_SHOWN])
    more = f"; and {len(notes) - _ERRORS_SHOWN} more" if len(notes) > _ERRORS_SHOWN else ""
    # Hints about configuration (a year to add to calendar.toml) apply to every such row.
    config_hints = dict.fromkeys(exc.hint for _, exc in bad if exc.source and exc.hint)
    raise InputError(
        f"{len(notes)} bad row(s), nothing written: {shown}{more}", source=path,
        hint="; ".join(["fix them, or pass --skip-bad to leave them out", *config_hints]),
    )


def _result_values(outcome: ProbeOutcome) -> dict[str, Any]:
    wd = outcome.working_days
    return {
        "working_days": wd, "deadline": outcome.timed.deadline.last_day.isoformat(),
        "in_time": outcome.in_time, "stage": outcome.stage.key, "points": outcome.points,
    }


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _columns(header: list[str]) -> list[str]:
    return [*header, *(c for c in _ADDED if c not in header)]


def _csv_out(columns: list[str], table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for record in table:
        writer.writerow([_cell(record.get(c)) for c in columns])
    return buf.getvalue()


def _table_out(columns: list[str], table: list[dict[str, Any]], result: RoundTimeliness) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in table]
    widths = [max([display_width(c)] + [display_width(row[k]) for row in cells])
              for k, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v + " " * (w - display_width(v)) for v, w in zip(values, widths,
                                                                          strict=True)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths), *(line(r) for r in cells)]
    return "\n".join([*out, "", *_summary_lines(result)]) + "\n"


def _summary_lines(result: RoundTimeliness) -> list[str]:
    s = result.summary
    if s.median_working_days is None:
        median = f"超过 {s.limit} 个工作日（未答复）" if s.median_beyond_limit else "—"
    else:
        beyond = f"，超过 {s.limit}" if s.median_beyond_limit else ""
        median = f"{s.median_working_days:g} 个工作日{beyond}"
    lines = [
        f"共 {s.probes} 件：{s.limit} 个工作日内答复 {s.answered_in_time}，"
        f"超期答复 {s.answered - s.answered_in_time}，未答复 {s.probes - s.answered}"
        f"（其中轮次结束时仍未答复 {s.censored}）；中位数（未答复计为超期）{median}",
    ]
    lines += [f"  {c.label}：{c.count} 件，{c.share:.1%}（累计 {c.cumulative_share:.1%}）"
              for c in s.stages]
    lines += [f"注意：{note}" for note in result.notes]
    lines.append(f"日历 {result.calendar_version}；排队法配置 {result.method_source}")
    return lines


def _json_out(table: list[dict[str, Any]], result: RoundTimeliness,
              skipped: list[str]) -> str:
    s = result.summary
    data = {
        "calendar_version": result.calendar_version, "queue_method": result.method_source,
        "rows": table,
        "summary": {
            "probes": s.probes, "answered": s.answered, "answered_in_time": s.answered_in_time,
            "censored": s.censored, "acknowledged": s.acknowledged, "limit": s.limit,
            "median_working_days": s.median_working_days,
            "median_beyond_limit": s.median_beyond_limit,
            "stages": [{"stage": c.key, "label": c.label, "count": c.count, "share": c.share,
                        "cumulative_share": c.cumulative_share} for c in s.stages],
        },
        "agencies": [{"agency": a.agency, "points": a.points, "max_points": a.max_points,
                      "combine": a.combine.value, "probe_ids": list(a.probe_ids),
                      "probe_points": list(a.probe_points)} for a in result.agencies],
        "notes": list(result.notes), "skipped": skipped,
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


@main.command("timeliness")
@click.option("--input", "input_file", required=True, metavar="FILE.csv",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CSV with sent_at and replied_at (empty = no reply); optional first_ack_at, "
                   "round_end, agency, probe_id; other columns are kept.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--output", "output", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Write there instead of standard output.")
@click.option("--skip-bad", is_flag=True,
              help="Leave out bad rows (listed on standard error) instead of refusing the file.")
@click.option("--round-end", metavar="DATETIME",
              help="End of the round for rows without round_end: a later reply counts as none.")
@click.option("--queue-method", "method_file", metavar="FILE",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A queue_method.toml to use instead of config/queue_method.toml.")
@_calendar_options
def timeliness_command(input_file: Path, fmt: str, output: Path | None, skip_bad: bool,
                       round_end: str | None, method_file: Path | None,
                       calendar_file: Path | None, input_zone: str | None) -> None:
    """Reply timeliness of records kept elsewhere (e.g. earlier campaigns done by hand).

    Adds working_days, deadline (the limit-th working day), in_time, stage and points to
    every row, by the queue method of config/queue_method.toml; existing columns with
    those names are replaced. A file with bad rows is refused as a whole, naming every
    bad line, unless --skip-bad is given.

    \b
    Example:
      mailprobe timeliness --input replies-2015.csv
      mailprobe timeliness --input replies-2015.csv --format csv --output timed.csv
      mailprobe timeliness --input replies.csv --input-zone Asia/Shanghai --skip-bad
    """
    calendar = _calendar(calendar_file, input_zone)
    method: QueueMethod = load_queue_method(method_file)
    end = _when(round_end, "--round-end", calendar) if round_end else None
    header, rows, bad = _read_rows(input_file, end)
    good, late_bad = _time_rows(rows, calendar, method.limit)
    bad += late_bad
    if bad:
        _report_bad(input_file, bad, skip_bad)
    result = score_round([t for _, t in good], method)
    columns = _columns(header)
    table = [{**row.values, **_result_values(o)} for (row, _), o in zip(good, result.outcomes,
                                                                        strict=True)]
    if fmt == "csv":
        text = _csv_out(columns, table)
    elif fmt == "json":
        text = _json_out(table, result, [_describe(line, exc) for line, exc in bad])
    else:
        text = _table_out(columns, table, result)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"mailprobe: wrote {len(table)} row(s) to {output}", err=True)
