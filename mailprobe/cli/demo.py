"""`mailprobe demo`: replay the 2015 Guangdong campaign on this machine and write the report."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import click

from mailprobe.cli import main
from mailprobe.demo import DemoResult, Progress, RoundCounts, run_demo

_ZONE = ZoneInfo("Asia/Shanghai")
_REDRAW = 0.1  # seconds between two redraws of the progress line on a terminal


class _ProgressLine:
    """One line on stderr: redrawn in place on a terminal, else one line per simulated week."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = 0.0
        self.week: tuple[int, int] | None = None
        self.last: Progress | None = None

    def __call__(self, p: Progress) -> None:
        self.last = p
        if self.tty:
            if time.monotonic() - self.drawn >= _REDRAW:
                self.drawn = time.monotonic()
                self.stream.write(f"\r{_line(p)}\x1b[K")
                self.stream.flush()
            return
        week = p.now.astimezone(_ZONE).isocalendar()[:2]
        if week != self.week:
            self.week = week
            self.stream.write(_line(p) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.last is not None:
            self.stream.write(f"\r{_line(self.last)}\x1b[K\n" if self.tty
                              else f"{_line(self.last)}\n")
            self.stream.flush()


def _line(p: Progress) -> str:
    local = p.now.astimezone(_ZONE)
    return (f"模拟时间 {local:%Y-%m-%d %H:%M} 周{'一二三四五六日'[local.weekday()]} │ "
            f"已发出 {p.sent + p.submitted}/{p.probes} 封（含网上表单 {p.submitted}）│ "
            f"收到回信 {p.delivered} 封，已匹配 {p.matched} 封")


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out/demo-2015"), show_default=True,
              help="Folder for the report and the demo's database (demo.db, new each run).")
@click.option("--seed", type=int, default=2015, show_default=True,
              help="Seed of the simulated agencies: the same seed, the same answers.")
@click.option("--cities", type=click.IntRange(min=1), metavar="N",
              help="Probe only the bureaus of the first N cities (所属地市, 21 in all): a "
                   "shorter run.")
@click.option("--quiet", is_flag=True, help="No progress line on stderr.")
def demo_command(out: Path, seed: int, cities: int | None, quiet: bool) -> None:
    """Replay the 2015 Guangdong campaign here, weeks in minutes, and write the report.

    Both rounds of schedules/ go to the 22 city sites and the 96 county bureaus with a
    site (samples/2015), from a fresh SQLite database, through a real SMTP server
    (aiosmtpd) and a real IMAP server (pymap) on loopback ports. Simulated agencies answer
    like real ones: promptly, after a receipt, late, never, from another address, in GBK
    from Foxmail or QQ Mail; some channels bounce. A manual clock jumps from event to
    event; sending, watching, classifying, matching and timing all run for real. Needs no
    configuration, no root and no network; passwords are generated and never shown.

    \b
    Example:
      mailprobe demo
      mailprobe demo --out out/demo-2015 --seed 7
      mailprobe demo --cities 3 --quiet      # a shorter run
    """
    logging.basicConfig(level=logging.WARNING, format="mailprobe: %(levelname)s %(message)s")
    progress = None if quiet else _ProgressLine(sys.stderr)
    started = time.monotonic()
    try:
        result = run_demo(out, seed=seed, cities=cities, progress=progress)
    except KeyboardInterrupt:
        raise click.exceptions.Abort() from None
    finally:
        if progress is not None:
            progress.close()
    click.echo(_summary(result, time.monotonic() - started))


def _round_line(label: str, r: RoundCounts) -> str:
    return (f"{label}：{r.probes} 封模拟来信，发出 {r.sent} 封；15 个工作日内答复 {r.in_time}，"
            f"逾期答复 {r.late}，未答复 {r.unanswered}，退信或拒收 {r.bounced}")


def _summary(result: DemoResult, seconds: float) -> str:
    rounds = result.rounds
    total = RoundCounts("all", "合计", *(sum(getattr(r, f) for r in rounds) for f in (
        "probes", "sent", "in_time", "late", "unanswered", "bounced")))
    lines = [_round_line(r.name, r) for r in rounds] + [_round_line("两轮合计", total)]
    for ranked in result.rankings:
        top = "、".join(f"{name} {score:.2f}" for name, score in ranked.top)
        bottom = "、".join(f"{name} {score:.2f}" for name, score in ranked.bottom)
        lines.append(f"{ranked.label}：{ranked.sites} 个网站参评；前三 {top}；末三 {bottom}")
    d = result.delivered
    lines.append(
        f"邮件：SMTP 服务器收下 {result.smtp_accepted} 封（每封来信一次）；各单位方面寄回 "
        f"{sum(d.values())} 封（答复 {d.get('reply', 0)}、回执 {d.get('acknowledgement', 0)}、"
        f"自动回复 {d.get('auto_reply', 0)}、退信 {d.get('bounce', 0)}），自动匹配 "
        f"{result.matched} 封，待人工复核 {result.review} 封")
    lines.append(f"模拟至 {_local(result.as_of)}，{result.ticks} 次 worker tick，"
                 f"用时 {seconds:.0f} 秒；数据库 {result.database}")
    lines.append(f"\nreport written: {result.report}")
    return "\n".join(lines)


def _local(when: datetime) -> str:
    return f"{when.astimezone(_ZONE):%Y-%m-%d}"
