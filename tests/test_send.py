"""Sending exactly once against a real aiosmtpd (and Dovecot for the Sent folder)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aioimaplib
import pytest
from aiosmtpd.smtp import SMTP as SmtpProtocol

from mailprobe.campaign import SendWindow, window_key
from mailprobe.clock import ManualClock
from mailprobe.compose import TemplateSet, compose
from mailprobe.directory import (
    Account,
    Channel,
    ChannelKind,
    Endpoint,
    Persona,
    ProbeSpec,
    TlsMode,
)
from mailprobe.errors import ConfigError
from mailprobe.imap import quote_mailbox
from mailprobe.models import ProbeState, RoundRecord
from mailprobe.probe_details import details_for
from mailprobe.send import (
    SendPolicy,
    TickReport,
    load_passwords,
    resolve_uncertain_by_sent_folder,
    save_sent_copies,
    send_due,
)
from mailprobe.sheets import Agency, Level
from mailprobe.store import ProbeRecord, Store
from tests.pg import throwaway_database
from tests.servers import SmtpServer, free_port

S = ProbeState
T0 = datetime(2015, 11, 2, 1, 30, tzinfo=UTC)  # Monday 09:30 in Guangzhou
SECRET = b"test-secret-for-the-send-tests!"
PASSWORD = "secret-1"  # Dovecot's password for citizen1@mail.test
FAST = SendPolicy(retry_base=timedelta(minutes=5), retry_cap=timedelta(hours=1),
                  timeout=5.0, seed=7, sent_copies=False)
AGENCIES = tuple(Agency(f"甲市第{i:02d}县区", Level.COUNTY, "甲市", None, i) for i in range(1, 9))


def channel(i: int, domain: str = "hbj.jia.gd.test") -> Channel:
    return Channel(AGENCIES[i % len(AGENCIES)].name, ChannelKind.CONSULTATION,
                   address=f"zixun{i % len(AGENCIES)}@{domain}")


def account(port: int, ident: str = "c1", host: str = "127.0.0.1", tls: TlsMode = TlsMode.NONE,
            imap_port: int = 1, user: str = "citizen1@mail.test") -> Account:
    return Account(ident, user, user, Endpoint(host, port, tls),
                   Endpoint("127.0.0.1", imap_port, TlsMode.NONE), password_env="MP_TEST_PW")


def persona(ident: str = "chen", account_id: str = "c1") -> Persona:
    return Persona(ident, "陈建国", "广州市天河区", account_id, {"职业": "退休教师"})


class World:
    """A store with one round of e-mail probes, each rendered by the real composer."""

    def __init__(self, url: str, clock: ManualClock, accounts: Sequence[Account],
                 personas: Sequence[Persona]) -> None:
        self.clock = clock
        self.store = Store(url, clock=clock)
        self.store.upgrade()
        self.accounts, self.personas = list(accounts), list(personas)
        channels = [channel(i) for i in range(len(AGENCIES))]
        self.store.import_directory(AGENCIES, channels, accounts, personas)
        self.templates = TemplateSet.load()
        self.records: list[ProbeRecord] = []

    def plan(self, n: int, *, persona_ids: Sequence[str] = ("chen",), rid: str = "r1",
             at: datetime = T0, window: SendWindow | None = None) -> list[ProbeRecord]:
        people = {p.id: p for p in self.personas}
        accounts = {a.id: a for a in self.accounts}
        for i in range(n):
            p = people[persona_ids[i % len(persona_ids)]]
            spec = ProbeSpec(f"{rid}-{i:04d}", rid, channel(i).agency, channel(i), p.id,
                             "eia_restaurant_1", at + timedelta(seconds=i),
                             details_for(f"{rid}-{i}", channel(i).agency, "甲市", date(2015, 11, 2),
                                         1))
            mail = compose(spec, p, accounts[p.account], f"{spec.agency}环境保护局",
                           self.templates, SECRET, spec.send_at)
            self.records.append(ProbeRecord.from_spec(
                spec, token=mail.token, subject=mail.subject, body=mail.text,
                message_id=mail.message_id, raw=mail.raw))
        closes = (window.closes if window else at + timedelta(days=20))
        rnd = RoundRecord(rid, rid, f"schedules/{rid}.toml", "a" * 64, at - timedelta(hours=1),
                          closes, 1)
        self.store.save_plan(rnd, [r for r in self.records if r.probe_id.startswith(rid)])
        if window is not None:
            self.store.setting_or_create(window_key(rid, "a" * 64), window.to_json)
        return [r for r in self.records if r.probe_id.startswith(rid)]

    def send(self, policy: SendPolicy = FAST, worker: str = "w1",
             passwords: dict[str, str] | None = None) -> TickReport:
        pw = passwords if passwords is not None else {a.id: PASSWORD for a in self.accounts}
        return asyncio.run(send_due(self.store, self.clock, worker, pw, policy=policy))

    def state(self, probe_id: str) -> ProbeState:
        return self.store.probe_state(probe_id)

    def states(self) -> dict[ProbeState, int]:
        counts: dict[ProbeState, int] = {}
        for r in self.records:
            counts[self.state(r.probe_id)] = counts.get(self.state(r.probe_id), 0) + 1
        return counts


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + timedelta(minutes=1))


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock, smtp_server: Any) -> Iterator[World]:
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, [account(smtp_server.port)], [persona()])
    yield w
    w.store.close()


def ehlo_counter(server: Any) -> list[str]:
    """Counts sessions: aiosmtpd picks up handler hooks per connection."""
    seen: list[str] = []

    async def handle_EHLO(srv: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        seen.append(hostname)
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return responses

    server.handler.handle_EHLO = handle_EHLO
    return seen


def parsed(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


# --- acceptance --------------------------------------------------------------------------------


def test_accepted_messages_arrive_once_byte_for_byte(world: World, smtp_server: Any) -> None:
    records = world.plan(3)
    sessions = ehlo_counter(smtp_server)
    report = world.send()
    assert (report.claimed, report.sent, report.connections) == (3, 3, 1)
    assert len(sessions) == 1  # one connection for the account's batch
    got = {parsed(m.data)["Message-ID"]: m for m in smtp_server.messages}
    assert len(smtp_server.messages) == 3 and set(got) == {r.message_id for r in records}
    for r in records:
        message = got[r.message_id]
        assert message.data == r.raw and message.rcpt_tos == [r.channel.address]
        headers = parsed(message.data)
        assert headers["Date"].datetime == r.send_at
        for name in ("Auto-Submitted", "Precedence", "X-Auto-Response-Suppress"):
            assert name not in headers
        view = world.store.probe(r.probe_id)
        assert (view.state, view.smtp_code, view.accepted_at) == (S.SENT, 250, world.clock.now())
    assert world.send().claimed == 0 and len(smtp_server.messages) == 3


def test_one_connection_per_account_reused_across_batches(
        tmp_path: Path, clock: ManualClock, smtp_server: Any) -> None:
    accounts = [account(smtp_server.port, "c1"), account(smtp_server.port, "c2")]
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, accounts,
              [persona("chen", "c1"), persona("li", "c2")])
    w.plan(30, persona_ids=("chen", "li"))
    sessions = ehlo_counter(smtp_server)
    report = w.send(replace(FAST, batch=4, chunk=3, concurrency=2))
    assert (report.sent, report.connections, len(sessions)) == (30, 2, 2)
    assert len(smtp_server.messages) == 30
    w.store.close()


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["rcpt_script", "data_script"])
def test_a_temporary_refusal_is_retried_later_then_sent(
        world: World, smtp_server: Any, script: str) -> None:
    [r] = world.plan(1)
    getattr(smtp_server.handler, script).append("451 4.7.1 greylisted, try later")
    first = world.send()
    assert (first.retried, first.sent) == (1, 0) and world.state(r.probe_id) is S.PLANNED
    world.clock.advance(timedelta(minutes=3))
    assert world.send().claimed == 0  # backoff: 5 minutes ± 20 %
    world.clock.advance(timedelta(minutes=4))
    assert world.send().sent == 1
    view = world.store.probe(r.probe_id)
    assert (view.state, view.attempts) == (S.SENT, 2)
    assert len(smtp_server.messages) == 1
    retry = [e for e in world.store.events(r.probe_id) if e.kind == "retry"]
    assert "451" in retry[0].detail and "greylisted" in retry[0].detail


def test_a_permanent_refusal_fails_the_probe_and_the_connection_goes_on(
        world: World, smtp_server: Any) -> None:
    records = world.plan(3)
    smtp_server.handler.refuse[records[1].channel.address] = "550 5.1.1 mailbox unavailable"
    report = world.send()
    assert (report.sent, report.failed, report.connections) == (2, 1, 1)
    view = world.store.probe(records[1].probe_id)
    assert (view.state, view.smtp_code) == (S.FAILED, 550)
    assert view.smtp_text == "[RCPT TO] 5.1.1 mailbox unavailable"
    world.clock.advance(timedelta(days=1))
    assert world.send().claimed == 0 and len(smtp_server.messages) == 2


def test_a_refused_sender_is_the_account_s_problem_not_the_channel_s(
        world: World, smtp_server: Any) -> None:
    records = world.plan(3)

    async def handle_MAIL(server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        return "550 5.7.1 sender not allowed: daily limit reached"

    smtp_server.handler.handle_MAIL = handle_MAIL
    report = world.send()
    assert (report.failed, report.retried, report.sent) == (0, 3, 0)
    assert world.states() == {S.PLANNED: 3}
    assert "[MAIL FROM] 5.7.1 sender not allowed" in world.store.events(
        records[0].probe_id)[-1].detail


def test_a_permanent_refusal_of_the_content_fails_the_probe(world: World,
                                                            smtp_server: Any) -> None:
    [r] = world.plan(1)
    smtp_server.handler.data_script.append("554 5.7.1 message refused as spam")
    assert world.send().failed == 1
    assert world.store.probe(r.probe_id).smtp_text == "[DATA] 5.7.1 message refused as spam"


def test_a_retry_past_the_window_fails_with_the_reason(tmp_path: Path, clock: ManualClock,
                                                       smtp_server: Any) -> None:
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, [account(smtp_server.port)], [persona()])
    [r] = w.plan(1, window=SendWindow(T0 + timedelta(minutes=3)))
    smtp_server.handler.rcpt_script.append("452 4.2.2 mailbox full")
    assert w.send().failed == 1
    view = w.store.probe(r.probe_id)
    assert (view.state, view.smtp_code) == (S.FAILED, 452)
    assert "no office time left before the round closes" in (view.smtp_text or "")
    assert "mailbox full" in (view.smtp_text or "")
    w.store.close()


# --- the fate unknown --------------------------------------------------------------------------


def test_a_drop_during_data_is_uncertain_and_never_resent(world: World,
                                                          smtp_server: Any) -> None:
    records = world.plan(3)
    smtp_server.handler.data_script.append("drop")
    report = world.send()
    assert (report.uncertain, report.retried, report.sent) == (1, 2, 0)
    assert world.state(records[0].probe_id) is S.UNCERTAIN
    assert "server may have accepted it" in world.store.events(records[0].probe_id)[-1].detail
    # The two never handed to the server go out after their backoff; the first never again.
    world.clock.advance(timedelta(hours=2))
    assert world.send().sent == 2
    world.clock.advance(timedelta(days=3))
    assert world.send().claimed == 0
    assert world.states() == {S.UNCERTAIN: 1, S.SENT: 2}
    assert [u.probe_id for u in world.store.list_uncertain()] == [records[0].probe_id]


def test_a_slow_server_times_out_into_uncertain(world: World, smtp_server: Any) -> None:
    [r, other] = world.plan(2)
    smtp_server.handler.data_script.append("sleep 1.5")
    started = time.monotonic()
    report = world.send(replace(FAST, timeout=0.5))
    assert time.monotonic() - started < 1.4  # the time-out, not the server, ended it
    assert (report.uncertain, report.retried) == (1, 1)
    world.clock.advance(timedelta(hours=2))
    assert world.send().sent == 1
    assert (world.state(r.probe_id), world.state(other.probe_id)) == (S.UNCERTAIN, S.SENT)
    assert [parsed(m.data)["Message-ID"] for m in smtp_server.messages] == [other.message_id]
    assert "SMTPReadTimeoutError" in world.store.events(r.probe_id)[-1].detail


# --- arming, pausing, TLS ----------------------------------------------------------------------


def test_an_unarmed_round_sends_nothing_to_a_real_server(tmp_path: Path,
                                                         clock: ManualClock) -> None:
    real = account(25, host="smtp.example.invalid", tls=TlsMode.STARTTLS)
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, [real], [persona()])
    w.plan(2)
    assert w.send() == TickReport()  # nothing claimed, no connection tried
    assert w.states() == {S.PLANNED: 2}
    w.store.close()


def test_plain_text_smtp_to_a_non_loopback_host_is_refused(tmp_path: Path,
                                                           clock: ManualClock) -> None:
    plain = account(25, host="192.0.2.7")  # TEST-NET-1: never reached
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, [plain], [persona()])
    w.plan(1)
    w.store.set_round_flags("r1", armed=True)
    report = w.send()
    assert (report.claimed, report.connections, report.retried) == (1, 0, 1)
    assert "plain-text SMTP is allowed only to a loopback" in (
        w.store.events("r1-0000")[-1].detail)
    w.store.close()


def test_starttls_is_required_never_a_silent_downgrade(tmp_path: Path, clock: ManualClock,
                                                       smtp_server: Any) -> None:
    # The test server offers no STARTTLS: the account wants it, so nothing is sent.
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock,
              [account(smtp_server.port, tls=TlsMode.STARTTLS)], [persona()])
    w.plan(1)
    report = w.send()
    assert (report.sent, report.retried) == (0, 1) and smtp_server.messages == []
    assert "STARTTLS" in w.store.events("r1-0000")[-1].detail
    w.store.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[SmtpServer, Path]]:
    """aiosmtpd behind implicit TLS with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = SmtpServer()
    server._thread.start()
    future = asyncio.run_coroutine_threadsafe(server._loop.create_server(
        lambda: SmtpProtocol(server.handler, hostname="tls.test"), "127.0.0.1", 0,
        ssl=context), server._loop)
    server._server = future.result(timeout=10)
    server.port = int(server._server.sockets[0].getsockname()[1])
    yield server, cert
    server.stop()


