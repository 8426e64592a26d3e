"""Benchmark: a first full sync and an incremental sync of a large Dovecot mailbox vs imaplib.

Fills one Dovecot mailbox (Maildir files written directly, INTERNALDATE = mtime) with
realistic 2-4 KB messages (a fifth in GBK), then times, in the same run:

* baseline: imaplib, one ``UID FETCH 1:* (INTERNALDATE BODY.PEEK[])``, then every message
  parsed with the standard ``email`` parser;
* mailprobe: ``sync_account`` into a fresh SQLite store (fetch in bounded batches, store the
  raw bytes, parse with ``decode.parse_message``, record the parse status);
* incremental: 100 new messages appended over IMAP, then ``sync_account`` again.

Targets: the full sync within 2x of the baseline; the incremental sync under 1 s.

    python bench/bench_sync.py                 # 100,000 messages
    python bench/bench_sync.py --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import imaplib
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailprobe.clock import SystemClock  # noqa: E402
from mailprobe.directory import Account, Endpoint, TlsMode  # noqa: E402
from mailprobe.store import Store  # noqa: E402
from mailprobe.watch import (  # noqa: E402
    SyncReport,
    WatchPolicy,
    shutdown_parsers,
    sync_account,
)
from tests.servers import DovecotServer  # noqa: E402

USER, PASSWORD = "bench@mail.test", "bench-secret"
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
    sender = f"hbj{i % 97}@gd.test"
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


def imaplib_baseline(port: int) -> tuple[float, float, float]:
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


def ours(root: Path, account: Account, policy: WatchPolicy, name: str
         ) -> tuple[float, float, SyncReport, Store]:
    """(wall s, CPU s of this process and the parsing processes, report, store)."""
    store = Store(f"sqlite:///{root / f'{name}.db'}")
    store.upgrade()
    store.import_directory((), (), [account], ())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu = time.perf_counter(), time.process_time()
    report = asyncio.run(sync_account(store, account, PASSWORD, SystemClock(),
                                      folders=["INBOX"], policy=policy))
    wall = time.perf_counter() - started
    shutdown_parsers()  # reaped, so their CPU time is counted below
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = time.process_time() - cpu + (after.ru_utime + after.ru_stime
                                         - children.ru_utime - children.ru_stime)
    return wall, spent, report, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100, help="messages for the incremental sync")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate baseline and full sync this often; the best counts")
    parser.add_argument("--parse-workers", type=int, default=WatchPolicy().parse_workers,
                        help="parsing processes (0: parse in the syncing process)")
    args = parser.parse_args()
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
            bases.append(imaplib_baseline(server.port))
            wall, cpu, report, store = ours(root, account, policy, f"round{i}")
            assert report.mailboxes[0].new == args.messages, report.mailboxes[0].line()
            fulls.append((wall, cpu))
            if i < args.rounds - 1:
                store.close()
        append_new(server.port, args.new)
        started = time.perf_counter()
        incr = asyncio.run(sync_account(store, account, PASSWORD, SystemClock(),
                                        folders=["INBOX"], policy=policy))
        incr_s = time.perf_counter() - started
        store.close()
        assert incr.mailboxes[0].new == args.new, incr.mailboxes[0].line()
        _report(args, min(bases, key=lambda b: b[0] + b[1]), min(fulls), incr_s)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _report(args: argparse.Namespace, base: tuple[float, float, float],
            full: tuple[float, float], incr_s: float) -> None:
    fetch_s, parse_s, base_cpu = base
    baseline = fetch_s + parse_s
    print(f"baseline   imaplib fetch {fetch_s:.2f} s + email parse {parse_s:.2f} s = "
          f"{baseline:.2f} s (CPU {base_cpu:.2f} s)")
    print(f"mailprobe  full sync (fetch, store, parse; {args.parse_workers} parsing "
          f"processes) {full[0]:.2f} s (CPU {full[1]:.2f} s) = {full[0] / baseline:.2f}x "
          f"the baseline (target <= 2x); {args.messages / full[0]:,.0f} messages/s")
    print(f"mailprobe  incremental sync of {args.new} new messages {incr_s:.2f} s "
          f"(target < 1 s)")
    print(f"best of {args.rounds}; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
