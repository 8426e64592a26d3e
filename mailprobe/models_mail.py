"""Tables for incoming mail: messages (raw bytes first), where they were seen, mailbox state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailprobe.models import Base

__all__ = [
    "LocationRow",
    "MailboxState",
    "MailboxStateRow",
    "MessageRow",
    "ParseStatus",
    "StoredMessage",
]


class ParseStatus(StrEnum):
    PENDING = "pending"  # stored, not parsed yet (a crash between the two steps leaves this)
    OK = "ok"
    DEFECTS = "defects"  # parsed, with defects recorded (broken MIME, bad charsets, ...)
    FAILED = "failed"  # not a usable mail message: kept, marked and reported


_PARSE_STATUS = Enum(ParseStatus, native_enum=False, create_constraint=True, length=16,
                     name="parse_status", values_callable=lambda e: [m.value for m in e])


class MessageRow(Base):
    """One message, whatever folders it was seen in: ``sha256`` of ``raw`` is its identity.

    ``raw`` is stored before anything else is done with it. ``internaldate`` (the server's
    receive time, UTC) is the time that counts; ``header_date`` is kept as text, untrusted.
    The classification columns are filled by the next stage.
    """

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_pending", "parse_status", "classified_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    raw: Mapped[bytes]
    size: Mapped[int] = mapped_column(BigInteger)  # RFC822.SIZE: the whole message
    # Server defaults: a bulk insert binds fewer parameters per row (it is the hot path).
    truncated: Mapped[bool] = mapped_column(Boolean, server_default=false())
    truncated_note: Mapped[str | None] = mapped_column(Text)
    internaldate: Mapped[datetime]
    fetched_at: Mapped[datetime]
    header_date: Mapped[str | None] = mapped_column(Text)
    header_message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    parse_status: Mapped[ParseStatus] = mapped_column(
        _PARSE_STATUS, server_default=ParseStatus.PENDING.value)
    parse_error: Mapped[str | None] = mapped_column(Text)
    parsed_at: Mapped[datetime | None]
    kind: Mapped[str | None] = mapped_column(String(32))
    bounce_type: Mapped[str | None] = mapped_column(String(16))
    evidence: Mapped[Any | None] = mapped_column(JSON)
    new_text: Mapped[str | None] = mapped_column(Text)
    classified_at: Mapped[datetime | None]
    rules_version: Mapped[str | None] = mapped_column(String(64))


class LocationRow(Base):
    """Where a message was seen: one row per (account, folder, UIDVALIDITY, UID)."""

    __tablename__ = "message_locations"
    __table_args__ = (UniqueConstraint("account_id", "folder", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)  # 32-bit unsigned in IMAP
    uid: Mapped[int] = mapped_column(BigInteger)
    internaldate: Mapped[datetime]


class MailboxStateRow(Base):
    """How far a mailbox has been read, and which worker watches it (a lease)."""

    __tablename__ = "mailbox_state"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sync_at: Mapped[datetime | None]
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime | None]  # after errors: not before this (exponential backoff)
    resyncs: Mapped[int] = mapped_column(Integer, default=0)  # UIDVALIDITY changes seen


@dataclass(frozen=True)
class MailboxState:
    account: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    last_sync_at: datetime | None
    lease_holder: str | None
    lease_until: datetime | None
    consecutive_errors: int
    last_error: str | None
    retry_at: datetime | None
    resyncs: int


@dataclass(frozen=True)
class StoredMessage:
    """A stored message for the next stage (classification and matching)."""

    id: int
    account: str
    internaldate: datetime
    raw: bytes
    size: int
    truncated: bool
    parse_status: ParseStatus
    parse_error: str | None
