"""Sending due probes exactly once over SMTP, and their copies to the Sent folder (edge)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import ssl
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

import aioimaplib
import aiosmtplib
from sqlalchemy import exists, insert, select

from mailprobe.campaign import SendWindow, load_windows
from mailprobe.clock import Clock
from mailprobe.directory import Account, TlsMode
from mailprobe.directory_io import is_loopback_host, resolve_password
from mailprobe.errors import ConfigError, MailprobeError
from mailprobe.imap import quote_mailbox
from mailprobe.models import (
    Accepted,
    AccountRow,
    ClaimedProbe,
    PersonaRow,
    ProbeEventRow,
    ProbeRow,
    account_from_row,
)
from mailprobe.store import StateError, Store

__all__ = [
    "Resolution",
    "SendPolicy",
    "SentFolderError",
    "TickReport",
    "load_passwords",
    "resolve_uncertain_by_sent_folder",
    "save_sent_copies",
    "send_due",
]

log = logging.getLogger(__name__)

SENT_COPY = "sent-copy"  # the probe_events kind that records a copy in the Sent folder
_RESOLVER = "sent-folder search"
_IMAP_ERRORS = (OSError, asyncio.TimeoutError, aioimaplib.AioImapException)


@dataclass(frozen=True)
class SendPolicy:
    """How a worker sends: batch sizes, concurrency, time-outs and the retry back-off."""

    batch: int = 200  # probes claimed per query
    chunk: int = 10  # probes marked sending per commit: what a crash can leave uncertain
    lease: timedelta = timedelta(minutes=5)
    concurrency: int = 4  # accounts sending at the same time
    timeout: float = 30.0  # seconds for any one SMTP or IMAP command
    retry_base: timedelta = timedelta(minutes=5)
    retry_cap: timedelta = timedelta(hours=2)
    retry_jitter: float = 0.2  # the delay is scaled by a random factor in 1 ± this
    record_every: int = 50  # acceptances per commit ...
    record_seconds: float = 0.2  # ... or after this long, whichever comes first
    max_batches: int = 100  # batches per tick, so a tick always ends
    sent_copies: bool = True
    tls_context: ssl.SSLContext | None = None  # None: the system's CAs, verification on
    seed: int | None = None  # for the jitter (tests)


@dataclass(frozen=True)
class TickReport:
    """What one tick did; ``released``: cleared by nobody (paused, disarmed, lease lost)."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    uncertain: int = 0
    held: int = 0  # outside the round's office hours: moved to its next office time
    released: int = 0
    connections: int = 0
    copies: int = 0  # copies saved to Sent folders
    received: int = 0  # new messages stored from the watched mailboxes
    processed: int = 0  # stored messages classified and matched

    def __str__(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))

    @property
    def busy(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Resolution:
    """Uncertain probes of one account: settled as sent, or left for an operator."""

    account: str
    found: tuple[str, ...]
    missing: tuple[str, ...]


# --- passwords ---------------------------------------------------------------------------------


def load_passwords(accounts: Iterable[Account], env: Mapping[str, str] | None = None
                   ) -> dict[str, str]:
    """Every account's password, once at start-up; all missing ones in one error line."""
    found: dict[str, str] = {}
    missing: list[Account] = []
    for account in accounts:
        try:
            found[account.id] = resolve_password(account, env)
        except ConfigError:
            missing.append(account)
    if missing:
        ways = [f"${a.password_env}" if a.password_env else f"keyring {a.keyring_service}"
                for a in missing]
        raise ConfigError(f"no password for account {', '.join(a.id for a in missing)}",
                          expected="a password for every account before anything is sent",
                          hint=f"set {', '.join(ways)}")
    return found


# --- one SMTP transaction ----------------------------------------------------------------------


class Fate(StrEnum):
    ACCEPTED = "accepted"
    FAILED = "failed"  # a permanent (5xx) answer: the channel is not usable
    RETRY = "retry"  # a temporary answer, or the connection failed before DATA
    UNCERTAIN = "uncertain"  # the connection failed after DATA was sent


@dataclass(frozen=True)
class _Result:
    fate: Fate
    code: int | None
    text: str
    stop_account: bool = False  # the connection is gone, or the server refuses our sender

    @property
    def reason(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


def _answered(stage: str, code: int, text: str) -> _Result:
    """The server answered: 5xx at RCPT or DATA is final; anything else is temporary.

    A 5xx to MAIL FROM comes before the recipient is named: it refuses our account
    (authentication, sending limits, a sender it does not own), not the agency's channel,
    so the account stops for this tick and its probes are retried.
    """
    if stage == "MAIL FROM" and 500 <= code < 600:
        return _Result(Fate.RETRY, code, f"[{stage}] {text}", stop_account=True)
    fate = Fate.FAILED if 500 <= code < 600 else Fate.RETRY
    return _Result(fate, code, f"[{stage}] {text}")


def _lost(stage: str, exc: BaseException) -> _Result:
    why = f"[{stage}] connection lost: {type(exc).__name__}: {exc}"
    if stage == "DATA":  # the server may hold the message: never resend on our own
        return _Result(Fate.UNCERTAIN, None, f"{why} (the server may have accepted it)", True)
    return _Result(Fate.RETRY, None, why, True)


async def _transact(smtp: aiosmtplib.SMTP, probe: ClaimedProbe) -> _Result:
    """MAIL, RCPT and DATA one by one, so a failure says where it happened."""
    stage = "MAIL FROM"
    try:
        await smtp.mail(probe.from_address)
        stage = "RCPT TO"
        await smtp.rcpt(probe.to_address)
        stage = "DATA"
        answer = await smtp.data(probe.raw)
    except aiosmtplib.SMTPResponseException as exc:
        await _reset(smtp)
        return _answered(stage, exc.code, exc.message)
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        return _lost(stage, exc)
    return _Result(Fate.ACCEPTED, answer.code, answer.message)


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    # A refused transaction stays open at the server; RSET ends it before the next MAIL.
    if smtp.is_connected:
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()


@cache
def _local_name() -> str:
    return socket.getfqdn() or "localhost"


def _check_plaintext(account: Account, host: str, what: str) -> None:
    if not is_loopback_host(host):
        raise ConfigError(f"plain-text {what} is allowed only to a loopback server",
                          source=f"account {account.id}", location=f"{what.lower()}.tls",
                          expected='"tls" or "starttls"', got="none")


async def _connect(account: Account, password: str, policy: SendPolicy) -> aiosmtplib.SMTP:
    """One authenticated connection; TLS as configured, never a silent downgrade."""
    ep = account.smtp
    if ep.tls is TlsMode.NONE:
        _check_plaintext(account, ep.host, "SMTP")
    local = await asyncio.to_thread(_local_name)
    smtp = aiosmtplib.SMTP(hostname=ep.host, port=ep.port, use_tls=ep.tls is TlsMode.TLS,
                           start_tls=ep.tls is TlsMode.STARTTLS, validate_certs=True,
                           tls_context=policy.tls_context, timeout=policy.timeout,
                           local_hostname=local)
    await smtp.connect()
    if smtp.is_ehlo_or_helo_needed:  # STARTTLS leaves it needed; plain connects never sent it
        await smtp.ehlo()
    if smtp.supports_extension("auth"):
        await smtp.login(account.user, password)
    elif not is_loopback_host(ep.host):
        smtp.close()
        raise aiosmtplib.SMTPException("the server offers no AUTH: refusing to send")
    return smtp


# --- recording acceptances ---------------------------------------------------------------------


class _Recorder:
    """Acceptances committed in small groups: one synchronous=FULL commit per group."""

    def __init__(self, store: Store, policy: SendPolicy) -> None:
        self._store, self._every, self._seconds = store, policy.record_every, policy.record_seconds
        self._pending: list[Accepted] = []
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, accepted: Accepted) -> None:
        self._pending.append(accepted)
        if len(self._pending) >= self._every:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._store.mark_sent_many, group)
            except StateError as exc:  # the others of the group are recorded all the same
                log.warning("an acceptance could not be recorded: %s", exc)

    async def close(self) -> None:
        self._start()
        if self._task is not None:
            await self._task


