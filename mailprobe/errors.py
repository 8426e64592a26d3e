"""One error root for everything mailprobe reports to a user, with typed subclasses."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CalendarError",
    "ConfigError",
    "InputError",
    "MailprobeError",
    "RubricError",
    "SheetError",
]


class MailprobeError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero.

    ``source`` names the file (or other input), ``location`` the key, row or column
    inside it, ``expected`` what was wanted and ``got`` what was found. ``hint`` says
    what to do next where that is not obvious.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        location: str | None = None,
        expected: str | None = None,
        got: object = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.source = str(source) if source is not None else None
        self.location = location
        self.expected = expected
        self.got = got
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ": ".join(part for part in (self.source, self.location) if part)
        text = f"{where}: {self.message}" if where else self.message
        details = []
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        if self.got is not None:
            details.append(f"got {_shown(self.got)}")
        if details:
            text += f" ({', '.join(details)})"
        if self.hint:
            text += f"; {self.hint}"
        return text.replace("\n", " ")

    def __str__(self) -> str:
        return self.one_line()


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


class ConfigError(MailprobeError, ValueError):
    """A configuration file (TOML under config/ or schedules/) is wrong."""


class RubricError(ConfigError):
    """An indicator system does not hold together: sums, steps, names."""


class InputError(MailprobeError, ValueError):
    """A data file given by the user (agency list, score sheet, records) is wrong."""


class SheetError(InputError):
    """A score sheet cell, header or row is wrong."""


class CalendarError(MailprobeError, ValueError):
    """The work calendar cannot answer without guessing (unknown year, naive time)."""
