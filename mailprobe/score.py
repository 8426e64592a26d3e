"""Scoring: score-sheet cells and probe results -> leaf points per site, rounds merged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from mailprobe.errors import InputError, SheetError
from mailprobe.rubric import Leaf, Rubric, RuleKind
from mailprobe.sheets import ScoreSheet

__all__ = [
    "DerivedScore",
    "MergePolicy",
    "Override",
    "Scores",
    "merge_rounds",
    "score_sheets",
    "sheet_matrix",
]

_EPS = 1e-9


class MergePolicy(StrEnum):
    LATEST = "latest"  # the latest round in which the leaf was scored (round 2 re-checks round 1)
    FIRST = "first"  # the first round in which the leaf was scored
    BEST = "best"  # the highest score any round gave

    @property
    def label(self) -> str:
        return {"latest": "取该指标最近一轮的评分", "first": "取该指标最早一轮的评分",
                "best": "取各轮中的最高分"}[self.value]


@dataclass(frozen=True)
class DerivedScore:
    """The campaign's points for the probe part of a probe-derived leaf of one agency."""

    agency: str
    leaf: str  # a leaf reference: its key or a unique trailing part of its path
    points: float
    probes: tuple[str, ...] = ()  # the probes the points came from
    note: str = ""


@dataclass(frozen=True)
class Override:
    """An evaluator's decision that replaces a leaf's computed points, with its reason."""

    agency: str
    leaf: str
    points: float
    reason: str
    by: str = ""


@dataclass(frozen=True)
class Scores:
    """Leaf points per site after merging rounds and applying probe results and overrides.

    ``rounds[i, j]`` is the round whose sheet gave leaf j of site i (0 where the
    campaign or an override decided); ``provenance`` explains every such cell.
    """

    rubric: Rubric
    agencies: tuple[str, ...]
    leaf: np.ndarray  # float64 [sites, leaves]
    rounds: np.ndarray  # int64 [sites, leaves]
    policy: MergePolicy
    provenance: dict[tuple[int, int], str] = field(default_factory=dict)
    probe_ids: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)


def _bad_cell(sheet: ScoreSheet, key: object, mask: np.ndarray, values: np.ndarray,
              message: str, expected: str) -> SheetError:
    i = int(np.flatnonzero(mask)[0])
    return SheetError(message, source=sheet.source,
                      location=f"row {int(sheet.lines[i])}, column {sheet.labels[key]}",
                      expected=expected, got=float(values[i]))


def _check_points(sheet: ScoreSheet, leaf: Leaf, index: int, col: np.ndarray) -> None:
    given = ~np.isnan(col)
    out = given & ((col < -_EPS) | (col > leaf.cap + _EPS))
    if out.any():
        raise _bad_cell(sheet, index, out, col, f"out of range for {leaf.key}",
                        f"0..{leaf.cap:g}")
    ratio = col / leaf.step
    off = given & (np.abs(ratio - np.round(ratio)) > 1e-6)
    if off.any():
        raise _bad_cell(sheet, index, off, col, f"not a step of {leaf.step:g} for {leaf.key}",
                        f"a multiple of {leaf.step:g}")