def test_implicit_tls_verifies_the_certificate(tmp_path: Path, clock: ManualClock,
                                               tls_server: tuple[SmtpServer, Path]) -> None:
    server, cert = tls_server
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock,
              [account(server.port, tls=TlsMode.TLS)], [persona()])
    w.plan(1)
    refused = w.send()  # the system's CAs do not know this certificate
    assert (refused.sent, refused.retried) == (0, 1) and server.messages == []
    assert "CERTIFICATE_VERIFY_FAILED" in w.store.events("r1-0000")[-1].detail
    w.clock.advance(timedelta(hours=2))
    trusted = ssl.create_default_context(cafile=str(cert))
    assert w.send(replace(FAST, tls_context=trusted)).sent == 1
    assert len(server.messages) == 1
    w.store.close()


def test_a_paused_round_sends_nothing_and_pausing_stops_at_once(world: World,
                                                                smtp_server: Any) -> None:
    world.plan(6)
    world.store.set_round_flags("r1", paused=True)
    assert world.send().claimed == 0
    world.store.set_round_flags("r1", paused=False)
    smtp_server.handler.data_script.append("sleep 0.6")  # the first probe is slow

    async def pause_while_sending() -> TickReport:
        task = asyncio.create_task(send_due(world.store, world.clock, "w1",
                                            {"c1": PASSWORD}, policy=replace(FAST, chunk=1)))
        # Paused once the first probe is in flight (marked sending before DATA), however
        # long the machine took to get there.
        while S.SENDING not in await asyncio.to_thread(world.states):
            assert not task.done(), task
            await asyncio.sleep(0.01)
        await asyncio.to_thread(world.store.set_round_flags, "r1", paused=True)
        return await task

    report = asyncio.run(pause_while_sending())
    assert (report.sent, report.released) == (1, 5)  # the one in flight finished; no other
    assert world.states() == {S.SENT: 1, S.PLANNED: 5} and len(smtp_server.messages) == 1
    world.store.set_round_flags("r1", paused=False)
    assert world.send().sent == 5


