"""The response-time report from hand-made timings: its numbers, its escaping, its page."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailprobe.report import render_html
from mailprobe.response_report import ProbeLine, build_response_report
from mailprobe.tables import Cell, Report, Table
from mailprobe.timeliness import ProbeTiming, QueueMethod
from mailprobe.workdays import default_calendar
from tests.conftest import report_page

SH = ZoneInfo("Asia/Shanghai")
INJECTED = "<script>window.__mailprobe_pwned = 1</script>经查，已处理。"


def sh(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(2015, month, day, hour, minute, tzinfo=SH).astimezone(UTC)


SENT = sh(11, 2)  # a Monday; the 15th working day after it is Monday 2015-11-23
END = sh(12, 31)


def timing(probe: str, agency: str, *, ack: datetime | None = None,
           reply: datetime | None = None, end: datetime = END) -> ProbeTiming:
    return ProbeTiming(probe, agency, SENT, ack, reply, end)


LINES = (
    ProbeLine("a1", "甲市", "咨询 a@a.gd.test", "张伟", timing("a1", "甲市", reply=sh(11, 4)),
              matched_rule="mailbox_and_address", reply_text=INJECTED,
              reply_evidence="sender a@a.gd.test", effective=True, effective_by="机器建议"),
    ProbeLine("a2", "甲市", "投诉 t@a.gd.test", "王芳",
              timing("a2", "甲市", ack=sh(11, 2, 9, 5), reply=sh(11, 16, 15)),
              reviewer="王敏", reply_text="根据《条例》答复如下……"),
    ProbeLine("b1", "乙县", "咨询 b@b.gd.test", "张伟", timing("b1", "乙县")),
    ProbeLine("b2", "乙县", "投诉 t@b.gd.test", "李娜", timing("b2", "乙县", reply=sh(11, 30)),
              manual_route="phone", reply_text="电话答复"),
    # The report is drawn up before this probe's deadline: censored, not late.
    ProbeLine("c1", "丙县", "咨询 c@c.gd.test", "张伟", timing("c1", "丙县", end=sh(11, 10))),
    ProbeLine("c2", "丙县", "投诉 https://c.gd.test/form", "王芳", None),
    ProbeLine("d1", "丁县", "咨询 d@d.gd.test", "李娜", timing("d1", "丁县"), bounce="hard"),
)


@pytest.fixture(scope="module")
def report() -> Report:
    return build_response_report("2015-r1", "2015年第一轮", LINES, method=QueueMethod(),
                                 calendar=default_calendar(), as_of=END, pending=2)


def table(report: Report, table_id: str) -> Table:
    return next(t for t in report.tables() if t.id == table_id)


def by_first(t: Table) -> dict[Cell, dict[str, Cell]]:
    keys = [c.key for c in t.columns]
    return {row[0]: dict(zip(keys, row, strict=True)) for row in (*t.rows, *t.footer)}


def test_each_probe_gets_days_deadline_stage_and_points(report: Report) -> None:
    probes = by_first(table(report, "rt-probes"))
    a1, a2, b1, b2 = probes["a1"], probes["a2"], probes["b1"], probes["b2"]
    assert (a1["days"], a1["status"], a1["stage"], a1["points"]) == (2, "按时", "5个工作日内", 2.0)
    assert (a2["days"], a2["stage"], a2["points"]) == (10, "6-10个工作日", 1.5)
    assert (a2["ack"], a2["reply"]) == ("2015-11-02 09:05", "2015-11-16 15:00")
    assert a2["deadline"] == "2015-11-23" and a2["how"] == "评估员指定（王敏）"
    assert (b1["days"], b1["status"], b1["points"]) == (None, "未答复", 0.0)
    assert (b2["days"], b2["status"], b2["how"]) == (20, "超期", "人工登记：电话")
    assert probes["c1"]["status"] == "尚在期限内"
    assert probes["d1"]["status"] == "退信，渠道不可用"
    assert probes["c2"]["sent"] == "未发出（邮件服务器拒收）" and probes["c2"]["days"] is None
    assert a1["how"] == "收件邮箱＋单位地址" and a1["effective"] == "是（机器建议）"


def test_agencies_and_round_count_the_unanswered_as_beyond_the_limit(report: Report) -> None:
    agencies = by_first(table(report, "rt-agencies"))
    jia, yi, bing, ding, whole = (agencies[k] for k in ("甲市", "乙县", "丙县", "丁县", "全轮"))
    assert (jia["probes"], jia["answered"], jia["in_time"], jia["median"]) == (2, 2, 1.0, 6.0)
    assert jia["stage_within_5"] == jia["stage_days_6_10"] == 0.5 and jia["points"] == 1.75
    assert (yi["median"], yi["stage_late"], yi["stage_no_reply"], yi["points"]) == (
        "超过15", 0.5, 0.5, 0.0)
    assert (bing["probes"], bing["unusable"], bing["median"]) == (1, 1, "超过15")
    assert (ding["bounces"], ding["unusable"]) == (1, 1)
    # Six timed probes: 2, 10, 20 working days and three without a reply → median beyond.
    assert (whole["probes"], whole["answered"], whole["median"]) == (6, 3, "超过15")
    assert whole["in_time"] == pytest.approx(2 / 6) and whole["unusable"] == 2
    summary = by_first(table(report, "rt-summary"))["2015-r1"]
    assert (summary["acknowledged"], summary["bounces"], summary["in_time"]) == (1, 1, 2)


def test_stage_distribution_table_and_chart_agree(report: Report) -> None:
    stages = by_first(table(report, "rt-stages"))
    assert [stages[k]["count"] for k in stages] == [1, 1, 0, 1, 3]
    assert stages["5个工作日内"]["range"] == "0–5"
    assert stages["超过15个工作日"]["range"] == "16 及以上"
    assert stages["6-10个工作日"]["cumulative"] == pytest.approx(2 / 6)
    [chart] = report.sections[0].charts
    assert chart.values == (1.0, 1.0, 0.0, 1.0, 3.0) and chart.labels[-1] == "未答复"
    assert "c1：统计截至时未到答复期限 2015-11-23" in report.sections[0].text


def test_evidence_shows_the_text_and_the_counted_days(report: Report) -> None:
    evidence = by_first(table(report, "rt-evidence"))
    a2 = str(evidence["a2"]["days"])
    assert "2015-11-02（周一）发出，当日不计" in a2 and "共 10 个工作日" in a2
    assert "11月7日周六（周末）" in a2 and "11月16日周一" in a2
    assert evidence["a1"]["text"] == INJECTED and evidence["a1"]["evidence"] == "sender a@a.gd.test"
    assert "未收到答复" in str(evidence["b1"]["days"])
    assert "渠道不可用" in str(evidence["c2"]["days"])
    facts = dict(report.facts)
    assert facts["尚未发出"].startswith("2 件") and facts["来信"] == "7 件"


def test_the_html_escapes_a_reply(report: Report) -> None:
    html = render_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;window.__mailprobe_pwned = 1&lt;/script&gt;经查" in html
    assert 'id="table-rt-evidence"' in html and 'href="#table-rt-evidence"' in html


@pytest.fixture
def page(browser: Any, report: Report, tmp_path: Path) -> Iterator[Any]:
    with report_page(browser, report, tmp_path) as page:
        yield page


@pytest.mark.browser
def test_the_page_shows_the_reply_as_text(page: Any, report: Report) -> None:
    assert page.title() == report.title
    assert page.evaluate("typeof window.__mailprobe_pwned") == "undefined"
    assert page.locator("script").count() == 0
    evidence = page.locator("#table-rt-evidence")
    assert "<script>window.__mailprobe_pwned = 1</script>经查" in evidence.inner_text()
    assert page.locator("#table-rt-probes tbody tr").count() == len(LINES)
    page.locator('nav.toc a[href="#table-rt-evidence"]').click()  # one click from the top
    assert page.evaluate("location.hash") == "#table-rt-evidence"
    assert page.locator("#chart-rt-stage-chart svg rect.bar").count() == 5


def test_the_builder_is_pure() -> None:
    code = ("import sys, mailprobe.response_report; print(' '.join(sorted({m.split('.')[0] for m "
            "in sys.modules} & {'sqlalchemy', 'asyncio', 'aioimaplib', 'aiosmtplib', "
            "'apscheduler', 'alembic'})))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60).stdout.strip()
    assert found == ""
