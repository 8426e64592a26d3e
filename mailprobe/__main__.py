"""``python -m mailprobe`` runs the command line."""

from mailprobe.cli import run

run()
