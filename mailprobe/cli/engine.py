"""Commands of the indicator engine: rank, report and the demo."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import click

from mailprobe.cli import main
from mailprobe.cli._output import text_table
from mailprobe.engine import Evaluation, evaluate, evaluation_json
from mailprobe.paths import samples_dir
from mailprobe.report_tables import build_report, combine_reports, ranking_table
from mailprobe.score import MergePolicy
from mailprobe.sheets import write_score_sheet
from mailprobe.tables import Format, Report, Table, format_cell

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


def _evaluate(rubric: str, scores: tuple[Path, ...], agencies: Path | None, sheet: str | None,
              merge: str) -> Evaluation:
    return evaluate(rubric, scores, agencies_file=agencies, policy=MergePolicy(merge),
                    sheet=sheet)


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
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@click.option("--export-sheet", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Also write the merged leaf scores as a score sheet "
                                   "(CSV/XLSX) that reads back unchanged.")
def rank(rubric: str, scores: tuple[Path, ...], agencies: Path | None, sheet: str | None,
         merge: str, fmt: str, output: Path | None, export_sheet: Path | None) -> None:
    """Rank sites from score sheets: totals, ranks, stages and every statistic.

    \b
    Example:
      mailprobe rank --rubric city --scores samples/2015/city_scores.csv \\
          --agencies samples/2015/agencies.csv --format json
      mailprobe rank --rubric city --scores round1.csv --scores round2.csv \\
          --export-sheet merged.xlsx
    """
    ev = _evaluate(rubric, scores, agencies, sheet, merge)
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
    from mailprobe.report import write_report

    written = write_report(report, out, formats=formats)
    first = written.get("html") or next(iter(written.values()))
    return first if isinstance(first, Path) else out


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
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out/report"), show_default=True, help="Folder for the report.")
@click.option("--format", "fmt", default="html,csv,xlsx", show_default=True,
              help="Comma-separated: html, csv, xlsx.")
@click.pass_context
def report(ctx: click.Context, rubric: str, scores: tuple[Path, ...], agencies: Path | None,
           sheet: str | None, merge: str, out: Path, fmt: str) -> None:
    """Write the full report (HTML with charts, CSV and XLSX of every table).

    Without a command it writes the indicator report from score sheets; `report
    response-times` writes the reply-time report of a probe round.

    \b
    Example:
      mailprobe report --rubric county --scores samples/2015/county_scores.csv \\
          --agencies samples/2015/agencies.csv --out out/county-2015
      mailprobe report response-times --round 2015-r1 --out out/r1-times
    """
    if ctx.invoked_subcommand is not None:
        return
    if not scores:
        param = next(p for p in ctx.command.params if p.name == "scores")
        raise click.MissingParameter(ctx=ctx, param=param)
    formats = _parse_formats(fmt)
    ev = _evaluate(rubric, scores, agencies, sheet, merge)
    path = _write(build_report(ev.ranking, ev.stats), out, formats)
    click.echo(f"report written: {path}")


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out/demo-2015"), show_default=True, help="Folder for the report.")
def demo(out: Path) -> None:
    """Rank the bundled 2015 Guangdong sample (22 cities, 211 counties) and write the report.

    \b
    Example:
      mailprobe demo --out out/demo-2015
    """
    base = samples_dir() / "2015"
    agencies = base / "agencies.csv"
    parts = []
    summaries = []
    for level, label in (("city", "地级市"), ("county", "县区级")):
        ev = evaluate(level, [base / f"{level}_scores.csv"], agencies_file=agencies)
        parts.append((level, label, build_report(ev.ranking, ev.stats)))
        summaries.append(_demo_summary(label, ev))
    combined = combine_reports(parts, "2015 年度广东省地市、县（区）环保政府网站绩效评估",
                               "样例数据：按种子报告图表 2-1、4-1、4-2 生成的评分表")
    path = _write(combined, out, _FORMATS)
    click.echo("\n".join(summaries))
    click.echo(f"\nreport written: {path}")


def _demo_summary(label: str, ev: Evaluation) -> str:
    r = ev.ranking
    order = list(r.order)
    top = "、".join(f"{r.sites[i]} {format_cell(float(r.total[i]), Format.SCORE)}"
                   for i in order[:3])
    bottom = "、".join(f"{r.sites[i]} {format_cell(float(r.total[i]), Format.SCORE)}"
                      for i in order[-3:])
    stages = "，".join(f"{s.name} {s.count}" for s in ev.stats.stages)
    avg = format_cell(ev.stats.averages["total"], Format.SCORE)
    return (f"{label}：{len(r.sites)} 个网站参评，平均 {avg} 分；前三 {top}；末三 {bottom}\n"
            f"  发展阶段：{stages}")
