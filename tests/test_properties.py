"""Property tests of the engine: leaves stay in range, import then export round-trips."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailprobe.rubric import Leaf, Rubric, load_rubric
from mailprobe.score import score_sheets
from mailprobe.sheets import read_score_sheet, write_score_sheet

CITY = load_rubric("city")
COUNTY = load_rubric("county")
LEAVES = [*CITY.leaves, *COUNTY.leaves]


@settings(max_examples=300)
@given(st.sampled_from(LEAVES), st.data())
def test_a_leaf_never_leaves_zero_to_weight(leaf: Leaf, data: st.DataObject) -> None:
    counts = {o.name: data.draw(st.integers(0, o.max_count or 50), label=o.name)
              for o in leaf.observations}
    assert 0 <= leaf.score(counts) <= leaf.weight


def _points(rubric: Rubric) -> st.SearchStrategy[list[float]]:
    return st.tuples(*[st.integers(0, int(leaf.weight / leaf.step)).map(
        lambda k, s=leaf.step: k * s) for leaf in rubric.leaves]).map(list)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([CITY, COUNTY]), st.data(), st.sampled_from([".csv", ".xlsx"]))
def test_import_then_export_round_trips(rubric: Rubric, data: st.DataObject, suffix: str) -> None:
    n = data.draw(st.integers(1, 6), label="sites")
    rows = [data.draw(_points(rubric), label=f"site {i}") for i in range(n)]
    names = [f"单位{i}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        first = write_score_sheet(Path(tmp) / f"a{suffix}", names, rubric, np.array(rows))
        scores = score_sheets(rubric, [read_score_sheet(first, rubric)])
        second = write_score_sheet(Path(tmp) / f"b{suffix}", scores.agencies, rubric, scores.leaf)
        again = score_sheets(rubric, [read_score_sheet(second, rubric)])
    assert again.agencies == scores.agencies == tuple(sorted(names))
    assert np.array_equal(again.leaf, scores.leaf)
    order = [names.index(a) for a in scores.agencies]
    assert np.array_equal(scores.leaf, np.array(rows)[order])
