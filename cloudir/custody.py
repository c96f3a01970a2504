"""Hash-chained chain-of-custody log (JSON Lines) and its offline verification.

Each record holds the previous record's hash and its own hash over its canonical JSON form
(sorted keys, no whitespace, without the ``hash`` field). Changing a byte, deleting a record or
reordering records breaks the chain at a named sequence number.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir import TOOL_NAME, __version__
from cloudir.hashing import sha256_file

CUSTODY_FILE = "custody.jsonl"
GENESIS_HASH = "0" * 64

# Files in a case folder that are working state, not evidence.
NON_EVIDENCE_FILES = frozenset({CUSTODY_FILE, "state.json"})
NON_EVIDENCE_SUFFIXES = (".wal", ".tmp", ".lock")


def utc_now() -> str:
    """Current UTC time as ISO 8601 with microseconds and a Z suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON encoding used for record hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over a record's canonical form, excluding its own ``hash`` field."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def local_operator() -> str:
    """The local account running the tool, as user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class ApiCall:
    """One cloud API call made by the tool."""

    service: str
    operation: str
    region: str | None
    request_id: str | None
    outcome: str  # "ok" or the error code
    time: str = field(default_factory=utc_now)
    http_status: int | None = None
    client_request_id: str | None = None  # id the tool sent (Azure x-ms-client-request-id), as audit logs show it

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form stored in custody records."""
        return {
            "service": self.service,
            "operation": self.operation,
            "region": self.region,
            "request_id": self.request_id,
            "outcome": self.outcome,
            "time": self.time,
            "http_status": self.http_status,
            "client_request_id": self.client_request_id,
        }


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact written to the case: path relative to the case root, hash and size."""

    path: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form stored in custody records."""
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


class CustodyLog:
    """Append-only writer for ``custody.jsonl``; thread-safe."""

    def __init__(self, path: Path, case_id: str) -> None:
        self.path = path
        self.case_id = case_id
        self.caller: dict[str, str] = {"operator": local_operator()}
        self._lock = threading.Lock()
        self._seq, self._last_hash = self._tail()

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists():
            return 0, GENESIS_HASH
        last: dict[str, Any] | None = None
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    last = json.loads(line)
        if last is None:
            return 0, GENESIS_HASH
        return int(last["seq"]), str(last["hash"])

    @property
    def head(self) -> str:
        """Hash of the newest record (the value to note down outside the case)."""
        return self._last_hash

    @property
    def length(self) -> int:
        """Number of records written."""
        return self._seq

    def append(
        self,
        action: str,
        *,
        target: str | None = None,
        outcome: str = "ok",
        api_calls: list[ApiCall] | None = None,
        artifacts: list[ArtifactRef] | None = None,
        details: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """Append one record and return it (with its hash)."""
        with self._lock:
            record: dict[str, Any] = {
                "seq": self._seq + 1,
                "time": utc_now(),
                "tool": TOOL_NAME,
                "tool_version": __version__,
                "case_id": self.case_id,
                "caller": dict(self.caller),
                "action": action,
                "target": target,
                "outcome": outcome,
                "error": error,
                "api_calls": [call.as_dict() for call in api_calls or []],
                "artifacts": [artifact.as_dict() for artifact in artifacts or []],
                "details": details or {},
                "prev_hash": self._last_hash,
            }
            record["hash"] = record_hash(record)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(canonical_json(record).decode() + "\n")
                handle.flush()
            self._seq = record["seq"]
            self._last_hash = record["hash"]
            return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read every custody record (no verification)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass
class VerifyResult:
    """Outcome of ``cloudir verify``."""

    ok: bool
    records: int = 0
    artifacts_checked: int = 0
    head: str = GENESIS_HASH
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def first_problem(self) -> str | None:
        """The first break found, in chain order then artifact order."""
        return self.problems[0] if self.problems else None


def _verify_chain(lines: list[str], result: VerifyResult) -> dict[str, tuple[str, int, int]]:
    """Check sequence and hash links; return the newest recorded hash per artifact path."""
    artifacts: dict[str, tuple[str, int, int]] = {}
    prev_hash = GENESIS_HASH
    for index, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            result.problems.append(f"custody record {index}: not valid JSON (line {index} was altered)")
            return artifacts
        seq = record.get("seq")
        if seq != index:
            result.problems.append(
                f"custody record {index}: sequence is {seq}, expected {index} (a record was deleted or reordered)"
            )
            return artifacts
        if record.get("prev_hash") != prev_hash:
            result.problems.append(
                f"custody record {seq}: prev_hash does not match record {seq - 1} "
                "(a record was deleted, inserted or reordered)"
            )
            return artifacts
        if record_hash(record) != record.get("hash"):
            result.problems.append(f"custody record {seq}: content does not match its hash (record was altered)")
            return artifacts
        for artifact in record.get("artifacts", []):
            artifacts[artifact["path"]] = (artifact["sha256"], int(artifact["size"]), seq)
        prev_hash = record["hash"]
        result.records = seq
        result.head = prev_hash
    return artifacts


def verify_case(case_dir: Path, expect_head: str | None = None) -> VerifyResult:
    """Recompute the custody chain and every recorded artifact's SHA-256, offline."""
    result = VerifyResult(ok=False)
    custody_path = case_dir / CUSTODY_FILE
    if not custody_path.is_file():
        result.problems.append(f"{custody_path}: no custody log in this folder")
        return result
    lines = [line for line in custody_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    artifacts = _verify_chain(lines, result)
    if result.problems:
        return result
    if expect_head is not None and expect_head != result.head:
        result.problems.append(
            f"custody chain head is {result.head}, expected {expect_head} (records were removed or added at the end)"
        )
    for rel_path, (expected, size, seq) in artifacts.items():
        file_path = case_dir / rel_path
        if not file_path.is_file():
            result.problems.append(f"artifact {rel_path} (recorded in record {seq}) is missing")
            continue
        actual, actual_size = sha256_file(file_path)
        result.artifacts_checked += 1
        if actual != expected or actual_size != size:
            result.problems.append(
                f"artifact {rel_path}: SHA-256 {actual} does not match {expected} recorded in record {seq}"
            )
    for file_path in sorted(case_dir.rglob("*")):
        rel = file_path.relative_to(case_dir).as_posix()
        if (
            file_path.is_file()
            and rel not in artifacts
            and rel not in NON_EVIDENCE_FILES
            and not rel.endswith(NON_EVIDENCE_SUFFIXES)
        ):
            result.warnings.append(f"{rel}: present in the case folder but not recorded in the custody log")
    result.ok = not result.problems
    return result
