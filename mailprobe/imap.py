"""IMAP for the watcher: aioimaplib with its parser made linear, and a small client over it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aioimaplib import aioimaplib as _aio

from mailprobe.directory import Account, TlsMode
from mailprobe.directory_io import is_loopback_host
from mailprobe.errors import ConfigError, MailprobeError

__all__ = [
    "Batch",
    "FetchLimits",
    "Fetched",
    "ImapError",
    "ImapRefused",
    "ImapSession",
    "LinearFetchCommand",
    "LinearProtocol",
    "Selected",
    "connect",
    "parse_fetch",
    "parse_internaldate",
    "plan_batches",
    "quote_mailbox",
    "uid_set",
]

MiB = 1024 * 1024
_LINE_END = b"\r\n"


class ImapError(MailprobeError, ConnectionError):
    """The IMAP connection failed or broke; the watcher reconnects with backoff."""


class ImapRefused(ImapError):
    """The server answered NO or BAD (a missing folder, a refused login)."""


# --- the adapter: aioimaplib 2.0.3's response parsing made linear --------------------------------
#
# Measured on a 100,000-message Dovecot mailbox (docs/measured.md): header fetches took 28 s in
# batches of 1,000 and 119 s in batches of 5,000 (imaplib: 0.9 s), and one `1:*` fetch hung.
# 1. FetchCommand.wait_data rescans every line received so far on each new line: O(n^2) in
#    the responses of one FETCH.
# 2. IMAP4ClientProtocol._handle_responses recurses once per line and copies the rest of the
#    buffer each time: quadratic copying in the read size, and past ~500 responses in one read
#    a RecursionError that asyncio swallows, so the command never completes.
# Found while measuring the fixed version (20,000 messages of 3.4 KB): data_received formats
# every received chunk for a debug log line (``'%s' % data``, even with logging off), 1 ms per
# 256 KB read, a third of the fetch time; and every line re-armed a call_later timer.
# The overrides keep the library's behaviour line for line; only the bookkeeping changes.


class LinearFetchCommand(_aio.FetchCommand):  # type: ignore[misc]
    """A FETCH whose completeness check only looks at lines it has not seen yet.

    A response is complete when its parentheses balance, counted from the last line that
    starts a ``N FETCH (`` response (literals, kept as bytearrays, do not count). The
    library recomputes that over all lines each time; we keep the running depth.
    ``lines_scanned`` counts the work, so tests can check it is linear.
    """

    def __init__(self, tag: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(tag, *args, **kwargs)
        self.lines_scanned = 0
        self._depth = 0

    def wait_data(self) -> bool:
        lines = self._resp_lines
        start = self.lines_scanned
        for line in lines[start:] if start < len(lines) else ():
            if isinstance(line, bytes):  # bytearrays are literal data: their parentheses are text
                if self.FETCH_MESSAGE_DATA_RE.match(line):
                    self._depth = 0
                self._depth += line.count(b"(") - line.count(b")")
        self.lines_scanned = len(lines)
        return self._depth != 0

    # One timer per command instead of one per received line: the library cancels and
    # re-arms a call_later on every line, which dominates a large fetch once it is linear.
    def _set_timer(self) -> None:
        self._last_activity = self._loop.time()
        if self._timeout is not None:
            self._timer = self._loop.call_later(self._timeout, self._check_inactivity)

    def _reset_timer(self) -> None:
        self._last_activity = self._loop.time()

    def _check_inactivity(self) -> None:
        quiet = self._loop.time() - self._last_activity
        if quiet >= self._timeout:
            self._timeout_callback()
        else:
            self._timer = self._loop.call_later(self._timeout - quiet, self._check_inactivity)


class LinearProtocol(_aio.IMAP4ClientProtocol):  # type: ignore[misc]
    """The client protocol with a loop over offsets instead of one recursive call per line.

    Also fails every pending command (and wakes an IDLE waiter) when the connection is
    lost; the library leaves them waiting until their timeout, or forever for IDLE.
    """

    lost: BaseException | None = None
    incomplete_line: bytes
    current_command: Any

    def data_received(self, d: bytes) -> None:
        # The library's version, without formatting ``d`` for a debug line nobody reads.
        try:
            data = self.incomplete_line + d if self.incomplete_line else d
            self._handle_responses(data, self._handle_line, self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except _aio.IncompleteRead as incomplete_read:
            self.current_command = incomplete_read.cmd
            self.incomplete_line = incomplete_read.data

    def _handle_responses(self, data: bytes, line_handler: Callable[..., Any],
                          current_cmd: Any = None) -> None:
        view = memoryview(data)
        pos, end = 0, len(data)
        while True:
            if pos >= end:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise _aio.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                need = current_cmd._expected_size - len(current_cmd._resp_literal_data)
                current_cmd.append_literal_data(view[pos:pos + need])  # no copy of the rest
                pos = min(end, pos + need)
                if current_cmd.wait_literal_data():
                    raise _aio.IncompleteRead(current_cmd)
            eol = data.find(_LINE_END, pos)
            if eol < 0:
                raise _aio.IncompleteRead(current_cmd, data[pos:])
            line = data[pos:eol]
            pos = eol + 2
            cmd = line_handler(line, current_cmd)
            begin = _aio.literal_data_re.match(line) if line.endswith(b"}") else None
            if begin:
                if cmd is None:
                    cmd = _aio.Command("NIL", "unused")
                cmd.begin_literal_data(int(begin.group("size")))
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("the server closed the connection")
        error = ImapError("connection lost", got=str(self.lost))
        for cmd in (self.pending_sync_command, *self.pending_async_commands.values()):
            if cmd is not None and not cmd._event.is_set():
                cmd._exception = error
                cmd._timer.cancel()
                cmd._event.set()
        self.idle_queue.put_nowait(_LOST)
        super().connection_lost(exc)


_LOST: list[bytes] = [b"connection lost"]


class _Client(_aio.IMAP4):  # type: ignore[misc]
    """aioimaplib's client on our protocol (TLS when given a context)."""

    def create_client(self, host: str, port: int, loop: Any, conn_lost_cb: Any = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = LinearProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(local_loop.create_connection(
            lambda: self.protocol, host, port, ssl=ssl_context,
            server_hostname=host if ssl_context is not None else None))


# --- pure helpers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selected:
    """What SELECT says about a folder; ``uidnext`` is None when the server omits it."""

    folder: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message as fetched: ``raw`` is all of it, or only its start when ``truncated``."""

    uid: int
    internaldate: datetime  # aware, UTC
    size: int  # RFC822.SIZE: the whole message as the server holds it
    raw: bytes
    truncated: bool = False  # fetched partially because it was over the size limit


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds on every FETCH, so memory and each command's response stay bounded."""

    batch_count: int = 500  # messages per UID FETCH
    batch_bytes: int = 16 * MiB  # planned from RFC822.SIZE before fetching
    message_bytes: int = 32 * MiB  # larger messages: only their first message_bytes
    size_chunk: int = 5_000  # UIDs per size listing
    timeout: float = 60.0  # seconds without a byte from the server


@dataclass(frozen=True, slots=True)
class Batch:
    """UIDs for one FETCH; ``partial`` is the byte count to fetch of an oversized message."""

    uids: tuple[int, ...]
    partial: int | None = None


def plan_batches(sizes: Sequence[tuple[int, int]], limits: FetchLimits) -> list[Batch]:
    """Split (uid, size) pairs, in UID order, into batches bounded by count and bytes.

    Batches stay in UID order, so a watcher may record progress after each one. An
    oversized message is a batch of its own, fetched partially.
    """
    batches: list[Batch] = []
    uids: list[int] = []
    total = 0
    for uid, size in sorted(sizes):
        if uids and (len(uids) >= limits.batch_count or total + size > limits.batch_bytes
                     or size > limits.message_bytes):
            batches.append(Batch(tuple(uids)))
            uids, total = [], 0
        if size > limits.message_bytes:
            batches.append(Batch((uid,), limits.message_bytes))
            continue
        uids.append(uid)
        total += size
    if uids:
        batches.append(Batch(tuple(uids)))
    return batches


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set: ``1:3,7,9:10``."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def quote_mailbox(name: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    out: list[str] = []
    wide: list[str] = []

    def flush() -> None:
        if wide:
            data = base64.b64encode("".join(wide).encode("utf-16-be")).decode("ascii")
            out.append("&" + data.rstrip("=").replace("/", ",") + "-")
            wide.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            wide.append(ch)
    flush()
    return '"' + "".join(out).replace("\\", "\\\\").replace('"', '\\"') + '"'


_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
     b"Dec"), start=1)}
