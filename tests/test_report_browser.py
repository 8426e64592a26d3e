"""The HTML report as a reader sees it: Chromium draws its tables, charts and Chinese glyphs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailprobe.tables import Report
from tests.conftest import report_page
from tests.test_report_writer import sample_report

pytestmark = pytest.mark.browser

CJK_FONT = "Noto Sans CJK SC"


@pytest.fixture(scope="module")
def report() -> Report:
    return sample_report()


@pytest.fixture
def page(browser: Any, report: Report, tmp_path: Path) -> Iterator[Any]:
    with report_page(browser, report, tmp_path) as page:
        yield page


def test_tables_render_every_row(page: Any, report: Report) -> None:
    for table in report.tables():
        block = page.locator(f"#table-{table.id}")
        assert block.locator("caption").inner_text() == table.title
        assert block.locator("thead th").count() == len(table.columns)
        assert block.locator("tbody tr").count() == len(table.rows)
        assert block.locator("tfoot tr").count() == len(table.footer)
        box = block.locator("table").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 40
    assert page.locator("#table-city_totals tfoot td").nth(4).inner_text() == "85.81"


def test_charts_render_one_visible_bar_per_value(page: Any, report: Report) -> None:
    charts = [chart for section in report.sections for chart in section.charts]
    for chart in charts:
        svg = page.locator(f"#chart-{chart.id} svg")
        box = svg.bounding_box()
        assert box and box["width"] > 150 and box["height"] > 80, chart.id
        bars = svg.locator("rect.bar")
        assert bars.count() == len(chart.values)
        for index, value in enumerate(chart.values):
            bar = bars.nth(index).bounding_box()
            assert bar is not None
            if value > 0:
                assert bar["width"] > 0 and bar["height"] > 0, (chart.id, index)
        assert svg.locator("text", has_text=chart.labels[0]).count() >= 1


def test_chinese_text_is_in_the_page_and_nothing_was_fetched(page: Any, report: Report) -> None:
    assert page.title() == report.title
    assert page.locator("h1").inner_text() == report.title
    assert "一、市级网站评估结果" in page.locator("nav.toc").inner_text()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert [url for url in page.requests if not url.startswith("file:")] == []


def test_injected_script_did_not_run(page: Any) -> None:
    assert page.evaluate("typeof window.__mailprobe_pwned") == "undefined"
    assert page.locator("script").count() == 0
    assert "<script>window.__mailprobe_pwned" in page.locator("#table-city_totals").inner_text()


def _platform_fonts(page: Any, selector: str) -> set[str]:
    """The fonts Chromium actually drew the element's text with (not the CSS wish list)."""
    session = page.context.new_cdp_session(page)
    session.send("DOM.enable")
    session.send("CSS.enable")
    root = session.send("DOM.getDocument")["root"]["nodeId"]
    node = session.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = session.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    session.detach()
    return {font["familyName"] for font in fonts}


def test_chinese_is_drawn_with_a_cjk_font(page: Any) -> None:
    for selector in ("h1", "#table-city_totals caption", "#chart-city_total_bar .labels text"):
        assert _platform_fonts(page, selector) == {CJK_FONT}, selector
    # Without a CJK font every character falls back to the same "tofu" box: draw four
    # characters with the page's own font and require four different, non-empty glyphs.
    glyphs = page.evaluate(
        """() => {
            const font = getComputedStyle(document.body).fontFamily;
            return Array.from('信息公开', (char) => {
                const canvas = document.createElement('canvas');
                canvas.width = canvas.height = 40;
                const context = canvas.getContext('2d');
                context.font = '32px ' + font;
                context.fillText(char, 4, 34);
                const alpha = context.getImageData(0, 0, 40, 40).data.filter((_, i) => i % 4 === 3);
                return Array.from(alpha, (a) => (a > 127 ? '1' : '0')).join('');
            });
        }"""
    )
    assert all("1" in glyph for glyph in glyphs)
    assert len(set(glyphs)) == 4


def test_full_page_screenshot(page: Any, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("MAILPROBE_SCREENSHOT_DIR")
    if keep:  # lets a person look at what the test saw
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
