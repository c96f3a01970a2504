"""Hostile findings naming another Azure subscription or GCP project than the one the tool acts in: refused by
``cloudir respond`` with one line before any change (the AWS case: tests/respond/test_hostile_account.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.azure import SUBSCRIPTION, sandbox_token
from moto_fixtures.sandbox import open_sandbox
from tests.respond.conftest import sample

runner = CliRunner()
OTHER_SUBSCRIPTION = "99999999-9999-4999-8999-999999999999"


def _respond(finding: object, tmp_path: Path) -> tuple[int, str, Path]:
    path = tmp_path / "finding.json"
    path.write_text(json.dumps(finding), encoding="utf-8")
    case_dir = tmp_path / "case"
    result = runner.invoke(app, ["respond", "--trigger", str(path), "--case", str(case_dir), "--approve-containment"])
    return result.exit_code, result.output, case_dir


def _only_reads(case_dir: Path) -> bool:
    calls = [c for r in read_records(case_dir / "custody.jsonl") for c in r.get("api_calls", [])]
    return all(c["operation"].endswith(("/read", ".get", ".list", "Get", "List")) for c in calls)


def test_defender_alert_naming_another_subscription_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_sandbox("azure") as sandbox:
        incident = sandbox.plant_incident()
        config = {key: value for key, value in sandbox.provider_config().items() if key != "credential"}
        monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"azure": config | {"token": sandbox_token()}}))
        alert = sample("defender_workflow_automation.json")
        alert["ResourceIdentifiers"][0]["AzureResourceId"] = incident.extra["vm_id"].replace(
            SUBSCRIPTION, OTHER_SUBSCRIPTION
        )
        code, output, case_dir = _respond(alert, tmp_path)
        assert code == 2, output
        assert f"error: refused: the finding names subscription {OTHER_SUBSCRIPTION} but this tool acts in" in output
        assert "Traceback" not in output
        assert not sandbox.is_preserved(incident)
        assert not sandbox.is_isolated(incident)
        assert _only_reads(case_dir)


def test_scc_finding_naming_another_project_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto_fixtures.gcp import FORENSIC_PROJECT, PROJECT

    with open_sandbox("gcp") as sandbox:
        incident = sandbox.plant_incident()
        assert sandbox.server is not None
        config = {"api_endpoint": sandbox.server.endpoint, "anonymous": True, "project": PROJECT}
        monkeypatch.setenv(
            "CLOUDIR_PROVIDER_CONFIG", json.dumps({"gcp": config | {"forensic_project": FORENSIC_PROJECT}})
        )
        notification = sample("scc_notification.json")
        notification["finding"]["resourceName"] = (
            f"//compute.googleapis.com/projects/attacker-project/zones/{incident.target.location}/instances/"
            f"{incident.target.value}"
        )
        code, output, case_dir = _respond(notification, tmp_path)
        assert code == 2, output
        assert "error: refused: the finding names project attacker-project but this tool acts in project" in output
        assert not sandbox.is_preserved(incident)
        assert not sandbox.is_isolated(incident)
        assert _only_reads(case_dir)


def test_defender_alert_is_refused_when_the_tools_own_subscription_is_not_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No subscription configured or in the environment: the alert's own subscription is never taken as the tool's."""
    with open_sandbox("azure") as sandbox:
        incident = sandbox.plant_incident()
        config = {k: v for k, v in sandbox.provider_config().items() if k not in {"credential", "subscription_id"}}
        monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"azure": config | {"token": sandbox_token()}}))
        monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
        code, output, _ = _respond(sample("defender_workflow_automation.json"), tmp_path)
        assert code == 2, output
        assert "error: no Azure subscription given: the one this tool acts in is not known" in output
        assert not sandbox.is_preserved(incident)
        assert not sandbox.is_isolated(incident)


def test_scc_finding_is_refused_when_it_names_a_project_other_than_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No project configured: the tool acts in GOOGLE_CLOUD_PROJECT, never in the project the finding names."""

    with open_sandbox("gcp") as sandbox:
        incident = sandbox.plant_incident()
        assert sandbox.server is not None
        monkeypatch.setenv(
            "CLOUDIR_PROVIDER_CONFIG", json.dumps({"gcp": {"api_endpoint": sandbox.server.endpoint, "anonymous": True}})
        )
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "responder-home")
        code, output, _ = _respond(sample("scc_notification.json"), tmp_path)
        assert code == 2, output
        assert re.search(
            r"error: refused: the finding names project \S+ but this tool acts in project responder-home", output
        )
        assert not sandbox.is_preserved(incident)
        assert not sandbox.is_isolated(incident)
