"""`mailprobe classify`: text and JSON output, sent Message-IDs, unreadable files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import run_cli

MESSAGES = Path(__file__).resolve().parent / "messages"
SENT_IDS = MESSAGES / "sent-ids.txt"




def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "classify", str(MESSAGES / "13_referral_only.eml"),
                            str(MESSAGES / "09_bounce_postfix_hard.eml"))
    assert status == 0 and err == ""
    assert f"{MESSAGES / '13_referral_only.eml'}: reply, confidence 0.90" in out
    assert "  evidence: referral only: 请向…咨询/12369" in out
    assert "\n    您好！您反映的餐饮油烟扰民问题，请向潮州市城市管理局咨询，或拨打12369" in out
    assert "发送时间" not in out  # the quote is left out
    assert "09_bounce_postfix_hard.eml: bounce (hard), confidence 0.98" in out
    assert "  failed recipients: hbj@yf.gd.test" in out
    assert "not checked: no sent Message-IDs given" in out


def test_garbled_text_is_cut_short_and_control_characters_are_escaped(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.eml"
    garbled.write_bytes(b"From: a@hz.gd.test\r\nSubject: Re: x\r\n\r\n"
                        + b"\x1b[2J\x1b]0;pwned\x07" + random.Random(3).randbytes(3000))
    status, out, err = run_cli(capsys, "classify", str(garbled))
    assert status == 0 and err == ""
    assert "\x1b" not in out and "\x07" not in out  # nothing a terminal would act on
    assert "    \\x1b[2J\\x1b]0;pwned\\x07" in out
    assert "unreadable" in out
    new_text = out.split("  new text:\n")[1].splitlines()
    assert len(new_text) == 4 and new_text[-1].startswith("    ... ")
    assert new_text[-1].endswith(" more lines of unreadable text (--format json has them)")


def test_json_lines_for_the_whole_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in MESSAGES.glob("*.eml"))
    status, out, _ = run_cli(capsys, "classify", "--format", "json", "--sent-ids", str(SENT_IDS),
                          *files)
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == files
    for row in rows:
        assert {"file", "kind", "bounce_type", "new_text", "evidence"} <= row.keys()
    by_name = {Path(r["file"]).name: r for r in rows}
    assert by_name["10_bounce_exim_soft.eml"]["bounce_type"] == "soft"
    assert by_name["10_bounce_exim_soft.eml"]["dsn_status"] == "4.2.2"
    assert by_name["20_bounce_not_ours.eml"]["kind"] == "unrelated"
    assert by_name["07_ack_form_receipt.eml"]["kind"] == "acknowledgement"
    assert by_name["13_referral_only.eml"]["substance"]["referral_only"] is True
    assert "答复如下" in by_name["02_qqmail_gbk_reply.eml"]["new_text"]


def test_an_unreadable_file_is_one_line_and_the_others_still_run(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.eml"
    status, out, err = run_cli(capsys, "classify", "--format", "json", str(missing),
                            str(MESSAGES / "08_out_of_office_exchange.eml"))
    assert status == 1
    assert err.strip() == (f"mailprobe: error: {missing}: cannot read the message file "
                           "(got 'No such file or directory')")
    assert json.loads(out)["kind"] == "auto_reply"


def test_a_directory_is_unreadable_too(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "classify", str(tmp_path))
    assert status == 1 and str(tmp_path) in err and len(err.strip().splitlines()) == 1


def test_missing_sent_ids_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run_cli(capsys, "classify", "--sent-ids", str(tmp_path / "ids.txt"),
                            str(MESSAGES / "09_bounce_postfix_hard.eml"))
    assert status == 1 and out == ""
    assert err.startswith(f"mailprobe: error: {tmp_path / 'ids.txt'}: cannot read the sent "
                          "Message-IDs")


def test_sent_ids_decide_whether_a_bounce_counts(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("# none of ours\n\n<other@mail.test>\n", encoding="utf-8")
    _, out, _ = run_cli(capsys, "classify", "--format", "json", "--sent-ids", str(ids),
                     str(MESSAGES / "09_bounce_postfix_hard.eml"))
    row = json.loads(out)
    assert row["kind"] == "unrelated" and row["bounce_type"] is None
    assert "returns <20151102100500.7c31d2@mail.test>, not a message we sent" in row["evidence"]


def test_garbage_file_is_classified_not_an_error(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    junk = tmp_path / "junk.eml"
    junk.write_bytes(bytes(range(256)) * 10)
    status, out, _ = run_cli(capsys, "classify", "--format", "json", str(junk))
    assert status == 0 and json.loads(out)["file"] == str(junk)


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "classify", "--help")
    assert status == 0
    assert "Example:\n    mailprobe classify tests/messages/*.eml" in out
