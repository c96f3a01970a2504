"""Normalizer: every supported shape, quarantine, de-duplication, responder tagging, case build."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from cloudir.case import Case
from cloudir.custody import ApiCall, read_records, verify_case
from cloudir.errors import CloudirError
from cloudir.timeline.ingest import build_case_timeline, ingest_paths
from cloudir.timeline.schema import EVENTS_COLUMNS

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fixture file ingested once."""
    path = tmp_path_factory.mktemp("timeline") / "t.duckdb"
    stats = ingest_paths(path, [DATA])
    assert (stats.duplicates, stats.quarantined) == (0, 4)
    return path


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def one_event(db: Path, event_id: str) -> dict[str, object]:
    with duckdb.connect(str(db), read_only=True) as con:
        cursor = con.execute("SELECT * FROM events WHERE event_id = ?", [event_id])
        row = cursor.fetchone()
        assert row is not None, f"event {event_id} missing"
        return dict(zip([d[0] for d in cursor.description], row, strict=True))


@pytest.mark.parametrize(
    ("fixture", "source_format", "count"),
    [
        ("cloudtrail_records.json.gz", "cloudtrail", 2),
        ("cloudtrail_array.json", "cloudtrail", 2),
        ("cloudtrail_logstash.jsonl", "cloudtrail", 2),
        ("lookup_events_page.json", "cloudtrail", 2),
        ("cloudtrail_export.csv", "cloudtrail_csv", 2),
        ("gcp_entries_page.json", "gcp_audit", 2),
        ("gcp_audit.jsonl", "gcp_audit", 2),
        ("azure_activity_page.json", "azure_activity", 2),
        ("azure_diagnostic_records.json", "azure_activity", 1),
        ("azure_activity_sdk.jsonl", "azure_activity", 2),
        ("entra_signin_graph.json", "entra_signin", 2),
        ("entra_audit_graph.json", "entra_audit", 1),
        ("eks_audit_cloudwatch.json", "k8s_audit", 2),
        ("aks_kube_audit.json", "aks_kube_audit", 2),
        ("gke_audit.jsonl", "gcp_audit", 2),
        ("cloudwatch_export_trail", "cloudtrail", 2),
        ("cloudtrail_lake_results.json", "cloudtrail", 2),
        ("la_audit_logs.jsonl", "la_audit_logs", 2),
        ("la_audit_logs.csv", "la_audit_logs", 2),
        ("la_signin_logs.jsonl", "la_signin_logs", 2),
        ("la_signin_logs.csv", "la_signin_logs", 2),
        ("la_azure_activity.jsonl", "la_azure_activity", 2),
        ("la_azure_activity.csv", "la_azure_activity", 2),
        ("office_activity.jsonl", "office_activity", 2),
        ("la_office_activity.jsonl", "la_office_activity", 2),
    ],
)
def test_each_shape_is_detected_and_ingested(db: Path, fixture: str, source_format: str, count: int) -> None:
    found = rows(
        db,
        "SELECT source_format, count(*), min(source_position), max(source_position) FROM events "
        f"WHERE source_file = '{DATA / fixture}' GROUP BY 1",
    )
    assert found == [(source_format, count, 0, count - 1)]
    assert rows(db, "SELECT count(*) FROM events WHERE time IS NULL OR operation IS NULL OR raw IS NULL") == [(0,)]


def test_a_single_file_reports_its_format(tmp_path: Path) -> None:
    stats = ingest_paths(tmp_path / "t.duckdb", [DATA / "cloudtrail_records.json.gz"])
    assert (stats.files, stats.ingested, stats.duplicates, stats.quarantined) == (1, 2, 0, 0)
    assert stats.per_format == {"cloudtrail": 2}


