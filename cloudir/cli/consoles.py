"""The CLI's two consoles: results on stdout, progress, notes and errors on stderr."""

from __future__ import annotations

from rich.console import Console

from cloudir.textsafe import text_console

console = text_console()
err_console = text_console(stderr=True)


def say(out: Console, text: str) -> None:
    """Print a line of the tool's markup: word-wrapped on a terminal, whole (never cut) when piped."""
    out.print(text, soft_wrap=not out.is_terminal)
