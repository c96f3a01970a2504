"""Defender for Cloud and Security Command Center findings, end to end on the Azure and GCP sandboxes.

Each source runs once through its deployable function (deploy/azure/function_app.py called by the azure-functions
package with a real EventGridEvent; deploy/gcp/main.py served by functions-framework on 127.0.0.1 and sent a
CloudEvent over HTTP) and once through the CLI, with containment held for approval and then approved.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.serverless.azure_function import main as azure_main
from cloudir.serverless.gcp_function import handle_pubsub
from moto_fixtures.azure import sandbox_token
from moto_fixtures.sandbox import open_sandbox
from tests.respond.conftest import sample

runner = CliRunner()
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deployed_{path.parent.name}_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _deliver_event_grid(event: dict[str, Any]) -> None:
    """Call the v2 function app's Event Grid function as the Functions host does, with an EventGridEvent."""
    app = _load(DEPLOY / "azure" / "function_app.py").app
    [function] = app.get_functions()
    [binding] = function.get_bindings_dict()["bindings"]
    assert binding["type"] == "eventGridTrigger"
    assert str(binding["direction"]).endswith("IN")
    grid_event = func.EventGridEvent(
        id=event["id"],
        data=event["data"],
        topic=event["topic"],
        subject=event["subject"],
        event_type=event["eventType"],
        event_time=datetime.fromisoformat(event["eventTime"]),
        data_version=event["dataVersion"],
    )
    assert function.get_user_function()(**{binding["name"]: grid_event}) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def _cloud_function(log: Path) -> Iterator[str]:
    """deploy/gcp/main.py served by functions-framework on 127.0.0.1 (a subprocess of this environment); its URL."""
    port = _free_port()
    command = [sys.executable, "-m", "functions_framework", "--target", "cloudir_respond"]
    command += ["--source", str(DEPLOY / "gcp" / "main.py"), "--signature-type", "cloudevent"]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)], env=os.environ.copy(), stderr=output
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "functions-framework did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=30)
        print(log.read_text()[-4000:])  # shown when the test fails


