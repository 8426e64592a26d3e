"""Ranking and statistics: totals, competition ranks, stages, averages, rates, opening rates."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mailprobe.errors import InputError
from mailprobe.rubric import Group, RateMethod, Rubric
from mailprobe.score import Scores
from mailprobe.sheets import Agency, Level

__all__ = [
    "Extremes",
    "IndicatorStat",
    "OpeningRate",
    "Ranking",
    "StageCount",
    "Statistics",
    "competition_rank",
    "rank_sites",
    "stage_index",
    "statistics",
]

_DECIMALS = 6  # totals are compared after rounding, so float noise never splits a tie


def competition_rank(totals: np.ndarray) -> np.ndarray:
    """Standard competition ranking ("1224"): equal totals share a rank, the next is skipped."""
    t = np.round(np.asarray(totals, dtype=np.float64), _DECIMALS)
    ascending_neg = np.sort(-t)
    return np.searchsorted(ascending_neg, -t, side="left").astype(np.int64) + 1


def stage_index(totals: np.ndarray, lowers: Sequence[float]) -> np.ndarray:
    """The stage each total falls in: stage k covers [lowers[k], lowers[k+1])."""
    t = np.round(np.asarray(totals, dtype=np.float64), _DECIMALS)
    return np.searchsorted(np.asarray(lowers, dtype=np.float64), t, side="right") - 1


@dataclass(frozen=True)
class Ranking:
    """Every scored site with its group scores, total, rank and stage."""

    scores: Scores
    groups: np.ndarray  # [sites, groups] in rubric.groups order (raw points)
    raw_total: np.ndarray
    total: np.ndarray  # on the published scale (county: out of 100)
    rank: np.ndarray
    stage: np.ndarray  # index into rubric.stages
    order: np.ndarray  # site indices by rank, ties in agency-list (else name) order
    not_opened: tuple[str, ...]  # agencies of this level without a website
    agencies: tuple[Agency, ...]  # the agency list of this level (empty when none given)

    @property
    def rubric(self) -> Rubric:
        return self.scores.rubric

    @property
    def sites(self) -> tuple[str, ...]:
        return self.scores.agencies

    @property
    def population(self) -> int:
        return len(self.sites) + len(self.not_opened)


def _check_population(scores: Scores, agencies: Sequence[Agency]) -> tuple[Agency, ...]:
    level = Level(scores.rubric.level) if scores.rubric.level in ("city", "county") else None
    mine = tuple(a for a in agencies if level is None or a.level is level)
    by_name = {a.name: a for a in agencies}
    for name in scores.agencies:
        agency = by_name.get(name)
        if agency is None:
            near = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
            raise InputError(f"agency {name} of the score sheet is not in the agency list",
                             location=f"agency {name}", expected="a name from the agency list",
                             hint=f"did you mean {' or '.join(near)}?" if near else None)
        if level is not None and agency.level is not level:
            raise InputError(f"agency {name} is {agency.level.value}-level, the rubric is "
                             f"{level.value}-level", location=f"agency {name}",
                             expected=f"a {level.value}-level agency")
        if not agency.opened:
            raise InputError(f"agency {name} has no website (未开通) but has scores",
                             location=f"agency {name}", expected="scores only for opened sites")
    scored = set(scores.agencies)
    unscored = [a.name for a in mine if a.opened and a.name not in scored]
    if unscored:
        raise InputError(f"{len(unscored)} agencies with a website have no score sheet row",
                         location=f"agency {unscored[0]}",
                         expected="a row for every opened site of the level",
                         got=", ".join(unscored[:5]))
    return mine


def rank_sites(scores: Scores, agencies: Sequence[Agency] = ()) -> Ranking:
    """Group scores, totals, ranks and stages; checks the sheets against the agency list."""
    rubric = scores.rubric
    mine = _check_population(scores, agencies) if agencies else ()
    # One matrix product sums every group at once: membership[leaf, group] is 0 or 1.
    membership = np.zeros((len(rubric.leaves), len(rubric.groups)))
    for k, g in enumerate(rubric.groups):
        membership[list(g.leaf_indices), k] = 1.0
    groups = scores.leaf @ membership
    raw_total = scores.leaf.sum(axis=1)
    total = raw_total * rubric.factor
    rank = competition_rank(raw_total)
    stage = stage_index(total, [s.lower for s in rubric.stages])
    # Ties are listed in agency-list order, else by name (scores.agencies is sorted by name).
    if mine:
        position = {a.name: i for i, a in enumerate(mine)}
        tiebreak = np.array([position[n] for n in scores.agencies], dtype=np.int64)
    else:
        tiebreak = np.arange(len(scores.agencies))
    order = np.lexsort((tiebreak, rank))
    not_opened = tuple(a.name for a in mine if not a.opened)
    return Ranking(scores, groups, raw_total, total, rank, stage, order, not_opened, mine)


@dataclass(frozen=True)
class IndicatorStat:
    key: str
    name: str
    depth: int  # 1 first-level group, 2 second level, ..., leaves have their path length
    is_leaf: bool
    weight: float
    mean: float
    rate: float
    method: RateMethod | None  # None for leaves (both methods agree)


@dataclass(frozen=True)
class StageCount:
    name: str
    lower: float | None
    upper: float | None  # exclusive, None for the last stage (inclusive of the maximum)
    count: int
    share: float


@dataclass(frozen=True)
class Extremes:
    of: str
    weight: float
    highest: float
    highest_sites: tuple[str, ...]
    lowest: float
    lowest_sites: tuple[str, ...]

    @property
    def gap(self) -> float:
        return self.highest - self.lowest


@dataclass(frozen=True)
class OpeningRate:
    city: str
    agencies: int
    opened: int

    @property
    def rate(self) -> float:
        return self.opened / self.agencies if self.agencies else 0.0


@dataclass(frozen=True)
class Statistics:
    averages: dict[str, float]  # first-level group name -> mean points; "total" -> mean total
    indicators: tuple[IndicatorStat, ...]  # groups and leaves in rubric order
    stages: tuple[StageCount, ...]  # includes the not-opened row where the level has one
    extremes: tuple[Extremes, ...]
    thresholds: tuple[tuple[str, int], ...]  # (label, count of sites)
    opening: tuple[OpeningRate, ...]  # per city, by rate; empty without an agency list
    opening_total: OpeningRate | None
    method: RateMethod


def _indicator_stats(ranking: Ranking) -> list[IndicatorStat]:
    rubric = ranking.rubric
    n = len(ranking.sites)
    leaf_mean = ranking.scores.leaf.mean(axis=0) if n else np.zeros(len(rubric.leaves))
    leaf_rate = leaf_mean / np.array([leaf.weight for leaf in rubric.leaves])
    group_mean = ranking.groups.mean(axis=0) if n else np.zeros(len(rubric.groups))

    def unweighted(group: Group) -> float:
        children: list[float] = []
        seen: set[tuple[str, ...]] = set()
        for j in group.leaf_indices:
            path = rubric.leaves[j].path
            child = path[: group.depth + 1]
            if child in seen:
                continue
            seen.add(child)
            if child == path:
                children.append(float(leaf_rate[j]))
            else:
                children.append(unweighted(next(g for g in rubric.groups if g.path == child)))
        return float(np.mean(children))

    out: list[IndicatorStat] = []
    emitted: set[tuple[str, ...]] = set()
    for j, leaf in enumerate(rubric.leaves):
        for gi, group in enumerate(rubric.groups):
            if group.path == leaf.path[: group.depth] and group.path not in emitted:
                emitted.add(group.path)
                rate = (float(group_mean[gi]) / group.weight
                        if rubric.rate_method is RateMethod.WEIGHTED else unweighted(group))
                out.append(IndicatorStat(group.key, group.name, group.depth, False, group.weight,
                                         float(group_mean[gi]), rate, rubric.rate_method))
        out.append(IndicatorStat(leaf.key, leaf.name, len(leaf.path), True, leaf.weight,
                                 float(leaf_mean[j]), float(leaf_rate[j]), None))
    return out


def _stage_counts(ranking: Ranking) -> list[StageCount]:
    rubric = ranking.rubric
    counts = np.bincount(ranking.stage, minlength=len(rubric.stages)) if len(ranking.sites) else (
        np.zeros(len(rubric.stages), dtype=np.int64))
    population = ranking.population
    rows: list[StageCount] = []
    for k, stage in enumerate(rubric.stages):
        upper = rubric.stages[k + 1].lower if k + 1 < len(rubric.stages) else None
        c = int(counts[k])
        rows.append(StageCount(stage.name, stage.lower, upper, c,
                               c / population if population else 0.0))
    rows.reverse()  # the seed lists the best stage first
    if ranking.agencies and any(a.level is Level.COUNTY for a in ranking.agencies):
        c = len(ranking.not_opened)
        rows.append(StageCount(rubric.not_opened_label, None, None, c,
                               c / population if population else 0.0))
    return rows


def _extremes(ranking: Ranking) -> list[Extremes]:
    rubric = ranking.rubric
    sites = np.array(ranking.sites, dtype=object)
    columns = [(g.name, g.weight, ranking.groups[:, gi]) for gi, g in enumerate(rubric.groups)
               if g.depth == 1]
    columns.append(("总得分", rubric.scale_to, ranking.total))
    out = []
    for name, weight, col in columns:
        if not len(col):
            continue
        r = np.round(col, _DECIMALS)
        hi, lo = float(r.max()), float(r.min())
        out.append(Extremes(name, weight, hi, tuple(sorted(sites[r == hi])), lo,
                            tuple(sorted(sites[r == lo]))))
    return out


def _opening(ranking: Ranking) -> tuple[list[OpeningRate], OpeningRate | None]:
    counties = [a for a in ranking.agencies if a.level is Level.COUNTY]
    if not counties:
        return [], None
    cities: dict[str, list[int]] = {}
    for a in counties:
        tally = cities.setdefault(a.city, [0, 0])
        tally[0] += 1
        tally[1] += a.opened
    rates = [OpeningRate(c, t[0], t[1]) for c, t in cities.items()]
    position = {r.city: i for i, r in enumerate(rates)}
    rates.sort(key=lambda r: (-r.rate, -r.agencies, position[r.city]))
    return rates, OpeningRate("合计", len(counties), sum(a.opened for a in counties))


def statistics(ranking: Ranking) -> Statistics:
    rubric = ranking.rubric
    n = len(ranking.sites)
    averages = {g.name: float(ranking.groups[:, gi].mean()) if n else 0.0
                for gi, g in enumerate(rubric.groups) if g.depth == 1}
    averages["total"] = float(ranking.total.mean()) if n else 0.0
    thresholds = []
    top = {g.name: gi for gi, g in enumerate(rubric.groups) if g.depth == 1}
    for t in rubric.thresholds:
        col = ranking.total if t.of == "total" else ranking.groups[:, top[t.of]]
        col = np.round(col, _DECIMALS)
        hit = col >= t.at if t.inclusive else col > t.at
        thresholds.append((t.label, int(hit.sum())))
    opening, opening_total = _opening(ranking)
    return Statistics(averages, tuple(_indicator_stats(ranking)), tuple(_stage_counts(ranking)),
                      tuple(_extremes(ranking)), tuple(thresholds), tuple(opening), opening_total,
                      rubric.rate_method)