# --- one tick of sending -----------------------------------------------------------------------


class _Sender:
    """One tick: a connection per account reused across batches, the recorder, the tally."""

    def __init__(self, store: Store, clock: Clock, worker_id: str,
                 passwords: Mapping[str, str], policy: SendPolicy) -> None:
        self.store, self.clock, self.worker_id = store, clock, worker_id
        self.passwords, self.policy = passwords, policy
        self.tally: Counter[str] = Counter()
        self._accounts: dict[str, Account] = {}
        self._windows: dict[str, SendWindow] = {}
        self._smtp: dict[str, aiosmtplib.SMTP] = {}
        self._down: dict[str, str] = {}  # account -> why it cannot send for the rest of the tick
        self._sem = asyncio.Semaphore(policy.concurrency)
        self._recorder = _Recorder(store, policy)
        self._rng = random.Random(policy.seed)

    async def send_batch(self, batch: Sequence[ClaimedProbe]) -> None:
        self.tally["claimed"] += len(batch)
        await self._load(batch)
        now = self.clock.now()
        groups: dict[str, list[ClaimedProbe]] = defaultdict(list)
        for probe in batch:
            when = self._windows[probe.round].next_send(now)
            if when == now:
                groups[probe.account].append(probe)
            else:
                await self._hold(probe, when)
        # Every account finishes (and settles what it handed over) before an error surfaces.
        results = await asyncio.gather(*(self._send_account(a, ps) for a, ps in groups.items()),
                                       return_exceptions=True)
        for failure in results:
            if isinstance(failure, BaseException):
                raise failure

    async def _load(self, batch: Sequence[ClaimedProbe]) -> None:
        if not self._accounts:
            self._accounts = await asyncio.to_thread(_accounts, self.store)
        rounds = {p.round for p in batch} - set(self._windows)
        if rounds:
            self._windows.update(await asyncio.to_thread(load_windows, self.store, rounds))

    async def _send_account(self, account_id: str, probes: list[ClaimedProbe]) -> None:
        async with self._sem:
            smtp = await self._connection(account_id)
            rest = list(probes)
            while rest and smtp is not None:
                chunk, rest = rest[:self.policy.chunk], rest[self.policy.chunk:]
                ids = [p.probe_id for p in chunk]
                cleared = set(await asyncio.to_thread(
                    self.store.mark_sending_many, ids, self.worker_id, at=self.clock.now(),
                    lease=self.policy.lease))
                self.tally["released"] += len(chunk) - len(cleared)
                go = [p for p in chunk if p.probe_id in cleared]
                for i, probe in enumerate(go):
                    result = await _transact(smtp, probe)
                    await self._settle(probe, result)
                    if result.stop_account or not smtp.is_connected:
                        log.warning("account %s: %s; its other probes are retried later",
                                    account_id, result.reason)
                        self._give_up(account_id, result.reason)
                        rest = go[i + 1:] + rest
                        smtp = None
                        break
            for probe in rest:  # marked sending or only claimed: never handed to the server
                await self._retry(probe, None, f"not attempted: {self._down[account_id]}")

    async def _connection(self, account_id: str) -> aiosmtplib.SMTP | None:
        if account_id in self._down:
            return None
        smtp = self._smtp.get(account_id)
        if smtp is not None and smtp.is_connected:
            return smtp
        account = self._accounts[account_id]
        try:
            smtp = await _connect(account, self.passwords[account_id], self.policy)
        except (aiosmtplib.SMTPException, OSError, ConfigError, KeyError) as exc:
            why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else (
                "no password loaded for the account")
            log.error("account %s: cannot send through %s:%s: %s", account_id,
                      account.smtp.host, account.smtp.port, why)
            self._give_up(account_id, f"connection to {account.smtp.host} failed: {why}")
            return None
        self.tally["connections"] += 1
        self._smtp[account_id] = smtp
        return smtp

    def _give_up(self, account_id: str, why: str) -> None:
        self._down[account_id] = why
        smtp = self._smtp.pop(account_id, None)
        if smtp is not None:
            smtp.close()

    async def _settle(self, probe: ClaimedProbe, result: _Result) -> None:
        if result.fate is Fate.ACCEPTED:
            assert result.code is not None
            self._recorder.add(Accepted(probe.probe_id, self.clock.now(), result.code,
                                        result.text))
            self.tally["sent"] += 1
        elif result.fate is Fate.FAILED:
            await self._call(self.store.mark_failed, probe.probe_id, result.code, result.text)
            self.tally["failed"] += 1
        elif result.fate is Fate.UNCERTAIN:
            await self._call(self.store.mark_uncertain, probe.probe_id, result.reason)
            self.tally["uncertain"] += 1
        else:
            await self._retry(probe, result.code, result.reason)

    async def _retry(self, probe: ClaimedProbe, code: int | None, reason: str) -> None:
        """Back off exponentially with jitter; past the round's window the probe has failed."""
        p = self.policy
        delay = min(p.retry_base * 2 ** min(probe.attempts, 16), p.retry_cap)
        delay *= self._rng.uniform(1 - p.retry_jitter, 1 + p.retry_jitter)
        when = self._windows[probe.round].next_send(self.clock.now() + delay)
        if when is None:
            await self._call(self.store.mark_failed, probe.probe_id, code,
                             f"gave up: no office time left before the round closes ({reason})")
            self.tally["failed"] += 1
            return
        await self._call(self.store.reschedule, probe.probe_id, when, reason)
        self.tally["retried"] += 1

    async def _hold(self, probe: ClaimedProbe, when: datetime | None) -> None:
        if when is None:
            await self._call(self.store.mark_failed, probe.probe_id, None,
                             "not sent: the round closed before it could go out")
            self.tally["failed"] += 1
            return
        await self._call(self.store.reschedule, probe.probe_id, when,
                         "outside the round's office hours: held")
        self.tally["held"] += 1

    async def _call(self, method: Any, *args: Any) -> None:
        try:
            await asyncio.to_thread(method, *args)
        except StateError as exc:  # e.g. its lease expired and another worker settled it
            log.warning("%s", exc)

    async def close(self) -> None:
        await self._recorder.close()
        for smtp in self._smtp.values():
            try:
                await smtp.quit(timeout=self.policy.timeout)
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        self._smtp.clear()

    def report(self) -> TickReport:
        return TickReport(**{f.name: self.tally[f.name] for f in fields(TickReport)})


