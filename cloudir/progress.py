"""Progress of long work (timeline ingest, verify), for whichever front end shows it.

The work calls a :data:`ProgressCallback` with how much of how much is done (bytes of input, bytes hashed, percent of
a cloud operation); the CLI draws a bar on a terminal and shows nothing when piped, the playbook engine and the
handlers pass none (or a quiet console).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cloudir.textsafe import esc

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

ProgressCallback = Callable[[int, int], None]  # (done, total), in the unit the work names (bytes)


def _unheard(done: int, total: int) -> None:
    """Progress nobody is shown."""


class LiveRows:
    """The rows a terminal shows live below the printed lines (running steps, long operations' bars), all in one live
    display: each row is added and removed by its key, so rows of concurrent lanes that end in any order leave the
    others shown (rich's own nested live displays remove the newest one whichever stops)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._rows: dict[object, RenderableType] = {}  # in the order they were added
        self._live: Live | None = None
        self._lock = threading.RLock()

    def show(self, key: object, row: RenderableType) -> None:
        """Show ``row`` (replacing the one under ``key``, in its place)."""
        with self._lock:
            self._rows[key] = row
            self._redraw()

    def remove(self, key: object) -> None:
        """Stop showing the row under ``key``."""
        with self._lock:
            self._rows.pop(key, None)
            self._redraw()

    def print(self, line: RenderableType) -> None:
        """Print ``line`` above the rows."""
        with self._lock:
            self._console.print(line)

    def _redraw(self) -> None:
        from rich.console import Group
        from rich.live import Live

        if not self._rows:
            if self._live is not None:
                self._live.stop()
                self._live = None
            return
        rows = Group(*self._rows.values())
        if self._live is None:
            # stdout stays the results' (a command piped to a file while stderr is a terminal)
            self._live = Live(rows, console=self._console, transient=True, refresh_per_second=4, redirect_stdout=False)
            self._live.start(refresh=True)
        else:
            self._live.update(rows, refresh=True)


_LIVE_ROWS: weakref.WeakKeyDictionary[Console, LiveRows] = weakref.WeakKeyDictionary()
_LIVE_ROWS_LOCK = threading.Lock()


def live_rows(console: Console) -> LiveRows:
    """The one set of live rows of ``console``."""
    with _LIVE_ROWS_LOCK:
        rows = _LIVE_ROWS.get(console)
        if rows is None:
            rows = _LIVE_ROWS[console] = LiveRows(console)
        return rows


@contextmanager
def operation_progress(console: Console, label: str) -> Iterator[ProgressCallback]:
    """Progress of one long-running cloud operation (a snapshot, image, copy or restore point) on the step's console:
    a bar on a terminal (a total of 0: not known yet), left above the live rows when it ends; nothing when it is
    piped or quiet (the engine's)."""
    if console.quiet or not console.is_terminal:
        yield _unheard
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn(esc(label)), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console, auto_refresh=False)  # drawn as a row of the console's live rows
    task = bar.add_task(label, total=None)
    rows, key = live_rows(console), object()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)
        rows.show(key, bar)

    rows.show(key, bar)
    try:
        yield update
    finally:
        rows.print(bar)  # its last state stays in the output, above the rows
        rows.remove(key)
