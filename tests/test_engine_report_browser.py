"""The report the engine writes from real sheets, looked at in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailprobe.engine import evaluate
from mailprobe.report_tables import build_report
from mailprobe.rubric import Rubric
from mailprobe.tables import Report
from tests.conftest import ROOT, WriteCsv, report_page

pytestmark = pytest.mark.browser
SAMPLES = ROOT / "samples" / "2015"
HOSTILE = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>县"


@pytest.fixture
def county_report(county: Rubric, write_csv: WriteCsv) -> Report:
    """The 2015 county sample plus one county whose name is markup, as a file could hold."""
    agencies = (SAMPLES / "agencies.csv").read_text(encoding="utf-8").rstrip("\n")
    extra_agency = write_csv("x.csv", ["单位", "级别", "所属地市", "网站"],
                             [[HOSTILE, "县级", "广州市", "https://x.gd.test/"]])
    merged = extra_agency.parent / "agencies.csv"
    merged.write_text(agencies + "\n" + extra_agency.read_text(encoding="utf-8").split("\n", 1)[1],
                      encoding="utf-8")
    sheet = write_csv("extra.csv", ["单位", "轮次", *county.short_names()],
                      [[HOSTILE, 1, *[1] * 14]])
    ev = evaluate("county", [SAMPLES / "county_scores.csv", sheet], agencies_file=merged)
    return build_report(ev.ranking, ev.stats)


@pytest.fixture
def page(browser: Any, county_report: Report, tmp_path: Path) -> Iterator[Any]:
    with report_page(browser, county_report, tmp_path, width=1200) as page:
        yield page


def test_every_table_and_chart_of_the_county_report_renders(page: Any,
                                                            county_report: Report) -> None:
    for table in county_report.tables():
        block = page.locator(f"#table-{table.id}")
        assert block.locator("tbody tr").count() == len(table.rows), table.id
    ranking = page.locator("#table-ranking tbody tr")
    assert ranking.count() == 97  # the 96 opened sample sites and the added one
    assert "未开通" in page.locator("#table-stages").inner_text()
    assert "45.75%" in page.locator("#table-opening tfoot").inner_text()  # 97 of 212
    for chart in (c for s in county_report.sections for c in s.charts):
        svg = page.locator(f"#chart-{chart.id} svg")
        assert svg.locator("rect.bar").count() == len(chart.values)
        box = svg.bounding_box()
        assert box and box["width"] > 150 and box["height"] > 80
    assert [u for u in page.requests if not u.startswith("file:")] == []


def test_markup_from_input_files_shows_as_text(page: Any) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0 and page.locator("script").count() == 0
    assert HOSTILE in page.locator("#table-ranking").inner_text()
