"""Benchmark: send 10,000 rendered probes through mailprobe's real sending path.

Run: python bench/bench_send.py [--probes 10000] [--repeat 3]
The path timed is the worker's: claim from the store (SQLite, synchronous=FULL), mark each
chunk sending, MAIL/RCPT/DATA over one reused aiosmtplib connection, record acceptances in
groups. The messages are composed at plan time (not timed). Next to it, in the same run and
against the same aiosmtpd sink (its own process): a bare aiosmtplib loop over one reused
connection with the same pre-rendered messages, and Postfix's smtp-source (one session,
connection reused) when it is installed. Target: at least half the bare loop's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.sink_process: the sink the tests also use

from probe_plan import plan_probes  # noqa: E402

from mailprobe.clock import SystemClock  # noqa: E402
from mailprobe.directory import (  # noqa: E402
    Account,
    Endpoint,
    Persona,
    TlsMode,
)
from mailprobe.models import ProbeRecord, RoundRecord  # noqa: E402
from mailprobe.send import SendPolicy, send_due  # noqa: E402
from mailprobe.settings import load_settings  # noqa: E402
from mailprobe.store import Store  # noqa: E402
from tests.sink_process import Sink  # noqa: E402

SENDER = "chen.jianguo@mail.minyi.test"
# Bulk knobs: bigger claims and chunks than a worker's defaults, which favour a small
# uncertain window after a crash over throughput (a round sends a few probes an hour).
POLICIES = {"mailprobe": SendPolicy(batch=500, chunk=50, record_every=100, sent_copies=False),
            # What `mailprobe run` uses with config/mailprobe.toml ([campaign] claim_batch).
            "defaults": SendPolicy(batch=load_settings().claim_batch, sent_copies=False)}


def _plan(n: int, port: int) -> tuple[list[ProbeRecord], tuple[object, ...]]:
    """n probes to 233 agencies from one persona, each composed by the real composer."""
    loop = Endpoint("127.0.0.1", port, TlsMode.NONE)
    account = Account("bench", SENDER, SENDER, loop, loop, password_env="MP_BENCH_PW")
    persona = Persona("chen", "陈建国", "广州市天河区", "bench", {"职业": "退休教师"})
    return plan_probes(n, "bench", "b", [account], [persona])


def _prepare(folder: Path, n: int, port: int) -> tuple[Path, list[ProbeRecord]]:
    records, directory = _plan(n, port)
    db = folder / "plan.db"
    with Store(f"sqlite:///{db}") as store:
        store.upgrade()
        store.import_directory(*directory)  # type: ignore[arg-type]
        now = SystemClock().now()
        store.save_plan(RoundRecord("bench", "bench", "-", "0" * 64, now - timedelta(hours=1),
                                    now + timedelta(days=1), 1), records)
    return db, records


def run_mailprobe(template_db: Path, folder: Path, n: int, policy: SendPolicy) -> float:
    db = folder / "run.db"
    shutil.copy(template_db, db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with Store(f"sqlite:///{db}") as store:
        started = time.perf_counter()
        sent = asyncio.run(_ticks(store, policy))  # back to back, as a busy worker ticks
        elapsed = time.perf_counter() - started
        states = store.round_status("bench").by_state
    assert sent == n and sum(states.values()) == n and len(states) == 1, states
    return n / elapsed


async def _ticks(store: Store, policy: SendPolicy) -> int:
    sent = 0
    while True:
        report = await send_due(store, store.clock, "bench", {"bench": "x"}, policy=policy)
        if not report.claimed:
            return sent
        sent += report.sent


def run_bare(port: int, records: list[ProbeRecord]) -> float:
    async def loop() -> float:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               local_hostname="localhost")
        await smtp.connect()
        started = time.perf_counter()
        for r in records:
            assert r.raw is not None and r.channel.address is not None
            await smtp.sendmail(SENDER, [r.channel.address], r.raw)
        elapsed = time.perf_counter() - started
        await smtp.quit()
        return len(records) / elapsed
    return asyncio.run(loop())


def run_smtp_source(port: int, records: list[ProbeRecord], folder: Path) -> float | None:
    tool = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not Path(tool).exists():
        return None
    message = folder / "message.eml"
    assert records[0].raw is not None
    message.write_bytes(records[0].raw.replace(b"\r\n", b"\n"))
    started = time.perf_counter()
    subprocess.run([tool, "-d", "-s", "1", "-m", str(len(records)), "-F", str(message),
                    "-f", SENDER, "-t", "tousu0@hbj0.gd.test", f"127.0.0.1:{port}"],
                   check=True, capture_output=True)
    return len(records) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"mailprobe": [], "defaults": [], "bare": [],
                                       "smtp-source": []}
    with Sink() as sink, tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
        folder = Path(tmp)
        print(f"composing {args.probes} probes (not timed) ...", flush=True)
        db, records = _prepare(folder, args.probes, sink.port)
        size = statistics.mean(len(r.raw or b"") for r in records)
        for _ in range(args.repeat):  # interleaved: the machine's noise hits all three
            results["bare"].append(run_bare(sink.port, records))
            for key, policy in POLICIES.items():
                results[key].append(run_mailprobe(db, folder, args.probes, policy))
            rate = run_smtp_source(sink.port, records, folder)
            if rate is not None:
                results["smtp-source"].append(rate)
        accepted = sink.stop()
    _report(results, args.probes, size, accepted)


def _report(results: dict[str, list[float]], n: int, size: float, accepted: int) -> None:
    print(f"\n{n} probes of {size:,.0f} bytes on average, one connection, aiosmtpd sink in its "
          f"own process (accepted {accepted:,} messages in all); medians of "
          f"{len(results['bare'])} runs")
    bulk, usual = POLICIES["mailprobe"], POLICIES["defaults"]
    labels = {"mailprobe": f"mailprobe send_due: batch {bulk.batch}, chunk {bulk.chunk}",
              "defaults": f"mailprobe, worker defaults: batch {usual.batch}, chunk {usual.chunk}",
              "bare": "bare aiosmtplib loop, pre-rendered",
              "smtp-source": "Postfix smtp-source -s 1 -d"}
    for key, label in labels.items():
        if results[key]:
            runs = ", ".join(f"{r:,.0f}" for r in results[key])
            print(f"  {label:58s} {statistics.median(results[key]):7,.0f} /s   ({runs})")
        else:
            print(f"  {label:58s}  skipped: install it with `apt-get install postfix` "
                  "(only smtp-source is used; no mail server is started)")
    ratio = statistics.median(results["mailprobe"]) / statistics.median(results["bare"])
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"\nmailprobe / bare loop = {ratio:.2f} ({verdict} the target of 0.50)")


if __name__ == "__main__":
    main()
