"""``cloudir logs pull aws --flows``: the target network's VPC Flow Logs from CloudWatch Logs and S3, as evidence."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.playbook import build_response_plan, load_playbook
from cloudir.provider import TargetKind, TargetQuery
from cloudir.safepath import path_part
from cloudir.triggers import load_triggers
from moto_fixtures.aws import ACCOUNT, ATTACKER_IP, AwsSandbox, launch_instance
from moto_fixtures.aws_flows import FLOW_BUCKET, LOG_GROUP, plant_beacon
from moto_fixtures.clock import incident_clock
from moto_fixtures.sandbox import PlantedIncident as Incident
from providers.aws import flows
from tests.respond.conftest import DATA

runner = CliRunner()
C2 = ATTACKER_IP


def _pull(case: Path, instance_id: str, now: datetime, *extra: str) -> str:
    window = ["--start", (now - timedelta(days=1)).isoformat(), "--end", now.isoformat()]
    args = ["logs", "pull", "aws", "--flows", "--case", str(case), *window, "--instance", instance_id]
    result = runner.invoke(app, [*args, *extra], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def test_flow_pull_keeps_pages_and_files_and_the_timeline_finds_the_beacon(
    aws_sandbox: AwsSandbox, aws_incident: Incident, tmp_path: Path
) -> None:
    now = incident_clock()  # the incident's flows are planted before it, whatever the time of day
    instance_id = aws_incident.extra["instance_id"]
    instance = aws_sandbox.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
        0
    ]
    case = tmp_path / "case"
    output = _pull(case, aws_incident.extra["instance_id"], now)
    assert "VPC Flow Logs" in output
    assert instance["VpcId"] in output

    root = case / "logs/aws/flows/us-east-1"
    group = root / "cloudwatch" / path_part(LOG_GROUP)  # "/a/b" escaped, so no group "a_b" can share its folder
    request = json.loads((group / "request.json").read_text())
    assert "${instance-id}" in request["logFormat"]
    pages = sorted(group.glob("page-*.json"))
    assert sum(len(json.loads(p.read_bytes())["events"]) for p in pages) == 2 * 73
    objects = sorted((root / "s3").rglob("*.log.gz"))
    assert objects
    assert gzip.decompress(objects[0].read_bytes()).startswith(b"version account-id")
    assert (root / "instances/describe-instances-xml/page-00001.xml").read_bytes().startswith(b"<?xml")

    coverage = json.loads((case / "logs/aws/flows/coverage.json").read_text())
    assert coverage["locations"][instance["VpcId"]]["flow_logs"]
    statuses = {s["source"]: (s["status"], s["items"]) for s in coverage["sources"]}
    assert statuses["vpc-flow-logs:cloudwatch"] == ("complete", 146)
    assert statuses["vpc-flow-logs:s3"][0] == "complete"

    records = list(read_records(case / "custody.jsonl"))
    operations = {c["operation"] for r in records for c in r.get("api_calls", [])}
    assert {"DescribeInstances", "DescribeFlowLogs", "FilterLogEvents", "ListObjectsV2", "GetObject"} <= operations
    assert verify_case(case).ok

    trail = [
        "logs",
        "pull",
        "aws",
        "--case",
        str(case),
        "--start",
        (now - timedelta(days=1)).isoformat(),
        "--end",
        (now + timedelta(minutes=5)).isoformat(),
        "--instance",
        aws_incident.extra["instance_id"],
    ]
    pulled = runner.invoke(app, trail, env={"COLUMNS": "300"})
    assert pulled.exit_code == 0, pulled.output
    built = runner.invoke(app, ["timeline", "build", str(case)], env={"COLUMNS": "300"})
    assert built.exit_code == 0, built.output
    analyzed = runner.invoke(app, ["analyze", str(case / "timeline.duckdb")], env={"COLUMNS": "300"})
    assert analyzed.exit_code == 0, analyzed.output
    with duckdb.connect(str(case / "timeline.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)  # collector metadata is no event
        joined = con.execute(
            "SELECT count(*), count(DISTINCT instance) FROM flows WHERE dst_addr = ? AND instance IS NOT NULL", [C2]
        ).fetchone()
        assert joined is not None
        assert joined[1] == 1
        found = con.execute("SELECT title, explanation FROM findings WHERE explanation LIKE ?", [f"%{C2}%"]).fetchall()
    assert found, "the beacon to the C2 address is a finding"
    assert "72 connections to 203.0.113.66:443/tcp about every 599 s" in found[0][1]


def _calls(case: Path, operation: str) -> int:
    records = read_records(case / "custody.jsonl")
    return sum(1 for r in records for c in r.get("api_calls", []) if c["operation"] == operation)


def test_resume_fetches_nothing_twice_and_hostile_object_keys_stay_inside_the_case(
    aws_sandbox: AwsSandbox, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    instance_id = launch_instance(aws_sandbox)
    plant_beacon(aws_sandbox, instance_id, ACCOUNT, now, C2)
    listed = aws_sandbox.client("ec2").describe_flow_logs()["FlowLogs"]
    s3_id = next(f["FlowLogId"] for f in listed if f["LogDestinationType"] == "s3")
    day = f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/{now:%Y/%m/%d}/"
    hostile = f"{day}../../../../../../x_{s3_id}_{now:%Y%m%dT%H%M}Z_e.log.gz"
    aws_sandbox.client("s3").put_object(Bucket=FLOW_BUCKET, Key=hostile, Body=b"not a flow log")
    case = tmp_path / "case"
    _pull(case, instance_id, now)
    assert not list(tmp_path.rglob("x_*"))  # refused, not copied (tests/hostile/test_flow_keys.py: the reasons)
    listing = json.loads((case / "logs/aws/flows/us-east-1/s3-listing.json").read_text())
    assert [item["key"] for item in listing["refused"]] == [hostile]
    before = (_calls(case, "FilterLogEvents"), _calls(case, "GetObject"))
    _pull(case, instance_id, now, "--resume")
    assert (_calls(case, "FilterLogEvents"), _calls(case, "GetObject")) == before
    refused = runner.invoke(
        app, ["logs", "pull", "aws", "--flows", "--case", str(case), "--around", now.isoformat(), "--principal", "x"]
    )
    assert refused.exit_code != 0
    assert "--flows takes --instance" in refused.output


def _calls(case: Path, operation: str) -> int:
    records = read_records(case / "custody.jsonl")
    return sum(1 for r in records for c in r.get("api_calls", []) if c["operation"] == operation)


def test_a_network_without_flow_logs_is_a_warning(aws_sandbox: AwsSandbox, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    output = _pull(tmp_path / "case", launch_instance(aws_sandbox), now)
    assert "no flow log covers this network" in output


def test_the_inventory_knows_the_instances_public_and_elastic_ips(aws_sandbox: AwsSandbox, tmp_path: Path) -> None:
    """Flows and API calls from an instance's own public addresses are its own: the ``instances`` table holds its
    private addresses and the public ones EC2 lists for it (an Elastic IP on its primary interface and one on a
    second interface), as the Azure and GCP inventories do."""
    ec2 = aws_sandbox.client("ec2")
    instance_id = launch_instance(aws_sandbox)
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    second = ec2.create_network_interface(SubnetId=described["SubnetId"])["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=second, InstanceId=instance_id, DeviceIndex=1)
    interfaces = [described["NetworkInterfaces"][0]["NetworkInterfaceId"], second]
    private = [
        a["PrivateIpAddress"]
        for n in ec2.describe_network_interfaces(NetworkInterfaceIds=interfaces)["NetworkInterfaces"]
        for a in n["PrivateIpAddresses"]
    ]
    elastic = []
    for interface in interfaces:
        allocation = ec2.allocate_address(Domain="vpc")
        ec2.associate_address(AllocationId=allocation["AllocationId"], NetworkInterfaceId=interface)
        elastic.append(allocation["PublicIp"])
    case = tmp_path / "case"
    _pull(case, instance_id, datetime.now(UTC).replace(microsecond=0))
    db = tmp_path / "timeline.duckdb"
    built = runner.invoke(app, ["timeline", "ingest", str(case / "logs/aws/flows"), "--db", str(db)])
    assert "nothing readable was ingested" in built.output  # no flow log: only the inventory is read
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT addresses FROM instances WHERE instance = ?", [instance_id]).fetchone()
    assert row is not None
    assert sorted(row[0]) == sorted(private + elastic), (row, private, elastic)


def test_a_playbook_collect_flows_step_plans_the_flow_log_pull(aws_sandbox: AwsSandbox, tmp_path: Path) -> None:
    steps = [{"id": "logs", "action": "pull_logs"}, {"id": "net", "action": "collect_flows"}]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"id": "t", "title": "T", "steps": steps}))
    provider = aws_sandbox.provider()
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, launch_instance(aws_sandbox), "us-east-1"))
    trigger = load_triggers(DATA / "guardduty_ec2_eventbridge.json")[0]
    response = build_response_plan(load_playbook(tmp_path / "t.yaml"), trigger, provider, target, approved=False)
    ids = [step.id for step in response.plan.steps]
    assert "logs.lookup-events" in ids
    assert {"net.inventory", "net.flow-logs", "net.cloudwatch", "net.s3", "net.coverage"} <= set(ids)
    inventory = next(step for step in response.plan.steps if step.id == "net.inventory")
    assert any(call.params.get("InstanceIds") == target.id for call in inventory.calls)


def test_logs_insights_reads_the_group_in_windows_split_at_the_row_cap_and_resumes_after_a_timeout(
    aws_sandbox: AwsSandbox, aws_incident: Incident, tmp_path: Path
) -> None:
    """--flows-via insights: StartQuery per window, GetQueryResults polled until done; a window answering the row
    cap (lowered from 10,000 to 40 here, so 146 records split) is kept aside and split; a Timeout stops the step."""
    now = incident_clock()
    aws_sandbox.insights.max_rows = 40
    aws_sandbox.insights.polls_before_complete = 2  # Scheduled, Running, then Complete
    aws_sandbox.insights.fail_next = "Timeout"
    case = tmp_path / "case"
    window = ["--start", (now - timedelta(days=1)).isoformat(), "--end", now.isoformat()]
    args = ["logs", "pull", "aws", "--flows", "--flows-via", "insights", "--case", str(case), *window]
    args += ["--instance", aws_incident.extra["instance_id"]]
    planned = runner.invoke(app, [*args[:-2], "--dry-run"], env={"COLUMNS": "300"})
    assert "read with Logs Insights StartQuery (--flows-via insights)" in " ".join(planned.output.split())
    stopped = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert stopped.exit_code != 0
    assert "ended Timeout" in " ".join(stopped.output.split()), stopped.output
    resumed = runner.invoke(app, [*args, "--resume"], env={"COLUMNS": "300"})
    assert resumed.exit_code == 0, resumed.output

    folder = case / "logs/aws/flows/us-east-1/cloudwatch" / path_part(LOG_GROUP) / "insights"
    request = json.loads((folder / "request.json").read_text())
    assert "| filter @message like /(eni-" in request["queryString"]  # the network's interfaces only
    windows = sorted(folder.glob("window-*.json"), key=lambda w: int(w.stem.split("-")[1]))
    bodies = [json.loads(w.read_bytes()) for w in windows]
    assert {b["status"] for b in bodies} == {"Complete"}
    assert all(len(b["results"]) == b["statistics"]["recordsMatched"] <= 40 for b in bodies)
    assert sum(len(b["results"]) for b in bodies) == 146  # every record, once
    spans = [tuple(int(part) for part in w.stem.split("-")[1:]) for w in windows]
    assert spans[0][0] == request["startTime"]
    assert spans[-1][1] == request["endTime"]
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(spans))  # a tiling
    assert list((folder / "capped-windows").glob("window-*.json"))  # the capped answers are kept as evidence
    assert {b["limit"] for b in aws_sandbox.insights.started} == {10_000}
    operations = [c["operation"] for r in read_records(case / "custody.jsonl") for c in r.get("api_calls", [])]
    assert "FilterLogEvents" not in operations
    assert operations.count("StartQuery") == len(aws_sandbox.insights.started)
    assert operations.count("GetQueryResults") >= 3 * operations.count("StartQuery")  # polled until done
    coverage = json.loads((case / "logs/aws/flows/coverage.json").read_text())
    statuses = {s["source"]: (s["status"], s["items"]) for s in coverage["sources"]}
    assert statuses["vpc-flow-logs:cloudwatch"] == ("complete", 146)

    built = runner.invoke(app, ["timeline", "build", str(case)])
    assert built.exit_code == 0, built.output
    assert "0 quarantined" in built.output  # the capped answers are evidence, not records read twice
    with duckdb.connect(str(case / "timeline.duckdb"), read_only=True) as con:
        read = con.execute(  # the Insights windows come first in file order, the S3 copies are their duplicates
            "SELECT count(*), count(DISTINCT source_file), min(source_format) FROM flows "
            "WHERE source_file LIKE '%/insights/window-%'"
        ).fetchone()
        beacon = con.execute(
            "SELECT count(*) FROM flows WHERE dst_addr = ? AND dst_port = 443 AND source_file LIKE '%/insights/%'",
            [C2],
        ).fetchone()
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
    assert read == (146, len(windows), "aws_vpc_flow")  # each @message parsed as a FilterLogEvents message is
    assert beacon == (72,)
    assert quarantined == (0,)


def test_auto_reads_a_group_with_insights_when_it_stores_the_threshold_or_more(
    aws_sandbox: AwsSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stated rule: DescribeLogGroups storedBytes >= INSIGHTS_ABOVE_BYTES -> Logs Insights, else FilterLogEvents."""
    now = datetime.now(UTC).replace(microsecond=0)
    instance_id = launch_instance(aws_sandbox)
    plant_beacon(aws_sandbox, instance_id, ACCOUNT, now, C2)
    stored = aws_sandbox.client("logs").describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"][0]["storedBytes"]
    monkeypatch.setattr(flows, "INSIGHTS_ABOVE_BYTES", stored + 1)
    _pull(tmp_path / "below", instance_id, now)
    monkeypatch.setattr(flows, "INSIGHTS_ABOVE_BYTES", stored)
    _pull(tmp_path / "at", instance_id, now)
    assert (_calls(tmp_path / "below", "FilterLogEvents"), _calls(tmp_path / "below", "StartQuery")) == (1, 0)
    assert _calls(tmp_path / "at", "FilterLogEvents") == 0
    assert _calls(tmp_path / "at", "StartQuery") == 1
    assert _calls(tmp_path / "at", "DescribeLogGroups") == 1
