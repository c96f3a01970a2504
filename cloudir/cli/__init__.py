"""The cloudir command line: a thin layer over the library."""

from cloudir.cli import analyze, aws, core, demo, respond  # noqa: F401 - registers commands
from cloudir.cli import timeline  # noqa: F401 - registers commands
from cloudir.cli import gcp  # noqa: F401 - registers commands
from cloudir.cli import aws_logs  # noqa: F401 - registers commands
from cloudir.cli import azure  # noqa: F401 - registers commands
from cloudir.cli.apps import app


def main() -> None:
    """Console-script entry point."""
    app()
