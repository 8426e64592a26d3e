"""The indicator engine's front door: read the files, score, rank and compute statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailprobe.rank import Ranking, Statistics, rank_sites, statistics
from mailprobe.rubric import Rubric, load_rubric
from mailprobe.score import DerivedScore, MergePolicy, Override, score_sheets
from mailprobe.sheets import read_agencies, read_score_sheet

__all__ = ["Evaluation", "evaluate", "evaluation_json"]


@dataclass(frozen=True)
class Evaluation:
    ranking: Ranking
    stats: Statistics

    @property
    def rubric(self) -> Rubric:
        return self.ranking.rubric


def evaluate(
    rubric: str | Path | Rubric,
    score_files: Sequence[str | Path],
    *,
    agencies_file: str | Path | None = None,
    policy: MergePolicy = MergePolicy.LATEST,
    sheet: str | None = None,
    derived: Sequence[DerivedScore] = (),
    overrides: Sequence[Override] = (),
) -> Evaluation:
    """Score sheets (+ probe results and overrides) -> ranking and every statistic."""
    rub = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
    sheets = [read_score_sheet(f, rub, sheet=sheet) for f in score_files]
    agencies = read_agencies(agencies_file) if agencies_file is not None else ()
    scores = score_sheets(rub, sheets, policy=policy, derived=derived, overrides=overrides)
    ranking = rank_sites(scores, agencies)
    return Evaluation(ranking, statistics(ranking))


def evaluation_json(ev: Evaluation) -> dict[str, Any]:
    """The ranking and statistics as JSON-ready data (``mailprobe rank --format json``)."""
    r, s, rubric = ev.ranking, ev.stats, ev.rubric
    names = rubric.short_names()
    city_of = {a.name: a.city for a in r.agencies}
    tops = [(gi, g.name) for gi, g in enumerate(rubric.groups) if g.depth == 1]
    sites = []
    for i in r.order:
        name = r.sites[i]
        site: dict[str, Any] = {
            "rank": int(r.rank[i]), "agency": name, "total": round(float(r.total[i]), 6),
            "raw_total": float(r.raw_total[i]), "stage": rubric.stages[int(r.stage[i])].name,
            "groups": {g: float(r.groups[i, gi]) for gi, g in tops},
            "leaves": {names[j]: float(v) for j, v in enumerate(r.scores.leaf[i])},
        }
        if name in city_of:
            site["city"] = city_of[name]
        site.update({g: float(r.groups[i, gi]) for gi, g in tops})
        prov = {names[j]: text for (si, j), text in r.scores.provenance.items() if si == i}
        if prov:
            site["provenance"] = prov
        probes = {names[j]: list(ids) for (si, j), ids in r.scores.probe_ids.items() if si == i}
        if probes:
            site["probe_ids"] = probes
        sites.append(site)
    return {
        "rubric": {"name": rubric.name, "level": rubric.level, "file": rubric.file,
                   "digest": rubric.digest, "total": rubric.total, "scale_to": rubric.scale_to},
        "merge_policy": r.scores.policy.value,
        "sites": sites,
        "not_opened": list(r.not_opened),
        "statistics": {
            "score_rate_method": s.method.value,
            "averages": s.averages,
            "indicators": [{"key": x.key, "weight": x.weight, "mean": x.mean, "rate": x.rate,
                            "leaf": x.is_leaf} for x in s.indicators],
            "stages": [{"stage": x.name, "count": x.count, "share": x.share} for x in s.stages],
            "population": r.population,
            "extremes": [{"of": e.of, "highest": e.highest, "highest_sites": list(e.highest_sites),
                          "lowest": e.lowest, "lowest_sites": list(e.lowest_sites),
                          "gap": e.gap} for e in s.extremes],
            "thresholds": [{"rule": label, "count": c} for label, c in s.thresholds],
            "opening": [{"city": o.city, "agencies": o.agencies, "opened": o.opened,
                         "rate": o.rate} for o in s.opening],
        },
    }
