"""Step status on the CLI's stderr: a line as each step ends and, on a terminal, a live row per running step."""

from __future__ import annotations

import threading

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cloudir.plan import Step
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
        self._running: dict[str, Text] = {}  # the running steps' rows, in the order they started
        self._live: Live | None = None
        self._lock = threading.Lock()

    def __call__(self, step: Step, status: str) -> None:
        """Show that ``step`` is now ``status``."""
        with self._lock:
            if status == "running":
                if self._console.is_terminal:
                    self._running[step.id] = _line(step, status)
            else:
                self._running.pop(step.id, None)
                self._console.print(_line(step, status))  # above the live rows while they are shown
            self._show_running()

    def _show_running(self) -> None:
        if not self._running:
            if self._live is not None:
                self._live.stop()
                self._live = None
            return
        rows = Group(*self._running.values())
        if self._live is None:
            # stdout stays the results' (a command piped to a file while stderr is a terminal)
            self._live = Live(rows, console=self._console, transient=True, refresh_per_second=4, redirect_stdout=False)
            self._live.start(refresh=True)
        else:
            self._live.update(rows, refresh=True)
