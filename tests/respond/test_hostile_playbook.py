"""Hostile playbooks: containment never runs without an acquisition of the target, and a skip is never hidden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from tests.respond.conftest import AwsIncident

runner = CliRunner()


def _book(folder: Path, steps: list[dict[str, object]]) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "hostile.yaml"
    book = {"id": "hostile", "title": "Hostile", "containment": {"require_approval": False}, "steps": steps}
    path.write_text(yaml.safe_dump(book), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "steps",
    [
        [{"id": "isolate", "action": "contain"}],
        [{"id": "isolate", "action": "contain"}, {"id": "snap", "action": "snapshot"}],
        [{"id": "logs", "action": "pull_logs"}, {"id": "isolate", "action": "contain"}],
    ],
)
def test_validate_refuses_containment_without_an_acquisition_before_it(
    tmp_path: Path, steps: list[dict[str, object]]
) -> None:
    result = runner.invoke(app, ["playbook", "validate", str(_book(tmp_path / "books", steps))])
    assert result.exit_code == 2, result.output
    assert "step 'isolate': field action: contain needs an acquisition step (preserve, snapshot, copy) before it" in (
        result.output
    )


def test_containment_is_skipped_when_the_acquisition_is_and_the_outcome_says_so(
    aws_incident: AwsIncident, tmp_path: Path
) -> None:
    books = tmp_path / "books"
    _book(
        books,
        [
            {"id": "snap", "action": "snapshot", "when": {"min_severity": "critical"}},  # the finding is high
            {"id": "isolate", "action": "contain"},
        ],
    )
    finding = tmp_path / "finding.json"
    finding.write_text(json.dumps(aws_incident.finding), encoding="utf-8")
    case_dir = tmp_path / "case"
    result = runner.invoke(
        app, ["respond", "--trigger", str(finding), "--case", str(case_dir), "--playbooks", str(books)]
    )
    assert result.exit_code == 0, result.output
    assert "completed with skipped steps" in result.output
    assert "skipped: snap: severity high is below critical" in result.output
    assert "skipped: isolate: no acquisition of aws:" in result.output
    assert not aws_incident.sandbox.is_isolated(aws_incident.incident)
    [completed] = [r for r in read_records(case_dir / "custody.jsonl") if r["action"] == "response.completed"]
    assert set(completed["details"]["skipped"]) == {"snap", "isolate"}