_INTERNALDATE = re.compile(
    rb'INTERNALDATE "\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([-+])(\d\d)(\d\d)"')
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_BODY_LITERAL = re.compile(rb"\bBODY\[\](?:<\d+>)? ?\{\d+\}$")
_FETCH_START = re.compile(rb"\d+ FETCH \(")


def parse_internaldate(meta: bytes) -> datetime | None:
    """The INTERNALDATE item of a FETCH response as an aware UTC instant (None if absent)."""
    m = _INTERNALDATE.search(meta)
    if m is None:
        return None
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    # The wall-clock time minus its offset, with one cached offset per zone: a tenth of a
    # first sync's FETCH handling went to building a timezone per message and converting.
    return datetime(int(year), _MONTHS[mon.capitalize()], int(day), int(hh), int(mm), int(ss),
                    tzinfo=UTC) - _offset(sign, oh, om)


@functools.lru_cache(maxsize=64)
def _offset(sign: bytes, hours: bytes, minutes: bytes) -> timedelta:
    return timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == b"-" else 1)


def _responses(lines: Sequence[bytes | bytearray]) -> Iterator[tuple[bytes, bytes | None]]:
    """(text outside literals, BODY[] literal) per ``N FETCH`` response of a command."""
    meta: list[bytes] = []
    body: bytes | None = None
    expect_body = False
    for line in lines[:-1]:  # the last line is the tagged completion text
        if isinstance(line, bytearray):
            if expect_body:
                body = bytes(line)
            expect_body = False
            continue
        if _FETCH_START.match(line):
            if meta:
                yield b" ".join(meta), body
            meta, body = [], None
        meta.append(line)
        expect_body = bool(_BODY_LITERAL.search(line))
    if meta:
        yield b" ".join(meta), body


