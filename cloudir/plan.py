"""Plans and the step runner shared by acquisition, containment, log pulls and playbooks.

A plan is an ordered list of steps, each declaring the cloud calls it will make, so that a dry run
prints exactly what would happen. The runner records every step in the custody log, keeps a
resumable run state in the case, and once a step fails it runs no later step that changes anything.
Consecutive steps that name a lane run concurrently with the other lanes of that stretch, each lane's
steps in plan order (e.g. a raw image alongside the copies and shares of the same snapshots).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich.console import Console

from cloudir.case import Case, in_actions
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
    # Steps next to each other that name a lane run alongside the other lanes there, in plan order within their own;
    # a step without one starts after every earlier step ended, and later steps start after it.
    lane: str | None = None


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

    def alongside(self) -> dict[str, list[str]]:
        """Each step's id and the ids of the steps of other lanes that may run at the same time (a dry run shows it)."""
        return {
            step.id: [other.id for other_lane in stretch if other_lane is not lane for other in other_lane]
            for stretch in _stretches(self.steps)
            for lane in stretch
            for step in lane
        }


@dataclass
class StepOutcome:
    """How a step ended in one run."""

    step_id: str
    title: str
    status: str  # done | resumed | failed | blocked | interrupted
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
        title = f"{condition}: {step.title}" if condition else step.title
        return Step(step.id, title, step.kind, step.calls, run, step.lane)

    return Plan(plan.name, plan.cloud, plan.target, [refusing(s) for s in plan.steps], plan.notes, symbolic=True)


def run_plan(
    plan: Plan,
    case: Case,
    *,
    console: Console | None = None,
    observer: StepObserver | None = None,
    raise_on_failure: bool = True,
) -> RunResult:
    """Run a plan step by step (lanes at once, see :class:`Step`), resuming after the steps a previous run finished.

    After a failure only READ steps still start; every other later step is recorded as blocked, while steps already
    running in other lanes finish and are recorded.
    """
    if plan.symbolic:
        raise PreconditionError(
            f"plan {plan.name} for {plan.target} was built offline for an unresolved target and cannot run",
            hint=OFFLINE_HINT,
        )
    console = console or Console(stderr=True, quiet=True)
    runner = _Runner(plan, case, console, observer)
    case.custody.append(
        f"{plan.name}.start",
        target=plan.target,
        details={"cloud": plan.cloud, "steps": [s.id for s in plan.steps], "resume": runner.resumed},
    )
    for stretch in _stretches(plan.steps):
        runner.run_lanes(stretch)
    failure = runner.failure
    runner.run_state["status"] = "failed" if failure else "completed"
    case.save_state(runner.state)
    case.custody.append(
        f"{plan.name}.{'failed' if failure else 'completed'}",
        target=plan.target,
        outcome="failed" if failure else "ok",
        details={"cloud": plan.cloud, "failed_step": failure.step_id if failure else None},
        error=failure.error if failure else None,
    )
    order = {step.id: index for index, step in enumerate(plan.steps)}
    outcomes = sorted(runner.outcomes, key=lambda outcome: order[outcome.step_id])
    run = RunResult(plan, outcomes, runner.results)
    if failure is not None and raise_on_failure:
        raise StepFailedError(
            f"step {failure.step_id} failed: {failure.error}",
            hint="later changes were not made; fix the cause and re-run with --resume",
        )
    return run


def _stretches(steps: list[Step]) -> list[list[list[Step]]]:
    """The plan's steps as stretches run one after another, each a list of lanes run at once (a step without a lane
    is a stretch of one lane of one step)."""
    stretches: list[list[list[Step]]] = []
    lanes: dict[str, list[Step]] = {}
    for step in steps:
        if step.lane is None:
            if lanes:
                stretches.append(list(lanes.values()))
                lanes = {}
            stretches.append([[step]])
        else:
            lanes.setdefault(step.lane, []).append(step)
    if lanes:
        stretches.append(list(lanes.values()))
    return stretches


