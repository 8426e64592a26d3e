"""Probe results -> the points of the probe-derived leaves, with the probes they came from.

Pure: the campaign's report lines of one or more rounds in, ``DerivedScore`` per agency and
leaf out; the engine adds them to what the score sheets give (``score.score_sheets``).

The measures named by the rubrics (``probe.measure`` in config/rubric/*.toml):

- ``usable_channel_kinds`` (city 咨询投诉/渠道功能): a channel kind is usable when one of its
  probes reached the agency: accepted by the mail server and not bounced, or submitted
  through the web form. A reply proves it arrived even if a (soft) bounce came too.
  Kinds count as 咨询类 (consultation, mailbox) and 投诉类 (complaint, supervision).
- ``reply_timeliness`` (city 答复实效, the 2-point part): the queue-method points of every
  probe that reached the agency, each round on its own stages, combined over all rounds as
  ``queue_method.toml`` says (mean, worst, best). A reply the evaluator judged not detailed
  and effective (答复内容详细有效: no) counts as no reply.
- ``usable_consultation_channel`` / ``usable_supervision_channel`` (county 网上咨询 and
  网上监督): the kind was reached by one of its probes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from mailprobe.errors import ConfigError
from mailprobe.response_report import ProbeLine
from mailprobe.rubric import Leaf, Rubric
from mailprobe.score import DerivedScore
from mailprobe.timeliness import ProbeOutcome, QueueMethod, assess_round, combine_points
from mailprobe.workdays import WorkCalendar

__all__ = ["MEASURES", "CampaignRound", "campaign_scores", "reached"]

# Channel kinds (directory.ChannelKind values) grouped as the rubrics count them.
_CONSULTATION = frozenset({"consultation", "mailbox"})
_COMPLAINT = frozenset({"complaint", "supervision"})
_KIND_GROUPS = (("咨询类", _CONSULTATION), ("投诉类", _COMPLAINT))
MEASURES = ("usable_channel_kinds", "reply_timeliness", "usable_consultation_channel",
            "usable_supervision_channel")


@dataclass(frozen=True)
class CampaignRound:
    """One round's report lines (``process.response_lines``) under its id and label."""

    round_id: str
    label: str
    lines: tuple[ProbeLine, ...]


def reached(line: ProbeLine) -> bool:
    """Did the probe reach the agency? Refused or bounced = no, unless something answered."""
    if line.timing is None:
        return False
    answered = line.timing.replied_at is not None or line.timing.first_ack_at is not None
    return not line.bounce or answered


def campaign_scores(rubric: Rubric, rounds: Sequence[CampaignRound], *, method: QueueMethod,
                    calendar: WorkCalendar,
                    agencies: Iterable[str] | None = None) -> list[DerivedScore]:
    """Points of every probe-derived leaf of ``rubric`` for every agency the rounds probed.

    ``agencies`` limits the result (say to the agencies of one level's score sheet); an
    agency no round probed gets nothing here and keeps what its score sheet says.
    """
    wanted = None if agencies is None else set(agencies)
    by_agency: dict[str, list[tuple[CampaignRound, ProbeLine]]] = {}
    for rnd in rounds:
        for line in rnd.lines:
            if wanted is None or line.agency in wanted:
                by_agency.setdefault(line.agency, []).append((rnd, line))
    leaves = [leaf for leaf in rubric.leaves if leaf.probe is not None]
    for leaf in leaves:
        assert leaf.probe is not None
        if leaf.probe.measure not in MEASURES:
            raise ConfigError(f"unknown probe measure {leaf.probe.measure!r} for {leaf.key}",
                              source=rubric.file, location=f"{leaf.key}: probe.measure",
                              expected=" | ".join(MEASURES), got=leaf.probe.measure)
    timeliness = (_timeliness(rounds, by_agency, method, calendar)
                  if any(leaf.probe and leaf.probe.measure == "reply_timeliness"
                         for leaf in leaves) else {})
    out = []
    for agency in sorted(by_agency):
        probes = by_agency[agency]
        for leaf in leaves:
            out.append(_leaf_score(leaf, agency, probes, timeliness, method))
    return out


