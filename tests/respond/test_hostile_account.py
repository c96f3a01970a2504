"""A finding is data: one naming another account than the caller's changes nothing anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from tests.respond.conftest import AwsIncident

runner = CliRunner()


def _respond(aws_incident: AwsIncident, tmp_path: Path, finding: dict[str, object]) -> tuple[int, str, Path]:
    path = tmp_path / "finding.json"
    path.write_text(json.dumps(finding), encoding="utf-8")
    case_dir = tmp_path / "case"
    params = [arg for key, value in aws_incident.params.items() for arg in ("--param", f"{key}={value}")]
    result = runner.invoke(
        app, ["respond", "--trigger", str(path), "--case", str(case_dir), "--approve-containment", *params]
    )
    return result.exit_code, result.output, case_dir


def _changing_calls(case_dir: Path) -> list[str]:
    reads = ("Describe", "Get", "List", "Lookup")
    return [
        call["operation"]
        for record in read_records(case_dir / "custody.jsonl")
        for call in record.get("api_calls", [])
        if not call["operation"].startswith(reads)
    ]


def test_finding_for_another_account_is_refused_before_any_change(aws_incident: AwsIncident, tmp_path: Path) -> None:
    finding = aws_incident.finding
    finding["account"] = finding["detail"]["accountId"] = "999999999999"  # the instance id is in the caller's account
    code, output, case_dir = _respond(aws_incident, tmp_path, finding)
    assert code == 2, output
    head_line, error_line = output.strip().splitlines()  # the sealed head of the case, then the one-line refusal
    assert head_line.startswith("custody head ")
    assert error_line.startswith("error: refused: the finding names account 999999999999 but this tool acts in account")
    assert not aws_incident.sandbox.is_preserved(aws_incident.incident)
    assert not aws_incident.sandbox.is_isolated(aws_incident.incident)
    assert _changing_calls(case_dir) == []


def test_finding_outside_the_configured_allow_list_is_refused(
    aws_incident: AwsIncident, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDIR_ACCOUNTS_AWS", "111111111111, 222222222222")
    code, output, case_dir = _respond(aws_incident, tmp_path, aws_incident.finding)
    assert code == 2, output
    assert "not in the configured [accounts] aws list (111111111111, 222222222222)" in output
    assert not aws_incident.sandbox.is_preserved(aws_incident.incident)
    assert _changing_calls(case_dir) == []
