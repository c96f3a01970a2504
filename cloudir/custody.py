"""Hash-chained chain-of-custody log (JSON Lines) and its offline verification.

Each record is stored as one line of canonical JSON. A record's hash is the SHA-256 of its stored line,
exactly as written; each record names the previous record's hash in ``prev_hash``, and the first one
names ``genesis_hash(case id, creation time)``. Appends are one write and an fsync; a line torn by a
crash or a full disk is moved to ``custody.torn`` at the next open and recorded. Seals
(:mod:`cloudir.seal`) sign the head after every record.
"""

from __future__ import annotations

import getpass
import hashlib
import itertools
import json
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cloudir import TOOL_NAME, __version__
from cloudir.durable import append_line, canonical_json, split_lines
from cloudir.errors import CloudirError
from cloudir.hashing import sha256_file
from cloudir.progress import ProgressCallback
from cloudir.seal import SEALS_FILE, Seal, parse_seal
from cloudir.sealstore import STORE_ACTION, TIMESTAMP_ACTION, check_stored_seals, stored_records
from cloudir.signing import fingerprint
from cloudir.textsafe import visible

if TYPE_CHECKING:
    from cryptography import x509

CUSTODY_FILE = "custody.jsonl"
CASE_META_FILE = "case.json"
TORN_FILE = "custody.torn"
RECOVERY_ACTION = "custody.recovered"
UNSEALED_ACTION = "custody.unsealed-found"

