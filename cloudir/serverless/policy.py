"""Least-privilege permission documents generated from what a provider declares (no credentials needed).

Each cloud's module (``aws_policy``, ``azure_policy``, ``gcp_policy``) places every declared permission in a
statement, role or grant that scopes it, and offers ``document(actions)`` and ``explain(actions)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from cloudir.errors import CloudirError

ExplainRow = tuple[str, str, str, list[str], list[str]]  # name, effect, why, permissions, scope and conditions
CLOUDS = ("aws", "azure", "gcp")


def least_privilege_policy(cloud: str, permissions: list[str]) -> dict[str, Any]:
    """An IAM policy (aws), role definitions and assignments (azure) or custom roles and bindings (gcp)."""
    document: dict[str, Any] = _module(cloud).document(_checked(cloud, permissions))
    return document


def explain_policy(cloud: str, permissions: list[str]) -> list[ExplainRow]:
    """One row per statement (aws), role (azure) or grant (gcp): why it exists, what it grants, where."""
    rows: list[ExplainRow] = _module(cloud).explain(_checked(cloud, permissions))
    return rows


def require_scoped(cloud: str, writes: list[str], scoped: Iterable[frozenset[str]], never: Iterable[str] = ()) -> None:
    """Refuse write permissions that no scoped grant covers, or that must never be granted."""
    covered = set().union(*scoped)
    refused = sorted(set(writes) & set(never)) or [w for w in writes if w not in covered]
    if refused:
        raise CloudirError(
            f"the {cloud} provider declares write permissions with no scoped grant: {', '.join(refused)}",
            hint=f"scope them in cloudir/serverless/{cloud}_policy.py (never a grant that lets the responder escalate)",
        )


def _module(cloud: str) -> Any:
    return importlib.import_module(f"cloudir.serverless.{cloud}_policy")


def _checked(cloud: str, permissions: list[str]) -> list[str]:
    if cloud not in CLOUDS:
        raise CloudirError(f"unknown cloud {cloud!r}")
    actions = sorted(set(permissions))
    wildcards = [action for action in actions if "*" in action]
    if wildcards:
        raise CloudirError(f"the {cloud} provider declares wildcard permissions: {', '.join(wildcards)}")
    return actions
