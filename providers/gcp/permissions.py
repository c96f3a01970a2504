"""The one table of Google Cloud calls the gcp provider plans, with the IAM permissions each needs.

Plans build their :class:`~cloudir.plan.PlannedCall` objects through :func:`call`, which refuses an
operation missing from the table, so ``required_permissions()`` cannot drift from what plans do.
"""

from __future__ import annotations

from typing import Any

from cloudir.plan import PlannedCall

PERMISSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("compute", "instances.get"): ("compute.instances.get",),
    ("compute", "instances.list"): ("compute.instances.list",),
    ("compute", "instances.aggregatedList"): ("compute.instances.list",),
    ("compute", "subnetworks.aggregatedList"): ("compute.subnetworks.list",),
    ("compute", "instances.setDeletionProtection"): ("compute.instances.setDeletionProtection",),
    ("compute", "instances.setTags"): ("compute.instances.setTags",),
    ("compute", "instances.getSerialPortOutput"): ("compute.instances.getSerialPortOutput",),
    ("compute", "disks.get"): ("compute.disks.get",),
    ("compute", "disks.createSnapshot"): (
        "compute.disks.createSnapshot",
        "compute.snapshots.create",
        "compute.snapshots.setLabels",
    ),
    ("compute", "snapshots.list"): ("compute.snapshots.list",),
    ("compute", "snapshots.get"): ("compute.snapshots.get",),
    ("compute", "images.list"): ("compute.images.list",),
    ("compute", "images.insert"): (
        "compute.images.create",
        "compute.images.setLabels",
        "compute.snapshots.useReadOnly",
    ),
    ("compute", "firewalls.list"): ("compute.firewalls.list",),
    ("compute", "firewalls.insert"): ("compute.firewalls.create", "compute.networks.updatePolicy"),
    ("compute", "instanceGroupManagers.listManagedInstances"): ("compute.instanceGroupManagers.get",),
    ("compute", "instanceGroupManagers.abandonInstances"): (
        "compute.instanceGroupManagers.update",
        "compute.instances.update",
    ),
    ("compute", "regionInstanceGroupManagers.listManagedInstances"): ("compute.instanceGroupManagers.get",),
    ("compute", "regionInstanceGroupManagers.abandonInstances"): (
        "compute.instanceGroupManagers.update",
        "compute.instances.update",
    ),
    ("compute", "zoneOperations.wait"): ("compute.zoneOperations.get",),
    ("compute", "regionOperations.wait"): ("compute.regionOperations.get",),
    ("compute", "globalOperations.wait"): ("compute.globalOperations.get",),
    ("iam", "serviceAccounts.get"): ("iam.serviceAccounts.get",),
    ("iam", "serviceAccounts.keys.list"): ("iam.serviceAccountKeys.list",),
    ("iam", "serviceAccounts.keys.disable"): ("iam.serviceAccountKeys.disable",),
    ("iam", "serviceAccounts.disable"): ("iam.serviceAccounts.disable",),
    ("cloudresourcemanager", "projects.getIamPolicy"): ("resourcemanager.projects.getIamPolicy",),
    ("cloudresourcemanager", "projects.setIamPolicy"): ("resourcemanager.projects.setIamPolicy",),
    ("logging", "entries.list"): ("logging.logEntries.list", "logging.privateLogEntries.list"),
}


def call(service: str, operation: str, location: str | None = None, **params: Any) -> PlannedCall:
    """A planned call; the operation must be in :data:`PERMISSIONS`."""
    if (service, operation) not in PERMISSIONS:
        raise KeyError(f"{service}:{operation} is not in the gcp permission table")
    return PlannedCall(service, operation, location, params)


def permissions_for(calls: list[PlannedCall]) -> list[str]:
    """The IAM permissions a list of planned calls needs."""
    return sorted({perm for planned in calls for perm in PERMISSIONS[(planned.service, planned.operation)]})


def all_permissions() -> list[str]:
    """Every IAM permission any gcp plan may use."""
    return sorted({perm for perms in PERMISSIONS.values() for perm in perms})
