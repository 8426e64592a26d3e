"""The report writers: HTML escaping and self-containment, CSV and XLSX round trips, atomicity."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from openpyxl import load_workbook

import mailprobe.report as report_module
from mailprobe.errors import ConfigError, InputError
from mailprobe.report import format_cell, render_html, write_csv, write_report, write_xlsx
from mailprobe.tables import Chart, ChartKind, Column, Format, Report, Section, Table

EVIL = '<script>window.__mailprobe_pwned = true</script>东莞市 & 环保局'
FORMULA = '=HYPERLINK("x","点击")'
FONTS = '"Noto Sans CJK SC", "Noto Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif'


def sample_report() -> Report:
    """Two sections with every cell format, a footer, a hostile name and one chart of each kind."""
    totals = Table(
        id="city_totals",
        title="表2-1 市级网站评估得分与排名",
        columns=(
            Column("rank", "排名", Format.INT),
            Column("agency", "单位"),
            Column("disclosure", "信息公开", Format.SCORE),
            Column("service", "在线服务", Format.SCORE),
            Column("total", "总分", Format.SCORE),
            Column("rate", "得分率", Format.PERCENT),
        ),
        rows=(
            (1, "广州市环境保护局", 44.5, 25.0, 95.0, 0.95),
            (2, "深圳市人居环境委员会", 43.0, 24.5, 92.5, 0.925),
            (3, EVIL, 40.25, 23.0, 85.75, 0.8575),
            (4, FORMULA, None, 22.0, 70.0, 0.7),
        ),
        footer=(
            (None, "平均", 42.5833333333, 23.625, 85.8125, 0.858125),
        ),
        note="注：得分率按加权法计算（得分之和 ÷ 满分之和）；“—”表示未评分。",
    )
    stages = Table(
        id="city_stages",
        title="表2-3 市级网站发展阶段分布",
        columns=(
            Column("stage", "发展阶段"),
            Column("count", "网站数", Format.INT),
            Column("share", "占比", Format.PERCENT),
        ),
        rows=(
            ("卓越（90-100）", 1, 1 / 22),
            ("优秀（75-90）", 17, 17 / 22),
            ("发展（60-75）", 2, 2 / 22),
            ("建设（30-60）", 2, 2 / 22),
            ("起步（0-30）", 0, 0.0),
        ),
        footer=(("合计", 22, 1.0),),
        note="注：共 22 个市级网站。",
    )
    bar = Chart(
        id="city_total_bar",
        title="图2-1 市级网站总分",
        kind=ChartKind.BAR,
        labels=("广州市", "深圳市", "东莞市 & <b>", "佛山市", "顺德区"),
        values=(95.0, 92.5, 85.75, 70.0, 0.0),
        max_value=100.0,
    )
    counties = Table(
        id="county_opening",
        title="表4-1 各市县区级网站开通情况",
        columns=(
            Column("city", "地市"),
            Column("counties", "县区数", Format.INT),
            Column("opened", "已开通", Format.INT),
            Column("rate", "开通率", Format.PERCENT),
        ),
        rows=(("广州市", 11, 11, 1.0), ("韶关市", 10, 3, 0.3), ("河源市", 6, None, None)),
        footer=(("全省", 27, 14, 14 / 27),),
    )
    hbar = Chart(
        id="county_leaf_rates",
        title="图4-1 县区级指标平均得分率",
        kind=ChartKind.HBAR,
        labels=(
            "网站建设·网站安全", "信息公开·环境质量信息", "在线服务·办事指南", "互动交流·网上咨询",
        ),
        values=(0.9474, 0.7368, 0.5, 0.8158),
        format=Format.PERCENT,
        max_value=1.0,
        note="注：得分率为各县区网站得分率的平均。",
    )
    return Report(
        title="广东省环保部门政府网站绩效评估报告",
        subtitle="2015 年度 · 第二轮评估结果",
        sections=(
            Section(
                title="一、市级网站评估结果",
                tables=(totals, stages),
                charts=(bar,),
                text="本次评估覆盖全省 22 个市级环保部门网站。\n\n排名采用标准竞赛排名法。",
            ),
            Section(title="二、县区级网站评估结果", tables=(counties,), charts=(hbar,)),
        ),
        facts=(("评估时间", "2015-11-01 至 2015-12-09"), ("评估单位", "省环境信息中心 & 课题组")),
    )


# ---------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "fmt", "text"),
    [
        (92.5, Format.SCORE, "92.5"),
        (80.95, Format.SCORE, "80.95"),
        (90.0, Format.SCORE, "90"),
        (80.945, Format.SCORE, "80.95"),  # half-up on the decimal, not the binary value
        (42.5833333333, Format.SCORE, "42.58"),
        (-0.001, Format.SCORE, "0"),
        (17 / 22, Format.PERCENT, "77.27%"),
        (2 / 22, Format.PERCENT, "9.09%"),
        (1.0, Format.PERCENT, "100.00%"),
        (0, Format.PERCENT, "0.00%"),
        (3, Format.INT, "3"),
        (3.0, Format.INT, "3"),
        (None, Format.SCORE, "—"),
        (None, Format.TEXT, "—"),
        ("未开通", Format.SCORE, "未开通"),
        (1e-05, Format.TEXT, "0.00001"),
    ],
)
def test_format_cell(value: float | str | None, fmt: Format, text: str) -> None:
    assert format_cell(value, fmt) == text


# ---------------------------------------------------------------------------- HTML


class _Links(HTMLParser):
    """Collects every URL-bearing attribute, element id and tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
                self.urls.append((name, value or ""))
            if name == "id" and value:
                self.ids.add(value)


