"""The investigation use cases: build a case's timeline, analyze it, write the report, verify the case.

Shared by the CLI, the playbook engine and the demo. Each one that writes into a case records what it wrote in the
case's custody log, so no front end can forget it (heavy libraries are imported by the call that needs them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cloudir.case import CASE_FILE, REPORTS_DIR, Case, case_root_of
from cloudir.caselock import CaseLock
from cloudir.custody import VerifyResult, verify_case
from cloudir.errors import CloudirError
from cloudir.progress import ProgressCallback

if TYPE_CHECKING:
    from cryptography import x509

    from cloudir.analyze import AnalysisSummary
    from cloudir.timeline.ingest import IngestStats


def build_timeline(
    case: Case, *, memory_limit: str | None = None, on_progress: ProgressCallback | None = None
) -> IngestStats:
    """Build ``timeline.duckdb`` in the case from everything under ``logs/``, recorded with its hash
    (``on_progress``: bytes of logs ingested, of all)."""
    from cloudir.timeline.ingest import build_case_timeline

    return build_case_timeline(case, memory_limit=memory_limit, on_progress=on_progress)


@dataclass(frozen=True)
class IngestRequest:
    """Normalize log files and folders from outside any case into a timeline database (never one in a case)."""

    db_path: Path
    paths: list[Path]
    memory_limit: str | None = None


def ingest(request: IngestRequest, on_progress: ProgressCallback | None = None) -> IngestStats:
    """Ingest outside logs into ``request.db_path``; a database inside a case is refused (it would change the
    case's evidence without a record: pull the logs into the case and build its timeline instead)."""
    from cloudir.timeline.ingest import ingest_paths

    root = case_root_of(request.db_path)
    if root is not None:
        raise CloudirError(
            f"{request.db_path} is inside case {root}: ingesting outside files would change its evidence without a "
            "record",
            hint=f"pull the logs into the case and run: cloudir timeline build {root}",
        )
    return ingest_paths(request.db_path, request.paths, memory_limit=request.memory_limit, on_progress=on_progress)


@dataclass(frozen=True)
class AnalyzeRequest:
    """Score a timeline database; bounds left out are chosen from the case or the data."""

    db_path: Path
    sigma_rules: Path | None = None
    baseline_until: datetime | None = None
    incident_since: datetime | None = None
    min_score: int | None = None
    known_accounts: tuple[str, ...] | None = None  # the case's AWS accounts beside the timeline's; None: the config's


def analyze(request: AnalyzeRequest, case: Case | None = None) -> AnalysisSummary:
    """Write findings and incidents into the database; one inside a case (``case``, or the case folder that holds
    it, opened and locked for the run) is re-registered in its custody log with its new hash."""
    if case is None:
        root = case_root_of(request.db_path)
        if root is None:
            return _score(request)
        with Case.open(root) as opened:
            return analyze(request, opened)
    rel = request.db_path.resolve().relative_to(case.root.resolve()).as_posix()
    with case.action("analyze", target=rel) as act:
        summary = _score(request)
        act.details.update(findings=summary.findings, incidents=summary.incidents)
        case.record_existing(rel)
    return summary


def _score(request: AnalyzeRequest) -> AnalysisSummary:
    from cloudir.analyze import DEFAULT_MIN_SCORE, run_analysis
    from cloudir.config import load_config

    return run_analysis(
        request.db_path,
        sigma_rules=request.sigma_rules,
        baseline_until=request.baseline_until,
        incident_since=request.incident_since,
        min_score=DEFAULT_MIN_SCORE if request.min_score is None else request.min_score,
        known_accounts=tuple(load_config().accounts.get("aws", []))
        if request.known_accounts is None
        else request.known_accounts,
    )


@dataclass(frozen=True)
class ReportRequest:
    """The investigation report (html) or incident summary (md/json), and draft notices beside it."""

    case_dir: Path
    out: Path | None = None  # default: CASE_DIR/reports/report.<fmt>; inside the case only reports/
    fmt: str = "html"
    notices: tuple[str, ...] = ()
    contact: str | None = None


def report(request: ReportRequest, case: Case | None = None) -> Path:
    """Write the report; inside the case it is hashed into the custody log (``case``: already open). Returns it."""
    from cloudir.report import write_report

    out = request.out or request.case_dir / REPORTS_DIR / f"report.{request.fmt}"
    notices = tuple(dict.fromkeys(request.notices))
    return write_report(request.case_dir, out, fmt=request.fmt, case=case, notices=notices, contact=request.contact)


@dataclass(frozen=True)
class VerifyRequest:
    """Check a case: its chain, seals, timestamps and artifacts (``remote``: also the stored seal copies)."""

    case_dir: Path
    expect_head: str | None = None
    public_key: bytes | None = None
    remote: bool = False
    tsa_cert: x509.Certificate | None = None


def _quiet(_message: str) -> None:
    """Hear nothing."""


def verify(
    request: VerifyRequest,
    on_wait: Callable[[str], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Verify the case while holding its lock, so no writer appends mid-check (a read-only copy is checked
    without it); ``on_wait`` hears why the lock is being waited for, ``on_progress`` the bytes hashed of all."""
    lock: CaseLock | None = None
    if (request.case_dir / CASE_FILE).is_file():
        try:
            lock = CaseLock.acquire(request.case_dir, notify=on_wait or _quiet)
        except OSError:  # a read-only copy of a case
            lock = None
    try:
        return verify_case(
            request.case_dir,
            expect_head=request.expect_head,
            public_key=request.public_key,
            remote=request.remote,
            tsa_cert=request.tsa_cert,
            on_progress=on_progress,
        )
    finally:
        if lock is not None:
            lock.release()