# --- office hours ------------------------------------------------------------------------------


def test_send_window_holds_probes_outside_office_hours() -> None:
    nine = int(datetime(2015, 11, 2, 1, tzinfo=UTC).timestamp())
    window = SendWindow(datetime(2015, 11, 3, tzinfo=UTC), ((nine, nine + 3 * 3600),
                                                           (nine + 19800, nine + 30600)))
    at = datetime.fromtimestamp(nine + 600, UTC)
    assert window.next_send(at) is at
    lunch = datetime.fromtimestamp(nine + 3 * 3600, UTC)  # 12:00: the morning span has ended
    assert window.next_send(lunch) == datetime.fromtimestamp(nine + 19800, UTC)
    assert window.next_send(datetime.fromtimestamp(nine + 30600, UTC)) is None
    assert SendWindow(T0).next_send(T0) is None and SendWindow(T0).next_send(
        T0 - timedelta(seconds=1)) == T0 - timedelta(seconds=1)


def test_a_due_probe_waits_for_office_hours(tmp_path: Path, smtp_server: Any) -> None:
    evening = ManualClock(datetime(2015, 11, 2, 10, tzinfo=UTC))  # 18:00 in Guangzhou
    nine = int(datetime(2015, 11, 3, 1, tzinfo=UTC).timestamp())  # Tuesday 09:00
    w = World(f"sqlite:///{tmp_path / 'm.db'}", evening, [account(smtp_server.port)],
              [persona()])
    [r] = w.plan(1, window=SendWindow(datetime(2015, 11, 4, tzinfo=UTC),
                                      ((nine, nine + 10800),)))
    assert w.send().held == 1 and smtp_server.messages == []
    w.clock.set(datetime.fromtimestamp(nine, UTC))
    assert w.send().sent == 1
    assert w.store.probe(r.probe_id).accepted_at == datetime.fromtimestamp(nine, UTC)
    w.store.close()


