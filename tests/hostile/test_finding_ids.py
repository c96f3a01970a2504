"""Hostile finding ids: ids that escape to the same name still get their own case folder and trigger file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.serverless.aws_lambda import handler
from moto_fixtures.aws import AwsSandbox
from tests.respond.conftest import DATA, guardduty_for
from tests.respond.test_conditions import StubProvider

runner = CliRunner()


def test_finding_ids_that_escape_alike_get_separate_case_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    steps = [{"id": "snap", "action": "snapshot"}, {"id": "report", "action": "report"}]
    (books / "t.yaml").write_text(yaml.safe_dump({"id": "t", "title": "T", "steps": steps}))
    monkeypatch.setenv("CLOUDIR_PLAYBOOKS", str(books))
    monkeypatch.setenv("CLOUDIR_CASE_ROOT", str(tmp_path / "cases"))
    case_dirs = {}
    for finding_id in ("finding/1", "finding_1", "../../finding_1"):
        event = json.loads((DATA / "guardduty_ec2_eventbridge.json").read_text())
        event["detail"]["id"] = finding_id
        [outcome] = handler(event, None, provider_factory=lambda trigger: StubProvider())["outcomes"]
        assert outcome["status"] == "completed", outcome["message"]
        case_dirs[finding_id] = Path(outcome["case_dir"])
    assert len(set(case_dirs.values())) == 3
    for finding_id, case_dir in case_dirs.items():
        assert case_dir.parent == tmp_path / "cases"
        [trigger_file] = (case_dir / "triggers").iterdir()
        assert json.loads(trigger_file.read_text())["finding_id"] == finding_id


def test_cli_respond_gives_findings_that_escape_alike_their_own_case_folder(
    aws_sandbox: AwsSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    account = aws_sandbox.client("sts").get_caller_identity()["Account"]
    for number, finding_id in enumerate(("finding/1", "finding_1", "../../finding_1")):
        finding = guardduty_for("i-0123456789abcdef0", account, "us-east-1", "2026-11-20T10:00:00Z", finding_id)
        path = tmp_path / f"finding-{number}.json"
        path.write_text(json.dumps(finding), encoding="utf-8")
        runner.invoke(app, ["respond", "--trigger", str(path)])  # the instance does not exist: it fails, in a case
    folders = sorted((tmp_path / "cases").iterdir())
    assert len(folders) == 3  # one case per finding id, all under ./cases
    saved = {json.loads(f.read_text())["finding_id"] for folder in folders for f in (folder / "triggers").iterdir()}
    assert saved == {"finding/1", "finding_1", "../../finding_1"}


@pytest.mark.parametrize("dry_run", [False, True])
def test_several_findings_into_one_given_case_folder_are_refused(tmp_path: Path, dry_run: bool) -> None:
    findings = [
        guardduty_for("i-0123456789abcdef0", "123456789012", "us-east-1", "2026-11-20T10:00:00Z", finding_id)
        for finding_id in ("finding/1", "finding_1")
    ]
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(findings), encoding="utf-8")
    case_dir = tmp_path / "one-case"
    args = ["respond", "--trigger", str(path), "--case", str(case_dir), *(["--dry-run"] if dry_run else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "the finding file holds 2 findings; omit --case to get one case per finding" in result.output
    assert not case_dir.exists()
