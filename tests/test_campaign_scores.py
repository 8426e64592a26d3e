"""Probe results -> points of the probe-derived leaves (pure), and into the engine."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprobe.campaign_scores import CampaignRound, campaign_scores, reached
from mailprobe.engine import evaluate
from mailprobe.errors import ConfigError
from mailprobe.response_report import ProbeLine
from mailprobe.rubric import Rubric
from mailprobe.score import DerivedScore
from mailprobe.timeliness import Combine, ProbeTiming, QueueMethod
from mailprobe.workdays import default_calendar
from tests.conftest import WriteCsv

SH = ZoneInfo("Asia/Shanghai")
CAL = default_calendar()
METHOD = QueueMethod()


def sh(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2015, month, day, hour, tzinfo=SH).astimezone(UTC)


SENT = sh(11, 2)  # Monday; working day 5 ends Friday 11-06, 10 on 11-13, 15 on 11-20 (+ none)
END = sh(12, 31)


def line(pid: str, agency: str, kind: str, *, reply: datetime | None = None,
         ack: datetime | None = None, refused: bool = False, bounce: str = "",
         effective: bool | None = None) -> ProbeLine:
    timing = None if refused else ProbeTiming(pid, agency, SENT, ack, reply, END)
    return ProbeLine(pid, agency, f"{kind} x@a.gd.test", "张伟", timing, bounce=bounce,
                     effective=effective, channel_kind=kind)


def by_leaf(scores: list[DerivedScore]) -> dict[tuple[str, str], DerivedScore]:
    return {(d.agency, d.leaf.split("/")[-1]): d for d in scores}


def test_channel_kinds_two_points_each_and_timeliness_per_stage(city: Rubric) -> None:
    r1 = CampaignRound("r1", "第一轮", (
        line("a1", "甲市", "consultation", reply=sh(11, 4)),       # 2 working days: stage 1
        line("a2", "甲市", "complaint", reply=sh(11, 12)),         # 9 days: 6-10, 0.75
        line("b1", "乙市", "consultation", refused=True),          # 550 at RCPT
        line("b2", "乙市", "complaint", bounce="hard"),            # DSN came back
        line("c1", "丙市", "mailbox"),                             # reached, never answered
    ))
    got = by_leaf(campaign_scores(city, [r1], method=METHOD, calendar=CAL))
    assert got["甲市", "渠道功能"].points == 4
    assert got["乙市", "渠道功能"].points == 0
    assert "拒收" in got["乙市", "渠道功能"].note and "退信" in got["乙市", "渠道功能"].note
    assert got["丙市", "渠道功能"].points == 2 and "投诉类未测" in got["丙市", "渠道功能"].note
    # mean of 2 (within 5) and 1.5 (6-10 days, share 0.75)
    assert got["甲市", "答复实效"].points == pytest.approx(1.75)
    assert set(got["甲市", "答复实效"].probes) == {"a1", "a2"}
    assert got["乙市", "答复实效"].points == 0 and got["乙市", "答复实效"].probes == ("b1", "b2")
    assert got["丙市", "答复实效"].points == 0


def test_rounds_are_combined_as_configured(city: Rubric) -> None:
    r1 = CampaignRound("r1", "第一轮", (line("a1", "甲市", "consultation", reply=sh(11, 4)),))
    r2 = CampaignRound("r2", "第二轮", (line("a2", "甲市", "consultation"),))
    mean = by_leaf(campaign_scores(city, [r1, r2], method=METHOD, calendar=CAL))
    assert mean["甲市", "答复实效"].points == 1 and mean["甲市", "答复实效"].probes == ("a1", "a2")
    assert "第一轮 a1" in mean["甲市", "答复实效"].note
    best = replace(METHOD, combine=Combine.BEST)
    assert by_leaf(campaign_scores(city, [r1, r2], method=best, calendar=CAL))[
        "甲市", "答复实效"].points == 2


def test_a_reply_judged_not_effective_earns_nothing(city: Rubric) -> None:
    r1 = CampaignRound("r1", "第一轮", (
        line("a1", "甲市", "consultation", reply=sh(11, 4), effective=False),))
    got = by_leaf(campaign_scores(city, [r1], method=METHOD, calendar=CAL))
    assert got["甲市", "答复实效"].points == 0 and "非详细有效" in got["甲市", "答复实效"].note
    assert got["甲市", "渠道功能"].points == 2  # the channel still worked


def test_an_answered_probe_reached_even_if_a_soft_bounce_came(city: Rubric) -> None:
    soft = line("a1", "甲市", "consultation", ack=sh(11, 2, 11), bounce="soft")
    assert reached(soft) and not reached(replace(soft, timing=replace(
        soft.timing, first_ack_at=None) if soft.timing else None))


def test_county_channels_and_the_agency_filter(county: Rubric) -> None:
    r1 = CampaignRound("r1", "第一轮", (
        line("k1", "甲县", "consultation", reply=sh(11, 4)),
        line("k2", "甲县", "supervision", bounce="hard"),
        line("x1", "甲市", "consultation"),
    ))
    got = by_leaf(campaign_scores(county, [r1], method=METHOD, calendar=CAL,
                                  agencies={"甲县"}))
    assert got["甲县", "网上咨询"].points == 1 and got["甲县", "网上监督"].points == 0
    assert not any(a == "甲市" for a, _ in got)


def test_an_unknown_measure_is_a_config_error(city: Rubric) -> None:
    j = next(j for j, leaf in enumerate(city.leaves) if leaf.probe is not None)
    leaf = city.leaves[j]
    assert leaf.probe is not None
    bad = replace(city, leaves=(*city.leaves[:j],
                                replace(leaf, probe=replace(leaf.probe, measure="vibes")),
                                *city.leaves[j + 1:]))
    with pytest.raises(ConfigError, match="vibes"):
        campaign_scores(bad, [], method=METHOD, calendar=CAL)


_day = st.integers(min_value=0, max_value=40)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["consultation", "complaint", "mailbox"]),
                          st.one_of(st.none(), _day), st.booleans(), st.booleans()),
                min_size=1, max_size=6),
       st.sampled_from(list(Combine)))
def test_points_stay_in_range_and_kinds_count_what_was_reached(
        probes: list[tuple[str, int | None, bool, bool]], combine: Combine) -> None:
    from mailprobe.rubric import load_rubric

    city = load_rubric("city")
    lines = tuple(
        line(f"p{i}", "甲市", kind, refused=refused,
             reply=None if day is None else SENT + timedelta(days=day),
             bounce="hard" if bounced else "")
        for i, (kind, day, refused, bounced) in enumerate(probes))
    got = by_leaf(campaign_scores(city, [CampaignRound("r", "r", lines)],
                                  method=replace(METHOD, combine=combine), calendar=CAL))
    kinds = {"consultation": "c", "mailbox": "c", "complaint": "t"}
    usable = {kinds[ln.channel_kind] for ln in lines if reached(ln)}
    assert got["甲市", "渠道功能"].points == 2 * len(usable)
    assert 0 <= got["甲市", "答复实效"].points <= 2
    # Every probe a point came from is a probe of the agency.
    assert set(got["甲市", "答复实效"].probes) <= {ln.probe_id for ln in lines}


def test_an_earlier_reply_never_scores_less() -> None:
    from mailprobe.rubric import load_rubric

    city = load_rubric("city")
    for late in range(0, 30, 3):
        a = CampaignRound("r", "r", (line("p", "甲市", "consultation",
                                           reply=SENT + timedelta(days=late)),))
        b = CampaignRound("r", "r", (line("p", "甲市", "consultation",
                                           reply=SENT + timedelta(days=late + 3)),))
        pa = by_leaf(campaign_scores(city, [a], method=METHOD, calendar=CAL))["甲市", "答复实效"]
        pb = by_leaf(campaign_scores(city, [b], method=METHOD, calendar=CAL))["甲市", "答复实效"]
        assert pa.points >= pb.points


def test_the_engine_adds_the_campaign_to_the_evaluator_part(city: Rubric,
                                                           write_csv: WriteCsv) -> None:
    names = city.short_names()
    header = ["单位", "轮次", *names, "答复实效:公开往期"]
    rows = []
    for agency, published in (("甲市", 1), ("乙市", 0)):
        row: list[object] = [agency, 1, *[min(1, leaf.weight) for leaf in city.leaves]]
        row[2 + names.index("答复实效")] = ""
        rows.append([*row, published])
    sheet = write_csv("s.csv", header, rows)
    r1 = CampaignRound("r1", "第一轮", (
        line("a1", "甲市", "consultation", reply=sh(11, 4)),
        line("b1", "乙市", "consultation", refused=True)))
    derived = campaign_scores(city, [r1], method=METHOD, calendar=CAL)
    ev = evaluate(city, [sheet], derived=derived)
    scores = ev.ranking.scores
    j = names.index("答复实效")
    k = names.index("咨询投诉/渠道功能")
    a, b = scores.agencies.index("甲市"), scores.agencies.index("乙市")
    assert scores.leaf[a, j] == 3 and scores.leaf[b, j] == 0
    assert scores.leaf[a, k] == 2 and scores.leaf[b, k] == 0
    assert "a1" in scores.provenance[(a, j)] and "评分表 1 分" in scores.provenance[(a, j)]
    assert "拒收" in scores.provenance[(b, k)]
