"""The response-time report (pure): per probe, per agency and per round, with its evidence."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from mailprobe.match import Attached, FirstReplies, first_replies
from mailprobe.tables import Cell, Chart, ChartKind, Column, Format, Report, Section, Table
from mailprobe.timeliness import (
    ProbeOutcome,
    ProbeTiming,
    QueueMethod,
    RoundSummary,
    RoundTimeliness,
    Stage,
    StageKind,
    assess_round,
    summarize,
)
from mailprobe.workdays import When, WorkCalendar

__all__ = [
    "ROUTE_LABELS",
    "RULE_LABELS",
    "ManualReply",
    "MatchedMessage",
    "ProbeLine",
    "SentRecord",
    "build_response_report",
    "first_responses",
    "how_matched",
    "probe_timings",
]

RULE_LABELS = {
    "token_in_reply_to": "签名标识（回复邮件头）",
    "token_plus_address": "签名标识（收件地址）",
    "token_in_body": "签名标识（正文）",
    "our_message_id": "引用我方邮件编号",
    "bounce_returned_message": "退信所附原邮件",
    "quoted_details": "引用的来信细节",
    "mailbox_and_address": "收件邮箱＋单位地址",
    "mailbox_and_domain": "收件邮箱＋单位域名",
}
ROUTE_LABELS = {"portal": "网站答复页", "phone": "电话", "letter": "信函", "other": "其他途径"}
_REPLY = "reply"
_EXCERPT = 600  # characters of a reply shown in the evidence table; the CLI shows it whole
_SPACE = re.compile(r"\s+")
_WEEKDAYS = "一二三四五六日"


# --- from matched messages to timings ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A probe as the timing needs it: when it left (accepted by SMTP or submitted by hand)."""

    probe_id: str
    agency: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class MatchedMessage:
    """One message with the machine's view and, when an evaluator decided, the human's.

    ``probe_id`` is the matcher's confident attachment (None: unmatched or in review);
    ``human_decided`` with ``human_probe_id`` None means the evaluator rejected it.
    """

    key: str
    received_at: datetime
    kind: str
    probe_id: str | None
    human_kind: str | None = None
    human_decided: bool = False
    human_probe_id: str | None = None

    @property
    def effective_probe(self) -> str | None:
        return self.human_probe_id if self.human_decided else self.probe_id

    @property
    def effective_kind(self) -> str:
        return self.human_kind or self.kind


@dataclass(frozen=True, slots=True)
class ManualReply:
    """A reply recorded by hand (``how``: portal, phone, letter, other); always substantive."""

    id: int
    probe_id: str
    at: datetime
    how: str
    by: str
    note: str = ""

    @property
    def key(self) -> str:
        return f"manual:{self.id}"


def first_responses(messages: Iterable[MatchedMessage],
                    manual: Iterable[ManualReply] = ()) -> dict[str, FirstReplies]:
    """Per probe, the first acknowledgement and the first substantive reply.

    Human decisions replace the machine's (which probe, which kind) and manual replies count
    as replies. The earliest reply of either origin stops the clock: an evaluator who finds
    that a mailed "reply" answered nothing re-classifies it rather than outvoting it by time.
    """
    items = [Attached(p, m.key, m.effective_kind, m.received_at)
             for m in messages if (p := m.effective_probe) is not None]
    items += [Attached(r.probe_id, r.key, _REPLY, r.at) for r in manual]
    return first_replies(items)


def probe_timings(sent: Sequence[SentRecord], messages: Iterable[MatchedMessage],
                  manual: Iterable[ManualReply] = (), *,
                  round_end: When | None = None) -> list[ProbeTiming]:
    """Sent time, first acknowledgement and first substantive reply of every sent probe.

    Only kind ``reply`` (or a manual reply) stops the clock; acknowledgements are reported.
    """
    firsts = first_responses(messages, manual)
    timings = []
    for probe in sent:
        first = firsts.get(probe.probe_id)
        ack = first.acknowledgement if first else None
        reply = first.reply if first else None
        timings.append(ProbeTiming(probe.probe_id, probe.agency, probe.sent_at,
                                   ack.received_at if ack else None,
                                   reply.received_at if reply else None, round_end))
    return timings


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeLine:
    """One probe of the round with what the report shows about it.

    ``timing`` is None for a probe the mail server refused: it never left, so it is not
    timed, and its channel counts as unusable. ``matched_rule``, ``reviewer`` and
    ``manual_route`` say how its first reply (else its first acknowledgement) was found.
    """

    probe_id: str
    agency: str
    channel: str
    persona: str
    timing: ProbeTiming | None
    matched_rule: str = ""
    reviewer: str = ""
    manual_route: str = ""
    reply_text: str = ""
    reply_evidence: str = ""
    bounce: str = ""  # hard | soft | "" (none)
    effective: bool | None = None  # 答复内容详细有效, the evaluator's word or the proposal
    effective_by: str = ""
    channel_kind: str = ""  # a ChannelKind value: consultation, complaint, ...

    @property
    def unusable(self) -> bool:
        return self.timing is None or self.bounce == "hard"


