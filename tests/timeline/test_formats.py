"""Kubernetes audit (EKS, AKS, GKE), CloudWatch Logs, CloudTrail Lake and Log Analytics exports: mapped fields."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from azure.mgmt.monitor.models import EventData
from typer.testing import CliRunner

from cloudir.cli import app

DATA = Path(__file__).parent / "data"
NEW_FORMATS = [
    "eks_audit_cloudwatch.json",
    "aks_kube_audit.json",
    "gke_audit.jsonl",
    "cloudwatch_export_trail",
    "cloudtrail_lake_results.json",
    "la_audit_logs.jsonl",
    "la_audit_logs.csv",
    "la_signin_logs.jsonl",
    "la_signin_logs.csv",
    "la_azure_activity.jsonl",
    "la_azure_activity.csv",
]
COLUMNS = "cloud, service, operation, actor, actor_type, session, source_ip, resources, status, error_code, read_only"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("formats") / "t.duckdb"
    result = CliRunner().invoke(
        app, ["timeline", "ingest", *(str(DATA / name) for name in NEW_FORMATS), "--db", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "22 records = 22 ingested + 0 duplicate + 0 quarantined" in result.output
    with duckdb.connect(str(path), read_only=True) as con:
        accounts = con.execute("SELECT file, records, events, duplicates, quarantined FROM ingest_files").fetchall()
    assert {Path(name).name: tuple(counts) for name, *counts in accounts} == dict.fromkeys(NEW_FORMATS, (2, 2, 0, 0))
    return path


def event(db: Path, event_id: str) -> tuple[object, ...]:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(f"SELECT {COLUMNS} FROM events WHERE event_id = ?", [event_id]).fetchone()
    assert row is not None, event_id
    return row


def test_kubernetes_audit_from_eks_aks_and_gke(db: Path) -> None:
    assert event(db, "10000000-aaaa-4bbb-8ccc-000000000000/ResponseComplete") == (
        "aws",
        "kubernetes",
        "create pods/exec",
        "arn:aws:sts::111122223333:assumed-role/eks-admin/mallory",
        "User",
        "ASIAEXAMPLEEKS01",
        "198.51.100.20",
        ["namespaces/default/pods/web-0"],
        "success",
        None,
        False,
    )
    denied = event(db, "20000000-aaaa-4bbb-8ccc-000000000000/ResponseComplete")
    assert denied[2:5] == ("get secrets", "system:serviceaccount:default:web", "ServiceAccount")
    assert denied[8:] == ("failure", "Forbidden", True)
    aks = event(db, "40000000-aaaa-4bbb-8ccc-000000000000/ResponseComplete")
    assert aks[:4] == ("azure", "kubernetes", "delete deployments", "mallory@contoso.com")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute(
            "SELECT account FROM events WHERE source_format = 'aks_kube_audit' GROUP BY ALL"
        ).fetchall() == [("11111111-2222-3333-4444-555555555555",)]
    gke = event(db, "gke-insert-1")
    assert gke[:4] == ("gcp", "kubernetes", "io.k8s.core.v1.pods.exec.create", "mallory@example.com")


def test_trail_through_cloudwatch_logs_export_and_cloudtrail_lake(db: Path) -> None:
    assert event(db, "cwl-event-1")[:4] == (
        "aws",
        "cloudtrail",
        "StopLogging",
        "arn:aws:iam::111122223333:user/mallory",
    )
    assert event(db, "lake-event-2")[:3] == ("aws", "cloudtrail", "DeleteTrail")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT time FROM events WHERE event_id = 'lake-event-1'").fetchone() == (
            datetime(2024, 5, 1, 14, 1),
        )


@pytest.mark.parametrize("suffix", ["", "-csv"], ids=["json", "portal-csv"])
def test_log_analytics_rows_in_both_export_shapes(db: Path, suffix: str) -> None:
    audit = event(db, f"Directory_la-audit{suffix}-1")
    assert audit[:5] == ("azure", "Core Directory", "Add member to role", "mallory@contoso.com", "User")  # trimmed
    assert audit[6:9] == ("203.0.113.99", ["backdoor@contoso.com"], "success")
    app_audit = event(db, f"Directory_la-audit{suffix}-2")
    assert (app_audit[3], app_audit[4], app_audit[8], app_audit[9]) == (
        "automation",
        "ServicePrincipal",
        "failure",
        "Insufficient privileges",
    )
    signin = event(db, f"la-signin-2{suffix}")
    assert signin[2:4] == ("Sign-in activity", "victim@contoso.com")
    assert signin[8:10] == ("failure", "50126")
    activity = event(db, f"la-act-1{suffix}")
    assert activity[2:6] == ("microsoft.authorization/roleassignments/write", "mallory@contoso.com", "User", "la-uti-1")
    assert event(db, f"la-act-2{suffix}")[8:] == ("failure", "Forbidden", True)
    with duckdb.connect(str(db), read_only=True) as con:
        times = con.execute(
            "SELECT list(time ORDER BY time) FROM events WHERE event_id IN (?, ?)",
            [f"Directory_la-audit{suffix}-1", f"la-signin-1{suffix}"],
        ).fetchone()
    assert times is not None
    assert [t.replace(microsecond=t.microsecond // 1000 * 1000) for t in times[0]] == [
        datetime(2024, 5, 1, 15, 1, 0, 123000),
        datetime(2024, 5, 1, 16, 1, 0, 500000),
    ]


def test_refused_sign_in_is_a_failure_without_an_error_code(tmp_path: Path) -> None:
    """AWS sign-in events say a refusal in ``responseElements.<eventName>``, never in ``errorCode``."""

    def record(event_id: str, source: str, name: str, answer: object, **extra: str) -> dict[str, object]:
        who = {"type": "IAMUser", "arn": "arn:aws:iam::111111111111:user/alice"}
        return {
            "eventVersion": "1.08",
            "eventTime": "2026-11-01T10:00:00Z",
            "userIdentity": who,
            "eventID": event_id,
            "eventSource": f"{source}.amazonaws.com",
            "eventName": name,
            "responseElements": answer,
            **extra,
        }

    records = [
        record("refused", "signin", "ConsoleLogin", {"ConsoleLogin": "Failure"}, errorMessage="Failed authentication"),
        record("accepted", "signin", "ConsoleLogin", {"ConsoleLogin": "Success"}),
        record("mfa", "signin", "CheckMfa", {"CheckMfa": "Failure"}),
        record("password", "signin", "PasswordUpdated", {"PasswordUpdated": "Failure"}),
        record("not-signin", "s3", "GetObject", {"ConsoleLogin": "Failure"}),
        record("odd", "ec2", "RunInstances", "Failure"),
    ]
    log = tmp_path / "signin.jsonl"
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    db = tmp_path / "t.duckdb"
    result = CliRunner().invoke(app, ["timeline", "ingest", str(log), "--db", str(db)])
    assert "6 records = 6 ingested + 0 duplicate + 0 quarantined" in result.output, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT event_id, status, error_code FROM events ORDER BY event_id").fetchall()
    assert rows == [
        ("accepted", "success", None),
        ("mfa", "failure", "Failure"),
        ("not-signin", "success", None),
        ("odd", "success", None),
        ("password", "failure", "Failure"),
        ("refused", "failure", "Failed authentication"),
    ]


def test_an_empty_error_code_is_no_error(tmp_path: Path) -> None:
    """CloudTrail writes ``errorCode`` only for a failed request; an export filling every column leaves it empty."""
    who = {"type": "IAMUser", "arn": "arn:aws:iam::111111111111:user/a"}
    base = {"eventVersion": "1.08", "eventTime": "2026-11-01T10:00:00Z", "eventSource": "s3.amazonaws.com",
            "eventName": "DeleteBucket", "userIdentity": who}  # fmt: skip
    records = [
        {**base, "eventID": "empty", "errorCode": ""},
        {**base, "eventID": "blank", "errorCode": " "},
        {**base, "eventID": "refused", "errorCode": "BucketNotEmpty", "errorMessage": "The bucket is not empty"},
    ]
    log = tmp_path / "export.jsonl"
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    db = tmp_path / "t.duckdb"
    result = CliRunner().invoke(app, ["timeline", "ingest", str(log), "--db", str(db)])
    assert "3 records = 3 ingested" in result.output, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT event_id, status, error_code FROM events ORDER BY event_id").fetchall()
    assert rows == [("blank", "success", None), ("empty", "success", None), ("refused", "failure", "BucketNotEmpty")]


def test_workspace_activities_one_a_line_are_read_as_activities(tmp_path: Path) -> None:
    """Admin SDK Reports activities one a line (an activities.list page's items, ``jq -c '.items[]'``): each is a
    Workspace activity, not a CloudWatch Logs page (both carry an ``events`` array); a CloudWatch page still is."""
    activity = {"kind": "admin#reports#activity",
                "id": {"time": "2026-11-02T10:00:00.000Z", "uniqueQualifier": "-4242", "applicationName": "admin",
                       "customerId": "C01"},
                "actor": {"callerType": "USER", "email": "eve@example.com"}, "ipAddress": "203.0.113.9",
                "events": [{"type": "DOMAIN_SETTINGS", "name": "ADD_TRUSTED_DOMAINS",
                            "parameters": [{"name": "DOMAIN_NAME", "value": "partner.example"}]}]}  # fmt: skip
    trail = {"eventVersion": "1.09", "eventID": "cwl-1", "eventTime": "2026-11-02T10:00:00Z",
             "eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging", "awsRegion": "us-east-1",
             "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/eve"}}  # fmt: skip
    page = {"events": [{"timestamp": 1793613600000, "message": json.dumps(trail)}]}
    log = tmp_path / "mixed.jsonl"
    log.write_text(json.dumps(activity) + "\n" + json.dumps(page) + "\n")
    path = tmp_path / "t.duckdb"
    result = CliRunner().invoke(app, ["timeline", "ingest", str(log), "--db", str(path)])
    assert "2 records = 2 ingested + 0 duplicate + 0 quarantined" in result.output, result.output
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT source_format, service, operation FROM events ORDER BY 1").fetchall()
    assert rows == [("cloudtrail", "cloudtrail", "StopLogging"), ("workspace_activity", "workspace:admin",
                                                                  "ADD_TRUSTED_DOMAINS")]  # fmt: skip


_AZURE_COLUMNS = f"time, account, {COLUMNS}, request_id, event_id"


def _events(log: Path, db: Path) -> list[tuple[object, ...]]:
    result = CliRunner().invoke(app, ["timeline", "ingest", str(log), "--db", str(db)])
    assert "0 quarantined" in result.output, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"SELECT source_format, {_AZURE_COLUMNS} FROM events ORDER BY event_id").fetchall()


def test_azure_sdk_as_dict_records_are_the_rest_records_events(tmp_path: Path) -> None:
    """azure-mgmt-monitor's ``EventData.as_dict()`` of the REST page's records (snake-case keys, ``claims`` and
    ``properties`` as received) gives the events the REST page gives, column for column."""
    page = json.loads((DATA / "azure_activity_page.json").read_text())["value"]
    sdk = tmp_path / "sdk.jsonl"
    sdk.write_text("".join(json.dumps(EventData.deserialize(record).as_dict()) + "\n" for record in page))
    assert '"event_data_id"' in sdk.read_text()
    rest = _events(DATA / "azure_activity_page.json", tmp_path / "rest.duckdb")
    assert _events(sdk, tmp_path / "sdk.duckdb") == rest
    assert len(rest) == 2


def test_azure_sdk_as_dict_fields(tmp_path: Path) -> None:
    """A hand-written ``as_dict()`` file (the SDK reads it back as it is): users and apps, ``properties`` keys kept."""
    log = DATA / "azure_activity_sdk.jsonl"
    for line in log.read_text().splitlines():
        assert EventData.from_dict(json.loads(line)).as_dict() == json.loads(line)
    user, app_call = _events(log, tmp_path / "t.duckdb")
    sub = "22222222-3333-4444-5555-666666666666"
    assert user[:8] == ("azure_activity", datetime(2024, 5, 4, 8, 30, 1, 253114), sub, "azure",
                        "Microsoft.Authorization", "microsoft.authorization/roleassignments/write",
                        "eve@fabrikam.example", "User")  # fmt: skip
    assignment = f"/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.Authorization/roleAssignments/"
    assert user[8:] == ("sdk-token-1", "198.51.100.23", [assignment + "9f1c7d2e-0a4b-4c3d-8e5f-112233445566"],
                        "success", None, False, "sdk-client-req-1", "sdk-event-1")  # fmt: skip
    assert app_call[6:10] == ("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "ServicePrincipal", "sdk-token-2",
                              "198.51.100.24")  # fmt: skip
    assert app_call[11:] == ("failure", "Conflict", False, "sdk-corr-2", "sdk-event-2")  # properties.statusCode


def test_gcp_log_entries_that_are_not_audit_logs_are_quarantined_by_kind(tmp_path: Path) -> None:
    """A Cloud Logging export holding audit entries, then (past the head that makes a file a flow log) a VPC flow
    entry and application logs: each of those is quarantined with its logName and payload, not 'unrecognized'."""
    audit = [{"insertId": f"a{i}", "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
              "timestamp": "2026-11-02T10:00:00Z", "protoPayload": {"serviceName": "compute.googleapis.com",
              "methodName": "v1.compute.instances.list", "authenticationInfo": {"principalEmail": "a@p.example"},
              "padding": "x" * 200}} for i in range(300)]  # fmt: skip
    connection = {"src_ip": "10.0.0.2", "dest_ip": "203.0.113.5", "src_port": 40000, "dest_port": 443, "protocol": 6}
    flow = {"insertId": "f1", "logName": "projects/p/logs/compute.googleapis.com%2Fvpc_flows",
            "timestamp": "2026-11-02T10:00:01Z",
            "jsonPayload": {"connection": connection, "reporter": "SRC"}}  # fmt: skip
    app_log = {"insertId": "j1", "logName": "projects/p/logs/app", "timestamp": "2026-11-02T10:00:02Z",
               "jsonPayload": {"@type": "type.googleapis.com/example.AppEvent", "message": "started"}}  # fmt: skip
    text_log = {"insertId": "t1", "logName": "projects/p/logs/syslog", "timestamp": "2026-11-02T10:00:03Z",
                "textPayload": "[ok] started"}  # fmt: skip
    log = tmp_path / "export.jsonl"
    log.write_text("".join(json.dumps(entry) + "\n" for entry in [*audit, flow, app_log, text_log]))
    db = tmp_path / "t.duckdb"
    result = CliRunner().invoke(app, ["timeline", "ingest", str(log), "--db", str(db)])
    assert "303 records = 300 ingested + 0 duplicate + 3 quarantined" in result.output, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        reasons = [row[0] for row in con.execute("SELECT reason FROM quarantine ORDER BY source_position").fetchall()]
    only_audit = "cloudir reads Cloud Audit Logs entries (protoPayload) only"
    not_audit = "GCP log entry that is not an audit log (logName projects/p/logs"
    assert reasons == [
        (
            "GCP VPC flow log entry (logName projects/p/logs/compute.googleapis.com%2Fvpc_flows) among other records: "
            "cloudir reads VPC flow logs into flows from files of flow entries"
        ),
        f"{not_audit}/app, jsonPayload @type type.googleapis.com/example.AppEvent): {only_audit}",
        f"{not_audit}/syslog, textPayload): {only_audit}",
    ]


def test_microsoft_365_unified_audit_log_records(tmp_path: Path) -> None:
    """The Management Activity API's common schema and Sentinel's ``OfficeActivity`` rows: identity, operation,
    source address (without Exchange's port), time (UTC when it has no offset), object and raw record."""
    db = tmp_path / "t.duckdb"
    result = CliRunner().invoke(
        app, ["timeline", "ingest", str(DATA / "office_activity.jsonl"), str(DATA / "la_office_activity.jsonl"),
              "--db", str(db)]
    )  # fmt: skip
    assert "4 records = 4 ingested + 0 duplicate + 0 quarantined" in result.output, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT event_id, source_format, time, account, service, operation, actor, actor_type, source_ip, "
            "user_agent, resources, status, read_only, raw ->> 'Id' FROM events ORDER BY time"
        ).fetchall()
    org = "7c1e2d3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
    assert rows == [
        ("m365-rule-1", "office_activity", datetime(2026, 10, 12, 9, 14, 5), org, "Exchange", "New-InboxRule",
         "mara@contoso.example", "User", "198.51.100.40", None, ["mara@contoso.example\\fwd-all"], "success", False,
         "m365-rule-1"),
        ("m365-mail-2", "office_activity", datetime(2026, 10, 12, 9, 20), org, "Exchange", "MailItemsAccessed",
         "a1b2c3d4-0000-4000-8000-00000000aaaa", "ServicePrincipal", "2001:db8::7", "Client=REST;Client=RESTSystem;;",
         [], "failure", True, "m365-mail-2"),
        ("la-m365-1", "la_office_activity", datetime(2026, 10, 12, 10, 1, 2), org, "Exchange", "Add-MailboxPermission",
         "admin@contoso.example", "User", "198.51.100.41", None, ["mara@contoso.example"], "success", False, None),
        ("la-m365-2", "la_office_activity", datetime(2026, 10, 12, 10, 5), org, "SharePoint", "FileDownloaded",
         "mara@contoso.example", "User", "198.51.100.42", None,
         ["https://contoso.sharepoint.example/sites/hr/pay.xlsx"], "unknown", True, None),
    ]  # fmt: skip
