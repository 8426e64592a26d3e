"""The timing commands: mailprobe workdays between/deadline and mailprobe timeliness."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mailprobe.cli import main
from tests.conftest import run_cli


def write(tmp_path: Path, text: str, name: str = "records.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


RECORDS = """\
probe_id,agency,sent_at,first_ack_at,replied_at,note
r1-01,广州市,2015-11-02T09:30+08:00,2015-11-02T09:31+08:00,2015-11-05T16:00+08:00,咨询
r1-02,广州市,2015-11-03T10:00+08:00,,2015-11-20T08:00Z,"投诉, 第二封"
r1-03,深圳市,2015-11-04T10:00+08:00,,,咨询
r1-04,深圳市,2015-11-05T10:00+08:00,,2015-12-20T10:00+08:00,
"""


# --- workdays ------------------------------------------------------------------------------------


def test_between_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "workdays", "between", "2015-09-30", "2015-10-27")
    assert status == 0
    assert out.startswith("2015-09-30 → 2015-10-27：15 个工作日（起算日不计；日历 holidays-")


def test_between_json_any_zone(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "workdays", "between", "2015-11-01T20:00Z",
                          "2015-11-02T23:00+08:00", "--format", "json")
    data = json.loads(out)
    assert status == 0
    assert (data["start"], data["end"], data["working_days"]) == ("2015-11-02", "2015-11-02", 0)
    assert data["zone"] == "Asia/Shanghai"


def test_between_explain_names_holidays_and_make_up_days(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run_cli(capsys, "workdays", "between", "2015-09-30", "2015-10-12", "--explain")
    assert status == 0
    assert "起算日，不计入" in out
    assert "2015-10-01 周四  节假日：国庆节" in out
    assert "2015-10-10 周六  调休上班日" in out and "第 3 个工作日" in out
    assert "其中调休上班日：2015-10-10" in out


def test_between_on_a_rest_day_says_which_deadline_it_met(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run_cli(capsys, "workdays", "between", "2015-11-06", "2015-11-14")
    assert "5 个工作日" in out and "计为第 6 个工作日内" in out


def test_deadline_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "workdays", "deadline", "2015-09-30", "15")
    assert status == 0
    assert "2015-09-30 之后第 15 个工作日：2015-10-27（周二），截至当日 24:00" in out
    _, out, _ = run_cli(capsys, "workdays", "deadline", "2015-11-25T10:00+08:00", "15",
                     "--format", "json", "--explain")
    data = json.loads(out)
    assert data["last_day"] == "2015-12-16"
    assert data["ends_at"] == "2015-12-17T00:00:00+08:00"
    assert [d["number"] for d in data["days"] if d["counted"]] == list(range(1, 16))


def test_naive_datetime_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "workdays", "between", "2015-11-02T09:00", "2015-11-05")
    assert status == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("mailprobe: error: START: a date-time without a time zone is ambiguous")
    assert "--input-zone" in err
    status, out, _ = run_cli(capsys, "workdays", "between", "2015-11-02T09:00", "2015-11-05",
                          "--input-zone", "Asia/Shanghai")
    assert status == 0 and "3 个工作日" in out


def test_unknown_year_names_the_override(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "workdays", "deadline", "2026-12-20", "15")
    assert status == 1
    assert "runs into 2027" in err
    assert "add [[known_years]] year = 2027" in err and "calendar.toml" in err


def test_bad_date_names_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "workdays", "between", "2015-11-02", "2015-11-31")
    assert status == 1
    assert err.strip() == (
        "mailprobe: error: END: not an ISO date or date-time "
        "(expected 2015-11-02 or 2015-11-02T09:30+08:00, got '2015-11-31')"
    )


# --- timeliness ----------------------------------------------------------------------------------


def test_timeliness_csv_keeps_columns_and_adds_results(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, _ = run_cli(capsys, "timeliness", "--input", str(write(tmp_path, RECORDS)),
                          "--format", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["probe_id", "agency", "sent_at", "first_ack_at", "replied_at",
                             "note", "working_days", "deadline", "in_time", "stage", "points"]
    assert [(r["working_days"], r["deadline"], r["in_time"], r["stage"], r["points"])
            for r in rows] == [
        ("3", "2015-11-23", "true", "within_5", "2"),
        ("13", "2015-11-24", "true", "days_11_15", "1"),
        ("", "2015-11-25", "false", "no_reply", "0"),
        ("32", "2015-11-26", "false", "late", "0"),  # replied on a Sunday: 31 + 1
    ]
    assert rows[1]["note"] == "投诉, 第二封"


def test_timeliness_json_and_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = str(write(tmp_path, RECORDS))
    _, out, _ = run_cli(capsys, "timeliness", "--input", path, "--format", "json")
    data = json.loads(out)
    assert data["summary"]["probes"] == 4 and data["summary"]["answered_in_time"] == 2
    assert data["summary"]["median_working_days"] == 22.5  # (13 + 32) / 2
    assert data["summary"]["median_beyond_limit"] is True
    assert {a["agency"]: a["points"] for a in data["agencies"]} == {"广州市": 1.5, "深圳市": 0.0}
    assert data["agencies"][0]["probe_ids"] == ["r1-01", "r1-02"]
    _, out, _ = run_cli(capsys, "timeliness", "--input", path)
    assert "共 4 件：15 个工作日内答复 2，超期答复 1，未答复 1" in out
    assert "5个工作日内：1 件，25.0%" in out


def test_timeliness_round_end_censors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = str(write(tmp_path, RECORDS))
    _, out, _ = run_cli(capsys, "timeliness", "--input", path, "--format", "json",
                     "--round-end", "2015-11-14T23:59:59+08:00")
    data = json.loads(out)
    assert [r["stage"] for r in data["rows"]] == ["within_5", "no_reply", "no_reply", "no_reply"]
    assert data["summary"]["censored"] == 3 and len(data["notes"]) == 3


def test_bad_rows_refuse_the_file_with_line_numbers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = write(tmp_path, "sent_at,replied_at,agency\n"
                "2015-11-02T09:30+08:00,2015-11-03,甲\n"
                "2015-11-02T09:30+08:00,2015-11-xx,乙\n"
                "2015-11-02 09:30,,丙\n"
                "2015-11-02T09:30+08:00,2015-11-01T10:00+08:00,丁\n")
    target = tmp_path / "out.csv"
    status, out, err = run_cli(capsys, "timeliness", "--input", str(bad), "--output", str(target))
    assert status == 1 and out == "" and not target.exists()
    assert err.count("\n") == 1
    assert err.startswith(f"mailprobe: error: {bad}: 3 bad row(s), nothing written: ")
    assert ("line 3, replied_at: not an ISO date or date-time "
            "(expected 2015-11-02 or 2015-11-02T09:30+08:00, got '2015-11-xx')") in err
    assert "line 4, sent_at: a date-time without a time zone is ambiguous" in err
    assert "line 5, replied_at: replied_at is before sent_at" in err
    assert "pass --skip-bad" in err


def test_skip_bad_lists_what_it_skipped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = write(tmp_path, "sent_at,replied_at\n2015-11-02T09:30+08:00,2015-11-03\n"
                ",2015-11-03\n2026-12-20,\n")
    target = tmp_path / "out.csv"
    status, _, err = run_cli(capsys, "timeliness", "--input", str(bad), "--skip-bad",
                          "--format", "csv", "--output", str(target))
    assert status == 0
    assert "mailprobe: skipped line 3, sent_at: no sending time" in err
    assert ("mailprobe: skipped line 4: counting 15 working days from 2026-12-20 "
            "runs into 2027") in err
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["working_days"] for r in rows] == ["1"]


def test_unknown_year_row_hints_at_calendar_toml(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "sent_at,replied_at\n2026-12-20T10:00+08:00,\n")
    status, _, err = run_cli(capsys, "timeliness", "--input", str(path))
    assert status == 1
    assert "1 bad row(s), nothing written: line 2: counting 15 working days" in err
    assert "pass --skip-bad to leave them out; once the State Council notice for 2027" in err


def test_missing_column_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "sent,replied\n2015-11-02,2015-11-03\n")
    status, _, err = run_cli(capsys, "timeliness", "--input", str(path))
    assert status == 1
    assert f"{path}: line 1: missing column (expected a header with sent_at and replied_at" in err


# --- documentation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["workdays"], ["workdays", "between"], ["workdays", "deadline"], ["timeliness"]]
)
def test_every_command_has_an_example(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, out, _ = run_cli(capsys, *argv, "--help")
    assert status == 0
    example = out.split("Example:", 1)[1]
    assert example.splitlines()[1].strip().startswith("mailprobe ")
    assert {"workdays", "timeliness"} <= set(main.commands)
