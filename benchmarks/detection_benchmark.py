"""Detection benchmark: labelled attacks mixed into a month of benign background, then ingest + analyze.

Usage: ``uv run python benchmarks/detection_benchmark.py [--events N] [--work DIR]``

* Background: ``detection_background.py`` (documented there; knows nothing of the attack files), 30 days.
* Attacks, time-shifted into the last 7 days (each Stratus technique at its own random moment, relative timing
  kept): the 35 Stratus Red Team detonations, flaws2 (attacker = labels.csv), OTRF cloud-breach-s3
  (attacker = labels.csv); their benign events stay in as background. The upstream anonymisation artefacts are
  neutralised so they cannot give detections away: every account id of an attack file is mapped to the
  background's prod account, fake regions become us-east-1, and the Stratus tool's own user agent
  ``stratus-red-team_<uuid>`` becomes a plain Go SDK user agent.
* Learning window: the first 23 days (``baseline_until``).
* Metrics per analyzer and in total: Stratus techniques with at least one event in a finding's ``event_ids``;
  recall on labelled attacker events of the other datasets; findings that contain no attack event, per 1M
  background events; the same for the SigmaHQ rules alone (each rule hit grouped per actor/session/hour, no
  threshold, no tempering) as the baseline; ingest and analysis times.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
import shutil
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.detection_background import ACCOUNTS, MAIN_REGION, generate_background
from cloudir.analyze import run_analysis
from cloudir.analyze.sigma import SIGMA_EVENTS_SQL, load_rules
from cloudir.timeline.ingest import IngestStats, ingest_paths

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
SIGMA = SHARED / "sigma-rules"
START = datetime(2026, 3, 1)
DAYS = 30
BASELINE_DAYS = 23
PROD = ACCOUNTS["prod"]
INGEST_CHUNK_FILES = 60
"""Files per ingest_paths call: one call over all 1M events ran out of the ingest's 1 GB memory limit."""
STRATUS_AGENT = re.compile(r"stratus-red-team_[0-9a-f-]+")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def _neutralise(record: dict[str, Any], shift: timedelta, accounts: set[str], time_key: str) -> dict[str, Any]:
    text = json.dumps(record)
    for account in accounts:
        text = text.replace(account, PROD)
    text = STRATUS_AGENT.sub("aws-sdk-go/1.44.0 (go1.21; linux; amd64)", text)
    out: dict[str, Any] = json.loads(text)
    out[time_key] = (_parse_time(record[time_key]) + shift).strftime("%Y-%m-%dT%H:%M:%SZ")
    if out.get("awsRegion") and not re.fullmatch(r"[a-z]{2}-[a-z]+-\d", out["awsRegion"]):
        out["awsRegion"] = MAIN_REGION
    return out


def _accounts(records: list[dict[str, Any]]) -> set[str]:
    found = {r.get("recipientAccountId") for r in records}
    found |= {r.get("userIdentity", {}).get("accountId") for r in records}
    return {a for a in found if a and re.fullmatch(r"\d{12}", a)}


def _incident_moment(rng: random.Random) -> datetime:
    return START + timedelta(days=BASELINE_DAYS, seconds=rng.uniform(0, (DAYS - BASELINE_DAYS - 0.5) * 86400))


