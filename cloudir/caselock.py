"""One writer per case: an exclusive OS file lock on ``CASE/case.lock``, held for a whole command.

Another process on the same case waits (with a message) or, with ``--no-wait``, fails at once naming the
holder. Inside one process the lock is re-entrant for the thread that holds it, and other threads wait,
so two deliveries handled by threads of one function host are serialised too.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cloudir.errors import CloudirError

if TYPE_CHECKING:
    from cloudir.custody import CustodyLog

LOCK_FILE = "case.lock"

_wait_by_default = True


def set_wait_by_default(wait: bool) -> None:
    """Whether a busy case is waited for (the default) or refused at once (``cloudir --no-wait``)."""
    global _wait_by_default  # noqa: PLW0603 - one process-wide setting from the command line
    _wait_by_default = wait


def command_purpose() -> str:
    """What this process is doing, as recorded in the lock file (its command line)."""
    return " ".join(["cloudir", *sys.argv[1:]])[:300]


class CaseBusyError(CloudirError):
    """Another command holds the case."""

    def __init__(self, root: Path, holder: str, purpose: str) -> None:
        super().__init__(
            f"case {root} is in use by {holder}", hint="wait for it to finish, or run again without --no-wait"
        )
        self.purpose = purpose


@dataclass
class _Holder:
    """This process's hold on one case."""

    rlock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    fd: int | None = None
    purpose: str = ""
    custody: CustodyLog | None = None  # the one writer shared by every Case object open on this root


_HOLDERS: dict[Path, _Holder] = {}
_REGISTRY = threading.Lock()


def _owner(fd: int) -> tuple[str, str]:
    """(description, purpose) of the process holding the lock, from what it wrote into the file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", errors="replace") or "{}")
        return f"pid {info['pid']} ({info['purpose']}, since {info['since']})", str(info["purpose"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process", ""


class CaseLock:
    """A held lock on one case folder; release it exactly once."""

    def __init__(self, root: Path, holder: _Holder) -> None:
        self.root = root
        self._holder = holder
        self._released = False

    @property
    def custody(self) -> CustodyLog | None:
        """The custody writer of whichever Case first opened this root in this process."""
        return self._holder.custody

    @custody.setter
    def custody(self, log: CustodyLog) -> None:
        self._holder.custody = log

    @classmethod
    def acquire(
        cls, root: Path, *, purpose: str | None = None, wait: bool | None = None, notify: Callable[[str], None]
    ) -> CaseLock:
        """Take the case lock (``root`` must exist), waiting or failing fast when another command holds it."""
        wait = _wait_by_default if wait is None else wait
        purpose = purpose or command_purpose()
        root = root.resolve()
        with _REGISTRY:
            holder = _HOLDERS.setdefault(root, _Holder())
        if not holder.rlock.acquire(blocking=False):
            if not wait:
                raise CaseBusyError(root, f"another thread of this process ({holder.purpose})", holder.purpose)
            notify(f"waiting for another thread of this process ({holder.purpose}) to release case {root}")
            holder.rlock.acquire()
        try:
            if holder.depth == 0:
                holder.fd = cls._lock_file(root, purpose, wait, notify)
                holder.purpose = purpose
            holder.depth += 1
        except BaseException:
            holder.rlock.release()
            raise
        return cls(root, holder)

    @staticmethod
    def _lock_file(root: Path, purpose: str, wait: bool, notify: Callable[[str], None]) -> int:
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                description, other_purpose = _owner(fd)
                if not wait:
                    raise CaseBusyError(root, description, other_purpose) from None
                notify(f"waiting for {description} to release case {root}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            owner = {"pid": os.getpid(), "purpose": purpose, "since": datetime.now(UTC).isoformat()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @property
    def outermost(self) -> bool:
        """Whether this is the only open hold in this process (the one that took the file lock)."""
        return self._holder.depth == 1

    def release(self) -> None:
        """Give the hold back; the file lock goes when the outermost hold does."""
        if self._released:
            return
        self._released = True
        holder = self._holder
        holder.depth -= 1
        if holder.depth == 0 and holder.fd is not None:
            fcntl.flock(holder.fd, fcntl.LOCK_UN)
            os.close(holder.fd)
            holder.fd = None
            holder.custody = None
        holder.rlock.release()
