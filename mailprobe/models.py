"""The database schema (SQLAlchemy 2 typed models) and the frozen records the store exchanges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from mailprobe.directory import (
    Account,
    Channel,
    ChannelKind,
    Endpoint,
    Persona,
    ProbeSpec,
    TlsMode,
    TrackingPlacement,
)
from mailprobe.sheets import Agency, Level

__all__ = [
    "Accepted",
    "AccountRow",
    "AgencyRow",
    "Base",
    "ChannelRow",
    "ClaimedProbe",
    "Counts",
    "DirectoryCounts",
    "PersonaRow",
    "PlanSaved",
    "ProbeEvent",
    "ProbeEventRow",
    "ProbeRecord",
    "ProbeRow",
    "ProbeState",
    "ProbeView",
    "Released",
    "RoundRecord",
    "RoundRow",
    "RoundStatus",
    "SettingRow",
    "UtcDateTime",
]


class ProbeState(StrEnum):
    """Where a probe is in its lifecycle (design.md, "Lifecycle of a probe")."""

    PLANNED = "planned"  # waiting for its send time (or for an operator: web forms)
    CLAIMED = "claimed"  # a worker holds a lease; nothing handed to SMTP yet
    SENDING = "sending"  # the attempt started: the message may be at the server
    SENT = "sent"  # the server accepted it (code, text and time recorded)
    FAILED = "failed"  # permanently refused: the channel is not usable
    UNCERTAIN = "uncertain"  # the worker died while sending: look in the Sent folder
    SUBMITTED = "submitted"  # a web form, submitted by an operator
    ANSWERED = "answered"
    OVERDUE = "overdue"
    CLOSED = "closed"


class UtcDateTime(TypeDecorator[datetime]):
    """An instant: refuses naive datetimes, always returns aware UTC.

    SQLite has no time zone type, so instants are stored there as naive UTC text in one
    format; that keeps ``send_at <= :now`` a correct comparison inside the database.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError(f"an instant must be a timezone-aware datetime, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Named constraints keep migrations reproducible on both backends.
_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(), dict[str, Any]: JSON(), bytes: LargeBinary()}


class AgencyRow(Base):
    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    level: Mapped[str] = mapped_column(String(16))
    city: Mapped[str] = mapped_column(String(200))
    website: Mapped[str | None] = mapped_column(String(500))


