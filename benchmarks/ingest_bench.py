"""Timeline ingest benchmark: cloudir ingest vs bare DuckDB reads of the same files, same run.

    uv run python benchmarks/ingest_bench.py --events 1000000 --shape jsonl --shape records   # both, one run
    uv run python benchmarks/ingest_bench.py --big-document-mib 2048     # one {"Records": [...]} document
    uv run python benchmarks/ingest_bench.py --events 100000 --skip-bare --plaso-bin /tmp/plaso/bin   # Plaso too

Generates the events first when ``--data`` holds no files (benchmarks/generate_events.py): JSON Lines files of
100,000 records, or CloudTrail ``{"Records": [...]}`` files of 5,000 records (the size of busy S3 delivery
files). Each phase runs in its own process so its peak RSS (``getrusage``) is its own: bare reads into a fresh
database with the same memory limit, cloudir ingest (``ingest_paths``, defaults), then per-actor queries on the
read-only query connection. Prints a JSON summary and a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


BARE_READS = {
    "jsonl": {
        # read_json with schema auto-detection; real CloudTrail has keys differing only in case
        # (principalId / principalid), which read_json rejects unless ignore_errors skips those records.
        "read_json": "SELECT * FROM read_json($files, union_by_name=true, ignore_errors=true)",
        # Each record as validated JSON text: the least work any JSON ingest can do.
        "read_json_objects": "SELECT * FROM read_json_objects($files)",
    },
    "records": {
        # The documents with auto-detected structure, one row per record.
        "read_json": "SELECT unnest(Records) FROM read_json($files, union_by_name=true, ignore_errors=true, "
        "maximum_object_size={largest})",
        # Each record as JSON text out of its document.
        "read_json_objects": "SELECT unnest(json_extract(json, '$.Records[*]')) AS json "
        "FROM read_json_objects($files, maximum_object_size={largest})",
    },
}
CHUNKS = {"jsonl": 100_000, "records": 5_000}


def phase_bare(files: list[str], db: str, shape: str, reader: str) -> dict[str, Any]:
    """Bare DuckDB: read every file into a table with one reader, same memory limit as ingest."""
    import duckdb

    from cloudir.timeline.db import default_memory_limit

    con = duckdb.connect(db, config={"memory_limit": default_memory_limit(), "temp_directory": db + ".tmp"})
    # a document must fit one JSON buffer: sized by the largest file, as the ingest sizes its own
    largest = max(1 << 20, 2 * max(Path(f).stat().st_size for f in files))
    started = time.perf_counter()
    con.execute(f"CREATE TABLE bare AS {BARE_READS[shape][reader].format(largest=largest)}", {"files": files})
    con.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    row = con.execute("SELECT count(*) FROM bare").fetchone()
    con.close()
    return {"seconds": seconds, "rows": row[0] if row else 0, "peak_rss_mib": _peak_mib()}


def phase_ingest(files: list[str], db: str) -> dict[str, Any]:
    """cloudir: ingest_paths into a fresh timeline."""
    from cloudir.timeline.ingest import ingest_paths

    started = time.perf_counter()
    stats = ingest_paths(Path(db), [Path(f) for f in files])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "stats": stats.as_dict(), "peak_rss_mib": _peak_mib()}


def phase_query(db: str, samples: int) -> dict[str, Any]:
    """Per-actor queries on the read-only query connection."""
    from cloudir.timeline.db import connect_read_only

    con = connect_read_only(Path(db))
    actors = [row[0] for row in con.execute("SELECT DISTINCT actor FROM events WHERE actor IS NOT NULL").fetchall()]
    picked = random.Random(7).sample(actors, min(samples, len(actors)))
    timings = []
    counts = []
    for actor in picked:
        started = time.perf_counter()
        rows = con.execute(
            "SELECT time, operation, source_ip, status FROM events WHERE actor = ? ORDER BY time", [actor]
        ).fetchall()
        timings.append(time.perf_counter() - started)
        counts.append(len(rows))
    con.close()
    timings.sort()
    return {
        "actors": len(actors),
        "queries": len(timings),
        "median_seconds": timings[len(timings) // 2],
        "max_seconds": timings[-1],
        "median_rows": sorted(counts)[len(counts) // 2],
        "peak_rss_mib": _peak_mib(),
    }


def plaso_side_by_side(plaso_bin: Path, data: Path, work: Path) -> dict[str, Any]:
    """Plaso on the same files: its CloudTrail parser (``jsonl/aws_cloudtrail_log``), then psort to JSON lines."""
    storage, output = work / "plaso.plaso", work / "plaso.jsonl"
    quiet = ["--status_view", "none", "--unattended", "--logfile", str(work / "plaso.log.gz")]
    parsers = ["--parsers", "jsonl/aws_cloudtrail_log", "--storage_file", str(storage)]
    started = time.perf_counter()
    subprocess.run([str(plaso_bin / "log2timeline"), *quiet, *parsers, str(data)], check=True, capture_output=True)
    parsed = time.perf_counter() - started
    subprocess.run(
        [str(plaso_bin / "psort"), *quiet, "-o", "json_line", "-w", str(output), str(storage)],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    with output.open("rb") as handle:
        events = sum(1 for _ in handle)
    return {"log2timeline_seconds": round(parsed, 1), "seconds": round(seconds, 1), "events": events}


def _run_phase(name: str, *args: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", name, *args]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if "Error" in line]
        return {"error": errors[-1] if errors else f"exit status {done.returncode}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="files of one shape (default $TMPDIR/cloudir-bench/events-N-SHAPE)")
    parser.add_argument("--work", type=Path, help="folder for the databases (default $TMPDIR/cloudir-bench/work)")
    parser.add_argument("--gzip", action="store_true", help="generate gzip files")
    parser.add_argument(
        "--shape", choices=("jsonl", "records"), action="append", help="repeat for both, run one after the other"
    )
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--bare", choices=("read_json", "read_json_objects"), action="append", help="(default: both)")
    parser.add_argument("--plaso-bin", type=Path, help="also run Plaso (log2timeline, psort) from this bin folder")
    parser.add_argument("--big-document-mib", type=int, help="instead: ingest one Records document of this size")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data and len(args.shape or []) > 1:
        parser.error("--data holds files of one shape: give one --shape with it")

    if args.phase:
        db, *files = args.rest
        phases = {
            "read_json": lambda: phase_bare(files, db, args.shape[0], "read_json"),
            "read_json_objects": lambda: phase_bare(files, db, args.shape[0], "read_json_objects"),
            "ingest": lambda: phase_ingest(files, db),
            "query": lambda: phase_query(db, args.queries),
        }
        print(json.dumps(phases[args.phase]()))
        return

    scratch = Path(tempfile.gettempdir()) / "cloudir-bench"
    work = args.work or scratch / "work"
    if args.big_document_mib:
        big_document(scratch, work, args.big_document_mib)
        return
    rows = [run_shape(args, shape, scratch, work) for shape in args.shape or ["jsonl"]]
    print("| shape | events | files | ingest events/s | bare reads (ratio) | ingest peak RSS MiB | query s | MiB |")
    print("\n".join(rows))


def run_shape(args: argparse.Namespace, shape: str, scratch: Path, work: Path) -> str:
    """Bare reads, then ingest, then queries of one shape's files; print the JSON summary, return a table row."""
    data = args.data or scratch / f"events-{args.events}-{shape}{'-gz' if args.gzip else ''}"
    if not data.is_dir() or not any(data.iterdir()):
        from generate_events import generate

        print(f"generating {args.events} events into {data} ...", file=sys.stderr)
        generate(data, args.events, chunk=CHUNKS[shape], actors=2_000, shape=shape, gzip=args.gzip)
    files = sorted(str(p) for p in data.iterdir() if p.is_file())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    input_mib = sum(Path(f).stat().st_size for f in files) / 2**20

    bare: dict[str, dict[str, Any]] = (
        {}
        if args.skip_bare
        else {
            reader: _run_phase(reader, "--shape", shape, str(work / f"{reader}.duckdb"), *files)
            for reader in args.bare or BARE_READS[shape]
        }
    )
    ingest = _run_phase("ingest", str(work / "timeline.duckdb"), *files)
    if "error" in ingest:
        raise SystemExit(f"ingest failed: {ingest['error']}")
    query = _run_phase("query", "--queries", str(args.queries), str(work / "timeline.duckdb"))
    plaso = plaso_side_by_side(args.plaso_bin, data, work) if args.plaso_bin else None
    events = ingest["stats"]["records"]
    summary = {
        "shape": shape,
        "events": events,
        "files": len(files),
        "input_mib": round(input_mib),
        "timeline_db_mib": round((work / "timeline.duckdb").stat().st_size / 2**20),
        "ingest_events_per_s": round(events / ingest["seconds"]),
        "ingest_seconds": round(ingest["seconds"], 1),
        "ingest_peak_rss_mib": round(ingest["peak_rss_mib"]),
        "bare": {
            reader: {
                "events_per_s": round(result["rows"] / result["seconds"]),
                "rows": result["rows"],
                "seconds": round(result["seconds"], 1),
                "peak_rss_mib": round(result["peak_rss_mib"]),
                "ingest_speed_ratio": round(result["seconds"] / ingest["seconds"], 2),
            }
            for reader, result in bare.items()
            if "error" not in result
        }
        | {reader: {"error": result["error"]} for reader, result in bare.items() if "error" in result},
        "actor_query_median_s": round(query["median_seconds"], 4),
        "actor_query_max_s": round(query["max_seconds"], 4),
        "actor_query_median_rows": query["median_rows"],
        "ingest_stats": ingest["stats"],
    }
    if plaso:
        summary["plaso"] = plaso | {"cloudir_speedup": round(plaso["seconds"] / ingest["seconds"], 1)}
    print(json.dumps(summary, indent=2), flush=True)
    ratios = " / ".join(
        f"{reader} {value['seconds']} s ({value['ingest_speed_ratio']}x)" if "seconds" in value else f"{reader} failed"
        for reader, value in summary["bare"].items()
    )
    return (
        f"| {shape} | {events:,} | {len(files)} | {summary['ingest_events_per_s']:,} ({summary['ingest_seconds']} s) | "
        f"{ratios} | {summary['ingest_peak_rss_mib']} | {summary['actor_query_median_s']} / "
        f"{summary['actor_query_max_s']} | {summary['timeline_db_mib']} |"
    )


