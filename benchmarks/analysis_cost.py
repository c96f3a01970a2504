"""Cost of analysis against ingest: N generated CloudTrail events with A identities, each size ingested and analyzed
with the defaults, each command in its own process (wall time and peak RSS of that process alone).

    uv run python benchmarks/analysis_cost.py --events 1000000 --events 2000000 --actors 10000 --work DIR

Events come from ``generate_events.py`` (real records of ``../shared/datasets``, re-identified as ``--actors``
principals in 20 accounts, spread over 90 days). Per size: ``cloudir timeline ingest FILES --db DB`` and
``cloudir analyze DB --format json`` with no option; the ratio analysis / ingest is the figure (targets: below
1x, and peak RSS under 2 GiB at 1M, 4 GiB at 10M with 10,000 identities), by wall time and by CPU time (user +
system of each process, steadier on a shared machine); over sizes, CPU seconds per million events show whether
the cost is linear. Timelines stay under ``--work`` (delete them after): ``--ingest-only`` then
``--reuse-timeline`` analyzes an ingested size again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.detection_benchmark import measured
from benchmarks.generate_events import generate

CLOUDIR = [sys.executable, "-m", "cloudir"]


def ingest_size(work: Path, events: int, actors: int) -> tuple[Path, dict[str, Any]]:
    """Generate and ingest one size (the files are removed after); the database and its figures are kept."""
    data, db, figures = work / f"events-{events}", work / f"timeline-{events}.duckdb", work / f"ingest-{events}.json"
    shutil.rmtree(data, ignore_errors=True)
    for stale in (db, db.with_name(db.name + ".wal"), figures):
        stale.unlink(missing_ok=True)
    generate(data, events, chunk=100_000, actors=actors, shape="jsonl", gzip=False)
    seconds, peak, cpu = measured(
        [*CLOUDIR, "timeline", "ingest", str(data), "--db", str(db)], work / f"ingest-{events}.txt"
    )
    shutil.rmtree(data)
    ingest = {"actors": actors, "seconds": seconds, "peak_rss_mib": peak, "cpu_seconds": cpu}
    figures.write_text(json.dumps(ingest))
    return db, ingest


def run_size(work: Path, events: int, actors: int, *, reuse: bool) -> dict[str, Any]:
    """Ingest (or, with ``reuse``, take the kept timeline and its ingest figures) and analyze one size."""
    figures = work / f"ingest-{events}.json"
    if reuse and figures.is_file():
        db, ingest = work / f"timeline-{events}.duckdb", json.loads(figures.read_text())
        actors = ingest["actors"]
    else:
        db, ingest = ingest_size(work, events, actors)
    output = work / f"analyze-{events}.json"
    analysis = measured([*CLOUDIR, "analyze", str(db), "--format", "json"], output)
    summary = json.loads(output.read_text())["summary"]
    return {
        "events": events,
        "actors": actors,
        "analyzed_events": summary["events"],
        "findings": summary["findings"],
        "window": [summary["window_basis"], summary["incident_since"], summary["history"]],
        "ingest": {k: ingest.get(k) for k in ("seconds", "peak_rss_mib", "cpu_seconds")},
        "analyze": {"seconds": analysis[0], "peak_rss_mib": analysis[1], "cpu_seconds": analysis[2]},
        "analyze_vs_ingest": round(analysis[0] / ingest["seconds"], 2),
        # CPU against CPU, when the ingest's was measured (timelines ingested before it was are quoted by wall time)
        "analyze_vs_ingest_cpu": round(analysis[2] / ingest["cpu_seconds"], 2) if ingest.get("cpu_seconds") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, action="append", help="a size (repeat for several)")
    parser.add_argument("--actors", type=int, default=10_000, help="distinct principals")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cloudir-analysis-cost"))
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--ingest-only", action="store_true", help="generate and ingest, analyze later")
    parser.add_argument(
        "--reuse-timeline", action="store_true", help="analyze the timeline (and quote the ingest) of a run before"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.ingest_only:
        for events in args.events or [1_000_000]:
            print(json.dumps(ingest_size(args.work, events, args.actors)[1]), flush=True)
        return
    results = []
    for events in args.events or [1_000_000]:
        results.append(run_size(args.work, events, args.actors, reuse=args.reuse_timeline))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| events | identities | ingest s (CPU s) | ingest peak MiB | analyze s (CPU s) | analyze peak MiB "
        "| analyze / ingest (CPU) | analyze CPU s per 1M events |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        print(table_row(row))


def table_row(row: dict[str, Any]) -> str:
    """One size as a Markdown row; an ingest whose CPU was not recorded shows "CPU not measured", not ``None``."""
    ingest, analysis = row["ingest"], row["analyze"]
    ingest_cpu = "CPU not measured" if ingest["cpu_seconds"] is None else f"{ingest['cpu_seconds']}"
    ratio_cpu = "CPU not measured" if row["analyze_vs_ingest_cpu"] is None else f"{row['analyze_vs_ingest_cpu']}x"
    return (
        f"| {row['events']:,} | {row['actors']:,} | {ingest['seconds']} ({ingest_cpu}) "
        f"| {ingest['peak_rss_mib']:,} | {analysis['seconds']} ({analysis['cpu_seconds']}) "
        f"| {analysis['peak_rss_mib']:,} | {row['analyze_vs_ingest']}x ({ratio_cpu}) "
        f"| {round(analysis['cpu_seconds'] * 1e6 / row['events'], 1)} |"
    )


if __name__ == "__main__":
    main()
