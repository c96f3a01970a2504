"""Dry runs change nothing; an injected failure blocks later changes and a resumed run completes."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cloudir.case import Case
from cloudir.cli.common import render_plan
from cloudir.errors import StepFailedError
from cloudir.plan import run_plan
from cloudir.provider import AcquireOptions, ContainOptions, LogPullRequest, Target
from moto_fixtures.gcp import FORENSIC_PROJECT, INSTANCE, PROJECT, WINDOW_END, WINDOW_START, GcpSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider

OPTIONS = AcquireOptions(forensic_account=FORENSIC_PROJECT)


def test_dry_run_changes_nothing(gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident) -> None:
    before = gcp_sandbox.state()
    provider.bind(None)
    target = provider.find_target(incident.target)
    out = Console(file=io.StringIO(), width=200)
    for plan in (
        provider.plan_acquire(target, OPTIONS),
        provider.plan_contain(target, ContainOptions(examiner_cidr="198.51.100.7/32")),
        provider.plan_pull_logs(LogPullRequest(start=WINDOW_START, end=WINDOW_END)),
    ):
        render_plan(plan, out=out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    assert "compute:disks.createSnapshot (us-central1-a)" in text
    assert "compute:firewalls.insert" in text
    assert "logging:entries.list" in text
    assert gcp_sandbox.state() == before
    assert {r["method"] for r in gcp_sandbox.fake.requests} == {"GET"}


def test_failed_snapshot_blocks_later_changes_and_resume_completes(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case, target: Target
) -> None:
    with (
        gcp_sandbox.fail_next("snapshot", "FAILED_PRECONDITION"),
        pytest.raises(StepFailedError, match=r"step snapshot:.* failed"),
    ):
        run_plan(provider.plan_acquire(target, OPTIONS), case)
    runs = case.load_state()["runs"]
    steps = next(iter(runs.values()))["steps"]
    assert steps["preserve:deletion-protection"]["status"] == "done"
    assert steps["capture:metadata"]["status"] == "done"
    # the disks' lanes start at once: whichever snapshot the failure hit, its copy is blocked; the other disk's
    # steps ran if they started before the failure was known, and are blocked if not (none left half done)
    failed = [step for step, entry in steps.items() if entry["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0].startswith("snapshot:")
    disk = failed[0].removeprefix("snapshot:")
    other = next(name for name in (INSTANCE, f"{INSTANCE}-data") if name != disk)
    assert steps[f"copy:{disk}"]["status"] == "blocked"
    snapshotted, copied = (steps[f"{kind}:{other}"]["status"] == "done" for kind in ("snapshot", "copy"))
    assert {steps[f"{kind}:{other}"]["status"] for kind in ("snapshot", "copy")} <= {"done", "blocked"}
    assert snapshotted or not copied
    assert len(gcp_sandbox.snapshots_for_case(case.case_id)) == snapshotted + copied
    assert len(gcp_sandbox.fake.project(FORENSIC_PROJECT).images) == copied

    resumed = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert resumed.ok
    statuses = {o.step_id: o.status for o in resumed.outcomes}
    assert statuses["preserve:deletion-protection"] == "resumed"
    assert statuses[f"snapshot:{disk}"] == statuses[f"copy:{disk}"] == "done"
    assert len(gcp_sandbox.snapshots_for_case(case.case_id)) == 4
    assert len(gcp_sandbox.fake.project(PROJECT).snapshots) == 2


def test_failed_operation_is_reported_in_one_line(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case, target: Target
) -> None:
    with gcp_sandbox.fail_next("preserve", "PERMISSION_DENIED"), pytest.raises(StepFailedError) as caught:
        run_plan(provider.plan_acquire(target, OPTIONS), case)
    message = str(caught.value)
    assert "permission denied" in message
    assert "compute.instances.setDeletionProtection" in message
    assert "\n" not in message
    assert not gcp_sandbox.is_preserved(incident)
