"""Each dev dataset as a responder runs it: ingest the files as they are, ``run_analysis`` with defaults, score.

Usage: ``uv run python benchmarks/dev_datasets.py [--work DIR] [--json FILE] [--sigma] [--each-alone PLATFORM ...]
[--jobs N] [--panther-only] [--misses]``

* Stratus Red Team detonations alone; flaws2 alone; OTRF cloud-breach-s3 alone; Stratus and OTRF together
  (two logs years apart in one timeline). Metric: Stratus techniques with an event in some finding's
  ``event_ids``; labelled attacker events of flaws2 / OTRF in findings; OTRF benign events in findings.
* Panther rule-test fixtures (``panther-rule-tests``): each platform's fixtures in one timeline (each record's id made
  unique to its case) and (``--each-alone``) each fixture alone in its own timeline: its rows copied from the all-
  together timeline into a fresh one (what ingesting it alone gives: a record is read by itself) and a whole
  analysis, fixture after fixture in ``--jobs`` processes that load the catalog once. An event counts as alerted
  when it is in a finding's ``event_ids``. Precision and recall against ``expected_alert``, for the rule-based
  analyzers (rule catalog, correlation rules, Sigma) and for all analyzers; over every case, and
  (``together_readable``) over the cases whose record the timeline reads (the others are quarantined: Okta, Box,
  GSuite records, fixtures without a time or an operation).
* ``--misses``: per platform, the readable true cases no rule-based analyzer flagged and the false alerts (with the
  rules that raised them), each as its case's operation - to sort the misses into behaviour classes.
* No option is set: the window, the history mode and the minimum score are the defaults a responder gets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudir.analyze import run_analysis
from cloudir.timeline.db import connect_for_ingest, default_memory_limit
from cloudir.timeline.ingest import ingest_paths

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
SIGMA = REPO.parent / "shared" / "sigma-rules"
STRATUS = DATASETS / "stratus-red-team-detonations-aws"
FLAWS2 = DATASETS / "flaws2-cloudtrail"
OTRF = DATASETS / "otrf-aws-cloud-breach-s3"
PANTHER = DATASETS / "panther-rule-tests"
RULE_BASED = ("sensitive_actions", "correlation", "sigma")
PANTHER_EVENTS = "fixtures.jsonl"
"""The file each platform's fixtures are written to (one record a line, ids made unique to their case)."""


def _analyze(work: Path, name: str, paths: list[Path], sigma: bool) -> duckdb.DuckDBPyConnection:
    db = work / f"{name}.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    ingest_paths(db, paths)
    run_analysis(db, sigma_rules=SIGMA if sigma else None)
    return duckdb.connect(str(db))


def _labels(path: Path) -> dict[str, str]:
    with path.open() as handle:
        return {row["eventID"]: row.get("technique_id") or row["is_attack"] for row in csv.DictReader(handle)}