def _accounts(store: Store) -> dict[str, Account]:
    with store.session(write=False) as s:  # the accounts only: the directory is far larger
        return {row.id: account_from_row(row) for row in s.scalars(select(AccountRow))}


async def send_due(store: Store, clock: Clock, worker_id: str, passwords: Mapping[str, str],
                   *, policy: SendPolicy | None = None) -> TickReport:
    """Claim what is due and send it, batch after batch, until nothing is due.

    Per account one connection, reused while there is work; accounts in parallel up to
    ``policy.concurrency``. Each chunk of an account's probes is marked sending (one
    commit) right before its first MAIL FROM, so a crash leaves evidence, never a resend.
    """
    policy = policy or SendPolicy()
    sender = _Sender(store, clock, worker_id, passwords, policy)
    try:
        for _ in range(policy.max_batches):
            # Claims are not fetched ahead: SQLite has one writer, and overlapping commits
            # only wait on each other (measured: slower, not faster).
            batch = await asyncio.to_thread(store.claim_due, clock.now(), worker_id,
                                            policy.batch, policy.lease)
            if batch:
                await sender.send_batch(batch)
            if len(batch) < policy.batch:
                break  # all that was due: spare a query (and a commit) per tick
    finally:
        await sender.close()
    return sender.report()


# --- the Sent folder (IMAP) ----------------------------------------------------------------------


