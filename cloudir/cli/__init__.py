"""The cloudir command line: a thin layer over the library."""

from cloudir.cli import (  # noqa: F401 - registers commands
    analyze,
    aws,
    aws_logs,
    azure,
    core,
    demo,
    gcp,
    respond,
    timeline,
)
from cloudir.cli.apps import app


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cloudir")
