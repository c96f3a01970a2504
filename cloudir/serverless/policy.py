"""Least-privilege permission documents generated from what a provider declares (no credentials needed)."""

from __future__ import annotations

from typing import Any

from cloudir.errors import CloudirError

DESCRIPTION = "cloudir incident responder: evidence acquisition, log collection and containment"


def least_privilege_policy(cloud: str, permissions: list[str]) -> dict[str, Any]:
    """An IAM policy (aws), a custom role definition (azure) or a custom role (gcp) granting ``permissions``."""
    actions = sorted(set(permissions))
    wildcards = [action for action in actions if "*" in action]
    if wildcards:
        raise CloudirError(f"the {cloud} provider declares wildcard permissions: {', '.join(wildcards)}")
    if cloud == "aws":
        from cloudir.serverless.aws_policy import policy_document

        return policy_document(actions)
    if cloud == "azure":
        data_actions = [action for action in actions if "/blobs/" in action]
        return {
            "Name": "cloudir responder",
            "IsCustom": True,
            "Description": DESCRIPTION,
            "Actions": [action for action in actions if action not in data_actions],
            "NotActions": [],
            "DataActions": data_actions,
            "NotDataActions": [],
            "AssignableScopes": ["/subscriptions/<subscription-id>"],
        }
    if cloud == "gcp":
        return {"title": "cloudir responder", "description": DESCRIPTION, "stage": "GA", "includedPermissions": actions}
    raise CloudirError(f"unknown cloud {cloud!r}")
