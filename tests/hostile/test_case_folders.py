"""Default case folders (no --case) named after attacker-chosen targets: distinct per target, always under ./cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from moto_fixtures.aws import AwsSandbox

runner = CliRunner()


def test_targets_that_escape_alike_or_climb_get_their_own_folder_under_cases(
    aws_sandbox: AwsSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = aws_sandbox.client("iam")
    # IAM paths are attacker-chosen text: "/finding/" + "1" and "finding_1" escape to the same name, "/../" climbs.
    users = [("/finding/", "1"), ("/", "finding_1"), ("/../", "x")]
    arns = [iam.create_user(Path=path, UserName=name)["User"]["Arn"] for path, name in users]
    monkeypatch.chdir(tmp_path)
    folders = {}
    for arn in arns:
        result = runner.invoke(app, ["acquire", "aws", "--principal", arn])
        assert result.exit_code == 0, result.output
        [folder] = set((tmp_path / "cases").iterdir()) - set(folders.values())
        folders[arn] = folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]  # nothing climbed out
    for arn, folder in folders.items():
        [state] = folder.glob("artifacts/aws/iam-user/*/user.json")
        assert json.loads(state.read_text())["User"]["Arn"] == arn
