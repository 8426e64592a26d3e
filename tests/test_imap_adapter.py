"""The aioimaplib adapter: large FETCH responses complete, in linear work, as the library would."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aioimaplib import aioimaplib as aio
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprobe.directory import Account, Endpoint, TlsMode
from mailprobe.errors import ConfigError
from mailprobe.imap import (
    Batch,
    FetchLimits,
    ImapError,
    LinearFetchCommand,
    LinearProtocol,
    connect,
    parse_fetch,
    parse_internaldate,
    plan_batches,
    quote_mailbox,
    uid_set,
)

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: once a browser test has run, the session's
    sync Playwright keeps an event loop running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- a protocol fed by hand ----------------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _body(i: int) -> bytes:
    # Parentheses and a line that looks like a FETCH start inside the literal must not count.
    return (f"Subject: n{i} (see) ((x)\r\n\r\n1 FETCH (UID 9\r\nbody {i}\r\n").encode()


def fetch_response(tag: str, n: int, *, first: int = 1) -> bytes:
    parts = []
    for i in range(first, first + n):
        body = _body(i)
        parts.append(f'* {i} FETCH (UID {i + 100} INTERNALDATE "0{1 + i % 9}-Oct-2015 09:00:00 '
                     f'+0800" RFC822.SIZE {len(body)} BODY[] {{{len(body)}}}\r\n'.encode())
        parts.append(body + b")\r\n")
    parts.append(f"{tag} OK Fetch completed.\r\n".encode())
    return b"".join(parts)


async def _start_fetch(protocol: Any, command_type: Any = LinearFetchCommand,
                       timeout: float | None = None) -> tuple[Any, asyncio.Task[Any]]:
    protocol.connection_made(_Transport())
    protocol.state = aio.SELECTED
    command = command_type(protocol.new_tag(), "1:*", "(UID BODY.PEEK[])", prefix="UID",
                           loop=asyncio.get_running_loop(), timeout=timeout)
    task = asyncio.create_task(protocol.execute(command))
    await asyncio.sleep(0)
    return command, task


def _feed(protocol: Any, data: bytes, cuts: Sequence[int] = ()) -> None:
    start = 0
    for cut in sorted(set(cuts)):
        protocol.data_received(data[start:cut])
        start = cut
    protocol.data_received(data[start:])


def test_one_read_of_five_thousand_responses_completes_in_linear_work() -> None:
    async def run() -> None:
        protocol = LinearProtocol(asyncio.get_running_loop())
        command, task = await _start_fetch(protocol)
        protocol.data_received(fetch_response(command.tag, 5000))  # everything in one read
        response = await asyncio.wait_for(task, 10)
        assert response.result == "OK"
        found = parse_fetch(response.lines)
        assert [f.uid for f in found] == list(range(101, 5101))
        assert found[0].raw == _body(1) and found[-1].raw == _body(5000)
        # Each line is looked at once: 3 lines per message, not ~n^2 / 2 in all.
        assert command.lines_scanned <= len(response.lines)

    run_async(run())


def test_the_released_parser_still_needs_the_adapter() -> None:
    """If this fails, aioimaplib no longer recurses per line: mailprobe.imap may shrink."""
    async def run() -> None:
        protocol = aio.IMAP4ClientProtocol(asyncio.get_running_loop())
        command, task = await _start_fetch(protocol, aio.FetchCommand)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(400)  # the same failure as ~500 responses at the default limit
        try:
            with pytest.raises(RecursionError):
                protocol.data_received(fetch_response(command.tag, 300))
        finally:
            sys.setrecursionlimit(limit)
        assert not task.done()  # the command would never complete
        task.cancel()

    run_async(run())


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), cuts=st.lists(st.integers(0, 2_000), max_size=12))
def test_the_adapter_sees_what_the_library_sees_however_the_reads_are_cut(
        n: int, cuts: list[int]) -> None:
    async def lines(protocol: Any, command_type: Any) -> list[bytes | bytearray]:
        command, task = await _start_fetch(protocol, command_type)
        data = fetch_response(command.tag, n)
        _feed(protocol, data, [c % (len(data) + 1) for c in cuts])
        response = await asyncio.wait_for(task, 5)
        return list(response.lines)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ours = await lines(LinearProtocol(loop), LinearFetchCommand)
        theirs = await lines(aio.IMAP4ClientProtocol(loop), aio.FetchCommand)
        assert [(type(x), bytes(x)) for x in ours] == [(type(x), bytes(x)) for x in theirs]
        assert [f.raw for f in parse_fetch(ours)] == [_body(i) for i in range(1, n + 1)]

    run_async(run())


def test_a_lost_connection_fails_the_pending_command_at_once() -> None:
    async def run() -> None:
        protocol = LinearProtocol(asyncio.get_running_loop())
        command, task = await _start_fetch(protocol, timeout=60)
        data = fetch_response(command.tag, 50)
        protocol.data_received(data[: len(data) // 2])
        protocol.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(ImapError, match="connection lost"):
            await asyncio.wait_for(task, 1)
        assert protocol.idle_queue.qsize() == 1  # an IDLE waiter would wake up too

    run_async(run())


def test_the_inactivity_timeout_waits_for_silence_not_for_the_whole_fetch() -> None:
    async def run() -> None:
        protocol = LinearProtocol(asyncio.get_running_loop())
        command, task = await _start_fetch(protocol, timeout=1.0)
        data = fetch_response(command.tag, 8)
        step = len(data) // 8
        for i in range(6):  # 1.5 s in all, never 1 s quiet (a slow machine has the margin)
            protocol.data_received(data[i * step:(i + 1) * step])
            await asyncio.sleep(0.25)
        assert not task.done()
        with pytest.raises(aio.CommandTimeout):
            await asyncio.wait_for(task, 2)

    run_async(run())


# --- pure helpers --------------------------------------------------------------------------------


def test_batches_are_bounded_by_count_and_bytes_and_keep_uid_order() -> None:
    limits = FetchLimits(batch_count=3, batch_bytes=1_000, message_bytes=600)
    sizes = [(1, 100), (2, 100), (3, 100), (4, 100), (5, 500), (6, 450), (7, 5_000), (8, 10)]
    assert plan_batches(sizes, limits) == [
        Batch((1, 2, 3)), Batch((4, 5)), Batch((6,)), Batch((7,), partial=600), Batch((8,))]
    assert plan_batches([], limits) == []


def test_uid_sets_and_mailbox_names() -> None:
    assert uid_set([5, 1, 2, 3, 9, 10, 7, 2]) == "1:3,5,7,9:10"
    assert uid_set([4]) == "4"
    assert quote_mailbox("INBOX") == '"INBOX"'
    assert quote_mailbox("垃圾邮件") == '"&V4NXPpCuTvY-"'
    assert quote_mailbox('a&b "c"') == '"a&-b \\"c\\""'


def test_internaldate_becomes_utc() -> None:
    assert parse_internaldate(b'1 FETCH (INTERNALDATE " 2-Nov-2015 09:30:05 +0800")') == \
        datetime(2015, 11, 2, 1, 30, 5, tzinfo=UTC)
    west = parse_internaldate(b'INTERNALDATE "31-Dec-2015 23:00:00 -0130"')
    assert west == datetime(2015, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=1.5)))
    assert parse_internaldate(b"1 FETCH (UID 3)") is None



_ZONES = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timedelta(minutes=m))


@given(st.datetimes(datetime(1970, 1, 2), datetime(2099, 12, 30)), _ZONES)
def test_any_internaldate_is_the_same_instant_in_utc(when: datetime, offset: timedelta) -> None:
    local = when.replace(microsecond=0, tzinfo=timezone(offset))
    minutes = abs(offset) // timedelta(minutes=1)
    text = (f"{local:%d-%b-%Y %H:%M:%S} {'-' if offset < timedelta(0) else '+'}"
            f"{minutes // 60:02d}{minutes % 60:02d}")
    found = parse_internaldate(f'7 FETCH (UID 7 INTERNALDATE "{text}")'.encode())
    assert found == local and found is not None and found.utcoffset() == timedelta(0)


def test_plain_text_is_refused_beyond_loopback() -> None:
    remote = Endpoint("imap.mail.test", 143, TlsMode.NONE)
    account = Account("x", "x@mail.test", "x@mail.test", remote, remote, "MP_PW_X")
    with pytest.raises(ConfigError, match="only allowed to a loopback server"):
        run_async(connect(account, "pw"))


# --- against Dovecot -----------------------------------------------------------------------------


def fill_maildir(dovecot: Any, user: str, bodies: Sequence[bytes],
                 start: datetime = datetime(2015, 10, 12, tzinfo=UTC)) -> None:
    """Messages written straight into a user's Maildir (INTERNALDATE = the file's mtime)."""
    home = Path(dovecot.root) / "mail" / user
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    base = int(start.timestamp())
    for i, body in enumerate(bodies):
        path = home / "cur" / f"{base + i}.M{i}P{os.getpid()}.mailprobe,S={len(body)}:2,"
        path.write_bytes(body)
        os.utime(path, (base + i, base + i))
    subprocess.run(["chown", "-R", "65534:65534", str(Path(dovecot.root) / "mail")], check=True)


@pytest.fixture
def dovecot_bulk() -> Iterator[Any]:
    """A Dovecot with one user whose INBOX is written before the server first reads it."""
    from tests.servers import DovecotServer

    root = Path(tempfile.mkdtemp(prefix="mailprobe-dovecot-"))
    server = DovecotServer(root, {"bulk@mail.test": "secret-b"})
    try:
        server.start()
    except (RuntimeError, OSError) as error:
        pytest.skip(f"Dovecot could not start: {error}")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.dovecot
def test_one_fetch_of_four_thousand_messages_from_dovecot(dovecot_bulk: Any) -> None:
    bodies = [f"Subject: {i}\nMessage-ID: <{i}@bulk.test>\n\n{'正文' * 40}\n".encode()
              for i in range(4000)]
    fill_maildir(dovecot_bulk, "bulk@mail.test", bodies)
    here = Endpoint("127.0.0.1", dovecot_bulk.port, TlsMode.NONE)
    account = Account("bulk", "bulk@mail.test", "bulk@mail.test", here, here, "MP_PW_BULK")

    async def run() -> None:
        async with await connect(account, "secret-b", timeout=30) as session:
            selected = await session.select("INBOX")
            assert (selected.exists, selected.uidnext) == (4000, 4001)
            sizes = await session.sizes(1, None)
            assert len(sizes) == 4000
            found = await session.fetch(Batch(tuple(u for u, _ in sizes)))
            assert session.traffic["FETCH"] == 2
        assert len(found) == 4000
        assert found[7].raw == bodies[7].replace(b"\n", b"\r\n")
        assert found[7].internaldate == datetime(2015, 10, 12, 0, 0, 7, tzinfo=UTC)

    run_async(run())


# --- TLS --------------------------------------------------------------------------------------


def _certificates(folder: Path) -> Path:
    """A throwaway CA and a server certificate for localhost and 127.0.0.1; returns the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mailprobe test CA"))
          .issuer_name(name("mailprobe test CA")).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - timedelta(days=1))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(2)
              .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                  critical=False)
              .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return folder / "ca.pem"


