"""Each CLI command module is thin over cloudir.ops: it parses options and presents results, and runs no use case
itself (no plan run or built, no ingest, analysis, report, verification or response called past the ops layer)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "cloudir" / "cli"
# modules that implement use cases: the CLI may take their types and constants, never call their functions
ENGINES = ("cloudir.plan", "cloudir.timeline.ingest", "cloudir.custody", "cloudir.analyze", "cloudir.report")
ENGINES += ("cloudir.playbook", "cloudir.provider", "cloudir.case")
ALLOWED = {  # parsing and naming helpers, not use cases
    "cloudir.playbook": {"load_playbook", "load_playbooks"},
    "cloudir.report": {"notice_path"},
    "cloudir.case": {"add_notice_listener"},
    "cloudir.provider": {"get_provider", "resource_kind"},  # the adapter its options describe; --target parsing
}
PROVIDER_CALLS = {"plan_acquire", "plan_contain", "plan_pull_logs", "find_target", "bind", "run_plan"}


def _within(module: str | None, package: str) -> bool:
    return module is not None and (module == package or module.startswith(f"{package}."))


def _violations(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        package = next((e for e in ENGINES if isinstance(node, ast.ImportFrom) and _within(node.module, e)), None)
        if isinstance(node, ast.ImportFrom) and package is not None:
            found += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name[:1].islower() and alias.name not in ALLOWED.get(package, set())
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PROVIDER_CALLS:
            found.append(f".{node.func.attr}()")
    return found


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda path: path.name)
def test_cli_module_is_thin_over_ops(path: Path) -> None:
    assert not _violations(path.read_text(encoding="utf-8")), f"{path.name}: use cloudir.ops instead"


PACKAGE = CLI.parent
# the other front ends: they build their acquisition, containment and log plans through cloudir.ops, and run them
FRONT_ENDS = sorted([*(PACKAGE / "playbook").glob("*.py"), *(PACKAGE / "serverless").glob("*.py"), PACKAGE / "demo.py"])
PLANNING = {"plan_acquire", "plan_contain", "plan_pull_logs"}


def _plans_past_ops(source: str) -> list[str]:
    """Provider plans built, or plans run, without cloudir.ops."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and _within(node.module, "cloudir.plan"):
            found += [f"cloudir.plan.{alias.name}" for alias in node.names if alias.name == "run_plan"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PLANNING:
            found.append(f".{node.func.attr}()")
    return found


@pytest.mark.parametrize("path", FRONT_ENDS, ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_engine_demo_and_handlers_plan_and_run_through_ops(path: Path) -> None:
    assert not _plans_past_ops(path.read_text(encoding="utf-8")), f"{path.name}: plan and run through cloudir.ops"


def test_the_check_catches_an_engine_that_builds_its_own_acquisition_plan() -> None:
    source = (
        "from cloudir.plan import Plan, Step, run_plan\nfrom cloudir import ops\n"
        "def build(provider, target, options, request):\n"
        "    ops.acquisition_plan(provider, target, options)\n"
        "    return provider.plan_acquire(target, options), provider.plan_pull_logs(request)\n"
    )
    assert _plans_past_ops(source) == ["cloudir.plan.run_plan", ".plan_acquire()", ".plan_pull_logs()"]


def test_the_check_catches_a_command_that_runs_a_use_case_itself() -> None:
    source = (
        "from cloudir.plan import Plan, run_plan\nfrom cloudir.timeline.ingest import IngestStats, ingest_paths\n"
        "from cloudir.playbook import load_playbooks\nfrom cloudir.caselock import set_wait_by_default\n"
        "def cmd(provider, target, options):\n    return provider.plan_acquire(target, options)\n"
    )
    assert _violations(source) == ["cloudir.plan.run_plan", "cloudir.timeline.ingest.ingest_paths", ".plan_acquire()"]
