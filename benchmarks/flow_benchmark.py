"""Beacon detection on generated VPC flow logs: recall, false network findings, and memory of ingest + analysis.

Generates a fleet's flow logs (``moto_fixtures.flow_background``: web tiers, batch cron jobs, package updates, the
metadata and DNS endpoints, planted beacons of 30 s .. 1 h with 0-50 % jitter, a third from the first day, a third
on one member of a web Auto Scaling group), writes them as S3-delivered ``.log.gz`` files with the DescribeInstances
inventory, then runs ``cloudir timeline ingest`` and ``cloudir analyze`` with their defaults, each in its own
process, and reports:

* recall: planted beacons with jitter <= 30 % (and with any jitter) that became a ``flow-beacon`` finding of their
  instance and destination;
* false network findings per 1,000 instance-days: ``flow-beacon`` findings that are no planted beacon;
* the flow records ingested, and the peak resident memory of the ingest and of the analysis processes.

    uv run python benchmarks/flow_benchmark.py --instances 300 --days 14 --beacons 30
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from moto_fixtures.flow_background import ACCOUNT, REGION, Fleet, generate, write_s3_layout


def _control_plane(folder: Path, fleet: Fleet) -> None:
    """A few CloudTrail records a day (the analysis needs control-plane events beside the flows)."""
    records = [
        {
            "eventVersion": "1.08",
            "eventTime": (fleet.start + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "sts.amazonaws.com",
            "eventName": "GetCallerIdentity",
            "awsRegion": REGION,
            "sourceIPAddress": "192.0.2.10",
            "userAgent": "aws-cli/2.15.0",
            "eventID": f"00000000-0000-0000-0000-{hour:012d}",
            "eventType": "AwsApiCall",
            "recipientAccountId": ACCOUNT,
            "userIdentity": {
                "type": "IAMUser",
                "arn": f"arn:aws:iam::{ACCOUNT}:user/operator",
                "accountId": ACCOUNT,
                "userName": "operator",
            },
        }
        for hour in range(0, fleet.days * 24, 6)
    ]
    (folder / "cloudtrail.json").write_text(json.dumps({"Records": records}), encoding="utf-8")


def _child(args: list[str]) -> tuple[float, int]:
    """Run a cloudir command in its own process: (seconds, peak RSS in KiB of the largest child so far)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "cloudir", *args], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def run(fleet: Fleet, work: Path) -> dict[str, Any]:
    """Generate, ingest, analyze and score one fleet."""
    with duckdb.connect() as con:
        generate(con, fleet)
        write_s3_layout(con, fleet, work / "flows")
        truth = con.execute("SELECT instance_id, remote, jitter FROM gen_beacons").fetchall()
        generated = con.execute("SELECT count(*) FROM gen_records").fetchone()
    _control_plane(work / "flows", fleet)
    db = work / "timeline.duckdb"
    ingest_s, ingest_rss = _child(["timeline", "ingest", str(work / "flows"), "--db", str(db)])
    analyze_s, analyze_rss = _child(["analyze", str(db)])
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(  # titles read 'Beacon every N s: <workload> -> <address>:<port>'
            "SELECT actor, split_part(split_part(title, ' -> ', 2), ':', 1) FROM findings WHERE rule = 'flow-beacon'"
        ).fetchall()
        flows = con.execute("SELECT count(*) FROM flows").fetchone()
    hits = {(actor, address) for actor, address in found}
    planted = {(instance, remote) for instance, remote, _ in truth}
    low_jitter = [(i, r) for i, r, jitter in truth if jitter <= 0.3]
    false_findings = [f for f in hits if f not in planted]
    instance_days = fleet.instances * fleet.days
    return {
        "fleet": {"instances": fleet.instances, "days": fleet.days, "beacons": fleet.beacons, "window": fleet.window},
        "flow_records_generated": generated[0] if generated else 0,
        "flow_records_ingested": flows[0] if flows else 0,
        "recall_jitter_le_30pct": sum(b in hits for b in low_jitter) / max(1, len(low_jitter)),
        "recall_all": sum(b in hits for b in planted) / max(1, len(planted)),
        "false_findings": len(false_findings),
        "false_findings_per_1000_instance_days": 1000 * len(false_findings) / instance_days,
        "ingest_seconds": round(ingest_s, 1),
        "analyze_seconds": round(analyze_s, 1),
        "ingest_peak_rss_mib": round(ingest_rss / 1024),
        "ingest_and_analyze_peak_rss_mib": round(max(ingest_rss, analyze_rss) / 1024),
    }


def main() -> None:
    """Parse options, run, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--beacons", type=int, default=30)
    parser.add_argument("--window", type=int, default=600, choices=(60, 600), help="aggregation interval, s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    fleet = Fleet(args.instances, args.days, args.beacons, args.window, args.seed)
    with tempfile.TemporaryDirectory(prefix="cloudir-flow-bench-") as work:
        print(json.dumps(run(fleet, Path(work)), indent=2))


if __name__ == "__main__":
    main()
