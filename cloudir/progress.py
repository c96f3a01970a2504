"""Progress of long work (timeline ingest, verify), for whichever front end shows it.

The work calls a :data:`ProgressCallback` with how much of how much is done (bytes of input, bytes hashed, percent of
a cloud operation); the CLI draws a bar on a terminal and shows nothing when piped, the playbook engine and the
handlers pass none (or a quiet console).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cloudir.textsafe import esc

if TYPE_CHECKING:
    from rich.console import Console

ProgressCallback = Callable[[int, int], None]  # (done, total), in the unit the work names (bytes)


def _unheard(done: int, total: int) -> None:
    """Progress nobody is shown."""


@contextmanager
def operation_progress(console: Console, label: str) -> Iterator[ProgressCallback]:
    """Progress of one long-running cloud operation (a snapshot, image, copy or restore point) on the step's console:
    a bar on a terminal (a total of 0: not known yet), nothing when it is piped or quiet (the engine's)."""
    if console.quiet or not console.is_terminal:
        yield _unheard
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn(esc(label)), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update
