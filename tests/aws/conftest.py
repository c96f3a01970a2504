"""Helpers for the AWS tests: a case in tmp_path and an acquisition run through the provider."""

from collections.abc import Callable
from pathlib import Path

import pytest

from cloudir.case import Case
from cloudir.custody import read_records
from cloudir.plan import RunResult, run_plan
from cloudir.provider import AcquireOptions, TargetKind, TargetQuery
from moto_fixtures.aws import AwsSandbox

Acquire = Callable[..., tuple[Case, RunResult]]


@pytest.fixture
def acquire(aws_sandbox: AwsSandbox, tmp_path: Path) -> Acquire:
    """Run an acquisition of an instance into ``tmp_path/<name>`` (created or reopened) and return the case."""

    def run(
        instance_id: str, *, name: str = "case", raise_on_failure: bool = True, **options: object
    ) -> tuple[Case, RunResult]:
        root = tmp_path / name
        case = Case.open(root) if (root / "case.json").exists() else Case.create(root)
        provider = aws_sandbox.provider()
        provider.bind(case)
        target = provider.find_target(TargetQuery(TargetKind.INSTANCE, instance_id, aws_sandbox.region))
        plan = provider.plan_acquire(target, AcquireOptions(**options))  # type: ignore[arg-type]
        return case, run_plan(plan, case, raise_on_failure=raise_on_failure)

    return run


def api_outcomes(case: Case, operation: str) -> list[str]:
    """The outcome of every ``operation`` call recorded in the case's custody log, in order."""
    return [
        call["outcome"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] == operation
    ]
