"""The step runner: custody records, failure stops later changes, resume skips finished steps."""

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloudir.case import Case
from cloudir.custody import ApiCall, read_records
from cloudir.errors import PreconditionError, StepFailedError
from cloudir.plan import Plan, PlannedCall, Step, StepContext, StepKind, require_completed, run_plan


def _plan(calls: list[str], fail: set[str]) -> Plan:
    def make(step_id: str) -> Any:
        def run(ctx: StepContext) -> dict[str, Any]:
            calls.append(step_id)
            if step_id in fail:
                raise RuntimeError(f"{step_id} exploded")
            return {"made": step_id, "seen": sorted(ctx.results)}

        return run

    kinds = [
        ("preserve", StepKind.PRESERVE),
        ("meta", StepKind.READ),
        ("snap", StepKind.ACQUIRE),
        ("meta2", StepKind.READ),
        ("isolate", StepKind.CONTAIN),
    ]
    return Plan(
        name="acquire",
        cloud="aws",
        target="aws:1:us-east-1:i-1",
        steps=[Step(sid, sid, kind, [PlannedCall("ec2", "X")], make(sid)) for sid, kind in kinds],
    )


def test_failure_blocks_later_changes_but_not_reads(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    calls: list[str] = []
    with pytest.raises(StepFailedError, match="snap"):
        run_plan(_plan(calls, {"snap"}), case)
    assert calls == ["preserve", "meta", "snap", "meta2"]
    actions = [(r["action"], r["outcome"]) for r in read_records(case.root / "custody.jsonl")]
    assert ("acquire.acquire", "failed") in actions
    assert ("acquire.contain.blocked", "blocked") in actions
    assert actions[-1] == ("acquire.failed", "failed")
    with pytest.raises(PreconditionError):
        require_completed(case, "acquire", "aws:1:us-east-1:i-1", force=False)


def test_resume_runs_only_unfinished_steps(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    first: list[str] = []
    with pytest.raises(StepFailedError):
        run_plan(_plan(first, {"snap"}), case)
    second: list[str] = []
    result = run_plan(_plan(second, set()), Case.open(case.root))
    assert second == ["snap", "isolate"]
    assert result.ok
    assert result.results["isolate"]["seen"] == ["meta", "meta2", "preserve", "snap"]
    require_completed(case, "acquire", "aws:1:us-east-1:i-1", force=False)


def test_force_overrides_precondition_and_is_logged(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    require_completed(case, "acquire", "t", force=True)
    assert read_records(case.root / "custody.jsonl")[-1]["action"] == "precondition.overridden"


def _lane_plan(run: dict[str, Any], *, kinds: dict[str, StepKind] | None = None) -> Plan:
    """snap, then lanes a: [a1, a2] and b: [b1], then last; ``run`` maps step ids to what each does."""
    lanes = {"snap": None, "a1": "a", "a2": "a", "b1": "b", "last": None}

    def step(step_id: str) -> Step:
        kind = (kinds or {}).get(step_id, StepKind.ACQUIRE)
        return Step(step_id, step_id, kind, [PlannedCall("ec2", "X")], run.get(step_id, _noop), lanes[step_id])

    return Plan("acquire", "aws", "aws:1:us-east-1:i-1", [step(step_id) for step_id in lanes])


def _noop(ctx: StepContext) -> dict[str, Any]:
    return {"seen": sorted(ctx.results)}


def _records(case: Case) -> list[dict[str, Any]]:
    return read_records(case.root / "custody.jsonl")


def test_lanes_run_at_once_each_step_recorded_with_its_own_calls(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    both_running = threading.Barrier(2, timeout=10)  # passes only while a1 and b1 run at the same time

    def lane_step(name: str) -> Any:
        def run(ctx: StepContext) -> dict[str, Any]:
            assert "snap" in ctx.results  # a lane starts after the steps before the stretch
            both_running.wait()
            ctx.case.record_api_call(ApiCall("ec2", f"Call{name}", None, f"req-{name}", "ok"))
            both_running.wait()  # the other lane's call is recorded meanwhile: each must land in its own step
            return {"lane": name}

        return run

    result = run_plan(_lane_plan({"a1": lane_step("a"), "b1": lane_step("b")}), case)
    assert result.ok
    assert [o.step_id for o in result.outcomes] == ["snap", "a1", "a2", "b1", "last"]
    assert result.results["last"]["seen"] == ["a1", "a2", "b1", "snap"]  # the next stretch waits for every lane
    by_step = {r["details"]["step"]: r for r in _records(case) if r["action"] == "acquire.acquire"}
    assert [c["operation"] for c in by_step["a1"]["api_calls"]] == ["Calla"]
    assert [c["operation"] for c in by_step["b1"]["api_calls"]] == ["Callb"]
    state = json.loads((case.root / "state.json").read_text())["runs"]["acquire:aws:aws:1:us-east-1:i-1"]
    assert {sid: entry["status"] for sid, entry in state["steps"].items()} == dict.fromkeys(
        ["snap", "a1", "a2", "b1", "last"], "done"
    )


def test_a_failure_in_one_lane_lets_the_running_step_of_another_finish_and_blocks_later_changes(
    tmp_path: Path,
) -> None:
    case = Case.create(tmp_path / "c")
    b1_running, a1_failed, ran = threading.Event(), threading.Event(), []

    def fail(ctx: StepContext) -> dict[str, Any]:
        ran.append("a1")
        assert b1_running.wait(10)
        raise RuntimeError("a1 exploded")

    def long(ctx: StepContext) -> dict[str, Any]:
        ran.append("b1")
        assert a1_failed.wait(10)  # still running when a1 failed
        return {"finished": True}

    def observe(step: Step, status: str) -> None:
        if step.id == "b1" and status == "running":
            b1_running.set()
        if step.id == "a1" and status == "failed":
            a1_failed.set()

    plan = _lane_plan({"a1": fail, "b1": long}, kinds={"a2": StepKind.READ})
    result = run_plan(plan, case, observer=observe, raise_on_failure=False)
    statuses = {o.step_id: o.status for o in result.outcomes}
    assert statuses == {"snap": "done", "a1": "failed", "a2": "done", "b1": "done", "last": "blocked"}
    assert sorted(ran) == ["a1", "b1"]
    actions = [(r["action"], r["outcome"], r["details"].get("step")) for r in _records(case)]
    assert ("acquire.acquire", "ok", "b1") in actions
    assert ("acquire.acquire", "failed", "a1") in actions
    assert ("acquire.acquire.blocked", "blocked", "last") in actions
    assert actions[-1] == ("acquire.failed", "failed", None)

    again: list[str] = []

    def note(step_id: str) -> Any:
        def run(ctx: StepContext) -> dict[str, Any]:
            again.append(step_id)
            return {}

        return run

    resumed = run_plan(_lane_plan({sid: note(sid) for sid in ["snap", "a1", "a2", "b1", "last"]}), Case.open(case.root))
    assert resumed.ok
    assert sorted(again) == ["a1", "last"]  # the done steps of every lane are not run again


def test_an_observer_that_refuses_a_step_in_a_lane_stops_the_run_after_the_other_lane_ends(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    b1_running = threading.Event()

    class TimeUpError(Exception):
        pass

    def refuse(step: Step, status: str) -> None:
        if step.id == "b1" and status == "running":
            b1_running.set()
        if step.id == "a2" and status == "running":
            raise TimeUpError("no time left")

    def a1(ctx: StepContext) -> dict[str, Any]:
        assert b1_running.wait(10)
        return {}

    with pytest.raises(TimeUpError):
        run_plan(_lane_plan({"a1": a1}), case, observer=refuse)
    done = [r["details"]["step"] for r in _records(case) if r["action"] == "acquire.acquire"]
    assert sorted(done) == ["a1", "b1", "snap"]  # b1 ran to its end and is recorded; a2 and last never started


def test_ctrl_c_while_lanes_run_records_the_running_steps_as_interrupted_and_resume_runs_them(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT, delivered to the main thread) while a1 is a long copy: the command does not wait for it,
    starts nothing more, records a1 as interrupted in custody and the run state (and tells the observer), and
    ``--resume`` runs it again."""
    copy_may_end, signalled = threading.Event(), []

    def long_copy(ctx: StepContext) -> dict[str, Any]:
        copy_may_end.wait(timeout=30)
        return {"copied": True}

    def ctrl_c(ctx: StepContext) -> dict[str, Any]:
        if not signalled:
            signalled.append(True)
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.5)  # the interrupt reaches the main thread meanwhile
        return {"b1": True}

    case = Case.create(tmp_path / "case")
    started = time.monotonic()
    observed: list[tuple[str, str]] = []
    with pytest.raises(KeyboardInterrupt):
        run_plan(
            _lane_plan({"a1": long_copy, "b1": ctrl_c}),
            case,
            observer=lambda s, status: observed.append((s.id, status)),
        )
    assert ("a1", "interrupted") in observed  # the observer (the CLI's running rows) hears that a1 ended
    assert time.monotonic() - started < 10  # it did not wait for the long copy
    state = case.load_state()
    steps = next(iter(state["runs"].values()))["steps"]
    assert steps["snap"]["status"] == "done"
    assert steps["a1"]["status"] == "interrupted"
    assert "a2" not in steps  # nothing started after the interrupt
    assert "last" not in steps
    assert case.run_status("acquire:aws:aws:1:us-east-1:i-1") == "interrupted"
    interrupted = [r for r in read_records(case.root / "custody.jsonl") if r["action"] == "acquire.acquire.interrupted"]
    assert {r["details"]["step"] for r in interrupted} >= {"a1"}
    copy_may_end.set()
    time.sleep(0.2)  # the interrupted copy ends in its thread and records nothing more
    assert next(iter(case.load_state()["runs"].values()))["steps"]["a1"]["status"] == "interrupted"
    resumed = run_plan(_lane_plan({"a1": long_copy, "b1": ctrl_c}), case)
    assert resumed.ok
    statuses = {o.step_id: o.status for o in resumed.outcomes}
    assert statuses["snap"] == "resumed"
    assert statuses["a1"] == statuses["a2"] == statuses["last"] == "done"
