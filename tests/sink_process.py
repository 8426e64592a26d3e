"""An SMTP sink in its own process, so killing a worker never kills the server it talks to.

Run ``python -m tests.sink_process [--record FILE] [--delay S] [--refuse ADDR=ANSWER]``: it
prints ``port N`` once it listens on 127.0.0.1, then serves until SIGTERM. With
``--record``, every message it accepts is appended to FILE as ``Message-ID<TAB>recipient``
before it answers, so a message counts as delivered even when the client dies waiting for
the answer (exactly the case that must end up "uncertain").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Sink", "read_record"]

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class _Handler:
    record: int | None  # an O_APPEND file descriptor: one write per message is atomic
    delay: float
    refuse: dict[str, str] = field(default_factory=dict)
    count: int = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        if self.record is not None:
            content = bytes(envelope.original_content or b"")
            found = _MESSAGE_ID.search(content)
            mid = found.group(1).decode("ascii", "replace") if found else "-"
            line = f"{mid}\t{','.join(envelope.rcpt_tos)}\n".encode()
            os.write(self.record, line)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 Ok: queued"


async def _serve(handler: _Handler) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="sink.test"),
                                      "127.0.0.1", 0)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    print(f"accepted {handler.count}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--refuse", action="append", default=[], metavar="ADDR=ANSWER")
    args = parser.parse_args(argv)
    fd = (os.open(args.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
          if args.record else None)
    refuse = dict(item.split("=", 1) for item in args.refuse)
    asyncio.run(_serve(_Handler(fd, args.delay, refuse)))


class Sink:
    """Starts the sink as a child process; ``stop()`` ends it and returns what it accepted."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.sink_process", *args], cwd=ROOT,
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline().split()
        if first[:1] != ["port"]:
            self.process.kill()
            raise RuntimeError(f"the sink did not start: {first}")
        self.port = int(first[1])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        found = re.search(r"accepted (\d+)", out or "")
        return int(found.group(1)) if found else -1

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            self.stop()


def read_record(path: Path) -> list[tuple[str, str]]:
    """(Message-ID, recipients) of every message the sink accepted, in order."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(mid, rcpt) for mid, rcpt in (line.split("\t", 1) for line in lines)]


if __name__ == "__main__":
    main()
