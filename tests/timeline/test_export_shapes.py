"""Records exported through a SIEM or a forwarder (Splunk, Elastic, Pub/Sub) read as the same record natively."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.timeline import ingest as timeline_ingest
from cloudir.timeline import reader

DATA = Path(__file__).parent / "data"
EXPORTS = Path(__file__).parent / "export_data"  # the records of NATIVE, wrapped (kept apart: exact duplicates)
NATIVE = ["cloudtrail_array.json", "entra_signin_graph.json", "azure_activity_page.json", "gcp_audit.jsonl"]
WRAPPED = [
    "splunk_export.jsonl",
    "splunk_results_page.json",
    "elastic_ecs.jsonl",
    "elastic_search.json",
    "pubsub_push.jsonl",
    "splunk_export.csv",
]
COLUMNS = (
    "cloud, time, actor, actor_type, operation, service, source_ip, user_agent, status, error_code, account, "
    "region, resources, session, request_id, read_only, raw"
)


def ingest(paths: list[Path], db: Path) -> str:
    result = CliRunner().invoke(app, ["timeline", "ingest", *(str(path) for path in paths), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return result.output


def events(db: Path) -> dict[tuple[str, str], tuple[object, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(f"SELECT cloud, event_id, {COLUMNS} FROM events").fetchall()
    return {(cloud, event_id): tuple(rest) for cloud, event_id, *rest in rows}


@pytest.mark.parametrize("name", WRAPPED)
def test_a_wrapped_record_maps_as_its_native_shape(tmp_path: Path, name: str) -> None:
    ingest([*(DATA / native for native in NATIVE), EXPORTS / "gcp_native.jsonl"], tmp_path / "native.duckdb")
    output = ingest([EXPORTS / name], tmp_path / "wrapped.duckdb")
    assert "0 quarantined" in output
    native, wrapped = events(tmp_path / "native.duckdb"), events(tmp_path / "wrapped.duckdb")
    assert len(wrapped) >= 2
    assert {key: native.get(key) for key in wrapped} == wrapped


def test_every_shape_together_dedupes_to_the_native_records(tmp_path: Path) -> None:
    """The record parsed from its wrapper is canonical JSON: the same content hash, an exact duplicate."""
    natives = [*(DATA / name for name in NATIVE), EXPORTS / "gcp_native.jsonl"]
    output = ingest([*natives, *(EXPORTS / name for name in WRAPPED)], tmp_path / "t.duckdb")
    assert "25 records = 10 ingested + 15 duplicate + 0 quarantined" in output, output


def test_an_attacker_chosen_value_cannot_choose_the_shape(tmp_path: Path) -> None:
    """Text that is not a JSON object stays the wrapper (quarantined, counted); values never pick a container."""
    decoy = {"eventVersion": "1.08", "eventName": "DeleteTrail", "eventSource": "cloudtrail.amazonaws.com"}
    record = {
        "eventVersion": "1.08",
        "eventTime": "2024-05-01T10:00:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "eventID": "hostile-1",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/mallory"},
        "userAgent": json.dumps({"result": {"_raw": json.dumps(decoy)}}),
        "sourceIPAddress": "203.0.113.9",
        "requestParameters": {"_raw": json.dumps(decoy), "event": {"original": json.dumps(decoy)}},
    }
    ecs = {"@timestamp": "2024-05-01T10:00:00Z", "event": {"original": json.dumps(record)}, "message": decoy}
    lines = [
        record,  # native, its values shaped like wrappers
        ecs,  # the record, not its message
        {"preview": False, "result": {"_raw": "<script>alert(1)</script>', 'x'); DROP TABLE events; --"}},
        {"preview": False, "result": {"_raw": json.dumps([decoy])}},
        {"message": {"data": "!!not base64!!"}, "subscription": "projects/p/subscriptions/s"},
        {"message": {"data": base64.b64encode(b"\xff\xfe not utf-8").decode()}, "subscription": "s"},
    ]
    log = tmp_path / "hostile.jsonl"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = ingest([log], tmp_path / "t.duckdb")
    assert "6 records = 1 ingested + 1 duplicate + 4 quarantined" in output, output
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        assert con.execute("SELECT event_id, operation, user_agent FROM events").fetchall() == [
            ("hostile-1", "GetObject", record["userAgent"])
        ]
        reasons = con.execute("SELECT reason FROM quarantine ORDER BY source_position").fetchall()
    assert [reason for (reason,) in reasons] == [
        "unrecognized record (keys: _raw)",
        "unrecognized record (keys: _raw)",
        "unrecognized record (keys: message, subscription)",
        "unrecognized record (keys: message, subscription)",
    ]


@pytest.mark.parametrize(
    ("name", "source_format"),
    [
        ("security_lake_ocsf_1_1.jsonl", "ocsf_api_activity"),
        ("security_lake_ocsf_1_0.jsonl", "ocsf_api_activity"),
        ("security_lake_ocsf.parquet", "ocsf_api_activity"),
        ("sentinel_aws_cloudtrail.json", "la_aws_cloudtrail"),
        ("sentinel_aws_cloudtrail.csv", "la_aws_cloudtrail"),
    ],
)
def test_a_normalized_trail_maps_as_the_trail_record(tmp_path: Path, name: str, source_format: str) -> None:
    """Security Lake's OCSF (1.1, 1.0.0-rc.2; JSON Lines, Parquet) and Sentinel's ``AWSCloudTrail`` rows (the
    query CLI's JSON, the portal's CSV) give the trail's columns."""
    ingest([EXPORTS / "cloudtrail_native.json"], tmp_path / "native.duckdb")
    assert "3 records = 3 ingested + 0 duplicate + 0 quarantined" in ingest([EXPORTS / name], tmp_path / "o.duckdb")
    columns = COLUMNS.removesuffix(", raw")
    with duckdb.connect(str(tmp_path / "native.duckdb"), read_only=True) as con:
        native = con.execute(f"SELECT event_id, {columns} FROM events ORDER BY event_id").fetchall()
    with duckdb.connect(str(tmp_path / "o.duckdb"), read_only=True) as con:
        ocsf = con.execute(f"SELECT event_id, {columns} FROM events ORDER BY event_id").fetchall()
        assert con.execute("SELECT DISTINCT source_format FROM events").fetchall() == [(source_format,)]
    assert ocsf == native
    assert [row[9] for row in ocsf] == ["success", "failure", "success"]


