"""Rubrics as data: the bundled appendices load, and broken rubrics fail with clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from mailprobe.errors import RubricError
from mailprobe.rubric import Rubric, RuleKind, load_rubric, parse_rubric
from tests.conftest import ROOT


def _city_data() -> dict[str, Any]:
    return tomllib.loads((ROOT / "config/rubric/city.toml").read_text(encoding="utf-8"))


def test_city_rubric_is_appendix_1(city: Rubric) -> None:
    assert len(city.leaves) == 36
    assert [(g.name, g.weight) for g in city.top_groups] == [
        ("信息公开", 45), ("在线服务", 25), ("公众互动", 14), ("网站建设", 16)]
    assert sum(leaf.weight for leaf in city.leaves) == 100
    site = next(g for g in city.top_groups if g.name == "网站建设")
    assert site.stated_weight == 15 and "16" in site.note
    assert all(leaf.source for leaf in city.leaves)
    probe = [leaf.key for leaf in city.leaves if leaf.rule is RuleKind.PROBE]
    assert probe == ["公众互动/咨询投诉/渠道功能", "公众互动/咨询投诉/答复实效"]
    assert [s.lower for s in city.stages] == [0, 30, 60, 75, 90]


def test_county_rubric_is_appendix_2(county: Rubric) -> None:
    assert len(county.leaves) == 14 and all(leaf.weight == 1 for leaf in county.leaves)
    assert county.total == 14 and county.scale_to == 100
    assert [(g.name, g.weight) for g in county.top_groups] == [
        ("网站建设", 5), ("信息公开", 5), ("在线服务", 2), ("互动交流", 2)]
    assert {leaf.name for leaf in county.leaves if leaf.probe} == {"网上咨询", "网上监督"}


def test_group_that_does_not_add_up_names_group_and_both_sums() -> None:
    data = _city_data()
    site = next(g for g in data["groups"] if g["path"] == ["网站建设"])
    site["weight"] = 15
    with pytest.raises(RubricError) as err:
        parse_rubric(data, source="city.toml")
    text = str(err.value)
    assert "city.toml" in text and "网站建设" in text
    assert "weight is 15" in text and "add up to 16" in text


def test_total_that_does_not_add_up() -> None:
    data = _city_data()
    data["total"] = 99
    with pytest.raises(RubricError, match="add up to 100, the rubric's total is 99"):
        parse_rubric(data, source="city.toml")


def test_weight_must_respect_step() -> None:
    data = _city_data()
    data["leaves"][0]["weight"] = 2.25
    with pytest.raises(RubricError, match=r"leaves\[0\]\.weight.*multiple of 0.5"):
        parse_rubric(data, source="city.toml")


def test_unknown_rule_kind_lists_the_kinds() -> None:
    data = _city_data()
    data["leaves"][3]["rule"] = "vibes"
    with pytest.raises(RubricError, match="judged, criteria, deductions, per_item, probe"):
        parse_rubric(data, source="city.toml")


def test_duplicate_leaf_path() -> None:
    data = _city_data()
    data["leaves"][1]["path"] = data["leaves"][0]["path"]
    with pytest.raises(RubricError, match="two leaves have the same path"):
        parse_rubric(data, source="city.toml")


def test_criteria_that_cannot_reach_the_weight() -> None:
    data = _city_data()
    data["leaves"][1]["criteria"] = [{"name": "only", "points": 1}]
    with pytest.raises(RubricError, match="can never reach its weight"):
        parse_rubric(data, source="city.toml")


def test_changed_weight_without_note_is_refused() -> None:
    data = _city_data()
    site = next(g for g in data["groups"] if g["path"] == ["网站建设"])
    del site["note"]
    with pytest.raises(RubricError, match="needs a note"):
        parse_rubric(data, source="city.toml")


def test_leaf_names_resolve_by_trailing_parts(city: Rubric) -> None:
    assert city.leaves[city.leaf_index("领导介绍")].key == "信息公开/主动公开/领导介绍"
    a = city.leaf_index("咨询投诉/渠道功能")
    b = city.leaf_index("调查征集/渠道功能")
    assert a != b
    with pytest.raises(RubricError) as err:
        city.leaf_index("渠道功能")
    assert "咨询投诉/渠道功能" in str(err.value) and "调查征集/渠道功能" in str(err.value)
    with pytest.raises(RubricError, match=r"no leaf .* is called '领导风采'"):
        city.leaf_index("领导风采")


def test_rules_apply_to_observations(city: Rubric) -> None:
    def leaf(name: str) -> Any:
        return city.leaves[city.leaf_index(name)]

    assert leaf("专题专栏").score({"开设专题": 1, "及时公开进展": 1}) == 2  # capped
    assert leaf("网站安全").score({"高危漏洞数": 3}) == 5
    assert leaf("网站安全").score({"高危漏洞数": 12}) == 0  # never below 0
    assert leaf("双微应用").score({"账号种类数": 3, "良好互动": 1}) == 3.5
    assert leaf("咨询投诉/渠道功能").score({"可用渠道类数": 2}) == 4


def test_a_copied_rubric_loads_from_its_own_path(tmp_path: Path) -> None:
    text = (ROOT / "config/rubric/county.toml").read_text(encoding="utf-8")
    copy = tmp_path / "county-2016.toml"
    copy.write_text(text.replace('name = "2015', 'name = "2016'), encoding="utf-8")
    rubric = load_rubric(copy)
    assert rubric.name.startswith("2016") and len(rubric.leaves) == 14


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad\.toml: not valid TOML"):
        load_rubric(bad)
