"""Every command is documented in the README and shows an example in its --help."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from mailprobe.cli import main
from tests.conftest import ROOT


def _commands(group: click.Group, prefix: str = "mailprobe") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield full, command
            yield from _commands(command, full)
        else:
            yield full, command


COMMANDS = list(_commands(main))


def test_there_are_commands() -> None:
    assert {"mailprobe rank", "mailprobe report", "mailprobe demo"} <= {c for c, _ in COMMANDS}


@pytest.mark.parametrize("name", [c for c, _ in COMMANDS])
def test_command_is_in_the_readme(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{name}" in readme, f"README.md has no section or example for `{name}`"


@pytest.mark.parametrize("name", [c for c, _ in COMMANDS])
def test_help_has_an_example(name: str) -> None:
    result = CliRunner().invoke(main, [*name.split()[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "mailprobe " in result.output


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    assert "mailprobe demo" in first_block and "scripts/test" in first_block