# --- passwords ---------------------------------------------------------------------------------


def test_missing_passwords_are_one_error_line() -> None:
    accounts = [account(1, "c1"), replace(account(1, "c2"), password_env="MP_TEST_NOPE_2")]
    with pytest.raises(ConfigError) as err:
        load_passwords(accounts, env={})
    line = str(err.value)
    assert "\n" not in line and "no password for account c1, c2" in line
    assert "$MP_TEST_PW" in line and "$MP_TEST_NOPE_2" in line
    assert load_passwords(accounts[:1], env={"MP_TEST_PW": "x"}) == {"c1": "x"}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_with_the_password_which_is_never_logged(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Zq8!only-in-env"
    server = SmtpServer(auth_users={"citizen1@mail.test": secret})
    server.start()
    try:
        w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, [account(server.port)], [persona()])
        w.plan(2)
        caplog.set_level(logging.DEBUG)
        wrong = w.send(passwords={"c1": "not-it"})
        assert (wrong.sent, wrong.retried) == (0, 2)
        assert "535" in w.store.events("r1-0000")[-1].detail
        w.clock.advance(timedelta(hours=2))
        assert w.send(passwords={"c1": secret}).sent == 2
        assert secret not in caplog.text and "not-it" not in caplog.text
        w.store.close()
    finally:
        server.stop()