def _parse(html: str) -> _Links:
    links = _Links()
    links.feed(html)
    return links


def test_html_escapes_names_from_input() -> None:
    html = render_html(sample_report())
    assert "<script" not in html
    assert "&lt;script&gt;window.__mailprobe_pwned = true&lt;/script&gt;东莞市 &amp; 环保局" in html
    assert "东莞市 &amp; &lt;b&gt;" in html  # chart labels are escaped too
    assert "省环境信息中心 &amp; 课题组" in html


def test_html_is_self_contained() -> None:
    html = render_html(sample_report())
    links = _parse(html)
    assert "http://" not in html and "https://" not in html
    assert not {"script", "link", "img", "iframe", "object", "embed"} & links.tags
    assert "@import" not in html and "url(" not in html
    assert links.urls, "the table of contents should link to the sections"
    for name, url in links.urls:
        assert name == "href" and url.startswith("#"), url
        assert url[1:] in links.ids, f"{url} points nowhere"


def test_html_declares_chinese_and_utf8() -> None:
    html = render_html(sample_report())
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="zh-CN">' in html
    assert '<meta charset="utf-8">' in html
    assert "<title>广东省环保部门政府网站绩效评估报告</title>" in html


def test_html_shows_titles_numbers_footer_and_notes() -> None:
    html = render_html(sample_report())
    for text in (
        "一、市级网站评估结果", "二、县区级网站评估结果",
        "<caption>表2-1 市级网站评估得分与排名</caption>",
        "图4-1 县区级指标平均得分率", "排名采用标准竞赛排名法。", "2015-11-01 至 2015-12-09",
        "注：共 22 个市级网站。",
    ):
        assert text in html
    assert '<td class="num">85.75</td><td class="num">85.75%</td>' in html
    assert '<td class="num">77.27%</td>' in html
    assert '<td class="missing">—</td>' in html
    tfoot = re.search(r"<tfoot>(.*?)</tfoot>", html, re.S)
    assert tfoot and "平均" in tfoot.group(1) and "85.81" in tfoot.group(1)


def test_html_table_of_contents_links_every_section_table_and_chart() -> None:
    toc = re.search(r'<nav class="toc".*?</nav>', render_html(sample_report()), re.S)
    assert toc
    hrefs = re.findall(r'href="(#[^"]+)"', toc.group(0))
    assert hrefs == [
        "#section-1", "#table-city_totals", "#table-city_stages", "#chart-city_total_bar",
        "#section-2", "#table-county_opening", "#chart-county_leaf_rates",
    ]


def test_html_charts_are_accessible_inline_svg() -> None:
    html = render_html(sample_report())
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 2
    for svg, bars, title in zip(svgs, (5, 4), ("图2-1 市级网站总分", "图4-1 县区级指标平均得分率"),
                                strict=True):
        assert 'role="img"' in svg
        assert f">{title}</title>" in svg
        assert FONTS in svg
        assert svg.count('<rect class="bar"') == bars
    assert ">94.74%</text>" in svgs[1] and ">100%</text>" in svgs[1]  # value label and axis end
    assert "广州市：95；深圳市：92.5" in svgs[0]  # the description read by screen readers


