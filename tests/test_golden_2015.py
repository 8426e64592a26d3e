"""Golden tests: the bundled 2015 sample reproduces the seed's published tables.

The expected numbers come from tests/golden/seed_2015.json, which
scripts/extract_seed_tables.py parses out of the seed report (never edited by hand).
Where the seed contradicts itself (domain.md, "Known inconsistencies") the engine
computes the right figure and the test says which printed one it departs from.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailprobe.engine import Evaluation, evaluate
from tests.conftest import ROOT

SAMPLES = ROOT / "samples" / "2015"
GOLDEN: dict[str, Any] = json.loads((ROOT / "tests/golden/seed_2015.json").read_text("utf-8"))
GROUPS = ("信息公开", "在线服务", "公众互动", "网站建设")


@pytest.fixture(scope="module")
def city_ev() -> Evaluation:
    return evaluate("city", [SAMPLES / "city_scores.csv"], agencies_file=SAMPLES / "agencies.csv")


@pytest.fixture(scope="module")
def county_ev() -> Evaluation:
    return evaluate("county", [SAMPLES / "county_scores.csv"],
                    agencies_file=SAMPLES / "agencies.csv")


def test_table_2_1_ranking(city_ev: Evaluation) -> None:
    r = city_ev.ranking
    tops = [g for g in r.rubric.groups if g.depth == 1]
    got = []
    for i in r.order:
        row = {"name": r.sites[i], "rank": int(r.rank[i]), "total": float(r.total[i])}
        row.update({g.name: float(r.groups[i, r.rubric.groups.index(g)]) for g in tops})
        got.append(row)
    assert got == GOLDEN["table_2_1"]["cities"]  # incl. the two 15th places, then 17th


def test_table_2_1_average_row(city_ev: Evaluation) -> None:
    printed = GOLDEN["table_2_1"]["average"]
    averages = city_ev.stats.averages
    for name in (*GROUPS, "total"):
        assert round(averages[name], 2) == printed[name]


def test_table_2_3_stage_counts_and_correct_shares(city_ev: Evaluation) -> None:
    stages = {s.name: s for s in city_ev.stats.stages}
    for row in GOLDEN["table_2_3"]["stages"]:
        stage = stages[row["stage"]]
        assert stage.count == row["count"]
        assert stage.share == row["count"] / 22
    # The seed prints 72.73% and 13.64%; 17/22 and 2/22 are 77.27% and 9.09%.
    assert round(stages["优秀阶段"].share * 100, 2) == 77.27
    assert round(stages["发展阶段"].share * 100, 2) == 9.09
    assert sum(s.share for s in stages.values()) == pytest.approx(1.0)


def test_counts_and_gaps_quoted_in_chapter_2(city_ev: Evaluation) -> None:
    counts = dict(city_ev.stats.thresholds)
    assert counts == {"总得分 > 60": 21, "信息公开 > 36": 11, "公众互动 ≥ 9": 14,
                      "网站建设 ≥ 12": 13}
    gaps = {e.of: e for e in city_ev.stats.extremes}
    assert (gaps["总得分"].highest_sites, gaps["总得分"].lowest_sites) == (("广州市",), ("潮州市",))
    assert gaps["总得分"].gap == 39  # "最高分与最低分分值相差 39 分"
    assert gaps["公众互动"].gap == 11  # "最高得分与最低得分相差 11 分"


def test_first_level_rate_of_online_services(city_ev: Evaluation) -> None:
    stat = next(s for s in city_ev.stats.indicators if s.key == "在线服务")
    assert round(stat.rate * 100, 2) == 95.45  # chapter 2's figure, over the same 22 sites


def test_vulnerabilities_apply_the_deduction_rule(city_ev: Evaluation) -> None:
    r = city_ev.ranking
    j = r.rubric.leaf_index("网站安全")
    security = {r.sites[i]: float(r.scores.leaf[i, j]) for i in range(len(r.sites))}
    for name, found in GOLDEN["vulnerabilities"]["per_site"].items():
        assert security[name] == 8 - found
    assert sum(8 - v for v in security.values()) == GOLDEN["vulnerabilities"]["total"]


def test_table_4_1_opening_rates(county_ev: Evaluation) -> None:
    got = {o.city: o for o in county_ev.stats.opening}
    for row in GOLDEN["table_4_1"]["cities"]:
        o = got[row["city"]]
        assert (o.agencies, o.opened) == (row["counties"], row["opened"])
        assert round(o.rate * 100, 2) == row["rate_pct"]
    total = county_ev.stats.opening_total
    assert total is not None and (total.agencies, total.opened) == (211, 96)
    assert round(total.rate * 100, 2) == 45.50


def test_table_4_2_stage_counts_and_shares(county_ev: Evaluation) -> None:
    stages = {s.name: s for s in county_ev.stats.stages}
    for row in GOLDEN["table_4_2"]["stages"]:
        stage = stages[row["stage"]]
        assert stage.count == row["count"]
        assert round(stage.share * 100, 2) == row["share_pct"]
    assert county_ev.ranking.population == 211 and len(county_ev.ranking.sites) == 96