def how_matched(line: ProbeLine) -> str | None:
    if line.manual_route:
        return f"人工登记：{ROUTE_LABELS.get(line.manual_route, line.manual_route)}"
    if line.reviewer:
        return f"评估员指定（{line.reviewer}）"
    if line.matched_rule:
        return RULE_LABELS.get(line.matched_rule, line.matched_rule)
    return None


def _local(when: When | None, calendar: WorkCalendar) -> str | None:
    if when is None:
        return None
    if not isinstance(when, datetime):
        return when.isoformat()
    return calendar.aware(when).astimezone(calendar.zone).strftime("%Y-%m-%d %H:%M")


def _weekday(day: date) -> str:
    return "周" + _WEEKDAYS[day.weekday()]


def _status(o: ProbeOutcome, line: ProbeLine) -> str:
    if o.working_days is None and line.bounce == "hard":
        return "退信，渠道不可用"
    if o.working_days is None:
        status = "尚在期限内" if o.timed.censored_before_deadline else "未答复"
        return status + ("（曾延迟投递）" if line.bounce == "soft" else "")
    return "按时" if o.in_time else "超期"


def _effective(line: ProbeLine) -> str | None:
    if line.effective is None:
        return None
    return ("是" if line.effective else "否") + (f"（{line.effective_by}）" if line.effective_by
                                                  else "")


def _median(summary: RoundSummary) -> Cell:
    if summary.median_working_days is None:
        return f"超过{summary.limit}" if summary.median_beyond_limit else None
    return summary.median_working_days


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _probe_table(lines: Sequence[ProbeLine], outcomes: dict[str, ProbeOutcome],
                 calendar: WorkCalendar) -> Table:
    columns = (Column("probe", "编号"), Column("agency", "单位"), Column("channel", "渠道"),
               Column("persona", "模拟群众"), Column("sent", "发出时间"),
               Column("ack", "首次回执"), Column("reply", "首次实质答复"),
               Column("days", "工作日", Format.INT), Column("deadline", "答复期限"),
               Column("status", "是否按时"), Column("stage", "排队法阶段"),
               Column("points", "得分", Format.SCORE), Column("how", "匹配方式"),
               Column("effective", "详细有效"))
    rows: list[tuple[Cell, ...]] = []
    for line in lines:
        o = outcomes.get(line.probe_id)
        head: tuple[Cell, ...] = (line.probe_id, line.agency, line.channel, line.persona)
        if o is None:
            rows.append((*head, "未发出（邮件服务器拒收）", *([None] * 9)))
            continue
        p = o.timed.probe
        rows.append((*head, _local(p.sent_at, calendar), _local(p.first_ack_at, calendar),
                     _local(p.replied_at, calendar), o.working_days,
                     o.timed.deadline.last_day.isoformat(), _status(o, line), o.stage.label,
                     o.points, how_matched(line), _effective(line)))
    return Table("rt-probes", "逐件答复情况", columns, tuple(rows),
                 note="时间为北京时间；答复时间以邮件到达邮箱的时间（IMAP INTERNALDATE）为准，"
                      "不取发件人填写的 Date；只有实质性答复停止计时，自动回执只作记录。")


def _stage_columns(stages: Sequence[Stage]) -> tuple[Column, ...]:
    return tuple(Column(f"stage_{s.key}", s.label, Format.PERCENT) for s in stages)