def test_cloudtrail_fields(db: Path) -> None:
    failed = one_event(db, "00000000-0000-4000-8000-000000000002")
    assert failed["time"] == datetime(2024, 5, 1, 10, 2)
    assert failed["cloud"] == "aws"
    assert failed["account"] == "111122223333"
    assert failed["region"] == "eu-west-1"
    assert failed["service"] == "s3"
    assert failed["operation"] == "GetObject"
    assert failed["actor"] == "arn:aws:sts::111122223333:assumed-role/Admin/alice"
    assert failed["actor_type"] == "AssumedRole"
    assert failed["session"] == "ASIAEXAMPLE0001"
    assert failed["source_ip"] == "203.0.113.7"
    assert failed["resources"] == ["arn:aws:s3:::evidence-bucket"]
    assert (failed["status"], failed["error_code"]) == ("failure", "AccessDenied")
    assert failed["request_id"] == "REQ0002"
    assert failed["event_uid"] == "aws:00000000-0000-4000-8000-000000000002"
    assert failed["read_only"] is True
    assert failed["source_position"] == 1
    assert json.loads(str(failed["raw"]))["eventName"] == "GetObject"
    logstash = one_event(db, "00000000-0000-4000-8000-000000000006")
    assert logstash["time"] == datetime(2024, 5, 1, 10, 6)
    assert str(logstash["source_file"]).endswith("cloudtrail_logstash.jsonl")


def test_lookup_events_unwraps_the_cloudtrail_event_string(db: Path) -> None:
    event = one_event(db, "00000000-0000-4000-8000-000000000008")
    assert event["service"] == "sts"
    assert event["operation"] == "GetCallerIdentity"
    assert json.loads(str(event["raw"]))["eventSource"] == "sts.amazonaws.com"


def test_csv_export_with_python_repr_fields(db: Path) -> None:
    event = one_event(db, "csv-event-2")
    assert event["operation"] == "GetObject"
    assert event["actor_type"] == "AWSAccount"
    assert event["actor"] == "ANONYMOUS_PRINCIPAL"
    assert event["resources"] == ["honey-bucket"]
    assert event["source_ip"] == "198.51.100.10"
    assert event["time"] == datetime(2022, 2, 18, 14, 54, 56)
    assert event["source_position"] == 1


def test_gcp_fields(db: Path) -> None:
    denied = one_event(db, "gcp-insert-2")
    assert denied["cloud"] == "gcp"
    assert denied["account"] == "demo-proj"
    assert denied["region"] == "europe-west1-b"
    assert denied["service"] == "compute.googleapis.com"
    assert denied["operation"] == "v1.compute.instances.get"
    assert denied["actor"] == "ci@demo-proj.iam.gserviceaccount.com"
    assert denied["actor_type"] == "ServiceAccount"
    assert str(denied["session"]).endswith("/keys/abc")
    assert (denied["status"], denied["error_code"]) == ("failure", "7")
    assert denied["read_only"] is True
    assert denied["time"] == datetime(2024, 5, 2, 8, 0, 2, 123456)


def test_a_gcp_call_whose_every_authorization_was_refused_failed(tmp_path: Path) -> None:
    def entry(name: str, grants: list[object] | None) -> dict[str, object]:
        payload: dict[str, object] = {"serviceName": "iam.googleapis.com", "methodName": "SetIamPolicy"}
        if grants is not None:
            payload["authorizationInfo"] = [{"permission": f"p{i}", **({} if g is None else {"granted": g})}
                                            for i, g in enumerate(grants)]  # fmt: skip
        return {"insertId": name, "timestamp": "2024-05-02T08:00:00Z", "protoPayload": payload}

    cases = {"all-refused": [False, False], "one-granted": [False, True], "granted": [True], "none": None,
             "unsaid": [None], "not-a-grant": ["tru", None]}  # fmt: skip
    logs = tmp_path / "gcp.jsonl"
    logs.write_text("".join(json.dumps(entry(name, grants)) + "\n" for name, grants in cases.items()))
    ingest_paths(tmp_path / "t.duckdb", [logs])
    outcome = {
        name: (status, code)
        for name, status, code in rows(tmp_path / "t.duckdb", "SELECT event_id, status, error_code FROM events")
    }
    assert outcome == {
        "all-refused": ("failure", "7"),  # PERMISSION_DENIED, though the record carries no status
        "one-granted": ("success", None),
        "granted": ("success", None),
        "none": ("success", None),
        "unsaid": ("success", None),
        "not-a-grant": ("failure", "7"),  # only true grants
    }


