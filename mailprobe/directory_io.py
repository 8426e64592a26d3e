"""Loading the directory: agencies' channels (CSV/XLSX), accounts and personas (TOML)."""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailprobe.directory import (
    Account,
    Channel,
    ChannelKind,
    Endpoint,
    Persona,
    TlsMode,
    TrackingPlacement,
)
from mailprobe.errors import ConfigError, InputError
from mailprobe.sheets import Agency, read_agencies, read_table

__all__ = [
    "Directory",
    "PersonaFile",
    "is_loopback_host",
    "load_directory",
    "parse_email_address",
    "parse_form_url",
    "read_channels",
    "read_personas",
    "resolve_password",
]

_AGENCY = ("单位", "单位名称", "agency", "name")
_KIND = ("渠道", "渠道类型", "kind", "channel")
_TARGET = ("地址", "address", "url")
_KINDS = "咨询/投诉/监督/信箱 or consultation/complaint/supervision/mailbox"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_ACCOUNT_KEYS = {"id", "address", "user", "smtp", "imap", "password_env", "keyring_service",
                 "plus_addressing", "sent_folder", "watch_folders"}
_PERSONA_KEYS = {"id", "name", "district", "account", "details", "tracking"}


@dataclass(frozen=True)
class PersonaFile:
    accounts: tuple[Account, ...]
    personas: tuple[Persona, ...]


@dataclass(frozen=True)
class Directory:
    """Everything ``Store.import_directory`` takes, checked against itself."""

    agencies: tuple[Agency, ...]
    channels: tuple[Channel, ...]
    accounts: tuple[Account, ...]
    personas: tuple[Persona, ...]


# --- addresses -------------------------------------------------------------------------------


def parse_email_address(text: str) -> str:
    """A bare ASCII address ``local@domain``, domain in lower case; ValueError says why not.

    Refused: display names and angle brackets (a channel is an address, not a header),
    whitespace, quoted or non-ASCII local parts (they need SMTPUTF8, which government
    mail servers rarely offer), domain literals, and domains without a dot. An
    internationalised domain is accepted and stored in its ASCII (IDNA) form.
    """
    t = text.strip()
    if not t:
        raise ValueError("empty")
    if any(ch.isspace() for ch in t):
        raise ValueError("contains whitespace")
    if any(ch in t for ch in '<>"(),;'):
        raise ValueError("only the bare address is allowed (no display name, quotes or lists)")
    if t.count("@") != 1:
        raise ValueError("needs exactly one @")
    local, domain = t.split("@")
    if not local:
        raise ValueError("nothing before the @")
    if not local.isascii():
        raise ValueError("non-ASCII local part (needs SMTPUTF8, rarely supported)")
    if len(local) > 64 or len(t) > 254:
        raise ValueError("too long")
    domain = _ascii_domain(domain)
    try:
        parsed = Address(addr_spec=f"{local}@{domain}")
    except (HeaderParseError, ValueError, IndexError):
        raise ValueError("not a valid address") from None
    if parsed.username != local or parsed.domain != domain:
        raise ValueError("not a valid address")
    return f"{local}@{domain}"


def _ascii_domain(domain: str) -> str:
    if not domain:
        raise ValueError("no domain after the @")
    if domain.startswith("["):
        raise ValueError("IP-address domains are not allowed")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("not a valid domain") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise ValueError("the domain has no dot")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError("not a valid domain")
    if labels[-1].isdigit():
        raise ValueError("IP-address domains are not allowed")
    return ascii_domain


