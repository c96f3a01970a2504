"""The one table of ARM and Microsoft Graph calls the Azure provider plans and makes; permissions derive from it.

ARM calls need Azure RBAC actions (the custom role of ``cloudir iam-policy azure``); Graph calls need Entra
application permissions granted to the responder's app registration (:func:`graph_permissions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudir.plan import PlannedCall
from providers.azure.session import GRAPH_SERVICE

STORAGE_SERVICE = "Storage.Blob"


@dataclass(frozen=True)
class ArmCall:
    """One kind of call: resource provider, operation as recorded in custody, and the SDK method behind it."""

    service: str  # resource provider namespace, e.g. Microsoft.Compute
    operation: str  # RBAC action without the namespace, e.g. snapshots/write (what custody records)
    sdk: str  # SDK method or mechanism

    @property
    def permission(self) -> str | None:
        """The Azure RBAC action needed (None for blob reads: a SAS or a data-plane role authorises them)."""
        return None if self.service == STORAGE_SERVICE else f"{self.service}/{self.operation}"

    def planned(self, region: str | None = None, **params: Any) -> PlannedCall:
        """This call as a plan entry."""
        return PlannedCall(self.service, self.operation, region, params)


CALLS: dict[str, ArmCall] = {
    "vm.read": ArmCall("Microsoft.Compute", "virtualMachines/read", "virtual_machines.get / list_all"),
    "vm.write": ArmCall("Microsoft.Compute", "virtualMachines/write", "virtual_machines.begin_update (identity)"),
    "vmss.read": ArmCall("Microsoft.Compute", "virtualMachineScaleSets/read", "virtual_machine_scale_sets.get"),
    "vmss_vm.read": ArmCall(
        "Microsoft.Compute", "virtualMachineScaleSets/virtualMachines/read", "virtual_machine_scale_set_vms.get"
    ),
    "vmss_vm.write": ArmCall(
        "Microsoft.Compute",
        "virtualMachineScaleSets/virtualMachines/write",
        "virtual_machine_scale_set_vms.begin_update",
    ),
    "disk.read": ArmCall("Microsoft.Compute", "disks/read", "disks.get"),
    "snapshot.read": ArmCall("Microsoft.Compute", "snapshots/read", "snapshots.get"),
    "snapshot.write": ArmCall("Microsoft.Compute", "snapshots/write", "snapshots.begin_create_or_update"),
    "snapshot.grant": ArmCall("Microsoft.Compute", "snapshots/beginGetAccess/action", "snapshots.begin_grant_access"),
    "snapshot.revoke": ArmCall("Microsoft.Compute", "snapshots/endGetAccess/action", "snapshots.begin_revoke_access"),
    "restore_points.write": ArmCall(
        "Microsoft.Compute", "restorePointCollections/write", "restore_point_collections.create_or_update"
    ),
    "restore_point.read": ArmCall(
        "Microsoft.Compute", "restorePointCollections/restorePoints/read", "restore_points.get"
    ),
    "restore_point.write": ArmCall(
        "Microsoft.Compute", "restorePointCollections/restorePoints/write", "restore_points.begin_create"
    ),
    "compute.poll": ArmCall("Microsoft.Compute", "locations/operations/read", "long-running operation status"),
    "blob.read": ArmCall(STORAGE_SERVICE, "GetBlob", "ranged GET on the read-only SAS URL"),
    "nic.read": ArmCall("Microsoft.Network", "networkInterfaces/read", "network_interfaces.get / list_all"),
    "nic.write": ArmCall("Microsoft.Network", "networkInterfaces/write", "network_interfaces.begin_create_or_update"),
    "nsg.read": ArmCall("Microsoft.Network", "networkSecurityGroups/read", "network_security_groups.get"),
    "nsg.write": ArmCall(
        "Microsoft.Network", "networkSecurityGroups/write", "network_security_groups.begin_create_or_update"
    ),
    "nsg.join": ArmCall("Microsoft.Network", "networkSecurityGroups/join/action", "checked by ARM on the NIC write"),
    "pip.read": ArmCall("Microsoft.Network", "publicIPAddresses/read", "public_ip_addresses.get / list_all"),
    "network.poll": ArmCall("Microsoft.Network", "locations/operations/read", "long-running operation status"),
    "lock.write": ArmCall(
        "Microsoft.Authorization", "locks/write", "management_locks.create_or_update_at_resource_level"
    ),
    "subscription.read": ArmCall("Microsoft.Resources", "subscriptions/read", "GET /subscriptions"),
    "activity.read": ArmCall("Microsoft.Insights", "eventtypes/values/read", "activity_logs.list"),
    "watcher.read": ArmCall("Microsoft.Network", "networkWatchers/read", "network_watchers.list_all"),
    "flowlog.read": ArmCall("Microsoft.Network", "networkWatchers/flowLogs/read", "flow_logs.list"),
    "flowblob.list": ArmCall(STORAGE_SERVICE, "ListBlobs", "list_blobs (Storage Blob Data Reader)"),
    "flowblob.read": ArmCall(STORAGE_SERVICE, "GetBlob", "download_blob, ranged (Storage Blob Data Reader)"),
    "role_assignment.read": ArmCall(
        "Microsoft.Authorization", "roleAssignments/read", "GET roleAssignments?$filter=principalId eq '{id}'"
    ),
    "role_assignment.delete": ArmCall(
        "Microsoft.Authorization", "roleAssignments/delete", "DELETE roleAssignments/{name}"
    ),
}


@dataclass(frozen=True)
class GraphCall:
    """One Microsoft Graph v1.0 call: the operation as custody records it and the application permissions it needs."""

    operation: str  # e.g. users/{id}/revokeSignInSessions/action
    permissions: tuple[str, ...]  # least-privileged application permissions, all needed

    def planned(self, **params: Any) -> PlannedCall:
        """This call as a plan entry."""
        return PlannedCall(GRAPH_SERVICE, self.operation, None, params)


GRAPH_CALLS: dict[str, GraphCall] = {
    "object.read": GraphCall("directoryObjects/{id}/read", ("Directory.Read.All",)),
    "sp_by_app.read": GraphCall("servicePrincipals(appId={appId})/read", ("Application.Read.All",)),
    "user.read": GraphCall("users/{id}/read", ("User.Read.All", "AuditLog.Read.All")),  # signInActivity
    "user.memberof": GraphCall("users/{id}/memberOf/read", ("GroupMember.Read.All",)),
    "user.approles": GraphCall("users/{id}/appRoleAssignments/read", ("Directory.Read.All",)),
    "user.methods": GraphCall("users/{id}/authentication/methods/read", ("UserAuthenticationMethod.Read.All",)),
    "user.revoke": GraphCall("users/{id}/revokeSignInSessions/action", ("User.RevokeSessions.All",)),
    "user.write": GraphCall("users/{id}/write", ("User.EnableDisableAccount.All", "User.Read.All")),
    "sp.read": GraphCall("servicePrincipals/{id}/read", ("Application.Read.All",)),
    "sp.owners": GraphCall("servicePrincipals/{id}/owners/read", ("Application.Read.All",)),
    "sp.memberof": GraphCall("servicePrincipals/{id}/memberOf/read", ("GroupMember.Read.All",)),
    "sp.approles": GraphCall("servicePrincipals/{id}/appRoleAssignments/read", ("Application.Read.All",)),
    "sp.write": GraphCall("servicePrincipals/{id}/write", ("Application.ReadWrite.All",)),
    "signins.read": GraphCall("auditLogs/signIns/read", ("AuditLog.Read.All",)),
    "audits.read": GraphCall("auditLogs/directoryAudits/read", ("AuditLog.Read.All",)),
}


def call(key: str, region: str | None = None, **params: Any) -> PlannedCall:
    """A planned call from the table."""
    return CALLS[key].planned(region, **params)


def permission(key: str) -> str | None:
    """The RBAC action of a table entry."""
    return CALLS[key].permission


def required_permissions() -> list[str]:
    """Every RBAC action any Azure plan may use."""
    return sorted({perm for entry in CALLS.values() if (perm := entry.permission)})


def graph_call(key: str, **params: Any) -> PlannedCall:
    """A planned Graph call from the table."""
    return GRAPH_CALLS[key].planned(**params)


def graph_permission(key: str) -> str:
    """The Graph permissions of a table entry, as an error hint names them."""
    return " and ".join(GRAPH_CALLS[key].permissions)


def graph_permissions() -> list[str]:
    """Every Microsoft Graph application permission any Azure plan may use."""
    return sorted({perm for entry in GRAPH_CALLS.values() for perm in entry.permissions})
