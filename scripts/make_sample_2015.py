#!/usr/bin/env python3
"""Write samples/2015/: a synthetic agency list and score sheets that reproduce the seed.

The seed report publishes totals and statistics, not its score sheets. This script
invents score sheets (two rounds, as in the seed) under hard constraints taken from
tests/golden/seed_2015.json:

* agencies: the 22 city-level sites of 图表 1-1 and, per city of 图表 4-1, exactly its
  number of county-level units and of opened sites (211 and 96 in all);
* city sheets: after merging the rounds with the policy "latest round in which a leaf
  was scored", every city's four first-level sums equal 图表 2-1 (hence the totals,
  the ranks and the tie at 15th); 网站安全 follows chapter 3 (肇庆市 and 云浮市 3 high-risk
  vulnerabilities each, the others none);
* county sheets: after the same merge, the stage counts of 图表 4-2;
* every cell respects its leaf's rule (weight, step, criteria sums, deductions).

Within those constraints a seeded search aims the leaf averages at 图表 2-5..2-8 and
4-5..4-8. The output is byte-for-byte the same for the same seed.

    python scripts/make_sample_2015.py                 # seed 2015, into samples/2015/
    python scripts/make_sample_2015.py --out /tmp/s --seed 7
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mailprobe.rubric import Leaf, Rubric, RuleKind, load_rubric  # noqa: E402

DEFAULT_GOLDEN = ROOT / "tests" / "golden" / "seed_2015.json"
DEFAULT_OUT = ROOT / "samples" / "2015"
RUBRICS = ROOT / "config" / "rubric"

UNITS = 2  # the solver counts in half points: every city value is a multiple of 0.5

# Not in the seed's tables, so stated here: which city 顺德区 belongs to, which cities
# have towns (镇区) rather than counties under them (东莞 and 中山 have no county level),
# and the short Latin codes used to build the fictional `.test` addresses.
PARENT_CITY = {"顺德区": "佛山市"}
TOWN_CITIES = ("东莞市", "中山市")
CODES = {
    "广州市": "gz", "深圳市": "sz", "珠海市": "zh", "汕头市": "st", "佛山市": "fs",
    "韶关市": "sg", "湛江市": "zj", "肇庆市": "zq", "江门市": "jm", "茂名市": "mm",
    "惠州市": "hz", "梅州市": "mz", "汕尾市": "sw", "河源市": "hy", "阳江市": "yj",
    "清远市": "qy", "东莞市": "dg", "中山市": "zs", "潮州市": "cz", "揭阳市": "jy",
    "云浮市": "yf", "顺德区": "sd",
}
CITY_TABLES = ("table_2_5", "table_2_6", "table_2_7", "table_2_8")
COUNTY_TABLES = ("table_4_5", "table_4_6", "table_4_7", "table_4_8")
# Leaves written as what the evaluator observed (a count) rather than as points.
OBSERVED = {"办事指南": "缺少要素", "网站安全": "高危漏洞数"}
# Probe-derived leaves whose evaluator part is written beside the points, so that a campaign
# can replace the probe part (答复实效 = 公开往期 1 point + the probes' 2 points).
EVALUATOR_PART = {"答复实效": "公开往期"}
ACCESS_LEAF = "网站能否正常访问"  # a county site that cannot be opened scores nothing


class SampleError(Exception):
    """The constraints cannot be met, or the inputs disagree."""


# ---------------------------------------------------------------------------- leaf rules


def leaf_domain(leaf: Leaf) -> list[float]:
    """Every value the leaf's rule can give, ascending.

    judged: 0..weight in steps; criteria: sums of subsets of the criteria points;
    per_item: item counts plus criteria; deductions: the weight minus whole counts;
    probe: the evaluator-observed part plus the probe part in steps of the leaf.
    All capped at the leaf's cap and floored at 0.
    """
    if leaf.rule is RuleKind.JUDGED:
        n = round(leaf.cap / leaf.step)
        return [k * leaf.step for k in range(n + 1)]
    values = {leaf.base}
    probe_part = any(o.probe_part for o in leaf.observations)
    for obs in leaf.observations:
        if obs.probe_part:
            continue
        limit = obs.max_count if obs.max_count is not None else math.ceil(
            leaf.cap / abs(obs.points))
        values = {v + c * obs.points for v in values for c in range(limit + 1)}
    if leaf.rule is RuleKind.PROBE and probe_part and leaf.probe is not None:
        n = round(leaf.probe.points / leaf.step)
        values = {v + k * leaf.step for v in values for k in range(n + 1)}
    return sorted({min(max(v, 0.0), leaf.cap) for v in values})


def fmt(value: float) -> str:
    """Numbers written minimally: 2, 1.5, 0.5 (never 2.0)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


