"""Planted flow-log bucket keys that try to leave their folder or overwrite a genuine flow-log file are refused."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.aws import ACCOUNT, ATTACKER_IP, AwsSandbox, launch_instance
from moto_fixtures.aws_flows import FLOW_BUCKET, LOG_GROUP, plant_beacon
from moto_fixtures.gcp_flows import flow_entry

runner = CliRunner()
FORGED = gzip.compress(b"version account-id interface-id srcaddr dstaddr\n2 1 eni-x 203.0.113.66 10.0.0.1\n", mtime=0)


def test_planted_flow_log_keys_are_refused_and_the_genuine_files_kept(aws_sandbox: AwsSandbox, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    instance_id = launch_instance(aws_sandbox)
    plant_beacon(aws_sandbox, instance_id, ACCOUNT, now, ATTACKER_IP)
    s3 = aws_sandbox.client("s3")
    genuine = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=FLOW_BUCKET)["Contents"])
    folder, name = genuine[-1].rsplit("/", 1)
    planted = {  # each attack key, with the reason it must be refused for
        f"{folder}/./{name}": "unsafe name: '.' segment",  # normalises onto the genuine file
        f"{folder}//{name}": "unsafe name: empty segment ('//' or a trailing '/')",
        f"{folder}/../../../../../../../../../../{name}": "unsafe name: '..' segment",
        f"{folder}/{name}/{name}": f"collides with {genuine[-1]!r}",  # needs the genuine file to be a folder
    }
    for key in planted:
        s3.put_object(Bucket=FLOW_BUCKET, Key=key, Body=FORGED)
    case = tmp_path / "case"
    window = ["--start", (now - timedelta(days=1)).isoformat(), "--end", now.isoformat()]
    pulled = runner.invoke(
        app, ["logs", "pull", "aws", "--flows", "--case", str(case), *window, "--instance", instance_id]
    )
    assert pulled.exit_code == 0, pulled.output
    root = case / "logs/aws/flows/us-east-1"
    for key in genuine:  # every genuine file is copied, none overwritten by a forged one
        assert (root / "s3" / FLOW_BUCKET / key).read_bytes() == s3.get_object(Bucket=FLOW_BUCKET, Key=key)[
            "Body"
        ].read()
    assert sorted(p.relative_to(root / "s3" / FLOW_BUCKET).as_posix() for p in root.rglob("*.log.gz")) == genuine
    assert not [p for p in tmp_path.rglob("*.log.gz") if not p.is_relative_to(root)]  # nothing escaped
    listing = json.loads((root / "s3-listing.json").read_text())
    assert {item["key"]: item["reason"] for item in listing["refused"]} == planted
    [step] = [r for r in read_records(case / "custody.jsonl") if r["details"].get("step") == "s3"]
    assert {item["key"] for item in step["details"]["result"]["refused_objects"]} == set(planted)
    coverage = json.loads((case / "logs/aws/flows/coverage.json").read_text())
    [flow_files] = [s for s in coverage["sources"] if s["source"] == "vpc-flow-logs:s3"]
    assert flow_files["status"] == "partial"
    assert {item["key"] for item in flow_files["details"]["refused"]} == set(planted)
    assert any("4 objects refused" in warning for warning in coverage["warnings"])


def test_a_planted_log_group_named_like_the_genuine_one_neither_blocks_nor_mixes_its_pages(
    aws_sandbox: AwsSandbox, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    instance_id = launch_instance(aws_sandbox)
    flows = plant_beacon(aws_sandbox, instance_id, ACCOUNT, now, ATTACKER_IP)
    planted = LOG_GROUP.strip("/").replace("/", "_")  # "/a/b" and "a_b" escape to the same folder name
    logs = aws_sandbox.client("logs")
    logs.create_log_group(logGroupName=planted)
    logs.create_log_stream(logGroupName=planted, logStreamName="forged")
    forged = [{"timestamp": int(now.timestamp() * 1000) - 60_000, "message": "5 forged record"}]
    logs.put_log_events(logGroupName=planted, logStreamName="forged", logEvents=forged)
    aws_sandbox.client("ec2").create_flow_logs(
        ResourceIds=[flows.vpc],
        ResourceType="VPC",
        TrafficType="ALL",
        LogDestinationType="cloud-watch-logs",
        LogGroupName=planted,
        DeliverLogsPermissionArn=f"arn:aws:iam::{ACCOUNT}:role/vpc-flow-logs-delivery",
    )
    case = tmp_path / "case"
    window = ["--start", (now - timedelta(days=1)).isoformat(), "--end", now.isoformat()]
    pulled = runner.invoke(
        app, ["logs", "pull", "aws", "--flows", "--case", str(case), *window, "--instance", instance_id]
    )
    assert pulled.exit_code == 0, pulled.output
    groups = {}
    for request in (case / "logs/aws/flows/us-east-1/cloudwatch").glob("*/request.json"):
        pages = sorted(request.parent.glob("page-*.json"))
        groups[json.loads(request.read_text())["logGroupName"]] = [
            e["message"] for p in pages for e in json.loads(p.read_bytes())["events"]
        ]
    assert sorted(groups) == sorted([LOG_GROUP, planted])  # one folder each
    assert len(groups[LOG_GROUP]) == 2 * 73  # the genuine group complete...
    assert groups[planted] == ["5 forged record"]  # ...and the planted one kept apart


def test_an_inventory_whose_labels_spell_flow_log_markers_is_still_an_inventory(tmp_path: Path) -> None:
    """A label or tag value is the attacker's: ``vpc_flows`` or ``FlowLogFlowEvent`` in it does not make the
    collector's inventory file a flow log (which would lose the instance and its service account)."""
    folder = tmp_path / "logs"
    folder.mkdir()
    gcp = {
        "gcpInventory": 1,
        "project": "p",
        "instances": [
            {
                "name": "web-1",
                "labels": {"role": "vpc_flows"},
                "serviceAccounts": [{"email": "Sa@P.iam.gserviceaccount.com"}],
            }
        ],
    }
    vm = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm-1"
    nic = {"id": "nic", "properties": {"macAddress": "00-0D-3A-00-00-01", "virtualMachine": {"id": vm}}}
    azure = {
        "azureInventory": 1,
        "networkInterfaces": [nic],
        "subscription": "s",
        "virtualMachines": [{"id": vm, "tags": {"x": "FlowLogFlowEvent"}, "identity": {"principalId": "P-1"}}],
    }
    side = {"vm_name": "web-1", "zone": "z", "region": "r", "vpc": "default", "subnet": "default"}
    entry = flow_entry("p", side, datetime(2026, 11, 20, tzinfo=UTC), ("10.0.0.5", 40000), ("192.0.2.9", 443), sent=9)
    (folder / "flows.json").write_text(json.dumps({"entries": [entry]}))
    (folder / "gcp.json").write_text(json.dumps(gcp, indent=2, sort_keys=True))
    (folder / "azure.json").write_text(json.dumps(azure, indent=2, sort_keys=True))
    db = tmp_path / "timeline.duckdb"
    built = runner.invoke(app, ["timeline", "ingest", str(folder), "--db", str(db)])
    assert built.exit_code == 0, built.output
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT cloud, instance, identities FROM instances ORDER BY cloud").fetchall()
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
    assert rows == [("azure", vm, [vm.lower(), "p-1"]), ("gcp", "web-1", ["sa@p.iam.gserviceaccount.com"])]
    assert quarantined == (0,)
