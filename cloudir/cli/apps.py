"""The typer applications that command modules attach to."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cloudir import __version__
from cloudir.caselock import set_wait_by_default
from cloudir.cli.common import command_scope, err_console
from cloudir.errors import CloudirError
from cloudir.textsafe import esc


class CloudirGroup(TyperGroup):
    """Root command group: expected errors become one line and an exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command, turning errors into messages."""
        try:
            with command_scope():
                return super().invoke(ctx)
        except CloudirError as exc:
            err_console.print(f"[bold red]error:[/] {esc(exc)}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            if os.environ.get("CLOUDIR_DEBUG"):
                raise
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {esc(exc)} (set CLOUDIR_DEBUG=1 for a traceback)",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None


def sub_app(help_text: str) -> typer.Typer:
    """A command group: plain-text help (readable in any terminal, no rich import at start)."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False)


app = typer.Typer(
    cls=CloudirGroup,
    help="cloudir: preserve cloud evidence, collect control-plane logs, build a timeline, find the attacker.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cloudir {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the cloud SDKs' own log messages on stderr.")
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            envvar="CLOUDIR_NO_WAIT",
            help="Fail at once when another command holds the case (default: wait).",
        ),
    ] = False,
) -> None:
    """cloudir: preserve cloud evidence, collect control-plane logs, build a timeline, find the attacker."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:  # a handler on the root logger keeps SDK warnings off the terminal (no last-resort printing)
        logging.getLogger().addHandler(logging.NullHandler())
    set_wait_by_default(not no_wait)


acquire_app = sub_app("Preserve a target and acquire its evidence (snapshots, copies, metadata, raw images).")
contain_app = sub_app("Contain a target after acquisition: isolate the network, revoke credentials.")
logs_app = sub_app("Control-plane log collection.")
pull_app = sub_app("Pull control-plane logs for a window and scope into a case, raw pages kept as evidence.")

app.add_typer(acquire_app, name="acquire")
app.add_typer(contain_app, name="contain")
logs_app.add_typer(pull_app, name="pull")
app.add_typer(logs_app, name="logs")
