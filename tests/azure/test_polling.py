"""Every Azure long-running operation the tool starts polls through the session's context-keeping polling.

azure-core polls a ``begin_*`` operation in a thread of its own; only ``session.polling()`` (ContextPolling) keeps
those polls in the custody record of the step that started it. A call without it records its polls under no step.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _begin_calls(source: str, name: str) -> dict[str, bool]:
    """Each ``<client>.begin_*(...)`` call in ``source``, as ``name:line begin_x``, and whether it passes
    ``polling=<session>.polling()``."""
    calls = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if not node.func.attr.startswith("begin_"):
            continue
        polling = next((k.value for k in node.keywords if k.arg == "polling"), None)
        calls[f"{name}:{node.lineno} {node.func.attr}"] = (
            isinstance(polling, ast.Call)
            and isinstance(polling.func, ast.Attribute)
            and polling.func.attr == "polling"
            and not polling.args
        )
    return calls


def test_every_begin_call_of_the_tool_polls_through_the_session() -> None:
    calls: dict[str, bool] = {}
    for path in sorted((ROOT / "providers").rglob("*.py")) + sorted((ROOT / "cloudir").rglob("*.py")):
        calls |= _begin_calls(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert [call for call, kept in calls.items() if not kept] == []
    assert len(calls) >= 8  # the walk saw the adapter's long-running operations (snapshots, copies, NSG, NIC, ...)


def test_the_check_finds_a_begin_call_without_the_session_polling() -> None:
    source = """
compute.snapshots.begin_create_or_update(group, name, body).result()
compute.snapshots.begin_revoke_access(group, name, polling=True).result()
compute.snapshots.begin_grant_access(group, name, body, polling=session.polling()).result()
"""
    calls = _begin_calls(source, "x.py")
    assert [call for call, kept in calls.items() if not kept] == [
        "x.py:2 begin_create_or_update",
        "x.py:3 begin_revoke_access",
    ]
    assert calls["x.py:4 begin_grant_access"]
