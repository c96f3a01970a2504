"""Detection benchmark: labelled attacks mixed into a month of benign background, then ingest + analyze.

Usage: ``uv run python benchmarks/detection_benchmark.py [--events N] [--work DIR] [--json FILE]
[--reuse-background] [--attacker-identity new|known|both]``

* Background: ``detection_background.py`` (documented there; knows nothing of the attack files), 30 days,
  generated and ingested once into ``background.duckdb``; each mode adds its attack files to a copy of it.
* Attacks, time-shifted into the last 7 days (each Stratus technique at its own random moment, relative timing
  kept, the same moments in every mode): the 35 Stratus Red Team detonations, flaws2 (attacker = labels.csv),
  OTRF cloud-breach-s3 (attacker = labels.csv); their benign events stay in as background. The upstream
  anonymisation artefacts are neutralised so they cannot give detections away: every account id of an attack
  file is mapped to the background's account, fake regions become us-east-1, and the Stratus tool's own user
  agent ``stratus-red-team_<uuid>`` becomes a plain Go SDK user agent.
* Attacker identity: ``new`` keeps the datasets' principals (absent from the background); ``known`` re-attributes
  the principals of each file's attacker calls to one background identity drawn (seeded, per file) from the pool
  matching the stolen credentials' kind - people and CI for Stratus, workload roles for flaws2, instance sessions
  for OTRF - keeping the attacker's source IPs, user agents, regions and operations.
* Analysis: ``cloudir analyze`` with defaults (window chosen from the data, no Sigma rules), in its own process
  (time and peak RSS of that process).
* Metrics per mode, per analyzer and in total: Stratus techniques with at least one event in a finding's
  ``event_ids``; recall on labelled attacker events of the other datasets; findings that contain no attack event,
  per 1M background events; the same for the SigmaHQ rules alone (each rule hit grouped per actor/session/hour,
  no threshold, no tempering) as the baseline; ingest and analysis times.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.detection_background import ACCOUNTS, MAIN_REGION, _role_identity, generate_background
from cloudir.analyze.sigma_sql import build_sigma_events, load_rules
from cloudir.timeline.ingest import ingest_paths

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
SIGMA = SHARED / "sigma-rules"
START = datetime(2026, 3, 1)
DAYS = 30
BASELINE_DAYS = 23
PROD = ACCOUNTS["prod"]
STRATUS_AGENT = re.compile(r"stratus-red-team_[0-9a-f-]+")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


@dataclass(frozen=True)
class Victim:
    """A background identity whose credentials the attacker holds in the ``known`` mode."""

    account: str
    role: str
    session: str

    def identity(self) -> dict[str, Any]:
        return _role_identity(self.account, self.role, self.session)


PERSON_VICTIMS = [
    Victim(ACCOUNTS["prod"] if index % 3 else ACCOUNTS["staging"], "AWSReservedSSO_Developer_91c3",
           f"dev{index:02d}@corp.example")
    for index in range(4, 15)
] + [
    Victim(PROD, "github-actions-deploy", "GitHubActions-run"),
    Victim(PROD, "terraform-ci", "tf-run"),
]  # fmt: skip
"""Stratus victims: the 11 developers with a full baseline (dev15 joins on day 25) and the two CI roles."""
WORKLOAD_VICTIMS = [
    Victim(PROD, role, f"{role}-session")
    for role in ("config-sync", "inventory-collector", "metrics-exporter", "eks-cluster-autoscaler", "ebs-backup")
]
"""flaws2 victims: the background's workload roles (flaws2's attacker holds Lambda and ECS task credentials)."""
INSTANCE_VICTIMS = [Victim(PROD, "eks-node-role", f"i-0{node:016x}") for node in range(10)]
"""OTRF victims: the background's EC2 instance-profile sessions (OTRF's attacker holds instance credentials)."""


def _principal(record: dict[str, Any]) -> str | None:
    """The principal an attack event runs as, or None for AWS services and cross-account callers."""
    identity = record.get("userIdentity") or {}
    if identity.get("type") not in {"IAMUser", "AssumedRole", "Root", "FederatedUser"}:
        return None
    return str(identity.get("arn") or identity.get("principalId") or "") or None


def _neutralise(
    record: dict[str, Any],
    shift: timedelta,
    accounts: set[str],
    time_key: str,
    theft: Theft | None = None,
) -> dict[str, Any]:
    """Shift, map accounts to the background (the victim's account in ``known`` mode), neutralise artefacts and
    re-attribute the thief's principals to the victim."""
    text = json.dumps(record)
    for account in accounts:
        text = text.replace(account, theft.victim.account if theft else PROD)
    text = STRATUS_AGENT.sub("aws-sdk-go/1.44.0 (go1.21; linux; amd64)", text)
    out: dict[str, Any] = json.loads(text)
    out[time_key] = (_parse_time(record[time_key]) + shift).strftime("%Y-%m-%dT%H:%M:%SZ")
    if out.get("awsRegion") and not re.fullmatch(r"[a-z]{2}-[a-z]+-\d", out["awsRegion"]):
        out["awsRegion"] = MAIN_REGION
    if theft and _principal(record) in theft.principals:
        out["userIdentity"] = theft.victim.identity()
    return out


@dataclass(frozen=True)
class Theft:
    """``known`` mode, one attack file: the principals of its attacker calls all act as ``victim``."""

    victim: Victim
    principals: frozenset[str]


def _theft(
    records: list[dict[str, Any]], attacker_ids: set[str], pool: list[Victim], rng: random.Random | None
) -> Theft | None:
    """One victim drawn from ``pool`` (seeded, one draw per file) for the principals of the attacker calls."""
    if rng is None:
        return None
    principals = frozenset(p for r in records if r.get("eventID") in attacker_ids and (p := _principal(r)))
    return Theft(rng.choice(pool), principals)


def _accounts(records: list[dict[str, Any]]) -> set[str]:
    found = {r.get("recipientAccountId") for r in records}
    found |= {r.get("userIdentity", {}).get("accountId") for r in records}
    return {a for a in found if a and re.fullmatch(r"\d{12}", a)}


def _incident_moment(rng: random.Random) -> datetime:
    return START + timedelta(days=BASELINE_DAYS, seconds=rng.uniform(0, (DAYS - BASELINE_DAYS - 0.5) * 86400))


def _attack_labels(dataset: str) -> set[str]:
    with (DATASETS / dataset / "labels.csv").open() as handle:
        return {row["eventID"] for row in csv.DictReader(handle) if row["is_attack"] == "True"}


def prepare_attacks(out: Path, seed: int, attacker_identity: str) -> list[tuple[str, str, str]]:
    """Write time-shifted attack files into ``out``; return labels (event_id, dataset, technique or '').

    ``attacker_identity``: ``new`` keeps the datasets' own principals; ``known`` re-attributes the principals of
    the attacker events to background identities (see ``_theft``). Attack moments do not depend on the mode.
    """
    rng = random.Random(seed)
    pick = random.Random(f"{seed}-victims") if attacker_identity == "known" else None
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    labels: list[tuple[str, str, str]] = []
    for path in sorted((DATASETS / "stratus-red-team-detonations-aws" / "logs").glob("*.json")):
        records = json.loads(path.read_text())
        shift = _incident_moment(rng) - min(_parse_time(r["eventTime"]) for r in records)
        accounts = _accounts(records)
        theft = _theft(records, {r["eventID"] for r in records}, PERSON_VICTIMS, pick)
        shifted = [_neutralise(r, shift, accounts, "eventTime", theft) for r in records]
        (out / path.name).write_text(json.dumps(shifted))
        labels += [(r["eventID"], "stratus", path.stem) for r in records]

    flaws = sorted((DATASETS / "flaws2-cloudtrail" / "logs").glob("*.json.gz"))
    records = [r for f in flaws for r in json.loads(gzip.decompress(f.read_bytes()))["Records"]]
    shift = _incident_moment(rng) - min(_parse_time(r["eventTime"]) for r in records)
    accounts = _accounts(records)
    attacker = _attack_labels("flaws2-cloudtrail")
    theft = _theft(records, attacker, WORKLOAD_VICTIMS, pick)
    with gzip.open(out / "flaws2.json.gz", "wt") as handle:
        json.dump({"Records": [_neutralise(r, shift, accounts, "eventTime", theft) for r in records]}, handle)
    labels += [(event_id, "flaws2", "") for event_id in sorted(attacker)]

    otrf_file = next((DATASETS / "otrf-aws-cloud-breach-s3").glob("*.jsonl"))
    records = [json.loads(line) for line in otrf_file.read_text().splitlines() if line.strip()]
    shift = _incident_moment(rng) - min(_parse_time(r["@timestamp"]) for r in records)
    accounts = _accounts(records)
    attacker = _attack_labels("otrf-aws-cloud-breach-s3")
    theft = _theft(records, attacker, INSTANCE_VICTIMS, pick)
    (out / "otrf_breach.jsonl").write_text(
        "".join(json.dumps(_neutralise(r, shift, accounts, "@timestamp", theft)) + "\n" for r in records)
    )
    labels += [(event_id, "otrf-breach", "") for event_id in sorted(attacker)]
    return labels


def sigma_alone(con: duckdb.DuckDBPyConnection) -> None:
    """``sigma_findings``: every SigmaHQ rule hit grouped per rule, actor, session and hour (the baseline)."""
    loaded = load_rules(SIGMA)
    build_sigma_events(
        con, "(SELECT * EXCLUDE (raw) FROM events WHERE NOT is_responder)", [where for _, where in loaded.converted]
    )
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


def ingest_background(work: Path, events: int, reuse: bool) -> dict[str, Any]:
    """Generate and ingest the background once into ``background.duckdb`` (kept for ``--reuse-background``)."""
    db, meta = work / "background.duckdb", work / "background.json"
    if reuse and db.is_file() and meta.is_file():
        cached: dict[str, Any] = json.loads(meta.read_text())
        return cached
    started = time.monotonic()
    if reuse and (work / "background").is_dir():
        generated = None
    else:
        shutil.rmtree(work / "background", ignore_errors=True)
        generated = generate_background(work / "background", start=START, days=DAYS, target_events=events)
    generate_seconds = time.monotonic() - started
    for stale in (db, meta, work / "background.duckdb.wal"):
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    files = sorted((work / "background").iterdir())
    stats = ingest_paths(db, files)
    with duckdb.connect(str(db)) as con:
        con.execute("CHECKPOINT")  # the file alone is copied for each mode
    result = {
        "background_generated": generated,
        "ingest": stats.as_dict(),
        "seconds": {"generate": round(generate_seconds, 1), "ingest": round(time.monotonic() - started, 1)},
    }
    meta.write_text(json.dumps(result, indent=2))
    return result


MEASURE = (
    "import os, subprocess, sys\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    child = subprocess.Popen(sys.argv[2:], stdout=out)\n"
    "    _, status, usage = os.wait4(child.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)
"""Run a command from a small launcher and print its exit code, peak RSS (KiB) and CPU seconds (user + system). A
child's ``ru_maxrss`` starts from the high-water mark of the process that spawned it (Linux keeps it across fork and
exec), so a command run straight from this benchmark, which holds a generated month of records, would report the
benchmark's own peak."""


def measured(command: list[str], stdout: Path) -> tuple[float, int, float]:
    """Run ``command`` (its output into ``stdout``) in its own process: wall seconds, peak RSS in MiB and CPU
    seconds (user + system, all threads: less sensitive than wall time to other jobs on a shared machine)."""
    started = time.monotonic()
    # the command's stderr (and the launcher's) stays this process's stderr: a failure's reason is on screen
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(stdout), *command], check=True, stdout=subprocess.PIPE, text=True
    )
    seconds = round(time.monotonic() - started, 1)
    code, peak_kib, cpu = done.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {code})")
    return seconds, round(int(peak_kib) / 1024), round(float(cpu), 1)


