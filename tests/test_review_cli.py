"""`mailprobe process`, `review`, `replies` and `report response-times` on a real SQLite file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mailprobe.cli import run
from mailprobe.clock import ManualClock
from mailprobe.settings import TOKEN_SECRET_ENV
from mailprobe.store import Store
from tests.test_process import NOW, STRANGER, build_round, corpus, crlf, deliver, sh


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A round sent, the corpus and one stranger's reply stored, nothing processed yet."""
    path = tmp_path_factory.mktemp("cli") / "mailprobe.db"
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{path}", clock) as store:
        clock.set(NOW)
        deliver(store, [*corpus().values(), crlf(STRANGER)], clock.now())
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(TOKEN_SECRET_ENV, raising=False)  # the secret the probes were signed with
    copy = tmp_path / "mailprobe.db"
    shutil.copyfile(template, copy)
    return f"sqlite:///{copy}"


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], db: str) -> None:
        self.capsys, self.db = capsys, db

    def __call__(self, *args: str) -> tuple[int, str, str]:
        try:
            run([*args, "--db", self.db])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        return out


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], db: str) -> Cli:
    return Cli(capsys, db)


def _queued(cli: Cli) -> list[dict[str, object]]:
    data = json.loads(cli.ok("review", "list", "--round", "2015-r1", "--format", "json"))
    assert isinstance(data, list)
    return data


def test_process_then_review_a_stranger_s_reply(cli: Cli) -> None:
    out = cli.ok("process")
    assert out.startswith("processed 21 messages") and "1 for review" in out
    assert cli.ok("process").startswith("processed 0 messages")
    [item] = _queued(cli)
    number = str(item["message_id"])
    assert item["from"] == "xiaoli888@qq.com" and item["kind"] == "reply"
    guesses = item["guesses"]
    assert isinstance(guesses, list) and "r1-sg" in {g["probe_id"] for g in guesses}
    table = cli.ok("review", "list")
    assert "待审核邮件：1 封" in table and "xiaoli888@qq.com" in table
    shown = cli.ok("review", "show", number)
    assert "From: xiaoli <xiaoli888@qq.com>" in shown and "match: waiting for review" in shown
    assert "guesses:" in shown and "经查，您反映的夜间施工问题" in shown
    assert "attached to r1-sg by 王敏" in cli.ok(
        "review", "assign", number, "r1-sg", "--by", "王敏", "--reason", "staff mailbox")
    assert _queued(cli) == []
    shown = cli.ok("review", "show", number)
    assert "match: attached to r1-sg by 王敏" in shown and "staff mailbox" in shown
    assert "re-run" in cli.ok("process", "--reprocess")
    assert "match: attached to r1-sg by 王敏" in cli.ok("review", "show", number)


def test_escape_sequences_in_mail_never_reach_the_terminal(cli: Cli, db: str) -> None:
    hostile = STRANGER.replace("stranger.20151109", "hostile").replace(
        "Subject: =?UTF-8?B?5YWz5LqO5oKo55qE5p2l5L+h?=", "Subject: =?UTF-8?Q?=1B]0;owned=07x?=")
    hostile = hostile.replace("张伟：", "张伟：\x1b[2J\x1b[31m")
    with Store(db) as store:
        [number] = deliver(store, [crlf(hostile)], NOW)
    cli.ok("process")
    for out in (cli.ok("review", "list"), cli.ok("review", "show", str(number))):
        assert "\x1b" not in out and "\x07" not in out
    shown = cli.ok("review", "show", str(number))
    assert "Subject: \\x1b]0;owned\\x07x" in shown and "张伟：\\x1b[2J\\x1b[31m" in shown


def test_reject_reclassify_judge_and_record(cli: Cli) -> None:
    cli.ok("process")
    [item] = _queued(cli)
    number = str(item["message_id"])
    assert "rejected by 王敏" in cli.ok("review", "reject", number, "--by", "王敏", "--reason",
                                         "another citizen's matter")
    assert "rejected (answers no probe)" in cli.ok("review", "show", number)
    out = cli.ok("review", "reclassify", number, "acknowledgement", "--by", "王敏",
                 "--reason", "only promises an answer")
    assert "kind acknowledgement" in out and "rejected" in out
    assert "答复内容详细有效 = 否" in cli.ok("review", "judge", "r1-cz", "--not-effective",
                                            "--by", "王敏", "--reason", "referral only")
    out = cli.ok("replies", "record", "r1-st", "--at", "2015-11-06T10:00+08:00", "--how", "phone",
                 "--by", "王敏", "--note", "科员回电答复")
    assert "probe r1-st: reply #1 by phone at 2015-11-06 10:00" in out


def test_response_time_report_in_every_format(cli: Cli, tmp_path: Path) -> None:
    cli.ok("process")
    cli.ok("replies", "record", "r1-st", "--at", "2015-11-06T10:00+08:00", "--how", "phone",
           "--by", "王敏")
    table = cli.ok("report", "response-times", "--round", "2015-r1", "--format", "table")
    assert "逐件答复情况" in table and "人工登记：电话" in table and "各单位答复情况" in table
    data = json.loads(cli.ok("report", "response-times", "--round", "2015-r1",
                             "--format", "json", "--round-end", "2015-12-31"))
    probes = {r["probe"]: r for t in data["tables"] if t["id"] == "rt-probes" for r in t["rows"]}
    assert probes["r1-st"]["reply"] == "2015-11-06 10:00" and probes["r1-st"]["days"] == 4
    assert probes["r1-sg"]["days"] == 2 and probes["r1-sg"]["how"] == "收件邮箱＋单位地址"
    assert probes["r1-jm"]["ack"] is not None and probes["r1-jm"]["reply"] is None
    out = cli.ok("report", "response-times", "--round", "2015-r1", "--out", str(tmp_path / "h"))
    html = (tmp_path / "h" / "report.html").read_text(encoding="utf-8")
    assert "report written" in out and "模拟来信答复时效报告" in html and "经查" in html
    cli.ok("report", "response-times", "--round", "2015-r1", "--format", "csv",
           "--out", str(tmp_path / "c"))
    assert (tmp_path / "c" / "csv" / "rt-evidence.csv").exists()


def test_errors_are_one_line(cli: Cli) -> None:
    cli.ok("process")
    cases = [
        (("review", "assign", "9999", "r1-sg", "--by", "王敏"), "no message 9999"),
        (("review", "judge", "r1-nope", "--effective", "--by", "王敏"), "no probe r1-nope"),
        (("replies", "record", "r1-st", "--at", "2015-11-06", "--how", "phone", "--by", "王敏"),
         "needs a time of day and an offset"),
        (("report", "response-times", "--round", "2099-r9"), "no round 2099-r9"),
        (("review", "reject", "1", "--by", " ", "--reason", "x"), "needs their name"),
    ]
    for args, message in cases:
        code, out, err = cli(*args)
        assert (code, out) == (1, ""), args
        assert err.startswith("mailprobe: error: ") and err.count("\n") == 1, err
        assert message in err
    code, _, err = cli("review", "reject", "1", "--by", "王敏")
    assert code == 2 and "Missing option '--reason'" in err


def test_the_engine_report_still_needs_scores(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["report", "--rubric", "county"])
    assert exc.value.code == 2
    assert "Error: Missing option '--scores'." in capsys.readouterr().err
