"""The step runner: custody records, failure stops later changes, resume skips finished steps."""

from pathlib import Path
from typing import Any

import pytest

from cloudir.case import Case
from cloudir.custody import read_records
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