def test_bar_heights_follow_the_axis() -> None:
    svg = re.findall(r"<svg.*?</svg>", render_html(sample_report()), re.S)[0]
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', svg)]
    assert heights[0] == pytest.approx(240 * 0.95, abs=0.1)
    assert heights[-1] == 0.0


# ---------------------------------------------------------------------------- CSV


def _read_csv(path: Path) -> list[list[str]]:
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def test_csv_round_trip(tmp_path: Path) -> None:
    paths = write_csv(sample_report(), tmp_path / "csv")
    assert [p.name for p in paths] == ["city_totals.csv", "city_stages.csv", "county_opening.csv"]
    assert _read_csv(paths[0]) == [
        ["排名", "单位", "信息公开", "在线服务", "总分", "得分率"],
        ["1", "广州市环境保护局", "44.5", "25.0", "95.0", "0.95"],
        ["2", "深圳市人居环境委员会", "43.0", "24.5", "92.5", "0.925"],
        ["3", EVIL, "40.25", "23.0", "85.75", "0.8575"],
        ["4", "'" + FORMULA, "", "22.0", "70.0", "0.7"],
        ["", "平均", "42.5833333333", "23.625", "85.8125", "0.858125"],
    ]
    assert _read_csv(paths[1])[1:3] == [
        ["卓越（90-100）", "1", "0.045455"], ["优秀（75-90）", "17", "0.772727"],
    ]
    assert _read_csv(paths[1])[-1] == ["合计", "22", "1.0"]
    assert _read_csv(paths[2])[-2:] == [["河源市", "6", "", ""], ["全省", "27", "14", "0.518519"]]


# ---------------------------------------------------------------------------- XLSX


def test_xlsx_round_trip(tmp_path: Path) -> None:
    path = write_xlsx(sample_report(), tmp_path / "out" / "report.xlsx")
    book = load_workbook(path)
    assert book.sheetnames == [
        "表2-1 市级网站评估得分与排名",
        "表2-3 市级网站发展阶段分布",
        "表4-1 各市县区级网站开通情况",
    ]
    sheet = book["表2-1 市级网站评估得分与排名"]
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0][0] == "表2-1 市级网站评估得分与排名"
    assert rows[1] == ["排名", "单位", "信息公开", "在线服务", "总分", "得分率"]
    assert rows[2] == [1, "广州市环境保护局", 44.5, 25, 95, 0.95]
    assert rows[4][1] == EVIL
    assert rows[5][1] == FORMULA and sheet["B6"].data_type == "s"  # a name, not a formula
    assert rows[6] == [None, "平均", 42.5833333333, 23.625, 85.8125, 0.858125]
    assert rows[8][0] == "注：得分率按加权法计算（得分之和 ÷ 满分之和）；“—”表示未评分。"
    assert [sheet.cell(3, c).number_format for c in (1, 3, 6)] == ["0", "0.00", "0.00%"]
    assert sheet["B3"].number_format == "General"
    assert all(cell.font.bold for cell in sheet[2]) and all(cell.font.bold for cell in sheet[7])
    assert not sheet["B3"].font.bold
    assert sheet.freeze_panes == "A3"
    assert sheet.column_dimensions["A"].width == 6  # "排名": 4 columns wide, at least 6
    assert sheet.column_dimensions["B"].width == 60  # the hostile name is capped
    stages = book["表2-3 市级网站发展阶段分布"]
    # "卓越（90-100）": 4 wide characters and 6 narrow ones, plus padding.
    assert stages.column_dimensions["A"].width == 16
    assert stages["C4"].value == pytest.approx(17 / 22) and stages["C4"].number_format == "0.00%"


def test_xlsx_sheet_names_are_legal_and_unique(tmp_path: Path) -> None:
    column = (Column("a", "甲"),)
    long_title = "表9-9 " + "很长的标题" * 10
    tables = tuple(
        Table(id=f"t{n}", title=title, columns=column, rows=(("x",),))
        for n, title in enumerate([long_title, long_title, "a/b:c*d?e[f]g\\h", "History", "''"])
    )
    report = Report("标题", "", (Section("一", tables=tables),))
    names = load_workbook(write_xlsx(report, tmp_path / "r.xlsx")).sheetnames
    assert names[0] == long_title[:31] and names[1] == long_title[:28] + "(2)"
    assert names[2] == "abcdefgh"
    assert names[3] == "History(2)"
    assert names[4] == "t4"
    assert all(len(name) <= 31 for name in names)