def _leaf_score(leaf: Leaf, agency: str, probes: Sequence[tuple[CampaignRound, ProbeLine]],
                timeliness: Mapping[str, Sequence[tuple[str, ProbeOutcome]]],
                method: QueueMethod) -> DerivedScore:
    assert leaf.probe is not None
    measure, cap = leaf.probe.measure, leaf.probe.points
    if measure == "reply_timeliness":
        return _timeliness_score(leaf, agency, probes, timeliness.get(agency, ()), method)
    groups = {
        "usable_channel_kinds": _KIND_GROUPS,
        "usable_consultation_channel": (("咨询类", _CONSULTATION),),
        "usable_supervision_channel": (("监督类", _COMPLAINT),),
    }[measure]
    per_kind = cap / len(groups)
    points, used, notes = 0.0, [], []
    for label, kinds in groups:
        tried = [line for _, line in probes if line.channel_kind in kinds]
        ok = [line for line in tried if reached(line)]
        if ok:
            points += per_kind
            used.append(ok[0].probe_id)
            notes.append(f"{label}可用")
        elif tried:
            used.extend(line.probe_id for line in tried)
            notes.append(f"{label}不可用（{_why_unusable(tried)}）")
        else:
            notes.append(f"{label}未测（无此类渠道）")
    return DerivedScore(agency, leaf.key, min(points, cap), tuple(used), "；".join(notes))


def _why_unusable(lines: Sequence[ProbeLine]) -> str:
    if any(line.timing is None for line in lines):
        return "邮件服务器拒收"
    return "退信"


def _timeliness(rounds: Sequence[CampaignRound],
                by_agency: Mapping[str, Sequence[tuple[CampaignRound, ProbeLine]]],
                method: QueueMethod, calendar: WorkCalendar
                ) -> dict[str, list[tuple[str, ProbeOutcome]]]:
    """Each round on its own stages (quantile stages depend on the round's replies)."""
    wanted = set(by_agency)
    out: dict[str, list[tuple[str, ProbeOutcome]]] = {}
    for rnd in rounds:
        timings = []
        for line in rnd.lines:
            if line.agency not in wanted or not reached(line) or line.timing is None:
                continue
            timing = line.timing
            if line.effective is False and timing.replied_at is not None:
                timing = replace(timing, replied_at=None)
            timings.append(timing)
        if not timings:
            continue
        for outcome in assess_round(timings, method, calendar).outcomes:
            out.setdefault(outcome.agency, []).append((rnd.label, outcome))
    return out


def _timeliness_score(leaf: Leaf, agency: str, probes: Sequence[tuple[CampaignRound, ProbeLine]],
                      outcomes: Sequence[tuple[str, ProbeOutcome]],
                      method: QueueMethod) -> DerivedScore:
    assert leaf.probe is not None
    ineffective = {line.probe_id for _, line in probes
                   if line.effective is False and line.timing and line.timing.replied_at}
    if not outcomes:
        ids = tuple(line.probe_id for _, line in probes)
        return DerivedScore(agency, leaf.key, 0.0, ids, "没有送达的来信可计答复时效")
    scale = leaf.probe.points / method.max_points if method.max_points else 0.0
    points = combine_points(method, [o.points for _, o in outcomes]) * scale
    parts = []
    for label, o in outcomes:
        if o.probe_id in ineffective:
            days = "答复被评为非详细有效，按未答复计"
        else:
            days = "未答复" if o.working_days is None else f"{o.working_days} 个工作日"
        parts.append(f"{label} {o.probe_id} {days} → {o.points * scale:g} 分")
    combine = {"mean": "取平均", "worst": "取最低", "best": "取最高"}[method.combine.value]
    note = f"排队法{combine}：" + "；".join(parts)
    return DerivedScore(agency, leaf.key, round(min(points, leaf.probe.points), 6),
                        tuple(o.probe_id for _, o in outcomes), note)
