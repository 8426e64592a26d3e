"""Commands of the indicator engine: rank and report."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click

from mailprobe.cli import main
from mailprobe.cli._output import text_table, when_option
from mailprobe.engine import Evaluation, evaluate, evaluation_json
from mailprobe.report_tables import build_report, ranking_table
from mailprobe.score import MergePolicy
from mailprobe.sheets import write_score_sheet
from mailprobe.tables import Format, Report, Table, format_cell
from mailprobe.workdays import When

_FORMATS = ("html", "csv", "xlsx")


def _engine_options(f: click.decorators.FC, *,
                    scores_required: bool = True) -> click.decorators.FC:
    options = [
        click.option("--rubric", "rubric", default="city", show_default=True, metavar="NAME|FILE",
                     help="Indicator system: 'city', 'county' or a rubric TOML file."),
        click.option("--scores", "scores", multiple=True, required=scores_required,
                     metavar="FILE",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Score sheet (CSV/XLSX); repeat for one file per round."),
        click.option("--agencies", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="Agency list (CSV/XLSX): name, level, city, website."),
        click.option("--sheet", metavar="NAME", help="Worksheet to read in XLSX files."),
        click.option("--merge", "merge", type=click.Choice([p.value for p in MergePolicy]),
                     default=MergePolicy.LATEST.value, show_default=True,
                     help="How rounds combine per leaf: latest round that scored it, "
                          "first, or best."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _campaign_options(f: click.decorators.FC) -> click.decorators.FC:
    from mailprobe.cli.store import _db_option

    options = [
        click.option("--campaign", "campaign", multiple=True, metavar="ROUND",
                     help="Take the probe-derived leaves from this probe round in the "
                          "database (repeat for each round); overrides recorded with "
                          "`mailprobe override add` apply too."),
        click.option("--as-of", "as_of", metavar="DATE|ISO",
                     help="With --campaign: replies after this do not count (default: now)."),
        _db_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _as_of(text: str | None) -> When | None:
    return when_option(text, "--as-of")


def _evaluate(rubric: str, scores: tuple[Path, ...], agencies: Path | None, sheet: str | None,
              merge: str, campaign: tuple[str, ...] = (), as_of: str | None = None,
              db_url: str | None = None) -> Evaluation:
    if not campaign:
        return evaluate(rubric, scores, agencies_file=agencies, policy=MergePolicy(merge),
                        sheet=sheet)
    from mailprobe.campaign_report import campaign_evaluation, load_rounds
    from mailprobe.cli.store import _open

    with _open(db_url) as store:
        rounds = load_rounds(store, campaign, as_of=_as_of(as_of))
        ev, _ = campaign_evaluation(store, rubric, scores, [r.round for r in rounds],
                                    agencies_file=agencies, policy=MergePolicy(merge),
                                    sheet=sheet)
    return ev


def _csv_text(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.title for c in table.columns])
    for row in (*table.rows, *table.footer):
        writer.writerow(["" if v is None else (v if c.format is not Format.SCORE
                                               else format_cell(v, c.format))
                         for v, c in zip(row, table.columns, strict=True)])
    return buf.getvalue()


@main.command()
@_engine_options
@_campaign_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@click.option("--export-sheet", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Also write the merged leaf scores as a score sheet "
                                   "(CSV/XLSX) that reads back unchanged.")
def rank(rubric: str, scores: tuple[Path, ...], agencies: Path | None, sheet: str | None,
         merge: str, campaign: tuple[str, ...], as_of: str | None, db_url: str | None,
         fmt: str, output: Path | None, export_sheet: Path | None) -> None:
    """Rank sites from score sheets: totals, ranks, stages and every statistic.

    With --campaign the probe-derived leaves (渠道功能, 答复实效, 网上咨询, 网上监督) come
    from the probe rounds in the database, and the JSON says which probes gave each point.

    \b
    Example:
      mailprobe rank --rubric city --scores samples/2015/city_scores.csv \\
          --agencies samples/2015/agencies.csv --format json
      mailprobe rank --rubric city --scores round1.csv --scores round2.csv \\
          --export-sheet merged.xlsx
      mailprobe rank --rubric city --scores samples/2015/city_scores.csv \\
          --campaign 2015-r1 --campaign 2015-r2 --db sqlite:///out/demo-2015/demo.db
    """
    ev = _evaluate(rubric, scores, agencies, sheet, merge, campaign, as_of, db_url)
    if export_sheet is not None:
        merged = ev.ranking.scores
        write_score_sheet(export_sheet, merged.agencies, ev.rubric, merged.leaf)
        click.echo(f"wrote {export_sheet}", err=True)
    if fmt == "json":
        text = json.dumps(evaluation_json(ev), ensure_ascii=False, indent=2) + "\n"
    elif fmt == "csv":
        text = _csv_text(ranking_table(ev.ranking, ev.stats))
    else:
        text = _summary_text(ev)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


def _summary_text(ev: Evaluation) -> str:
    report = build_report(ev.ranking, ev.stats)
    wanted = {"ranking", "groups", "stages", "opening", "thresholds"}
    return "\n\n".join(text_table(t) for t in report.tables() if t.id in wanted) + "\n"


def _write(report: Report, out: Path, formats: tuple[str, ...]) -> Path:
    from mailprobe.report import main_file, write_report

    return main_file(write_report(report, out, formats=formats), out)


def _parse_formats(text: str) -> tuple[str, ...]:
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in chosen if x not in _FORMATS]
    if bad or not chosen:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(_FORMATS)}, "
                                 f"got {text!r}", param_hint="--format")
    return chosen


def _report_options(f: click.decorators.FC) -> click.decorators.FC:
    # --scores is required only when no subcommand runs: checked in the group's callback.
    return _engine_options(f, scores_required=False)


@main.group(invoke_without_command=True)
@_report_options
@_campaign_options
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out/report"), show_default=True, help="Folder for the report.")
@click.option("--format", "fmt", default="html,csv,xlsx", show_default=True,
              help="Comma-separated: html, csv, xlsx.")
@click.pass_context
def report(ctx: click.Context, rubric: str, scores: tuple[Path, ...], agencies: Path | None,
           sheet: str | None, merge: str, campaign: tuple[str, ...], as_of: str | None,
           db_url: str | None, out: Path, fmt: str) -> None:
    """Write the full report (HTML with charts, CSV and XLSX of every table).

    Without a command it writes the indicator report from score sheets. With --campaign
    the probe rounds in the database give the probe-derived leaves, and the report adds
    each round's response times: rankings, every statistic table and the reply times in
    one command. `report response-times` writes the reply-time report of one round alone.

    \b
    Example:
      mailprobe report --rubric county --scores samples/2015/county_scores.csv \\
          --agencies samples/2015/agencies.csv --out out/county-2015
      mailprobe report --rubric city --scores samples/2015/city_scores.csv \\
          --agencies samples/2015/agencies.csv --campaign 2015-r1 --campaign 2015-r2 \\
          --db sqlite:///out/demo-2015/demo.db --out out/city-campaign
      mailprobe report response-times --round 2015-r1 --out out/r1-times
    """
    if ctx.invoked_subcommand is not None:
        return
    if not scores:
        param = next(p for p in ctx.command.params if p.name == "scores")
        raise click.MissingParameter(ctx=ctx, param=param)
    formats = _parse_formats(fmt)
    if campaign:
        from mailprobe.campaign_report import LevelInput, write_campaign_report
        from mailprobe.cli.store import _open

        with _open(db_url) as store:
            done = write_campaign_report(
                store, [LevelInput(rubric, "", scores)], agencies_file=agencies,
                round_ids=campaign, out=out, formats=formats, as_of=_as_of(as_of),
                policy=MergePolicy(merge), sheet=sheet)
        click.echo(f"report written: {done.path}")
        return
    ev = _evaluate(rubric, scores, agencies, sheet, merge)
    path = _write(build_report(ev.ranking, ev.stats), out, formats)
    click.echo(f"report written: {path}")
