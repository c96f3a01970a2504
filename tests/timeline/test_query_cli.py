"""Read-only querying, show, export and the timeline CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.errors import CloudirError
from cloudir.timeline.db import run_query
from cloudir.timeline.ingest import ingest_paths

DATA = Path(__file__).parent / "data"
runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.duckdb"
    ingest_paths(
        path, [DATA / "cloudtrail_records.json.gz", DATA / "gcp_audit.jsonl", DATA / "entra_signin_graph.json"]
    )
    return path


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY events TO '{tmp}/out.csv'", "file system operations are disabled"),
        ("ATTACH '{tmp}/other.duckdb' AS other", "file system operations are disabled"),
        ("INSTALL httpfs", "disabled"),
        ("LOAD httpfs", "disabled"),
        ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
        ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
        ("SET enable_external_access = true", "locked"),
        ("DELETE FROM events", "read-only"),
        ("CREATE TABLE x AS SELECT 1", "read-only"),
    ],
)
def test_query_connection_refuses_writes_files_and_extensions(db: Path, tmp_path: Path, sql: str, message: str) -> None:
    with pytest.raises(CloudirError, match="query refused or failed") as caught:
        run_query(db, sql.format(tmp=tmp_path))
    assert message in str(caught.value)
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()


def test_query_cli_formats(db: Path) -> None:
    sql = "SELECT cloud, count(*) AS n FROM events GROUP BY cloud ORDER BY cloud"
    result = runner.invoke(app, ["timeline", "query", str(db), sql, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"cloud": "aws", "n": 2}, {"cloud": "azure", "n": 2}, {"cloud": "gcp", "n": 2}]
    result = runner.invoke(app, ["timeline", "query", str(db), sql, "--format", "csv"])
    assert result.output == "cloud,n\naws,2\nazure,2\ngcp,2\n"
    result = runner.invoke(app, ["timeline", "query", str(db), sql, "--format", "markdown"])
    assert result.output.splitlines()[:3] == ["| cloud | n |", "|---|---|", "| aws | 2 |"]
    result = runner.invoke(app, ["timeline", "query", str(db), sql])
    assert result.exit_code == 0
    assert "azure" in result.output


def test_query_cli_refusal_is_one_line(db: Path) -> None:
    result = runner.invoke(app, ["timeline", "query", str(db), "SELECT * FROM read_csv('/etc/passwd')"])
    assert result.exit_code == 2
    assert "query refused or failed: Permission Error" in result.output
    assert "Traceback" not in result.output


def test_show_filters(db: Path) -> None:
    result = runner.invoke(
        app,
        ["timeline", "show", str(db), "--actor", "ALICE", "--operation", "get", "--since", "2024-05-01T10:01:30"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "1 events" in result.output
    assert "GetObject" in result.output
    assert "ListBuckets" not in result.output
    result = runner.invoke(app, ["timeline", "show", str(db), "--cloud", "gcp"], env={"COLUMNS": "250"})
    assert "2 events" in result.output
    assert "v1.compute.instances.delete" in result.output
    result = runner.invoke(app, ["timeline", "show", str(db), "--until", "2024-05-01T00:00:00"])
    assert "0 events" in result.output


def test_ingest_cli_prints_counts_and_exit_codes(tmp_path: Path) -> None:
    target = tmp_path / "cli.duckdb"
    result = runner.invoke(app, ["timeline", "ingest", str(DATA / "malformed.jsonl"), "--db", str(target)])
    assert result.exit_code == 0, result.output
    assert "4 records = 1 ingested + 0 duplicate + 3 quarantined" in result.output
    result = runner.invoke(app, ["timeline", "ingest", str(DATA / "notes.txt"), "--db", str(tmp_path / "n.duckdb")])
    assert result.exit_code == 2
    assert "nothing readable was ingested" in result.output


def test_export_parquet_is_partitioned_by_cloud_and_date(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "parquet"
    result = runner.invoke(app, ["timeline", "export", str(db), "--parquet", str(out)])
    assert result.exit_code == 0, result.output
    partitions = sorted(p.relative_to(out).parent.as_posix() for p in out.rglob("*.parquet"))
    assert partitions == ["cloud=aws/date=2024-05-01", "cloud=azure/date=2024-05-04", "cloud=gcp/date=2024-05-02"]
    import duckdb

    with duckdb.connect() as con:
        count = con.execute(
            f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet', hive_partitioning=true)"
        ).fetchone()
    assert count == (6,)


def test_build_cli(tmp_path: Path) -> None:
    from cloudir.case import Case

    case = Case.create(tmp_path / "case")
    with case.action("logs.pull"):
        case.write_bytes("logs/aws/page.json", (DATA / "cloudtrail_array.json").read_bytes())
    result = runner.invoke(app, ["timeline", "build", str(case.root)])
    assert result.exit_code == 0, result.output
    assert "2 records = 2 ingested + 0 duplicate + 0 quarantined" in result.output
    assert runner.invoke(app, ["verify", str(case.root)]).exit_code == 0
