"""The 2015 sample (samples/2015/) against the seed's published tables (tests/golden/).

Checked straight from the CSV files with the csv module, independently of the scoring
engine: counts of agencies, the city group sums of 图表 2-1 and the county stage counts
of 图表 4-2 after merging the rounds ("latest round in which a leaf was scored"), every
cell against its leaf's rule, and that both scripts reproduce the committed files.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailprobe.rubric import Leaf, Rubric, RuleKind, load_rubric

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "2015"
GOLDEN = ROOT / "tests" / "golden" / "seed_2015.json"
SEED = ROOT.parent / "shared" / "seed" / "000_3853b61c60ff5454.txt"
CSV_FILES = ("agencies.csv", "city_scores.csv", "county_scores.csv")

Row = dict[str, str]


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def city() -> Rubric:
    return load_rubric(ROOT / "config" / "rubric" / "city.toml")


@pytest.fixture(scope="module")
def county() -> Rubric:
    return load_rubric(ROOT / "config" / "rubric" / "county.toml")


def read(name: str) -> tuple[list[str], list[Row]]:
    with (SAMPLES / name).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def allowed(leaf: Leaf) -> set[float]:
    """The values a leaf's rule can give (written out here, not taken from the scripts)."""
    if leaf.rule is RuleKind.JUDGED:
        return {k * leaf.step for k in range(int(leaf.cap / leaf.step) + 1)}
    values = {leaf.base}
    for obs in leaf.observations:
        if obs.probe_part:  # the queue method: any step of the probe's points
            assert leaf.probe is not None
            n = int(leaf.probe.points / leaf.step)
            values = {v + k * leaf.step for v in values for k in range(n + 1)}
            continue
        top = obs.max_count if obs.max_count is not None else math.ceil(leaf.cap / abs(obs.points))
        values = {v + c * obs.points for v in values for c in range(top + 1)}
    return {min(max(v, 0.0), leaf.cap) for v in values}


def leaf_cells(rubric: Rubric, row: Row) -> Iterator[tuple[int, float | None]]:
    """Each leaf's points in one row: from its points column or its observation column."""
    for j, short in enumerate(rubric.short_names()):
        leaf = rubric.leaves[j]
        given = row.get(short, "")
        observed = {o.name: row.get(f"{short}:{o.name}", "") for o in leaf.observations}
        observed = {k: v for k, v in observed.items() if v != ""}
        # A probe-derived leaf's evaluator part stands beside its points (the campaign
        # replaces the probe part); any other leaf is given one way only.
        probe_part = leaf.probe is not None and set(observed) <= {
            o.name for o in leaf.observations if not o.probe_part}
        assert not (given and observed and not probe_part), \
            f"{row['单位']} {short}: both points and a count"
        if given:
            yield j, float(given)
        elif observed:
            total = leaf.base
            for name, text in observed.items():
                obs = leaf.observation(name)
                assert obs is not None
                count = float(text)
                assert count == int(count) and count >= 0, f"{row['单位']} {short}:{name}"
                assert obs.max_count is None or count <= obs.max_count
                total += obs.points * count
            yield j, min(max(total, 0.0), leaf.cap)
        else:
            yield j, None


def merge(rubric: Rubric, rows: list[Row]) -> dict[str, list[float]]:
    """Latest round in which a leaf was scored; every leaf must be scored somewhere."""
    out: dict[str, list[float | None]] = {}
    for row in sorted(rows, key=lambda r: int(r["轮次"])):
        merged = out.setdefault(row["单位"], [None] * len(rubric.leaves))
        for j, value in leaf_cells(rubric, row):
            if value is not None:
                merged[j] = value
    result: dict[str, list[float]] = {}
    for name, values in out.items():
        assert all(v is not None for v in values), f"{name}: a leaf never scored"
        result[name] = [float(v) for v in values if v is not None]
    return result


