"""The command line: a thin layer that parses, calls one library function and prints."""

from __future__ import annotations

import importlib
import sys

import click

from mailprobe.errors import MailprobeError

__all__ = ["main", "run"]

# Each module adds its commands to ``main``; one file per area keeps the CLI thin.
_COMMAND_MODULES = (
    "mailprobe.cli.classify",
    "mailprobe.cli.engine",
    "mailprobe.cli.timing",
    "mailprobe.cli.store",
    "mailprobe.cli.campaign",
    "mailprobe.cli.watch",
    "mailprobe.cli.review",
    "mailprobe.cli.responses",
    "mailprobe.cli.overrides",
    "mailprobe.cli.demo",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mailprobe")
def main() -> None:
    """mailprobe: probe government websites as citizens, time the replies, rank the sites.

    \b
    Example:
      mailprobe demo
    """


for _name in _COMMAND_MODULES:
    importlib.import_module(_name)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: bad input becomes one line on stderr and exit status 1."""
    try:
        # Without standalone mode click returns a command's exit status instead of exiting.
        status = main.main(args=argv, prog_name="mailprobe", standalone_mode=False)
    except MailprobeError as exc:
        click.echo(f"mailprobe: error: {exc.one_line()}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("mailprobe: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(141)
    if isinstance(status, int) and status:
        sys.exit(status)