# Files in a case folder that are working state or the custody machinery itself, not recorded evidence.
NON_EVIDENCE_FILES = frozenset({CUSTODY_FILE, SEALS_FILE, "state.json", "case.lock"})
NON_EVIDENCE_SUFFIXES = (".wal", ".tmp")
_HEX_HEAD = re.compile(r"[0-9a-f]{16,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def utc_now() -> str:
    """Current UTC time as ISO 8601 with microseconds and a Z suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_time(seconds: float) -> str:
    """A ``time.time()`` value in the form of :func:`utc_now`."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line_hash(line: bytes) -> str:
    """The hash of a stored record: SHA-256 of its line without the newline."""
    return hashlib.sha256(line).hexdigest()


def genesis_hash(case_id: str, created: str) -> str:
    """What the first record names as its predecessor: binds the chain to one case and creation time."""
    return hashlib.sha256(canonical_json({"case_id": case_id, "created": created})).hexdigest()


def local_operator() -> str:
    """The local account running the tool, as user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class CallBatch:
    """Calls of one operation that each succeeded, recorded as one entry that still names every call: the item each
    read (e.g. a block index) and its request id, in the order they ended, the bytes they returned in all, the first
    one's start and the last one's end."""

    items: tuple[int, ...]
    request_ids: tuple[str | None, ...]
    bytes: int
    first: str
    last: str

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form stored in custody records (``count`` calls)."""
        return {
            "count": len(self.items),
            "items": list(self.items),
            "request_ids": list(self.request_ids),
            "bytes": self.bytes,
            "first": self.first,
            "last": self.last,
        }


def calls_in(entry: dict[str, Any]) -> int:
    """How many calls one stored ``api_calls`` entry stands for (a :class:`CallBatch` stands for its count)."""
    batch = entry.get("batch")
    return int(batch["count"]) if isinstance(batch, dict) else 1


def each_call(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The calls one stored ``api_calls`` entry names, one dict each (a batch's with its ``item`` and request id)."""
    batch = entry.get("batch")
    if not isinstance(batch, dict):
        return [entry]
    call = {key: value for key, value in entry.items() if key != "batch"}
    return [
        {**call, "item": item, "request_id": request_id}
        for item, request_id in zip(batch["items"], batch["request_ids"], strict=True)
    ]


def batch_problem(entry: Any) -> str | None:
    """Why a stored ``api_calls`` entry's batch does not name each call it counts (None when it does, or has none)."""
    batch = entry.get("batch") if isinstance(entry, dict) else None
    if batch is None:
        return None
    if not isinstance(batch, dict):
        return "its batch is not an object"
    count, items, request_ids = batch.get("count"), batch.get("items"), batch.get("request_ids")
    if type(count) is not int or not isinstance(items, list) or not isinstance(request_ids, list):
        return "its batch lacks a count, items or request ids"
    if not count == len(items) == len(request_ids):
        return f"its batch counts {count} calls but names {len(items)} items and {len(request_ids)} request ids"
    if not all(type(item) is int for item in items) or type(batch.get("bytes")) is not int:
        return "its batch's items or bytes are not integers"
    return None


@dataclass
class ApiCall:
    """One cloud API call made by the tool, or a :class:`CallBatch` of them (``batch``)."""

    service: str
    operation: str
    region: str | None
    request_id: str | None
    outcome: str  # "ok" or the error code
    time: str = field(default_factory=utc_now)
    http_status: int | None = None
    client_request_id: str | None = None  # id the tool sent (Azure x-ms-client-request-id), as audit logs show it
    batch: CallBatch | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form stored in custody records (``batch`` only in a batch's)."""
        batch = {"batch": self.batch.as_dict()} if self.batch is not None else {}
        return {
            "service": self.service,
            "operation": self.operation,
            "region": self.region,
            "request_id": self.request_id,
            "outcome": self.outcome,
            "time": self.time,
            "http_status": self.http_status,
            "client_request_id": self.client_request_id,
            **batch,
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
    """Append-only writer for ``custody.jsonl``; thread-safe. Hold the case lock while using it."""

    def __init__(
        self,
        path: Path,
        case_id: str,
        created: str,
        *,
        on_append: Callable[[int, str], None] | None = None,
        carried_calls: Callable[[], list[ApiCall]] | None = None,
    ) -> None:
        self.path = path
        self.case_id = case_id
        self.caller: dict[str, str] = {"operator": local_operator()}
        self.on_append = on_append  # called with (records, head) after each durable append: the sealer
        self.carried_calls = carried_calls  # calls made after the previous record (sealing it), listed in the next
        self._lock = threading.Lock()
        self._genesis = genesis_hash(case_id, created)
        self._seq, self._last_hash, self._torn = self._tail()

    def _tail(self) -> tuple[int, str, bytes]:
        data = self.path.read_bytes() if self.path.exists() else b""
        lines, torn = split_lines(data)
        if not lines:
            return 0, self._genesis, torn
        try:
            seq = int(json.loads(lines[-1])["seq"])
        except (ValueError, KeyError, TypeError):
            raise CloudirError(
                f"{self.path}: the last record (line {len(lines)}) is not a custody record",
                hint="nothing was appended; examine the case with cloudir verify",
            ) from None
        return seq, line_hash(lines[-1]), torn

    @property
    def head(self) -> str:
        """Hash of the newest record (the value to note down outside the case)."""
        return self._last_hash

    @property
    def length(self) -> int:
        """Number of records written."""
        return self._seq

    def take_torn_tail(self, case_root: Path) -> tuple[str, bytes] | None:
        """Move a torn last line (a crash or full disk mid-append) to a ``custody.torn`` file; return (name, bytes)."""
        if not self._torn:
            return None
        with self._lock:
            torn = self._torn
            name = next(
                candidate
                for candidate in (TORN_FILE, *(f"custody-{n}.torn" for n in range(2, 10_000)))
                if not (case_root / candidate).exists()
            )
            append_line(case_root / name, torn)
            with self.path.open("r+b") as handle:
                handle.truncate(self.path.stat().st_size - len(torn))
                os.fsync(handle.fileno())
            self._torn = b""
            return name, torn

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
        """Append one record durably, seal the new head, and return the record."""
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
                "api_calls": [
                    call.as_dict()
                    for call in [*(self.carried_calls() if self.carried_calls else []), *(api_calls or [])]
                ],
                "artifacts": [artifact.as_dict() for artifact in artifacts or []],
                "details": details or {},
                "prev_hash": self._last_hash,
            }
            line = canonical_json(record)
            try:
                append_line(self.path, line + b"\n")
            except OSError as exc:
                raise CloudirError(
                    f"could not append to {self.path} ({exc.strerror or exc}): the {action} record was not written",
                    hint="free space or fix the disk, then re-run the command (with --resume where it applies)",
                ) from None
            self._seq = record["seq"]
            self._last_hash = line_hash(line)
            if self.on_append is not None:
                self.on_append(self._seq, self._last_hash)
            return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read every complete custody record (no verification; a torn last line is left out)."""
    lines, _ = split_lines(path.read_bytes())
    return [json.loads(line) for line in lines if line.strip()]


# -- verification -----------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """Outcome of ``cloudir verify``."""

    ok: bool
    records: int = 0
    artifacts_checked: int = 0
    head: str = ""
    key: str | None = None  # fingerprint of the key that signed the newest seal
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # recorded replacements and recoveries

    @property
    def first_problem(self) -> str | None:
        """The first break found, in chain order then artifact order."""
        return self.problems[0] if self.problems else None


@dataclass(frozen=True)
class _Recorded:
    seq: int
    action: str
    sha256: str
    size: int


@dataclass
class _Chain:
    heads: list[str] = field(default_factory=list)  # heads[i] = hash of record i+1
    artifacts: dict[str, list[_Recorded]] = field(default_factory=dict)
    case_key: str | None = None  # fingerprint recorded at case creation
    store_records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # seal.store records
    timestamp_records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # seal.timestamp records


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _parse_record(line: bytes) -> dict[str, Any] | str:
    """The record on a line, or why the line is not a record as cloudir writes it."""
    try:
        record = json.loads(line, object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    except ValueError as exc:
        return "holds a duplicated key" if str(exc) == "duplicate key" else "is not valid JSON"
    if not isinstance(record, dict):
        return "is not a JSON object"
    if canonical_json(record) != line:
        return "is not stored the way cloudir writes records (re-spaced, re-ordered or re-encoded)"
    return record


def _record_artifacts(record: dict[str, Any]) -> list[ArtifactRef] | None:
    entries = record.get("artifacts")
    if not isinstance(entries, list):
        return None
    refs = []
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.fullmatch(entry["sha256"])
            and type(entry.get("size")) is int
        ):
            return None
        refs.append(ArtifactRef(entry["path"], entry["sha256"], entry["size"]))
    return refs


def _verify_chain(lines: list[bytes], case_id: str, created: str, result: VerifyResult) -> _Chain | None:
    """Check each stored line and its link; None after the first break (later records prove nothing)."""
    chain = _Chain()
    prev_hash = genesis_hash(case_id, created)
    for seq, line in enumerate(lines, start=1):
        record = _parse_record(line)
        if isinstance(record, str):
            result.problems.append(f"custody record {seq}: the line {record}: the record was altered")
            return None
        if record.get("seq") != seq:
            result.problems.append(
                f"custody record {seq}: its sequence number is {visible(record.get('seq'))}, expected {seq} "
                "(a record was deleted, inserted or reordered)"
            )
            return None
        if record.get("prev_hash") != prev_hash:
            first = "the case id and creation time in case.json" if seq == 1 else f"record {seq - 1}"
            result.problems.append(
                f"custody record {seq}: prev_hash does not match {first} "
                "(a record was changed, deleted, inserted or reordered)"
            )
            return None
        if record.get("case_id") != case_id:
            result.problems.append(f"custody record {seq}: names case {visible(record.get('case_id'))}, not {case_id}")
            return None
        refs = _record_artifacts(record)
        if refs is None:
            result.problems.append(f"custody record {seq}: its artifact list is malformed")
            return None
        for problem in filter(None, map(batch_problem, record.get("api_calls") or [])):
            result.problems.append(f"custody record {seq}: an API call entry is malformed: {problem}")
        action = visible(record.get("action"))
        for ref in refs:
            chain.artifacts.setdefault(ref.path, []).append(_Recorded(seq, action, ref.sha256, ref.size))
        details: dict[str, Any] = record["details"] if isinstance(record.get("details"), dict) else {}
        if seq == 1 and isinstance(details.get("signing_key"), str):
            chain.case_key = details["signing_key"]
        if record.get("action") == STORE_ACTION:
            chain.store_records.append((seq, record))
        if record.get("action") == TIMESTAMP_ACTION:
            chain.timestamp_records.append((seq, record))
        if record.get("action") == RECOVERY_ACTION:
            result.notes.append(
                f"record {seq}: a torn record of {visible(details.get('torn_bytes'))} bytes left by an interrupted "
                f"write was moved to {visible(details.get('moved_to'))}"
            )
        elif record.get("action") == UNSEALED_ACTION:
            result.notes.append(
                f"record {seq}: records {visible(details.get('sealed_records'))}+1 to {seq - 1} were found unsealed "
                "when the case was next opened (a command stopped between writing and sealing)"
            )
        prev_hash = line_hash(line)
        chain.heads.append(prev_hash)
    return chain


def _outside_or_linked(case_dir: Path, rel: str) -> str | None:
    """Why an artifact path cannot be checked safely (it leaves the case, or goes through a symlink)."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel or "\x00" in rel:
        return "points outside the case folder"
    current = case_dir
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            return f"goes through a symbolic link ({visible(current.relative_to(case_dir).as_posix())})"
    return None


def _check_artifacts(case_dir: Path, chain: _Chain, result: VerifyResult, on_progress: ProgressCallback | None) -> None:
    total, done = sum(history[-1].size for history in chain.artifacts.values()), 0
    for rel, history in chain.artifacts.items():
        latest = history[-1]
        if on_progress is not None:
            on_progress(done, total)
        done += latest.size
        name = visible(rel)
        for earlier, later in itertools.pairwise(history):
            if (later.sha256, later.size) != (earlier.sha256, earlier.size):
                result.notes.append(
                    f"artifact {name}: content recorded in record {earlier.seq} was replaced in record "
                    f"{later.seq} by {later.action}"
                )
        unsafe = _outside_or_linked(case_dir, rel)
        if unsafe is not None:
            result.problems.append(f"artifact {name} (record {latest.seq}) {unsafe}; not read")
            continue
        file_path = case_dir / rel
        if not file_path.is_file():
            result.problems.append(f"artifact {name} (recorded in record {latest.seq}) is missing")
            continue
        try:
            actual, actual_size = sha256_file(file_path)
        except OSError as exc:
            result.problems.append(f"artifact {name} (record {latest.seq}) cannot be read: {visible(exc.strerror)}")
            continue
        result.artifacts_checked += 1
        if (actual, actual_size) != (latest.sha256, latest.size):
            result.problems.append(
                f"artifact {name}: SHA-256 {actual} ({actual_size} bytes) does not match {latest.sha256} "
                f"({latest.size} bytes) recorded in record {latest.seq} by {latest.action}"
            )
    if on_progress is not None:
        on_progress(done, total)


def _list_unrecorded(case_dir: Path, chain: _Chain, result: VerifyResult) -> None:
    for folder, dirs, files in os.walk(case_dir):
        base = Path(folder)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                rel = (base / name).relative_to(case_dir).as_posix()
                result.warnings.append(f"{visible(rel)}: a symbolic link in the case folder (not followed)")
        for name in sorted(files):
            rel = (base / name).relative_to(case_dir).as_posix()
            if rel in chain.artifacts or rel in NON_EVIDENCE_FILES or rel.endswith(NON_EVIDENCE_SUFFIXES):
                continue
            kind = "a symbolic link" if (base / name).is_symlink() else "present"
            result.warnings.append(f"{visible(rel)}: {kind} in the case folder but not recorded in the custody log")


def _check_seals(case_dir: Path, chain: _Chain, case_id: str, trusted: str | None, result: VerifyResult) -> None:
    """The newest seal must cover the whole chain, and every seal must match the chain and the trusted key."""
    path = case_dir / SEALS_FILE
    if path.is_symlink():
        result.problems.append(f"{SEALS_FILE} is a symbolic link; seals not read")
        return
    lines, _ = split_lines(path.read_bytes()) if path.is_file() else ([], b"")
    total = len(chain.heads)
    seals: list[Seal] = []
    for number, line in enumerate(lines, start=1):
        try:
            seal = parse_seal(line)
        except ValueError:
            result.problems.append(f"seal {number}: not a seal record (the seals file was altered)")
            return
        invalid = seal.problem()
        if invalid is None and seal.case_id != case_id:
            invalid = f"it seals case {visible(seal.case_id)}"
        if invalid is None and not (0 < seal.records <= total and chain.heads[seal.records - 1] == seal.head):
            invalid = (
                f"it seals record {seal.records} with head {visible(seal.head)}, which this chain does not hold "
                "(sealed records were changed, removed or re-chained)"
            )
        if invalid is not None:
            result.problems.append(f"seal {number}: {invalid}")
            return
        seals.append(seal)
    if trusted is None:
        result.problems.append("no signing key is recorded at case creation and no --public-key was given")
        return
    if not seals:
        result.problems.append(
            f"UNSEALED: the chain of {total} records carries no seal, so nothing shows the signing key's holder "
            "wrote it (it may have been rebuilt)"
        )
        return
    foreign = next((seal for seal in seals if seal.key != trusted), None)
    if foreign is not None:
        result.problems.append(
            f"WRONG KEY: seal {seals.index(foreign) + 1} is signed by {foreign.key}, not the expected {trusted}: "
            "someone other than the expected key holder sealed this chain"
        )
        return
    latest = seals[-1]
    result.key = latest.key
    if latest.records != total:
        result.problems.append(
            f"STALE SEAL: the newest seal covers {latest.records} of {total} records; records "
            f"{latest.records + 1} to {total} were written after it without a seal"
        )


def _check_expected_head(expect_head: str, chain: _Chain, result: VerifyResult) -> None:
    wanted = expect_head.strip().lower()
    if not _HEX_HEAD.fullmatch(wanted):
        result.problems.append(
            f"--expect-head {visible(expect_head)} is not a chain head (16 to 64 hexadecimal digits as printed)"
        )
        return
    found = [seq for seq, head in enumerate(chain.heads, start=1) if head.startswith(wanted)]
    if not found:
        result.problems.append(
            f"expected head {wanted} is not in this chain: the records up to it were changed or removed"
        )
    elif len(found) > 1:
        result.problems.append(f"--expect-head {wanted} matches records {found}; give more digits")
    else:
        result.notes.append(f"expected head {wanted} is record {found[0]} of {len(chain.heads)}")


def _case_meta(case_dir: Path, result: VerifyResult) -> tuple[str, str] | None:
    path = case_dir / CASE_META_FILE
    try:
        meta = json.loads(path.read_bytes())
        case_id, created = meta["case_id"], meta["created"]
    except (OSError, ValueError, KeyError, TypeError):
        result.problems.append(f"{CASE_META_FILE} is missing or unreadable: the chain's first record cannot be checked")
        return None
    if not (isinstance(case_id, str) and isinstance(created, str)):
        result.problems.append(f"{CASE_META_FILE} does not name a case id and creation time")
        return None
    return case_id, created


def _custody_lines(case_dir: Path, result: VerifyResult) -> list[bytes] | None:
    path = case_dir / CUSTODY_FILE
    if path.is_symlink():
        result.problems.append(f"{CUSTODY_FILE} is a symbolic link; not read")
        return None
    if not path.is_file():
        result.problems.append(f"{case_dir}: no custody log in this folder")
        return None
    lines, torn = split_lines(path.read_bytes())
    if torn:
        result.problems.append(
            f"{CUSTODY_FILE} ends in a torn record ({len(torn)} bytes without a newline): an interrupted write; "
            "any cloudir command on the case moves it to custody.torn and records that"
        )
    if not lines:
        result.problems.append(f"{CUSTODY_FILE} holds no record: an empty chain proves nothing")
        return None
    return lines


def verify_case(
    case_dir: Path,
    expect_head: str | None = None,
    public_key: bytes | None = None,
    *,
    remote: bool = False,
    tsa_cert: x509.Certificate | None = None,
    on_progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Check a case offline: each stored record line and its link, the seals, their timestamps, and every
    artifact's SHA-256 (``on_progress`` hears the bytes of artifacts hashed so far, of all).

    With ``remote``, also compare the seal copies in the write-once store(s) the chain records with it;
    ``tsa_cert`` pins the time-stamp authority's certificate.
    """
    result = VerifyResult(ok=False)
    meta = _case_meta(case_dir, result)
    lines = _custody_lines(case_dir, result)
    if meta is None or lines is None:
        return result
    chain = _verify_chain(lines, *meta, result)
    if chain is None:
        return result
    result.records = len(chain.heads)
    result.head = chain.heads[-1]
    trusted = fingerprint(public_key) if public_key is not None else chain.case_key
    _check_seals(case_dir, chain, meta[0], trusted, result)
    if expect_head is not None:
        _check_expected_head(expect_head, chain, result)
    if chain.timestamp_records:
        from cloudir.timestamp import check_timestamps

        check_timestamps(case_dir, chain.timestamp_records, tsa_cert, result)
    recorded = stored_records(chain.store_records)
    if remote:
        check_stored_seals(case_dir, meta[0], chain.heads, recorded, trusted=trusted, result=result)
    elif recorded:
        stores = visible(", ".join(sorted({entry.store for entry in recorded})))
        result.notes.append(
            f"{len(recorded)} seal(s) were stored write-once in {stores}; add --remote to compare them with this chain"
        )
    _check_artifacts(case_dir, chain, result, on_progress)
    _list_unrecorded(case_dir, chain, result)
    result.ok = not result.problems
    return result
