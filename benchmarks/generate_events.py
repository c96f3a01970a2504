"""Make N CloudTrail events for benchmarks by time-shifting and re-identifying the real shared-dataset events.

Each output record is a real record from ``../shared/datasets`` (flaws2, Stratus Red Team, OTRF, Panther AWS)
with a new eventID / requestID, a time spread over 90 days, and one of ``--actors`` synthetic principals in
one of 20 accounts. All in DuckDB SQL; files are JSON Lines (default) or CloudTrail ``{"Records": [...]}``
documents, written in chunks, optionally gzipped.

    uv run python benchmarks/generate_events.py --events 1000000 --out benchmarks/.data/events-1M
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from cloudir.timeline.ingest import ingest_paths

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SEED_FILES = (
    "flaws2-cloudtrail/logs",
    "stratus-red-team-detonations-aws/logs",
    "otrf-aws-cloud-breach-s3/ec2_proxy_s3_exfiltration_2020-09-14011940.jsonl",
    "panther-rule-tests/aws_cloudtrail.jsonl",
)

_RECORD_SQL = """
SELECT json_merge_patch(s.raw, json_object(
    'eventID', uid[1:8] || '-' || uid[9:12] || '-4' || uid[14:16] || '-8' || uid[18:20] || '-' || uid[21:32],
    'eventTime', strftime(TIMESTAMP '2026-01-01' + to_microseconds((i::HUGEINT * $span // $events)::BIGINT),
                          '%Y-%m-%dT%H:%M:%SZ'),
    '@timestamp', NULL,
    'requestID', upper(uid[1:16]),
    'recipientAccountId', account,
    'sourceIPAddress', '10.' || (h % 200) || '.' || (h // 200 % 250) || '.' || (h // 50000 % 250),
    'userIdentity', CASE WHEN s.has_arn THEN json_object(
        'arn', 'arn:aws:iam::' || account || ':user/user-' || actor,
        'type', 'IAMUser', 'accountId', account, 'userName', 'user-' || actor,
        'principalId', 'AIDA' || upper(md5('p' || actor)[1:16]),
        'accessKeyId', 'AKIA' || upper(md5('k' || actor)[1:16])) ELSE json_object() END
))::VARCHAR AS line
FROM (
    SELECT i, md5('cloudir-bench-' || i) AS uid, hash(i) AS h,
           (hash(i * 7 + 1) % $actors) AS actor,
           lpad(((hash(i * 7 + 1) % $actors) % 20 + 100000000000)::VARCHAR, 12, '0') AS account
    FROM range($lo, $hi) r(i)
) g JOIN seed s ON s.idx = g.i % $seeds
"""


def build_seed(con: duckdb.DuckDBPyConnection) -> int:
    """Load the real CloudTrail records (through the timeline normalizer) as the seed table."""
    with tempfile.TemporaryDirectory() as tmp:
        seed_db = Path(tmp) / "seed.duckdb"
        ingest_paths(seed_db, [DATASETS / name for name in SEED_FILES])
        con.execute(f"ATTACH '{seed_db}' AS seed_db (READ_ONLY)")
        con.execute(
            "CREATE TABLE seed AS SELECT row_number() OVER (ORDER BY event_uid) - 1 AS idx, raw::VARCHAR AS raw, "
            "json_exists(raw, '$.userIdentity.arn') AS has_arn FROM seed_db.events WHERE source_format = 'cloudtrail'"
        )
        con.execute("DETACH seed_db")
    row = con.execute("SELECT count(*) FROM seed").fetchone()
    return int(row[0]) if row else 0


def generate(out: Path, events: int, *, chunk: int, actors: int, shape: str, gzip: bool) -> list[Path]:
    """Write ``events`` records under ``out`` in files of ``chunk`` records; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    seeds = build_seed(con)
    files = []
    suffix = (".jsonl" if shape == "jsonl" else ".json") + (".gz" if gzip else "")
    for number, lo in enumerate(range(0, events, chunk)):
        path = out / f"events-{number:05d}{suffix}"
        params = {
            "lo": lo,
            "hi": min(lo + chunk, events),
            "events": events,
            "span": 90 * 86400 * 1_000_000,
            "actors": actors,
            "seeds": seeds,
        }
        select = _RECORD_SQL
        if shape == "records":
            select = f"SELECT '{{\"Records\":[' || string_agg(line, ',') || ']}}' AS line FROM ({_RECORD_SQL})"
        options = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x1f'"
        if gzip:
            options += ", COMPRESSION gzip"
        con.execute(f"COPY ({select}) TO '{path}' ({options})", params)
        files.append(path)
    con.close()
    return files


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chunk", type=int, default=100_000, help="records per file")
    parser.add_argument("--actors", type=int, default=2_000, help="distinct synthetic principals")
    parser.add_argument("--shape", choices=("jsonl", "records"), default="jsonl")
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    files = generate(args.out, args.events, chunk=args.chunk, actors=args.actors, shape=args.shape, gzip=args.gzip)
    size = sum(path.stat().st_size for path in files)
    print(
        f"wrote {args.events} events in {len(files)} files ({size / 2**20:.0f} MiB) to {args.out} "
        f"in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()