def _post_cloud_event(url: str, event: dict[str, Any]) -> int:
    """POST a CloudEvent in binary content mode (ce-* headers, the data as the JSON body), as Eventarc does."""
    headers = {f"ce-{key}": str(event[key]) for key in ("specversion", "id", "source", "type", "time")}
    request = urllib.request.Request(
        url, data=json.dumps(event["data"]).encode(), headers=headers | {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        status: int = response.status
    return status


def _only_case(root: Path) -> Path:
    [case_dir] = [path for path in root.iterdir() if path.is_dir()]
    return case_dir


@pytest.fixture
def serverless_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Case root for the handlers."""
    root = tmp_path / "cases"
    monkeypatch.setenv("CLOUDIR_CASE_ROOT", str(root))
    monkeypatch.delenv("CLOUDIR_APPROVE_CONTAINMENT", raising=False)
    return root


def _check_case(case_dir: Path) -> dict[str, Any]:
    """A finished response left evidence, a timeline with findings, a report and a verifiable custody log."""
    assert (case_dir / "timeline.duckdb").is_file()
    assert (case_dir / "reports" / "report.html").is_file()
    assert list((case_dir / "notifications").glob("*.md"))
    actions = [r["action"] for r in read_records(case_dir / "custody.jsonl")]
    assert "timeline.build" in actions
    assert verify_case(case_dir).ok
    summary = runner.invoke(
        app, ["report", str(case_dir), "--format", "json", "--out", str(case_dir.parent / "s.json")]
    )
    assert summary.exit_code == 0, summary.output
    data: dict[str, Any] = json.loads((case_dir.parent / "s.json").read_text())
    assert data["evidence"]["timeline_events"] > 0
    assert data["evidence"]["findings"] > 0
    return data


def test_defender_alert_through_event_grid_function_and_cli(
    serverless_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_sandbox("azure") as sandbox:
        incident = sandbox.plant_incident()
        config = {key: value for key, value in sandbox.provider_config().items() if key != "credential"}
        config["token"] = sandbox_token()  # the same bearer token, as JSON-able settings
        monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"azure": config}))
        params = {"forensic_account": incident.forensic_account, "log_window_before_hours": 96}
        monkeypatch.setenv("CLOUDIR_PARAMS", json.dumps(params))
        activity = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")

        events = sample("defender_eventgrid.json")
        alert = events[0]["data"]["properties"]
        alert["resourceIdentifiers"][0]["azureResourceId"] = incident.extra["vm_id"]
        alert["startTimeUtc"] = activity
        _deliver_event_grid(events[0])
        assert sandbox.is_preserved(incident)
        assert not sandbox.is_isolated(incident)
        [outcome] = azure_main(events[0])["outcomes"]  # the same event again: the case says it is handled
        assert outcome["status"] == "duplicate", outcome["message"]
        assert outcome["playbook"] == "azure-vm-compromise"

        workflow = sample("defender_workflow_automation.json")
        workflow["ResourceIdentifiers"][0]["AzureResourceId"] = incident.extra["vm_id"]
        workflow["StartTimeUtc"] = activity
        finding = tmp_path / "alert.json"
        finding.write_text(json.dumps(workflow))
        case_dir = tmp_path / "cli-case"
        cli = runner.invoke(
            app,
            ["respond", "--trigger", str(finding), "--case", str(case_dir), "--approve-containment"]
            + [arg for key, value in params.items() for arg in ("--param", f"{key}={value}")],
        )
        assert cli.exit_code == 0, cli.output
        assert "completed" in cli.output
        assert sandbox.is_isolated(incident)
        assert sandbox.snapshots_for_case(json.loads((case_dir / "case.json").read_text())["case_id"])
    assert _check_case(case_dir)["actions_taken"]["containment"] == "performed"
    assert _check_case(_only_case(serverless_env))["actions_taken"]["containment"] == "awaiting approval"


def test_scc_finding_through_pubsub_function_and_cli_then_approval(
    serverless_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from moto_fixtures.gcp import FORENSIC_PROJECT, PROJECT, WINDOW_END

    with open_sandbox("gcp") as sandbox:
        incident = sandbox.plant_incident()
        assert sandbox.server is not None
        config = {
            "api_endpoint": sandbox.server.endpoint,
            "anonymous": True,
            "project": PROJECT,  # where the function runs: a finding never chooses it
            "forensic_project": FORENSIC_PROJECT,
            "log_backoff": 0.01,
        }
        monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"gcp": config}))
        monkeypatch.setenv(
            "CLOUDIR_PARAMS", json.dumps({"forensic_account": FORENSIC_PROJECT, "log_window_before_hours": 24 * 7})
        )
        notification = sample("scc_notification.json")
        finding = notification["finding"]
        finding["resourceName"] = (
            f"//compute.googleapis.com/projects/{PROJECT}/zones/{incident.target.location}/instances/"
            f"{incident.target.value}"
        )
        finding["eventTime"] = (
            datetime.fromisoformat(WINDOW_END.replace("Z", "+00:00")) - timedelta(minutes=30)
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        cloud_event = sample("scc_cloudevent.json")
        cloud_event["data"]["message"]["data"] = base64.b64encode(json.dumps(notification).encode()).decode()
        with _cloud_function(tmp_path / "functions-framework.log") as url:
            assert _post_cloud_event(url, cloud_event) == 200
        assert sandbox.is_preserved(incident)
        assert not sandbox.is_isolated(incident)
        case_dir = _only_case(serverless_env)

        push = sample("scc_pubsub_push.json")
        push["message"]["data"] = cloud_event["data"]["message"]["data"]
        [outcome] = handle_pubsub(push)["outcomes"]
        assert outcome["status"] == "duplicate", outcome["message"]
        assert outcome["playbook"] == "gce-instance-compromise"
        assert Path(outcome["case_dir"]) == case_dir

        finding_file = tmp_path / "push.json"  # the same SCC finding through the CLI, into its own case
        finding_file.write_text(json.dumps(push))
        cli_case = tmp_path / "cli-case"
        cli = runner.invoke(app, ["respond", "--trigger", str(finding_file), "--case", str(cli_case)])
        assert cli.exit_code == 0, cli.output
        assert "awaiting-approval" in cli.output
        assert not sandbox.is_isolated(incident)

        approved = runner.invoke(app, ["respond", "--case", str(case_dir), "--approve"])
        assert approved.exit_code == 0, approved.output
        assert sandbox.is_isolated(incident)
        assert sandbox.snapshots_for_case(json.loads((case_dir / "case.json").read_text())["case_id"])
    assert _check_case(case_dir)["actions_taken"]["containment"] == "performed"
    assert _check_case(cli_case)["actions_taken"]["containment"] == "awaiting approval"
