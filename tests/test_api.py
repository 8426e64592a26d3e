"""The curated public API: every exported name resolves, and importing a stage stays light."""

from __future__ import annotations

import subprocess
import sys

import mailprobe


def test_every_exported_name_resolves() -> None:
    assert all(getattr(mailprobe, name) is not None for name in mailprobe.__all__)


def test_importing_the_package_loads_no_io_libraries() -> None:
    code = ("import sys, mailprobe; print(' '.join(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'sqlalchemy', 'aioimaplib', 'aiosmtplib', 'apscheduler', 'alembic'})))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60).stdout.strip()
    assert found == ""
