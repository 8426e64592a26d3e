"""The engine's commands end to end, as a user runs them: a real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailprobe.rubric import Rubric
from tests.conftest import ROOT, WriteCsv

SAMPLES = ROOT / "samples" / "2015"


def mailprobe(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailprobe", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_rank_json_has_sites_and_statistics() -> None:
    out = mailprobe("rank", "--rubric", "city", "--scores", SAMPLES / "city_scores.csv",
                    "--agencies", SAMPLES / "agencies.csv", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    first = data["sites"][0]
    assert {"agency", "rank", "total", "stage", "信息公开", "groups"} <= first.keys()
    assert (first["agency"], first["rank"], first["total"]) == ("广州市", 1, 97)
    assert data["statistics"]["averages"]["total"] == sum(
        s["total"] for s in data["sites"]) / 22


def test_rank_csv_and_table(tmp_path: Path) -> None:
    out = mailprobe("rank", "--rubric", "county", "--scores", SAMPLES / "county_scores.csv",
                    "--agencies", SAMPLES / "agencies.csv", "--format", "csv",
                    "-o", tmp_path / "r.csv")
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("排名,单位名称,所属地市") and len(lines) == 1 + 96 + 1
    table = mailprobe("rank", "--rubric", "county", "--scores", SAMPLES / "county_scores.csv",
                      "--agencies", SAMPLES / "agencies.csv")
    assert "未开通" in table.stdout and "平均分" in table.stdout


def test_bad_cell_is_one_line_and_exit_1(city: Rubric, write_csv: WriteCsv) -> None:
    row: list[object] = ["甲市", 1, *[1] * 36]
    row[2 + city.short_names().index("网站安全")] = 12
    sheet = write_csv("bad.csv", ["单位", "轮次", *city.short_names()], [row])
    out = mailprobe("rank", "--scores", sheet)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("mailprobe: error: ")
    assert "bad.csv: row 2, column 网站安全: out of range" in out.stderr


def test_missing_file_and_unknown_rubric(tmp_path: Path) -> None:
    out = mailprobe("rank", "--scores", tmp_path / "nope.csv")
    assert out.returncode == 1 and "nope.csv: file not found" in out.stderr
    out = mailprobe("rank", "--rubric", "provincial", "--scores", SAMPLES / "city_scores.csv")
    assert out.returncode == 1 and "provincial.toml: rubric file not found" in out.stderr


def test_report_writes_html_csv_xlsx(tmp_path: Path) -> None:
    out = mailprobe("report", "--rubric", "county", "--scores", SAMPLES / "county_scores.csv",
                    "--agencies", SAMPLES / "agencies.csv", "--out", tmp_path / "r")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "report.xlsx").exists()
    assert (tmp_path / "r" / "csv" / "opening.csv").exists()
    bad = mailprobe("report", "--scores", SAMPLES / "city_scores.csv", "--format", "pdf")
    assert bad.returncode == 2 and "--format" in bad.stderr


@pytest.mark.slow
def test_demo_runs_from_any_folder(tmp_path: Path) -> None:
    """A shorter campaign (one city's bureaus); tests/test_demo.py runs the whole one."""
    out = mailprobe("demo", "--out", "demo", "--cities", "1", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "report written" in out.stdout and "地级市：22 个网站参评" in out.stdout
    assert out.stderr == ""  # --quiet
    html = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert "地级市 · 综合排名" in html and "县区级 · 网站开通情况" in html
    assert "2015年第二轮检查（整改情况复查，邮件模拟测试）" in html


def test_export_sheet_reads_back_to_the_same_ranking(tmp_path: Path) -> None:
    args = ["--rubric", "city", "--agencies", SAMPLES / "agencies.csv", "--format", "json"]
    first = mailprobe("rank", "--scores", SAMPLES / "city_scores.csv", *args,
                      "--export-sheet", tmp_path / "merged.xlsx")
    assert first.returncode == 0, first.stderr
    second = mailprobe("rank", "--scores", tmp_path / "merged.xlsx", *args)
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout)["sites"] == json.loads(second.stdout)["sites"]