def parse_fetch(lines: Sequence[bytes | bytearray], *, partial: bool = False) -> list[Fetched]:
    """Messages from a ``UID FETCH (UID INTERNALDATE RFC822.SIZE BODY.PEEK[])`` response.

    Responses without a body or a UID (unsolicited flag updates) are skipped. ``partial``:
    the command asked for ``BODY.PEEK[]<0.N>``, so a body shorter than its size was cut.
    """
    found: list[Fetched] = []
    for meta, body in _responses(lines):
        uid, size = _UID.search(meta), _SIZE.search(meta)
        if body is None or uid is None:
            continue
        when = parse_internaldate(meta) or datetime.fromtimestamp(0, UTC)
        whole = int(size.group(1)) if size else len(body)
        found.append(Fetched(int(uid.group(1)), when, whole, body,
                             partial and len(body) < whole))
    return found


def parse_sizes(lines: Sequence[bytes | bytearray]) -> list[tuple[int, int]]:
    """(uid, RFC822.SIZE) pairs from a ``UID FETCH (UID RFC822.SIZE)`` response."""
    pairs: list[tuple[int, int]] = []
    for meta, _ in _responses(lines):
        uid, size = _UID.search(meta), _SIZE.search(meta)
        if uid is not None and size is not None:
            pairs.append((int(uid.group(1)), int(size.group(1))))
    return sorted(pairs)


_SELECT_NUMBERS = {
    "uidvalidity": re.compile(rb"\[UIDVALIDITY (\d+)\]"),
    "uidnext": re.compile(rb"\[UIDNEXT (\d+)\]"),
    "exists": re.compile(rb"^(\d+) EXISTS"),
}


def _parse_select(folder: str, lines: Sequence[bytes]) -> Selected:
    found: dict[str, int] = {}
    for line in lines:
        for key, pattern in _SELECT_NUMBERS.items():
            m = pattern.search(line)
            if m:
                found[key] = int(m.group(1))
    if "uidvalidity" not in found:
        raise ImapError("SELECT did not say UIDVALIDITY", location=f"folder {folder}",
                        expected="[UIDVALIDITY n] (RFC 3501)")
    return Selected(folder, found["uidvalidity"], found.get("uidnext"), found.get("exists", 0))


# --- the client ----------------------------------------------------------------------------------