# ---------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", CSV_FILES)
def test_csv_encoding_and_numbers(name: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert b"\r" not in raw, "\\n line endings"
    raw.decode("utf-8")
    _, rows = read(name)
    for row in rows:
        for key, value in row.items():
            if key in ("单位", "级别", "所属地市", "网站") or value == "":
                continue
            assert value == f"{float(value):g}", f"{row['单位']} {key}: {value!r} is not minimal"


def test_agencies(golden: dict[str, Any]) -> None:
    header, rows = read("agencies.csv")
    assert header == ["单位", "级别", "所属地市", "网站"]
    assert len(rows) == 233
    assert len({r["单位"] for r in rows}) == 233
    cities = [r for r in rows if r["级别"] == "市级"]
    counties = [r for r in rows if r["级别"] == "县级"]
    assert [r["单位"] for r in cities] == golden["table_1_1"]["cities"]
    assert len(counties) == golden["table_4_1"]["total"]["counties"] == 211
    for r in cities:
        assert r["所属地市"] == ("佛山市" if r["单位"] == "顺德区" else r["单位"])
        assert r["网站"]
    assert sum(1 for r in counties if r["网站"]) == golden["table_4_1"]["total"]["opened"] == 96
    per_city = Counter(r["所属地市"] for r in counties)
    opened = Counter(r["所属地市"] for r in counties if r["网站"])
    for row in golden["table_4_1"]["cities"]:
        assert per_city[row["city"]] == row["counties"], row["city"]
        assert opened[row["city"]] == row["opened"], row["city"]
    assert set(per_city) == {row["city"] for row in golden["table_4_1"]["cities"]}
    for r in rows:
        site = r["网站"]
        assert site == "" or (site.startswith("https://") and site.endswith(".test/")), site


# ---------------------------------------------------------------------------- cities


def test_city_sheet_shape(golden: dict[str, Any], city: Rubric) -> None:
    header, rows = read("city_scores.csv")
    shorts = city.short_names()
    assert header[:2] == ["单位", "轮次"]
    assert [h for h in header[2:] if ":" not in h] == shorts
    assert sorted(h for h in header if ":" in h) == ["办事指南:缺少要素", "答复实效:公开往期",
                                                    "网站安全:高危漏洞数"]
    names = golden["table_1_1"]["cities"]
    first = [r for r in rows if r["轮次"] == "1"]
    second = [r for r in rows if r["轮次"] == "2"]
    assert len(first) + len(second) == len(rows)
    assert [r["单位"] for r in first] == names
    for row in first:
        assert all(v is not None for _, v in leaf_cells(city, row)), row["单位"]
    assert 0.5 * len(names) <= len(second) <= 0.85 * len(names)
    for row in second:
        filled = [v for _, v in leaf_cells(city, row) if v is not None]
        assert 0 < len(filled) < len(shorts), row["单位"]
    assert len({r["单位"] for r in second}) == len(second)
    observed = sum(1 for r in first if r["办事指南:缺少要素"] != "")
    assert observed > len(first) / 2, "办事指南 mostly as a count of missing elements"
    assert sum(1 for r in first if r["网站安全:高危漏洞数"] != "") > len(first) / 2
    for r in rows:  # 公开往期 beside 答复实效: what is left for the probes fits their 2 points
        if r["答复实效"] != "":
            assert 0 <= float(r["答复实效"]) - float(r["答复实效:公开往期"]) <= 2, r["单位"]


def test_city_cells_respect_rules(city: Rubric) -> None:
    _, rows = read("city_scores.csv")
    domains = [allowed(leaf) for leaf in city.leaves]
    for row in rows:
        for j, value in leaf_cells(city, row):
            if value is None:
                continue
            leaf = city.leaves[j]
            assert 0 <= value <= leaf.weight, (row["单位"], leaf.key, value)
            assert value / leaf.step == int(value / leaf.step), (row["单位"], leaf.key, value)
            assert value in domains[j], (row["单位"], row["轮次"], leaf.key, value)


def test_city_groups_equal_table_2_1(golden: dict[str, Any], city: Rubric) -> None:
    _, rows = read("city_scores.csv")
    merged = merge(city, rows)
    table = {c["name"]: c for c in golden["table_2_1"]["cities"]}
    assert set(merged) == set(table)
    totals = {}
    for name, values in merged.items():
        for group in city.top_groups:
            got = sum(values[j] for j in group.leaf_indices)
            assert got == pytest.approx(table[name][group.name], abs=1e-9), (name, group.name)
        totals[name] = sum(values)
        assert totals[name] == pytest.approx(table[name]["total"], abs=1e-9)
    for name, total in totals.items():  # standard competition ranking
        rank = 1 + sum(1 for other in totals.values() if other > total + 1e-9)
        assert rank == table[name]["rank"], name
    average = golden["table_2_1"]["average"]
    for group in city.top_groups:
        mean = sum(sum(v[j] for j in group.leaf_indices) for v in merged.values()) / len(merged)
        assert round(mean, 2) == pytest.approx(average[group.name])


def test_city_vulnerabilities(golden: dict[str, Any], city: Rubric) -> None:
    _, rows = read("city_scores.csv")
    j = next(j for j, leaf in enumerate(city.leaves) if leaf.name == "网站安全")
    merged = merge(city, rows)
    per_site = golden["vulnerabilities"]["per_site"]
    for name, values in merged.items():
        assert values[j] == city.leaves[j].weight - per_site.get(name, 0), name


# ---------------------------------------------------------------------------- counties


def test_county_sheet(golden: dict[str, Any], county: Rubric) -> None:
    header, rows = read("county_scores.csv")
    assert header == ["单位", "轮次", *county.short_names()]
    _, agencies = read("agencies.csv")
    opened = [r["单位"] for r in agencies if r["级别"] == "县级" and r["网站"]]
    first = [r for r in rows if r["轮次"] == "1"]
    second = [r for r in rows if r["轮次"] == "2"]
    assert len(first) + len(second) == len(rows)
    assert [r["单位"] for r in first] == opened
    assert {r["单位"] for r in second} <= set(opened)
    assert len({r["单位"] for r in second}) == len(second) < len(opened)
    for row in first:
        assert all(row[s] in ("0", "1") for s in county.short_names()), row["单位"]
    for row in second:
        cells = [row[s] for s in county.short_names()]
        assert all(c in ("", "0", "1") for c in cells)
        assert 0 < sum(1 for c in cells if c) < len(cells)


def test_county_stages_equal_table_4_2(golden: dict[str, Any], county: Rubric) -> None:
    _, rows = read("county_scores.csv")
    merged = merge(county, rows)
    stages = county.stages
    counts: Counter[str] = Counter()
    for values in merged.values():
        total = sum(values) * county.factor
        counts[[s.name for s in stages if s.lower <= total + 1e-9][-1]] += 1
    n_counties = golden["table_4_1"]["total"]["counties"]
    counts[county.not_opened_label] = n_counties - len(merged)
    expected = {s["stage"]: s["count"] for s in golden["table_4_2"]["stages"]}
    assert dict(counts) == expected


# ---------------------------------------------------------------------------- golden


def test_golden_tables(golden: dict[str, Any]) -> None:
    assert golden["generated_by"] == "scripts/extract_seed_tables.py"
    assert len(golden["table_2_1"]["cities"]) == 22
    ranks = [c["rank"] for c in golden["table_2_1"]["cities"]]
    assert ranks.count(15) == 2 and 16 not in ranks
    assert len(golden["table_4_1"]["cities"]) == 21
    assert golden["table_4_1"]["total"]["rate_printed"] == "45. 50%"
    assert golden["table_4_1"]["total"]["rate_pct"] == 45.5
    assert [len(golden[f"table_2_{k}"]["leaves"]) for k in (5, 6, 7, 8)] == [21, 7, 4, 4]
    assert [len(golden[f"table_4_{k}"]["leaves"]) for k in (5, 6, 7, 8)] == [5, 5, 2, 2]
    assert golden["table_2_1"]["average"]["total"] == 80.95


# ---------------------------------------------------------------------------- scripts


def test_make_sample_reproduces_the_files(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_sample_2015.py"
    subprocess.run([sys.executable, str(script), "--seed", "2015", "--out", str(tmp_path),
                    "--quiet"], check=True, cwd=tmp_path, capture_output=True)
    for name in CSV_FILES:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name


@pytest.mark.skipif(not SEED.exists(), reason=f"seed report not found at {SEED}")
def test_extract_reproduces_the_golden_file(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "extract_seed_tables.py"
    out = tmp_path / "seed_2015.json"
    subprocess.run([sys.executable, str(script), str(SEED), "-o", str(out)], check=True,
                   cwd=tmp_path, capture_output=True)
    assert out.read_bytes() == GOLDEN.read_bytes()


@pytest.mark.skipif(not SEED.exists(), reason=f"seed report not found at {SEED}")
def test_extract_fails_loudly_on_a_missing_row(tmp_path: Path) -> None:
    lines = SEED.read_text(encoding="utf-8").splitlines(keepends=True)
    broken = tmp_path / "seed.txt"
    broken.write_text("".join(ln for ln in lines if not ln.startswith("9\t揭阳市\t")),
                      encoding="utf-8")
    script = ROOT / "scripts" / "extract_seed_tables.py"
    out = tmp_path / "never.json"
    done = subprocess.run([sys.executable, str(script), str(broken), "-o", str(out)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert "图表 2-1: expected 22 rows, found 21" in done.stderr
    assert not out.exists()