class _ImapRefused(Exception):
    """The IMAP server answered NO or BAD."""


class SentFolderError(MailprobeError, RuntimeError):
    """The Sent folder could not be searched (the server is down, the login refused)."""


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        lines = b" ".join(response.lines).decode("utf-8", "replace")
        raise _ImapRefused(f"{what}: {response.result} {lines}".strip())
    return response


async def _imap(account: Account, password: str, policy: SendPolicy) -> aioimaplib.IMAP4:
    ep = account.imap
    if ep.tls is TlsMode.STARTTLS:
        raise ConfigError("aioimaplib cannot do STARTTLS", source=f"account {account.id}",
                          location="imap.tls", expected='"tls" (port 993)', got="starttls")
    if ep.tls is TlsMode.NONE:
        _check_plaintext(account, ep.host, "IMAP")
        client = aioimaplib.IMAP4(host=ep.host, port=ep.port, timeout=policy.timeout)
    else:
        context = policy.tls_context or ssl.create_default_context()
        client = aioimaplib.IMAP4_SSL(host=ep.host, port=ep.port, timeout=policy.timeout,
                                      ssl_context=context)
    try:
        await client.wait_hello_from_server()
        _ok(await client.login(account.user, password), f"LOGIN {account.user}")
    except BaseException:
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:  # no LOGOUT after a refused LOGIN: just hang up
            transport.close()
        raise
    return client


