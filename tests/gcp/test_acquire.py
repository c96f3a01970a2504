"""Acquisition against the fake Compute API: preserve, capture, snapshot, copy; custody and user agent."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.plan import StepKind, run_plan
from cloudir.provider import AcquireOptions, ContainOptions, LogPullRequest, Target, TargetKind, TargetQuery
from moto_fixtures.gcp import (
    ATTACKER_KEY_ID,
    FORENSIC_PROJECT,
    INSTANCE,
    MIG,
    PROJECT,
    REGION,
    REGIONAL_INSTANCE,
    REGIONAL_MIG,
    REGIONAL_ZONE,
    SERVICE_ACCOUNT,
    STARTUP_SCRIPT,
    ZONE,
    GcpSandbox,
)
from moto_fixtures.gcp_server import link
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider
from providers.gcp.provider import CASE_LABEL, label_value

OPTIONS = AcquireOptions(forensic_account=FORENSIC_PROJECT)


def _api_calls(case: Case) -> list[dict[str, object]]:
    return [call for record in read_records(case.root / "custody.jsonl") for call in record["api_calls"]]


def test_plan_steps_and_kinds(provider: GcpProvider, target: Target) -> None:
    plan = provider.plan_acquire(target, OPTIONS)
    assert [(s.id, s.kind) for s in plan.steps] == [
        ("preserve:abandon-from-group", StepKind.PRESERVE),
        ("preserve:deletion-protection", StepKind.PRESERVE),
        ("capture:metadata", StepKind.READ),
        (f"snapshot:{INSTANCE}", StepKind.ACQUIRE),
        (f"snapshot:{INSTANCE}-data", StepKind.ACQUIRE),
        (f"copy:{INSTANCE}", StepKind.ACQUIRE),
        (f"copy:{INSTANCE}-data", StepKind.ACQUIRE),
    ]
    assert plan.target == target.ref
    assert [s.id for s in provider.plan_acquire(target, OPTIONS).steps] == [s.id for s in plan.steps]


def test_acquire_preserves_snapshots_copies_and_captures(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case, target: Target
) -> None:
    result = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert result.ok
    fake = gcp_sandbox.fake
    project = fake.project(PROJECT)
    instance = project.instances[ZONE][INSTANCE]
    assert instance["deletionProtection"] is True
    igm = project.igms[ZONE][MIG]
    assert instance["selfLink"] not in igm["_managed"]
    assert igm["targetSize"] == 2
    assert gcp_sandbox.is_preserved(incident)

    case_label = label_value(case.case_id)
    snapshots = [s for s in project.snapshots.values() if s["labels"].get(CASE_LABEL) == case_label]
    assert sorted(s["sourceDisk"].rsplit("/", 1)[-1] for s in snapshots) == [INSTANCE, f"{INSTANCE}-data"]
    images = list(fake.project(FORENSIC_PROJECT).images.values())
    assert {i["sourceSnapshotId"] for i in images} == {s["id"] for s in snapshots}
    assert all(i["labels"][CASE_LABEL] == case_label for i in images)
    assert len(gcp_sandbox.snapshots_for_case(case.case_id)) == 4

    base = case.root / f"artifacts/gcp/{PROJECT}/{ZONE}/{INSTANCE}"
    summary = json.loads((base / "summary.json").read_text())
    assert summary["startup_script"] == STARTUP_SCRIPT
    assert summary["service_accounts"][0]["email"].startswith("web-frontend@")
    assert summary["labels"] == {"app": "web-frontend", "env": "prod"}
    rules = {r["name"] for r in json.loads((base / "firewall-rules.json").read_text())}
    assert rules == {"default-allow-internal", "allow-http", "allow-all-debug"}  # not allow-db-admin (tag db)
    assert json.loads((base / "instance.json").read_text())["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
    assert "203.0.113.66:4444" in (base / "serial-port-1.txt").read_text()
    keys = json.loads((base / f"service-accounts/{SERVICE_ACCOUNT}/keys.json").read_text())["keys"]
    assert any(key["name"].endswith(ATTACKER_KEY_ID) and key["keyType"] == "USER_MANAGED" for key in keys)
    assert (
        json.loads((base / f"service-accounts/{SERVICE_ACCOUNT}/account.json").read_text())["email"] == SERVICE_ACCOUNT
    )
    assert verify_case(case.root).ok


def test_every_request_is_in_custody_with_user_agent(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    run_plan(provider.plan_acquire(target, OPTIONS), case)
    wire = gcp_sandbox.fake.requests  # everything the fake received, target resolution included
    recorded = _api_calls(case)
    # the disks' lanes run at once, and each step's record is written when it ends: the same calls, in another order
    assert sorted(c["operation"] for c in recorded) == sorted(r["operation"] for r in wire)
    assert all(r["user_agent"].startswith("cloudir/") and f"case/{case.case_id}" in r["user_agent"] for r in wire)
    snapshot_calls = [c for c in recorded if c["operation"] == "disks.createSnapshot"]
    assert len(snapshot_calls) == 2
    assert all(c["region"] == ZONE and str(c["request_id"]).startswith("operation-") for c in snapshot_calls)
    assert {c["operation"] for c in recorded} >= {"zoneOperations.wait", "globalOperations.wait", "images.insert"}


def test_rerun_does_not_duplicate_snapshots_or_copies(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    run_plan(provider.plan_acquire(target, OPTIONS), case)
    first = gcp_sandbox.snapshots_for_case(case.case_id)
    (case.root / "state.json").unlink()  # forget the run: every step executes again
    rerun = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert gcp_sandbox.snapshots_for_case(case.case_id) == first
    assert all(rerun.results[f"snapshot:{d}"]["reused"] for d in (INSTANCE, f"{INSTANCE}-data"))
    assert all(rerun.results[f"copy:{d}"]["reused"] for d in (INSTANCE, f"{INSTANCE}-data"))
    assert rerun.results["preserve:abandon-from-group"]["abandoned"] is False


def test_without_forensic_project_no_copy_steps(gcp_sandbox: GcpSandbox, incident: PlantedIncident) -> None:
    provider = gcp_sandbox.gcp_provider(forensic_project=None)
    plan = provider.plan_acquire(provider.find_target(incident.target), AcquireOptions())
    assert not [s for s in plan.steps if s.id.startswith("copy:")]
    assert any("no forensic project" in note for note in plan.notes)


def test_each_step_makes_only_the_calls_it_planned(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case, target: Target
) -> None:
    plans = [provider.plan_acquire(target, OPTIONS), provider.plan_contain(target, ContainOptions())]
    plans.append(provider.plan_pull_logs(LogPullRequest(start=incident.window_start, end=incident.window_end)))
    for plan in plans:
        run_plan(plan, case)
    planned = {s.id: {(c.service, c.operation) for c in s.calls} for plan in plans for s in plan.steps}
    made: dict[str, set[tuple[str, str]]] = {}
    for record in read_records(case.root / "custody.jsonl"):
        step = record["details"].get("step")
        if step:
            made.setdefault(step, set()).update((c["service"], c["operation"]) for c in record["api_calls"])
    assert set(made) == set(planned)
    for step, calls in made.items():
        assert calls <= planned[step], step


def test_regional_group_member_is_abandoned(gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case) -> None:
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, REGIONAL_INSTANCE))
    assert target.details["managed_instance_group"] == {"scope": "regions", "location": REGION, "name": REGIONAL_MIG}
    result = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert result.results["preserve:abandon-from-group"]["abandoned"] is True
    project = gcp_sandbox.fake.project(PROJECT)
    instance = project.instances[REGIONAL_ZONE][REGIONAL_INSTANCE]
    assert instance["deletionProtection"] is True
    assert instance["selfLink"] not in project.igms[REGION][REGIONAL_MIG]["_managed"]
    operations = [c["operation"] for c in _api_calls(case)]
    assert "regionInstanceGroupManagers.abandonInstances" in operations
    assert "regionOperations.wait" in operations


def test_fake_refuses_deletion_protection_on_a_group_member_in_googles_error_format(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, target: Target
) -> None:
    request = compute_v1.SetDeletionProtectionInstanceRequest(
        project=PROJECT, zone=ZONE, resource=INSTANCE, deletion_protection=True
    )
    with pytest.raises(gexc.BadRequest, match="managed instance group"):
        provider.api.compute(compute_v1.InstancesClient).set_deletion_protection_unary(request=request)
    assert gcp_sandbox.fake.project(PROJECT).instances[ZONE][INSTANCE]["deletionProtection"] is False


def test_group_member_is_abandoned_before_deletion_protection(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    result = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert result.ok
    assert result.results["preserve:abandon-from-group"]["abandoned"] is True
    assert result.results["preserve:deletion-protection"]["deletion_protection"] is True
    operations = [c["operation"] for c in _api_calls(case)]
    assert operations.index("instanceGroupManagers.abandonInstances") < operations.index(
        "instances.setDeletionProtection"
    )


def test_refused_protection_of_a_group_member_is_recorded_and_snapshots_go_on(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    plan = provider.plan_acquire(target, OPTIONS)
    still_member = replace(plan, steps=[s for s in plan.steps if "abandon" not in s.id])
    result = run_plan(still_member, case)
    assert result.ok
    assert result.results["preserve:deletion-protection"]["deletion_protection"] is False
    assert "managed instance group" in result.results["preserve:deletion-protection"]["skipped"]
    assert len(gcp_sandbox.snapshots_for_case(case.case_id)) == 4  # two snapshots and their two copies


def test_refused_service_account_read_is_reported_not_fatal(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    gcp_sandbox.fake.inject("serviceAccounts.keys.list", "PERMISSION_DENIED")
    result = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert result.ok
    errors = result.results["capture:metadata"]["service_account_capture_errors"]
    assert list(errors) == [SERVICE_ACCOUNT]
    assert errors[SERVICE_ACCOUNT].startswith("403")
    outcomes = [(c["operation"], c["outcome"]) for c in _api_calls(case)]
    assert ("serviceAccounts.keys.list", "PERMISSION_DENIED") in outcomes


def test_snapshot_operation_takes_time_and_reports_progress(gcp_sandbox: GcpSandbox, provider: GcpProvider) -> None:
    gcp_sandbox.fake.long_operation_seconds = 0.5
    gcp_sandbox.fake.operation_wait_seconds = 120.0  # Compute's own deadline: this one wait lasts until DONE
    disks = provider.api.compute(compute_v1.DisksClient)
    op = disks.create_snapshot_unary(
        project=PROJECT, zone=ZONE, disk=INSTANCE, snapshot_resource=compute_v1.Snapshot(name="slow-snap")
    )
    assert op.status == compute_v1.Operation.Status.PENDING
    operations = provider.api.compute(compute_v1.ZoneOperationsClient)
    running = operations.get(project=PROJECT, zone=ZONE, operation=op.name)
    while running.status == compute_v1.Operation.Status.PENDING:
        running = operations.get(project=PROJECT, zone=ZONE, operation=op.name)
    assert running.status == compute_v1.Operation.Status.RUNNING
    assert 0 <= running.progress < 100
    assert running.start_time >= running.insert_time
    assert gcp_sandbox.fake.project(PROJECT).snapshots["slow-snap"]["status"] == "CREATING"
    image = compute_v1.Image(name="too-early", source_snapshot=link(PROJECT, "global", "snapshots", "slow-snap"))
    with pytest.raises(gexc.BadRequest, match="not ready"):
        provider.api.compute(compute_v1.ImagesClient).insert_unary(project=FORENSIC_PROJECT, image_resource=image)
    done = operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert done.status == compute_v1.Operation.Status.DONE
    assert done.progress == 100
    assert done.end_time >= done.start_time
    assert gcp_sandbox.fake.project(PROJECT).snapshots["slow-snap"]["status"] == "READY"


def test_operation_wait_answers_before_done_and_the_adapter_waits_again(
    gcp_sandbox: GcpSandbox, provider: GcpProvider
) -> None:
    """``zoneOperations.wait`` answers when the operation is DONE or near its 2-minute deadline, whichever first."""
    gcp_sandbox.fake.long_operation_seconds = 0.4
    gcp_sandbox.fake.operation_wait_seconds = 0.05  # the 2-minute deadline, scaled
    disks = provider.api.compute(compute_v1.DisksClient)
    op = disks.create_snapshot_unary(
        project=PROJECT, zone=ZONE, disk=INSTANCE, snapshot_resource=compute_v1.Snapshot(name="slower-snap")
    )
    first = provider.api.compute(compute_v1.ZoneOperationsClient).wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert first.status != compute_v1.Operation.Status.DONE  # an answer before the operation finished
    provider.api.wait(op, project=PROJECT, zone=ZONE)
    waits = [r for r in gcp_sandbox.fake.requests if r["operation"] == "zoneOperations.wait"]
    assert len(waits) >= 3
    assert gcp_sandbox.fake.project(PROJECT).snapshots["slower-snap"]["status"] == "READY"


def test_a_snapshot_or_copy_whose_answer_is_lost_is_sent_again_with_its_request_id_and_made_once(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    gcp_sandbox.lose_responses("disks.createSnapshot", 1)  # it ran: without a requestId the resend is a 409
    gcp_sandbox.lose_responses("images.insert", 1)
    gcp_sandbox.throttle("images.insert", 1)
    result = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert result.ok
    assert len(gcp_sandbox.snapshots_for_case(case.case_id)) == 4  # two snapshots, two copies: one each
    for operation in ("disks.createSnapshot", "images.insert"):
        sends = [r for r in gcp_sandbox.fake.requests if r["operation"] == operation]
        first = sends[0]["request_id"]
        assert first
        assert [r["request_id"] for r in sends].count(first) >= 2  # the resend carried the lost call's id
        assert len({r["request_id"] for r in sends}) == 2  # one id per disk
    outcomes = [c["outcome"] for c in _api_calls(case) if c["operation"] == "disks.createSnapshot"]
    assert outcomes.count("ConnectionError") == 1  # the lost answer is in custody too
    assert outcomes.count("ok") == 2


def test_a_change_with_a_request_id_that_is_not_a_uuid_is_refused(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident
) -> None:
    disks = provider.api.compute(compute_v1.DisksClient)
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(gexc.BadRequest, match="requestId"):
            disks.create_snapshot_unary(
                request=compute_v1.CreateSnapshotDiskRequest(
                    project=PROJECT, zone=ZONE, disk=INSTANCE, snapshot_resource={"name": "s"}, request_id=bad
                )
            )
    assert not gcp_sandbox.fake.project(PROJECT).snapshots


def test_the_plan_says_that_the_disks_are_not_consistent_with_each_other(provider: GcpProvider, target: Target) -> None:
    notes = provider.plan_acquire(target, OPTIONS).notes
    assert any("the 2 disks are snapshotted at the same time" in n and "not guaranteed" in n for n in notes)


def test_every_disk_is_snapshotted_and_copied_at_once_each_step_recording_its_own_calls(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    """Each disk's lane (its snapshot, then its image copy) runs beside the others': the second snapshot starts
    while the first one's operation still runs, and every call lands in the record of the step that made it."""
    gcp_sandbox.fake.long_operation_seconds = 0.5
    plan = provider.plan_acquire(target, OPTIONS)
    disks = [str(disk["name"]) for disk in target.details["disks"]]
    assert plan.alongside()[f"snapshot:{disks[0]}"] == [f"snapshot:{disks[1]}", f"copy:{disks[1]}"]
    run_plan(plan, case)
    wire = [r["operation"] for r in gcp_sandbox.fake.requests]
    started = [index for index, operation in enumerate(wire) if operation == "disks.createSnapshot"]
    first_ready = wire.index("snapshots.get")  # read once a snapshot's operation is DONE
    assert len(started) == 2
    assert started[1] < first_ready
    records = read_records(case.root / "custody.jsonl")
    records = records[next(i for i, r in enumerate(records) if r["action"] == "acquire.start") :]
    assert not [r for r in records if r["action"] == "api.call"]  # no call of the plan outside a step
    for disk in disks:
        snapshot = next(r for r in records if r["details"].get("step") == f"snapshot:{disk}")
        snapshot_calls = [c["operation"] for c in snapshot["api_calls"]]
        assert snapshot_calls.count("disks.createSnapshot") == 1
        assert "zoneOperations.wait" in snapshot_calls
        copy = next(r for r in records if r["details"].get("step") == f"copy:{disk}")
        copy_calls = [c["operation"] for c in copy["api_calls"]]
        assert copy_calls.count("images.insert") == 1
        assert "globalOperations.wait" in copy_calls
