"""Who is probed and who writes: agencies' channels, mailbox accounts and personas (types)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Account",
    "Channel",
    "ChannelKind",
    "Endpoint",
    "Persona",
    "ProbeSpec",
    "TlsMode",
    "TrackingPlacement",
]


class ChannelKind(StrEnum):
    CONSULTATION = "consultation"  # 咨询
    COMPLAINT = "complaint"  # 投诉
    SUPERVISION = "supervision"  # 监督
    MAILBOX = "mailbox"  # 信箱 (a general mailbox)

    @property
    def label(self) -> str:
        return {"consultation": "咨询", "complaint": "投诉", "supervision": "监督",
                "mailbox": "信箱"}[self.value]

    @classmethod
    def parse(cls, text: str) -> ChannelKind | None:
        t = text.strip().lower()
        for kind in cls:
            if t in (kind.value, kind.label):
                return kind
        return None


class TlsMode(StrEnum):
    NONE = "none"  # plain text: allowed only towards loopback servers
    STARTTLS = "starttls"
    TLS = "tls"  # implicit TLS (SMTPS 465, IMAPS 993)


class TrackingPlacement(StrEnum):
    MESSAGE_ID = "message_id"  # a signed probe token inside our Message-ID
    PLUS_ADDRESS = "plus_address"  # Reply-To: user+token@domain (only where delivered)
    BODY = "body"  # a short reference line in the body


@dataclass(frozen=True)
class Channel:
    """One way to reach an agency: an email address, or a web form an operator submits."""

    agency: str
    kind: ChannelKind
    address: str | None = None  # an email address
    form_url: str | None = None  # a web form; submitted by hand and recorded
    line: int = 0

    @property
    def is_email(self) -> bool:
        return self.address is not None

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1].lower() if self.address else ""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: TlsMode


@dataclass(frozen=True)
class Account:
    """A mailbox the personas write from and read replies in.

    The password is never stored here: it comes from the environment variable
    ``password_env`` or from the system keyring (``keyring_service``, user).
    """

    id: str
    address: str  # the From address
    user: str
    smtp: Endpoint
    imap: Endpoint
    password_env: str | None = None
    keyring_service: str | None = None
    plus_addressing: bool = False  # the provider delivers user+tag@domain
    sent_folder: str = "Sent"
    watch_folders: tuple[str, ...] = ("INBOX", "Junk")


@dataclass(frozen=True)
class Persona:
    """A simulated citizen: how they sign and what they write about themselves."""

    id: str
    name: str
    district: str
    account: str  # Account.id; several personas may share an account
    details: Mapping[str, str] = field(default_factory=dict)  # writing details for templates
    tracking: tuple[TrackingPlacement, ...] = (TrackingPlacement.MESSAGE_ID,)


@dataclass(frozen=True)
class ProbeSpec:
    """One planned probe: who writes what to which channel, and when (UTC)."""

    probe_id: str
    round: str
    agency: str
    channel: Channel
    persona: str  # Persona.id
    template: str  # a template id under templates/probes/
    send_at: datetime
    details: Mapping[str, str] = field(default_factory=dict)  # unique to this probe
