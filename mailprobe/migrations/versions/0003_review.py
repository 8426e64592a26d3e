"""Matching and review: each message's match, judgements per probe, replies recorded by hand."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: types are spelled out here, never imported from models.
_INSTANT = sa.DateTime(timezone=True)
_DECIDERS = ("machine", "human")
_ROUTES = ("portal", "phone", "letter", "other")


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _matches() -> None:
    op.create_table(
        "matches",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("probe_id", sa.String(64), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("decided_by", _enum(_DECIDERS, "decider"), nullable=False),
        sa.Column("decided_at", _INSTANT, nullable=False),
        sa.Column("from_address", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("machine_probe_id", sa.String(64), nullable=True),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("guesses", sa.JSON(), nullable=False),
        sa.Column("substance", sa.JSON(), nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("matched_at", _INSTANT, nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=True),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.Column("human_kind", sa.String(32), nullable=True),
        sa.Column("kind_by", sa.String(100), nullable=True),
        sa.Column("kind_reason", sa.Text(), nullable=True),
        sa.Column("kind_at", _INSTANT, nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name="fk_matches_message_id_messages"),
        sa.ForeignKeyConstraint(["probe_id"], ["probes.probe_id"],
                                name="fk_matches_probe_id_probes"),
        sa.ForeignKeyConstraint(["machine_probe_id"], ["probes.probe_id"],
                                name="fk_matches_machine_probe_id_probes"),
        sa.PrimaryKeyConstraint("message_id", name="pk_matches"),
    )
    op.create_index("ix_matches_queue", "matches", ["needs_review"])
    op.create_index("ix_matches_probe_id", "matches", ["probe_id"])


def _judgements() -> None:
    op.create_table(
        "judgements",
        sa.Column("probe_id", sa.String(64), nullable=False),
        sa.Column("proposed_effective", sa.Boolean(), nullable=True),
        sa.Column("proposal_reason", sa.Text(), nullable=True),
        sa.Column("proposal_message_id", sa.Integer(), nullable=True),
        sa.Column("proposed_at", _INSTANT, nullable=True),
        sa.Column("effective", sa.Boolean(), nullable=True),
        sa.Column("judged_by", sa.String(100), nullable=True),
        sa.Column("judge_reason", sa.Text(), nullable=True),
        sa.Column("judged_at", _INSTANT, nullable=True),
        sa.ForeignKeyConstraint(["probe_id"], ["probes.probe_id"],
                                name="fk_judgements_probe_id_probes"),
        sa.ForeignKeyConstraint(["proposal_message_id"], ["messages.id"],
                                name="fk_judgements_proposal_message_id_messages"),
        sa.PrimaryKeyConstraint("probe_id", name="pk_judgements"),
    )


def _manual_replies() -> None:
    op.create_table(
        "manual_replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("probe_id", sa.String(64), nullable=False),
        sa.Column("at", _INSTANT, nullable=False),
        sa.Column("how", _enum(_ROUTES, "reply_route"), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("recorded_at", _INSTANT, nullable=False),
        sa.ForeignKeyConstraint(["probe_id"], ["probes.probe_id"],
                                name="fk_manual_replies_probe_id_probes"),
        sa.PrimaryKeyConstraint("id", name="pk_manual_replies"),
    )
    op.create_index("ix_manual_replies_probe_id", "manual_replies", ["probe_id"])


def upgrade() -> None:
    _matches()
    _judgements()
    _manual_replies()


def downgrade() -> None:
    for table in ("manual_replies", "judgements", "matches"):
        op.drop_table(table)