PARTS: dict[str, Any] = {"chunk": 100_000, "actors": 2_000, "shape": "jsonl", "gzip": False}


def write_document(target: Path, parts: list[Path]) -> None:
    """Join JSON Lines files into one ``{"Records": [...]}`` document, a line at a time (memory stays small)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        out.write(b'{"Records":[')
        separator = b""
        for part in parts:
            with part.open("rb") as lines:
                for line in lines:
                    out.write(separator + line.rstrip(b"\n"))
                    separator = b","
        out.write(b"]}")


def big_document(scratch: Path, work: Path, mib: int) -> None:
    """Generate one CloudTrail document of about ``mib`` MiB (if missing) and ingest it with the defaults."""
    from generate_events import generate

    events = mib * 2**20 // 1200  # about 1.2 KB per generated record
    data = scratch / f"document-{mib}mib"
    if not data.is_dir() or not any(data.iterdir()):
        print(f"generating one document of {events} events into {data} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=scratch) as parts:
            write_document(data / "events-00000.json", generate(Path(parts), events, **PARTS))
    files = sorted(str(p) for p in data.iterdir() if p.is_file())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ingest = _run_phase("ingest", str(work / "timeline.duckdb"), *files)
    summary = {
        "document_mib": round(sum(Path(f).stat().st_size for f in files) / 2**20),
        "events": ingest["stats"]["records"],
        "ingested": ingest["stats"]["ingested"],
        "quarantined": ingest["stats"]["quarantined"],
        "ingest_seconds": round(ingest["seconds"], 1),
        "ingest_events_per_s": round(ingest["stats"]["records"] / ingest["seconds"]),
        "ingest_peak_rss_mib": round(ingest["peak_rss_mib"]),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
