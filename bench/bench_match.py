"""Benchmark: match 100,000 incoming messages against 1,000 probes.

Run: python bench/bench_match.py [--messages 100000] [--probes 1000]
Prints messages per second for mailprobe's indexed matcher next to a baseline
measured in the same run: the naive way, testing every probe's fingerprints
against every message (timed on a sample and given per message).
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime, timedelta

from mailprobe.match import IncomingMessage, SentProbe, match_messages
from mailprobe.probe_details import details_for, fingerprints
from mailprobe.tokens import make_token, message_id

SECRET = b"bench-secret"
SENT = datetime(2015, 11, 2, 2, 30, tzinfo=UTC)
_FILLER = ("您好，我是附近的居民，最近发现有异味和噪音，晚上影响休息，已经持续一段时间了。"
           "请问贵局能否安排人员查看一下？如需补充材料请回复本邮件，谢谢！") * 3


def _probe(i: int) -> SentProbe:
    pid, agency = f"r1-{i:05d}", f"agency-{i % 233}"
    token = make_token(pid, SECRET)
    channel = f"box{i % 233}@city{i % 22}.gd.test"
    return SentProbe(pid, "r1", agency, "persona", f"acct-{i % 20}", channel,
                     SENT + timedelta(minutes=17 * i), message_id(token, "mail.test", "n1"),
                     token, fingerprints(details_for(pid, agency, "广州", date(2015, 11, 2), 3)),
                     (channel,), (f"city{i % 22}.gd.test",))


def _message(n: int, p: SentProbe, rng: random.Random) -> IncomingMessage:
    at, roll, key = p.sent_at + timedelta(hours=rng.randrange(1, 400)), rng.random(), f"m{n}"
    base = {"key": key, "account": p.account, "received_at": at}
    if roll < 0.3:
        return IncomingMessage(**base, from_address="x@elsewhere.test",
                               in_reply_to=p.message_id or "", quoted_text="> " + _FILLER,
                               new_text="已收到，谢谢。")
    if roll < 0.5:
        return IncomingMessage(**base, from_address="x@elsewhere.test", new_text="已转交属地处理。",
                               quoted_text=f"{_FILLER}{p.fingerprints[0]}{_FILLER}"
                                           f"{p.fingerprints[2]}")
    if roll < 0.65:
        return IncomingMessage(**base, from_address=p.channel_address or "", new_text=_FILLER)
    if roll < 0.7:
        return IncomingMessage(**base, kind="bounce", from_address="postmaster@mx.test",
                               returned_message_ids=(p.message_id or "",))
    return IncomingMessage(**base, kind="unrelated", from_address="ad@shop.test",
                           new_text=_FILLER * 3)


def workload(n_msgs: int, n_probes: int, seed: int = 0) -> tuple[list[SentProbe],
                                                                 list[IncomingMessage]]:
    """A campaign and a mailbox stream: token replies, quoted letters, address-only replies,
    bounces and long unrelated mail, in roughly the mix a round produces."""
    rng = random.Random(seed)
    probes = [_probe(i) for i in range(n_probes)]
    return probes, [_message(n, probes[rng.randrange(n_probes)], rng) for n in range(n_msgs)]


def naive(msgs: list[IncomingMessage], probes: list[SentProbe]) -> int:
    hits = 0
    for m in msgs:
        text = m.new_text + m.quoted_text
        hits += sum(1 for p in probes if sum(fp in text for fp in p.fingerprints) >= 2)
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=1_000)
    args = parser.parse_args()
    probes, msgs = workload(args.messages, args.probes)
    start = time.perf_counter()
    results = match_messages(msgs, probes, SECRET)
    ours = time.perf_counter() - start
    sample = msgs[:500]
    start = time.perf_counter()
    naive(sample, probes)
    base = (time.perf_counter() - start) / len(sample)
    attached = sum(r.probe_id is not None for r in results)
    print(f"{args.messages:,} messages x {args.probes:,} probes; attached {attached:,}")
    print(f"{'mailprobe match_messages (indexed)':<44} {args.messages / ours:>10,.0f} msg/s")
    print(f"{'naive fingerprint scan (500-message sample)':<44} {1 / base:>10,.0f} msg/s")
    print(f"ratio: {base * args.messages / ours:.0f}x faster than the naive scan")


if __name__ == "__main__":
    main()
