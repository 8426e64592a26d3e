"""Benchmark: a first full sync and an incremental sync of a large Dovecot mailbox vs imaplib.

Fills one Dovecot mailbox (Maildir files written directly, INTERNALDATE = mtime) with
realistic 2-4 KB messages (a fifth in GBK), then times, in the same run:

* baseline: imaplib, one ``UID FETCH 1:* (INTERNALDATE BODY.PEEK[])``, then every message
  parsed with the standard ``email`` parser;
* mailprobe: the full sync, as a worker's watch tick does it: ``sync_account`` with the
  probe secret into a fresh SQLite store (fetch in bounded batches, store the raw bytes,
  parse, classify and match against a directory of ``--probes`` sent probes in the parsing
  processes, record the results with the parse status), then ``process.process_new`` until
  nothing is left (what the sync could not classify; normally nothing); both parts are
  timed and printed;
* incremental: 100 new messages appended over IMAP, then ``sync_account`` and
  ``process_new`` again.

Targets: the full sync within 2x of the baseline; the incremental sync under 1 s.

    python bench/bench_sync.py                 # 100,000 messages
    python bench/bench_sync.py --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email
import imaplib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailprobe import sync_pipeline  # noqa: E402
from mailprobe.clock import ManualClock, SystemClock  # noqa: E402
from mailprobe.directory import (  # noqa: E402
    Account,
    Channel,
    ChannelKind,
    Endpoint,
    Persona,
    TlsMode,
)
from mailprobe.probe_details import details_for  # noqa: E402
from mailprobe.process import process_new  # noqa: E402
from mailprobe.sheets import Agency, Level  # noqa: E402
from mailprobe.store import Accepted, ProbeRecord, RoundRecord, Store  # noqa: E402
from mailprobe.tokens import make_token, message_id  # noqa: E402
from mailprobe.watch import (  # noqa: E402
    SyncReport,
    WatchPolicy,
    shutdown_parsers,
    sync_account,
)
from tests.servers import DovecotServer  # noqa: E402

USER, PASSWORD = "bench@mail.test", "bench-secret"
SECRET = b"bench-probe-secret"
AGENCIES = 97  # the senders of the bench's messages are hbj@city0..city96.gd.test
START = datetime(2015, 10, 12, 1, 0, tzinfo=UTC)
_PHRASES = ("您好，您反映的关于建设项目环境影响评价审批的问题已收悉。",
            "经查，该项目已于去年依法办理相关手续。",
            "根据《中华人民共和国环境影响评价法》第二十二条的规定，",
            "我局将在十五个工作日内予以答复。",
            "如有疑问，请拨打12369环保热线咨询。",
            "感谢您对环境保护工作的关心和支持！")
_QUOTE_HEADER = "------------------ 原始邮件 ------------------"


def _word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def message(i: int, rng: random.Random) -> bytes:
    """One realistic reply of 2-4 KB; every fifth is GBK in base64 (LF line ends, as Maildir)."""
    text = "".join(rng.choice(_PHRASES) for _ in range(rng.randint(25, 50)))
    when = START + timedelta(minutes=7 * i)
    sender = f"hbj@city{i % AGENCIES}.gd.test"
    head = (f"Return-Path: <{sender}>\nReceived: from mx.gd.test (mx.gd.test "
            f"[10.0.{i % 250}.1])\n\tby mail.test with ESMTP id {i:08X}; "
            f"{when:%a, %d %b %Y %H:%M:%S} +0000\nFrom: {_word('环保局')} <{sender}>\n"
            f"To: {USER}\nSubject: {_word(f'回复：咨询{i}')}\n"
            f"Date: {when:%a, %d %b %Y %H:%M:%S} +0800\nMessage-ID: <{i}.reply@gd.test>\n"
            "MIME-Version: 1.0\n")
    if i % 5 == 0:
        body = base64.encodebytes(text.encode("gbk")).decode()
        return (head + "Content-Type: text/plain; charset=GB2312\n"
                "Content-Transfer-Encoding: base64\n\n" + body).encode()
    quoted = "\n".join("> " + line for line in text[:300].split("。") if line)
    return (head + "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            + text + f"\n\n{_QUOTE_HEADER}\n" + quoted + "\n").encode()


def fill(server: DovecotServer, n: int) -> int:
    """Write ``n`` messages into the user's Maildir; returns their total size in bytes."""
    home = server.root / "mail" / USER
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(2015)
    total = 0
    base = int(START.timestamp())
    for i in range(n):
        raw = message(i, rng)
        virtual = len(raw) + raw.count(b"\n")  # the size with CRLF, as IMAP counts it
        path = home / "cur" / f"{base + 60 * i}.M{i}P1.bench,S={len(raw)},W={virtual}:2,S"
        path.write_bytes(raw)
        os.utime(path, (base + 60 * i, base + 60 * i))
        total += virtual
    subprocess.run(["chown", "-R", "65534:65534", str(server.root / "mail")], check=True)
    return total


