"""A case: a folder of evidence, its custody log and its run state.

Every artifact is written through :class:`ArtifactWriter`, which hashes while it streams, and is
attached to the custody record of the action that wrote it. Cloud API calls made by providers are
reported to :meth:`Case.record_api_call` and land in the same record.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, ParamSpec, Protocol, TypeVar

from cloudir import __version__
from cloudir.caselock import CaseLock
from cloudir.custody import (
    CASE_META_FILE,
    CUSTODY_FILE,
    RECOVERY_ACTION,
    UNSEALED_ACTION,
    ApiCall,
    ArtifactRef,
    CustodyLog,
    read_records,
    utc_now,
)
from cloudir.durable import split_lines
from cloudir.errors import CloudirError
from cloudir.hashing import sha256_file
from cloudir.seal import SEALS_FILE, append_seal, make_seal, parse_seal
from cloudir.sealstore import store_latest_seal
from cloudir.signing import KEY_ENV, KMS_ENV, SealSigner, load_seal_signer

CASE_FILE = CASE_META_FILE
STATE_FILE = "state.json"
REPORTS_DIR = "reports"
TIMELINE_DB = "timeline.duckdb"  # the case's timeline database, built from logs/
_SAFE_PART = re.compile(r"[^A-Za-z0-9._=@+-]")

# Who hears the case's notices (waiting for the lock, key created, head sealed): the CLI prints them.
_listeners: list[Callable[[str], None]] = []


def add_notice_listener(listener: Callable[[str], None]) -> None:
    """Receive every notice a case gives (one line of text each)."""
    _listeners.append(listener)


def _notify(message: str) -> None:
    for listener in _listeners:
        listener(message)


def safe_name(value: str) -> str:
    """A string usable as one path component (resource ids, ARNs, names)."""
    cleaned = _SAFE_PART.sub("_", value).strip("._")
    return cleaned or "_"


def case_root_of(path: Path) -> Path | None:
    """The case folder ``path`` lies in (the nearest folder above it holding case.json), or None."""
    for folder in path.resolve().parents:
        if (folder / CASE_FILE).is_file():
            return folder
    return None


def output_in_case(root: Path, out: Path) -> str | None:
    """Where an output file (a report) lands in the case, relative to it; None when outside the case.

    Inside a case only ``reports/`` takes outputs: evidence (artifacts/, images/, logs/), custody.jsonl,
    case.json and the seals can never be overwritten this way, whatever symlinks the path goes through.
    """
    case_root = root.resolve()
    target = out.resolve()
    if not target.is_relative_to(case_root):
        return None
    rel = target.relative_to(case_root)
    if len(rel.parts) < 2 or rel.parts[0] != REPORTS_DIR:
        raise CloudirError(
            f"refusing to write {out}: it is {rel.as_posix() or 'the case folder'} inside case {root}",
            hint=f"inside a case, outputs go under {REPORTS_DIR}/; evidence and custody files are never overwritten",
        )
    return rel.as_posix()


class ArtifactMirror(Protocol):
    """Somewhere artifacts are copied after they are written locally (e.g. an S3 evidence bucket)."""

    def upload(self, local_path: Path, rel_path: str, sha256: str) -> None:
        """Copy one finished artifact."""


class ArtifactWriter:
    """A binary file writer that computes SHA-256 as bytes go by; sparse-aware for disk images."""

    def __init__(self, case: Case, rel_path: str) -> None:
        self._case = case
        self.rel_path = rel_path
        self.path = case.root / rel_path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._handle: BinaryIO = self._tmp.open("wb")
        self._digest = hashlib.sha256()
        self.size = 0
        self.artifact: ArtifactRef | None = None

    def write(self, data: bytes) -> int:
        """Write and hash a chunk."""
        self._digest.update(data)
        self._handle.write(data)
        self.size += len(data)
        return len(data)

    def write_zeros(self, count: int) -> None:
        """Account for ``count`` zero bytes without writing them (leaves a hole in a sparse file)."""
        block = bytes(min(count, 1024 * 1024))
        remaining = count
        while remaining:
            step = min(remaining, len(block))
            self._digest.update(block[:step])
            remaining -= step
        self._handle.seek(count, 1)
        self.size += count

    def close(self) -> ArtifactRef:
        """Finish the file, move it into place and register it with the case."""
        if self.artifact is not None:
            return self.artifact
        self._handle.truncate(self.size)
        self._handle.close()
        self._tmp.replace(self.path)
        self.artifact = ArtifactRef(self.rel_path, self._digest.hexdigest(), self.size)
        self._case.register_artifact(self.artifact)
        return self.artifact

    def abort(self) -> None:
        """Discard a partial file."""
        self._handle.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(eq=False)
class ActionContext:
    """Collects what one custody action did: API calls, artifacts and details."""

    name: str
    target: str | None
    api_calls: list[ApiCall] = field(default_factory=list)
    artifacts: list[ArtifactRef] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    within: ActionContext | None = field(default=None, repr=False)  # the open action it was opened in


# The actions open in this thread (innermost last): a step's calls land in its own action although other steps run
# in other threads at once. A worker thread sees the actions of the thread that started it through ActionPool.
_OPEN_ACTIONS: contextvars.ContextVar[tuple[ActionContext, ...]] = contextvars.ContextVar("actions", default=())
_P = ParamSpec("_P")
_T = TypeVar("_T")


class ActionPool(ThreadPoolExecutor):
    """A thread pool whose tasks report their cloud calls and artifacts to the actions open where they were
    submitted (a plain pool's threads see none: their calls are attributed only while one action runs)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Run ``fn`` in a copy of the submitter's context."""
        return super().submit(in_actions(fn), *args, **kwargs)


def in_actions(work: Callable[_P, _T]) -> Callable[_P, _T]:
    """``work`` run in a copy of this context: a thread started on it reports to the actions open here."""
    context = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return context.run(work, *args, **kwargs)

    return run


class _Sealer:
    """Seals the chain head after every record with the signing key kept outside the case."""

    def __init__(self, root: Path, case_id: str, case_key: str | None, signer: SealSigner | None = None) -> None:
        self.root = root
        self.case_id = case_id
        self.case_key = case_key  # fingerprint recorded at case creation (None while creating)
        self._signer = signer

    @property
    def signer(self) -> SealSigner:
        """The signing key, loaded (or created, with a notice) on first use; never one inside the case."""
        if self._signer is None:
            signer = load_seal_signer()
            if signer.path is not None and signer.path.resolve().is_relative_to(self.root.resolve()):
                raise CloudirError(
                    f"the signing key {signer.path} is inside the case folder",
                    hint=f"keep it outside every case (default under the user's config folder, or {KEY_ENV})",
                )
            if self.case_key is not None and signer.fingerprint != self.case_key:
                raise CloudirError(
                    f"case {self.case_id} is sealed with key {self.case_key}, not this machine's key "
                    f"{signer.fingerprint} ({signer.location})",
                    hint=f"point {KEY_ENV} (or {KMS_ENV}) at the case's signing key",
                )
            if signer.created:
                _notify(f"created signing key {signer.path}, fingerprint {signer.fingerprint}")
            self._signer = signer
        return self._signer

    def take_calls(self) -> list[ApiCall]:
        """Cloud calls the signer made for earlier seals (a KMS key's Sign calls), for the next record."""
        return self._signer.take_calls() if self._signer is not None else []

    def __call__(self, records: int, head: str) -> None:
        seal = make_seal(self.signer, case_id=self.case_id, records=records, head=head, time=utc_now())
        try:
            append_seal(self.root, seal)
        except OSError as exc:
            raise CloudirError(
                f"record {records} was written but could not be sealed ({exc.strerror or exc})",
                hint="fix the disk and re-run: the next command records the unsealed records and seals again",
            ) from None


class Case:
    """An evidence case folder, held under its lock. Use :meth:`create` or :meth:`open`, then close it.

    A case is a context manager; closing releases the lock (the outermost close also announces the sealed
    head). Several Case objects on one folder in one thread share one custody writer.
    """

    def __init__(self, root: Path, meta: dict[str, Any], lock: CaseLock, *, signer: SealSigner | None = None) -> None:
        self.root = root
        self.meta = meta
        self.case_id: str = meta["case_id"]
        self._hold = lock
        self._sealer = _Sealer(root, self.case_id, meta.get("signing_key"), signer)
        shared = lock.custody
        self.custody: CustodyLog = shared or CustodyLog(
            root / CUSTODY_FILE,
            self.case_id,
            meta["created"],
            on_append=self._sealer,
            carried_calls=self._sealer.take_calls,
        )
        self._opened_at = self.custody.length  # records before this command (a seal copy is due if it appends)
        self._stored_in: str | None = None  # the seal store this command's seal went to
        if shared is None:
            _ = self._sealer.signer  # a key that cannot be loaded or reached fails here, before any append
            lock.custody = self.custody
            self._recover()
        self.mirrors: list[ArtifactMirror] = []
        self._lock = threading.RLock()
        self._actions: list[ActionContext] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path,
        *,
        case_id: str | None = None,
        description: str = "",
        wait: bool | None = None,
        purpose: str | None = None,
    ) -> Case:
        """Create a new case folder (fails if one exists there)."""
        root.mkdir(parents=True, exist_ok=True)
        return cls._under_lock(
            root, purpose, wait, lambda lock: cls._create_locked(root, lock, case_id=case_id, description=description)
        )

    @classmethod
    def _under_lock(cls, root: Path, purpose: str | None, wait: bool | None, build: Callable[[CaseLock], Case]) -> Case:
        """Take the case's lock, then ``build`` the case holding it; the lock is released if that fails."""
        lock = CaseLock.acquire(root, purpose=purpose, wait=wait, notify=_notify)
        try:
            return build(lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create_locked(cls, root: Path, lock: CaseLock, *, case_id: str | None, description: str) -> Case:
        if (root / CASE_FILE).exists():
            raise CloudirError(f"{root} already holds a case", hint="use --resume to continue it or pick a new --case")
        if (root / CUSTODY_FILE).exists():
            raise CloudirError(f"{root} holds a custody log but no {CASE_FILE}", hint="examine it with cloudir verify")
        signer = _Sealer(root, "", None).signer
        meta = {
            "case_id": case_id or f"cir-{utc_now()[:10].replace('-', '')}-{uuid.uuid4().hex[:8]}",
            "created": utc_now(),
            "tool_version": __version__,
            "description": description,
            "signing_key": signer.fingerprint,
            "signing_algorithm": signer.algorithm,
        }
        if signer.key_id is not None:
            meta["signing_key_id"] = signer.key_id
        case = cls(root, meta, lock, signer=signer)
        with case.action("case.create", target=str(root)) as act:
            act.details.update(meta)
            case.write_json(CASE_FILE, meta)
        return case

    @classmethod
    def open(cls, root: Path, *, wait: bool | None = None, purpose: str | None = None) -> Case:
        """Open an existing case folder, taking its lock."""
        if not (root / CASE_FILE).is_file():
            raise CloudirError(f"{root} is not a cloudir case (no {CASE_FILE})")
        return cls._under_lock(root, purpose, wait, lambda lock: cls._open_locked(root, lock))

    @classmethod
    def _open_locked(cls, root: Path, lock: CaseLock) -> Case:
        try:
            meta = json.loads((root / CASE_FILE).read_text(encoding="utf-8"))
            meta["case_id"], meta["created"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CloudirError(f"{root / CASE_FILE} is not a readable case file") from None
        return cls(root, meta, lock)

    @classmethod
    def open_or_create(
        cls,
        root: Path,
        *,
        resume: bool,
        case_id: str | None = None,
        description: str = "",
        wait: bool | None = None,
        purpose: str | None = None,
    ) -> Case:
        """Open the case when resuming (it must not exist otherwise), else create it; decided under the lock."""
        root.mkdir(parents=True, exist_ok=True)

        def build(lock: CaseLock) -> Case:
            if (root / CASE_FILE).exists():
                return cls._resume_locked(root, lock, resume=resume)
            return cls._create_locked(root, lock, case_id=case_id, description=description)

        return cls._under_lock(root, purpose, wait, build)

    @classmethod
    def _resume_locked(cls, root: Path, lock: CaseLock, *, resume: bool) -> Case:
        if not resume:
            raise CloudirError(
                f"{root} already holds a case", hint="add --resume to continue it, or choose another --case folder"
            )
        return cls._open_locked(root, lock)

    def close(self, *, failing: bool = False) -> None:
        """Release the case; the outermost close stores the newest seal (when a seal store is configured) and
        announces the sealed head and the key.

        A seal that could not be stored is recorded and raised after the announcement, unless the command is
        already ``failing`` (then its own error is the one to show, and the failed upload is in the chain).
        """
        if self._closed:
            return
        self._closed = True
        error: CloudirError | None = None
        try:
            if self._hold.outermost:
                stored = ""
                if self.custody.length > self._opened_at:
                    error = self._anchor()
                    if self._stored_in is not None:
                        stored = f"; seal of record {self.custody.length - 1} stored write-once in {self._stored_in}"
                _notify(
                    f"custody head {self.custody.head} ({self.custody.length} records) sealed by key "
                    f"{self._sealer.signer.fingerprint}{stored}"
                )
        finally:
            self._hold.release()
        if error is not None and not failing:
            raise error

    def _anchor(self) -> CloudirError | None:
        """Timestamp the newest seal, then copy the newest seal to the seal store (each when configured).

        Both are tried; the first failure is returned (each is recorded in the chain either way).
        """
        from cloudir.timestamp import timestamp_latest_seal  # asn1crypto only when a case is anchored

        self._stored_in = None
        first: CloudirError | None = None
        for step in (timestamp_latest_seal, store_latest_seal):
            try:
                url = step(self)
            except CloudirError as exc:
                first = first or exc
                continue
            if step is store_latest_seal:
                self._stored_in = url
        return first

    def __enter__(self) -> Case:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failing=exc_type is not None)

    def _recover(self) -> None:
        """On first open: record a torn last line (moved aside) and records a crash left unsealed."""
        taken = self.custody.take_torn_tail(self.root)
        if taken is not None:
            name, torn = taken
            digest, size = sha256_file(self.root / name)
            self.custody.append(
                RECOVERY_ACTION,
                target=CUSTODY_FILE,
                artifacts=[ArtifactRef(name, digest, size)],
                details={"torn_bytes": len(torn), "moved_to": name},
            )
            _notify(f"custody log of {self.root}: a torn last record ({len(torn)} bytes) was moved to {name}")
        sealed = self._sealed_records()
        if self.custody.length > sealed:
            self.custody.append(UNSEALED_ACTION, details={"sealed_records": sealed, "records": self.custody.length})

    def _sealed_records(self) -> int:
        """How many records the newest readable seal covers (0 when none); a torn seal line is dropped."""
        path = self.root / SEALS_FILE
        if not path.is_file():
            return 0
        data = path.read_bytes()
        lines, torn = split_lines(data)
        if torn:
            with path.open("r+b") as handle:
                handle.truncate(len(data) - len(torn))
        for line in reversed(lines):
            try:
                return parse_seal(line).records
            except ValueError:
                continue
        return 0

    # -- custody ----------------------------------------------------------------------------------------
    @contextmanager
    def action(self, name: str, *, target: str | None = None, **details: Any) -> Iterator[ActionContext]:
        """Group everything done inside into one custody record; failures are recorded too."""
        outer = _OPEN_ACTIONS.get()
        with self._lock:
            ctx = ActionContext(name=name, target=target, details=dict(details), within=self._innermost(outer))
            self._actions.append(ctx)
        opened = _OPEN_ACTIONS.set((*outer, ctx))
        try:
            yield ctx
        except BaseException as exc:
            _OPEN_ACTIONS.reset(opened)
            self._finish(ctx, outcome="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        _OPEN_ACTIONS.reset(opened)
        self._finish(ctx, outcome="ok", error=None)

    def _finish(self, ctx: ActionContext, *, outcome: str, error: str | None) -> None:
        with self._lock:
            self._actions.remove(ctx)
        self.custody.append(
            ctx.name,
            target=ctx.target,
            outcome=outcome,
            api_calls=ctx.api_calls,
            artifacts=ctx.artifacts,
            details=ctx.details,
            error=error,
        )

    def _innermost(self, actions: tuple[ActionContext, ...]) -> ActionContext | None:
        """The innermost of ``actions`` that is open in this case (call holding the lock)."""
        return next((ctx for ctx in reversed(actions) if ctx in self._actions), None)

    def _current(self) -> ActionContext | None:
        """The action a call made in this thread belongs to: the innermost opened in its context, else (a thread
        that does not carry one) the newest while the open actions are one inside another, else none (actions run
        at once in other threads: the call is logged alone rather than in one it may not belong to)."""
        with self._lock:
            own = self._innermost(_OPEN_ACTIONS.get())
            if own is not None or not self._actions:
                return own
            nested = all(inner.within is outer for outer, inner in zip(self._actions, self._actions[1:], strict=False))
            return self._actions[-1] if nested and self._actions[0].within is None else None

    def record_api_call(self, call: ApiCall) -> None:
        """Attach a cloud API call to the current action (or log it alone)."""
        current = self._current()
        if current is None:
            self.custody.append("api.call", api_calls=[call])
        else:
            with self._lock:
                current.api_calls.append(call)

    def register_artifact(self, artifact: ArtifactRef) -> None:
        """Attach a finished artifact to the current action (or log it alone); copy to mirrors."""
        for mirror in self.mirrors:
            mirror.upload(self.root / artifact.path, artifact.path, artifact.sha256)
        current = self._current()
        if current is None:
            self.custody.append("artifact.write", target=artifact.path, artifacts=[artifact])
        else:
            with self._lock:
                current.artifacts.append(artifact)

    def set_cloud_identity(self, cloud: str, identity: str) -> None:
        """Record which cloud identity the tool acts as (goes into every later record)."""
        self.custody.caller[cloud] = identity

    # -- evidence ---------------------------------------------------------------------------------------
    def open_artifact(self, rel_path: str) -> ArtifactWriter:
        """Open a hashing writer for a new artifact at ``rel_path`` (relative, POSIX)."""
        if rel_path.startswith("/") or ".." in Path(rel_path).parts:
            raise CloudirError(f"artifact path must stay inside the case: {rel_path}")
        return ArtifactWriter(self, rel_path)

    def write_bytes(self, rel_path: str, data: bytes | Iterable[bytes]) -> ArtifactRef:
        """Write bytes (or a stream of chunks) as an artifact."""
        with self.open_artifact(rel_path) as writer:
            for chunk in [data] if isinstance(data, bytes) else data:
                writer.write(chunk)
        assert writer.artifact is not None
        return writer.artifact

    def write_json(self, rel_path: str, obj: Any) -> ArtifactRef:
        """Write a JSON artifact (pretty, stable key order, datetimes as ISO strings)."""
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
        return self.write_bytes(rel_path, text.encode() + b"\n")

    def claim_folder(self, folder: str, request: Any, refusal: str, hint: str) -> None:
        """Record a pull's request in ``<folder>/request.json``, or refuse (``refusal``, ``hint``) a folder that holds
        the pages of a different request: a resumed pull continues only the request it began."""
        existing = self.root / folder / "request.json"
        if not existing.is_file():
            self.write_json(f"{folder}/request.json", request)
        elif json.loads(existing.read_text(encoding="utf-8")) != request:
            raise CloudirError(refusal, hint=hint)

    def record_existing(self, rel_path: str) -> ArtifactRef:
        """Hash a file that another library wrote into the case (e.g. a DuckDB database) and register it."""
        digest, size = sha256_file(self.root / rel_path)
        artifact = ArtifactRef(rel_path, digest, size)
        self.register_artifact(artifact)
        return artifact

    # -- run state (working data, not evidence) ---------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        """The resumable run state of this case."""
        path = self.root / STATE_FILE
        if not path.is_file():
            return {}
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded

    def run_status(self, plan_key: str) -> str | None:
        """How the last run of a plan ended in this case: completed, failed, interrupted, or None (never ran)."""
        run = self.load_state().get("runs", {}).get(plan_key)
        if run is None:
            return None
        return str(run.get("status") or "interrupted")

    def failed_step_files(self, plan_target: str, step_id: str, suffix: str = ".json") -> list[str]:
        """Files that failed earlier runs of one step of a plan stored, in custody order (to resume a paged pull)."""
        return [
            artifact["path"]
            for record in read_records(self.root / CUSTODY_FILE)
            if record["target"] == plan_target
            and record["details"].get("step") == step_id
            and record["outcome"] == "failed"
            for artifact in record["artifacts"]
            if artifact["path"].endswith(suffix)
        ]

    def completed_targets(self, plan_name: str) -> set[str]:
        """Targets for which a plan of this name completed in the case."""
        return {
            str(record["target"])
            for record in read_records(self.root / CUSTODY_FILE)
            if record["action"] == f"{plan_name}.completed" and record["outcome"] == "ok"
        }

    def finding_responses(self) -> dict[str, dict[str, Any]]:
        """The newest ``response.*`` custody record per finding id (how each finding's response stands)."""
        return finding_responses(self.root)

    def response_runs(self, finding_id: str) -> int:
        """How many responses to ``finding_id`` started in this case."""
        return sum(
            1
            for record in read_records(self.root / CUSTODY_FILE)
            if record["action"] == "response.started" and record["details"].get("finding_id") == finding_id
        )

    def recorded_artifacts(self) -> dict[str, str]:
        """Every artifact path the custody log records, with its latest recorded SHA-256."""
        return {
            artifact["path"]: artifact["sha256"]
            for record in read_records(self.root / CUSTODY_FILE)
            for artifact in record["artifacts"]
        }

    def responder_request_ids(self) -> set[str]:
        """The request ids (and client request ids) of every cloud call this case's own runs recorded."""
        return {
            call[key]
            for record in read_records(self.root / CUSTODY_FILE)
            for call in record.get("api_calls", [])
            for key in ("request_id", "client_request_id")
            if call.get(key)
        }

    def save_state(self, state: dict[str, Any]) -> None:
        """Persist the run state atomically."""
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        with self._lock:  # one temporary file: steps running at once save one after another
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=_json_default), encoding="utf-8")
            tmp.replace(path)


def finding_responses(root: Path) -> dict[str, dict[str, Any]]:
    """The newest ``response.*`` custody record per finding id in the case at ``root`` ({} when there is none yet);
    read without the case's lock to choose a playbook before anything is written (re-read under it)."""
    path = root / CUSTODY_FILE
    if not path.is_file():
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for record in read_records(path):
        if record["action"].startswith("response.") and "finding_id" in record["details"]:
            latest[record["details"]["finding_id"]] = record
    return latest


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "read"):
        return "<stream>"
    return str(value)