def _flagged(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT DISTINCT unnest(event_ids) FROM findings").fetchall()
    return {str(row[0]) for row in rows}


def labelled_runs(work: Path, sigma: bool) -> dict[str, Any]:
    """Stratus, flaws2, OTRF alone and Stratus + OTRF together."""
    stratus = _labels(STRATUS / "labels.csv")
    flaws2 = {k for k, v in _labels(FLAWS2 / "labels.csv").items() if v == "True"}
    otrf_all = _labels(OTRF / "labels.csv")
    otrf = {k for k, v in otrf_all.items() if v == "True"}
    otrf_benign = set(otrf_all) - otrf
    runs = {
        "stratus": [STRATUS / "logs"],
        "flaws2": [FLAWS2 / "logs"],
        "otrf": [*OTRF.glob("*.jsonl")],
        "stratus+otrf": [STRATUS / "logs", *OTRF.glob("*.jsonl")],
    }
    result: dict[str, Any] = {}
    for name, paths in runs.items():
        with _analyze(work, name, paths, sigma) as con:
            flagged = _flagged(con)
            findings = con.execute("SELECT count(*) FROM findings").fetchone()
            window = con.execute("SELECT basis, history FROM analysis_window").fetchone()
        entry: dict[str, Any] = {
            "findings": findings[0] if findings else 0,
            "window": list(window) if window else None,
        }
        if "stratus" in name:
            entry["stratus_techniques"] = f"{len({stratus[e] for e in flagged if e in stratus})}/35"
        if "otrf" in name:
            entry["otrf_attacker"] = f"{len(flagged & otrf)}/{len(otrf)}"
            entry["otrf_benign_flagged"] = f"{len(flagged & otrf_benign)}/{len(otrf_benign)}"
        if name == "flaws2":
            entry["flaws2_attacker"] = f"{len(flagged & flaws2)}/{len(flaws2)}"
        result[name] = entry
    return result


def _precision_recall(truth: list[bool], predicted: list[bool]) -> dict[str, float]:
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    fp = sum(p and not t for t, p in zip(truth, predicted, strict=True))
    fn = sum(t and not p for t, p in zip(truth, predicted, strict=True))
    return {
        "precision": round(tp / (tp + fp), 3) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 3) if tp + fn else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _panther_predictions(con: duckdb.DuckDBPyConnection, fixture_file: str) -> dict[int, tuple[bool, bool]]:
    """Line number in the fixture file -> (flagged by a rule-based analyzer, flagged by any analyzer)."""
    rows = con.execute(
        """
        WITH f AS (SELECT analyzer, unnest(event_ids) AS event_id FROM findings)
        SELECT e.source_position, bool_or(f.analyzer IN $rule_based), true
        FROM f JOIN events e USING (event_id) WHERE e.source_file LIKE '%' || $file GROUP BY ALL
        """,
        {"rule_based": list(RULE_BASED), "file": fixture_file},
    ).fetchall()
    return {int(row[0]): (bool(row[1]), bool(row[2])) for row in rows}


ID_FIELDS = ("eventID", "insertId", "eventDataId", "id")
"""The record id each format reads (CloudTrail, GCP LogEntry, Azure Activity, Entra)."""


def _own_id(event: dict[str, Any], index: int) -> dict[str, Any]:
    """The fixture with its record id made unique to its case: hand-written fixtures reuse ids ("1111") across
    cases, and a finding names events by id, so one flagged id would count as an alert for every case sharing
    it. Nothing else of the record changes."""
    own = {key: f"{value}-case{index}" if key in ID_FIELDS and isinstance(value, str) else value
           for key, value in event.items()}  # fmt: skip
    if isinstance(own.get("properties"), dict) and isinstance(own["properties"].get("id"), str):
        own["properties"] = {**own["properties"], "id": f"{own['properties']['id']}-case{index}"}  # Entra diagnostics
    return own


PLACEHOLDER_TIME = "2024-01-01T00:00:00Z"
"""The time ``--supply-time`` gives a fixture that has none (a harness choice, like the ids; ingest is unchanged)."""


def _with_time(event: dict[str, Any], index: int) -> dict[str, Any]:
    """The fixture with what its envelope needs to be an event, where the hand-written fixture left it out: a GCP
    LogEntry's ``timestamp``, an AKS kube-audit record's ``time``, and for a bare audit.k8s.io Event the fields
    every such Event carries (``requestReceivedTimestamp``, ``stageTimestamp``, ``auditID`` - unique to its case -
    and ``stage``). Nothing present is changed."""
    if "protoPayload" in event:
        return {"timestamp": PLACEHOLDER_TIME, **event}
    if event.get("category") == "kube-audit" and isinstance(event.get("properties"), dict):
        return {"time": PLACEHOLDER_TIME, **event}
    if event.get("kind") == "Event" and "verb" in event:
        supplied = {"requestReceivedTimestamp": PLACEHOLDER_TIME, "stageTimestamp": PLACEHOLDER_TIME}
        return {**supplied, "auditID": f"case{index}", "stage": "ResponseComplete", **event}
    return event


def _operation(event: dict[str, Any]) -> str:
    """The case's operation as its format names it (CloudTrail, GCP LogEntry, Azure Activity, Entra)."""
    payload = event.get("protoPayload")
    if isinstance(payload, dict):
        return str(payload.get("methodName"))
    for key in ("eventName", "operationName", "activityDisplayName"):
        if event.get(key):
            value = event[key]
            return str(value.get("value") if isinstance(value, dict) else value)
    return "?"


def _rules_by_line(con: duckdb.DuckDBPyConnection, fixture_file: str) -> dict[int, list[str]]:
    """Line number in the fixture file -> the rule-based findings' rules that name its event."""
    rows = con.execute(
        """
        WITH f AS (SELECT rule, unnest(event_ids) AS event_id FROM findings WHERE analyzer IN $rule_based)
        SELECT e.source_position, list(DISTINCT f.rule ORDER BY f.rule)
        FROM f JOIN events e USING (event_id) WHERE e.source_file LIKE '%' || $file GROUP BY ALL
        """,
        {"rule_based": list(RULE_BASED), "file": fixture_file},
    ).fetchall()
    return {int(row[0]): list(row[1]) for row in rows}


def _misses(cases: list[dict[str, Any]], readable: set[int], rules: dict[int, list[str]]) -> dict[str, list[str]]:
    """The readable true cases no rule flagged and the false alerts, as ``test name | operation [| rules]``."""
    missed, false = [], []
    for i in sorted(readable):
        case = cases[i]
        label = f"{case['test_name']} | {_operation(case['event'])}"
        if case["expected_alert"] and i not in rules:
            missed.append(label)
        elif not case["expected_alert"] and i in rules:
            false.append(f"{label} | {', '.join(rules[i])}")
    return {"missed": missed, "false_alerts": false}


def panther_runs(
    work: Path, sigma: bool, each_alone: list[str], jobs: int, supply_time: bool = False, misses: bool = False
) -> dict[str, Any]:
    """Per platform: all fixtures in one timeline, and for the platforms in ``each_alone`` every fixture in its own
    timeline (``jobs`` worker processes, each loading the catalog once and analyzing fixture after fixture)."""
    result: dict[str, Any] = {}
    for fixtures in sorted(PANTHER.glob("*.jsonl")):
        cases = [json.loads(line) for line in fixtures.read_text().splitlines() if line.strip()]
        platform = fixtures.stem
        folder = work / f"panther-{platform}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        own = [_own_id(case["event"], i) for i, case in enumerate(cases)]
        if supply_time:
            own = [_with_time(record, i) for i, record in enumerate(own)]
        events_file = folder / PANTHER_EVENTS
        events_file.write_text("".join(json.dumps(record) + "\n" for record in own))
        truth = [bool(case["expected_alert"]) for case in cases]
        together = work / f"panther-{platform}.duckdb"
        with _analyze(work, together.stem, [events_file], sigma) as con:
            predicted = _panther_predictions(con, events_file.name)
            readable = {int(row[0]) for row in con.execute("SELECT source_position FROM events").fetchall()}
            rules = _rules_by_line(con, events_file.name) if misses else {}
        rule_based = [predicted.get(i, (False, False))[0] for i in range(len(cases))]
        overall = [predicted.get(i, (False, False))[1] for i in range(len(cases))]
        kept = sorted(readable)
        entry: dict[str, Any] = {
            "cases": len(cases),
            "readable_cases": len(kept),
            "together": {
                "rule_based": _precision_recall(truth, rule_based),
                "all": _precision_recall(truth, overall),
            },
            "together_readable": {
                "rule_based": _precision_recall([truth[i] for i in kept], [rule_based[i] for i in kept]),
                "all": _precision_recall([truth[i] for i in kept], [overall[i] for i in kept]),
            },
        }
        if misses:
            entry["misses"] = _misses(cases, readable, rules)
        if platform in each_alone or "all" in each_alone:
            started = time.monotonic()
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                alone = list(
                    pool.map(alone_prediction, repeat(together), own, range(len(own)), repeat(folder), repeat(sigma))
                )
            entry["alone"] = {
                "rule_based": _precision_recall(truth, [hit[0] for hit in alone]),
                "all": _precision_recall(truth, [hit[1] for hit in alone]),
                "seconds": round(time.monotonic() - started, 1),
            }
        result[platform] = entry
    return result


def alone_prediction(together: Path, record: dict[str, Any], index: int, work: Path, sigma: bool) -> tuple[bool, bool]:
    """Fixture ``index`` analyzed in a timeline of its own: (flagged by a rule-based analyzer, by any analyzer)."""
    db = work / f"alone-{os.getpid()}.duckdb"
    if not alone_timeline(together, record, index, db):
        return (False, False)  # quarantined: no event, nothing alerted
    run_analysis(db, sigma_rules=SIGMA if sigma else None)
    with duckdb.connect(str(db)) as con:
        row = con.execute(
            "SELECT coalesce(bool_or(analyzer IN $rule_based), false), count(*) > 0 FROM findings",
            {"rule_based": list(RULE_BASED)},
        ).fetchone()
    return (bool(row[0]), bool(row[1])) if row else (False, False)


def alone_timeline(together: Path, record: dict[str, Any], index: int, db: Path) -> int:
    """A fresh timeline ``db`` holding fixture ``index`` (``record``) alone; its number of events.

    Ingest reads each record by itself, so the rows the all-together timeline ``together`` holds for the record are
    the rows ingesting it alone gives: they are copied instead of paying for a whole ingest per fixture. A record
    without such rows that the ingest did not quarantine (an exact duplicate of another case's, or one whose id
    collided with another's) is ingested alone."""
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    with connect_for_ingest(db, memory_limit=default_memory_limit()) as con:
        con.execute("ATTACH $path AS together (READ_ONLY)", {"path": str(together)})
        where = "source_file LIKE '%' || $file AND source_position = $index"
        names = {"file": PANTHER_EVENTS, "index": index}
        con.execute(f"INSERT INTO events SELECT * FROM together.events WHERE {where} AND NOT id_collision", names)
        copied = _count(con, "SELECT count(*) FROM events")
        quarantined = _count(con, f"SELECT count(*) FROM together.quarantine WHERE {where}", names)
    if copied or quarantined:
        return copied
    single = db.with_suffix(".jsonl")
    single.write_text(json.dumps(record) + "\n")
    return ingest_paths(db, [single]).ingested


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cloudir-dev-datasets"))
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sigma", action="store_true", help="also load the SigmaHQ rules (not a default)")
    parser.add_argument(
        "--each-alone",
        nargs="*",
        default=[],
        metavar="PLATFORM",
        help="also analyze every Panther fixture of these platforms (file stems, or all) in a timeline of its own",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for --each-alone (default 2)")
    parser.add_argument(
        "--supply-time",
        action="store_true",
        help=f"give Panther fixtures without a time {PLACEHOLDER_TIME} (Kubernetes audit, some GCP LogEntries)",
    )
    parser.add_argument("--panther-only", action="store_true", help="skip the labelled datasets")
    parser.add_argument("--misses", action="store_true", help="list each platform's missed cases and false alerts")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {
        "sigma": args.sigma,
        "labelled": {} if args.panther_only else labelled_runs(args.work, args.sigma),
        "panther": panther_runs(args.work, args.sigma, args.each_alone, args.jobs, args.supply_time, args.misses),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
