"""Progress of long work (timeline ingest, verify), for whichever front end shows it.

The work calls a :data:`ProgressCallback` with how much of how much is done (bytes of input, bytes hashed); the CLI
draws a bar on a terminal and shows nothing when piped, the playbook engine and the handlers pass none.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]  # (done, total), in the unit the work names (bytes)