_NETWORK_ERRORS = (OSError, asyncio.TimeoutError, _aio.AioImapException, ssl.SSLError)


class ImapSession:
    """One logged-in IMAP connection of one account (see ``connect``).

    ``traffic`` counts commands by name and the bytes of fetched messages, so callers
    and tests can see what a sync cost.
    """

    def __init__(self, client: Any, account: Account, timeout: float) -> None:
        self._client = client
        self.account = account
        self.timeout = timeout
        self.traffic: Counter[str] = Counter()
        self.broken = False  # a command failed mid-way: the connection is not reused

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(c.upper() for c in self._client.protocol.capabilities)

    @property
    def has_idle(self) -> bool:
        return "IDLE" in self.capabilities

    def _error(self, message: str, got: object = None) -> ImapError:
        return ImapError(message, source=f"account {self.account.id}", got=got)

    def _check_alive(self) -> Any:
        protocol = self._client.protocol
        transport = protocol.transport
        if self.broken or protocol.lost is not None or transport is None \
                or transport.is_closing():
            raise self._error("connection lost", str(protocol.lost or "closed"))
        return protocol

    async def _run(self, what: str, run: Awaitable[Any], *, ok: bool = True,
                   limit: bool = True) -> Any:
        """Await one command; ``limit``: bound its total time (else only its inactivity)."""
        if what != "CONNECT":
            self._check_alive()
        self.traffic[what] += 1
        try:
            response = await (asyncio.wait_for(run, self.timeout) if limit else run)
        except ImapError:
            self.broken = True
            raise
        except _NETWORK_ERRORS as exc:
            self.broken = True
            raise self._error(f"{what} failed", f"{type(exc).__name__}: {exc}") from exc
        if ok and response.result != "OK":
            text = b" ".join(bytes(x) for x in response.lines[-1:]).decode("utf-8", "replace")
            raise ImapRefused(f"{what} refused", source=f"account {self.account.id}",
                              got=f"{response.result} {text}".strip())
        return response

    async def select(self, folder: str) -> Selected:
        response = await self._run("SELECT", self._client.select(quote_mailbox(folder)))
        return _parse_select(folder, [x for x in response.lines if isinstance(x, bytes)])

    async def _fetch(self, uids: str, items: str, timeout: float) -> Any:
        protocol = self._check_alive()
        command = LinearFetchCommand(protocol.new_tag(), uids, items, prefix="UID",
                                     loop=protocol.loop, timeout=timeout)
        return await self._run("FETCH", protocol.execute(command), limit=False)

    async def sizes(self, first: int, last: int | None) -> list[tuple[int, int]]:
        """(uid, size) of the messages with ``first <= uid <= last`` (``last=None``: all)."""
        response = await self._fetch(f"{first}:{'*' if last is None else last}",
                                     "(UID RFC822.SIZE)", self.timeout)
        return [(u, s) for u, s in parse_sizes(response.lines)
                if u >= first and (last is None or u <= last)]

    async def last_uid(self) -> int | None:
        """The highest UID in the selected folder (None when it is empty)."""
        response = await self._fetch("*", "(UID)", self.timeout)
        uids = [int(m.group(1)) for meta, _ in _responses(response.lines)
                if (m := _UID.search(meta))]
        return max(uids, default=None)

    async def fetch(self, batch: Batch) -> list[Fetched]:
        """The batch's messages (whole, or the first ``batch.partial`` bytes)."""
        body = "BODY.PEEK[]" if batch.partial is None else f"BODY.PEEK[]<0.{batch.partial}>"
        response = await self._fetch(uid_set(batch.uids), f"(UID INTERNALDATE RFC822.SIZE {body})",
                                     self.timeout)
        found = parse_fetch(response.lines, partial=batch.partial is not None)
        self.traffic["bytes"] += sum(len(f.raw) for f in found)
        return found

    async def idle(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        """IDLE up to ``seconds`` (or until ``stop``); True when the server pushed something."""
        protocol = self._check_alive()
        while not protocol.idle_queue.empty():
            protocol.idle_queue.get_nowait()
        self.traffic["IDLE"] += 1
        idle = asyncio.ensure_future(protocol.idle())
        ack = asyncio.ensure_future(protocol.wait_for_idle_response())
        push = asyncio.ensure_future(protocol.idle_queue.get())
        stopped = asyncio.ensure_future(stop.wait() if stop else asyncio.sleep(seconds))
        try:
            await asyncio.wait({idle, ack}, timeout=self.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not protocol.has_pending_idle_command():
                self.broken = True
                raise self._error("IDLE failed", _outcome(idle))
            await asyncio.wait({push, stopped}, timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            pushed = push.result() if push.done() else None
            if pushed is _LOST or protocol.lost is not None:
                self.broken = True
                raise self._error("connection lost during IDLE", str(protocol.lost))
            protocol.idle_done()
            await self._run("DONE", idle)
            return bool(pushed)
        finally:
            for task in (ack, idle, push, stopped):
                if not task.done():
                    task.cancel()

    async def noop(self) -> None:
        await self._run("NOOP", self._client.noop())

    async def close(self) -> None:
        """LOGOUT if the connection still works, then close it; never raises."""
        protocol = self._client.protocol
        if not self.broken and protocol.lost is None and protocol.transport is not None:
            with contextlib.suppress(Exception):  # the work is done; a failed goodbye is fine
                await asyncio.wait_for(self._client.logout(), min(self.timeout, 5.0))
        if protocol.transport is not None:
            protocol.transport.close()
        self.broken = True

    async def __aenter__(self) -> ImapSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _outcome(task: asyncio.Future[Any]) -> str:
    if not task.done():
        return "no answer"
    if task.exception() is not None:
        return str(task.exception())
    response = task.result()
    text = b" ".join(bytes(x) for x in response.lines).decode("utf-8", "replace")
    return f"{response.result} {text}"


async def connect(account: Account, password: str, *, timeout: float = 60.0,
                  ssl_context: ssl.SSLContext | None = None) -> ImapSession:
    """Connect, secure and log in; ImapError when the network or the server fails.

    TLS follows ``account.imap.tls``: implicit TLS, STARTTLS (required: a server that does
    not offer it is refused, never silently used in plain text), or none, which only a
    loopback server may use. Certificates and host names are verified (``ssl_context``
    overrides the system's trust store, e.g. for a test CA). The password is never logged.
    """
    ep = account.imap
    where = f"account {account.id}"
    if ep.tls is TlsMode.NONE and not is_loopback_host(ep.host):
        raise ConfigError("plain-text IMAP is only allowed to a loopback server", source=where,
                          location="imap.tls", expected='"tls" or "starttls"', got=ep.host)
    # Loading the system's trust store costs ~35 ms: only when TLS is used.
    client = _Client(ep.host, ep.port, timeout=timeout,
                     ssl_context=(ssl_context or ssl.create_default_context())
                     if ep.tls is TlsMode.TLS else None)
    session = ImapSession(client, account, timeout)
    try:
        await session._run("CONNECT", client.wait_hello_from_server(), ok=False)
        if ep.tls is TlsMode.STARTTLS:
            await _starttls(session, client, ep.host,
                            ssl_context or ssl.create_default_context())
        response = await session._run("LOGIN", client.login(account.user, password), ok=False)
        if response.result != "OK":
            raise ImapRefused(f"login refused for {account.user}", source=where,
                              got=response.result)
        await session._run("CAPABILITY", client.protocol.capability(), ok=False)
    except BaseException:
        await session.close()
        raise
    return session


async def _starttls(session: ImapSession, client: Any, host: str,
                    context: ssl.SSLContext) -> None:
    protocol = client.protocol
    if "STARTTLS" not in session.capabilities:
        raise ImapError("the server does not offer STARTTLS",
                        source=f"account {session.account.id}",
                        expected="STARTTLS in CAPABILITY (the account requires it)",
                        hint='use tls = "tls" if the server has implicit TLS (port 993)')
    await session._run("STARTTLS", protocol.execute(
        _aio.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)))
    loop = asyncio.get_running_loop()
    try:
        protocol.transport = await asyncio.wait_for(loop.start_tls(
            protocol.transport, protocol, context, server_hostname=host), session.timeout)
    except _NETWORK_ERRORS as exc:
        raise ImapError("TLS handshake failed", source=f"account {session.account.id}",
                        got=f"{type(exc).__name__}: {exc}") from exc
    # RFC 3501 6.2.1: what the server said before TLS must be forgotten.
    await session._run("CAPABILITY", protocol.capability(), ok=False)