def test_azure_activity_rest_and_diagnostic_fields(db: Path) -> None:
    deleted = one_event(db, "az-event-1")
    # one case for Azure resource-provider operations, the original kept
    assert deleted["operation"] == "microsoft.compute/virtualmachines/delete"
    assert deleted["operation_original"] == "Microsoft.Compute/virtualMachines/delete"
    assert deleted["service"] == "Microsoft.Compute"
    assert deleted["account"] == "11111111-2222-3333-4444-555555555555"
    assert (deleted["actor"], deleted["actor_type"]) == ("mallory@contoso.com", "User")
    assert deleted["source_ip"] == "203.0.113.99"
    assert deleted["session"] == "token-1"
    assert deleted["request_id"] == "client-req-1"
    assert deleted["status"] == "success"
    failed = one_event(db, "az-event-2")
    assert (failed["status"], failed["error_code"], failed["read_only"]) == ("failure", "Forbidden", True)
    (diag,) = rows(db, "SELECT operation, account, actor, region, status FROM events WHERE request_id = 'diag-corr-1'")
    assert diag == (
        "microsoft.keyvault/vaults/write",
        "11111111-2222-3333-4444-555555555555",
        "mallory@contoso.com",
        "westeurope",
        "success",
    )


def test_entra_fields(db: Path) -> None:
    failed = one_event(db, "signin-2")
    assert (failed["cloud"], failed["source_format"]) == ("azure", "entra_signin")
    assert (failed["actor"], failed["status"], failed["error_code"]) == ("mallory@contoso.com", "failure", "50126")
    assert one_event(db, "signin-1")["status"] == "success"
    audit = one_event(db, "audit-1")
    assert audit["operation"] == "Add member to role"
    assert audit["actor"] == "mallory@contoso.com"
    assert audit["resources"] == ["eve@contoso.com"]
    assert audit["time"] == datetime(2024, 5, 4, 7, 5, 0, 123456)


def test_panther_wrapper_holds_mixed_clouds(db: Path) -> None:
    found = rows(
        db,
        "SELECT cloud, source_format, source_position FROM events "
        f"WHERE source_file = '{DATA / 'panther_cases.jsonl'}' ORDER BY 3",
    )
    assert found == [("aws", "cloudtrail", 0), ("gcp", "gcp_audit", 1)]


def test_malformed_input_is_quarantined_with_position_and_reason(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, [DATA / "malformed.jsonl", DATA / "notes.txt"])
    assert (stats.ingested, stats.duplicates, stats.quarantined) == (1, 0, 4)
    quarantined = rows(db, "SELECT source_file, source_position, reason FROM quarantine ORDER BY 1, 2")
    malformed, notes = str(DATA / "malformed.jsonl"), str(DATA / "notes.txt")
    assert [(f, p) for f, p, _ in quarantined] == [(malformed, 1), (malformed, 2), (malformed, 3), (notes, None)]
    reasons = [reason for _, _, reason in quarantined]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "no parsable event time (cloudtrail)"
    assert reasons[2].startswith("unrecognized record (keys: hello")
    assert reasons[3].startswith("unrecognized file format")


def test_positions_count_records_not_blank_lines(tmp_path: Path) -> None:
    lines = (DATA / "gcp_audit.jsonl").read_text().splitlines()
    path = tmp_path / "gaps.jsonl"
    path.write_text(f"\n{lines[0]}\n\n{lines[1]}\n")
    ingest_paths(tmp_path / "t.duckdb", [path])
    assert rows(tmp_path / "t.duckdb", "SELECT event_id, source_position FROM events ORDER BY 2") == [
        ("gcp-insert-3", 0),
        ("gcp-insert-4", 1),
    ]