def _group_row(name: str, summary: RoundSummary, lines: Sequence[ProbeLine],
               points: Cell) -> tuple[Cell, ...]:
    unusable = len({line.channel for line in lines if line.unusable})
    return (name, summary.probes, summary.answered,
            _ratio(summary.answered_in_time, summary.probes),
            *(c.share if summary.probes else None for c in summary.stages),
            _median(summary), sum(bool(line.bounce) for line in lines), unusable, points)


def _agency_table(lines: Sequence[ProbeLine], result: RoundTimeliness, limit: int) -> Table:
    columns = (Column("agency", "单位"), Column("probes", "来信", Format.INT),
               Column("answered", "已答复", Format.INT),
               Column("in_time", f"{limit}个工作日内答复率", Format.PERCENT),
               *_stage_columns(result.stages),
               Column("median", "中位工作日", Format.SCORE), Column("bounces", "退信", Format.INT),
               Column("unusable", "不可用渠道", Format.INT),
               Column("points", "答复时效得分", Format.SCORE))
    points = {a.agency: a.points for a in result.agencies}
    groups: dict[str, list[ProbeLine]] = {}
    for line in lines:
        groups.setdefault(line.agency, []).append(line)
    rows = []
    for agency, group in groups.items():
        ids = {line.probe_id for line in group}
        mine = [o for o in result.outcomes if o.probe_id in ids]
        rows.append(_group_row(agency, summarize(mine, result.stages, limit), group,
                               points.get(agency)))
    footer = _group_row("全轮", result.summary, lines, None)
    return Table("rt-agencies", "各单位答复情况", columns, tuple(rows), (footer,),
                 note=f"各阶段占比以该单位全部来信为分母；中位工作日把未答复计为超过 {limit} 个"
                      "工作日；不可用渠道：邮件服务器拒收或硬退信的渠道个数。")


def _stage_range(stage: Stage, limit: int) -> str:
    if stage.kind is StageKind.NO_REPLY:
        return "—"
    if stage.kind is StageKind.LATE:
        return f"{limit + 1} 及以上"
    return f"{stage.low}–{stage.high}"


def _stage_table(result: RoundTimeliness, limit: int) -> Table:
    columns = (Column("stage", "阶段"), Column("range", "工作日"),
               Column("count", "件数", Format.INT), Column("share", "占比", Format.PERCENT),
               Column("cumulative", "累计占比", Format.PERCENT),
               Column("points", "每件得分", Format.SCORE))
    counts = {c.key: c for c in result.summary.stages}
    rows = tuple((s.label, _stage_range(s, limit), counts[s.key].count, counts[s.key].share,
                  counts[s.key].cumulative_share, s.points) for s in result.stages)
    return Table("rt-stages", "排队法阶段分布", columns, rows,
                 note=f"排队法配置：{result.method_source}；日历：{result.calendar_version}。")


def _summary_table(round_id: str, lines: Sequence[ProbeLine], result: RoundTimeliness,
                   limit: int) -> Table:
    s = result.summary
    columns = (Column("round", "轮次"), Column("probes", "来信", Format.INT),
               Column("answered", "已答复", Format.INT),
               Column("in_time", "按时答复", Format.INT),
               Column("in_time_share", "按时答复率", Format.PERCENT),
               Column("acknowledged", "收到回执", Format.INT),
               Column("median", "中位工作日", Format.SCORE), Column("bounces", "退信", Format.INT),
               Column("unusable", "不可用渠道", Format.INT))
    row = (round_id, s.probes, s.answered, s.answered_in_time,
           _ratio(s.answered_in_time, s.probes), s.acknowledged, _median(s),
           sum(bool(line.bounce) for line in lines),
           len({line.channel for line in lines if line.unusable}))
    return Table("rt-summary", "本轮汇总", columns, (row,),
                 note=f"期限为发出后第 {limit} 个工作日（起算日不计，民法典第二百零一条），"
                      "当日 24:00 前到达即为按时。")


def _excerpt(text: str) -> str:
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "…"


def _day_label(day: date) -> str:
    return f"{day.month}月{day.day}日{_weekday(day)}"


