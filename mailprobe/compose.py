"""Compose a probe: persona × agency × template → the MIME bytes of a citizen's letter."""

from __future__ import annotations

import difflib
import hashlib
import hmac
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email import charset as _charset
from email.header import Header
from email.message import Message
from email.policy import Compat32, compat32
from email.utils import format_datetime, formataddr
from enum import StrEnum
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from mailprobe.directory import Account, ChannelKind, Persona, ProbeSpec, TrackingPlacement
from mailprobe.errors import ConfigError
from mailprobe.paths import templates_dir
from mailprobe.probe_details import masked_phone
from mailprobe.tokens import make_token, message_id, plus_address

__all__ = [
    "ComposedProbe",
    "ProbeKind",
    "ProbeTemplate",
    "TemplateSet",
    "compose",
    "probe_variables",
    "render",
]

_BLOCKS = ("subject", "body")
# A letter that names neither a street nor a 小区 could be sent word for word to two agencies
# and could not be recognised in a quoted reply; the index may not declare such a template.
_PLACE_VARIABLES = (("street", "address"), ("community",))
_UTF8 = _charset.Charset("utf-8")  # body: base64 (see compose); headers: encoded words
_MAX_LINE = 78


class _WirePolicy(Compat32):
    """compat32 (measured.md: ~6x cheaper than policy.default) with CRLF line ends.

    compat32 re-folds every header through ``email.header.Header``, which is most of the cost
    of a message; a header that is already ASCII, on one line and short enough is written
    as it is, and anything else still goes through the folding.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (isinstance(value, str) and value.isascii() and "\n" not in value
                and "\r" not in value and len(name) + len(value) + 2 <= _MAX_LINE):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_WIRE = _WirePolicy(linesep="\r\n", max_line_length=_MAX_LINE)


class ProbeKind(StrEnum):
    CONSULTATION = "consultation"  # 咨询
    COMPLAINT = "complaint"  # 投诉

    @property
    def channels(self) -> frozenset[ChannelKind]:
        """Channel kinds a letter of this kind may go to: a complaint fits a 监督 channel."""
        if self is ProbeKind.CONSULTATION:
            return frozenset({ChannelKind.CONSULTATION, ChannelKind.MAILBOX})
        return frozenset({ChannelKind.COMPLAINT, ChannelKind.SUPERVISION, ChannelKind.MAILBOX})


@dataclass(frozen=True, slots=True)
class ProbeTemplate:
    """One wording of one topic, as listed in ``index.toml``."""

    id: str
    kind: ProbeKind
    topic: str
    title: str
    variables: tuple[str, ...]
    source: Path

    @property
    def channels(self) -> frozenset[ChannelKind]:
        return self.kind.channels

    def allows(self, channel: ChannelKind) -> bool:
        return channel in self.kind.channels


@dataclass(frozen=True, slots=True)
class ComposedProbe:
    """A probe ready to send: ``raw`` is the message exactly as it goes over SMTP (CRLF)."""

    probe_id: str
    token: str
    message_id: str
    subject: str
    text: str
    reply_to: str | None
    raw: bytes


class TemplateSet:
    """The probe templates of a folder, compiled once and checked against their index."""

    def __init__(
        self, folder: Path, entries: Mapping[str, tuple[ProbeTemplate, jinja2.Template]]
    ) -> None:
        self.folder = folder
        self._entries = dict(entries)

    @classmethod
    def load(cls, folder: Path | None = None) -> TemplateSet:
        """Read ``index.toml`` in ``folder`` (default ``templates/probes``), compile each file."""
        folder = folder if folder is not None else templates_dir() / "probes"
        index = folder / "index.toml"
        try:
            data = tomllib.loads(index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("the probe template index is missing", source=index,
                              hint="create it with one [[template]] table per template") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", source=index) from None
        rows = data.get("template")
        if not isinstance(rows, list) or not rows:
            raise ConfigError("no templates listed", source=index, location="template",
                              expected="one or more [[template]] tables")
        env = _environment(folder)
        entries: dict[str, tuple[ProbeTemplate, jinja2.Template]] = {}
        for n, row in enumerate(rows, start=1):
            info = _template_info(row, folder, index, n)
            if info.id in entries:
                raise ConfigError(f"template id {info.id!r} is listed twice", source=index,
                                  location=f"template #{n}")
            entries[info.id] = (info, _compile(env, info))
        return cls(folder, entries)

    @property
    def templates(self) -> tuple[ProbeTemplate, ...]:
        return tuple(info for info, _ in self._entries.values())

    def get(self, template_id: str) -> ProbeTemplate:
        return self._entry(template_id)[0]

    def for_channel(self, channel: ChannelKind) -> tuple[ProbeTemplate, ...]:
        return tuple(info for info in self.templates if info.allows(channel))

    def check(
        self,
        template_id: str,
        variables: Mapping[str, object],
        *,
        channel: ChannelKind | None = None,
    ) -> None:
        """Raise ConfigError unless the template renders with ``variables`` (planning time)."""
        info, _ = self._entry(template_id)
        for name in info.variables:
            if name not in variables:
                raise ConfigError(
                    f"template {info.id!r} needs the variable {name!r}, which the probe "
                    "does not provide", source=info.source, location=f"variable {name!r}",
                    hint="add it to the persona's or the probe's details, or change the template")
        if channel is not None and not info.allows(channel):
            raise ConfigError(
                f"template {info.id!r} is a {info.kind.value} and cannot go to a "
                f"{channel.value} channel", source=info.source,
                expected=" or ".join(sorted(k.value for k in info.channels)), got=channel.value)
        self.render(template_id, variables)

    def render(self, template_id: str, variables: Mapping[str, object]) -> tuple[str, str]:
        """The subject (one line) and the body (ending in one newline) of a template."""
        info, template = self._entry(template_id)
        context = template.new_context(dict(variables))
        try:
            subject = "".join(template.blocks["subject"](context))
            body = "".join(template.blocks["body"](context))
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"template {info.id!r}: {exc.message}", source=info.source,
                              hint="TemplateSet.check at planning time catches this") from None
        return " ".join(subject.split()), _tidy_body(body)

    def _entry(self, template_id: str) -> tuple[ProbeTemplate, jinja2.Template]:
        try:
            return self._entries[template_id]
        except KeyError:
            close = difflib.get_close_matches(template_id, list(self._entries), n=3)
            raise ConfigError(
                f"no probe template {template_id!r}", source=self.folder / "index.toml",
                hint=f"did you mean {', '.join(close)}?" if close else
                f"known: {', '.join(sorted(self._entries))}") from None


def _environment(folder: Path) -> jinja2.Environment:
    # Plain-text mail: escaping would put &amp; into a citizen's letter. StrictUndefined makes a
    # missing detail an error instead of a silent gap in the text.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
        autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _template_info(row: Any, folder: Path, index: Path, n: int) -> ProbeTemplate:
    where = f"template #{n}"
    if not isinstance(row, dict):
        raise ConfigError("expected a table", source=index, location=where, got=row)
    for key in ("id", "kind", "topic", "title", "file"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ConfigError(f"missing or empty {key!r}", source=index, location=where,
                              expected="a non-empty string", got=row.get(key))
    where = f"template {row['id']!r}"
    try:
        kind = ProbeKind(row["kind"])
    except ValueError:
        raise ConfigError("unknown kind", source=index, location=f"{where}: kind",
                          expected="consultation or complaint", got=row["kind"]) from None
    variables = row.get("variables", [])
    if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
        raise ConfigError("variables must be a list of names", source=index,
                          location=f"{where}: variables", got=variables)
    return ProbeTemplate(id=row["id"], kind=kind, topic=row["topic"], title=row["title"],
                         variables=tuple(variables), source=folder / row["file"])


def _compile(env: jinja2.Environment, info: ProbeTemplate) -> jinja2.Template:
    try:
        source = info.source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"template {info.id!r}: file not found", source=info.source) from None
    try:
        used = jinja2.meta.find_undeclared_variables(env.parse(source))
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax: {exc.message}", source=info.source,
                          location=f"line {exc.lineno}") from None
    for block in _BLOCKS:
        if block not in template.blocks:
            raise ConfigError(f"no {{% block {block} %}}", source=info.source,
                              expected="a subject and a body block")
    declared = set(info.variables)
    if undeclared := sorted(used - declared):
        raise ConfigError(f"uses the variable {undeclared[0]!r}, which index.toml does not "
                          "declare", source=info.source, location=f"variable {undeclared[0]!r}",
                          hint=f"add it to the variables of {info.id!r} in index.toml")
    if unused := sorted(declared - used):
        raise ConfigError(f"index.toml declares {unused[0]!r}, which the template never uses",
                          source=info.source, location=f"variable {unused[0]!r}")
    for options in _PLACE_VARIABLES:
        if not declared.intersection(options):
            raise ConfigError("a probe template must name the place, to make each letter "
                              "unique", source=info.source, expected=" or ".join(options))
    return template


def _tidy_body(body: str) -> str:
    lines = [line.rstrip() for line in body.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def probe_variables(spec: ProbeSpec, persona: Persona, agency_display: str) -> dict[str, str]:
    """Everything a template may use; pass the same mapping to :meth:`TemplateSet.check`.

    The probe's own details win over the persona's, so that a persona detail named like a
    place can never make two letters alike.
    """
    variables = {"phone": masked_phone(persona.id)}  # one citizen, one number, every letter
    variables.update(persona.details)
    variables.update(spec.details)
    variables.update(agency=agency_display, name=persona.name, district=persona.district,
                     channel=spec.channel.kind.label)
    return variables


def render(
    spec: ProbeSpec, persona: Persona, agency_display: str, templates: TemplateSet,
    secret: bytes,
) -> tuple[str, str]:
    """Subject and text of a probe, with the body reference line when the persona uses one.

    Web-form channels use this text directly; e-mail channels go through :func:`compose`.
    """
    return _render(spec, persona, agency_display, templates, make_token(spec.probe_id, secret))


def _render(
    spec: ProbeSpec, persona: Persona, agency_display: str, templates: TemplateSet, token: str
) -> tuple[str, str]:
    subject, text = templates.render(spec.template,
                                     probe_variables(spec, persona, agency_display))
    if TrackingPlacement.BODY in persona.tracking:
        text += f"\n（编号 {token}）\n"
    return subject, text


def compose(
    spec: ProbeSpec,
    persona: Persona,
    account: Account,
    agency_display: str,
    templates: TemplateSet,
    secret: bytes,
    date: datetime,
) -> ComposedProbe:
    """The probe as a MIME message, with tracking only where the persona's config asks.

    The result depends only on the arguments, so a worker that died mid-send recomputes the
    very Message-ID it may already have sent and looks for it in the Sent folder.
    """
    recipient = _recipient(spec, persona, account, date)
    token = make_token(spec.probe_id, secret)
    subject, text = _render(spec, persona, agency_display, templates, token)
    domain = account.address.rpartition("@")[2]
    if TrackingPlacement.MESSAGE_ID in persona.tracking:
        mid = message_id(token, domain, _keyed(secret, "nonce", spec.probe_id, date)[:4].hex())
    else:
        # Looks like any mail client's; still stored, so a reply's In-Reply-To matches it.
        neutral = uuid.UUID(bytes=_keyed(secret, "mid", spec.probe_id, date)[:16], version=4)
        mid = f"<{neutral}@{domain}>"
    reply_to = None
    if TrackingPlacement.PLUS_ADDRESS in persona.tracking and account.plus_addressing:
        reply_to = plus_address(account.address, token)
    raw = _mime(persona.name, account.address, recipient, subject, text, date, mid, reply_to)
    return ComposedProbe(probe_id=spec.probe_id, token=token, message_id=mid, subject=subject,
                         text=text, reply_to=reply_to, raw=raw)


def _recipient(spec: ProbeSpec, persona: Persona, account: Account, date: datetime) -> str:
    """The channel's address, once the arguments are known to fit together."""
    if spec.channel.address is None:
        raise ConfigError(f"probe {spec.probe_id!r}: the {spec.channel.kind.value} channel of "
                          f"{spec.agency!r} is a web form, not an e-mail address",
                          hint="use compose.render for the text an operator submits")
    if persona.account != account.id:
        raise ConfigError(f"persona {persona.id!r} writes from account {persona.account!r}",
                          expected=persona.account, got=account.id)
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("the Date of a probe needs an aware datetime")
    return spec.channel.address


