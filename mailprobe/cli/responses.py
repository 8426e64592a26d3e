"""`mailprobe report response-times`: the reply-time report of one probe round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mailprobe import round_facts
from mailprobe.cli._output import text_table, when_option
from mailprobe.cli.engine import report
from mailprobe.cli.store import _db_option, _open
from mailprobe.response_report import build_response_report
from mailprobe.tables import Report
from mailprobe.timeliness import load_queue_method
from mailprobe.workdays import default_calendar, load_calendar

_TEXT_TABLES = ("rt-summary", "rt-stages", "rt-agencies", "rt-probes")


def report_json(r: Report) -> dict[str, Any]:
    """Every table as a list of objects keyed by column key; numbers stay numbers."""
    def rows(table_rows: Any, keys: list[str]) -> list[dict[str, Any]]:
        return [dict(zip(keys, row, strict=True)) for row in table_rows]
    tables = []
    for t in r.tables():
        keys = [c.key for c in t.columns]
        tables.append({"id": t.id, "title": t.title,
                       "columns": [{"key": c.key, "title": c.title} for c in t.columns],
                       "rows": rows(t.rows, keys), "footer": rows(t.footer, keys),
                       "note": t.note})
    return {"title": r.title, "facts": dict(r.facts), "tables": tables}


@report.command("response-times")
@click.option("--round", "round_id", required=True, metavar="ROUND", help="The probe round.")
@click.option("--format", "fmt", type=click.Choice(["html", "csv", "json", "table"]),
              default="html", show_default=True,
              help="html and csv are written under --out; json and table are printed.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for html/csv (default: out/response-times-ROUND).")
@click.option("--round-end", metavar="DATE|ISO",
              help="Replies after this do not count (default: now, the report's date).")
@click.option("--queue-method", "method_file", metavar="FILE",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A queue_method.toml to use instead of config/queue_method.toml.")
@click.option("--calendar", "calendar_file", metavar="FILE",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A calendar.toml to use instead of config/calendar.toml.")
@_db_option
def response_times(round_id: str, fmt: str, out: Path | None, round_end: str | None,
                   method_file: Path | None, calendar_file: Path | None,
                   db_url: str | None) -> None:
    """Reply times of a round: per probe, per agency and for the round, with the evidence.

    Per probe: sent at, first acknowledgement, first substantive reply, working days,
    deadline, in time or not, queue-method stage and points, how it was matched. Per
    agency and round: shares per stage, median working days (no reply counted as beyond
    the limit), bounces and unusable channels. The HTML is one self-contained page in
    Chinese; its last section holds each reply's text and the day-by-day count.

    \b
    Example:
      mailprobe report response-times --round 2015-r1
      mailprobe report response-times --round 2015-r1 --format table
      mailprobe report response-times --round 2015-r1 --format csv --out out/r1-times
      mailprobe report response-times --round 2015-r1 --round-end 2015-12-09 --format json
    """
    calendar = load_calendar(calendar_file) if calendar_file else default_calendar()
    method = load_queue_method(method_file)
    end = when_option(round_end, "--round-end")
    with _open(db_url) as store:
        end = end or store.clock.now()
        name, lines, pending = round_facts.response_lines(store, round_id, round_end=end)
    built = build_response_report(round_id, name, lines, method=method, calendar=calendar,
                                  as_of=end, pending=pending)
    if fmt == "json":
        click.echo(json.dumps(report_json(built), ensure_ascii=False, indent=2))
    elif fmt == "table":
        wanted = [t for t in built.tables() if t.id in _TEXT_TABLES]
        click.echo("\n\n".join(text_table(t) for t in wanted))
    else:
        from mailprobe.report import main_file, write_report

        folder = out or Path("out") / f"response-times-{round_id}"
        path = main_file(write_report(built, folder, formats=(fmt,)), folder)
        click.echo(f"report written: {path}")