# --- several workers on PostgreSQL -------------------------------------------------------------


@pytest.mark.postgres
def test_two_workers_on_postgresql_send_each_probe_once(clock: ManualClock,
                                                        smtp_server: Any) -> None:
    with throwaway_database() as url:
        w = World(url, clock, [account(smtp_server.port)], [persona()])
        w.plan(60)
        policy = replace(FAST, batch=5, chunk=2)

        async def both() -> list[TickReport]:
            stores = [Store(url, clock=clock) for _ in range(2)]
            try:
                return list(await asyncio.gather(*(
                    send_due(s, clock, f"w{n}", {"c1": PASSWORD}, policy=policy)
                    for n, s in enumerate(stores))))
            finally:
                for s in stores:
                    s.close()

        reports = asyncio.run(both())
        assert sum(r.sent for r in reports) == 60 and all(r.sent for r in reports)
        ids = [parsed(m.data)["Message-ID"] for m in smtp_server.messages]
        assert len(ids) == 60 == len(set(ids))
        w.store.close()


# --- the Sent folder (Dovecot) -----------------------------------------------------------------


def test_mailbox_names_are_modified_utf7() -> None:
    assert quote_mailbox("Sent") == '"Sent"'
    assert quote_mailbox("已发送") == '"&XfJT0ZAB-"'
    assert quote_mailbox("A&B \"x\"") == '"A&-B \\"x\\""'


def imap_messages(dovecot: Any, folder: str = "Sent") -> list[tuple[str, bytes]]:
    """(Message-ID, the FETCH line with FLAGS and INTERNALDATE) of every message in folder."""
    async def fetch() -> list[tuple[str, bytes]]:
        client = aioimaplib.IMAP4("127.0.0.1", dovecot.port, timeout=5)
        await client.wait_hello_from_server()
        await client.login("citizen1@mail.test", PASSWORD)
        await client.select(folder)
        got = await client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS "
                                        "(MESSAGE-ID)])")
        await client.logout()
        out = []
        lines = [x for x in got.lines if isinstance(x, (bytes, bytearray))]
        for i, line in enumerate(lines):
            if b"FETCH" in line and i + 1 < len(lines):
                mid = bytes(lines[i + 1]).decode().split(":", 1)[1].strip()
                out.append((mid, bytes(line)))
        return out
    return asyncio.run(fetch())


