"""The contract every cloud provider passes, run against each available sandbox (Sandbox + Provider protocols only)."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudir.case import Case
from cloudir.errors import CapabilityNotSupportedError
from cloudir.plan import StepKind, run_plan
from cloudir.provider import (
    AcquireOptions,
    Capability,
    ContainOptions,
    LogPullRequest,
    Provider,
    Target,
    TargetKind,
    TargetQuery,
    require,
)
from moto_fixtures.sandbox import PlantedIncident, Sandbox, available_sandboxes, open_sandbox

CLOUDS = sorted(available_sandboxes())


@pytest.fixture(params=CLOUDS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with open_sandbox(request.param) as running:
        yield running


@pytest.fixture
def incident(sandbox: Sandbox) -> PlantedIncident:
    return sandbox.plant_incident()


def _bound(sandbox: Sandbox, case: Case) -> Provider:
    provider = sandbox.provider()
    assert isinstance(provider, Provider)
    provider.bind(case)
    return provider


def _options(incident: PlantedIncident, provider: Provider) -> AcquireOptions:
    if Capability.COPY not in provider.capabilities:
        return AcquireOptions()
    return AcquireOptions(forensic_account=incident.forensic_account, encryption_key=incident.encryption_key)


def test_finds_the_target_by_id_and_every_alternate(sandbox: Sandbox, incident: PlantedIncident):
    provider = sandbox.provider()
    provider.bind(None)
    target = provider.find_target(incident.target)
    assert target.cloud == sandbox.cloud
    assert target.ref
    for query in incident.alternate_targets:
        assert provider.find_target(query).ref == target.ref, query.value


def _id_pattern(offline_id: str) -> re.Pattern[str]:
    """An offline step id as a pattern: each ``<placeholder>`` (e.g. ``snapshot-data-lun<n>``) stands for any text."""
    parts = re.split(r"(<[^>]*>)", offline_id)
    return re.compile("".join(".+" if part.startswith("<") else re.escape(part) for part in parts))


def test_offline_plans_list_every_step_and_call_of_the_resolved_plans(sandbox: Sandbox, incident: PlantedIncident):
    """A plan for the target as a finding names it (unresolved) covers the resolved plan, step by step.

    Offline plans are a documented superset: per step the same or more operations (placeholders stand for every
    item), and the steps the resolved plan lacks are all conditional ("if ..." / "for each ...").
    """
    provider = sandbox.provider()
    provider.bind(None)
    resolved = provider.find_target(incident.target)
    assert isinstance(resolved.details["tags"], dict)  # what playbook tag conditions check
    symbolic = Target(
        resolved.cloud,
        resolved.kind,
        incident.target.value,
        resolved.location,
        resolved.account,
        None,
        {"symbolic": True},
    )
    options = _options(incident, provider)
    builders = [lambda t: provider.plan_acquire(t, options)]
    if Capability.ISOLATE in provider.capabilities:
        builders.append(lambda t: provider.plan_contain(t, ContainOptions(examiner_cidr="198.51.100.7/32")))
    for build in builders:
        real, offline = build(resolved), build(symbolic)
        assert offline.symbolic
        assert not real.symbolic
        matched = set()
        for step in real.steps:
            twins = [s for s in offline.steps if _id_pattern(s.id).fullmatch(step.id)]
            assert len(twins) == 1, (step.id, [s.id for s in offline.steps])
            twin = twins[0]
            matched.add(twin.id)
            assert twin.kind == step.kind, step.id
            operations = {(c.service, c.operation) for c in step.calls}
            assert operations <= {(c.service, c.operation) for c in twin.calls}, step.id
        extra = [s.title for s in offline.steps if s.id not in matched]
        assert all(title.startswith(("if ", "for each ")) for title in extra), extra


def test_acquire_preserves_snapshots_every_disk_and_copies(sandbox: Sandbox, incident: PlantedIncident, tmp_path: Path):
    case = Case.create(tmp_path / "case")
    provider = _bound(sandbox, case)
    target = provider.find_target(incident.target)
    plan = provider.plan_acquire(target, _options(incident, provider))
    kinds = [step.kind for step in plan.steps]
    assert StepKind.PRESERVE in kinds
    assert StepKind.ACQUIRE in kinds
    assert kinds.index(StepKind.PRESERVE) < kinds.index(StepKind.ACQUIRE)
    assert all(step.calls for step in plan.steps)
    result = run_plan(plan, case)
    assert result.ok
    assert sandbox.is_preserved(incident)
    assert len(sandbox.snapshots_for_case(case.case_id)) >= 1
    written = [p for p in case.root.rglob("*") if p.is_file() and p.name not in {"custody.jsonl", "state.json"}]
    assert len(written) > 1


def test_contain_isolates_after_acquisition(sandbox: Sandbox, incident: PlantedIncident, tmp_path: Path):
    provider = sandbox.provider()
    require(provider, Capability.ISOLATE)
    case = Case.create(tmp_path / "case")
    provider = _bound(sandbox, case)
    target = provider.find_target(incident.target)
    run_plan(provider.plan_acquire(target, AcquireOptions()), case)
    assert not sandbox.is_isolated(incident)
    assert run_plan(provider.plan_contain(target, ContainOptions()), case).ok
    assert sandbox.is_isolated(incident)


def test_pull_logs_writes_raw_pages(sandbox: Sandbox, incident: PlantedIncident, tmp_path: Path):
    provider = sandbox.provider()
    if Capability.PULL_LOGS not in provider.capabilities:
        with pytest.raises(CapabilityNotSupportedError):
            provider.plan_pull_logs(LogPullRequest(start=incident.window_start, end=incident.window_end))
        return
    case = Case.create(tmp_path / "case")
    provider = _bound(sandbox, case)
    request = LogPullRequest(start=incident.window_start, end=incident.window_end)
    assert run_plan(provider.plan_pull_logs(request), case).ok
    assert any(p.is_file() for p in (case.root / "logs").rglob("*"))


def test_dry_run_changes_nothing(sandbox: Sandbox, incident: PlantedIncident):
    before = sandbox.state()
    provider = sandbox.provider()
    provider.bind(None)
    target = provider.find_target(incident.target)
    acquire = provider.plan_acquire(target, _options(incident, provider))
    contain = provider.plan_contain(target, ContainOptions())
    assert all(step.calls for step in [*acquire.steps, *contain.steps])
    assert sandbox.state() == before


def test_resume_after_an_injected_failure_makes_no_duplicates(
    sandbox: Sandbox, incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "case")
    provider = _bound(sandbox, case)
    target = provider.find_target(incident.target)
    options = AcquireOptions()
    plan = provider.plan_acquire(target, options)
    # the last call of the first acquisition step: by then that step has usually created something already
    first_acquire = next(s for s in plan.steps if s.kind is StepKind.ACQUIRE)
    with sandbox.fail_next(first_acquire.calls[-1].operation):
        first = run_plan(plan, case, raise_on_failure=False)
    assert not first.ok
    resumed = run_plan(provider.plan_acquire(target, options), Case.open(case.root))
    assert resumed.ok
    once = sandbox.snapshots_for_case(case.case_id)
    fresh = Case.create(tmp_path / "fresh")
    run_plan(_bound(sandbox, fresh).plan_acquire(target, options), fresh)
    assert len(once) == len(sandbox.snapshots_for_case(fresh.case_id))


def test_missing_capabilities_raise(sandbox: Sandbox):
    provider = sandbox.provider()
    for capability in set(Capability) - set(provider.capabilities):
        with pytest.raises(CapabilityNotSupportedError):
            require(provider, capability)
    assert provider.required_permissions()


def test_declares_what_it_can_do_to_each_kind_of_target_and_refuses_the_rest(sandbox: Sandbox):
    provider = sandbox.provider()
    assert TargetKind.INSTANCE in provider.targets
    for kind, capabilities in provider.targets.items():
        assert capabilities <= provider.capabilities, kind
    for kind in set(TargetKind) - set(provider.targets):
        with pytest.raises(CapabilityNotSupportedError, match=f"cannot handle targets of kind '{kind.value}'"):
            provider.find_target(TargetQuery(kind, "x"))
