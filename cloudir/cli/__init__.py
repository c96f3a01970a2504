"""The cloudir command line: a thin layer over the library."""

from cloudir.cli import core  # noqa: F401 - registers commands
from cloudir.cli.apps import app


def main() -> None:
    """Console-script entry point."""
    app()
