"""Containment: deny-all firewall rules on a network tag, examiner range allowed first, then the tag."""

from __future__ import annotations

from cloudir.case import Case
from cloudir.plan import StepKind, run_plan
from cloudir.provider import ContainOptions, Target
from moto_fixtures.gcp import INSTANCE, NETWORK, PROJECT, ZONE, GcpSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider

EXAMINER = "198.51.100.7/32"


def test_contain_creates_rules_then_tags(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case, target: Target
) -> None:
    plan = provider.plan_contain(target, ContainOptions(examiner_cidr=EXAMINER))
    assert [(s.id, s.kind) for s in plan.steps] == [
        ("contain:firewall-rules", StepKind.CONTAIN),
        ("contain:tag-instance", StepKind.CONTAIN),
    ]
    assert any("cannot revoke credentials" in note for note in plan.notes)
    assert not gcp_sandbox.is_isolated(incident)
    assert run_plan(plan, case).ok

    project = gcp_sandbox.fake.project(PROJECT)
    tag = f"cloudir-isolate-{target.id}"
    assert tag in project.instances[ZONE][INSTANCE]["tags"]["items"]
    assert "http-server" in project.instances[ZONE][INSTANCE]["tags"]["items"]
    ours = {name: rule for name, rule in project.firewalls.items() if rule.get("targetTags") == [tag]}
    by_kind = {(r["direction"], "denied" in r): r for r in ours.values()}
    assert set(by_kind) == {("INGRESS", True), ("EGRESS", True), ("INGRESS", False), ("EGRESS", False)}
    assert by_kind[("INGRESS", True)]["sourceRanges"] == ["0.0.0.0/0"]
    assert by_kind[("EGRESS", True)]["destinationRanges"] == ["0.0.0.0/0"]
    assert by_kind[("INGRESS", False)]["sourceRanges"] == [EXAMINER]
    assert by_kind[("EGRESS", False)]["destinationRanges"] == [EXAMINER]
    assert all(r["network"] == NETWORK for r in ours.values())
    assert by_kind[("INGRESS", False)]["priority"] < by_kind[("INGRESS", True)]["priority"]
    assert gcp_sandbox.is_isolated(incident)


def test_contain_rerun_is_idempotent(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case, target: Target
) -> None:
    run_plan(provider.plan_contain(target, ContainOptions()), case)
    rules = dict(gcp_sandbox.fake.project(PROJECT).firewalls)
    (case.root / "state.json").unlink()
    again = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert again.results["contain:firewall-rules"]["created"] == []
    assert len(again.results["contain:firewall-rules"]["already_present"]) == 2
    assert again.results["contain:tag-instance"]["changed"] is False
    assert gcp_sandbox.fake.project(PROJECT).firewalls == rules
    assert gcp_sandbox.is_isolated(incident)
