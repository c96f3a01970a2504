"""The responder's Google Cloud roles, grant by grant: reads on the project, every write under an IAM Condition.

Each IAM permission the provider declares lands in a custom role. Reads (``get``/``list``) are one role bound on
the project without a condition: they change nothing. Every write permission is in a role whose binding carries an
IAM Condition: the evidence the tool creates is limited to its naming prefixes (``resource.name.startsWith``:
snapshots and images ``cir-…``, firewall rules ``cloudir-…``), changes to the targets to the resource type they
apply to (``resource.type``), and service-account disabling never reaches the responder's own ``cloudir-…``
accounts. No role grants ``setIamPolicy``, ``iam.serviceAccounts.actAs``, token or key creation: the one of them a
plan can use (removing IAM bindings) is listed under ``breakGlass``, to grant by hand for that containment only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cloudir.serverless.policy import require_scoped

PROJECT = "projects/<project>"
FORENSIC_PROJECT = "projects/<forensic-project>"
RESPONDER = "serviceAccount:<responder-service-account>"
EVIDENCE_PREFIX = "cir-"  # snapshots and images: the provider's evidence_prefix() (a test holds the two equal)
FIREWALL_PREFIX = "cloudir-"  # quarantine firewall rules (likewise)
RESPONDER_PREFIX = "cloudir-"  # name the responder's own service accounts so
NEVER_GRANTED = (
    "resourcemanager.projects.setIamPolicy",
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.getAccessToken",
    "iam.serviceAccountKeys.create",
    "iam.roles.update",
)
_READ_VERBS = ("get", "list", "getIamPolicy", "getSerialPortOutput")
# Declared permissions no role may hold, because their holder could escalate: listed apart, to grant by hand
# for the one containment that needs them and to take back after it.
BREAK_GLASS = {
    "resourcemanager.projects.setIamPolicy": (
        "remove an attacker's IAM bindings; it could grant any role: give projectIamAdmin for that one containment"
    ),
}


def _of_type(*kinds: str) -> str:
    clauses = [f'resource.type == "{kind}"' for kind in kinds]
    return clauses[0] if len(clauses) == 1 else "(" + " || ".join(clauses) + ")"


def _named(project: str, collection: str, prefix: str) -> str:
    return f'resource.name.startsWith("{project}/global/{collection}/{prefix}")'


@dataclass(frozen=True)
class Grant:
    """One custom role and its conditional binding (printed by ``cloudir iam-policy gcp --explain``)."""

    role_id: str
    why: str
    permissions: frozenset[str]
    condition: str | None
    project: str = PROJECT

    def binding(self) -> dict[str, Any]:
        """The IAM policy binding of this role to the responder (iam v1 ``Binding``)."""
        body: dict[str, Any] = {"role": f"{self.project}/roles/{self.role_id}", "members": [RESPONDER]}
        if self.condition is not None:
            body["condition"] = {"title": self.role_id, "description": self.why[:256], "expression": self.condition}
        return body


GRANTS: tuple[Grant, ...] = (
    Grant(
        "cloudirSnapshotDisks",
        "snapshot the target's disks (any disk of the project: the incident picks it); disks only",
        frozenset({"compute.disks.createSnapshot"}),
        _of_type("compute.googleapis.com/Disk"),
    ),
    Grant(
        "cloudirCaseSnapshots",
        f"create and label only snapshots named {EVIDENCE_PREFIX}… (the case's evidence), and read them into images",
        frozenset({"compute.snapshots.create", "compute.snapshots.setLabels", "compute.snapshots.useReadOnly"}),
        f"{_of_type('compute.googleapis.com/Snapshot')} && {_named(PROJECT, 'snapshots', EVIDENCE_PREFIX)}",
    ),
    Grant(
        "cloudirCaseImages",
        f"in the forensic project only: create and label only images named {EVIDENCE_PREFIX}… (the snapshot copies)",
        frozenset({"compute.images.create", "compute.images.setLabels"}),
        f"{_of_type('compute.googleapis.com/Image')} && {_named(FORENSIC_PROJECT, 'images', EVIDENCE_PREFIX)}",
        project=FORENSIC_PROJECT,
    ),
    Grant(
        "cloudirQuarantineFirewall",
        f"create only firewall rules named {FIREWALL_PREFIX}… (the quarantine rules) on the target's network",
        frozenset({"compute.firewalls.create", "compute.networks.updatePolicy"}),
        f"({_of_type('compute.googleapis.com/Firewall')} && {_named(PROJECT, 'firewalls', FIREWALL_PREFIX)}) || "
        f"{_of_type('compute.googleapis.com/Network')}",
    ),
    Grant(
        "cloudirIsolateInstances",
        "isolate and preserve the target instance: deletion protection, network tags, leaving its group; "
        "instances only",
        frozenset({"compute.instances.setDeletionProtection", "compute.instances.setTags", "compute.instances.update"}),
        _of_type("compute.googleapis.com/Instance"),
    ),
    Grant(
        "cloudirPreserveGroupMembers",
        "abandon the target from its managed instance group so autoscaling cannot delete it; instance groups only",
        frozenset({"compute.instanceGroupManagers.update"}),
        _of_type("compute.googleapis.com/InstanceGroupManager"),
    ),
    Grant(
        "cloudirRevokeServiceAccounts",
        f"disable a compromised service account and its keys, never one named {RESPONDER_PREFIX}… (the responder's)",
        frozenset({"iam.serviceAccounts.disable", "iam.serviceAccountKeys.disable"}),
        f"{_of_type('iam.googleapis.com/ServiceAccount', 'iam.googleapis.com/ServiceAccountKey')} && "
        f'!resource.name.extract("/serviceAccounts/{{account}}@").startsWith("{RESPONDER_PREFIX}")',
    ),
)


def is_read(permission: str) -> bool:
    """Whether a permission only reads (``get``, ``list``, ``getIamPolicy``...)."""
    return permission.rsplit(".", 1)[1].startswith(_READ_VERBS)


def grants_for(permissions: list[str]) -> list[Grant]:
    """The grants for ``permissions``: a reader on the project, then the conditional write grants that are needed."""
    writes = sorted(perm for perm in permissions if not is_read(perm) and perm not in BREAK_GLASS)
    require_scoped("gcp", writes, (grant.permissions for grant in GRANTS), NEVER_GRANTED)
    reader = Grant(
        "cloudirReader",
        "read the targets, their disks, networks, service accounts and the audit logs; these change nothing",
        frozenset(perm for perm in permissions if is_read(perm)),
        None,
    )
    wanted = set(writes)
    return [reader, *(replace(g, permissions=g.permissions & wanted) for g in GRANTS if g.permissions & wanted)]


def document(permissions: list[str]) -> dict[str, Any]:
    """Custom roles (iam v1 ``CreateRoleRequest`` per project) and their bindings (iam v1 ``Binding``)."""
    grants = grants_for(permissions)
    roles = [
        {
            "parent": grant.project,
            "request": {
                "roleId": grant.role_id,
                "role": {
                    "title": grant.role_id,
                    "description": grant.why,
                    "stage": "GA",
                    "includedPermissions": sorted(grant.permissions),
                },
            },
        }
        for grant in grants
    ]
    bindings = [{"resource": grant.project, "binding": grant.binding()} for grant in grants]
    return {"roles": roles, "bindings": bindings, "breakGlass": _break_glass(permissions)}


def _break_glass(permissions: list[str]) -> list[dict[str, str]]:
    """The declared permissions no role holds, each with why and how to grant it for one containment."""
    return [{"permission": perm, "why": BREAK_GLASS[perm]} for perm in sorted(set(permissions) & set(BREAK_GLASS))]


def explain(permissions: list[str]) -> list[tuple[str, str, str, list[str], list[str]]]:
    """One row per grant: role, effect, why, permissions, the project and the condition."""
    rows = [
        (g.role_id, "Allow", g.why, sorted(g.permissions), [g.project, g.condition or "(no condition: reads only)"])
        for g in grants_for(permissions)
    ]
    return rows + [
        ("breakGlass", "Not granted", entry["why"], [entry["permission"]], [PROJECT, "grant by hand, then revoke"])
        for entry in _break_glass(permissions)
    ]
