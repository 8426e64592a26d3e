"""Ranking and statistics: competition ranks, stages, rates, and the agency population."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprobe.engine import evaluate
from mailprobe.errors import InputError
from mailprobe.rank import competition_rank, stage_index
from mailprobe.rubric import Rubric
from tests.conftest import WriteCsv

half_points = st.integers(0, 200).map(lambda k: k / 2)


def test_seed_tie_gives_two_15th_places_then_17th() -> None:
    totals = np.array([97, 92.5, 89, 88, 87, 86, 84, 83.5, 83, 82, 81.5, 80.5, 79, 78.5, 78, 78,
                       77.5, 77, 76.5, 73.5, 71, 58])
    assert list(competition_rank(totals)) == [*range(1, 16), 15, *range(17, 23)]


@settings(max_examples=300, deadline=None)
@given(st.lists(half_points, min_size=1, max_size=60))
def test_ranks_are_consistent_with_totals(values: list[float]) -> None:
    totals = np.array(values)
    ranks = competition_rank(totals)
    for i, t in enumerate(values):
        assert ranks[i] == 1 + sum(1 for u in values if u > t)  # ties share, next is skipped
    assert sorted(ranks)[0] == 1 and max(ranks) <= len(values)


@given(st.lists(st.floats(0, 100), min_size=2, max_size=50))
def test_float_noise_never_splits_a_tie(values: list[float]) -> None:
    noisy = np.array([*values, values[0] + 1e-12])
    ranks = competition_rank(noisy)
    assert ranks[0] == ranks[-1]


@given(st.floats(0, 100), st.floats(0, 100))
def test_stage_is_monotone_in_the_total(a: float, b: float) -> None:
    lowers = [0, 30, 60, 75, 90]
    lo, hi = sorted((a, b))
    assert stage_index(np.array([lo]), lowers)[0] <= stage_index(np.array([hi]), lowers)[0]


def test_stage_bounds_are_inclusive_below() -> None:
    got = stage_index(np.array([0, 29.5, 30, 59.99, 60, 75, 89.5, 90, 100]), [0, 30, 60, 75, 90])
    assert list(got) == [0, 0, 1, 1, 2, 3, 3, 4, 4]


def _county_files(county: Rubric, write_csv: WriteCsv) -> tuple[str, str]:
    names = county.short_names()
    rows = [["甲一", 1, *[1] * 14], ["甲二", 1, *[1] * 7, *[0] * 7], ["乙一", 1, *[0] * 14]]
    scores = write_csv("c.csv", ["单位", "轮次", *names], rows)
    agencies = write_csv("a.csv", ["单位", "级别", "所属地市", "网站"], [
        ["甲市", "市级", "", "https://a.test/"],
        ["甲一", "县级", "甲市", "https://a1.test/"], ["甲二", "县级", "甲市", "https://a2.test/"],
        ["甲三", "县级", "甲市", "无"], ["乙一", "县级", "乙市", "https://b1.test/"],
        ["乙二", "县级", "乙市", ""]])
    return str(scores), str(agencies)


def test_county_population_counts_sites_not_opened(county: Rubric, write_csv: WriteCsv) -> None:
    scores, agencies = _county_files(county, write_csv)
    ev = evaluate("county", [scores], agencies_file=agencies)
    assert ev.ranking.not_opened == ("甲三", "乙二") and ev.ranking.population == 5
    stages = {s.name: (s.count, s.share) for s in ev.stats.stages}
    assert stages["未开通"] == (2, 0.4) and stages["优秀阶段"] == (1, 0.2)
    assert sum(s.count for s in ev.stats.stages) == 5
    opening = {o.city: (o.agencies, o.opened) for o in ev.stats.opening}
    assert opening == {"甲市": (3, 2), "乙市": (2, 1)}
    assert ev.stats.opening_total is not None and ev.stats.opening_total.rate == 3 / 5
    assert list(ev.ranking.total[list(ev.ranking.order)]) == [100, 50, 0]


def test_score_rate_methods_are_named_and_differ(county: Rubric, write_csv: WriteCsv) -> None:
    scores, agencies = _county_files(county, write_csv)
    ev = evaluate("county", [scores], agencies_file=agencies)
    info = next(s for s in ev.stats.indicators if s.key == "信息公开")
    assert info.method is not None and info.method.value == "weighted"
    assert info.rate == pytest.approx(info.mean / 5)


def test_unknown_or_unopened_agency_is_an_error(county: Rubric, write_csv: WriteCsv) -> None:
    names = county.short_names()
    agencies = write_csv("a.csv", ["单位", "级别", "所属地市", "网站"],
                         [["甲一", "县级", "甲市", "https://a1.test/"],
                          ["甲二", "县级", "甲市", ""]])
    stray = write_csv("s.csv", ["单位", "轮次", *names], [["甲壹", 1, *[1] * 14]])
    with pytest.raises(InputError, match=r"甲壹 of the score sheet is not in the agency.*甲一"):
        evaluate("county", [stray], agencies_file=agencies)
    closed = write_csv("t.csv", ["单位", "轮次", *names],
                       [["甲一", 1, *[1] * 14], ["甲二", 1, *[1] * 14]])
    with pytest.raises(InputError, match="甲二 has no website"):
        evaluate("county", [closed], agencies_file=agencies)


def test_bad_agency_level_names_the_row(write_csv: WriteCsv) -> None:
    from mailprobe.sheets import read_agencies

    path = write_csv("a.csv", ["单位", "级别", "所属地市", "网站"], [["甲一", "省级", "甲市", ""]])
    with pytest.raises(InputError, match=r"row 2, column 级别: unknown level.*got '省级'"):
        read_agencies(path)
