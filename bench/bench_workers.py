"""Benchmark: one campaign sent by 1, 2 and 4 `mailprobe run` workers on PostgreSQL, and by one
worker on SQLite.

Run: python bench/bench_workers.py [--probes 20000] [--workers 1,2,4] [--accounts 3]
Each run is real: N `python -m mailprobe run --no-watch --no-sent-copies` processes against a
fresh PostgreSQL database (a copy of one planned template database, so the plan is composed
and stored once, not timed), the aiosmtpd sink in its own process recording every delivery.
The round is planned paused; once every worker has started it is resumed and the clock runs
until no probe is left planned, claimed or sending. Every run checks that each probe reached
the sink exactly once. PostgreSQL: ``MAILPROBE_TEST_PG`` (default postgres@127.0.0.1:5432,
trust), as for the tests.

On a machine with few cores the workers, PostgreSQL and the sink share them: the table says
how many there are, and the ratios are to be read with that in mind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.sink_process and tests.pg: what the tests use too

from probe_plan import plan_probes  # noqa: E402

from mailprobe.clock import SystemClock  # noqa: E402
from mailprobe.directory import (  # noqa: E402
    Account,
    Endpoint,
    Persona,
    TlsMode,
)
from mailprobe.models import (  # noqa: E402
    ProbeEventRow,
    ProbeRecord,
    ProbeRow,
    ProbeState,
    RoundRecord,
)
from mailprobe.settings import load_settings  # noqa: E402
from mailprobe.store import Store  # noqa: E402
from tests.pg import ADMIN_URL, unreachable_reason  # noqa: E402
from tests.sink_process import Sink, read_record  # noqa: E402

ROUND = "bench"
PASSWORD_ENV = "MP_BENCH_WORKERS_PW"
_UNSETTLED = (ProbeState.PLANNED, ProbeState.CLAIMED, ProbeState.SENDING)


# --- the plan, composed once ---------------------------------------------------------------------


def _plan(n: int, accounts: int, port: int) -> tuple[list[ProbeRecord], tuple[object, ...]]:
    """n probes to 233 agencies from ``accounts`` personas, each composed by the real composer."""
    loop = Endpoint("127.0.0.1", port, TlsMode.NONE)
    account_rows = [Account(f"a{k}", f"citizen{k}@mail.minyi.test", f"citizen{k}@mail.minyi.test",
                            loop, loop, password_env=PASSWORD_ENV) for k in range(accounts)]
    personas = [Persona(f"p{k}", f"市民{k}", "广州市天河区", f"a{k}", {"职业": "退休教师"})
                for k in range(accounts)]
    return plan_probes(n, ROUND, "w", account_rows, personas)


def _save(url: str, records: list[ProbeRecord], directory: tuple[object, ...]) -> None:
    with Store(url) as store:
        store.upgrade()
        store.import_directory(*directory)  # type: ignore[arg-type]
        now = SystemClock().now()
        store.save_plan(RoundRecord(ROUND, "bench", "-", "0" * 64, now - timedelta(hours=1),
                                    now + timedelta(days=1), 1), records)
        store.set_round_flags(ROUND, paused=True)  # resumed once every worker is up


# --- databases -----------------------------------------------------------------------------------


class Postgres:
    """A planned template database, and a fresh copy of it for every run (CREATE ... TEMPLATE)."""

    def __init__(self) -> None:
        self.admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.prefix = f"mailprobe_bench_{os.getpid()}"
        self.template = f"{self.prefix}_plan"
        self.made: list[str] = []

    def url(self, name: str) -> str:
        return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"'
                                 + (f' TEMPLATE "{template}"' if template else ""))
        self.made.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in reversed(self.made):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@contextmanager
def _databases() -> Iterator[Postgres]:
    reason = unreachable_reason()
    if reason is not None:
        raise SystemExit(f"bench_workers: {reason}")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.drop_all()


# --- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    backend: str
    workers: int
    seconds: float
    probes: int
    by_worker: dict[str, int]
    cpu: dict[str, float]  # CPU seconds during the timed part: workers, postgres, sink
    load: float  # the machine's 1-minute load average when the run started

    @property
    def rate(self) -> float:
        return self.probes / self.seconds


def _unsettled(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ProbeRow)
                                .where(ProbeRow.state.in_(_UNSETTLED))).scalar_one())


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process, all its threads; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _backends(database: str) -> list[int]:
    """PostgreSQL's server processes serving ``database`` (their titles name it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                pids.append(int(entry.name))
    return pids


def _cpu_now(workers: list[int], database: str | None, sink: int) -> dict[str, float]:
    backends = _backends(database) if database else []
    return {"workers": sum(map(_cpu, workers)), "postgres": sum(map(_cpu, backends)),
            "sink": _cpu(sink)}