async def _logout(client: aioimaplib.IMAP4) -> None:
    with contextlib.suppress(*_IMAP_ERRORS):  # the work is done; a failed goodbye changes nothing
        await client.logout()


_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')


async def _find(client: aioimaplib.IMAP4, message_id: str) -> datetime | None:
    """The INTERNALDATE of the message with this Message-ID in the selected folder, if any."""
    quoted = '"' + message_id.replace("\\", "\\\\").replace('"', '\\"') + '"'
    found = _ok(await client.uid_search("HEADER", "Message-ID", quoted, charset=None),
                "SEARCH")
    uids = found.lines[0].split() if found.lines else []
    if not uids or not uids[0].isdigit():
        return None
    fetched = _ok(await client.uid("fetch", uids[0].decode(), "(INTERNALDATE)"), "FETCH")
    for line in fetched.lines:
        if isinstance(line, bytes) and (m := _INTERNALDATE.search(line)):
            return datetime.strptime(m.group(1).decode(), "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)
    return None


_Copy = tuple[str, str, bytes, datetime]  # probe id, Message-ID, message, accepted at


def _missing_copies(store: Store, limit: int) -> dict[str, list[_Copy]]:
    """Accepted probes without a Sent copy, per account, at most ``limit`` per account.

    Per account, so that one account whose IMAP keeps failing never starves the others.
    """
    copied = exists().where(ProbeEventRow.probe_id == ProbeRow.probe_id,
                            ProbeEventRow.kind == SENT_COPY)
    missing = (ProbeRow.accepted_at.is_not(None), ProbeRow.raw.is_not(None),
               ProbeRow.message_id.is_not(None), ~copied)
    todo: dict[str, list[_Copy]] = {}
    with store.session(write=False) as s:
        accounts = s.scalars(select(PersonaRow.account_id).distinct()
                             .join(ProbeRow, ProbeRow.persona_id == PersonaRow.id)
                             .where(*missing)).all()
        for account in accounts:
            rows = s.execute(
                select(ProbeRow.probe_id, ProbeRow.message_id, ProbeRow.raw, ProbeRow.accepted_at)
                .join(PersonaRow, PersonaRow.id == ProbeRow.persona_id)
                .where(PersonaRow.account_id == account, *missing)
                .order_by(ProbeRow.accepted_at).limit(limit)).all()
            todo[account] = [(p, m or "", r or b"", at) for p, m, r, at in rows if at]
    return todo


def _record_copies(store: Store, at: datetime, done: Sequence[tuple[str, str]]) -> None:
    if done:
        with store.session() as s:
            s.execute(insert(ProbeEventRow), [{"probe_id": p, "at": at, "kind": SENT_COPY,
                                               "detail": d} for p, d in done])


async def save_sent_copies(store: Store, clock: Clock, passwords: Mapping[str, str], *,
                           policy: SendPolicy | None = None, limit: int = 200) -> int:
    """Append every accepted probe not yet copied to its persona's Sent folder.

    A separate step that never touches a probe's state: a failure is logged and retried on
    the next call. A copy already there (saved by the provider, or by an attempt whose
    record was lost) is found by its Message-ID and not appended twice.
    """
    policy = policy or SendPolicy()
    todo = await asyncio.to_thread(_missing_copies, store, limit)
    if not todo:
        return 0
    accounts = await asyncio.to_thread(_accounts, store)
    saved = 0
    for account_id, items in todo.items():
        done: list[tuple[str, str]] = []
        try:
            await _copy_account(accounts[account_id], passwords.get(account_id, ""), items,
                                done, policy)
        except (*_IMAP_ERRORS, _ImapRefused, ConfigError) as exc:
            log.warning("account %s: Sent copies not saved yet (%s: %s); retried next tick",
                        account_id, type(exc).__name__, exc)
        finally:
            await asyncio.to_thread(_record_copies, store, clock.now(), done)
            saved += len(done)
    return saved


async def _copy_account(account: Account, password: str, items: Sequence[_Copy],
                        done: list[tuple[str, str]], policy: SendPolicy) -> None:
    folder = quote_mailbox(account.sent_folder)
    client = await _imap(account, password, policy)
    try:
        _ok(await client.select(folder), f"SELECT {folder}")
        for probe_id, message_id, raw, accepted_at in items:
            if await _find(client, message_id) is not None:
                done.append((probe_id, f"already in {account.sent_folder}"))
                continue
            _ok(await client.append(raw, mailbox=folder, flags=r"(\Seen)", date=accepted_at),
                f"APPEND {folder}")
            done.append((probe_id, f"appended to {account.sent_folder}, INTERNALDATE "
                                   f"{accepted_at.isoformat()}"))
    finally:
        await _logout(client)


async def resolve_uncertain_by_sent_folder(
    store: Store, account: Account, passwords: Mapping[str, str], *,
    policy: SendPolicy | None = None,
) -> Resolution:
    """Settle the account's uncertain probes whose Message-ID is in its Sent folder.

    Found: sent, with the copy's INTERNALDATE as the accepted time. Not found: left uncertain
    for an operator (``mailprobe probes resolve``), never resent on our own.
    """
    policy = policy or SendPolicy()
    probes = [p for p in await asyncio.to_thread(store.list_uncertain)
              if p.account == account.id]
    if not probes:
        return Resolution(account.id, (), ())
    found: list[str] = []
    try:
        await _search_sent(store, account, passwords.get(account.id, ""), probes, found, policy)
    except (*_IMAP_ERRORS, _ImapRefused) as exc:
        raise SentFolderError(f"cannot search the Sent folder: {type(exc).__name__}: {exc}",
                              source=f"account {account.id}",
                              hint="the probes stay uncertain; try again later") from None
    missing = tuple(p.probe_id for p in probes if p.probe_id not in found)
    return Resolution(account.id, tuple(found), missing)


async def _search_sent(store: Store, account: Account, password: str,
                       probes: Sequence[ClaimedProbe], found: list[str],
                       policy: SendPolicy) -> None:
    folder = quote_mailbox(account.sent_folder)
    client = await _imap(account, password, policy)
    try:
        _ok(await client.select(folder), f"SELECT {folder}")
        for probe in probes:
            when = await _find(client, probe.message_id)
            if when is None:
                continue
            await asyncio.to_thread(store.resolve_uncertain, probe.probe_id, True, _RESOLVER,
                                    accepted_at=when)
            # The copy is there already: the copy step must not append a second one.
            await asyncio.to_thread(_record_copies, store, store.clock.now(),
                                    [(probe.probe_id, f"found in {account.sent_folder}")])
            found.append(probe.probe_id)
    finally:
        await _logout(client)
