"""The CLI's step status: every running step of concurrent lanes has its own row on a terminal; piped output is a
line per ended step."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pyte
import pytest
from rich.console import Console

from cloudir.case import Case
from cloudir.cli.steps import StepLines
from cloudir.plan import Plan, PlannedCall, Step, StepContext, StepKind, run_plan
from cloudir.progress import operation_progress
from cloudir.textsafe import visible

_TITLES = {
    "snap": "snapshot vol-1",
    "a1": "copy snap-1 to eu-west-1",
    "a2": "share snap-1",
    "b1": "image [bold]snap-1[/] \x1b[2J",  # a title carries cloud names: data, never markup or a terminal control
    "last": "tag snap-1",
}
_LANES = {"snap": None, "a1": "a", "a2": "a", "b1": "b", "last": None}


def _screen(out: io.StringIO) -> list[str]:
    """What a 100x24 terminal shows after the output so far (pyte emulates the cursor moves and erases; a newline
    also returns the carriage, as a tty's output processing does)."""
    screen = pyte.Screen(100, 24)
    pyte.Stream(screen).feed(out.getvalue().replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display if line.strip()]


def _plan(run: dict[str, Any]) -> Plan:
    def step(step_id: str) -> Step:
        does = run.get(step_id, lambda ctx: {})
        return Step(step_id, _TITLES[step_id], StepKind.ACQUIRE, [PlannedCall("ec2", "X")], does, _LANES[step_id])

    return Plan("acquire", "aws", "aws:1:us-east-1:i-1", [step(step_id) for step_id in _LANES])


def _run_with_both_lanes_seen(tmp_path: Path, console: Console, out: io.StringIO) -> list[str]:
    """Run the plan; returns the screen seen while a1 and b1 both ran."""
    both_running = threading.Barrier(2, timeout=10)
    seen: list[str] = []

    def a1(ctx: StepContext) -> dict[str, Any]:
        both_running.wait()
        seen.extend(_screen(out))
        both_running.wait()
        return {}

    def b1(ctx: StepContext) -> dict[str, Any]:
        both_running.wait()
        both_running.wait()
        return {}

    assert run_plan(_plan({"a1": a1, "b1": b1}), Case.create(tmp_path / "c"), observer=StepLines(console)).ok
    return seen


def test_on_a_terminal_each_running_step_of_concurrent_lanes_has_its_own_row_removed_when_it_ends(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system="standard")
    seen = _run_with_both_lanes_seen(tmp_path, console, out)
    image = "image [bold]snap-1[/] \\x1b[2J"
    assert seen == ["    done snapshot vol-1", " running copy snap-1 to eu-west-1", f" running {image}"]
    final = _screen(out)
    assert final[0] == "    done snapshot vol-1"
    assert sorted(final[1:4]) == sorted(
        ["    done copy snap-1 to eu-west-1", "    done share snap-1", f"    done {image}"]
    )
    assert final.index("    done copy snap-1 to eu-west-1") < final.index("    done share snap-1")  # a lane's order
    assert final[4:] == ["    done tag snap-1"]  # no running row is left


def test_piped_output_is_one_line_per_ended_step_and_no_running_rows(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    assert _run_with_both_lanes_seen(tmp_path, console, out) == ["    done snapshot vol-1"]
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert lines[0] == "    done snapshot vol-1"
    assert lines[-1] == "    done tag snap-1"
    assert sorted(lines) == sorted(f"    done {visible(title)}" for title in _TITLES.values())


def test_what_a_step_prints_on_stdout_stays_on_stdout_while_the_running_rows_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Results go to stdout, piped to a file while stderr is a terminal: the live rows never take stdout over."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)

    def prints(ctx: StepContext) -> dict[str, Any]:
        print("a result line")
        return {}

    assert run_plan(_plan({"a1": prints}), Case.create(tmp_path / "c"), observer=StepLines(console)).ok
    assert "a result line" in capsys.readouterr().out
    assert "a result line" not in out.getvalue()


def test_concurrent_operation_bars_that_end_out_of_order_leave_the_running_one_shown(tmp_path: Path) -> None:
    """Two lanes' long operations each show a bar under their step's row; the first to start ending first leaves the
    other's bar (not its own) on the screen."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system="standard")
    both_started, first_ended = threading.Barrier(2, timeout=10), threading.Event()
    seen: list[str] = []

    def a1(ctx: StepContext) -> dict[str, Any]:
        with operation_progress(ctx.console, "copy [red]A[/]") as on_progress:
            on_progress(1, 4)
            both_started.wait()
            both_started.wait()  # b1's bar is shown
        first_ended.set()
        return {}

    def b1(ctx: StepContext) -> dict[str, Any]:
        both_started.wait()  # after a1's bar
        with operation_progress(ctx.console, "image B") as on_progress:
            on_progress(3, 4)
            both_started.wait()
            assert first_ended.wait(10)
            seen.extend(_screen(out))
        return {}

    assert run_plan(
        _plan({"a1": a1, "b1": b1}), Case.create(tmp_path / "c"), console=console, observer=StepLines(console)
    ).ok
    assert seen[-1].startswith("image B")  # the live rows end with the running bar
    assert "75%" in seen[-1]
    assert [line.split()[:2] for line in seen if "copy [red]A" in line] == [["copy", "[red]A[/]"]]  # printed once
    assert any(line.startswith(" running image") for line in seen)
    final = _screen(out)
    assert not any(line.startswith(" running") for line in final)  # no live row is left
    assert [line.split()[:2] for line in final if "image B" in line or "copy [red]A" in line] == [
        ["copy", "[red]A[/]"],
        ["image", "B"],
    ]  # each bar's last state, once, in the order they ended
