"""The responder's Azure roles, role by role: reads on the subscription, writes only where the tool acts.

Each RBAC action the provider declares lands in a role. Reads (``*/read``) are one role assignable on the
subscription: they change nothing, and the targets are wherever the incident is. Every other action is in a role
assignable only on a resource group: the monitored workloads' groups (where the tool snapshots, locks and
isolates its targets and creates the quarantine NSG) or the SOC subscription's evidence group (where it copies
snapshots). ARM has no resource conditions for these actions, so the resource group is their scope; the one
action under ``Microsoft.Authorization`` that may be needed on the whole subscription (removing an attacker's
role assignment) carries a role assignment condition (ABAC) that keeps the responder's own assignments out of
reach. No role grants ``roleAssignments/write`` or ``roleDefinitions/write``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from cloudir.serverless.policy import require_scoped

SUBSCRIPTION = "/subscriptions/<subscription-id>"
SOC_SUBSCRIPTION = "/subscriptions/<soc-subscription-id>"
EVIDENCE_GROUP = "rg-cloudir-evidence"  # the provider's default soc_resource_group (a test holds the two equal)
WORKLOAD_SCOPE = f"{SUBSCRIPTION}/resourceGroups/<workload-resource-group>"
EVIDENCE_SCOPE = f"{SOC_SUBSCRIPTION}/resourceGroups/{EVIDENCE_GROUP}"
RESPONDER = "<responder-principal-id>"  # the object id of the function's managed identity or the responder
API_VERSION = "2022-04-01"
_ROLE_IDS = uuid.UUID("6d3c1f0e-2b4a-4c8e-9f1d-5a7b3e2c9d40")  # namespace of the roles' fixed GUIDs
_REMOVE = "Microsoft.Authorization/roleAssignments/delete"
NEVER_GRANTED = ("Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleDefinitions/write")


@dataclass(frozen=True)
class Role:
    """One custom role, why it exists and where it may be assigned (printed by ``iam-policy azure --explain``)."""

    name: str
    why: str
    actions: frozenset[str]
    scopes: tuple[str, ...]
    condition: str | None = None  # an ABAC role assignment condition (version 2.0)

    @property
    def guid(self) -> str:
        """The role definition's fixed name (a GUID derived from the role name)."""
        return str(uuid.uuid5(_ROLE_IDS, self.name))


_SNAPSHOT_ACCESS = {
    "Microsoft.Compute/snapshots/beginGetAccess/action",
    "Microsoft.Compute/snapshots/endGetAccess/action",
}
ROLES: tuple[Role, ...] = (
    Role(
        "cloudir workload responder",
        "in the workloads' resource groups only: snapshot the target's disks beside them (tagged with the case), take "
        "a crash-consistent VM restore point of all its disks, read a snapshot out through a read-only SAS, lock the "
        "VM and disks against deletion, protect a scale-set instance from scale-in, create the quarantine NSG and put "
        "it on the target's NICs, detach a compromised managed identity from a VM",
        frozenset(
            {
                "Microsoft.Compute/snapshots/write",
                "Microsoft.Compute/restorePointCollections/write",
                "Microsoft.Compute/restorePointCollections/restorePoints/write",
                "Microsoft.Compute/virtualMachines/write",
                *_SNAPSHOT_ACCESS,
                "Microsoft.Authorization/locks/write",
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write",
                "Microsoft.Network/networkInterfaces/write",
                "Microsoft.Network/networkSecurityGroups/write",
                "Microsoft.Network/networkSecurityGroups/join/action",
            }
        ),
        (WORKLOAD_SCOPE,),
    ),
    Role(
        "cloudir evidence writer",
        f"in the SOC subscription's evidence resource group {EVIDENCE_GROUP} only: copy the case snapshots there and "
        "read them out through a read-only SAS",
        frozenset({"Microsoft.Compute/snapshots/write", *_SNAPSHOT_ACCESS}),
        (EVIDENCE_SCOPE,),
    ),
    Role(
        "cloudir role assignment remover",
        "remove a compromised principal's role assignments anywhere in the subscription, but never one held by the "
        "responder itself (role assignment condition on the assignment's principal)",
        frozenset({_REMOVE}),
        (SUBSCRIPTION,),
        condition=(
            f"((!(ActionMatches{{'{_REMOVE}'}})) OR "
            f"(@Resource[Microsoft.Authorization/roleAssignments:PrincipalId] GuidNotEquals {RESPONDER}))"
        ),
    ),
)


def is_read(action: str) -> bool:
    """Whether an RBAC action only reads."""
    return action.endswith("/read")


def roles_for(actions: list[str]) -> list[Role]:
    """The roles granting ``actions``: a reader on the subscriptions, then the scoped write roles that are needed."""
    writes = sorted(action for action in actions if not is_read(action))
    require_scoped("azure", writes, (role.actions for role in ROLES), NEVER_GRANTED)
    reader = Role(
        "cloudir reader",
        "read the targets, their disks, network, scale sets and the Activity Log; these change nothing",
        frozenset(action for action in actions if is_read(action)),
        (SUBSCRIPTION, SOC_SUBSCRIPTION),
    )
    wanted = set(writes)
    return [reader, *(replace(role, actions=role.actions & wanted) for role in ROLES if role.actions & wanted)]


def document(actions: list[str]) -> dict[str, Any]:
    """Role definitions and role assignments (ARM request bodies, API version 2022-04-01) granting ``actions``."""
    definitions = []
    assignments = []
    for role in roles_for(actions):
        permission = {"actions": sorted(role.actions), "notActions": [], "dataActions": [], "notDataActions": []}
        body = {
            "roleName": role.name,
            "description": role.why,
            "type": "CustomRole",
            "permissions": [permission],
            "assignableScopes": list(role.scopes),
        }
        definitions.append({"scope": role.scopes[0], "name": role.guid, "body": {"properties": body}})
        for scope in role.scopes:
            grant = {
                "roleDefinitionId": f"{role.scopes[0]}/providers/Microsoft.Authorization/roleDefinitions/{role.guid}",
                "principalId": RESPONDER,
                "principalType": "ServicePrincipal",
                "description": f"cloudir: {role.name}",
            }
            if role.condition is not None:
                grant |= {"condition": role.condition, "conditionVersion": "2.0"}
            assignments.append({"scope": scope, "body": {"properties": grant}})
    return {"apiVersion": API_VERSION, "roleDefinitions": definitions, "roleAssignments": assignments}


def explain(actions: list[str]) -> list[tuple[str, str, str, list[str], list[str]]]:
    """One row per role: name, effect, why, actions, scopes and condition."""
    return [
        (
            role.name,
            "Allow",
            role.why,
            sorted(role.actions),
            [*role.scopes, *([role.condition] if role.condition else [])],
        )
        for role in roles_for(actions)
    ]