class PeakMemory:
    """The highest resident size of this process, and of each parsing process, while the
    block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self.parsers = 0  # the largest parsing process
        self._done = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self, pid: int | str = "self") -> int:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._rss())
            for pool in list(sync_pipeline._POOLS.values()):
                for pid in list(getattr(pool, "_processes", None) or {}):
                    with contextlib.suppress(OSError):  # it just ended
                        self.parsers = max(self.parsers, self._rss(pid))

    def __enter__(self) -> PeakMemory:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def imaplib_baseline(port: int) -> tuple[float, float, float, int]:
    """(fetch s, parse s, CPU s, peak bytes) of the baseline, run in a process of its own so
    that neither contender inherits the other's memory or garbage collector state."""
    out = subprocess.run([sys.executable, __file__, "--baseline-port", str(port)],
                         check=True, capture_output=True, text=True).stdout
    fetch_s, parse_s, cpu_s, peak = json.loads(out.splitlines()[-1])
    return fetch_s, parse_s, cpu_s, peak


def _baseline_here(port: int) -> tuple[float, float, float]:
    """(fetch s, parse s, CPU s) of imaplib + the standard email parser, all UIDs at once."""
    started, cpu = time.perf_counter(), time.process_time()
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(USER, PASSWORD)
    client.select("INBOX")
    typ, data = client.uid("FETCH", "1:*", "(INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    fetched = [(part[0], part[1]) for part in data if isinstance(part, tuple)]
    for meta, _ in fetched:
        imaplib.Internaldate2tuple(meta)
    client.logout()
    fetched_at = time.perf_counter()
    parsed = [email.message_from_bytes(raw) for _, raw in fetched]
    assert parsed
    return (fetched_at - started, time.perf_counter() - fetched_at,
            time.process_time() - cpu)


def imaplib_newest(port: int, n: int) -> float:
    """Seconds for imaplib to log in, select and fetch the ``n`` newest messages: what any
    client pays for an incremental sync (Dovecot's own work on a large mailbox included)."""
    started = time.perf_counter()
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(USER, PASSWORD)
    typ, data = client.select("INBOX")
    total = int(data[0] or 0)
    typ, data = client.fetch(f"{max(1, total - n + 1)}:*", "(UID INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    assert sum(isinstance(part, tuple) for part in data) == n
    client.logout()
    return time.perf_counter() - started


def warm_up(port: int) -> None:
    """Let Dovecot build its index and the page cache hold the files, for both contenders."""
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(USER, PASSWORD)
    client.select("INBOX")
    client.uid("FETCH", "1:*", "(UID INTERNALDATE RFC822.SIZE)")
    client.logout()
    for path in (Path(tempfile.gettempdir())).glob("mailprobe-bench-*/mail/*/cur/*"):
        path.read_bytes()


def append_new(port: int, n: int) -> None:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(USER, PASSWORD)
    rng = random.Random(7)
    for i in range(n):
        raw = message(10_000_000 + i, rng).replace(b"\n", b"\r\n")
        client.append("INBOX", None, imaplib.Time2Internaldate(time.time()), raw)
    client.logout()


def campaign(store: Store, account: Account, probes: int) -> None:
    """A directory of ``AGENCIES`` agencies and ``probes`` probes sent from the bench mailbox
    a day before the first message, so the matcher's index is a campaign's, not empty."""
    agencies = [Agency(f"环保局{k}", Level.CITY, f"市{k}", f"https://www.city{k}.gd.test/", k + 2)
                for k in range(AGENCIES)]
    channels = [Channel(a.name, ChannelKind.CONSULTATION, address=f"hbj@city{k}.gd.test")
                for k, a in enumerate(agencies)]
    store.import_directory(agencies, channels, [account],
                           [Persona("citizen", "张伟", "广东省", account.id)])
    sent = START - timedelta(days=1)
    records = []
    for i in range(probes):
        pid, k = f"r1-{i:05d}", i % AGENCIES
        token = make_token(pid, SECRET)
        mid = message_id(token, "mail.test", f"n{i}")
        details = details_for(pid, agencies[k].name, "广州", sent.date(), i)
        body = "您好！" + "".join(details.values()) + "请问应如何处理？谢谢。"
        records.append(ProbeRecord(pid, agencies[k].name, channels[k], "citizen",
                                   "eia-approval", sent + timedelta(seconds=i), token, "咨询",
                                   body, mid, f"Message-ID: {mid}\r\n\r\n{body}\r\n".encode(),
                                   details))
    store.save_plan(RoundRecord("2015-r1", "2015年第一轮", "bench", "0" * 64, sent,
                                sent + timedelta(days=14), 2015), records)
    now = sent + timedelta(seconds=probes + 1)
    claimed = store.claim_due(now, "bench", probes, timedelta(minutes=5))
    going = store.mark_sending_many([c.probe_id for c in claimed], "bench", at=now)
    assert len(going) == probes, len(going)
    store.mark_sent_many([Accepted(pid, now, 250, "2.0.0 Ok") for pid in going])


def _cpu() -> float:
    """CPU s of this process and its reaped children (the parsing processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def process_all(store: Store) -> int:
    """``process_new`` until nothing is left, as the worker's ticks do; returns how many."""
    done, clock = 0, ManualClock(START + timedelta(days=400))
    while found := process_new(store, SECRET, limit=10_000, clock=clock).processed:
        done += found
    return done


def ours(root: Path, account: Account, policy: WatchPolicy, name: str, probes: int
         ) -> tuple[float, float, float, float, SyncReport, Store]:
    """(sync wall s, sync CPU s, process wall s, process CPU s, report, store); CPU counts
    this process and the parsing processes."""
    store = Store(f"sqlite:///{root / f'{name}.db'}")
    store.upgrade()
    campaign(store, account, probes)
    cpu, started = _cpu(), time.perf_counter()
    own = time.process_time()
    with PeakMemory() as memory:
        report = asyncio.run(sync_account(store, account, PASSWORD, SystemClock(),
                                          folders=["INBOX"], policy=policy, secret=SECRET))
    wall = time.perf_counter() - started
    own = time.process_time() - own
    shutdown_parsers()  # reaped, so their CPU time is counted
    n, parsers = max(report.mailboxes[0].new, 1), _cpu() - cpu - own
    print(f"  peak memory of the full sync: syncing process {memory.peak / 2**20:,.0f} MiB, "
          f"largest parsing process {memory.parsers / 2**20:,.0f} MiB", flush=True)
    print(f"  CPU of the full sync: syncing process {own:.2f} s ({own / n * 1e6:,.0f} us per "
          f"message), parsing processes {parsers:.2f} s ({parsers / n * 1e6:,.0f} us per "
          "message, their start included)", flush=True)
    cpu2, started = _cpu(), time.perf_counter()
    processed = process_all(store)
    assert processed + report.classified == report.mailboxes[0].new, (
        processed, report.classified, report.mailboxes[0].line())
    return (wall, cpu2 - cpu, time.perf_counter() - started, _cpu() - cpu2, report, store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100, help="messages for the incremental sync")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate baseline and full sync this often; the best counts")
    parser.add_argument("--parse-workers", type=int, default=WatchPolicy().parse_workers,
                        help="parsing processes (0: parse in the syncing process)")
    parser.add_argument("--probes", type=int, default=300,
                        help="sent probes in the directory the matcher indexes")
    parser.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_port:  # the baseline's own process (see imaplib_baseline)
        found = _baseline_here(args.baseline_port)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps([*found, peak]))
        return
    root = Path(tempfile.mkdtemp(prefix="mailprobe-bench-"))
    server = DovecotServer(root, {USER: PASSWORD})
    try:
        server.start()
        t = time.perf_counter()
        size = fill(server, args.messages)
        print(f"mailbox: {args.messages:,} messages, {size / 2**20:,.0f} MiB (written in "
              f"{time.perf_counter() - t:.1f} s); load average {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} CPUs")
        warm_up(server.port)
        here = Endpoint("127.0.0.1", server.port, TlsMode.NONE)
        account = Account("bench", USER, USER, here, here, "MP_BENCH_PW")
        policy = WatchPolicy(parse_workers=args.parse_workers)
        bases, fulls = [], []
        for i in range(args.rounds):
            *base, peak = imaplib_baseline(server.port)
            bases.append(tuple(base))
            print(f"  peak memory of the baseline: {peak / 2**20:,.0f} MiB", flush=True)
            *times, report, store = ours(root, account, policy, f"round{i}", args.probes)
            assert report.mailboxes[0].new == args.messages, report.mailboxes[0].line()
            fulls.append(tuple(times))
            print(f"  round {i + 1}: baseline {sum(bases[-1][:2]):.2f} s, sync "
                  f"{times[0]:.2f} s + process {times[2]:.2f} s = {times[0] + times[2]:.2f} s; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
            if i < args.rounds - 1:
                store.close()
        append_new(server.port, args.new)
        started = time.perf_counter()
        incr = asyncio.run(sync_account(store, account, PASSWORD, SystemClock(),
                                        folders=["INBOX"], policy=policy, secret=SECRET))
        incr_sync = time.perf_counter() - started
        assert process_all(store) + incr.classified == args.new
        incr_s = (incr_sync, time.perf_counter() - started - incr_sync)
        store.close()
        assert incr.mailboxes[0].new == args.new, incr.mailboxes[0].line()
        append_new(server.port, args.new)  # as many again, for imaplib to fetch
        _report(args, min(bases, key=lambda b: b[0] + b[1]),
                min(fulls, key=lambda f: f[0] + f[2]), incr_s,
                imaplib_newest(server.port, args.new))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _report(args: argparse.Namespace, base: tuple[float, float, float],
            full: tuple[float, ...], incr_s: tuple[float, float], incr_base: float) -> None:
    fetch_s, parse_s, base_cpu = base
    baseline = fetch_s + parse_s
    sync_s, sync_cpu, process_s, process_cpu = full
    total = sync_s + process_s
    print(f"baseline   imaplib fetch {fetch_s:.2f} s + email parse {parse_s:.2f} s = "
          f"{baseline:.2f} s (CPU {base_cpu:.2f} s)")
    print(f"mailprobe  fetch, store, parse, classify, match ({args.parse_workers} parsing "
          "processes) "
          f"{sync_s:.2f} s (CPU {sync_cpu:.2f} s) = {sync_s / baseline:.2f}x the baseline")
    print(f"mailprobe  then process_new ({args.probes} sent probes) {process_s:.2f} s "
          f"(CPU {process_cpu:.2f} s) = {process_s / baseline:.2f}x the baseline")
    print(f"mailprobe  full sync {total:.2f} s = {total / baseline:.2f}x the baseline "
          f"(target <= 2x); {args.messages / total:,.0f} messages/s")
    print(f"mailprobe  incremental sync of {args.new} new messages {sum(incr_s):.2f} s "
          f"(sync {incr_s[0]:.2f} s + process {incr_s[1]:.2f} s; target < 1 s); imaplib "
          f"fetching as many new messages {incr_base:.2f} s")
    print(f"best of {args.rounds}; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