def analyze_as_a_user(db: Path) -> dict[str, Any]:
    """``cloudir analyze DB`` with defaults in its own process: wall time, peak RSS of that process alone and the
    window it chose."""
    output = db.with_suffix(".analyze.json")
    seconds, peak, _ = measured([sys.executable, "-m", "cloudir", "analyze", str(db), "--format", "json"], output)
    summary = json.loads(output.read_text())["summary"]
    return {
        "seconds": seconds,
        "peak_rss_mib": peak,
        "window": [summary["window_basis"], summary["incident_since"], summary["history"]],
    }


def run_mode(work: Path, seed: int, mode: str) -> dict[str, Any]:
    """Mix one mode's attack files into a copy of the background timeline, analyze and score."""
    labels = prepare_attacks(work / f"attacks-{mode}", seed, mode)
    db = work / f"timeline-{mode}.duckdb"
    db.with_name(db.name + ".wal").unlink(missing_ok=True)
    shutil.copyfile(work / "background.duckdb", db)
    started = time.monotonic()
    stats = ingest_paths(db, sorted((work / f"attacks-{mode}").iterdir()))
    ingest_seconds = time.monotonic() - started

    analysis = analyze_as_a_user(db)

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
    for row in [*cloudir_rows, *sigma_rows]:
        row["false_per_million"] = round(row["false_findings"] * 1_000_000 / background_events, 1)
    return {
        "attacker_identity": mode,
        "events": events,
        "background_events": background_events,
        "attack_events": attack_events,
        "labelled": totals,
        "attack_files_ingested": stats.as_dict(),
        "seconds": {
            "ingest_attacks": round(ingest_seconds, 1),
            "analyze": analysis["seconds"],
            "sigma_alone": round(sigma_seconds, 1),
        },
        "analyze_peak_rss_mib": analysis["peak_rss_mib"],
        "window": analysis["window"],
        "cloudir": cloudir_rows,
        "sigma_alone": sigma_rows,
    }