def run(backend: str, url: str, workers: int, n: int, folder: Path, record: Path,
        batch: int | None, tick: float, sink: int) -> Result:
    """N worker processes; timed from the resume to the last probe settled."""
    env = {**os.environ, PASSWORD_ENV: "unused-by-the-sink"}
    before = len(read_record(record))
    procs = []
    logs = []
    for k in range(workers):
        log = folder / f"{backend}-{workers}-{k}.log"
        logs.append(log)
        argv = [sys.executable, "-m", "mailprobe", "run", "--db", url, "--no-watch",
                "--no-sent-copies", "--tick", str(tick), "--worker-id", f"{backend}{workers}-{k}"]
        if batch:
            argv += ["--batch", str(batch)]
        with log.open("wb") as out:
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
    try:
        for p, log in zip(procs, logs, strict=True):
            while b"started" not in log.read_bytes():
                if p.poll() is not None:
                    raise SystemExit(f"a worker died at start:\n{log.read_text()}")
                time.sleep(0.02)
        engine = create_engine(url)
        database = make_url(url).database if backend == "postgresql" else None
        pids = [p.pid for p in procs]
        load = os.getloadavg()[0]
        with Store(url) as store:
            cpu = _cpu_now(pids, database, sink)
            started = time.perf_counter()
            store.set_round_flags(ROUND, paused=False)
            while _unsettled(engine):
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            cpu = {k: v - cpu[k] for k, v in _cpu_now(pids, database, sink).items()}
            states = Counter(store.round_status(ROUND).by_state)
        engine.dispose()
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p, log in zip(procs, logs, strict=True):
            if p.wait(timeout=60) != 0:
                print(f"warning: a worker exited with {p.returncode}:\n{log.read_text()[-2000:]}")
    delivered = Counter(mid for mid, _ in read_record(record)[before:])
    assert states == Counter({ProbeState.SENT: n}), states
    assert len(delivered) == n and max(delivered.values()) == 1, "not exactly once"
    return Result(backend, workers, seconds, n, _sent_by(url), cpu, load)


def _sent_by(url: str) -> dict[str, int]:
    """Which worker sent how many (its ``sending`` events)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(ProbeEventRow.detail, func.count())
                            .where(ProbeEventRow.kind == "sending")
                            .group_by(ProbeEventRow.detail)).all()
    engine.dispose()
    return {str(d): int(c) for d, c in sorted(rows)}


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4", help="PostgreSQL worker counts, e.g. 1,2,4")
    parser.add_argument("--accounts", type=int, default=3,
                        help="persona accounts (one SMTP connection each per worker)")
    parser.add_argument("--batch", type=int, default=None,
                        help="probes claimed at a time (default: [campaign] claim_batch)")
    parser.add_argument("--tick", type=float, default=0.1)
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    results: list[Result] = []
    with (_sink_recording() as (sink, record),
          tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, _databases() as pg):
        folder = Path(tmp)
        print(f"composing {args.probes:,} probes (not timed) ...", flush=True)
        records, directory = _plan(args.probes, args.accounts, sink.port)
        template = pg.create(pg.template)
        _save(template, records, directory)
        sqlite_plan = folder / "plan.db"
        if not args.no_sqlite:
            _save(f"sqlite:///{sqlite_plan}", records, directory)
        del records
        for n in counts:
            url = pg.create(f"{pg.prefix}_{n}", template=pg.template)
            print(f"postgresql, {n} workers ...", flush=True)
            results.append(run("postgresql", url, n, args.probes, folder, record, args.batch,
                               args.tick, sink.process.pid))
        if not args.no_sqlite:
            db = folder / "run.db"
            shutil.copy(sqlite_plan, db)
            print("sqlite, 1 worker ...", flush=True)
            results.append(run("sqlite", f"sqlite:///{db}", 1, args.probes, folder, record,
                               args.batch, args.tick, sink.process.pid))
    _report(results, args)


@contextmanager
def _sink_recording() -> Iterator[tuple[Sink, Path]]:
    with tempfile.TemporaryDirectory(prefix="bench-workers-sink-") as tmp:
        record = Path(tmp) / "sink.tsv"
        with Sink("--record", str(record)) as sink:
            yield sink, record


def _report(results: list[Result], args: argparse.Namespace) -> None:
    batch = args.batch or load_settings().claim_batch
    print(f"\n{args.probes:,} probes, {args.accounts} accounts (one SMTP connection each per "
          f"worker), claim batch {batch}, tick {args.tick:g} s; aiosmtpd sink in its own "
          f"process; this machine has {os.cpu_count()} cores, shared by the workers, "
          "PostgreSQL and the sink")
    base = next((r.rate for r in results if r.backend == "postgresql" and r.workers == 1), None)
    cores = os.cpu_count() or 1
    print(f"  {'backend':10s} {'workers':>7s} {'seconds':>8s} {'probes/s':>9s} {'ratio':>6s}"
          f"   CPU ms/probe: workers   pg  sink  busy  load  sent by worker")
    for r in results:
        ratio = f"{r.rate / base:.2f}" if base else "-"
        spread = " ".join(str(v) for v in r.by_worker.values())
        per = {k: 1000 * v / r.probes for k, v in r.cpu.items()}
        busy = sum(r.cpu.values()) / (r.seconds * cores)
        print(f"  {r.backend:10s} {r.workers:7d} {r.seconds:8.1f} {r.rate:9,.0f} {ratio:>6s}"
              f"   {per['workers']:20.2f} {per['postgres']:4.2f} {per['sink']:5.2f} "
              f"{busy:5.0%} {r.load:5.1f}  {spread}")
    print("  ratio: probes/s over PostgreSQL with one worker. CPU: per probe sent, of the "
          "worker processes, their PostgreSQL server processes and the sink; busy: their sum "
          f"over the run's time x {cores} cores; load: the machine's 1-minute load average "
          "at the start (other work on the machine competes for the same cores)")


if __name__ == "__main__":
    main()
