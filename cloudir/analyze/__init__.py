"""Analyzers over the DuckDB timeline: each writes candidate findings; the meta step scores and groups them.

``run_analysis`` is the library entry point used by the CLI, the demo and the report.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from cloudir.analyze import beaconing, correlation, impersonation, pattern_of_life, peers, recon, sensitive, sigma
from cloudir.analyze.base import CANDIDATES_DDL, AnalysisWindow, AnalyzerMeta, table_exists
from cloudir.analyze.catalog import RULE_EVENTS, build_rule_events, load_catalog
from cloudir.analyze.meta import write_findings, write_incidents
from cloudir.analyze.novelty import build_novelty
from cloudir.analyze.prepare import attach_work, build_event_view, build_profiles, remove_work, resolve_principals
from cloudir.analyze.window import judge_reference, resolve_window
from cloudir.errors import CloudirError
from cloudir.timeline.db import default_memory_limit

ANALYZERS: tuple[AnalyzerMeta, ...] = (
    pattern_of_life.META,
    peers.META,
    recon.META,
    beaconing.META,
    sensitive.META,
    correlation.META,
    sigma.META,
    impersonation.META,
)
DEFAULT_MIN_SCORE = 50
"""Candidates scoring below this are not written as findings."""


@dataclass
class AnalysisSummary:
    """What one analysis run did."""

    window: AnalysisWindow
    events: int
    findings: int
    incidents: int
    findings_by_analyzer: dict[str, int]
    sigma_rules_converted: int = 0
    sigma_rules_failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def run_analysis(
    db_path: Path,
    *,
    sigma_rules: Path | None = None,
    baseline_until: datetime | None = None,
    incident_since: datetime | None = None,
    min_score: int = DEFAULT_MIN_SCORE,
    known_accounts: tuple[str, ...] = (),
) -> AnalysisSummary:
    """Run every analyzer over ``events`` in ``db_path`` and (re)write ``findings``, ``incidents`` and
    ``analysis_window``. ``known_accounts``: the case's AWS accounts (and organization) beside those of the
    timeline's events - a resource policy granting any other is a grant outside the case.

    Without explicit bounds the window comes from the case around ``db_path`` (its trigger, its log pull), or
    else from the data (see :mod:`cloudir.analyze.window`).
    """
    if not db_path.exists():
        raise CloudirError(f"timeline database {db_path} does not exist", hint="build it with `cloudir timeline`")
    if sigma_rules is not None and not sigma_rules.is_dir():
        raise CloudirError(f"--sigma-rules {sigma_rules} is not a directory")
    started = time.monotonic()
    # bounded like ingest: a memory cap from the machine, and what does not fit spills beside the database
    spill = db_path.with_name(db_path.name + ".tmp")
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": default_memory_limit(),
        "temp_directory": str(spill),
    }
    spill.mkdir(exist_ok=True)
    work = spill / "analysis-work.duckdb"
    try:
        with duckdb.connect(str(db_path), config=config) as con:
            if not table_exists(con, "events"):
                raise CloudirError(f"{db_path} has no events table", hint="build it with `cloudir timeline`")
            attach_work(con, work)
            window = resolve_window(con, _case_root(db_path), baseline_until, incident_since)
            build_event_view(con, window)
            resolve_principals(con)
            window = judge_reference(con, window)
            build_profiles(con, tenant=window.tenant)
            peers.build_peer_groups(con)
            _release(con, "peer_candidates")
            con.execute(CANDIDATES_DDL)
            recon.run(con, tenant=window.tenant)
            beaconing.run(con)
            # the catalog and correlation read one parse of each record either keeps
            rule_events = build_rule_events(con, "ev", [load_catalog().rule_set(), correlation.load_rules().rule_set()])
            sensitive.run(con, rule_events["catalog"], known_accounts)
            correlation.run(con, rule_events["correlation"])
            _release(con, RULE_EVENTS)
            impersonation.run(con)
            sigma_load = sigma.run(con, sigma_rules) if sigma_rules is not None else sigma.SigmaLoad()
            # after the tempered candidates: novelty labels what they, pattern of life and peer divergence look up
            build_novelty(con, tenant=window.tenant, abstain=window.abstains)
            _release(con, "identity_values", "global_profile", "tenant_profile")
            if not window.abstains:
                pattern_of_life.run(con)
                peers.run(con)
            _release(con, "peer_profile", "peer_terms", "peer_divergent")
            write_findings(con, list(ANALYZERS), min_score, tenant=window.tenant)
            write_incidents(con)
            events = _scalar(con, "SELECT count(*) FROM ev")
            by_analyzer = dict(con.execute("SELECT analyzer, count(*) FROM findings GROUP BY analyzer").fetchall())
            findings = _scalar(con, "SELECT count(*) FROM findings")
            incidents = _scalar(con, "SELECT count(*) FROM incidents")
            _store_window(con, window, events, min_score)
    finally:
        remove_work(work)
        with contextlib.suppress(OSError):  # the spill folder, unless DuckDB left files in it
            spill.rmdir()
    return AnalysisSummary(
        window=window,
        events=events,
        findings=findings,
        incidents=incidents,
        findings_by_analyzer=by_analyzer,
        sigma_rules_converted=len(sigma_load.converted),
        sigma_rules_failed=sigma_load.failed,
        seconds=round(time.monotonic() - started, 2),
    )


def _release(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Drop working tables no later step reads: their memory (or spill) goes back before the next step."""
    for table in tables:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _case_root(db_path: Path) -> Path | None:
    """The case folder holding the timeline, when it is one (it has ``case.json``)."""
    root = db_path.resolve().parent
    return root if (root / "case.json").is_file() else None


def _store_window(con: duckdb.DuckDBPyConnection, window: AnalysisWindow, events: int, min_score: int) -> None:
    """``analysis_window``: the window the findings were computed with, and why (one row)."""
    con.execute(
        """
        CREATE OR REPLACE TABLE analysis_window (
            baseline_until TIMESTAMP, incident_since TIMESTAMP, basis VARCHAR, reason VARCHAR,
            history VARCHAR, history_reason VARCHAR, events BIGINT, min_score INTEGER, analyzed_at TIMESTAMP
        )
        """
    )
    con.execute(
        "INSERT INTO analysis_window VALUES (?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [
            window.baseline_until,
            window.incident_since,
            window.basis,
            window.reason,
            window.history,
            window.history_reason,
            events,
            min_score,
        ],
    )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0
