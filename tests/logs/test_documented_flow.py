"""The README's flow on an intact case: pull logs, timeline build, analyze, report, verify --expect-head."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from cloudir.cli import app
from moto_fixtures.cloudtrail import CloudTrailStore, plant_attacker_trail
from tests.logs.conftest import ACCOUNT, BUCKET, REGION, T0

INSTANCE = "i-0123456789abcdef0"
runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def test_documented_flow_verifies_against_the_head_printed_at_acquisition(
    cloudtrail_store: CloudTrailStore, tmp_path: Path
) -> None:
    plant_attacker_trail(
        account_id=ACCOUNT,
        region=REGION,
        instance_id=INSTANCE,
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/web-app-role",
        attacker_ip="203.0.113.66",
        start=T0,
        bucket=BUCKET,
        baseline_days=1,
    )
    case = tmp_path / "IR-42"
    window = ["--start", (T0 - timedelta(hours=2)).isoformat(), "--end", (T0 + timedelta(hours=1)).isoformat()]
    pulled = _run("logs", "pull", "aws", "--case", str(case), *window, "--principal", INSTANCE, "--region", REGION)
    heads = re.findall(r"custody head ([0-9a-f]{64}) \(\d+ records\) sealed by key (SHA256:[0-9a-f]{64})", pulled)
    assert heads, pulled
    printed_head, key = heads[-1]

    _run("timeline", "build", str(case))
    analyzed = _run("analyze", str(case / "timeline.duckdb"))
    assert "custody head" in analyzed  # analyze re-registered the database it rewrote
    _run("report", str(case))
    verified = _run("verify", str(case), "--expect-head", printed_head)
    assert f"key {key}" in verified
    assert "replaced in record" in verified
    assert "by analyze" in verified
    assert "OK " in verified
    prefix = _run("verify", str(case), "--expect-head", printed_head[:16].upper())
    assert "OK " in prefix
