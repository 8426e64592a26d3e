"""What the response-time report needs of a round: one line per probe, read from the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from mailprobe.classify import MessageKind
from mailprobe.directory import ChannelKind
from mailprobe.errors import InputError
from mailprobe.match import Attached, FirstReplies
from mailprobe.models import AgencyRow, ChannelRow, PersonaRow, ProbeRow, ProbeState, RoundRow
from mailprobe.models_mail import MessageRow
from mailprobe.models_review import Decider, JudgementRow, ManualReplyRow, MatchRow
from mailprobe.process import sent_at
from mailprobe.response_report import (
    ROUTE_LABELS,
    ManualReply,
    MatchedMessage,
    ProbeLine,
    SentRecord,
    first_responses,
    probe_timings,
)
from mailprobe.store import Store
from mailprobe.timeliness import ProbeTiming
from mailprobe.workdays import When

__all__ = ["response_lines"]

_REPLY, _BOUNCE = MessageKind.REPLY.value, "bounce"


# --- facts for the response-time report -------------------------------------------------------


def _source(first: FirstReplies | None) -> Attached | None:
    return None if first is None else first.reply or first.acknowledgement


def _line(p: ProbeRow, agency: str, kind: ChannelKind, target: str, persona: str,
          timing: ProbeTiming | None,
          source: Attached | None, found: Mapping[str, tuple[MatchRow, str]],
          manual: Mapping[str, ManualReply], judged: JudgementRow | None,
          bounce: str) -> ProbeLine:
    how: dict[str, Any] = {}
    if source is not None and source.key in manual:
        r = manual[source.key]
        how = {"manual_route": r.how, "reply_text": r.note,
               "reply_evidence": f"{r.by} 登记的{ROUTE_LABELS[r.how]}答复"}
    elif source is not None:
        m, text = found[source.key]
        human = m.decided_by is Decider.HUMAN
        how = {"matched_rule": m.rule, "reviewer": m.reviewer if human else "",
               "reply_text": text if source.kind == _REPLY else "",
               "reply_evidence": f"邮件 {m.message_id}（{m.from_address}）：" + (
                   f"{m.reviewer} 指定，{m.review_reason or '未说明理由'}" if human
                   else m.evidence)}
    if judged is not None and judged.effective is not None:
        how |= {"effective": judged.effective, "effective_by": judged.judged_by or ""}
    elif judged is not None and judged.proposed_effective is not None:
        how |= {"effective": judged.proposed_effective, "effective_by": "机器建议"}
    return ProbeLine(p.probe_id, agency, f"{kind.label} {target}", persona, timing,
                     bounce=bounce, channel_kind=kind.value, **how)


@dataclass(frozen=True)
class _RoundFacts:
    name: str
    probes: Sequence[Any]  # (ProbeRow, agency, channel kind, channel target, persona name)
    messages: Sequence[Any]  # (MatchRow, internaldate, kind, bounce type, new text)
    manual: dict[str, ManualReply]
    judged: dict[str, JudgementRow]


def _read_round(store: Store, round_id: str) -> _RoundFacts:
    in_round = select(ProbeRow.probe_id).where(ProbeRow.round_id == round_id)
    with store.session(write=False) as s:
        rnd = s.get(RoundRow, round_id)
        if rnd is None:
            raise InputError(f"no round {round_id}", location="--round", got=round_id)
        probes = s.execute(
            select(ProbeRow, AgencyRow.name, ChannelRow.kind, ChannelRow.target, PersonaRow.name)
            .join(AgencyRow, AgencyRow.id == ProbeRow.agency_id)
            .join(ChannelRow, ChannelRow.id == ProbeRow.channel_id)
            .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
            .where(ProbeRow.round_id == round_id).order_by(ProbeRow.send_at, ProbeRow.probe_id)
        ).all()
        messages = s.execute(select(MatchRow, MessageRow.internaldate, MessageRow.kind,
                                    MessageRow.bounce_type, MessageRow.new_text)
                             .join(MessageRow, MessageRow.id == MatchRow.message_id)
                             .where(or_(MatchRow.probe_id.in_(in_round),
                                        MatchRow.machine_probe_id.in_(in_round)))).all()
        manual = [ManualReply(m.id, m.probe_id, m.at, m.how.value, m.by, m.note)
                  for m in s.scalars(select(ManualReplyRow)
                                     .where(ManualReplyRow.probe_id.in_(in_round)))]
        judged = {j.probe_id: j for j in s.scalars(
            select(JudgementRow).where(JudgementRow.probe_id.in_(in_round)))}
    return _RoundFacts(rnd.name, probes, messages, {r.key: r for r in manual}, judged)


def _bounces(matched: Sequence[MatchedMessage],
             types: Sequence[str | None]) -> dict[str, tuple[str, Attached]]:
    """Per probe, the worst bounce type (hard: the channel is unusable) and the first bounce."""
    found: dict[str, tuple[str, Attached]] = {}
    for msg, bounce_type in sorted(zip(matched, types, strict=True),
                                   key=lambda pair: (pair[0].received_at, pair[0].key)):
        if (probe := msg.effective_probe) and msg.effective_kind == _BOUNCE:
            old = found.get(probe)
            worst = "hard" if "hard" in (old and old[0], bounce_type) else "soft"
            found[probe] = (worst, old[1] if old else
                            Attached(probe, msg.key, _BOUNCE, msg.received_at))
    return found


def response_lines(store: Store, round_id: str, *,
                   round_end: When | None = None) -> tuple[str, list[ProbeLine], int]:
    """The round's name, one report line per probe sent (or refused), and how many wait."""
    f = _read_round(store, round_id)
    matched = [MatchedMessage(str(m.message_id), at, kind or "", m.machine_probe_id,
                              m.human_kind, m.decided_by is Decider.HUMAN,
                              m.probe_id if m.decided_by is Decider.HUMAN else None)
               for m, at, kind, _, _ in f.messages]
    firsts = first_responses(matched, f.manual.values())
    bounces = _bounces(matched, [row[3] for row in f.messages])
    found = {str(m.message_id): (m, text or "") for m, _, _, _, text in f.messages}
    # An uncertain probe may never have left: it is timed only once something answered it.
    sent = [SentRecord(p.probe_id, agency, t) for p, agency, *_ in f.probes
            if (t := sent_at(p)) is not None
            and (p.state is not ProbeState.UNCERTAIN or p.probe_id in firsts)]
    timings = {t.probe_id: t for t in probe_timings(sent, matched, f.manual.values(),
                                                    round_end=round_end)}
    lines = []
    for p, agency, kind, target, persona in f.probes:
        refused = p.state is ProbeState.FAILED and p.accepted_at is None
        if p.probe_id in timings or refused:
            bounce, bounced = bounces.get(p.probe_id, ("", None))
            lines.append(_line(p, agency, ChannelKind(kind), target, persona,
                               timings.get(p.probe_id),
                               _source(firsts.get(p.probe_id)) or bounced,
                               found, f.manual, f.judged.get(p.probe_id), bounce))
    return f.name, lines, len(f.probes) - len(lines)
