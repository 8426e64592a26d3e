"""Kill -9 the worker at random moments, many times: no probe goes out twice, none is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from mailprobe.clock import SystemClock
from mailprobe.directory import Account, Channel, ChannelKind, Endpoint, Persona, TlsMode
from mailprobe.models import ProbeState, RoundRecord
from mailprobe.send import SendPolicy
from mailprobe.sheets import Agency, Level
from mailprobe.store import ProbeRecord, Store
from tests.sink_process import ROOT, Sink, read_record

S = ProbeState
PROBES = 300
KILLS = 18
LEASE = 1.5  # seconds: how long a killed worker's claims block the next one
AGENCIES = tuple(Agency(f"乙市第{i:02d}县区", Level.COUNTY, "乙市", None, i) for i in range(12))
REFUSED = {"zixun3@hbj.yi.gd.test", "zixun7@hbj.yi.gd.test"}  # the sink says 550


def _setup(url: str, port: int) -> list[ProbeRecord]:
    clock = SystemClock()
    channels = [Channel(a.name, ChannelKind.CONSULTATION, address=f"zixun{i}@hbj.yi.gd.test")
                for i, a in enumerate(AGENCIES)]
    smtp = Endpoint("127.0.0.1", port, TlsMode.NONE)
    imap = Endpoint("127.0.0.1", 1, TlsMode.NONE)
    accounts = [Account(f"acc{n}", f"citizen{n}@mail.test", f"citizen{n}@mail.test", smtp, imap,
                        password_env="MP_CRASH_PASSWORD") for n in (1, 2)]
    personas = [Persona(f"p{n}", f"市民{n}", "乙市", f"acc{n}") for n in (1, 2)]
    now = clock.now()
    probes = []
    for i in range(PROBES):
        ch = channels[i % len(channels)]
        mid = f"<crash.{i:04d}@mail.test>"
        raw = (f"From: citizen@mail.test\r\nTo: {ch.address}\r\nSubject: crash {i}\r\n"
               f"Message-ID: {mid}\r\n\r\nprobe {i}\r\n").encode()
        probes.append(ProbeRecord(f"crash-{i:04d}", ch.agency, ch, f"p{1 + i % 2}", "t",
                                  now - timedelta(seconds=PROBES - i), f"tok{i}", f"crash {i}",
                                  f"probe {i}", mid, raw))
    with Store(url) as store:
        store.upgrade()
        store.import_directory(AGENCIES, channels, accounts, personas)
        store.save_plan(RoundRecord("crash", "crash", "-", "0" * 64, now - timedelta(hours=1),
                                    now + timedelta(days=1), 1), probes)
    return probes


class Worker:
    """``python -m mailprobe run`` in its own process, output in a file."""

    def __init__(self, url: str, worker_id: str, log: Path) -> None:
        self.log = log
        env = {**os.environ, "MP_CRASH_PASSWORD": "unused-by-the-sink"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailprobe", "run", "--db", url, "--tick", "0.05",
                 "--lease", str(LEASE), "--batch", "20", "--no-sent-copies",
                 "--worker-id", worker_id],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_started(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while b"started" not in self.log.read_bytes():
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.01)


def _unsettled(url: str) -> int:
    with Store(url) as store:
        counts = store.round_status("crash").by_state
    return sum(counts.get(s, 0) for s in (S.PLANNED, S.CLAIMED, S.SENDING))


@pytest.mark.slow
def test_kill_minus_nine_never_repeats_or_loses_a_probe(tmp_path: Path) -> None:
    record = tmp_path / "sink.tsv"
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    refuse = [f"--refuse={a}=550 5.1.1 no such mailbox" for a in sorted(REFUSED)]
    rng = random.Random(20151102)
    # 30 ms a message: the round takes about as long as the kills, so they land mid-send.
    with Sink("--record", str(record), "--delay", "0.03", *refuse) as sink:
        probes = _setup(url, sink.port)
        killed = []
        for k in range(KILLS):
            worker = Worker(url, f"killed-{k}", tmp_path / f"worker-{k}.log")
            worker.wait_started()
            time.sleep(rng.uniform(0.05, 0.6))
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(timeout=10)
            killed.append(f"killed-{k}")
        final = Worker(url, "final", tmp_path / "final.log")
        final.wait_started()
        deadline = time.monotonic() + 30
        while _unsettled(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        final.process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert final.process.wait(timeout=20) == 0, final.log.read_text(errors="replace")
        assert "stopped after" in final.log.read_text(errors="replace")
    delivered = Counter(mid for mid, _ in read_record(record))
    _check(url, probes, delivered, set(killed))


def _check(url: str, probes: list[ProbeRecord], delivered: Counter[str],
           killed: set[str]) -> None:
    with Store(url) as store:
        states = {p.probe_id: store.probe_state(p.probe_id) for p in probes}
        trails = {p.probe_id: store.events(p.probe_id) for p in probes
                  if states[p.probe_id] is S.UNCERTAIN}
    counts = Counter(states.values())
    at_server = sum(delivered[p.message_id or ""] > 0 for p in probes
                    if states[p.probe_id] is S.UNCERTAIN)
    print(f"\n{KILLS} kills: {dict(counts)}; delivered {sum(delivered.values())} messages; "
          f"uncertain and at the server: {at_server}, uncertain and not: "
          f"{counts[S.UNCERTAIN] - at_server}")
    assert set(counts) <= {S.SENT, S.FAILED, S.UNCERTAIN}, counts  # none lost, none stuck
    assert max(delivered.values()) == 1  # never twice
    for p in probes:
        assert p.message_id is not None
        state, times = states[p.probe_id], delivered[p.message_id]
        if state is S.SENT:
            assert times == 1, p.probe_id
        elif state is S.FAILED:
            assert times == 0 and p.channel.address in REFUSED, p.probe_id
        else:  # in flight when a worker died: delivered or not, only the sink knows
            sending = [e.detail for e in trails[p.probe_id] if e.kind == "sending"]
            assert sending and sending[-1] in killed, p.probe_id
    refused = sum(p.channel.address in REFUSED for p in probes)
    assert counts[S.FAILED] <= refused
    # A kill costs what was in flight: a chunk per account and the acceptances not yet
    # committed (at most a group), never the rest of the round.
    policy = SendPolicy()
    assert counts[S.UNCERTAIN] <= KILLS * (2 * policy.chunk + policy.record_every)
    assert counts[S.SENT] > 0 and counts[S.FAILED] > 0