@pytest.fixture
def dovecot_tls() -> Iterator[tuple[Any, int, Path]]:
    """Dovecot offering STARTTLS on its port and implicit TLS on a second one."""
    from tests.servers import DovecotServer, free_port

    root = Path(tempfile.mkdtemp(prefix="mailprobe-dovecot-"))
    ca = _certificates(root)
    tls_port = free_port()

    class TlsDovecot(DovecotServer):
        def _prepare(self) -> None:
            super()._prepare()
            text = self.config.read_text(encoding="utf-8")
            text = text.replace("ssl = no", f"ssl = yes\nssl_cert = <{root}/server.pem\n"
                                            f"ssl_key = <{root}/server.key")
            text = text.replace("port = 0", f"port = {tls_port}\n    ssl = yes")
            self.config.write_text(text, encoding="utf-8")

    server = TlsDovecot(root, {"tls@mail.test": "secret-t"})
    try:
        server.start()
    except (RuntimeError, OSError) as error:
        pytest.skip(f"Dovecot with TLS could not start: {error}")
    yield server, tls_port, ca
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.dovecot
def test_tls_and_starttls_verify_the_server_certificate(
        dovecot_tls: tuple[Any, int, Path]) -> None:
    import ssl

    server, tls_port, ca = dovecot_tls
    trusted = ssl.create_default_context(cafile=str(ca))

    def account(port: int, mode: TlsMode, host: str = "127.0.0.1") -> Account:
        here = Endpoint(host, port, mode)
        return Account("tls", "tls@mail.test", "tls@mail.test", here, here, "MP_PW_TLS")

    async def inbox(acc: Account, context: ssl.SSLContext | None) -> int:
        async with await connect(acc, "secret-t", timeout=10, ssl_context=context) as session:
            assert "LOGINDISABLED" not in session.capabilities
            return (await session.select("INBOX")).exists

    assert run_async(inbox(account(server.port, TlsMode.STARTTLS), trusted)) == 0
    assert run_async(inbox(account(tls_port, TlsMode.TLS, "localhost"), trusted)) == 0
    with pytest.raises(ImapError, match="CERTIFICATE_VERIFY_FAILED"):  # the system's CAs
        run_async(inbox(account(tls_port, TlsMode.TLS), None))
    with pytest.raises(ImapError, match="CERTIFICATE_VERIFY_FAILED"):
        run_async(inbox(account(server.port, TlsMode.STARTTLS), None))