def parse_form_url(text: str) -> str:
    """An http(s) URL with a host; ValueError says why not."""
    t = text.strip()
    if any(ch.isspace() for ch in t):
        raise ValueError("contains whitespace")
    parts = urlsplit(t)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("not an http(s) URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return t


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: the only hosts allowed plain text."""
    h = host.strip().strip("[]").rstrip(".").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


# --- channels ----------------------------------------------------------------------------------


def _column(columns: Collection[str], names: tuple[str, ...], source: str, what: str) -> str:
    for name in names:
        if name in columns:
            return name
    raise InputError(f"no {what} column", source=source, location="header row",
                     expected=" or ".join(repr(n) for n in names), got=", ".join(columns))


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _channel(agency: str, kind: ChannelKind, target: str, line: int) -> Channel:
    if target.lower().startswith(("http://", "https://")):
        return Channel(agency, kind, form_url=parse_form_url(target), line=line)
    if "://" in target:
        raise ValueError("not an http(s) URL")
    return Channel(agency, kind, address=parse_email_address(target), line=line)


def read_channels(path: str | Path, *, agencies: Collection[str] | None = None,
                  sheet: str | None = None) -> tuple[Channel, ...]:
    """Channels, one per row: 单位, 渠道 (咨询/投诉/监督/信箱 or English), 地址 (email or URL).

    With ``agencies``, a row naming an agency not in it is an error.
    """
    frame = read_table(path, sheet=sheet)
    source = f"{path}[{sheet}]" if sheet else str(path)
    columns = list(frame.columns)
    header = (_column(columns, _AGENCY, source, "agency"),
              _column(columns, _KIND, source, "channel kind"),
              _column(columns, _TARGET, source, "address"))
    known = set(agencies) if agencies is not None else None
    seen: dict[tuple[str, ChannelKind, str], int] = {}
    channels: list[Channel] = []
    for i, row in enumerate(frame.itertuples(index=False), start=2):
        values = dict(zip(columns, row, strict=True))
        channel = _channel_row([_cell(values[c]) for c in header], header, i, source, known)
        key = (channel.agency, channel.kind, channel.address or channel.form_url or "")
        if key in seen:
            raise InputError(f"duplicate channel (as row {seen[key]})", source=source,
                             location=f"row {i}, column {header[2]}",
                             expected="each channel once", got=key[2])
        seen[key] = i
        channels.append(channel)
    if not channels:
        raise InputError("no channels", source=source, expected="at least one row")
    return tuple(channels)


def _channel_row(cells: list[str], header: tuple[str, str, str], i: int, source: str,
                 known: set[str] | None) -> Channel:
    agency, kind_text, target = cells

    def fail(column: str, message: str, expected: str, got: str | None = None) -> InputError:
        return InputError(message, source=source, location=f"row {i}, column {column}",
                          expected=expected, got=got)

    if not agency:
        raise fail(header[0], "empty agency name", "a name")
    if known is not None and agency not in known:
        raise fail(header[0], f"unknown agency {agency}", "a name from the agency list", agency)
    kind = ChannelKind.parse(kind_text)
    if kind is None:
        raise fail(header[1], "unknown channel kind", _KINDS, kind_text)
    try:
        return _channel(agency, kind, target, i)
    except ValueError as exc:
        raise fail(header[2], f"bad address: {exc}",
                   "an email address (name@domain) or an http(s) URL", target) from None


# --- accounts and personas -------------------------------------------------------------------


class _Reader:
    """Typed access to one TOML table, every error naming the file and the key."""

    def __init__(self, data: Mapping[str, Any], source: str, where: str, path: str = "") -> None:
        self.data, self.source, self.where, self.path = data, source, where, path

    def fail(self, key: str, message: str, expected: str, got: object = None) -> ConfigError:
        return ConfigError(message, source=self.source,
                           location=f"{self.where}, key {self.path}{key}",
                           expected=expected, got=got)

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key == "password":
                raise self.fail(key, "passwords never go in files", "password_env or "
                                "keyring_service naming where the password is kept")
            if key not in allowed:
                raise self.fail(key, "unknown key", ", ".join(sorted(allowed)))

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "missing or empty" if value is None else "expected text",
                            "a non-empty string", value)
        return value.strip()

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if key in self.data else None

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false", "a boolean", value)
        return value

    def texts(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "expected a list of names", "a list of strings", value)
        return tuple(value)

    def table(self, key: str) -> _Reader:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "missing table" if value is None else "expected a table",
                            "{ host = ..., port = ..., tls = ... }", value)
        return _Reader(value, self.source, self.where, f"{self.path}{key}.")


def _endpoint(r: _Reader) -> Endpoint:
    r.check_keys({"host", "port", "tls"})
    host = r.text("host")
    port = r.data.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise r.fail("port", "not a port", "an integer 1..65535", port)
    tls_text = r.text("tls")
    try:
        tls = TlsMode(tls_text.lower())
    except ValueError:
        raise r.fail("tls", "unknown TLS mode", "tls, starttls or none", tls_text) from None
    if tls is TlsMode.NONE and not is_loopback_host(host):
        raise r.fail("tls", f"plain text to {host} would expose the password",
                     "tls or starttls (none only for 127.0.0.0/8, ::1, localhost)", tls_text)
    return Endpoint(host, port, tls)


def _account(r: _Reader) -> Account:
    r.check_keys(_ACCOUNT_KEYS)
    address = r.text("address")
    try:
        address = parse_email_address(address)
    except ValueError as exc:
        raise r.fail("address", f"bad address: {exc}", "name@domain", address) from None
    password_env = r.optional_text("password_env")
    if password_env is not None and not _ENV_NAME.match(password_env):
        raise r.fail("password_env", "not an environment variable name",
                     "upper case letters, digits and _", password_env)
    keyring_service = r.optional_text("keyring_service")
    if password_env is None and keyring_service is None:
        raise r.fail("password_env", "no password source",
                     "password_env (an environment variable name) or keyring_service")
    return Account(
        id=r.text("id"), address=address, user=r.text("user", address),
        smtp=_endpoint(r.table("smtp")), imap=_endpoint(r.table("imap")),
        password_env=password_env, keyring_service=keyring_service,
        plus_addressing=r.flag("plus_addressing", False),
        sent_folder=r.text("sent_folder", "Sent"),
        watch_folders=r.texts("watch_folders", ("INBOX", "Junk")),
    )


def _persona(r: _Reader, accounts: Mapping[str, Account]) -> Persona:
    r.check_keys(_PERSONA_KEYS)
    account_id = r.text("account")
    account = accounts.get(account_id)
    if account is None:
        raise r.fail("account", "no such account", "one of " + ", ".join(accounts), account_id)
    details = r.data.get("details", {})
    if not isinstance(details, dict) or not all(isinstance(v, str) for v in details.values()):
        raise r.fail("details", "expected a table of texts", '[personas.details] "职业" = "…"',
                     details)
    tracking: list[TrackingPlacement] = []
    for name in r.texts("tracking", (TrackingPlacement.MESSAGE_ID.value,)):
        try:
            tracking.append(TrackingPlacement(name))
        except ValueError:
            raise r.fail("tracking", "unknown placement",
                         ", ".join(p.value for p in TrackingPlacement), name) from None
    if TrackingPlacement.PLUS_ADDRESS in tracking and not account.plus_addressing:
        raise r.fail("tracking", f"account {account_id} does not deliver plus-addresses",
                     "plus_addressing = true on the account, or no plus_address", "plus_address")
    return Persona(id=r.text("id"), name=r.text("name"), district=r.text("district"),
                   account=account_id, details=dict(details), tracking=tuple(tracking))


def _entries(data: Mapping[str, Any], key: str, source: str) -> list[Mapping[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"no [[{key}]] tables", source=source, location=key,
                          expected=f"at least one [[{key}]] table")
    return value


def _unique_id(r: _Reader, seen: dict[str, str]) -> None:
    ident = r.text("id")
    if ident in seen:
        raise r.fail("id", f"id {ident} is used twice (first in {seen[ident]})", "unique ids",
                     ident)
    seen[ident] = r.where
    r.where = f"{r.where} ({ident})"


def read_personas(path: str | Path) -> PersonaFile:
    """Accounts and personas from TOML: ``[[accounts]]`` and ``[[personas]]`` tables."""
    file = Path(path)
    source = str(file)
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("file not found", source=source, expected="a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    for key in data:
        if key not in ("accounts", "personas"):
            raise ConfigError("unknown key", source=source, location=key,
                              expected="[[accounts]] and [[personas]]")
    accounts: dict[str, Account] = {}
    seen: dict[str, str] = {}
    for n, entry in enumerate(_entries(data, "accounts", source), start=1):
        r = _Reader(entry, source, f"accounts[{n}]")
        _unique_id(r, seen)
        account = _account(r)
        accounts[account.id] = account
    personas: list[Persona] = []
    seen = {}
    for n, entry in enumerate(_entries(data, "personas", source), start=1):
        r = _Reader(entry, source, f"personas[{n}]")
        _unique_id(r, seen)
        personas.append(_persona(r, accounts))
    return PersonaFile(tuple(accounts.values()), tuple(personas))


def resolve_password(account: Account, env: Mapping[str, str] | None = None) -> str:
    """The account's password: the variable ``password_env``, else the system keyring.

    The keyring is tried only if the ``keyring`` package is importable and the account
    names a ``keyring_service`` (looked up with the account's user). The password is
    returned to the caller and never logged, printed or stored.
    """
    environ = os.environ if env is None else env
    if account.password_env and environ.get(account.password_env):
        return environ[account.password_env]
    if account.keyring_service:
        try:
            keyring: Any = importlib.import_module("keyring")
        except ImportError:
            keyring = None
        if keyring is not None:
            found = keyring.get_password(account.keyring_service, account.user)
            if isinstance(found, str) and found:
                return found
    ways = []
    if account.password_env:
        ways.append(f"set the environment variable {account.password_env}")
    if account.keyring_service:
        ways.append(f"store it in the system keyring (service {account.keyring_service}, "
                    f"user {account.user}; needs the keyring package)")
    raise ConfigError(f"no password for account {account.id}", source=f"account {account.id}",
                      expected=f"the environment variable {account.password_env} set"
                      if account.password_env else "a keyring entry",
                      hint=" or ".join(ways))


def load_directory(agencies: str | Path, channels: str | Path,
                   personas: str | Path) -> Directory:
    """Read and cross-check all three files; nothing is written anywhere."""
    agency_list = read_agencies(agencies)
    channel_list = read_channels(channels, agencies={a.name for a in agency_list})
    people = read_personas(personas)
    return Directory(agency_list, channel_list, people.accounts, people.personas)
