"""Where mailprobe finds its bundled configuration, templates, schedules and samples."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["config_dir", "project_root", "samples_dir", "schedules_dir", "templates_dir"]


def project_root() -> Path:
    """The folder holding config/, templates/, schedules/ and samples/.

    ``MAILPROBE_HOME`` overrides it, so that an evaluation team can keep its own
    rubrics and schedules outside the source tree.
    """
    home = os.environ.get("MAILPROBE_HOME")
    if home:
        return Path(home)
    return Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    return project_root() / "config"


def templates_dir() -> Path:
    return project_root() / "templates"


def schedules_dir() -> Path:
    return project_root() / "schedules"


def samples_dir() -> Path:
    return project_root() / "samples"