def test_reingest_changes_nothing_and_duplicates_are_dropped_once(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    first = ingest_paths(db, [DATA])
    assert first.quarantined == 4
    before = rows(db, "SELECT * FROM events ORDER BY event_uid")
    quarantine_before = rows(db, "SELECT * FROM quarantine ORDER BY ALL")
    files_before = rows(db, "SELECT * FROM ingest_files ORDER BY ALL")
    again = ingest_paths(db, [DATA])
    assert (again.ingested, again.duplicates, again.quarantined, again.unchanged) == (0, 0, 0, first.files)
    assert rows(db, "SELECT * FROM events ORDER BY event_uid") == before
    assert rows(db, "SELECT * FROM quarantine ORDER BY ALL") == quarantine_before
    assert rows(db, "SELECT * FROM ingest_files ORDER BY ALL") == files_before
    copy = tmp_path / "copy.json.gz"
    shutil.copy(DATA / "cloudtrail_records.json.gz", copy)
    stats = ingest_paths(tmp_path / "two.duckdb", [DATA / "cloudtrail_records.json.gz", copy])
    assert (stats.ingested, stats.duplicates) == (2, 2)
    kept = rows(tmp_path / "two.duckdb", "SELECT DISTINCT source_file FROM events")
    assert kept == [(str(DATA / "cloudtrail_records.json.gz"),)]


def test_a_timeline_inside_the_folder_it_reads_is_not_read_as_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(DATA, logs)
    db = logs / "t.duckdb"
    first = ingest_paths(db, [logs])
    (logs / "t.duckdb.wal").write_bytes(b"a write-ahead log left by a crash")
    (logs / "t.duckdb.tmp").mkdir()
    (logs / "t.duckdb.tmp" / "spill-0.block").write_bytes(b"spilled rows")
    again = ingest_paths(db, [logs])
    assert (first.files, first.quarantined) == (ingest_paths(tmp_path / "apart.duckdb", [DATA]).files, 4)
    assert (again.files, again.ingested, again.quarantined, again.unchanged) == (first.files, 0, 0, first.files)
    assert rows(db, "SELECT count(*) FROM ingest_files WHERE file LIKE '%t.duckdb%'") == [(0,)]


def test_every_column_is_filled_in_order(db: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as con:
        columns = [d[0] for d in con.execute("SELECT * FROM events").description]
    assert tuple(columns) == EVENTS_COLUMNS


def test_responder_calls_are_tagged_by_request_id_only(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [DATA / "lookup_events_page.json", DATA / "cloudtrail_array.json"])
    assert rows(db, "SELECT event_id FROM events WHERE is_responder") == []  # a cloudir user agent proves nothing
    ingest_paths(db, [DATA / "cloudtrail_array.json"], responder_request_ids=["REQ0004", "REQ0007"])
    assert rows(db, "SELECT request_id FROM events WHERE is_responder ORDER BY 1") == [("REQ0004",), ("REQ0007",)]


def test_nothing_but_unknown_files_gives_zero_events(tmp_path: Path) -> None:
    stats = ingest_paths(tmp_path / "t.duckdb", [DATA / "notes.txt"])
    assert (stats.ingested, stats.quarantined) == (0, 1)
    with pytest.raises(CloudirError, match="no such file"):
        ingest_paths(tmp_path / "t.duckdb", [tmp_path / "missing.json"])


def test_ocsf_view(db: Path) -> None:
    found = rows(
        db,
        "SELECT class_uid, activity_name, type_uid, api.operation, actor.user.uid, src_endpoint.ip, cloud.provider, "
        "status, status_code, metadata.original_uid FROM events_ocsf WHERE metadata.original_uid IN "
        "('00000000-0000-4000-8000-000000000002', 'gcp-insert-3') ORDER BY time",
    )
    assert found == [
        (
            6003,
            "Read",
            600302,
            "GetObject",
            "arn:aws:sts::111122223333:assumed-role/Admin/alice",
            "203.0.113.7",
            "AWS",
            "Failure",
            "AccessDenied",
            "00000000-0000-4000-8000-000000000002",
        ),
        (
            6003,
            "Delete",
            600304,
            "v1.compute.instances.delete",
            "ci@demo-proj.iam.gserviceaccount.com",
            "198.51.100.20",
            "GCP",
            "Success",
            None,
            "gcp-insert-3",
        ),
    ]


def test_build_case_timeline_records_custody_and_tags_own_calls(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case", case_id="cir-timeline")
    with case.action("logs.pull", target="aws"):
        case.write_bytes("logs/aws/cloudtrail/page-0001.json", (DATA / "cloudtrail_array.json").read_bytes())
        case.write_bytes("logs/gcp/entries-0001.json", (DATA / "gcp_entries_page.json").read_bytes())
        case.write_json("logs/gcp/coverage.json", {"complete": True})
        case.write_json("logs/aws/lookup-events/us-east-1/all/request.json", {"StartTime": "x"})
        case.write_json("logs/aws/public-keys/us-east-1/page-00001.json", {"PublicKeyList": []})
        case.write_bytes("logs/azure/activity/page-00001.json", b"")
        case.write_json("logs/aws/s3/AWSLogs/1/CloudTrail-Digest/eu-west-1/d.json", {"digestStartTime": "x"})
        case.record_api_call(ApiCall("cloudtrail", "LookupEvents", "eu-west-1", "REQ0003", "ok"))
    stats = build_case_timeline(case)
    assert (stats.ingested, stats.duplicates, stats.quarantined, stats.skipped) == (4, 0, 0, 5)
    db = case.root / "timeline.duckdb"
    assert rows(db, "SELECT source_file, request_id FROM events WHERE is_responder") == [
        ("logs/aws/cloudtrail/page-0001.json", "REQ0003")
    ]
    record = read_records(case.root / "custody.jsonl")[-1]
    assert record["action"] == "timeline.build"
    assert record["details"]["ingested"] == 4
    assert [artifact["path"] for artifact in record["artifacts"]] == ["timeline.duckdb"]
    result = verify_case(case.root)
    assert result.ok, result.problems
    assert not [w for w in result.warnings if "timeline" in w]


def test_build_case_timeline_with_no_events_registers_the_database_and_fails(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    with case.action("logs.pull"):
        case.write_json("logs/aws/trails.json", {"trails": []})
        case.write_json("logs/aws/notes.json", {"hello": "world"})
    with pytest.raises(CloudirError, match="held a readable event"):
        build_case_timeline(case)
    record = read_records(case.root / "custody.jsonl")[-1]
    assert (record["outcome"], record["details"]["quarantined"], record["details"]["skipped_files"]) == ("failed", 1, 1)
    assert [artifact["path"] for artifact in record["artifacts"]] == ["timeline.duckdb"]
    result = verify_case(case.root)
    assert result.ok, result.problems
    assert result.warnings == []


def test_build_case_timeline_without_logs_fails_and_is_recorded(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    with pytest.raises(CloudirError, match="no logs"):
        build_case_timeline(case)
    assert read_records(case.root / "custody.jsonl")[-1]["outcome"] == "failed"


def test_many_small_files_in_one_call_under_a_small_memory_limit(tmp_path: Path) -> None:
    template = json.loads((DATA / "cloudtrail_array.json").read_text())[0]

    def records(first: int, count: int) -> list[dict[str, object]]:
        return [{**template, "eventID": f"many-{number}"} for number in range(first, first + count)]

    logs = tmp_path / "logs"
    logs.mkdir()
    for hour in range(300):  # hourly CloudTrail delivery files
        with gzip.open(logs / f"hour-{hour:03d}.json.gz", "wt") as handle:
            json.dump({"Records": records(hour * 20, 20)}, handle)
    pages = "\n".join(json.dumps({"Records": records(10_000 + page * 3, 3)}) for page in range(2))
    (logs / "pages.jsonl").write_text(pages + "\n")  # several containers in one file: positions run on
    stats = ingest_paths(tmp_path / "t.duckdb", [logs], memory_limit="192MB")
    assert (stats.files, stats.ingested, stats.duplicates, stats.quarantined) == (301, 6006, 0, 0)
    assert rows(
        tmp_path / "t.duckdb",
        "SELECT count(*), count(DISTINCT source_file), max(source_position) FROM events WHERE source_file LIKE '%.gz'",
    ) == [(6000, 300, 19)]
    assert rows(
        tmp_path / "t.duckdb",
        "SELECT list(source_position ORDER BY event_id) FROM events WHERE source_file LIKE '%pages.jsonl'",
    ) == [([0, 1, 2, 3, 4, 5],)]
    position = rows(tmp_path / "t.duckdb", "SELECT source_position FROM events WHERE event_id = 'many-4321'")
    assert position == [(4321 % 20,)]
    # every position exact, though up to 128 files are read by one parallel read_json_objects
    exact = "source_position = split_part(event_id, '-', 2)::INTEGER % 20"
    assert rows(tmp_path / "t.duckdb", f"SELECT count(*) FROM events WHERE source_file LIKE '%.gz' AND {exact}") == [
        (6000,)
    ]
