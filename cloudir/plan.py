"""Plans and the step runner shared by acquisition, containment, log pulls and playbooks.

A plan is an ordered list of steps, each declaring the cloud calls it will make, so that a dry run
prints exactly what would happen. The runner records every step in the custody log, keeps a
resumable run state in the case, and once a step fails it runs no later step that changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich.console import Console

from cloudir.case import Case
from cloudir.errors import PreconditionError, StepFailedError


class StepKind(StrEnum):
    """What a step does to the cloud; decides what may still run after a failure."""

    READ = "read"  # describe / capture / download: never changes the cloud
    PRESERVE = "preserve"  # protection flags and locks
    ACQUIRE = "acquire"  # snapshots, copies, images
    CONTAIN = "contain"  # isolation and credential revocation: disruptive


@dataclass(frozen=True)
class PlannedCall:
    """A cloud API call a step will make (what a dry run prints)."""

    service: str
    operation: str
    region: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One-line human form, e.g. ``ec2:CreateSnapshots (us-east-1) InstanceSpecification=…``."""
        where = f" ({self.region})" if self.region else ""
        args = " ".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.service}:{self.operation}{where}" + (f" {args}" if args else "")


@dataclass
class StepContext:
    """What a running step can see: the case, earlier steps' results, and a console for progress."""

    case: Case
    results: dict[str, dict[str, Any]]
    console: Console


StepFunc = Callable[[StepContext], dict[str, Any] | None]


@dataclass
class Step:
    """One unit of work; ``id`` must be stable across runs so that resume can match it."""

    id: str
    title: str
    kind: StepKind
    calls: list[PlannedCall]
    run: StepFunc


@dataclass
class Plan:
    """An ordered set of steps against one target."""

    name: str  # "acquire", "contain", "logs", "playbook:<id>"
    cloud: str
    target: str
    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    symbolic: bool = False  # built offline for an unresolved target: listed, never run

    @property
    def key(self) -> str:
        """The run-state key of this plan in a case."""
        return f"{self.name}:{self.cloud}:{self.target}"


@dataclass
class StepOutcome:
    """How a step ended in one run."""

    step_id: str
    title: str
    status: str  # done | resumed | failed | blocked
    error: str | None = None


@dataclass
class RunResult:
    """Outcome of running a plan."""

    plan: Plan
    outcomes: list[StepOutcome]
    results: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        """True when every step finished."""
        return all(outcome.status in {"done", "resumed"} for outcome in self.outcomes)

    @property
    def failed(self) -> StepOutcome | None:
        """The step that failed, if any."""
        return next((o for o in self.outcomes if o.status == "failed"), None)


StepObserver = Callable[[Step, str], None]
OFFLINE_HINT = "resolve the target first: run without --dry-run, or plan with --resolve"


def offline_plan(plan: Plan, conditions: dict[str, str] | None = None) -> Plan:
    """``plan`` as built for an unresolved (symbolic) target: every step refuses to run, and so does the runner.

    ``conditions`` maps step ids to when the step exists (e.g. "if the instance is in an Auto Scaling group"),
    for steps that depend on the target's state; they are shown in front of the step's title.
    """

    def refusing(step: Step) -> Step:
        def run(ctx: StepContext) -> dict[str, Any]:
            raise PreconditionError(f"step {step.id} was planned offline for an unresolved target", hint=OFFLINE_HINT)

        condition = (conditions or {}).get(step.id)
        return Step(step.id, f"{condition}: {step.title}" if condition else step.title, step.kind, step.calls, run)

    return Plan(plan.name, plan.cloud, plan.target, [refusing(s) for s in plan.steps], plan.notes, symbolic=True)


