"""Two deliveries of one finding at the same time: exactly one response, the other says "in progress"."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.playbook import Outcome, respond
from cloudir.provider import Provider
from cloudir.triggers import Trigger, parse_triggers
from tests.respond.conftest import AwsIncident


def test_concurrent_deliveries_make_one_response(aws_incident: AwsIncident, case_root: Path) -> None:
    [trigger] = parse_triggers(aws_incident.finding)
    case_dir = case_root / "shared"
    first_is_running = threading.Event()
    outcomes: dict[str, Outcome] = {}

    def factory(found: Trigger) -> Provider:
        first_is_running.set()  # called while the first delivery holds the case
        return aws_incident.provider_factory(found)

    def deliver(name: str) -> None:
        outcomes[name] = respond(trigger, case_dir, provider_factory=factory, params=aws_incident.params)

    first = threading.Thread(target=deliver, args=("first",))
    first.start()
    assert first_is_running.wait(timeout=60)
    deliver("second")
    first.join(timeout=300)
    assert outcomes["second"].status == "in-progress"
    assert "did nothing" in outcomes["second"].message
    assert outcomes["first"].status in {"completed", "awaiting-approval"}
    started = [r for r in read_records(case_dir / "custody.jsonl") if r["action"] == "response.started"]
    assert len(started) == 1
    records = read_records(case_dir / "custody.jsonl")
    snapshot_calls = [
        call for r in records for call in r["api_calls"] if call["operation"] in {"CreateSnapshot", "CreateSnapshots"}
    ]
    case_id = json.loads((case_dir / "case.json").read_text())["case_id"]
    assert snapshot_calls
    assert len({call["request_id"] for call in snapshot_calls}) == len(snapshot_calls)
    ec2 = aws_incident.sandbox.client("ec2")
    [reservation] = ec2.describe_instances(InstanceIds=[aws_incident.incident.target.value])["Reservations"]
    volumes = reservation["Instances"][0]["BlockDeviceMappings"]
    assert len(snapshot_calls) <= len(volumes)  # each volume snapshotted once at most, by the one response
    assert aws_incident.sandbox.snapshots_for_case(case_id)
    assert verify_case(case_dir).ok


HOLD = """
import sys, time
from pathlib import Path
from cloudir.case import Case
with Case.open_or_create(Path(sys.argv[1]), resume=True, purpose=sys.argv[2]) as case:
    Path(sys.argv[3]).write_text("held")
    time.sleep(60)
"""


def test_a_delivery_in_another_process_while_one_is_running_does_nothing(tmp_path: Path) -> None:
    finding = Path(__file__).parent / "data" / "guardduty_ec2_eventbridge.json"
    [trigger] = parse_triggers(json.loads(finding.read_text()))
    case_dir, ready = tmp_path / "case", tmp_path / "ready"
    purpose = f"respond to finding {trigger.finding_id}"  # the first delivery, still running in its own process
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(case_dir), purpose, str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert holder.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        custody = (case_dir / "custody.jsonl").read_bytes()
        result = CliRunner().invoke(app, ["respond", "--trigger", str(finding), "--case", str(case_dir)])
        assert holder.poll() is None  # answered while the first delivery still holds the case
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("in-progress finding ")
    assert "this one did nothing" in result.output
    assert (case_dir / "custody.jsonl").read_bytes() == custody  # no record, no cloud call
