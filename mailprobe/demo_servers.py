"""The demo's mail servers: aiosmtpd (SMTP) and pymap (IMAP) on loopback ephemeral ports.

Both run in one background thread with its own event loop, so the demo needs no root, no
Dovecot and no configuration. pymap serves its in-memory ``dict`` backend: the users are
added with the generated passwords before it listens (hashed with few rounds: they live
only as long as the demo), and every mailbox starts with INBOX, Sent and Junk. Mail for the
personas is delivered the way a test harness would, by IMAP APPEND with the receive time as
INTERNALDATE, which is what the working-day count reads.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import socket
import threading
import warnings
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from proxyprotocol.reader import ProxyProtocolReader
from pymap.backend.dict import Config, DictBackend, Login
from pymap.imap import IMAPServer
from pymap.user import Passwords, UserMetadata
from pysasl import SASLAuth
from pysasl.hashing import BuiltinHash

from mailprobe.clock import Clock
from mailprobe.errors import MailprobeError

__all__ = ["DemoServerError", "DemoServers", "Received", "append_messages"]

HOST = "127.0.0.1"
FOLDERS = ("Sent", "Junk")  # INBOX exists already
_START_TIMEOUT = 30.0
# Loggers of the servers: a line per connection otherwise.
_NOISY = ("mail.log", "pymap", "proxyprotocol", "pysasl")


class DemoServerError(MailprobeError, RuntimeError):
    """A demo mail server did not start, or refused what the demo asked of it."""


@dataclass(frozen=True)
class Received:
    """One message the SMTP server accepted, with the (simulated) instant it did."""

    at: datetime
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


Refuse = Callable[[str], str | None]  # recipient -> an SMTP answer refusing it, or None


class _Config(Config):
    """pymap's in-memory backend settings, with the SASL mechanisms looked up once.

    pysasl finds them by scanning every installed package's entry points, about 25 ms, and
    pymap asks twice on every connection: that alone would cost the demo a minute.
    """

    @cached_property
    def tls_auth(self) -> SASLAuth:
        return SASLAuth.defaults()


class _Handler:
    """aiosmtpd hooks: refuse some recipients at RCPT, hand accepted messages on."""

    def __init__(self, clock: Clock, refuse: Refuse) -> None:
        self.clock, self.refuse = clock, refuse
        self.lock = threading.Lock()
        self.received: list[Received] = []

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        answer = self.refuse(address)
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        item = Received(self.clock.now(), str(envelope.mail_from), tuple(envelope.rcpt_tos),
                        bytes(envelope.original_content or b""))
        with self.lock:
            self.received.append(item)
        return "250 2.0.0 Ok: queued"

    def take(self) -> list[Received]:
        with self.lock:
            items, self.received = self.received, []
        return items


class DemoServers:
    """SMTP and IMAP for the demo's personas, on 127.0.0.1 only; ``start`` then ``stop``.

    ``users`` maps each login to its password; the SMTP server asks for the same ones.
    ``refuse`` decides per recipient whether RCPT is refused (a dead channel).
    """

    def __init__(self, users: Mapping[str, str], clock: Clock, refuse: Refuse) -> None:
        self.users = dict(users)
        self.handler = _Handler(clock, refuse)
        self.smtp_port = 0
        self.imap_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-mail",
                                        daemon=True)
        self._stack: AsyncExitStack | None = None
        self._servers: list[asyncio.base_events.Server] = []

    def __enter__(self) -> DemoServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(timeout=_START_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            self.stop()
            raise DemoServerError(f"the demo mail servers did not start: {exc}",
                                  hint="is the loopback interface (127.0.0.1) up?") from exc
        self.append(self._folder_setup())

    async def _start(self) -> None:
        smtp = await self._loop.create_server(self._smtp, HOST, 0)
        self._servers.append(smtp)
        self.smtp_port = int(smtp.sockets[0].getsockname()[1])
        imap = await self._start_imap()
        self._servers.append(imap)
        self.imap_port = int(imap.sockets[0].getsockname()[1])

    def _smtp(self) -> SMTP:
        users = self.users

        def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and users.get(
                auth_data.login.decode()) == auth_data.password.decode()
            return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535

        with warnings.catch_warnings():  # AUTH without TLS: on loopback, as intended
            warnings.simplefilter("ignore", UserWarning)
            return SMTP(self.handler, hostname="mx.minyi.test", ident="demo ESMTP",
                        authenticator=check, auth_require_tls=False, auth_required=True)

    async def _start_imap(self) -> asyncio.base_events.Server:
        """pymap's dict backend, its users added here, served on an ephemeral port.

        What ``pymap --no-tls dict`` does, minus the command line: the port is chosen by
        the system (port 0) and read back, and the users are not limited to one demo user.
        """
        args = Namespace(debug=False, host=[HOST], port=0, cert=None, key=None, tls=False,
                         passlib_cfg=None, demo_data=False, demo_user="", demo_password=None,
                         inherited_sockets=None, proxy_protocol=None)
        config = _Config.from_args(
            args, invalid_user_sleep=0.0, reject_dnsbl=False,
            hash_context=BuiltinHash(rounds=1000))  # the default 500,000 costs 0.4 s a login
        config.apply_context()  # pymap's context variables, inherited by each connection
        backend = DictBackend(Login(config), config)
        passwords = Passwords(config)
        for user, password in self.users.items():
            hashed = await passwords.hash_password(password)
            backend.login.users_dict[user] = UserMetadata(config, user, password=hashed)
        self._stack = AsyncExitStack()
        await backend.start(self._stack)
        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(
            IMAPServer(backend.login, config))
        return await asyncio.start_server(callback, HOST, 0)

    def _folder_setup(self) -> list[tuple[str, str, bytes | None, datetime | None]]:
        return [(user, folder, None, None) for user in self.users for folder in FOLDERS]

    def received(self) -> list[Received]:
        """The messages accepted since the last call."""
        return self.handler.take()

    def append(self, items: Iterable[tuple[str, str, bytes | None, datetime | None]]) -> int:
        """IMAP APPEND each (user, folder, message, receive time); a None message: CREATE."""
        return append_messages(HOST, self.imap_port, self.users, items)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        with suppress(Exception):
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        if self._stack is not None:
            await self._stack.aclose()
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for task in tasks:  # the connections still open (clients that did not log out)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def append_messages(host: str, port: int, passwords: Mapping[str, str],
                    items: Iterable[tuple[str, str, bytes | None, datetime | None]]) -> int:
    """Deliver messages by IMAP APPEND, one connection per user; returns how many.

    Each item is (user, folder, raw message, receive time): the time becomes the message's
    INTERNALDATE, with its UTC offset as given. A None message creates the folder instead.
    """
    by_user: dict[str, list[tuple[str, bytes | None, datetime | None]]] = {}
    for user, folder, raw, when in items:
        by_user.setdefault(user, []).append((folder, raw, when))
    done = 0
    for user, todo in by_user.items():
        done += _append_user(host, port, user, passwords[user], todo)
    return done


def _append_user(host: str, port: int, user: str, password: str,
                 todo: Sequence[tuple[str, bytes | None, datetime | None]]) -> int:
    done = 0
    try:
        imap = imaplib.IMAP4(host, port, timeout=30)
        # imaplib sends a literal and its CRLF in two writes: without this, Nagle's
        # algorithm and the server's delayed ACK hold every APPEND for ~40 ms.
        imap.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            imap.login(user, password)
            for folder, raw, when in todo:
                if raw is None:
                    _ok(imap.create(folder), f"CREATE {folder}", user)
                    continue
                date = imaplib.Time2Internaldate(when) if when is not None else None
                _ok(imap.append(folder, "", date, raw), f"APPEND to {folder}", user)
                done += 1
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                imap.logout()
    except (imaplib.IMAP4.error, OSError) as exc:
        raise DemoServerError(f"the demo IMAP server refused a delivery for {user}: {exc}",
                              source=f"imap://{host}:{port}") from exc
    return done


def _ok(response: tuple[str, Any], what: str, user: str) -> None:
    status, detail = response
    if status != "OK":
        raise DemoServerError(f"{what} for {user} failed", got=f"{status} {detail!r}")
