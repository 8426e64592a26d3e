"""Score sheets: every cell validated against its rule, rounds merged, probe results applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprobe.errors import InputError, SheetError
from mailprobe.rubric import Rubric
from mailprobe.score import DerivedScore, MergePolicy, Override, merge_rounds, score_sheets
from mailprobe.sheets import read_score_sheet
from tests.conftest import WriteCsv


def _full_row(rubric: Rubric, name: str, rnd: int, value: float = 1) -> list[object]:
    return [name, rnd, *[min(value, leaf.weight) for leaf in rubric.leaves]]


def _header(rubric: Rubric) -> list[str]:
    return ["单位", "轮次", *rubric.short_names()]


def test_latest_round_wins_per_leaf(city: Rubric, write_csv: WriteCsv) -> None:
    names = city.short_names()
    rows = [_full_row(city, "甲市", 1), _full_row(city, "乙市", 1)]
    recheck = ["甲市", 2] + [""] * len(names)
    recheck[2 + names.index("领导介绍")] = 2
    rows.append(recheck)
    sheet = read_score_sheet(write_csv("s.csv", _header(city), rows), city)
    scores = score_sheets(city, [sheet])
    i = scores.agencies.index("甲市")
    j = names.index("领导介绍")
    assert scores.leaf[i, j] == 2 and scores.rounds[i, j] == 2
    assert scores.leaf[i, j + 1] == 1 and scores.rounds[i, j + 1] == 1
    first = score_sheets(city, [sheet], policy=MergePolicy.FIRST)
    assert first.leaf[i, j] == 1


def test_one_file_per_round(city: Rubric, write_csv: WriteCsv) -> None:
    r1 = write_csv("r1.csv", _header(city), [_full_row(city, "甲市", 1)])
    r2 = write_csv("r2.csv", _header(city), [_full_row(city, "甲市", 2, 0)])
    scores = score_sheets(city, [read_score_sheet(r1, city), read_score_sheet(r2, city)])
    assert scores.leaf.sum() == 0


def _error(rubric: Rubric, path: Path) -> str:
    with pytest.raises(SheetError) as err:
        score_sheets(rubric, [read_score_sheet(path, rubric)])
    return str(err.value)


def test_out_of_range_names_sheet_row_and_column(city: Rubric, write_csv: WriteCsv) -> None:
    row = _full_row(city, "甲市", 1)
    row[2 + city.short_names().index("网站安全")] = 9
    text = _error(city, write_csv("s.csv", _header(city), [_full_row(city, "乙市", 1), row]))
    assert "s.csv: row 3, column 网站安全: out of range" in text and "expected 0..8" in text


def test_wrong_step(county: Rubric, write_csv: WriteCsv) -> None:
    row = _full_row(county, "甲县", 1)
    row[3] = 0.5
    text = _error(county, write_csv("c.csv", _header(county), [row]))
    assert "row 2, column 网站内容有无更新: not a step of 1" in text and "got 0.5" in text


def test_text_where_a_number_belongs(city: Rubric, write_csv: WriteCsv) -> None:
    row = _full_row(city, "甲市", 1)
    row[4] = "好"
    with pytest.raises(SheetError, match="row 2, column 政策法规: text where a number belongs"):
        read_score_sheet(write_csv("s.csv", _header(city), [row]), city)


def test_duplicate_agency_rows(city: Rubric, write_csv: WriteCsv) -> None:
    rows = [_full_row(city, "甲市", 1), _full_row(city, "乙市", 1), _full_row(city, "甲市", 1)]
    text = _error(city, write_csv("s.csv", _header(city), rows))
    assert "甲市 has two rows for round 1 (rows 2 and 4)" in text


def test_unknown_and_ambiguous_columns_list_candidates(city: Rubric, write_csv: WriteCsv) -> None:
    header = _header(city)
    header[2] = "领导风采"
    with pytest.raises(SheetError) as err:
        read_score_sheet(write_csv("a.csv", header, []), city)
    assert "column 领导风采" in str(err.value) and "领导介绍" in str(err.value)
    header[2] = "渠道功能"
    with pytest.raises(SheetError) as err:
        read_score_sheet(write_csv("b.csv", header, []), city)
    assert "咨询投诉/渠道功能, 调查征集/渠道功能" in str(err.value)


def test_observations_apply_the_rule(city: Rubric, write_csv: WriteCsv) -> None:
    header = [*_header(city), "网站安全:高危漏洞数"]
    j = city.short_names().index("网站安全")
    row = [*_full_row(city, "甲市", 1), 3]
    row[2 + j] = ""
    scores = score_sheets(city, [read_score_sheet(write_csv("s.csv", header, [row]), city)])
    assert scores.leaf[0, j] == 5
    row[2 + j] = 6
    text = _error(city, write_csv("t.csv", header, [row]))
    assert "column 网站安全: points disagree with the observations" in text


def test_observation_must_be_a_whole_count(city: Rubric, write_csv: WriteCsv) -> None:
    header = [*_header(city), "网站安全:高危漏洞数"]
    row = [*_full_row(city, "甲市", 1), 1.5]
    text = _error(city, write_csv("s.csv", header, [row]))
    assert "column 网站安全:高危漏洞数: not a valid count" in text


def test_unknown_observation_lists_the_leafs_observations(city: Rubric,
                                                          write_csv: WriteCsv) -> None:
    header = [*_header(city), "网站安全:中危漏洞数"]
    with pytest.raises(SheetError, match="网站安全:高危漏洞数"):
        read_score_sheet(write_csv("s.csv", header, []), city)


def test_leaf_never_scored_is_an_error(city: Rubric, write_csv: WriteCsv) -> None:
    row = _full_row(city, "甲市", 1)
    row[5] = ""
    text = _error(city, write_csv("s.csv", _header(city), [row]))
    assert "甲市 has no score for 信息公开/主动公开/通知公告 in any round" in text


def test_xlsx_reads_like_csv(city: Rubric, tmp_path: Path, write_csv: WriteCsv) -> None:
    rows = [_full_row(city, "甲市", 1, 2), _full_row(city, "乙市", 1, 0.5)]
    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    ws.title = "评分表"
    ws.append(_header(city))
    for row in rows:
        ws.append(row)
    book.save(tmp_path / "s.xlsx")
    a = score_sheets(city, [read_score_sheet(tmp_path / "s.xlsx", city, sheet="评分表")])
    b = score_sheets(city, [read_score_sheet(write_csv("s.csv", _header(city), rows), city)])
    assert a.agencies == b.agencies and np.array_equal(a.leaf, b.leaf)


def test_probe_results_and_overrides_carry_provenance(city: Rubric, write_csv: WriteCsv) -> None:
    header = [*_header(city), "答复实效:公开往期"]
    row = [*_full_row(city, "甲市", 1), 1]
    row[2 + city.short_names().index("答复实效")] = ""
    sheet = read_score_sheet(write_csv("s.csv", header, [row]), city)
    derived = [DerivedScore("甲市", "答复实效", 1.5, ("P-1", "P-2")),
               DerivedScore("甲市", "咨询投诉/渠道功能", 2, ("P-1",))]
    overrides = [Override("甲市", "领导介绍", 0, "栏目链接失效", by="评估员甲")]
    scores = score_sheets(city, [sheet], derived=derived, overrides=overrides)
    j = city.short_names().index("答复实效")
    assert scores.leaf[0, j] == 2.5  # 1 from the sheet + 1.5 from the probes
    assert "P-1, P-2" in scores.provenance[(0, j)]
    k = city.short_names().index("领导介绍")
    assert scores.leaf[0, k] == 0 and "栏目链接失效" in scores.provenance[(0, k)]
    with pytest.raises(InputError, match="not probe-derived"):
        score_sheets(city, [sheet], derived=[DerivedScore("甲市", "领导介绍", 1)])


def _naive_merge(codes: list[int], rounds: list[int], values: list[float],
                 policy: MergePolicy) -> dict[int, float]:
    out: dict[int, float] = {}
    for code in sorted(set(codes)):
        mine = sorted((r, v) for c, r, v in zip(codes, rounds, values, strict=True)
                      if c == code and not np.isnan(v))
        if not mine:
            out[code] = np.nan
        elif policy is MergePolicy.LATEST:
            out[code] = mine[-1][1]
        elif policy is MergePolicy.FIRST:
            out[code] = mine[0][1]
        else:
            out[code] = max(v for _, v in mine)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4),
                          st.one_of(st.none(), st.integers(0, 8))),
                min_size=1, max_size=40, unique_by=lambda t: (t[0], t[1])),
       st.sampled_from(list(MergePolicy)))
def test_merge_matches_a_naive_merge(rows: list[tuple[int, int, int | None]],
                                     policy: MergePolicy) -> None:
    codes = [c for c, _, _ in rows]
    rounds = [r for _, r, _ in rows]
    values = [np.nan if v is None else float(v) for _, _, v in rows]
    out_codes, merged, _ = merge_rounds(np.array(codes), np.array(rounds),
                                        np.array(values)[:, None], policy)
    expected = _naive_merge(codes, rounds, values, policy)
    got = {int(c): float(v) for c, v in zip(out_codes, merged[:, 0], strict=True)}
    assert got.keys() == expected.keys()
    for code, value in expected.items():
        assert (np.isnan(value) and np.isnan(got[code])) or got[code] == value
