"""Benchmark: where a synced message's CPU goes in a parsing process, per step.

The full-sync benchmark (``bench_sync.py``) times the whole pipeline; this one times the
parsing processes' job alone, in one process, on ``bench_sync``'s messages (CRLF, as IMAP
delivers them) against its campaign of sent probes, so that a change to one step can be
judged without a mail server and without the other processes' noise. Each step is timed
``--repeat`` times, interleaved with the baseline, and the best run counts (CPU time of
this process); every figure is also given as a ratio to the baseline of the same run: the
standard ``email`` parser on the same messages, as the full-sync baseline parses them.

    python bench/bench_examine.py                  # 4,000 messages, 300 probes
    python bench/bench_examine.py --messages 10000 --repeat 9
"""

from __future__ import annotations

import argparse
import email
import gc
import pickle
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_sync  # noqa: E402

from mailprobe import examine, process  # noqa: E402
from mailprobe.classify import classify  # noqa: E402
from mailprobe.decode import parse_message  # noqa: E402
from mailprobe.directory import Account, Endpoint, TlsMode  # noqa: E402
from mailprobe.store import Store  # noqa: E402


def _cpu_us(step: Callable[[], Any], messages: int) -> float:
    """CPU microseconds per message of one run of ``step``."""
    started = time.process_time()
    step()
    return (time.process_time() - started) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    gc.set_threshold(*examine.RELAXED_GC)  # as in the parsing processes

    with tempfile.TemporaryDirectory(prefix="mailprobe-bench-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        store.upgrade()
        here = Endpoint("127.0.0.1", 1, TlsMode.NONE)  # never connected to
        bench_sync.campaign(store, Account("bench", bench_sync.USER, bench_sync.USER, here,
                                           here, "MP_BENCH_PW"), args.probes)
        ctx = process.load_context(store, bench_sync.SECRET)
        store.close()

    rng = random.Random(2015)
    items = [(i + 1, bench_sync.message(i, rng).replace(b"\n", b"\r\n"),
              bench_sync.START + timedelta(minutes=7 * i)) for i in range(args.messages)]
    raws = [raw for _, raw, _ in items]
    parsed = [parse_message(raw) for raw in raws]
    examined = [examine.examine(ctx, i, "bench", at, raw, parsed=p)
                for (i, raw, at), p in zip(items, parsed, strict=True)]
    results = examine.examine_many(ctx, items, "bench", examine.MAX_BYTES, examine.MAX_PARTS)

    steps: dict[str, Callable[[], Any]] = {
        "baseline: email.message_from_bytes": lambda: [email.message_from_bytes(r) for r in raws],
        "parse (decode.parse_message)": lambda: [parse_message(r) for r in raws],
        "classify": lambda: [classify(p, sent_message_ids=ctx.sent_ids) for p in parsed],
        "classify and match (examine, parsed)": lambda: [
            examine.examine(ctx, i, "bench", at, raw, parsed=p)
            for (i, raw, at), p in zip(items, parsed, strict=True)],
        "rows (fresh_rows, JSON encoded)": lambda: [examine.fresh_rows(e) for e in examined],
        "the whole job (examine_many)": lambda: examine.examine_many(
            ctx, items, "bench", examine.MAX_BYTES, examine.MAX_PARTS),
        "results pickled for the syncing process": lambda: pickle.dumps(results),
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(args.repeat):  # interleaved: a slower spell of the machine hits all steps
        for name, step in steps.items():
            best[name] = min(best[name], _cpu_us(step, len(items)))
    baseline = best["baseline: email.message_from_bytes"]
    print(f"{len(items):,} messages, {args.probes} sent probes; CPU per message, best of "
          f"{args.repeat}:")
    for name, us in best.items():
        print(f"  {name:42s} {us:7.1f} us  {us / baseline:5.2f}x the baseline")


if __name__ == "__main__":
    main()