def test_xlsx_without_tables_still_opens(tmp_path: Path) -> None:
    report = Report("标题", "", (Section("一", text="只有文字"),))
    assert load_workbook(write_xlsx(report, tmp_path / "r.xlsx")).sheetnames == ["说明"]


# ---------------------------------------------------------------------------- files


def _all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_write_report_writes_every_format(tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = write_report(sample_report(), out)
    assert written["html"] == out / "report.html"
    assert written["xlsx"] == out / "report.xlsx"
    assert written["csv"] == [out / "csv" / f"{i}.csv" for i in
                              ("city_totals", "city_stages", "county_opening")]
    assert _all_files(out) == [
        "csv/city_stages.csv", "csv/city_totals.csv", "csv/county_opening.csv",
        "report.html", "report.xlsx",
    ]
    assert (out / "report.html").read_text(encoding="utf-8") == render_html(sample_report())


def test_write_report_only_the_formats_asked(tmp_path: Path) -> None:
    written = write_report(sample_report(), tmp_path, formats=("html",))
    assert list(written) == ["html"] and _all_files(tmp_path) == ["report.html"]
    with pytest.raises(ConfigError, match=r"unknown report format .*got 'pdf'"):
        write_report(sample_report(), tmp_path, formats=("html", "pdf"))


def test_a_failed_write_leaves_no_temporary_and_keeps_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.xlsx").write_bytes(b"old")
    calls: list[str] = []

    def failing_replace(source: Path, target: Path) -> None:
        calls.append(str(target))
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(sample_report(), tmp_path)
    assert calls == [str(tmp_path / "report.html")]
    assert _all_files(tmp_path) == ["report.xlsx"]
    assert (tmp_path / "report.xlsx").read_bytes() == b"old"


def test_a_bad_report_touches_no_file(tmp_path: Path) -> None:
    bad = Table("t", "表", (Column("a", "甲"), Column("b", "乙", Format.SCORE)), rows=(("x",),))
    report = Report("标题", "", (Section("一", tables=(bad,)),))
    with pytest.raises(InputError, match=r"table 't', row 1: a row does not have one cell per"):
        write_report(report, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (Section("一", tables=(Table("t", "表", (Column("s", "分", Format.SCORE),),
                                     rows=((float("nan"),),)),)),
         r"report: table 't', row 1, column '分': a report cell is not a finite number"),
        (Section("一", tables=(Table("a b", "表", (Column("a", "甲"),), rows=()),)),
         r"table id cannot name a file or an anchor .*got 'a b'"),
        (Section("一", tables=(Table("t", "表", (Column("a", "甲"),), rows=()),) * 2),
         r"two tables share one id"),
        (Section("一", charts=(Chart("c", "图", ChartKind.BAR, ("甲",), (-1.0,)),)),
         r"chart 'c', bar '甲': a bar needs a number of at least 0"),
        (Section("一", charts=(Chart("c", "图", ChartKind.BAR, ("甲", "乙"), (1.0,)),)),
         r"a chart needs one value per label \(expected 2 values, got 1\)"),
        (Section("一", charts=(Chart("c", "图", ChartKind.HBAR, ("甲",), (1.0,), max_value=0),)),
         r"a chart axis must end above 0"),
    ],
)
def test_reports_the_writers_refuse(section: Section, message: str) -> None:
    with pytest.raises(InputError, match=message):
        render_html(Report("标题", "", (section,)))


def test_empty_table_and_zero_chart_render() -> None:
    table = Table("t", "空表", (Column("a", "甲"),), rows=())
    chart = Chart("c", "零", ChartKind.BAR, ("甲",), (0.0,))
    html = render_html(Report("标题", "", (Section("一", tables=(table,), charts=(chart,)),)))
    assert "（无数据）" in html and '<rect class="bar"' in html


def test_missing_templates_are_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILPROBE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"the report template is missing.*MAILPROBE_HOME"):
        render_html(sample_report())
