"""The campaign meets the indicator engine: probe results from the database + score sheets.

The edge between the store and the pure stages: it reads each round's report lines
(``round_facts.response_lines``) and the evaluators' overrides, turns the lines into the
probe-derived leaves' points (``campaign_scores``), ranks with the sheets
(``engine.evaluate``) and writes one report: rankings, every statistic table and the
response-time report of each round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from mailprobe import round_facts
from mailprobe.campaign_scores import CampaignRound, campaign_scores
from mailprobe.engine import Evaluation, evaluate
from mailprobe.models import AgencyRow
from mailprobe.overrides import active_overrides
from mailprobe.report_tables import build_report, combine_reports
from mailprobe.rubric import Rubric, load_rubric
from mailprobe.score import DerivedScore, MergePolicy
from mailprobe.store import Store
from mailprobe.tables import Report
from mailprobe.timeliness import QueueMethod, load_queue_method
from mailprobe.workdays import When, WorkCalendar, default_calendar

__all__ = ["CampaignReport", "LevelInput", "campaign_evaluation", "load_rounds",
           "write_campaign_report"]


@dataclass(frozen=True)
class LevelInput:
    """One level of the report: its rubric (name or file), section label and score sheets."""

    level: str
    label: str
    scores: tuple[Path, ...]


@dataclass(frozen=True)
class LoadedRound:
    round: CampaignRound
    pending: int  # probes of the round not sent yet


@dataclass(frozen=True)
class CampaignReport:
    path: Path
    evaluations: dict[str, Evaluation]
    derived: dict[str, list[DerivedScore]]
    rounds: tuple[LoadedRound, ...] = field(default=())


def load_rounds(store: Store, round_ids: Sequence[str], *,
                as_of: When | None = None) -> tuple[LoadedRound, ...]:
    """Each round's report lines; replies after ``as_of`` (default: now) do not count."""
    end = as_of or store.clock.now()
    out = []
    for round_id in round_ids:
        name, lines, pending = round_facts.response_lines(store, round_id, round_end=end)
        out.append(LoadedRound(CampaignRound(round_id, name, tuple(lines)), pending))
    return tuple(out)


def _level_agencies(store: Store, rubric: Rubric) -> set[str]:
    with store.session(write=False) as s:
        return set(s.scalars(select(AgencyRow.name).where(AgencyRow.level == rubric.level)))


def campaign_evaluation(
    store: Store,
    rubric: str | Path | Rubric,
    score_files: Sequence[str | Path],
    rounds: Sequence[CampaignRound],
    *,
    agencies_file: str | Path | None = None,
    policy: MergePolicy = MergePolicy.LATEST,
    sheet: str | None = None,
    method: QueueMethod | None = None,
    calendar: WorkCalendar | None = None,
) -> tuple[Evaluation, list[DerivedScore]]:
    """Rank one level: the sheets, the rounds' probe results and the active overrides."""
    rub = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
    derived = campaign_scores(rub, rounds, method=method or load_queue_method(),
                              calendar=calendar or default_calendar(),
                              agencies=_level_agencies(store, rub))
    overrides = active_overrides(store, rub.name)
    ev = evaluate(rub, score_files, agencies_file=agencies_file, policy=policy, sheet=sheet,
                  derived=derived, overrides=overrides)
    return ev, derived


def campaign_parts(store: Store, levels: Sequence[LevelInput], rounds: Sequence[LoadedRound], *,
                   agencies_file: str | Path | None, as_of: When | None = None,
                   policy: MergePolicy = MergePolicy.LATEST, sheet: str | None = None,
                   method: QueueMethod | None = None, calendar: WorkCalendar | None = None,
                   ) -> tuple[list[tuple[str, str, Report]], dict[str, Evaluation],
                              dict[str, list[DerivedScore]]]:
    """The report parts (rankings per level, then each round's response times)."""
    from mailprobe.response_report import build_response_report

    method = method or load_queue_method()
    calendar = calendar or default_calendar()
    plain = [r.round for r in rounds]
    parts: list[tuple[str, str, Report]] = []
    evaluations: dict[str, Evaluation] = {}
    derived: dict[str, list[DerivedScore]] = {}
    for level in levels:
        ev, d = campaign_evaluation(store, level.level, level.scores, plain,
                                    agencies_file=agencies_file, policy=policy, sheet=sheet,
                                    method=method, calendar=calendar)
        evaluations[level.level], derived[level.level] = ev, d
        parts.append((_slug(level.level), level.label or ev.rubric.title,
                      build_report(ev.ranking, ev.stats)))
    for r in rounds:
        built = build_response_report(r.round.round_id, r.round.label, r.round.lines,
                                      method=method, calendar=calendar,
                                      as_of=as_of or store.clock.now(), pending=r.pending)
        parts.append((f"rt_{_slug(r.round.round_id)}", r.round.label, built))
    return parts, evaluations, derived


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in Path(text).stem)


def write_campaign_report(
    store: Store,
    levels: Sequence[LevelInput],
    *,
    agencies_file: str | Path | None,
    round_ids: Sequence[str],
    out: Path,
    formats: Sequence[str] = ("html", "csv", "xlsx"),
    title: str = "政府网站绩效评估报告",
    subtitle: str = "",
    as_of: When | None = None,
    policy: MergePolicy = MergePolicy.LATEST,
    sheet: str | None = None,
    method: QueueMethod | None = None,
    calendar: WorkCalendar | None = None,
) -> CampaignReport:
    """The full report in one go: rankings and statistics per level, response times per round."""
    from mailprobe.report import main_file, write_report

    rounds = load_rounds(store, round_ids, as_of=as_of)
    parts, evaluations, derived = campaign_parts(
        store, levels, rounds, agencies_file=agencies_file, as_of=as_of, policy=policy,
        sheet=sheet, method=method, calendar=calendar)
    report = parts[0][2] if len(parts) == 1 else combine_reports(parts, title, subtitle)
    path = main_file(write_report(report, out, formats=tuple(formats)), out)
    return CampaignReport(path, evaluations, derived, rounds)
