"""``cloudir logs pull aws``: dry run, a real run's summary, window options."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.cli.aws_logs import parse_duration, resolve_window
from cloudir.custody import verify_case
from cloudir.errors import CloudirError
from moto_fixtures.cloudtrail import CloudTrailStore, plant_attacker_trail
from tests.logs.conftest import ACCOUNT, BUCKET, REGION, T0

INSTANCE = "i-0123456789abcdef0"


def _plant() -> None:
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


def test_dry_run_prints_the_plan_and_changes_nothing(cloudtrail_store: CloudTrailStore, tmp_path: Path) -> None:
    _plant()
    calls_before = cloudtrail_store.calls
    case_dir = tmp_path / "case"
    result = CliRunner().invoke(
        app,
        [
            "logs",
            "pull",
            "aws",
            "--case",
            str(case_dir),
            "--around",
            T0.isoformat(),
            "--before",
            "2h",
            "--after",
            "1h",
            "--instance",
            INSTANCE,
            "--region",
            REGION,
            "--dry-run",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "Plan: logs aws" in result.output
    assert "cloudtrail:LookupEvents (eu-west-1)" in result.output
    assert "ResourceName=i-0123456789abcdef0" in result.output
    assert "dry run" in result.output
    assert not case_dir.exists()
    assert cloudtrail_store.calls == calls_before


def test_pull_prints_a_summary_and_the_case_verifies(cloudtrail_store: CloudTrailStore, tmp_path: Path) -> None:
    _plant()
    case_dir = tmp_path / "case"
    args = [
        "logs",
        "pull",
        "aws",
        "--case",
        str(case_dir),
        "--start",
        (T0 - timedelta(hours=1)).isoformat(),
        "--end",
        (T0 + timedelta(hours=1)).isoformat(),
        "--principal",
        INSTANCE,
        "--region",
        REGION,
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "lookup-events" in result.output
    assert "trail file integrity: verified" in result.output
    assert "management-events is not logging" in result.output
    assert verify_case(case_dir).ok
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert "--resume" in again.output


def test_window_options() -> None:
    assert resolve_window(None, None, "2026-05-01T10:00:00Z", "24h", "6h") == (
        "2026-04-30T10:00:00Z",
        "2026-05-01T16:00:00Z",
    )
    assert parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(CloudirError, match="no time window"):
        resolve_window("2026-05-01T10:00:00Z", None, None, "24h", "6h")
    for unreadable in ("soon", "-6h", "99999999999d"):  # the last is too long for a timedelta: refused, no traceback
        with pytest.raises(CloudirError, match="duration"):
            parse_duration(unreadable)