def _observed_points(sheet: ScoreSheet, leaf: Leaf, index: int,
                     include_probe_part: bool) -> np.ndarray | None:
    """Apply the leaf's rule to the sheet's observation columns (None when it has none)."""
    keys = [(index, o.name) for o in leaf.observations]
    present = [k for k in keys if k in sheet.observed]
    if not present:
        return None
    needed = [(index, o.name) for o in leaf.observations
              if include_probe_part or not o.probe_part]
    missing = [k[1] for k in needed if k not in sheet.observed]
    probe_parts = {o.name for o in leaf.observations if o.probe_part}
    if missing and set(missing) <= probe_parts:
        return None  # the campaign measures that part; the sheet cannot give the whole leaf
    if missing:
        raise SheetError(f"observation columns of {leaf.key} are incomplete", source=sheet.source,
                         location="header row",
                         expected="also " + ", ".join(f"{leaf.name}:{m}" for m in missing))
    total = np.full(sheet.n_rows, leaf.base)
    filled = np.zeros(sheet.n_rows, dtype=np.int64)
    for obs in leaf.observations:
        key = (index, obs.name)
        if key not in needed:
            continue
        col = sheet.observed[key]
        given = ~np.isnan(col)
        limit = obs.max_count if obs.max_count is not None else np.inf
        bad = given & ((col < 0) | (col > limit) | (col != np.round(col)))
        if bad.any():
            expected = "0 or 1" if limit == 1 else (
                f"a whole number 0..{limit:g}" if np.isfinite(limit) else "a whole number >= 0")
            raise _bad_cell(sheet, key, bad, col, f"not a valid count for {leaf.key}", expected)
        total = total + np.where(given, col, 0.0) * obs.points
        filled += given
    if np.any((filled > 0) & (filled < len(needed))):
        i = int(np.flatnonzero((filled > 0) & (filled < len(needed)))[0])
        raise SheetError(f"{leaf.key} is observed in part", source=sheet.source,
                         location=f"row {int(sheet.lines[i])}",
                         expected="every observation column of the leaf filled, or none")
    return np.where(filled > 0, np.clip(total, 0.0, leaf.cap), np.nan)


def _probe_columns(rubric: Rubric) -> list[int]:
    return [j for j, leaf in enumerate(rubric.leaves) if leaf.rule is RuleKind.PROBE]


def sheet_matrix(rubric: Rubric, sheet: ScoreSheet) -> np.ndarray:
    """Validate every cell; return [rows, leaves + probe leaves] points, NaN where empty.

    A leaf may be given as points or as observations; where a row gives both they
    must agree. The columns after the leaves hold, for each probe-derived leaf, the
    part that the evaluator observes (e.g. 公开往期 of 答复实效). One column-major
    matrix, filled a column at a time, keeps a 200,000-row sheet to one allocation.
    """
    width = len(rubric.leaves)
    probe_cols = _probe_columns(rubric)
    matrix = np.full((sheet.n_rows, width + len(probe_cols)), np.nan, order="F")
    for j, leaf in enumerate(rubric.leaves):
        points = matrix[:, j]
        col = sheet.points.get(j)
        if col is not None:
            _check_points(sheet, leaf, j, col)
            points[:] = col
        derived = _observed_points(sheet, leaf, j, include_probe_part=True)
        if derived is not None:
            clash = ~np.isnan(points) & ~np.isnan(derived) & (np.abs(points - derived) > _EPS)
            if clash.any():
                raise _bad_cell(sheet, j, clash, points,
                                f"points disagree with the observations of {leaf.key}",
                                "the points the observations give, or one of the two left empty")
            np.copyto(points, derived, where=np.isnan(points))
    for k, j in enumerate(probe_cols):
        part = _observed_points(sheet, rubric.leaves[j], j, include_probe_part=False)
        if part is not None:
            matrix[:, width + k] = part
    return matrix


