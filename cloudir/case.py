"""A case: a folder of evidence, its custody log and its run state.

Every artifact is written through :class:`ArtifactWriter`, which hashes while it streams, and is
attached to the custody record of the action that wrote it. Cloud API calls made by providers are
reported to :meth:`Case.record_api_call` and land in the same record.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from cloudir import __version__
from cloudir.custody import CUSTODY_FILE, ApiCall, ArtifactRef, CustodyLog, utc_now
from cloudir.errors import CloudirError

CASE_FILE = "case.json"
STATE_FILE = "state.json"
_SAFE_PART = re.compile(r"[^A-Za-z0-9._=@+-]")


def safe_name(value: str) -> str:
    """A string usable as one path component (resource ids, ARNs, names)."""
    cleaned = _SAFE_PART.sub("_", value).strip("._")
    return cleaned or "_"


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


@dataclass
class ActionContext:
    """Collects what one custody action did: API calls, artifacts and details."""

    name: str
    target: str | None
    api_calls: list[ApiCall] = field(default_factory=list)
    artifacts: list[ArtifactRef] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Case:
    """An evidence case folder. Use :meth:`create` or :meth:`open`."""

    def __init__(self, root: Path, meta: dict[str, Any]) -> None:
        self.root = root
        self.meta = meta
        self.case_id: str = meta["case_id"]
        self.custody = CustodyLog(root / CUSTODY_FILE, self.case_id)
        self.mirrors: list[ArtifactMirror] = []
        self._lock = threading.RLock()
        self._actions: list[ActionContext] = []

    # -- lifecycle -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, *, case_id: str | None = None, description: str = "") -> Case:
        """Create a new case folder (fails if one exists there)."""
        if (root / CASE_FILE).exists():
            raise CloudirError(f"{root} already holds a case", hint="use --resume to continue it or pick a new --case")
        root.mkdir(parents=True, exist_ok=True)
        meta = {
            "case_id": case_id or f"cir-{utc_now()[:10].replace('-', '')}-{uuid.uuid4().hex[:8]}",
            "created": utc_now(),
            "tool_version": __version__,
            "description": description,
        }
        case = cls(root, meta)
        with case.action("case.create", target=str(root)) as act:
            act.details.update(meta)
            case.write_json(CASE_FILE, meta)
        return case

    @classmethod
    def open(cls, root: Path) -> Case:
        """Open an existing case folder."""
        case_file = root / CASE_FILE
        if not case_file.is_file():
            raise CloudirError(f"{root} is not a cloudir case (no {CASE_FILE})")
        return cls(root, json.loads(case_file.read_text(encoding="utf-8")))

    @classmethod
    def open_or_create(cls, root: Path, *, resume: bool, case_id: str | None = None, description: str = "") -> Case:
        """Open the case when resuming or when it exists and is resumable, else create it."""
        if (root / CASE_FILE).exists():
            if not resume:
                raise CloudirError(
                    f"{root} already holds a case", hint="add --resume to continue it, or choose another --case folder"
                )
            return cls.open(root)
        return cls.create(root, case_id=case_id, description=description)

    # -- custody ----------------------------------------------------------------------------------------
    @contextmanager
    def action(self, name: str, *, target: str | None = None, **details: Any) -> Iterator[ActionContext]:
        """Group everything done inside into one custody record; failures are recorded too."""
        ctx = ActionContext(name=name, target=target, details=dict(details))
        with self._lock:
            self._actions.append(ctx)
        try:
            yield ctx
        except BaseException as exc:
            self._finish(ctx, outcome="failed", error=f"{type(exc).__name__}: {exc}")
            raise
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

    def _current(self) -> ActionContext | None:
        with self._lock:
            return self._actions[-1] if self._actions else None

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

    def record_existing(self, rel_path: str) -> ArtifactRef:
        """Hash a file that another library wrote into the case (e.g. a DuckDB database) and register it."""
        from cloudir.hashing import sha256_file

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

    def save_state(self, state: dict[str, Any]) -> None:
        """Persist the run state atomically."""
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=_json_default), encoding="utf-8")
        tmp.replace(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "read"):
        return "<stream>"
    return str(value)
