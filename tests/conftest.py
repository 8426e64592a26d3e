"""Shared fixtures: small files written into tmp_path, the bundled rubrics."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mailprobe.rubric import Rubric, load_rubric

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def city() -> Rubric:
    return load_rubric("city")


@pytest.fixture(scope="session")
def county() -> Rubric:
    return load_rubric("county")


WriteCsv = Callable[[str, Sequence[str], Sequence[Sequence[object]]], Path]


@pytest.fixture
def write_csv(tmp_path: Path) -> WriteCsv:
    def write(name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
        path = tmp_path / name
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    return write


# Debian's package; MAILPROBE_CHROMIUM points elsewhere on other systems.
CHROMIUM = Path(os.environ.get("MAILPROBE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    # On CI a missing browser is a broken build, not a reason to skip the check.
    if _in_ci():
        pytest.fail(f"{reason}; run scripts/install-system-deps.sh", pytrace=False)
    pytest.skip(f"{reason}; run scripts/install-system-deps.sh to enable the browser tests")


# Module scope: Playwright keeps an event loop running while it is open, which would
# break asyncio.run in the async tests that follow in the same process.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (Debian package 'chromium')")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
            )
        except Exception as error:  # Chromium present but broken: always a failure
            pytest.fail(f"{CHROMIUM} did not start: {error}", pytrace=False)
        yield chromium
        chromium.close()


@pytest.fixture
def dovecot() -> Iterator[Any]:
    """A fresh Dovecot with two users; fails (never skips) in CI when it cannot start."""
    from tests.servers import DovecotServer, in_ci

    # Not under pytest's 0700 tmp folder: Dovecot's mail processes run as nobody.
    root = Path(tempfile.mkdtemp(prefix="mailprobe-dovecot-"))
    server = DovecotServer(root, {"citizen1@mail.test": "secret-1",
                                  "citizen2@mail.test": "secret-2"})
    try:
        server.start()
    except (RuntimeError, OSError, PermissionError) as error:
        if in_ci():
            pytest.fail(f"Dovecot could not start: {error}", pytrace=False)
        pytest.skip(f"Dovecot could not start: {error}; run scripts/install-system-deps.sh")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """aiosmtpd on an ephemeral loopback port, recording what it accepts."""
    from tests.servers import SmtpServer

    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@contextmanager
def report_page(browser: Any, report: Any, folder: Path, *, width: int = 1100) -> Iterator[Any]:
    """A report rendered to ``folder`` and opened in Chromium; ``page.requests`` lists
    every URL the page asked for, so a test can check that nothing left the machine."""
    from mailprobe.report import render_html

    html = folder / "report.html"
    html.write_text(render_html(report), encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(html.as_uri(), wait_until="load")
    page.evaluate("document.fonts.ready")
    page.requests = requests
    try:
        yield page
    finally:
        page.close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the real entry point; return (exit status, stdout, stderr)."""
    from mailprobe.cli import run

    try:
        run(list(argv))
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err
