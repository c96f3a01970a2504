"""Helpers for the Azure tests: cases in tmp_path, plans run through the provider, the CLI against the fake."""

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.plan import RunResult, run_plan
from cloudir.provider import AcquireOptions, ContainOptions, Provider
from moto_fixtures.azure import SUBSCRIPTION, AzureSandbox, sandbox_token
from moto_fixtures.sandbox import PlantedIncident

Acquire = Callable[..., tuple[Case, RunResult]]
Cli = Callable[..., "CliResult"]


class CliResult:
    """Exit code and combined output of one CLI run."""

    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = output


def open_case(root: Path) -> Case:
    """The case at ``root``, created when missing."""
    return Case.open(root) if (root / "case.json").exists() else Case.create(root)


@pytest.fixture
def acquire(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path) -> Acquire:
    """Acquire the planted VM into ``tmp_path/<name>`` and return (case, run result)."""

    def run(*, name: str = "case", raise_on_failure: bool = True, **options: object) -> tuple[Case, RunResult]:
        case = open_case(tmp_path / name)
        provider = azure_sandbox.provider()
        provider.bind(case)
        target = provider.find_target(azure_incident.target)
        plan = provider.plan_acquire(target, AcquireOptions(**options))  # type: ignore[arg-type]
        return case, run_plan(plan, case, raise_on_failure=raise_on_failure)

    return run


def contain(
    provider: Provider, incident: PlantedIncident, case: Case, *, raise_on_failure: bool = True, **options: object
) -> RunResult:
    """Run the containment plan of the planted VM into ``case``."""
    provider.bind(case)
    target = provider.find_target(incident.target)
    plan = provider.plan_contain(target, ContainOptions(**options))  # type: ignore[arg-type]
    return run_plan(plan, case, raise_on_failure=raise_on_failure)


@pytest.fixture
def cli(azure_sandbox: AzureSandbox) -> Cli:
    """Run ``cloudir <args>`` with the connection options that point at the fake."""

    def run(*args: str, connect: bool = True) -> CliResult:
        extra = [
            "--endpoint",
            azure_sandbox.fake.base_url,
            "--ca-bundle",
            azure_sandbox.fake.ca_file,
            "--token",
            sandbox_token(),
        ]
        if connect and args[0] != "logs":
            extra += ["--subscription", SUBSCRIPTION, "--polling-interval", "0"]
        elif connect:
            extra += ["--subscription", SUBSCRIPTION]
        result = CliRunner().invoke(app, [*args, *(extra if connect else [])], env={"COLUMNS": "300"})
        return CliResult(result.exit_code, result.output)

    return run