class ChannelRow(Base):
    """An email address or a web form; ``target`` is whichever of the two is set."""

    __tablename__ = "channels"
    __table_args__ = (
        UniqueConstraint("agency_id", "kind", "target"),
        CheckConstraint("(address IS NULL) <> (form_url IS NULL)", name="address_or_form"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(320))
    form_url: Mapped[str | None] = mapped_column(String(500))
    # A NULL never collides in a unique key, so the key uses this non-null copy.
    target: Mapped[str] = mapped_column(String(500))


class AccountRow(Base):
    """A mailbox; deliberately without a password column (env or keyring only)."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(320))
    user: Mapped[str] = mapped_column(String(320))
    smtp_host: Mapped[str] = mapped_column(String(255))
    smtp_port: Mapped[int] = mapped_column(Integer)
    smtp_tls: Mapped[str] = mapped_column(String(16))
    imap_host: Mapped[str] = mapped_column(String(255))
    imap_port: Mapped[int] = mapped_column(Integer)
    imap_tls: Mapped[str] = mapped_column(String(16))
    password_env: Mapped[str | None] = mapped_column(String(128))
    keyring_service: Mapped[str | None] = mapped_column(String(128))
    plus_addressing: Mapped[bool] = mapped_column(Boolean)
    sent_folder: Mapped[str] = mapped_column(String(200))
    watch_folders: Mapped[list[str]] = mapped_column(JSON)


class PersonaRow(Base):
    __tablename__ = "personas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    district: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    tracking: Mapped[list[str]] = mapped_column(JSON)


class RoundRow(Base):
    __tablename__ = "rounds"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. "2015-r1"
    name: Mapped[str] = mapped_column(String(200))
    schedule_file: Mapped[str] = mapped_column(String(500))
    schedule_sha256: Mapped[str] = mapped_column(String(64))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    armed: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    seed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


_STATE = Enum(ProbeState, native_enum=False, create_constraint=True, length=16,
              name="probe_state", values_callable=lambda e: [m.value for m in e])


class ProbeRow(Base):
    __tablename__ = "probes"
    __table_args__ = (
        Index("ix_probes_due", "state", "send_at"),
        Index("ix_probes_round_agency", "round_id", "agency_id"),
    )

    probe_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id"))
    persona_id: Mapped[str] = mapped_column(ForeignKey("personas.id"))
    template: Mapped[str] = mapped_column(String(200))
    send_at: Mapped[datetime]
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[ProbeState] = mapped_column(_STATE, default=ProbeState.PLANNED)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    sending_at: Mapped[datetime | None]  # when the last attempt was handed to SMTP
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(500), unique=True)  # email only
    token: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # for the operator (web forms) and quote matching
    # Rendered at planning time: sending and the uncertain-probe look-up use these bytes.
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    accepted_at: Mapped[datetime | None]
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_text: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None]


class ProbeEventRow(Base):
    """Append-only audit trail: every transition of every probe, with who and why."""

    __tablename__ = "probe_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    probe_id: Mapped[str] = mapped_column(ForeignKey("probes.probe_id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


class SettingRow(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# --- what the store takes and returns ----------------------------------------------------------


@dataclass(frozen=True)
class RoundRecord:
    """A round as planned from its schedule file (flags are set separately)."""

    id: str  # e.g. "2015-r1"
    name: str
    schedule_file: str
    schedule_sha256: str
    window_start: datetime
    window_end: datetime
    seed: int


@dataclass(frozen=True)
class ProbeRecord:
    """One planned probe, rendered at planning time.

    An email probe carries its exact message (``raw``, ``message_id``); a web-form probe
    has neither: an operator pastes ``subject`` and ``body`` into the form.
    """

    probe_id: str
    agency: str
    channel: Channel
    persona: str
    template: str
    send_at: datetime
    token: str
    subject: str
    body: str
    message_id: str | None = None
    raw: bytes | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: ProbeSpec, *, token: str, subject: str, body: str,
                  message_id: str | None = None, raw: bytes | None = None) -> ProbeRecord:
        return cls(spec.probe_id, spec.agency, spec.channel, spec.persona, spec.template,
                   spec.send_at, token, subject, body, message_id, raw, dict(spec.details))


@dataclass(frozen=True)
class ProbeView:
    """A stored probe as an operator or a report sees it (no raw bytes)."""

    probe_id: str
    round: str
    agency: str
    channel: Channel
    persona: str
    template: str
    send_at: datetime
    state: ProbeState
    token: str
    subject: str
    body: str
    message_id: str | None
    attempts: int
    accepted_at: datetime | None
    smtp_code: int | None
    smtp_text: str | None
    submitted_at: datetime | None


@dataclass(frozen=True)
class ClaimedProbe:
    """A due probe leased to one worker: everything needed to send it."""

    probe_id: str
    round: str
    agency: str
    kind: ChannelKind
    to_address: str
    persona: str
    account: str
    from_address: str
    message_id: str
    subject: str
    raw: bytes
    send_at: datetime
    attempts: int  # attempts before this one
    claimed_by: str
    claim_until: datetime


@dataclass(frozen=True)
class Accepted:
    """The server's answer to DATA for one probe: accepted, with its code and text."""

    probe_id: str
    accepted_at: datetime
    code: int
    text: str


@dataclass(frozen=True)
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    absent: int = 0  # in the database, not in the input: kept, never deleted silently


@dataclass(frozen=True)
class DirectoryCounts:
    agencies: Counts
    channels: Counts
    accounts: Counts
    personas: Counts


@dataclass(frozen=True)
class PlanSaved:
    round: str
    added: int
    updated: int
    removed: int
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@dataclass(frozen=True)
class Released:
    to_planned: int  # claims that expired before any attempt started
    to_uncertain: int  # attempts whose worker vanished while sending


@dataclass(frozen=True)
class RoundStatus:
    round: str
    name: str
    armed: bool
    paused: bool
    total: int
    by_state: Mapping[ProbeState, int]
    by_day: Mapping[date, Mapping[ProbeState, int]]  # planned send day in the calendar's zone
    by_agency: Mapping[str, Mapping[ProbeState, int]]


@dataclass(frozen=True)
class ProbeEvent:
    probe_id: str
    at: datetime
    kind: str
    detail: str


# --- rows <-> the directory's frozen types -------------------------------------------------------


def agency_values(a: Agency) -> dict[str, Any]:
    return {"name": a.name, "level": a.level.value, "city": a.city, "website": a.website}


def agency_from_row(row: AgencyRow) -> Agency:
    return Agency(row.name, Level(row.level), row.city, row.website, 0)


def account_values(a: Account) -> dict[str, Any]:
    return {"id": a.id, "address": a.address, "user": a.user,
            "smtp_host": a.smtp.host, "smtp_port": a.smtp.port, "smtp_tls": a.smtp.tls.value,
            "imap_host": a.imap.host, "imap_port": a.imap.port, "imap_tls": a.imap.tls.value,
            "password_env": a.password_env, "keyring_service": a.keyring_service,
            "plus_addressing": a.plus_addressing, "sent_folder": a.sent_folder,
            "watch_folders": list(a.watch_folders)}


def account_from_row(row: AccountRow) -> Account:
    return Account(row.id, row.address, row.user,
                   Endpoint(row.smtp_host, row.smtp_port, TlsMode(row.smtp_tls)),
                   Endpoint(row.imap_host, row.imap_port, TlsMode(row.imap_tls)),
                   row.password_env, row.keyring_service, row.plus_addressing,
                   row.sent_folder, tuple(row.watch_folders))


def persona_values(p: Persona) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "district": p.district, "account_id": p.account,
            "details": dict(p.details), "tracking": [t.value for t in p.tracking]}


def persona_from_row(row: PersonaRow) -> Persona:
    return Persona(row.id, row.name, row.district, row.account_id, dict(row.details),
                   tuple(TrackingPlacement(t) for t in row.tracking))


def channel_from_row(row: ChannelRow, agency: str) -> Channel:
    return Channel(agency, ChannelKind(row.kind), row.address, row.form_url)
