"""Real mail servers on loopback for the tests: Dovecot (IMAP) and aiosmtpd (SMTP)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["DovecotServer", "Recorded", "SmtpServer", "free_port", "in_ci"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
"""


class DovecotServer:
    """Dovecot from Debian's package, with a throwaway config and mail store under ``root``.

    Runs as root (as CI does); mail is owned by ``nobody`` so that Dovecot, which
    refuses mail access as uid 0, can deliver and read it.
    """

    def __init__(self, root: Path, users: dict[str, str], port: int | None = None) -> None:
        self.root = root
        self.users = dict(users)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def _prepare(self) -> None:
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        uid, gid = 65534, 65534
        os.chmod(self.root, 0o755)
        for sub in ("mail", "home"):
            os.chown(self.root / sub, uid, gid)
        self.write_users()
        self.config.write_text(_CONFIG.format(root=self.root, port=self.port, uid=uid, gid=gid),
                               encoding="utf-8")

    def write_users(self) -> None:
        lines = [f"{user}:{{PLAIN}}{password}" for user, password in self.users.items()]
        (self.root / "passwd").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 15.0) -> None:
        if not Path(DOVECOT).exists():
            raise RuntimeError(f"{DOVECOT} is missing (Debian package dovecot-imapd)")
        self._prepare()
        log = (self.root / "stderr.log").open("ab")
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config)],
                                        stdout=log, stderr=log, start_new_session=True)
        proc = self.process
        if not _wait_for_port(self.port, timeout, lambda: proc.poll() is None):
            self.stop()
            raise RuntimeError(f"Dovecot did not start on 127.0.0.1:{self.port}: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                text += path.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])


@dataclass
class Recorded:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float


Action = Callable[[str], Any]


@dataclass
class _Handler:
    """A recording handler whose answers can be scripted per recipient or per message."""

    messages: list[Recorded] = field(default_factory=list)
    rcpt_script: deque[str] = field(default_factory=deque)  # e.g. "451 4.7.1 try later"
    data_script: deque[str] = field(default_factory=deque)  # "250", "451 ...", "drop", "sleep 2"
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> permanent answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if self.rcpt_script:
            answer = self.rcpt_script.popleft()
            if not answer.startswith("250"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = self.data_script.popleft() if self.data_script else "250"
        if answer.startswith("sleep "):
            await asyncio.sleep(float(answer.split()[1]))
            answer = "250"
        if answer == "drop":
            assert server.transport is not None
            server.transport.abort()  # the connection dies mid-transaction
            return "421 dropped"
        if answer != "250":
            return answer
        with self.lock:
            self.messages.append(Recorded(str(envelope.mail_from), list(envelope.rcpt_tos),
                                          bytes(envelope.original_content or b""), time.time()))
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on an ephemeral loopback port, in its own thread and event loop."""

    def __init__(self, auth_users: dict[str, str] | None = None) -> None:
        self.handler = _Handler()
        self.auth_users = auth_users
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def messages(self) -> list[Recorded]:
        with self.handler.lock:
            return list(self.handler.messages)

    def _factory(self) -> SMTP:
        if self.auth_users is None:
            return SMTP(self.handler, hostname="sink.test")
        users = self.auth_users

        def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> Any:
            from aiosmtpd.smtp import AuthResult, LoginPassword

            ok = isinstance(auth_data, LoginPassword) and users.get(
                auth_data.login.decode()) == auth_data.password.decode()
            # handled=False: aiosmtpd then answers 535 itself instead of staying silent.
            return AuthResult(success=ok, handled=False)

        return SMTP(self.handler, hostname="sink.test", authenticator=check,
                    auth_require_tls=False, auth_required=True)

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._factory, "127.0.0.1", 0), self._loop)
        self._server = future.result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
