"""Tables for matching and review: each message's match, per-probe judgements, replies by hand."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailprobe.models import Base

__all__ = [
    "Decider",
    "JudgementRow",
    "ManualReplyRow",
    "MatchRow",
    "ReplyRoute",
    "ScoreOverrideRow",
]


class Decider(StrEnum):
    """Who decided the match that counts: the matcher, or an evaluator (whose word stands)."""

    MACHINE = "machine"
    HUMAN = "human"


class ReplyRoute(StrEnum):
    """How a reply that did not come by mail reached the persona."""

    PORTAL = "portal"  # a web portal's answer page
    PHONE = "phone"
    LETTER = "letter"
    OTHER = "other"


def _enum(kind: type[StrEnum], name: str) -> Enum:
    return Enum(kind, native_enum=False, create_constraint=True, length=16, name=name,
                values_callable=lambda e: [m.value for m in e])


class MatchRow(Base):
    """One row per processed message: the machine's proposal and, once given, a human decision.

    ``probe_id`` is the probe the message counts for: the evaluator's choice when
    ``decided_by`` is human (None: rejected), else the matcher's when it decided with
    confidence. The matcher's own view (``machine_probe_id``, ``rule`` ... ``guesses``) is
    rewritten by every re-run and never touches the human columns. ``human_kind`` is an
    evaluator's re-classification; the classifier's kind stays in ``messages.kind``.
    """

    __tablename__ = "matches"
    __table_args__ = (Index("ix_matches_queue", "needs_review"),)

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    probe_id: Mapped[str | None] = mapped_column(ForeignKey("probes.probe_id"), index=True)
    needs_review: Mapped[bool] = mapped_column(Boolean)
    decided_by: Mapped[Decider] = mapped_column(_enum(Decider, "decider"))
    decided_at: Mapped[datetime]
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    machine_probe_id: Mapped[str | None] = mapped_column(ForeignKey("probes.probe_id"))
    rule: Mapped[str] = mapped_column(String(32))
    evidence: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float)
    guesses: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    substance: Mapped[dict[str, Any]] = mapped_column(JSON)  # the classifier's reading
    rules_version: Mapped[str] = mapped_column(String(64))
    matched_at: Mapped[datetime]
    reviewer: Mapped[str | None] = mapped_column(String(100))
    review_reason: Mapped[str | None] = mapped_column(Text)
    human_kind: Mapped[str | None] = mapped_column(String(32))
    kind_by: Mapped[str | None] = mapped_column(String(100))
    kind_reason: Mapped[str | None] = mapped_column(Text)
    kind_at: Mapped[datetime | None]


class JudgementRow(Base):
    """答复内容详细有效 for one probe: the machine's proposal and the evaluator's decision.

    The proposal follows the probe's first substantive reply (``proposal_message_id``) and
    is refreshed when that changes; the decision is only ever written by an evaluator.
    """

    __tablename__ = "judgements"

    probe_id: Mapped[str] = mapped_column(ForeignKey("probes.probe_id"), primary_key=True)
    proposed_effective: Mapped[bool | None] = mapped_column(Boolean)
    proposal_reason: Mapped[str | None] = mapped_column(Text)
    proposal_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    proposed_at: Mapped[datetime | None]
    effective: Mapped[bool | None] = mapped_column(Boolean)
    judged_by: Mapped[str | None] = mapped_column(String(100))
    judge_reason: Mapped[str | None] = mapped_column(Text)
    judged_at: Mapped[datetime | None]


class ManualReplyRow(Base):
    """A reply that came another way (portal, phone, letter), recorded by an evaluator."""

    __tablename__ = "manual_replies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    probe_id: Mapped[str] = mapped_column(ForeignKey("probes.probe_id"), index=True)
    at: Mapped[datetime]  # when the reply reached the persona (UTC): this stops the clock
    how: Mapped[ReplyRoute] = mapped_column(_enum(ReplyRoute, "reply_route"))
    note: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime]


class ScoreOverrideRow(Base):
    """An evaluator's decision replacing a leaf's computed points, with the reason.

    Never deleted: a newer override of the same leaf, or a withdrawal, closes it
    (``withdrawn_at``), so the report can say what changed, when and why.
    """

    __tablename__ = "score_overrides"
    __table_args__ = (Index("ix_score_overrides_target", "rubric", "agency", "leaf"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rubric: Mapped[str] = mapped_column(String(64))  # the rubric's name: city, county, ...
    agency: Mapped[str] = mapped_column(String(200))
    leaf: Mapped[str] = mapped_column(String(200))  # the leaf's key in that rubric
    points: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]
    withdrawn_by: Mapped[str | None] = mapped_column(String(100))
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)
