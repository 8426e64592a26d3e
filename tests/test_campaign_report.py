"""A round in the database + score sheets -> rankings, overrides and the full report (CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailprobe import process as stage
from mailprobe.clock import ManualClock
from mailprobe.rubric import Rubric
from mailprobe.settings import token_secret
from mailprobe.store import Store
from tests.conftest import WriteCsv, run_cli
from tests.test_process import BY_KEY, PROBES, ROUND, build_round, corpus, deliver, sh

INJECTED = "<script>window.__mailprobe_pwned = 1</script><b>粗体</b>"
# jm sent an acknowledgement (06 in the corpus); this is its answer, with markup in it.
JM_ANSWER = f"""From: =?UTF-8?B?5rGf6Zeo5biC546v5aKD5L+d5oqk5bGA?= <xinfang@jm.gd.test>
To: li.na@mail.test
Subject: =?UTF-8?B?5Zue5aSN?=
Date: Tue, 10 Nov 2015 10:00:00 +0800
Message-ID: <answer.20151110@jm.gd.test>
In-Reply-To: {BY_KEY["jm"].message_id}
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

李娜：
    您好！经查，我市已在各街道设置废旧电池回收点共三十六个，具体位置已在我局网站公布。
{INJECTED}
江门市环境保护局
""".replace("\n", "\r\n").encode()
AS_OF = "2015-12-31"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("campaign") / "mailprobe.db"
    clock = ManualClock(sh(1, 8, 0))
    with build_round(f"sqlite:///{path}", clock) as store:
        clock.set(sh(20, 9, 0))
        deliver(store, [*corpus().values(), JM_ANSWER], clock.now())
        stage.process_new(store, token_secret(store, env={}), clock=clock)
    return f"sqlite:///{path}"


@pytest.fixture
def sheet(city: Rubric, write_csv: WriteCsv) -> Path:
    names = city.short_names()
    rows = []
    for p in PROBES:
        row: list[object] = [p.agency, 1, *[min(1, leaf.weight) for leaf in city.leaves]]
        row[2 + names.index("答复实效")] = ""
        rows.append([*row, 1])
    return write_csv("city.csv", ["单位", "轮次", *names, "答复实效:公开往期"], rows)


def _rank(capsys: pytest.CaptureFixture[str], db: str, sheet: Path) -> dict[str, Any]:
    status, out, err = run_cli(capsys, "rank", "--rubric", "city", "--scores", str(sheet),
                               "--campaign", ROUND, "--as-of", AS_OF, "--db", db,
                               "--format", "json")
    assert status == 0, err
    return {s["agency"]: s for s in json.loads(out)["sites"]}


def test_rank_takes_the_probe_leaves_from_the_round(capsys: pytest.CaptureFixture[str],
                                                    db: str, sheet: Path) -> None:
    sites = _rank(capsys, db, sheet)
    gz, sw, hz = sites["广州市"], sites["汕尾市"], sites["惠州市"]
    # 广州市 answered by mail (Outlook, 05 in the corpus) within five working days.
    assert gz["leaves"]["答复实效"] == 3 and gz["leaves"]["咨询投诉/渠道功能"] == 2
    assert "r1-gz" in gz["provenance"]["答复实效"] and gz["probe_ids"]["答复实效"] == ["r1-gz"]
    # 汕尾市's only channel bounced (a Chinese provider's 退信): unusable, no reply.
    assert sw["leaves"]["咨询投诉/渠道功能"] == 0 and sw["leaves"]["答复实效"] == 1
    assert "退信" in sw["provenance"]["咨询投诉/渠道功能"]
    # 惠州市's complaint went through its web form: that kind counts.
    assert hz["leaves"]["咨询投诉/渠道功能"] == 2 and "投诉类可用" in hz["provenance"][
        "咨询投诉/渠道功能"]


def test_an_override_counts_shows_its_reason_and_can_be_withdrawn(
        capsys: pytest.CaptureFixture[str], db: str, sheet: Path) -> None:
    status, out, err = run_cli(capsys, "override", "add", "--rubric", "city", "--agency",
                               "汕尾市", "--leaf", "咨询投诉/渠道功能", "--points", "2", "--reason",
                               "退信为对方服务器临时故障，复测送达", "--by", "评估员甲", "--db", db)
    assert status == 0, err
    override_id = out.split()[1].rstrip(":")
    sites = _rank(capsys, db, sheet)
    sw = sites["汕尾市"]
    assert sw["leaves"]["咨询投诉/渠道功能"] == 2
    assert "复测送达" in sw["provenance"]["咨询投诉/渠道功能"]
    assert "原为 模拟来信得 0 分" in sw["provenance"]["咨询投诉/渠道功能"]
    status, out, _ = run_cli(capsys, "override", "list", "--db", db)
    assert "汕尾市" in out and "评估员甲" in out
    status, out, err = run_cli(capsys, "override", "withdraw", override_id, "--by", "评估员乙",
                               "--reason", "复核", "--db", db)
    assert status == 0, err
    assert _rank(capsys, db, sheet)["汕尾市"]["leaves"]["咨询投诉/渠道功能"] == 0
    status, out, _ = run_cli(capsys, "override", "list", "--all", "--db", db)
    assert "复核" in out


@pytest.mark.parametrize(("args", "message"), [
    (("--leaf", "领导介绍", "--points", "9"), "out of range"),
    (("--leaf", "没有这个指标", "--points", "1"), "no leaf"),
    (("--leaf", "答复实效", "--points", "1", "--agency", "火星市"), "no agency"),
    (("--leaf", "答复实效", "--points", "1", "--reason", " "), "needs a reason"),
])
def test_bad_overrides_are_refused_with_one_line(capsys: pytest.CaptureFixture[str], db: str,
                                                 args: tuple[str, ...], message: str) -> None:
    base = {"--agency": "汕尾市", "--reason": "理由", "--by": "评估员甲"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [x for k, v in {**base, **given}.items() for x in (k, v)]
    status, _, err = run_cli(capsys, "override", "add", "--rubric", "city", *argv, "--db", db)
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1
    with Store(db) as store:
        from mailprobe.overrides import list_overrides
        assert not list_overrides(store)


@pytest.fixture
def full_report(capsys: pytest.CaptureFixture[str], db: str, sheet: Path,
                tmp_path: Path) -> Path:
    status, out, err = run_cli(capsys, "report", "--rubric", "city", "--scores", str(sheet),
                               "--campaign", ROUND, "--as-of", AS_OF, "--db", db,
                               "--out", str(tmp_path / "full"))
    assert status == 0, err
    return Path(out.split("report written: ")[1].strip())


def test_the_full_report_is_one_command(full_report: Path) -> None:
    html = full_report.read_text(encoding="utf-8")
    assert "排名" in html and "来自模拟来信或人工调整的得分" in html
    assert "答复时效" in html or "工作日" in html
    csvs = {p.name for p in (full_report.parent / "csv").glob("*.csv")}
    assert any(name.startswith("rt_") for name in csvs), csvs
    assert INJECTED not in html and "&lt;script&gt;" in html


@pytest.fixture
def page(browser: Any, full_report: Path) -> Iterator[Any]:
    page = browser.new_page()
    page.goto(full_report.as_uri(), wait_until="load")
    try:
        yield page
    finally:
        page.close()


@pytest.mark.browser
def test_a_reply_with_markup_shows_as_text(page: Any) -> None:
    assert page.evaluate("window.__mailprobe_pwned") is None
    assert page.locator("b", has_text="粗体").count() == 0
    assert page.get_by_text(INJECTED, exact=False).count() >= 1


def test_the_campaign_needs_a_database_round(capsys: pytest.CaptureFixture[str], db: str,
                                             sheet: Path) -> None:
    status, _, err = run_cli(capsys, "rank", "--rubric", "city", "--scores", str(sheet),
                             "--campaign", "2099-r9", "--db", db)
    assert status == 1 and "no round 2099-r9" in err


def test_store_left_unchanged_by_ranking(db: str) -> None:
    with Store(db) as store:
        assert store.round_status(ROUND).total == len(PROBES)