def print_table(result: dict[str, Any]) -> None:
    totals = result["labelled"]
    print(f"\nattacker identity: {result['attacker_identity']}")
    print(
        "| analyzer | Stratus techniques (of 35) | flaws2 recall | OTRF breach recall | findings | "
        "false findings | false / 1M background |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = [(row["analyzer"], row) for row in result["cloudir"]]
    rows += [(f"SigmaHQ alone: {row['analyzer']}", row) for row in result["sigma_alone"]]
    for name, row in rows:
        print(
            f"| {name} | {row['techniques']} | {row['flaws2']}/{totals.get('flaws2', 0)} | "
            f"{row['otrf']}/{totals.get('otrf-breach', 0)} | {row['findings']} | {row['false_findings']} | "
            f"{row['false_per_million']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="background size")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cloudir-detection-benchmark"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--reuse-background", action="store_true", help="keep the background (files and timeline) of a run before"
    )
    parser.add_argument(
        "--attacker-identity",
        choices=["new", "known", "both"],
        default="both",
        help="new: the datasets' own attacker principals; known: re-attributed to background identities",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    background = ingest_background(args.work, args.events, args.reuse_background)
    modes = ["new", "known"] if args.attacker_identity == "both" else [args.attacker_identity]
    result = {
        "seed": args.seed,
        "background": background,
        "modes": {m: run_mode(args.work, args.seed, m) for m in modes},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for mode in modes:
        print_table(result["modes"][mode])


if __name__ == "__main__":
    main()