def prepare_attacks(out: Path, rng: random.Random) -> list[tuple[str, str, str]]:
    """Write time-shifted attack files into ``out``; return labels (event_id, dataset, technique or '')."""
    out.mkdir(parents=True, exist_ok=True)
    labels: list[tuple[str, str, str]] = []
    for path in sorted((DATASETS / "stratus-red-team-detonations-aws" / "logs").glob("*.json")):
        records = json.loads(path.read_text())
        shift = _incident_moment(rng) - min(_parse_time(r["eventTime"]) for r in records)
        accounts = _accounts(records)
        shifted = [_neutralise(r, shift, accounts, "eventTime") for r in records]
        (out / path.name).write_text(json.dumps(shifted))
        labels += [(r["eventID"], "stratus", path.stem) for r in records]

    flaws = sorted((DATASETS / "flaws2-cloudtrail" / "logs").glob("*.json.gz"))
    records = [r for f in flaws for r in json.loads(gzip.decompress(f.read_bytes()))["Records"]]
    shift = _incident_moment(rng) - min(_parse_time(r["eventTime"]) for r in records)
    accounts = _accounts(records)
    with gzip.open(out / "flaws2.json.gz", "wt") as handle:
        json.dump({"Records": [_neutralise(r, shift, accounts, "eventTime") for r in records]}, handle)
    with (DATASETS / "flaws2-cloudtrail" / "labels.csv").open() as handle:
        labels += [(row["eventID"], "flaws2", "") for row in csv.DictReader(handle) if row["is_attack"] == "True"]

    otrf_file = next((DATASETS / "otrf-aws-cloud-breach-s3").glob("*.jsonl"))
    records = [json.loads(line) for line in otrf_file.read_text().splitlines() if line.strip()]
    shift = _incident_moment(rng) - min(_parse_time(r["@timestamp"]) for r in records)
    accounts = _accounts(records)
    (out / "otrf_breach.jsonl").write_text(
        "".join(json.dumps(_neutralise(r, shift, accounts, "@timestamp")) + "\n" for r in records)
    )
    with (DATASETS / "otrf-aws-cloud-breach-s3" / "labels.csv").open() as handle:
        labels += [(row["eventID"], "otrf-breach", "") for row in csv.DictReader(handle) if row["is_attack"] == "True"]
    return labels


def sigma_alone(con: duckdb.DuckDBPyConnection) -> None:
    """``sigma_findings``: every SigmaHQ rule hit grouped per rule, actor, session and hour (the baseline)."""
    loaded = load_rules(SIGMA)
    con.execute(SIGMA_EVENTS_SQL.format(source="(SELECT * FROM events WHERE NOT is_responder)"))
    con.execute("CREATE OR REPLACE TABLE sigma_findings (analyzer VARCHAR, rule VARCHAR, event_ids VARCHAR[])")
    for rule, where in loaded.converted:
        try:
            con.execute(
                f"INSERT INTO sigma_findings SELECT 'sigma (SigmaHQ alone)', ?, list(event_id) FROM sigma_events "
                f"WHERE {where} GROUP BY actor, session, date_trunc('hour', time)",
                [str(rule.id)],
            )
        except duckdb.Error:
            continue