def run_plan(
    plan: Plan,
    case: Case,
    *,
    console: Console | None = None,
    observer: StepObserver | None = None,
    raise_on_failure: bool = True,
) -> RunResult:
    """Run a plan step by step, resuming after the steps a previous run finished.

    After a failure only READ steps still run; every other later step is recorded as blocked.
    """
    if plan.symbolic:
        raise PreconditionError(
            f"plan {plan.name} for {plan.target} was built offline for an unresolved target and cannot run",
            hint=OFFLINE_HINT,
        )
    console = console or Console(stderr=True, quiet=True)
    state = case.load_state()
    run_state = state.setdefault("runs", {}).setdefault(plan.key, {"steps": {}})
    steps_state: dict[str, Any] = run_state["steps"]
    results: dict[str, dict[str, Any]] = {}
    outcomes: list[StepOutcome] = []
    failure: StepOutcome | None = None
    ctx = StepContext(case=case, results=results, console=console)
    resumed = any(entry.get("status") == "done" for entry in steps_state.values())
    case.custody.append(
        f"{plan.name}.start",
        target=plan.target,
        details={"cloud": plan.cloud, "steps": [s.id for s in plan.steps], "resume": resumed},
    )
    for step in plan.steps:
        previous = steps_state.get(step.id, {})
        if previous.get("status") == "done":
            results[step.id] = previous.get("result", {})
            outcomes.append(StepOutcome(step.id, step.title, "resumed"))
            _notify(observer, step, "resumed")
            continue
        if failure is not None and step.kind is not StepKind.READ:
            steps_state[step.id] = {"status": "blocked", "blocked_by": failure.step_id}
            outcomes.append(StepOutcome(step.id, step.title, "blocked", f"blocked by failed step {failure.step_id}"))
            case.custody.append(
                f"{plan.name}.{step.kind}.blocked",
                target=plan.target,
                outcome="blocked",
                details={"step": step.id, "blocked_by": failure.step_id},
            )
            _notify(observer, step, "blocked")
            continue
        _notify(observer, step, "running")
        try:
            with case.action(f"{plan.name}.{step.kind}", target=plan.target, step=step.id, title=step.title) as act:
                result = step.run(ctx) or {}
                act.details["result"] = result
        except Exception as exc:  # noqa: BLE001 - every failure must be recorded and must stop later changes
            outcome = StepOutcome(step.id, step.title, "failed", str(exc) or type(exc).__name__)
            steps_state[step.id] = {"status": "failed", "error": outcome.error}
            failure = failure or outcome
            outcomes.append(outcome)
            _notify(observer, step, "failed")
        else:
            results[step.id] = result
            steps_state[step.id] = {"status": "done", "result": result}
            outcomes.append(StepOutcome(step.id, step.title, "done"))
            _notify(observer, step, "done")
        case.save_state(state)
    run_state["status"] = "failed" if failure else "completed"
    case.save_state(state)
    case.custody.append(
        f"{plan.name}.{'failed' if failure else 'completed'}",
        target=plan.target,
        outcome="failed" if failure else "ok",
        details={"cloud": plan.cloud, "failed_step": failure.step_id if failure else None},
        error=failure.error if failure else None,
    )
    run = RunResult(plan, outcomes, results)
    if failure is not None and raise_on_failure:
        raise StepFailedError(
            f"step {failure.step_id} failed: {failure.error}",
            hint="later changes were not made; fix the cause and re-run with --resume",
        )
    return run


def _notify(observer: StepObserver | None, step: Step, status: str) -> None:
    if observer is not None:
        observer(step, status)


def require_completed(case: Case, plan_name: str, target: str, *, force: bool) -> None:
    """Refuse to go on unless ``plan_name`` completed for ``target`` (``force`` overrides, and is logged)."""
    if target in case.completed_targets(plan_name):
        return
    if force:
        case.custody.append(
            "precondition.overridden", target=target, details={"required": f"{plan_name}.completed", "force": True}
        )
        return
    raise PreconditionError(
        f"no completed {plan_name} of {target} in case {case.case_id}",
        hint=f"run '{plan_name}' for this target into the same --case first, or pass --force",
    )