@pytest.mark.dovecot
def test_sent_copies_land_in_the_sent_folder_once(tmp_path: Path, clock: ManualClock,
                                                  smtp_server: Any, dovecot: Any) -> None:
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock,
              [account(smtp_server.port, imap_port=dovecot.port)], [persona()])
    records = w.plan(3)
    assert w.send().sent == 3
    copies = asyncio.run(save_sent_copies(w.store, clock, {"c1": PASSWORD}, policy=FAST))
    assert copies == 3
    saved = dict(imap_messages(dovecot))
    assert set(saved) == {r.message_id for r in records}
    accepted = w.store.probe(records[0].probe_id).accepted_at
    assert accepted is not None
    line = saved[records[0].message_id]
    assert b"\\Seen" in line
    assert accepted.strftime('INTERNALDATE "%d-%b-%Y %H:%M:%S +0000"').encode() in line
    # A second pass finds nothing to copy; the probe's state never depended on it.
    again = asyncio.run(save_sent_copies(w.store, clock, {"c1": PASSWORD}, policy=FAST))
    assert again == 0 and len(imap_messages(dovecot)) == 3
    assert w.store.probe_state(records[0].probe_id) is S.SENT
    w.store.close()


@pytest.mark.dovecot
def test_a_failed_copy_is_retried_and_never_touches_the_sent_state(
        tmp_path: Path, clock: ManualClock, smtp_server: Any, dovecot: Any) -> None:
    closed = free_port()  # IMAP is down at first
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock,
              [account(smtp_server.port, imap_port=closed)], [persona()])
    [r] = w.plan(1)
    w.send()
    assert asyncio.run(save_sent_copies(w.store, clock, {"c1": PASSWORD}, policy=FAST)) == 0
    assert w.store.probe_state(r.probe_id) is S.SENT
    w.store.import_directory((), (), [account(smtp_server.port, imap_port=dovecot.port)], ())
    assert asyncio.run(save_sent_copies(w.store, clock, {"c1": PASSWORD}, policy=FAST)) == 1
    assert [m for m, _ in imap_messages(dovecot)] == [r.message_id]
    w.store.close()


@pytest.mark.dovecot
def test_an_uncertain_probe_found_in_sent_is_resolved_as_sent(
        tmp_path: Path, clock: ManualClock, smtp_server: Any, dovecot: Any) -> None:
    acc = account(smtp_server.port, imap_port=dovecot.port)
    w = World(f"sqlite:///{tmp_path / 'm.db'}", clock, [acc], [persona()])
    found, missing = w.plan(2)
    smtp_server.handler.data_script.extend(["drop"])
    w.send(replace(FAST, chunk=1))
    w.clock.advance(timedelta(hours=2))
    smtp_server.handler.data_script.extend(["drop"])
    w.send(replace(FAST, chunk=1))
    assert {u.probe_id for u in w.store.list_uncertain()} == {found.probe_id, missing.probe_id}
    # The provider kept its own copy of the first (as some do for every submission).
    when = datetime(2015, 11, 2, 1, 31, 5, tzinfo=UTC)

    async def provider_copy() -> None:
        client = aioimaplib.IMAP4("127.0.0.1", dovecot.port, timeout=5)
        await client.wait_hello_from_server()
        await client.login("citizen1@mail.test", PASSWORD)
        assert found.raw is not None
        await client.append(found.raw, mailbox="Sent", flags=r"(\Seen)", date=when)
        await client.logout()

    asyncio.run(provider_copy())
    result = asyncio.run(resolve_uncertain_by_sent_folder(w.store, acc, {"c1": PASSWORD}))
    assert (result.found, result.missing) == ((found.probe_id,), (missing.probe_id,))
    view = w.store.probe(found.probe_id)
    assert (view.state, view.accepted_at) == (S.SENT, when)
    assert "sent-folder search" in w.store.events(found.probe_id)[-2].detail
    assert w.store.probe_state(missing.probe_id) is S.UNCERTAIN
    # Found there already: the copy step does not append it a second time.
    assert asyncio.run(save_sent_copies(w.store, clock, {"c1": PASSWORD}, policy=FAST)) == 0
    assert len(imap_messages(dovecot)) == 1
    w.store.close()
