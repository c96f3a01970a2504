"""A Python child process of this interpreter that talks with its parent over a socket pair.

Unlike multiprocessing's spawn, the child does not import the parent's ``__main__`` (a script without a main guard,
a serverless runtime's bootstrap), and unlike fork it copies no threads' locks: it runs one function of an importable
module, ``entry(control)``, with the same module path as the parent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import IO


def start_child(
    module: str, function: str, *, stderr: IO[bytes] | None = None
) -> tuple[Connection, subprocess.Popen[bytes]]:
    """Run ``module.function(control)`` in a new process; the parent's end of ``control`` and the process.

    ``stderr``: a file for the child's standard error (by default the parent's).
    """
    ours, theirs = socket.socketpair()
    code = (
        "import sys; from multiprocessing.connection import Connection; "
        f"import {module} as m; m.{function}(Connection(int(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module of ours
        [sys.executable, "-c", code, str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env, stderr=stderr
    )
    theirs.close()
    return Connection(ours.detach()), process
