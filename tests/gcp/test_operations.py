"""Compute's long-running operations and rate quotas, as the adapter meets them through the fake.

Every change is an operation that makes its change only when DONE, after several ``*Operations.wait`` answers;
every Compute method counts against a per-minute rate quota group and is refused with 403 rateLimitExceeded
over it. The adapter must wait for DONE before it reads or builds on a result, and resend a refused call.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import requests
from google.cloud import compute_v1

from cloudir.case import Case
from cloudir.custody import read_records
from cloudir.errors import CloudirError
from cloudir.plan import run_plan
from cloudir.provider import AcquireOptions, ContainOptions, Target
from moto_fixtures.gcp import FORENSIC_PROJECT, INSTANCE, MIG, PROJECT, ZONE, GcpSandbox
from moto_fixtures.gcp_server import COMPUTE_PREFIX, quota_group
from providers.gcp import GcpProvider, create_provider

OPTIONS = AcquireOptions(forensic_account=FORENSIC_PROJECT)


def _api_calls(case: Case) -> list[dict[str, object]]:
    return [call for record in read_records(case.root / "custody.jsonl") for call in record["api_calls"]]


def test_every_change_takes_several_polls_and_the_adapter_builds_only_on_done(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target
) -> None:
    fake = gcp_sandbox.fake
    fake.operation_min_polls = 3  # whatever the machine's load: each operation answers RUNNING twice first
    acquired = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert acquired.ok
    contained = run_plan(provider.plan_contain(target, ContainOptions(examiner_cidr="203.0.113.0/28")), case)
    assert contained.ok

    operations = {**fake.project(PROJECT).operations, **fake.project(FORENSIC_PROJECT).operations}
    kinds = {op["operationType"] for op in operations.values()}
    assert {"createSnapshot", "insert", "setTags", "setDeletionProtection"} <= kinds
    assert "compute.instanceGroupManagers.abandonInstances" in kinds
    polls_in_custody = [c["request_id"] for c in _api_calls(case) if str(c["operation"]).endswith("Operations.wait")]
    for name, op in operations.items():
        assert op["status"] == "DONE"
        polls = [r for r in fake.requests if r["path"].endswith(f"/operations/{name}/wait")]
        assert len(polls) >= 3, (op["operationType"], len(polls))  # it answered before DONE twice
        assert polls_in_custody.count(name) == len(polls)  # each poll is in custody, named by its operation
    # What the adapter built on each result was there only at DONE: a READY snapshot with its size, a copy made
    # from a READY snapshot (the fake refuses one that is not), the rules and the tag in place.
    snapshots = [result for step, result in acquired.results.items() if step.startswith("snapshot:")]
    assert len(snapshots) == 2
    assert all(result["storage_bytes"] > 0 for result in snapshots)
    instance = fake.project(PROJECT).instances[ZONE][INSTANCE]
    assert instance["selfLink"] not in fake.project(PROJECT).igms[ZONE][MIG]["_managed"]
    assert instance["deletionProtection"] is True
    assert contained.results["contain:tag-instance"]["tag"] in instance["tags"]["items"]
    assert set(contained.results["contain:firewall-rules"]["created"]) <= set(fake.project(PROJECT).firewalls)


def test_a_snapshot_still_creating_from_a_stopped_run_is_waited_for_on_resume(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, case: Case, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcp_sandbox.fake.long_operation_seconds = 0.5
    wait = provider.api.wait

    def stopped(operation: compute_v1.Operation, **kwargs: Any) -> None:
        if operation.operation_type == "createSnapshot":
            raise CloudirError("the run stopped while the snapshot's operation ran")
        wait(operation, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(provider.api, "wait", stopped)
        first = run_plan(provider.plan_acquire(target, OPTIONS), case, raise_on_failure=False)
    assert not first.ok
    assert next(iter(gcp_sandbox.fake.project(PROJECT).snapshots.values()))["status"] == "CREATING"
    resumed = run_plan(provider.plan_acquire(target, OPTIONS), case)
    assert resumed.ok
    reused = resumed.results[f"snapshot:{INSTANCE}"]
    assert reused["reused"] is True
    assert reused["storage_bytes"] > 0  # read once READY, not while CREATING
    assert resumed.results[f"copy:{INSTANCE}"]["reused"] is False  # its copy was refused had it not been READY


def test_rate_quota_refusals_are_resent_with_backoff_and_kept_in_custody(
    gcp_sandbox: GcpSandbox, case: Case, target: Target, slept: list[float]
) -> None:
    fake = gcp_sandbox.fake
    # the two disks' lanes poll at once: two operation reads a minute, each operation polled twice, is over the quota
    fake.compute_rate_quotas |= {"Read requests": 2, "Operation read requests": 2}
    fake.operation_min_polls = 2
    provider = gcp_sandbox.gcp_provider(
        api_backoff=inspect.signature(create_provider).parameters["api_backoff"].default
    )
    provider.bind(case)
    assert run_plan(provider.plan_acquire(target, OPTIONS), case).ok
    calls = _api_calls(case)
    refused = [c for c in calls if c["outcome"] == "rateLimitExceeded"]
    assert all(c["http_status"] == 403 for c in refused)
    groups = {quota_group(str(c["operation"])) for c in refused}
    assert {"Read requests", "Operation read requests"} <= groups  # changes: the next test
    for index, call in enumerate(calls):  # each refusal is followed by the same call answered
        if call["outcome"] == "rateLimitExceeded":
            assert any(c["outcome"] == "ok" for c in calls[index + 1 :] if c["operation"] == call["operation"])
    assert max(slept) <= 60  # the doubling backoff never waits more than the quota's minute
    assert len(fake.project(FORENSIC_PROJECT).images) == 2  # and the acquisition finished


def test_a_quota_that_never_refills_stops_the_step_with_a_plain_reason(
    gcp_sandbox: GcpSandbox, case: Case, target: Target, slept: list[float]
) -> None:
    gcp_sandbox.fake.compute_rate_quotas["Queries"] = 0  # every change refused
    provider = gcp_sandbox.gcp_provider(api_backoff=1.0)
    provider.bind(case)
    result = run_plan(provider.plan_acquire(target, OPTIONS), case, raise_on_failure=False)
    assert not result.ok
    assert slept == [1, 2, 4, 8, 16, 32, 60]  # about two minutes, then it gives up
    changes = [c for c in _api_calls(case) if c["operation"] == "instanceGroupManagers.abandonInstances"]
    assert [c["outcome"] for c in changes] == ["rateLimitExceeded"] * 8
    failed = next(o for o in result.outcomes if o.status == "failed")
    assert "rate quota still refused the call after 8 tries" in str(failed.error)
    assert gcp_sandbox.fake.project(PROJECT).snapshots == {}  # nothing after the failed step ran


def test_a_new_clock_counts_no_request_of_the_old_one(gcp_sandbox: GcpSandbox) -> None:
    """A test's clock reading 1,000 s starts a new time base: what was sent when the machine had been up 1,000 s
    (the fixtures' requests, counted by ``time.monotonic``) does not use up its quota."""
    fake = gcp_sandbox.fake
    fake.compute_rate_quotas["List requests"] = 1
    url = f"{gcp_sandbox.server.endpoint}{COMPUTE_PREFIX}{PROJECT}/zones/{ZONE}/instances"  # type: ignore[union-attr]
    fake.clock = lambda: 1000.0
    assert requests.get(url, timeout=10).ok
    fake.clock = lambda: 1000.0  # the same reading, another clock
    assert requests.get(url, timeout=10).ok


def test_rate_quota_refusal_is_in_computes_error_format(gcp_sandbox: GcpSandbox, target: Target) -> None:
    fake = gcp_sandbox.fake
    fake.compute_rate_quotas["List requests"] = 1
    fake.clock = lambda: 1000.0  # one interval
    url = f"{gcp_sandbox.server.endpoint}{COMPUTE_PREFIX}{PROJECT}/zones/{ZONE}/instances"  # type: ignore[union-attr]
    assert requests.get(url, timeout=10).ok
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert error["errors"] == [{"message": error["message"], "domain": "usageLimits", "reason": "rateLimitExceeded"}]
    assert "quota metric 'List requests' and limit 'List requests per minute'" in error["message"]
    fake.clock = lambda: 1060.0  # the next synchronized minute: the quota refilled
    assert requests.get(url, timeout=10).ok
    assert quota_group("zoneOperations.wait") == "Operation read requests"
    assert quota_group("instances.aggregatedList") == "Heavy-weight read requests"
    assert quota_group("disks.createSnapshot") == "Queries"
