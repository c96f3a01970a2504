"""Step status on the CLI's stderr: a line as each step ends and, on a terminal, a live row per running step."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.text import Text

from cloudir.plan import Step
from cloudir.progress import live_rows
from cloudir.textsafe import esc

_STATUS_STYLE = {
    "running": "cyan",
    "done": "green",
    "resumed": "dim green",
    "failed": "bold red",
    "blocked": "yellow",
    "interrupted": "bold yellow",
}


def _line(step: Step, status: str) -> Text:
    return Text.from_markup(f"[{_STATUS_STYLE.get(status, 'white')}]{status:>8}[/] {esc(step.title)}")


class StepLines:
    """A plan observer that prints one line per finished, resumed, failed, blocked or interrupted step, in the order
    they end. On a terminal every running step also has its own row below those lines (steps of concurrent lanes
    each have one), removed when the step ends; piped output gets only the lines."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._rows = live_rows(console)  # shared with the running steps' operation bars
        self._lock = threading.Lock()

    def __call__(self, step: Step, status: str) -> None:
        """Show that ``step`` is now ``status``."""
        with self._lock:
            if status == "running":
                if self._console.is_terminal:
                    self._rows.show(("step", step.id), _line(step, status))
            else:
                self._rows.print(_line(step, status))  # above the live rows while they are shown
                self._rows.remove(("step", step.id))