def merge_rounds(codes: np.ndarray, rounds: np.ndarray, matrix: np.ndarray,
                 policy: MergePolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge rows of (agency code, round) into one row per agency, leaf by leaf.

    Returns the agency codes in ascending order, the merged matrix (NaN where no
    round scored the leaf) and the round each merged cell came from (0 for none).
    Vectorised: rows are sorted by (agency, round) and visited one round position
    at a time, a column at a time (columns are contiguous in the column-major
    sheet matrix), so the cost is a few linear passes whatever the sheet's size.
    """
    order = np.lexsort((rounds, codes))
    codes_s = codes[order]
    n, width = matrix.shape
    if n == 0:
        return codes_s, matrix, np.zeros(matrix.shape, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, codes_s[1:] != codes_s[:-1]])
    sizes = np.diff(np.r_[starts, n])
    merged = np.full((len(starts), width), np.nan, order="F")
    used = np.zeros((len(starts), width), dtype=np.int64, order="F")
    positions = range(int(sizes.max()))
    for k in reversed(positions) if policy is MergePolicy.FIRST else positions:
        groups = np.flatnonzero(sizes > k)
        rows = order[starts[groups] + k]
        row_rounds = rounds[rows]
        every = len(groups) == len(starts)  # the usual case: all agencies have this round
        for j in range(width):
            values = matrix[rows, j]
            # Contiguous column views when every group takes part, else its subset.
            out = merged[:, j] if every else merged[groups, j]
            came = used[:, j] if every else used[groups, j]
            take = ~np.isnan(values)
            if policy is MergePolicy.BEST:  # on equal maxima the later round is named
                take &= ~(values < out)
            np.copyto(out, values, where=take)
            np.copyto(came, row_rounds, where=take)
            if not every:
                merged[groups, j] = out
                used[groups, j] = came
    return codes_s[starts], merged, used


def _duplicate_rows(sheet: ScoreSheet, codes: np.ndarray) -> None:
    order = np.lexsort((sheet.round, codes))
    c, r = codes[order], sheet.round[order]
    dup = np.flatnonzero((c[1:] == c[:-1]) & (r[1:] == r[:-1]))
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise SheetError(
            f"agency {sheet.agency[a]} has two rows for round {int(sheet.round[a])} "
            f"(rows {int(sheet.lines[a])} and {int(sheet.lines[b])})",
            source=sheet.source, location=f"row {int(sheet.lines[b])}",
            expected="one row per agency and round")


def score_sheets(rubric: Rubric, sheets: Sequence[ScoreSheet], *,
                 policy: MergePolicy = MergePolicy.LATEST,
                 derived: Sequence[DerivedScore] = (),
                 overrides: Sequence[Override] = ()) -> Scores:
    """Leaf points per agency: rounds merged by ``policy``, then probe results, then overrides.

    Several sheets (say one per round) are read as one. Every leaf of every agency
    must end up scored, by a sheet or by the campaign; otherwise the error names both.
    """
    if not sheets:
        raise InputError("no score sheet given", expected="at least one score sheet")
    inverse, names = pd.factorize(np.concatenate([s.agency for s in sheets]), sort=True)
    parts, offset = [], 0
    for sheet in sheets:
        _duplicate_rows(sheet, inverse[offset: offset + sheet.n_rows])
        parts.append(sheet_matrix(rubric, sheet))
        offset += sheet.n_rows
    _no_duplicates_across(sheets, inverse)
    rounds = np.concatenate([s.round for s in sheets])
    matrix = parts[0] if len(parts) == 1 else np.concatenate(parts)
    codes_out, merged, used = merge_rounds(inverse, rounds, matrix, policy)
    agencies = tuple(str(a) for a in names[codes_out])
    width = len(rubric.leaves)
    nonprobe = np.full((len(agencies), width), np.nan)
    nonprobe[:, _probe_columns(rubric)] = merged[:, width:]
    scores = Scores(rubric, agencies, merged[:, :width].copy(), used[:, :width].copy(), policy)
    _apply_derived(scores, nonprobe, derived)
    _apply_overrides(scores, overrides)
    _require_complete(scores, sheets[0].source)
    return scores


def _no_duplicates_across(sheets: Sequence[ScoreSheet], inverse: np.ndarray) -> None:
    if len(sheets) < 2:
        return
    rounds = np.concatenate([s.round for s in sheets])
    keys = inverse.astype(np.int64) * (int(rounds.max()) + 1) + rounds
    uniq, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        key = uniq[counts > 1][0]
        hits = np.flatnonzero(keys == key)
        where, offset = [], 0
        for s in sheets:
            where += [f"{s.source} row {int(s.lines[i - offset])}" for i in hits
                      if offset <= i < offset + s.n_rows]
            offset += s.n_rows
        raise SheetError("the same agency and round appear in two sheets",
                         source=where[1].split(" row ")[0], location=where[1],
                         expected="one row per agency and round", got=" and ".join(where))


def _site_index(scores: Scores, agency: str, what: str) -> int:
    try:
        return scores.agencies.index(agency)
    except ValueError:
        raise InputError(f"{what} names an agency that has no score sheet row",
                         location=f"agency {agency}",
                         expected="an agency of the score sheets") from None


def _apply_derived(scores: Scores, nonprobe: np.ndarray, derived: Sequence[DerivedScore]) -> None:
    rubric = scores.rubric
    for d in derived:
        i = _site_index(scores, d.agency, "a probe result")
        j = rubric.leaf_index(d.leaf, location=f"probe result for {d.agency}")
        leaf = rubric.leaves[j]
        if leaf.probe is None:
            raise InputError(f"leaf {leaf.key} is not probe-derived", location=f"agency {d.agency}",
                             expected="a leaf with rule = 'probe'")
        if not 0 <= d.points <= leaf.probe.points + _EPS:
            raise InputError(f"probe points out of range for {leaf.key}", location=d.agency,
                             expected=f"0..{leaf.probe.points:g}", got=float(d.points))
        has_rest = any(not o.probe_part for o in leaf.observations) and (
            leaf.probe.points < leaf.weight)
        rest = nonprobe[i, j]
        if has_rest and np.isnan(rest):
            raise InputError(
                f"{leaf.key} of {d.agency}: the sheet must give the evaluator's part as "
                "observations once the campaign gives the probe part",
                location=f"agency {d.agency}",
                expected=", ".join(f"{leaf.name}:{o.name}" for o in leaf.observations
                                   if not o.probe_part))
        base = 0.0 if not has_rest else float(rest)
        scores.leaf[i, j] = min(base + d.points, leaf.cap)
        scores.rounds[i, j] = 0
        scores.probe_ids[(i, j)] = d.probes
        probes = ", ".join(d.probes) if d.probes else "无"
        scores.provenance[(i, j)] = (f"模拟来信得 {d.points:g} 分（来信：{probes}）"
                                     + (f"，评分表 {base:g} 分" if has_rest else "")
                                     + (f"；{d.note}" if d.note else ""))


def _apply_overrides(scores: Scores, overrides: Sequence[Override]) -> None:
    for o in overrides:
        i = _site_index(scores, o.agency, "an override")
        j = scores.rubric.leaf_index(o.leaf, location=f"override for {o.agency}")
        leaf = scores.rubric.leaves[j]
        if not 0 <= o.points <= leaf.cap + _EPS:
            raise InputError(f"override out of range for {leaf.key}", location=o.agency,
                             expected=f"0..{leaf.cap:g}", got=float(o.points))
        if not o.reason.strip():
            raise InputError("an override needs a reason", location=f"{o.agency} {leaf.key}",
                             expected="a reason")
        before = scores.provenance.get((i, j), f"评分表 {scores.leaf[i, j]:g} 分")
        scores.leaf[i, j] = o.points
        scores.rounds[i, j] = 0
        who = f"（{o.by}）" if o.by else ""
        scores.provenance[(i, j)] = f"人工调整为 {o.points:g} 分{who}：{o.reason}；原为 {before}"


def _require_complete(scores: Scores, source: str) -> None:
    missing = np.argwhere(np.isnan(scores.leaf))
    if missing.size:
        i, j = (int(x) for x in missing[0])
        raise SheetError(
            f"{scores.agencies[i]} has no score for {scores.rubric.leaves[j].key} in any round",
            source=source, location=f"agency {scores.agencies[i]}",
            expected="every leaf scored in at least one round",
            hint=f"{len(missing)} cell(s) missing in all" if len(missing) > 1 else None)
