"""Incoming mail: messages stored as raw bytes, where each was seen, and mailbox state."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration is a frozen snapshot: types are spelled out here, never imported from models.
_INSTANT = sa.DateTime(timezone=True)
_PARSE_STATUSES = ("pending", "ok", "defects", "failed")


def _messages() -> None:
    status = sa.Enum(*_PARSE_STATUSES, name="parse_status", native_enum=False,
                     create_constraint=True, length=16)
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("truncated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("truncated_note", sa.Text(), nullable=True),
        sa.Column("internaldate", _INSTANT, nullable=False),
        sa.Column("fetched_at", _INSTANT, nullable=False),
        sa.Column("header_date", sa.Text(), nullable=True),
        sa.Column("header_message_id", sa.String(998), nullable=True),
        sa.Column("parse_status", status, server_default="pending", nullable=False),
        sa.Column("parse_error", sa.Text(), nullable=True),
        sa.Column("parsed_at", _INSTANT, nullable=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("bounce_type", sa.String(16), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("new_text", sa.Text(), nullable=True),
        sa.Column("classified_at", _INSTANT, nullable=True),
        sa.Column("rules_version", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_messages_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("sha256", name="uq_messages_sha256"),
    )
    op.create_index("ix_messages_account_id", "messages", ["account_id"])
    op.create_index("ix_messages_header_message_id", "messages", ["header_message_id"])
    op.create_index("ix_messages_pending", "messages", ["parse_status", "classified_at"])


def _locations() -> None:
    op.create_table(
        "message_locations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("internaldate", _INSTANT, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_message_locations_account_id_accounts"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name="fk_message_locations_message_id_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_message_locations"),
        sa.UniqueConstraint("account_id", "folder", "uidvalidity", "uid",
                            name="uq_message_locations_account_id_folder_uidvalidity_uid"),
    )
    op.create_index("ix_message_locations_message_id", "message_locations", ["message_id"])


def _mailbox_state() -> None:
    op.create_table(
        "mailbox_state",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("last_sync_at", _INSTANT, nullable=True),
        sa.Column("lease_holder", sa.String(128), nullable=True),
        sa.Column("lease_until", _INSTANT, nullable=True),
        sa.Column("consecutive_errors", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("retry_at", _INSTANT, nullable=True),
        sa.Column("resyncs", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_mailbox_state_account_id_accounts"),
        sa.PrimaryKeyConstraint("account_id", "folder", name="pk_mailbox_state"),
    )


def upgrade() -> None:
    _messages()
    _locations()
    _mailbox_state()


def downgrade() -> None:
    for table in ("mailbox_state", "message_locations", "messages"):
        op.drop_table(table)