# ---------------------------------------------------------------------------- solver


@dataclass
class Problem:
    """Rows whose cells must sum to given totals; column sums aimed at targets.

    Everything is in integer units. ``targets`` are in hundredths of a unit so that
    the search compares integers only (deterministic on every platform).
    """

    totals: list[int]  # per row
    domains: list[list[int]]  # per column, ascending
    targets: list[int]  # per column, in hundredths of a unit
    fixed: dict[tuple[int, int], int]


def _row_init(p: Problem, i: int, rng: random.Random) -> list[int]:
    """A random row meeting its total: backward reachability, then a guided draw."""
    n_cols, n_rows = len(p.domains), len(p.totals)
    doms = [[p.fixed[(i, j)]] if (i, j) in p.fixed else p.domains[j] for j in range(n_cols)]
    reach: list[set[int]] = [set() for _ in range(n_cols + 1)]
    reach[n_cols] = {0}
    for j in range(n_cols - 1, -1, -1):
        reach[j] = {v + s for v in doms[j] for s in reach[j + 1]}
    if p.totals[i] not in reach[0]:
        raise SampleError(f"row {i}: total {p.totals[i]} is out of reach of the leaf rules")
    row, rest = [], p.totals[i]
    for j in range(n_cols):
        ok = [v for v in doms[j] if rest - v in reach[j + 1]]
        mean = p.targets[j] / n_rows  # hundredths of a unit
        weights = [1 + 1000 // (1 + abs(100 * v - round(mean)) // 25) for v in ok]
        v = rng.choices(ok, weights=weights)[0]
        row.append(v)
        rest -= v
    return row


def solve(p: Problem, rng: random.Random, iterations: int) -> list[list[int]]:
    """Seeded local search: moves inside a row keep its total; aim column sums at targets."""
    n_rows, n_cols = len(p.totals), len(p.domains)
    x = [_row_init(p, i, rng) for i in range(n_rows)]
    dom_sets = [set(d) for d in p.domains]
    sums = [sum(x[i][j] for i in range(n_rows)) for j in range(n_cols)]

    def err(j: int, s: int) -> int:
        e = 100 * s - p.targets[j]
        return e * e

    cost = sum(err(j, sums[j]) for j in range(n_cols))
    best, best_cost = [r[:] for r in x], cost
    for it in range(iterations):
        i = rng.randrange(n_rows)
        j = rng.randrange(n_cols)
        if (i, j) in p.fixed:
            continue
        v = rng.choice(p.domains[j])
        delta = v - x[i][j]
        if delta == 0:
            continue
        base_j = err(j, sums[j] + delta) - err(j, sums[j])
        choice, choice_gain = -1, 0
        for k in range(n_cols):
            if k == j or (i, k) in p.fixed or (x[i][k] - delta) not in dom_sets[k]:
                continue
            gain = base_j + err(k, sums[k] - delta) - err(k, sums[k])
            if choice < 0 or gain < choice_gain:
                choice, choice_gain = k, gain
        if choice < 0:
            continue
        threshold = 2500 * (iterations - it) // iterations  # shrinks to 0: accept ties only
        if choice_gain > threshold:
            continue
        x[i][j] = v
        x[i][choice] -= delta
        sums[j] += delta
        sums[choice] -= delta
        cost += choice_gain
        if cost < best_cost:
            best, best_cost = [r[:] for r in x], cost
    return best


def solve_binary(ranges: list[tuple[int, int]], targets: list[int], fixed_rows: set[int],
                 rng: random.Random, iterations: int) -> list[list[int]]:
    """0/1 rows whose sums stay inside ``ranges``; column sums aimed at ``targets``."""
    n_rows, n_cols = len(ranges), len(targets)
    x: list[list[int]] = []
    for i, (lo, hi) in enumerate(ranges):
        if i in fixed_rows:
            x.append([0] * n_cols)
            continue
        k = rng.randint(lo, hi)
        pool = list(range(n_cols))
        chosen: list[int] = []
        for _ in range(k):
            weights = [max(1, targets[c]) for c in pool]
            pick = rng.choices(pool, weights=weights)[0]
            pool.remove(pick)
            chosen.append(pick)
        x.append([1 if c in chosen else 0 for c in range(n_cols)])
    sums = [sum(r[j] for r in x) for j in range(n_cols)]

    def err(j: int, s: int) -> int:
        e = 100 * s - targets[j]
        return e * e

    cost = sum(err(j, sums[j]) for j in range(n_cols))
    best, best_cost = [r[:] for r in x], cost
    free = [i for i in range(n_rows) if i not in fixed_rows]
    for it in range(iterations):
        i = rng.choice(free)
        j = rng.randrange(n_cols)
        row = x[i]
        lo, hi = ranges[i]
        moves: list[tuple[int, int]] = []  # (column, change)
        if rng.random() < 0.5:  # swap a 1 and a 0 of the row: its sum stays
            others = [k for k in range(n_cols) if row[k] != row[j]]
            if not others:
                continue
            k = rng.choice(others)
            moves = [(j, 1 - 2 * row[j]), (k, 1 - 2 * row[k])]
        else:  # flip one cell if the row stays in its stage
            change = 1 - 2 * row[j]
            if not lo <= sum(row) + change <= hi:
                continue
            moves = [(j, change)]
        gain = sum(err(c, sums[c] + d) - err(c, sums[c]) for c, d in moves)
        if gain > 2500 * (iterations - it) // iterations:
            continue
        for c, d in moves:
            row[c] += d
            sums[c] += d
        cost += gain
        if cost < best_cost:
            best, best_cost = [r[:] for r in x], cost
    return best


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class County:
    name: str
    city: str
    website: str  # "" when not opened (未开通)


def seed_leaves(golden: dict[str, Any], tables: Sequence[str],
                rubric: Rubric) -> list[dict[str, Any]]:
    """The seed's leaf rows in rubric order, checked against the rubric's paths and weights."""
    rows = [leaf for t in tables for leaf in golden[t]["leaves"]]
    keys = ["/".join(r["path"]) for r in rows]
    if keys != [leaf.key for leaf in rubric.leaves]:
        raise SampleError(f"the seed's leaf tables do not match rubric {rubric.level}: "
                          f"{keys} vs {[leaf.key for leaf in rubric.leaves]}")
    for row, leaf in zip(rows, rubric.leaves, strict=True):
        if abs(row["weight"] - leaf.weight) > 1e-9:
            raise SampleError(f"{leaf.key}: weight {row['weight']} in the seed, "
                              f"{leaf.weight:g} in the rubric")
    return rows


def make_counties(golden: dict[str, Any], cities: Sequence[str],
                  rng: random.Random) -> list[County]:
    per_city = {r["city"]: r for r in golden["table_4_1"]["cities"]}
    out: list[County] = []
    for city in cities:  # the order of 图表 1-1
        row = per_city.get(city)
        if row is None:
            continue
        kind = "镇区" if city in TOWN_CITIES else "县区"
        opened = set(rng.sample(range(row["counties"]), row["opened"]))
        for n in range(row["counties"]):
            site = f"https://hbj.{CODES[city]}{n + 1:02d}.gd.test/" if n in opened else ""
            out.append(County(f"{city}第{n + 1:02d}{kind}", city, site))
    return out


def city_problem(golden: dict[str, Any], rubric: Rubric, cities: Sequence[str],
                 ) -> tuple[list[tuple[int, Problem, list[int]]], list[float]]:
    """One problem per first-level group; also the leaf targets (points over all cities)."""
    seed = seed_leaves(golden, CITY_TABLES, rubric)
    t21 = {c["name"]: c for c in golden["table_2_1"]["cities"]}
    n = len(cities)
    # The leaf tables print averages over 23 sites while 图表 2-1 has 22; per group the
    # surplus of (rate x 23 x weight) over the 2-1 column is spread over its leaves by weight.
    n_printed = n + 1
    targets: list[float] = []
    for group in rubric.top_groups:
        idx = list(group.leaf_indices)
        printed = [seed[j]["rate_pct"] / 100 * n_printed * rubric.leaves[j].weight for j in idx]
        surplus = sum(printed) - sum(t21[c][group.name] for c in cities)
        for j, pts in zip(idx, printed, strict=True):
            w = rubric.leaves[j].weight
            targets.append(min(max(pts - surplus * w / group.weight, 0.0), n * w))
    vulns = golden["vulnerabilities"]["per_site"]
    problems = []
    for g, group in enumerate(rubric.top_groups):
        idx = list(group.leaf_indices)
        fixed: dict[tuple[int, int], int] = {}
        for col, j in enumerate(idx):
            if rubric.leaves[j].name == "网站安全":
                for i, city in enumerate(cities):
                    fixed[(i, col)] = round(UNITS * (rubric.leaves[j].weight - vulns.get(city, 0)))
        problems.append((g, Problem(
            totals=[round(UNITS * t21[c][group.name]) for c in cities],
            domains=[[round(UNITS * v) for v in leaf_domain(rubric.leaves[j])] for j in idx],
            targets=[round(100 * UNITS * targets[j]) for j in idx],
            fixed=fixed,
        ), idx))
    return problems, targets


@dataclass(frozen=True)
class Recheck:
    """How round 2 re-checks round 1."""

    share: float  # of the rows
    picks: tuple[int, int]  # how many cells of a re-checked row, at least and at most
    confirm: dict[int, list[int]]  # rows re-checked on these cells, with the same result
    only_confirm: frozenset[int] = frozenset()  # rows re-checked on their confirm cells only
    frozen: frozenset[int] = frozenset()  # columns that never change between rounds


def second_round(final: list[list[float]], domains: list[list[float]], plan: Recheck,
                 rng: random.Random) -> tuple[list[list[float]], dict[int, dict[int, float]]]:
    """Round 1 (every cell) and round 2 (some cells of some rows) merging into ``final``.

    Round 2 re-checks what round 1 found: a re-checked cell holds the final value; round
    1 holds a lower value there (fixed since, 整改), now and then a higher one (worse since)
    or the same (confirmed). Cells not re-checked hold the final value in round 1.
    """
    n_rows, n_cols = len(final), len(domains)
    round1 = [row[:] for row in final]
    rechecked = set(rng.sample(range(n_rows), round(plan.share * n_rows))) | set(plan.confirm)
    round2: dict[int, dict[int, float]] = {}
    for i in sorted(rechecked):
        confirm = plan.confirm.get(i, [])
        cols = set(confirm)
        if i not in plan.only_confirm:
            cols |= set(rng.sample(range(n_cols), rng.randint(*plan.picks)))
        cells: dict[int, float] = {}
        for j in sorted(cols):
            v = final[i][j]
            lower = [d for d in domains[j] if d < v][-2:]
            higher = [d for d in domains[j] if d > v][:2]
            r = rng.random()
            if j in confirm or j in plan.frozen:
                pass  # re-checked, same result
            elif r < 0.6 and lower:
                round1[i][j] = rng.choice(lower)
            elif r < 0.7 and higher:
                round1[i][j] = rng.choice(higher)
            cells[j] = v
        round2[i] = cells
    return round1, round2


def merged(round1: list[list[float]], round2: dict[int, dict[int, float]]) -> list[list[float]]:
    out = [row[:] for row in round1]
    for i, cells in round2.items():
        for j, v in cells.items():
            out[i][j] = v
    return out


# ---------------------------------------------------------------------------- writing


def csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def city_header(rubric: Rubric) -> tuple[list[str], list[tuple[int, str | None]]]:
    header = ["单位", "轮次"]
    cols: list[tuple[int, str | None]] = []
    for j, short in enumerate(rubric.short_names()):
        header.append(short)
        cols.append((j, None))
        obs = OBSERVED.get(rubric.leaves[j].name) or EVALUATOR_PART.get(rubric.leaves[j].name)
        if obs is not None:
            if rubric.leaves[j].observation(obs) is None:
                raise SampleError(f"{rubric.leaves[j].key} has no observation {obs}")
            header.append(f"{short}:{obs}")
            cols.append((j, obs))
    return header, cols


def city_cells(rubric: Rubric, cols: Sequence[tuple[int, str | None]], values: dict[int, float],
               as_points: set[int]) -> list[str]:
    """Cells of one row: points, or for OBSERVED leaves the count (unless ``as_points``)."""
    out = []
    for j, obs in cols:
        if j not in values:
            out.append("")
            continue
        observed = OBSERVED.get(rubric.leaves[j].name) is not None and j not in as_points
        leaf = rubric.leaves[j]
        if obs is None:
            out.append("" if observed else fmt(values[j]))
        elif leaf.name in EVALUATOR_PART:
            out.append(fmt(evaluator_part(values[j])))
        else:
            count = (leaf.base - values[j]) / abs(leaf.observations[0].points)
            out.append(fmt(count) if observed else "")
    return out


def evaluator_part(points: float) -> float:
    """公开往期 (0 or 1) for a 答复实效 total, leaving a probe part of 0..2 points."""
    return 1.0 if points > 2 or points % 2 >= 1 else 0.0


# ---------------------------------------------------------------------------- main


def build(golden: dict[str, Any], seed: int, log: list[str]) -> dict[str, str]:
    rng = random.Random(seed)
    city_rubric = load_rubric(RUBRICS / "city.toml")
    county_rubric = load_rubric(RUBRICS / "county.toml")
    cities: list[str] = golden["table_1_1"]["cities"]

    # -- agencies
    counties = make_counties(golden, cities, rng)
    agencies = [["单位", "级别", "所属地市", "网站"]]
    for city in cities:
        agencies.append([city, "市级", PARENT_CITY.get(city, city),
                         f"https://hbj.{CODES[city]}.gd.test/"])
    agencies += [[c.name, "县级", c.city, c.website] for c in counties]

    # -- city sheets
    problems, targets = city_problem(golden, city_rubric, cities)
    n_leaves = len(city_rubric.leaves)
    final_units = [[0] * n_leaves for _ in cities]
    for _, problem, idx in problems:
        x = solve(problem, rng, iterations=40000)
        for i in range(len(cities)):
            for col, j in enumerate(idx):
                final_units[i][j] = x[i][col]
    final = [[v / UNITS for v in row] for row in final_units]
    domains = [leaf_domain(leaf) for leaf in city_rubric.leaves]
    security = [j for j, leaf in enumerate(city_rubric.leaves) if leaf.name == "网站安全"]
    vulns = golden["vulnerabilities"]["per_site"]
    rescan = {i: security for i, c in enumerate(cities) if vulns.get(c, 0)}
    round1, round2 = second_round(final, domains, Recheck(
        share=2 / 3, picks=(2, 6), confirm=rescan, frozen=frozenset(security)), rng)
    check_city(golden, city_rubric, cities, merged(round1, round2))
    header, cols = city_header(city_rubric)
    observed_leaves = [j for j, leaf in enumerate(city_rubric.leaves) if leaf.name in OBSERVED]
    clean = [i for i, c in enumerate(cities) if not vulns.get(c, 0)]
    as_points = {j: set(rng.sample(clean, 3)) for j in observed_leaves}
    city_rows = [header]
    for i, city in enumerate(cities):
        pts = {j for j in observed_leaves if i in as_points[j]}
        city_rows.append([city, "1", *city_cells(city_rubric, cols, dict(enumerate(round1[i])),
                                                 pts)])
    for i in sorted(round2):
        city_rows.append([cities[i], "2", *city_cells(city_rubric, cols, round2[i], set())])

    # -- county sheets
    opened = [c for c in counties if c.website]
    stage_of = stage_sums(county_rubric)
    t42 = {s["stage"]: s["count"] for s in golden["table_4_2"]["stages"]}
    if sum(t42.get(s.name, 0) for s in county_rubric.stages) != len(opened):
        raise SampleError("图表 4-2's stage counts do not add up to the opened sites")
    seed_c = seed_leaves(golden, COUNTY_TABLES, county_rubric)
    c_targets = [round(100 * r["rate_pct"] / 100 * len(opened)) for r in seed_c]
    access = next(j for j, leaf in enumerate(county_rubric.leaves) if leaf.name == ACCESS_LEAF)
    n_dead = len(opened) - round(c_targets[access] / 100)
    stages = [s.name for s in county_rubric.stages for _ in range(t42.get(s.name, 0))]
    if n_dead > stages.count(county_rubric.stages[0].name):
        raise SampleError("more unreachable sites than sites in the lowest stage")
    dead = sorted(rng.sample(range(len(opened)), n_dead))
    rest = list(stages)
    for _ in dead:
        rest.remove(county_rubric.stages[0].name)
    rng.shuffle(rest)
    it = iter(rest)
    stage_list = [county_rubric.stages[0].name if i in dead else next(it)
                  for i in range(len(opened))]
    ranges = [(min(stage_of[s]), max(stage_of[s])) for s in stage_list]
    xc = solve_binary(ranges, c_targets, set(dead), rng, iterations=60000)
    c_final = [[float(v) for v in row] for row in xc]
    c_domains = [leaf_domain(leaf) for leaf in county_rubric.leaves]
    c_round1, c_round2 = second_round(c_final, c_domains, Recheck(
        share=2 / 3, picks=(1, 4), confirm={i: [access] for i in dead},
        only_confirm=frozenset(dead)), rng)
    c_merged = merged(c_round1, c_round2)
    check_county(golden, county_rubric, c_merged)
    county_rows = [["单位", "轮次", *county_rubric.short_names()]]
    for i, c in enumerate(opened):
        county_rows.append([c.name, "1", *(fmt(v) for v in c_round1[i])])
    for i in sorted(c_round2):
        cells = c_round2[i]
        county_rows.append([opened[i].name, "2", *(fmt(cells[j]) if j in cells else ""
                                                   for j in range(len(county_rubric.leaves)))])

    report(log, city_rubric, golden, final, targets, county_rubric, seed_c, c_merged,
           len(cities), n_dead)
    return {
        "agencies.csv": csv_text(agencies),
        "city_scores.csv": csv_text(city_rows),
        "county_scores.csv": csv_text(county_rows),
    }


def stage_sums(rubric: Rubric) -> dict[str, list[int]]:
    """For each stage, the raw county sums (0..14) whose scaled total falls in it."""
    out: dict[str, list[int]] = {s.name: [] for s in rubric.stages}
    n = round(rubric.total)
    for s in range(n + 1):
        score = s * rubric.factor
        name = [st.name for st in rubric.stages if st.lower <= score + 1e-9][-1]
        out[name].append(s)
    return out


def check_city(golden: dict[str, Any], rubric: Rubric, cities: Sequence[str],
               values: list[list[float]]) -> None:
    t21 = {c["name"]: c for c in golden["table_2_1"]["cities"]}
    domains = [leaf_domain(leaf) for leaf in rubric.leaves]
    for i, city in enumerate(cities):
        for j, v in enumerate(values[i]):
            if v not in domains[j]:
                raise SampleError(f"{city} {rubric.leaves[j].key}: {v} breaks the leaf rule")
        for group in rubric.top_groups:
            got = sum(values[i][j] for j in group.leaf_indices)
            if abs(got - t21[city][group.name]) > 1e-9:
                raise SampleError(f"{city} {group.name}: {got:g}, 图表 2-1 says "
                                  f"{t21[city][group.name]}")


def check_county(golden: dict[str, Any], rubric: Rubric, values: list[list[float]]) -> None:
    stage_of = {s: name for name, sums in stage_sums(rubric).items() for s in sums}
    counts: dict[str, int] = {}
    for row in values:
        name = stage_of[round(sum(row))]
        counts[name] = counts.get(name, 0) + 1
    for s in golden["table_4_2"]["stages"]:
        if s["stage"] != rubric.not_opened_label and counts.get(s["stage"], 0) != s["count"]:
            raise SampleError(f"county stage {s['stage']}: {counts.get(s['stage'], 0)} sites, "
                              f"图表 4-2 says {s['count']}")


def report(log: list[str], rubric: Rubric, golden: dict[str, Any], final: list[list[float]],
           targets: list[float], county: Rubric, seed_c: list[dict[str, Any]],
           c_values: list[list[float]], n: int, n_dead: int) -> None:
    seed = seed_leaves(golden, CITY_TABLES, rubric)
    log.append(f"city leaves ({n} sites; the seed printed averages over {n + 1} sites):")
    log.append(f"  {'leaf':<24} {'weight':>6} {'target':>7} {'sum':>6} {'avg':>6} "
               f"{'avg23*':>7} {'seed':>6}")
    for j, (leaf, short) in enumerate(zip(rubric.leaves, rubric.short_names(), strict=True)):
        s = sum(row[j] for row in final)
        log.append(f"  {short:<24} {leaf.weight:>6g} {targets[j]:>7.2f} {s:>6g} "
                   f"{s / n:>6.2f} {(s + leaf.weight) / (n + 1):>7.2f} "
                   f"{seed[j]['average']:>6.2f}")
    log.append("  (* the average with a 23rd site at full marks, as the seed's sums imply)")
    log.append(f"county leaves ({len(c_values)} opened sites, {n_dead} unreachable; "
               "the seed printed rates over 95):")
    for j, short in enumerate(county.short_names()):
        s = sum(row[j] for row in c_values)
        log.append(f"  {short:<18} rate {100 * s / len(c_values):6.2f}%   "
                   f"seed {seed_c[j]['rate_printed']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=2015, help="random seed (default: 2015)")
    parser.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN,
                        help=f"the seed's tables as JSON (default: {DEFAULT_GOLDEN})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the averages")
    args = parser.parse_args(argv)
    golden = json.loads(args.golden.read_text(encoding="utf-8"))
    log: list[str] = []
    try:
        files = build(golden, args.seed, log)
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8", newline="\n")
    if not args.quiet:
        print("\n".join(log))
    print(f"wrote {', '.join(files)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