def test_an_ocsf_value_cannot_choose_the_format_or_the_cloud(tmp_path: Path) -> None:
    """The class is the record's own ``class_uid``; a value naming another class or format is data."""
    line = json.loads((EXPORTS / "security_lake_ocsf_1_1.jsonl").read_text().splitlines()[0])
    spoofed = {
        **line,
        "api": {**line["api"], "operation": "eventName', 'x'); DROP TABLE events; --"},
        "http_request": {"user_agent": json.dumps({"class_uid": 6003, "eventName": "StopLogging"})},
        "unmapped": {"class_uid": "6003", "eventSource": "iam.amazonaws.com", "readOnly": "yes-please"},
    }
    other_class = {**line, "class_uid": 4001, "metadata": {**line["metadata"], "uid": "network-activity"}}
    nested = {"eventVersion": "1.09", "eventTime": "2024-05-01T10:00:00Z", "eventName": "GetObject",
              "eventSource": "s3.amazonaws.com", "eventID": "nested", "requestParameters": line}  # fmt: skip
    log = tmp_path / "ocsf.jsonl"
    log.write_text("".join(json.dumps(item) + "\n" for item in (spoofed, other_class, nested)))
    assert "3 records = 2 ingested + 0 duplicate + 1 quarantined" in ingest([log], tmp_path / "t.duckdb")
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT source_format, cloud, operation, read_only FROM events ORDER BY 1").fetchall()
    assert rows == [
        ("cloudtrail", "aws", "GetObject", True),
        ("ocsf_api_activity", "aws", spoofed["api"]["operation"], False),
    ]


def findings(paths: list[Path], db: Path) -> list[tuple[object, ...]]:
    ingest(paths, db)
    result = CliRunner().invoke(app, ["analyze", str(db), "--min-score", "0"])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT analyzer, rule, score, actor, title, explanation, event_count FROM findings ORDER BY ALL"
        ).fetchall()


@pytest.mark.parametrize(
    ("native", "shape"),
    [
        ([EXPORTS / "cloudtrail_native.json"], [EXPORTS / "security_lake_ocsf.parquet"]),
        ([DATA / "azure_activity_page.json", DATA / "entra_signin_graph.json"], [EXPORTS / "elastic_search.json"]),
        ([DATA / "gcp_audit.jsonl", EXPORTS / "gcp_native.jsonl"], [EXPORTS / "pubsub_push.jsonl"]),
    ],
    ids=["aws-security-lake", "azure-elastic", "gcp-pubsub"],
)
def test_the_same_records_in_another_shape_give_the_same_findings(
    tmp_path: Path, native: list[Path], shape: list[Path]
) -> None:
    expected = findings(native, tmp_path / "native.duckdb")
    assert expected
    assert findings(shape, tmp_path / "shape.duckdb") == expected


def test_a_sentinel_cell_is_data(tmp_path: Path) -> None:
    """Cells shaped like other formats' keys, JSON text or SQL stay values of their column."""
    rows = json.loads((EXPORTS / "sentinel_aws_cloudtrail.json").read_text())
    hostile = {
        **rows[0],
        "UserAgent": json.dumps({"eventName": "DeleteTrail", "class_uid": 6003}),
        "Resources": '[{"ARN": "x\'); DROP TABLE events; --"}, "not an object"',
        "ErrorCode": " ",
        "UserIdentityArn": "",
        "AwsEventId": "sentinel-hostile",
    }
    log = tmp_path / "rows.json"
    log.write_text(json.dumps([hostile]))
    assert "1 records = 1 ingested + 0 duplicate + 0 quarantined" in ingest([log], tmp_path / "t.duckdb")
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        row = con.execute(
            "SELECT source_format, operation, user_agent, resources, status, actor FROM events"
        ).fetchone()
    assert row == (
        "la_aws_cloudtrail",
        "StopLogging",
        hostile["UserAgent"],
        None,
        "success",
        rows[0]["UserIdentityPrincipalid"],
    )


def test_a_large_splunk_results_page_is_split_by_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page larger than the split size is streamed result by result when ``results`` comes first."""
    monkeypatch.setattr(timeline_ingest, "SPLIT_BYTES", 1024)
    monkeypatch.setattr(reader, "MAX_RECORD_BYTES", 4096)  # the page is larger: read whole, it would be refused
    monkeypatch.setattr(reader, "CHUNK_BYTES", 1000)
    page = json.loads((EXPORTS / "splunk_results_page.json").read_text())
    big = tmp_path / "page.json"
    big.write_text(json.dumps({"results": page["results"] * 3, "preview": False}))
    output = ingest([big], tmp_path / "t.duckdb")
    assert "6 records = 2 ingested + 4 duplicate + 0 quarantined" in output, output
