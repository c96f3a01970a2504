"""Local paths from data: names that the cloud, and so an attacker, chose (object keys, finding ids), and links.

An object key is copied into the case as a relative path only when it is already one plain relative POSIX path
(nothing to normalise away) and no other object of the same download claims the same file, a folder of it, or the
temporary file it is written through; anything else is refused with a reason, and the rest of the download goes on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from cloudir.case import safe_name

TEMP_SUFFIX = ".tmp"  # the case writes each artifact through <name>.tmp, renamed when complete
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ID_FOLDER_CHARS = 64


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be used as a relative path as it is; None when it can."""
    problems = (
        (not key, "empty name"),
        (_CONTROL.search(key) is not None, "NUL or control character"),
        ("\\" in key, "backslash"),
        (key.startswith("/") or re.match(r"[A-Za-z]:", key) is not None, "absolute path"),
        (".." in key.split("/"), "'..' segment"),
        ("." in key.split("/"), "'.' segment"),
        ("" in key.split("/"), "empty segment ('//' or a trailing '/')"),
    )
    return next((reason for bad, reason in problems if bad), None)


class PathClaims:
    """Local files claimed by one download; refuses a key that is unsafe or collides with an earlier claim.

    A collision is the same file twice, a file where another object needs a folder, or the temporary file of
    another object; the first claim wins (callers claim in key order). Names differing only in case are distinct.
    """

    def __init__(self) -> None:
        self._files: dict[str, str] = {}  # path -> key that claimed it
        self._folders: dict[str, str] = {}

    def claim(self, key: str, paths: Iterable[str]) -> str | None:
        """Claim ``paths`` (each built from ``key`` under a fixed folder) for ``key``; the refusal reason or None."""
        problem = key_problem(key)
        if problem is not None:
            return f"unsafe name: {problem}"
        wanted = list(paths)
        for path in wanted:
            folders = _parents(path)
            for taken in (path, path + TEMP_SUFFIX):
                owner = self._files.get(taken) or self._folders.get(taken)
                if owner is not None:
                    return f"collides with {owner!r}"
            owner = next((self._files[f] for f in folders if f in self._files), None)
            if owner is not None:
                return f"collides with {owner!r}"
        for path in wanted:
            self._files[path] = self._files[path + TEMP_SUFFIX] = key
            self._folders.update(dict.fromkeys(_parents(path), key))
        return None


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def path_part(value: str) -> str:
    """One path component for a name from data (a log group, a resource or user name): collision-free.

    A name that is already a plain component (letters, digits, ``._=@+-``, not hidden, at most 128 characters) is
    kept as it is; any other becomes its escaped form, ``~`` and a short hash of the name. No kept name contains
    ``~``, so ``a/b`` (``a_b~<hash>``) never lands where ``a_b`` does.
    """
    if safe_name(value) == value and len(value) <= 2 * ID_FOLDER_CHARS:
        return value
    return f"{safe_name(value)[:ID_FOLDER_CHARS]}~{_short_hash(value)}"


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def id_folder(value: str) -> str:
    """A file or folder name for an attacker-chosen id (a finding id): escaped id plus a short hash of the id.

    Distinct ids never share a name (``finding/1`` and ``finding_1`` differ by their hash).
    """
    return f"{safe_name(value)[:ID_FOLDER_CHARS]}-{_short_hash(value)}"


def files_under(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files under ``folder`` (recursively, in name order, hidden names skipped), without following links out.

    A symbolic link whose target lies outside ``folder`` is not read: it is returned with the reason instead, so
    a planted link to a credentials file never reaches the timeline. Linked folders are not descended into.
    """
    root = folder.resolve()
    kept: list[Path] = []
    refused: list[tuple[str, str]] = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.resolve().is_relative_to(root):
            kept.append(path)
        else:
            refused.append((str(path), f"symbolic link to a file outside {folder}, not followed"))
    return kept, refused
