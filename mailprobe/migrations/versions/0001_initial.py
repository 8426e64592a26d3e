"""Initial schema: the directory, rounds, probes, their audit trail and settings."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: types are spelled out here, never imported from models.
_INSTANT = sa.DateTime(timezone=True)
_STATES = ("planned", "claimed", "sending", "sent", "failed", "uncertain", "submitted",
           "answered", "overdue", "closed")


def _directory() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("user", sa.String(320), nullable=False),
        sa.Column("smtp_host", sa.String(255), nullable=False),
        sa.Column("smtp_port", sa.Integer(), nullable=False),
        sa.Column("smtp_tls", sa.String(16), nullable=False),
        sa.Column("imap_host", sa.String(255), nullable=False),
        sa.Column("imap_port", sa.Integer(), nullable=False),
        sa.Column("imap_tls", sa.String(16), nullable=False),
        sa.Column("password_env", sa.String(128), nullable=True),
        sa.Column("keyring_service", sa.String(128), nullable=True),
        sa.Column("plus_addressing", sa.Boolean(), nullable=False),
        sa.Column("sent_folder", sa.String(200), nullable=False),
        sa.Column("watch_folders", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_table(
        "agencies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("city", sa.String(200), nullable=False),
        sa.Column("website", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agencies"),
        sa.UniqueConstraint("name", name="uq_agencies_name"),
    )
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("address", sa.String(320), nullable=True),
        sa.Column("form_url", sa.String(500), nullable=True),
        sa.Column("target", sa.String(500), nullable=False),
        sa.CheckConstraint("(address IS NULL) <> (form_url IS NULL)",
                           name="ck_channels_address_or_form"),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"],
                                name="fk_channels_agency_id_agencies"),
        sa.PrimaryKeyConstraint("id", name="pk_channels"),
        sa.UniqueConstraint("agency_id", "kind", "target",
                            name="uq_channels_agency_id_kind_target"),
    )
    op.create_table(
        "personas",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("district", sa.String(200), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("tracking", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_personas_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_personas"),
    )


def _rounds() -> None:
    op.create_table(
        "rounds",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("schedule_file", sa.String(500), nullable=False),
        sa.Column("schedule_sha256", sa.String(64), nullable=False),
        sa.Column("window_start", _INSTANT, nullable=False),
        sa.Column("window_end", _INSTANT, nullable=False),
        sa.Column("armed", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("created_at", _INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rounds"),
    )


def _probes() -> None:
    state = sa.Enum(*_STATES, name="probe_state", native_enum=False, create_constraint=True,
                    length=16)
    op.create_table(
        "probes",
        sa.Column("probe_id", sa.String(64), nullable=False),
        sa.Column("round_id", sa.String(64), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("persona_id", sa.String(64), nullable=False),
        sa.Column("template", sa.String(200), nullable=False),
        sa.Column("send_at", _INSTANT, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("state", state, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claim_until", _INSTANT, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _INSTANT, nullable=True),
        sa.Column("sending_at", _INSTANT, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(500), nullable=True),
        sa.Column("token", sa.String(200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("accepted_at", _INSTANT, nullable=True),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("smtp_text", sa.Text(), nullable=True),
        sa.Column("submitted_at", _INSTANT, nullable=True),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"],
                                name="fk_probes_agency_id_agencies"),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"],
                                name="fk_probes_channel_id_channels"),
        sa.ForeignKeyConstraint(["persona_id"], ["personas.id"],
                                name="fk_probes_persona_id_personas"),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name="fk_probes_round_id_rounds"),
        sa.PrimaryKeyConstraint("probe_id", name="pk_probes"),
        sa.UniqueConstraint("message_id", name="uq_probes_message_id"),
    )
    op.create_index("ix_probes_due", "probes", ["state", "send_at"])
    op.create_index("ix_probes_round_agency", "probes", ["round_id", "agency_id"])
    op.create_table(
        "probe_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("probe_id", sa.String(64), nullable=False),
        sa.Column("at", _INSTANT, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["probe_id"], ["probes.probe_id"],
                                name="fk_probe_events_probe_id_probes"),
        sa.PrimaryKeyConstraint("id", name="pk_probe_events"),
    )
    op.create_index("ix_probe_events_probe_id", "probe_events", ["probe_id"])


def upgrade() -> None:
    _directory()
    _rounds()
    _probes()
    op.create_table(
        "settings",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )


def downgrade() -> None:
    for table in ("settings", "probe_events", "probes", "rounds", "personas", "channels",
                  "agencies", "accounts"):
        op.drop_table(table)