def _keyed(secret: bytes, purpose: str, probe_id: str, date: datetime) -> bytes:
    material = f"{purpose}\x1f{probe_id}\x1f{date.isoformat()}".encode()
    return hmac.new(secret, material, hashlib.sha256).digest()


def _mime(
    name: str, sender: str, recipient: str, subject: str, text: str, date: datetime, mid: str,
    reply_to: str | None,
) -> bytes:
    msg = Message(policy=compat32)
    msg["From"] = formataddr((name, sender), charset="utf-8")
    msg["To"] = recipient
    # An all-ASCII subject stays plain, as a mail client writes it.
    # header_name: so the first encoded word leaves room for "Subject: " within 78 columns.
    msg["Subject"] = (subject if subject.isascii()  # type: ignore[assignment]
                      else Header(subject, _UTF8, header_name="Subject"))
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = mid
    if reply_to is not None:
        msg["Reply-To"] = formataddr((name, reply_to), charset="utf-8")
    msg["MIME-Version"] = "1.0"
    # base64, not quoted-printable: Chinese in QP costs 9 bytes a character (=E4=BD=A0), in
    # base64 4; and base64 is what Foxmail, QQ and NetEase mail send for CJK text. Inside the
    # encoding, text keeps its canonical CRLF line ends (RFC 2045 6.8), as mail clients do.
    msg.set_payload(text.replace("\n", "\r\n"), _UTF8)
    return msg.as_bytes(policy=_WIRE)