def _counted_days(o: ProbeOutcome, calendar: WorkCalendar) -> str:
    t, p = o.timed, o.timed.probe
    d = t.deadline
    start = (f"{d.start.isoformat()}（{_weekday(d.start)}）发出，当日不计；期限 "
             f"{d.last_day.isoformat()}（第 {d.n} 个工作日，当日 24:00 截止）")
    if p.replied_at is None:
        return f"{start}；未收到答复"
    if t.working_days is None:
        return f"{start}；答复于 {_local(p.replied_at, calendar)}，晚于统计截止，不计"
    explained = calendar.explain(p.sent_at, p.replied_at)
    counted = "、".join(_day_label(n.day) + ("（调休上班）" if n.kind.value == "makeup_workday"
                                            else "") for n in explained.days if n.counted)
    skipped = "、".join(f"{_day_label(n.day)}（{n.name or n.kind.label}）"
                        for n in explained.skipped)
    text = (f"{start}；计入 {counted or '无'}；不计 {skipped or '无'}；"
            f"答复于 {_local(p.replied_at, calendar)}，共 {explained.working_days} 个工作日")
    if t.working_days != explained.working_days:
        text += f"（答复日为休息日，第 {explained.working_days} 个工作日已届满，计为 " \
                f"{t.working_days}）"
    return text


def _evidence_table(lines: Sequence[ProbeLine], outcomes: dict[str, ProbeOutcome],
                    calendar: WorkCalendar) -> Table:
    columns = (Column("probe", "编号"), Column("agency", "单位"), Column("how", "匹配方式"),
               Column("evidence", "匹配依据"), Column("text", "答复原文（新写部分）"),
               Column("days", "工作日计算"))
    rows = []
    for line in lines:
        o = outcomes.get(line.probe_id)
        days = _counted_days(o, calendar) if o else "未发出：邮件服务器拒收，渠道不可用"
        rows.append((line.probe_id, line.agency, how_matched(line), line.reply_evidence or None,
                     _excerpt(line.reply_text) or None, days))
    return Table("rt-evidence", "证据：答复原文与工作日计算", columns, tuple(rows),
                 note=f"答复原文超过 {_EXCERPT} 字的只显示开头；全文见 "
                      "`mailprobe review show 邮件编号`。")


def _open_notes(result: RoundTimeliness) -> list[str]:
    return [f"{o.probe_id}：统计截至时未到答复期限 {o.timed.deadline.last_day.isoformat()}，"
            "暂按未答复计。" for o in result.outcomes if o.timed.censored_before_deadline]


def _stage_chart(result: RoundTimeliness) -> Chart:
    counts = {c.key: c.count for c in result.summary.stages}
    return Chart("rt-stage-chart", "各阶段来信件数", ChartKind.BAR,
                 tuple(s.label for s in result.stages),
                 tuple(float(counts[s.key]) for s in result.stages), Format.INT)


def build_response_report(round_id: str, round_name: str, lines: Sequence[ProbeLine], *,
                          method: QueueMethod, calendar: WorkCalendar,
                          as_of: When | None = None, pending: int = 0) -> Report:
    """The round's response-time report: tables, a chart and the evidence, in Chinese.

    ``pending`` counts probes of the round not sent yet (left out of every number).
    """
    timings = [line.timing for line in lines if line.timing is not None]
    result = assess_round(timings, method, calendar)
    outcomes = {o.probe_id: o for o in result.outcomes}
    limit = method.limit
    sections = (
        Section("一、本轮概况", (_summary_table(round_id, lines, result, limit),
                                _stage_table(result, limit)), (_stage_chart(result),),
                text="\n\n".join(_open_notes(result))),
        Section("二、各单位答复情况", (_agency_table(lines, result, limit),)),
        Section("三、逐件记录", (_probe_table(lines, outcomes, calendar),)),
        Section("四、证据", (_evidence_table(lines, outcomes, calendar),),
                text="每件来信的匹配依据、答复原文（新写部分，已去掉引用的原信）和逐日工作日"
                     "计算，供核对表中每个数字。"),
    )
    facts = [("轮次", f"{round_name}（{round_id}）"), ("来信", f"{len(lines)} 件")]
    if pending:
        facts.append(("尚未发出", f"{pending} 件（不计入本报告）"))
    if as_of is not None:
        facts.append(("统计截至", _local(as_of, calendar) or ""))
    facts += [("工作日历", result.calendar_version), ("排队法配置", result.method_source)]
    return Report(f"{round_name} 模拟来信答复时效报告",
                  "邮件模拟测试：答复时间、排队法阶段与得分", sections, tuple(facts))
