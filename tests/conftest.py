"""Shared fixtures: small files written into tmp_path, the bundled rubrics."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

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
