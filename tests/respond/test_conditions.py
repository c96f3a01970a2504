"""Step conditions: severity and finding type gates, and "never contain production databases" by tags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from cloudir.case import Case
from cloudir.custody import read_records
from cloudir.plan import Plan, PlannedCall, Step, StepKind
from cloudir.playbook import build_response_plan, load_playbook
from cloudir.provider import AcquireOptions, Capability, ContainOptions, LogPullRequest, Target, TargetKind, TargetQuery
from cloudir.triggers import load_triggers
from tests.respond.conftest import DATA


class StubProvider:
    """A provider without a cloud: plans of named steps (the engine only composes them)."""

    cloud: ClassVar[str] = "aws"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def bind(self, case: Case | None) -> None:
        """Nothing to record."""

    def identity(self) -> str:
        return "stub"

    def home_account(self) -> str:
        return "123456789012"

    failures = 0  # how many more times the snapshot step fails

    def find_target(self, query: TargetQuery) -> Target:
        return _target({})

    def _plan(self, name: str, *steps: tuple[str, StepKind]) -> Plan:
        return Plan(name, "aws", "t", [Step(i, i, k, [PlannedCall("ec2", i)], lambda ctx: {}) for i, k in steps])

    def plan_acquire(self, target: Target, options: AcquireOptions) -> Plan:
        plan = self._plan("acquire", ("preserve", StepKind.PRESERVE), ("snapshot.create", StepKind.ACQUIRE))

        def snapshot(ctx: Any) -> dict[str, Any]:
            if StubProvider.failures:
                StubProvider.failures -= 1
                raise RuntimeError("snapshot quota exceeded")
            return {"snapshots": ["snap-1"]}

        plan.steps[1].run = snapshot
        return plan

    def plan_contain(self, target: Target, options: ContainOptions) -> Plan:
        return self._plan("contain", ("isolate", StepKind.CONTAIN))

    def plan_pull_logs(self, request: LogPullRequest) -> Plan:
        return self._plan("logs", ("lookup", StepKind.READ))

    def required_permissions(self) -> list[str]:
        return []


def _playbook(tmp_path: Path, approval: bool) -> Any:
    doc = {
        "id": "t",
        "title": "T",
        "containment": {"require_approval": approval},
        "steps": [
            {"id": "snap", "action": "snapshot"},
            {
                "id": "contain",
                "action": "contain",
                "when": {"min_severity": "medium", "unless_tags": {"env": ["production"], "role": ["database"]}},
            },
            {"id": "report", "action": "report"},
        ],
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_playbook(path)


def _target(tags: dict[str, str] | None) -> Target:
    details: dict[str, Any] = {} if tags is None else {"tags": tags}
    return Target("aws", TargetKind.INSTANCE, "i-1", "us-east-1", "123456789012", details=details)


@pytest.mark.parametrize(
    ("tags", "contained", "awaiting"),
    [
        ({"env": "production", "role": "database"}, False, False),  # never contain production databases
        ({"env": "production", "role": "web"}, True, False),
        ({"env": "staging", "role": "database"}, True, False),
        (None, False, True),  # tags unknown: the condition cannot be checked, so a responder must approve
    ],
)
def test_tag_condition(tmp_path: Path, tags: dict[str, str] | None, contained: bool, awaiting: bool) -> None:
    trigger = load_triggers(DATA / "guardduty_iam_access_key.json")[0]  # carries no instance tags
    response = build_response_plan(_playbook(tmp_path, False), trigger, StubProvider(), _target(tags), approved=False)
    ids = [step.id for step in response.plan.steps]
    assert ("contain.isolate" in ids) is contained
    assert response.awaiting_approval is awaiting
    assert ids[0] == "snap.snapshot.create"
    assert ids[-1] == "report.run1"


def test_severity_gate_and_approval(tmp_path: Path) -> None:
    trigger = load_triggers(DATA / "defender_workflow_automation.json")[0]  # medium
    low = type(trigger)(**{**trigger.__dict__, "severity": "low"})
    response = build_response_plan(_playbook(tmp_path, True), low, StubProvider(), _target({}), approved=True)
    assert response.skipped == [("contain", "severity low is below medium")]
    held = build_response_plan(_playbook(tmp_path, True), trigger, StubProvider(), _target({}), approved=False)
    assert [s.id for s in held.plan.steps if s.kind is StepKind.CONTAIN] == []
    assert "contain.awaiting-approval" in [s.id for s in held.plan.steps]
    approved = build_response_plan(_playbook(tmp_path, True), trigger, StubProvider(), _target({}), approved=True)
    assert [s.id for s in approved.plan.steps if s.kind is StepKind.CONTAIN] == ["contain.isolate"]


def test_serverless_delivery_failure_is_retried_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudir.errors import StepFailedError
    from cloudir.serverless.aws_lambda import handler

    books = tmp_path / "books"
    books.mkdir()
    (books / "t.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "t",
                "title": "T",
                "steps": [{"id": "snap", "action": "snapshot"}, {"id": "report", "action": "report"}],
            }
        )
    )
    monkeypatch.setenv("CLOUDIR_PLAYBOOKS", str(books))
    monkeypatch.setenv("CLOUDIR_CASE_ROOT", str(tmp_path / "cases"))
    event = json.loads((DATA / "guardduty_ec2_eventbridge.json").read_text())
    StubProvider.failures = 1
    with pytest.raises(StepFailedError, match="snapshot quota exceeded"):
        handler(event, None, provider_factory=lambda trigger: StubProvider())
    [outcome] = handler(event, None, provider_factory=lambda trigger: StubProvider())["outcomes"]  # the retry
    assert outcome["status"] == "completed"
    records = read_records(Path(outcome["case_dir"]) / "custody.jsonl")
    assert [r["details"].get("step") for r in records if r["action"] == "playbook:t.acquire"] == [
        "snap.snapshot.create",
        "snap.snapshot.create",
    ]
    assert [r["outcome"] for r in records if r["action"] == "playbook:t.acquire"] == ["failed", "ok"]