def score(con: duckdb.DuckDBPyConnection, table: str) -> list[dict[str, Any]]:
    """Per analyzer and total: techniques, recall per dataset, false findings per 1M background events."""
    rows = con.execute(
        f"""
        WITH f AS (SELECT row_number() OVER () AS fid, analyzer, event_ids FROM {table}),
        fe AS (SELECT fid, analyzer, unnest(event_ids) AS event_id FROM f),
        hit AS (SELECT DISTINCT fe.fid, fe.analyzer, l.dataset, l.technique, l.event_id
                FROM fe JOIN labels l USING (event_id)),
        per AS (
            SELECT analyzer FROM f GROUP BY analyzer UNION ALL SELECT 'TOTAL'
        )
        SELECT per.analyzer,
            (SELECT count(DISTINCT technique) FROM hit WHERE dataset = 'stratus'
                 AND (per.analyzer = 'TOTAL' OR hit.analyzer = per.analyzer)) AS techniques,
            (SELECT count(DISTINCT event_id) FROM hit WHERE dataset = 'flaws2'
                 AND (per.analyzer = 'TOTAL' OR hit.analyzer = per.analyzer)) AS flaws2,
            (SELECT count(DISTINCT event_id) FROM hit WHERE dataset = 'otrf-breach'
                 AND (per.analyzer = 'TOTAL' OR hit.analyzer = per.analyzer)) AS otrf,
            (SELECT count(*) FROM f WHERE (per.analyzer = 'TOTAL' OR f.analyzer = per.analyzer)
                 AND f.fid NOT IN (SELECT fid FROM hit)) AS false_findings,
            (SELECT count(*) FROM f WHERE per.analyzer = 'TOTAL' OR f.analyzer = per.analyzer) AS findings
        FROM per ORDER BY per.analyzer = 'TOTAL', per.analyzer
        """
    ).fetchall()
    names = ["analyzer", "techniques", "flaws2", "otrf", "false_findings", "findings"]
    return [dict(zip(names, row, strict=True)) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="background size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cloudir-detection-benchmark"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--reuse-background", action="store_true", help="keep a background generated before")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    started = time.monotonic()
    if args.reuse_background and (args.work / "background").is_dir():
        background = None
        shutil.rmtree(args.work / "attacks", ignore_errors=True)
        for stale in args.work.glob("timeline.duckdb*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        background = generate_background(args.work / "background", start=START, days=DAYS, target_events=args.events)
    labels = prepare_attacks(args.work / "attacks", rng)
    generated = time.monotonic() - started

    db = args.work / "timeline.duckdb"
    started = time.monotonic()
    files = sorted((args.work / "background").iterdir()) + sorted((args.work / "attacks").iterdir())
    stats = IngestStats()
    for chunk in range(0, len(files), INGEST_CHUNK_FILES):  # bounded batches: see INGEST_CHUNK_FILES
        part = ingest_paths(db, files[chunk : chunk + INGEST_CHUNK_FILES])
        stats.files += part.files
        stats.ingested += part.ingested
        stats.duplicates += part.duplicates
        stats.quarantined += part.quarantined
    ingest_seconds = time.monotonic() - started

    started = time.monotonic()
    summary = run_analysis(db, sigma_rules=SIGMA, baseline_until=START + timedelta(days=BASELINE_DAYS))
    analyze_seconds = time.monotonic() - started

    with duckdb.connect(str(db)) as con:
        con.execute("CREATE OR REPLACE TABLE labels (event_id VARCHAR, dataset VARCHAR, technique VARCHAR)")
        con.executemany("INSERT INTO labels VALUES (?, ?, ?)", [list(label) for label in labels])
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        attack_events = con.execute(
            "SELECT count(*) FROM events WHERE event_id IN (SELECT event_id FROM labels)"
        ).fetchone()[0]  # type: ignore[index]
        totals = dict(con.execute("SELECT dataset, count(DISTINCT event_id) FROM labels GROUP BY ALL").fetchall())
        cloudir_rows = score(con, "findings")
        started = time.monotonic()
        sigma_alone(con)
        sigma_seconds = time.monotonic() - started
        sigma_rows = score(con, "sigma_findings")
    background_events = events - attack_events
    per_million = 1_000_000 / background_events
    result = {
        "background_generated": background,
        "events": events,
        "background_events": background_events,
        "attack_events": attack_events,
        "labelled": totals,
        "ingest": stats.as_dict(),
        "seconds": {
            "generate": round(generated, 1),
            "ingest": round(ingest_seconds, 1),
            "analyze": round(analyze_seconds, 1),
            "sigma_alone": round(sigma_seconds, 1),
        },
        "sigma_rules_converted": summary.sigma_rules_converted,
        "sigma_rules_not_converted": len(summary.sigma_rules_failed),
        "cloudir": cloudir_rows,
        "sigma_alone": sigma_rows,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print()
    print(
        "| analyzer | Stratus techniques (of 35) | flaws2 recall | OTRF breach recall | findings | "
        "false findings | false / 1M background |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in [*cloudir_rows, *sigma_rows]:
        name = row["analyzer"] if row in cloudir_rows else f"SigmaHQ alone: {row['analyzer']}"
        print(
            f"| {name} | {row['techniques']} | {row['flaws2']}/{totals.get('flaws2', 0)} | "
            f"{row['otrf']}/{totals.get('otrf-breach', 0)} | {row['findings']} | {row['false_findings']} | "
            f"{row['false_findings'] * per_million:.1f} |"
        )


if __name__ == "__main__":
    main()