class _Runner:
    """One run of a plan: its results, outcomes and run state, shared by the lanes under one lock."""

    def __init__(self, plan: Plan, case: Case, console: Console, observer: StepObserver | None) -> None:
        self.plan, self.case, self._observer = plan, case, observer
        self.state = case.load_state()
        self.run_state: dict[str, Any] = self.state.setdefault("runs", {}).setdefault(plan.key, {"steps": {}})
        self.steps_state: dict[str, Any] = self.run_state["steps"]
        self.resumed = any(entry.get("status") == "done" for entry in self.steps_state.values())
        self.results: dict[str, dict[str, Any]] = {}
        self.outcomes: list[StepOutcome] = []
        self.failure: StepOutcome | None = None
        self._ctx = StepContext(case=case, results=self.results, console=console)
        self._lock = threading.Lock()  # state, results, outcomes and the failure; held while saving the state
        self._notifying = threading.Lock()  # one observer call at a time
        self._aborted = False  # an observer raised (e.g. no time left in the invocation): start no more steps
        self._running: dict[str, Step] = {}  # the steps started and not yet ended, by id
        self._interrupted = False  # Ctrl-C: the running steps are recorded as interrupted, nothing more is recorded

    def run_lanes(self, lanes: list[list[Step]]) -> None:
        """Run each lane's steps in order, every lane at once (one lane: in this thread); the first exception that
        escaped a lane (an observer's) is raised once every lane ended.

        On Ctrl-C no further step starts, every running step is recorded as interrupted (in custody and the run
        state, so that ``--resume`` runs it again) and the interrupt is raised at once: the lanes run in daemon
        threads, so the command does not wait for a long copy still running in one of them."""
        try:
            if len(lanes) == 1:
                self._run_lane(lanes[0])
                return
            escaped: list[BaseException] = []
            threads = [
                threading.Thread(
                    target=in_actions(self._run_lane),
                    args=(lane, escaped),
                    name=f"{self.plan.name}-lane-{index}",
                    daemon=True,
                )
                for index, lane in enumerate(lanes)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.1)  # a bounded wait: Ctrl-C reaches this thread between two
            if escaped:
                raise escaped[0]
        except KeyboardInterrupt:
            self._interrupt()
            raise

    def _interrupt(self) -> None:
        """Record every running step as interrupted, and tell the observer; the steps' own threads record nothing
        after this."""
        with self._lock:
            self._interrupted = True
            running = list(self._running.values())
            for step in running:
                self.steps_state[step.id] = {"status": "interrupted"}
                self.outcomes.append(StepOutcome(step.id, step.title, "interrupted", "interrupted (Ctrl-C)"))
            self.run_state["status"] = "interrupted"
            self.case.save_state(self.state)
        for step in running:
            self.case.custody.append(
                f"{self.plan.name}.{step.kind}.interrupted",
                target=self.plan.target,
                outcome="interrupted",
                details={"step": step.id, "title": step.title},
            )
            self._notify(step, "interrupted")

    def _run_lane(self, lane: list[Step], escaped: list[BaseException] | None = None) -> None:
        for step in lane:
            if self._aborted or self._interrupted:
                return
            try:
                self._run_step(step)
            except BaseException as exc:
                self._aborted = True
                if escaped is None:
                    raise
                escaped.append(exc)
                return

    def _run_step(self, step: Step) -> None:
        with self._lock:
            previous = self.steps_state.get(step.id, {})
            failure = self.failure
            if previous.get("status") == "done":
                self.results[step.id] = previous.get("result", {})
                self.outcomes.append(StepOutcome(step.id, step.title, "resumed"))
            elif failure is not None and step.kind is not StepKind.READ:
                self.steps_state[step.id] = {"status": "blocked", "blocked_by": failure.step_id}
                reason = f"blocked by failed step {failure.step_id}"
                self.outcomes.append(StepOutcome(step.id, step.title, "blocked", reason))
        if previous.get("status") == "done":
            self._notify(step, "resumed")
            return
        if failure is not None and step.kind is not StepKind.READ:
            self.case.custody.append(
                f"{self.plan.name}.{step.kind}.blocked",
                target=self.plan.target,
                outcome="blocked",
                details={"step": step.id, "blocked_by": failure.step_id},
            )
            self._notify(step, "blocked")
            return
        self._notify(step, "running")
        name = f"{self.plan.name}.{step.kind}"
        with self._lock:
            self._running[step.id] = step
        try:
            with self.case.action(name, target=self.plan.target, step=step.id, title=step.title) as act:
                result = step.run(self._ctx) or {}
                act.details["result"] = result
        except Exception as exc:  # noqa: BLE001 - every failure must be recorded and must stop later changes
            outcome = StepOutcome(step.id, step.title, "failed", str(exc) or type(exc).__name__)
            with self._lock:
                if self._ended_after_interrupt(step):
                    return
                self.steps_state[step.id] = {"status": "failed", "error": outcome.error}
                self.failure = self.failure or outcome
                self.outcomes.append(outcome)
                self.case.save_state(self.state)
            self._notify(step, "failed")
        else:
            with self._lock:
                if self._ended_after_interrupt(step):
                    return
                self.results[step.id] = result
                self.steps_state[step.id] = {"status": "done", "result": result}
                self.outcomes.append(StepOutcome(step.id, step.title, "done"))
                self.case.save_state(self.state)
            self._notify(step, "done")

    def _ended_after_interrupt(self, step: Step) -> bool:
        """Mark ``step`` ended (call holding the lock); True when it was recorded as interrupted meanwhile."""
        self._running.pop(step.id, None)
        return self._interrupted

    def _notify(self, step: Step, status: str) -> None:
        if self._observer is not None:
            with self._notifying:
                self._observer(step, status)


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
