"""The one table of ARM calls the Azure provider plans and makes; RBAC permissions derive from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudir.plan import PlannedCall

STORAGE_SERVICE = "Storage.Blob"


@dataclass(frozen=True)
class ArmCall:
    """One kind of call: resource provider, operation as recorded in custody, and the SDK method behind it."""

    service: str  # resource provider namespace, e.g. Microsoft.Compute
    operation: str  # RBAC action without the namespace, e.g. snapshots/write (what custody records)
    sdk: str  # SDK method or mechanism

    @property
    def permission(self) -> str | None:
        """The Azure RBAC action needed (None for SAS-authorised blob reads)."""
        return None if self.service == STORAGE_SERVICE else f"{self.service}/{self.operation}"

    def planned(self, region: str | None = None, **params: Any) -> PlannedCall:
        """This call as a plan entry."""
        return PlannedCall(self.service, self.operation, region, params)


CALLS: dict[str, ArmCall] = {
    "vm.read": ArmCall("Microsoft.Compute", "virtualMachines/read", "virtual_machines.get / list_all"),
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
    "activity.read": ArmCall("Microsoft.Insights", "eventtypes/values/read", "activity_logs.list"),
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
