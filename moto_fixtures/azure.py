"""The Azure sandbox: the fake ARM server, a planted incident, and a provider pointed at it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudir.provider import Provider, TargetKind, TargetQuery
from moto_fixtures.azure_flows import NSG_CONTAINER, Flow, Nic, beacon, flow_log_resource, hourly_blobs, network_watcher
from moto_fixtures.azure_server import FakeAzure, utc
from moto_fixtures.blob_server import READER, FakeBlobService
from moto_fixtures.clock import incident_clock
from moto_fixtures.graph_server import FakeGraph
from moto_fixtures.sandbox import PlantedIncident
from providers.azure import CASE_TAG, create_provider
from providers.azure.calls import graph_permissions
from providers.azure.session import StaticTokenCredential

SUBSCRIPTION = "6f1c2a9e-3b7d-4c1e-9a55-1d2b3c4d5e6f"
SOC_SUBSCRIPTION = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
MEMBER_SUBSCRIPTION = "2b3c4d5e-6f70-4182-9a3b-4c5d6e7f8091"  # another subscription of the tenant ("dev")
TENANT = "3c1d7e5f-0a2b-4c6d-8e9f-a1b2c3d4e5f6"
LOCATION = "eastus"
RESOURCE_GROUP = "rg-prod-web"
SOC_RESOURCE_GROUP = "rg-cloudir-evidence"
VM_NAME = "web-vm-01"
VMSS_NAME = "vmss-web"
PRIVATE_IP = "10.0.1.4"
PUBLIC_IP = "20.62.10.45"
ATTACKER = "jdoe@contoso.example"
ATTACKER_IP = "203.0.113.66"
RESPONDER = "responder@contoso.example"
RESPONDER_IP = "198.51.100.10"
DISK_BYTES = 1024 * 1024  # served size of each planted disk (plus a 512-byte VHD footer)
ISOLATION_PREFIX = "cloudir-isolate-"
MAC = "000D3A1B2C3D"  # the NIC's MAC as flow logs write it (ARM: 00-0D-3A-1B-2C-3D)
FLOW_LOG_ACCOUNT = "stflowlogsprod"
RESPONDER_OID = "5d2f8a4e-1111-4222-8333-944455556666"
AZURE_DNS = "168.63.129.16"  # the platform's virtual public IP: DNS, DHCP, health probes


def rid(subscription: str, group: str, resource_type: str, name: str) -> str:
    """An ARM resource id."""
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{resource_type}/{name}"


def sandbox_token() -> str:
    """An unsigned JWT-shaped token naming the responder, for ARM's audience, valid for a day (the fakes check its
    claims, not a signature)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {
        "aud": "https://management.azure.com/",
        "exp": int(time.time()) + 24 * 3600,
        "upn": RESPONDER,
        "oid": RESPONDER_OID,
        "tid": TENANT,
        "roles": graph_permissions(),  # the application permissions docs/permissions.md tells responders to grant
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sandbox"


def disk_content(seed: str) -> bytes:
    """Deterministic disk bytes: data, a zero hole (sparse in the image), more data, a VHD footer."""
    blocks = bytearray()
    counter = 0
    while len(blocks) < DISK_BYTES // 2:
        blocks += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    data = bytes(blocks[: DISK_BYTES // 2])
    footer = b"conectix" + bytes(504)
    return data + bytes(DISK_BYTES // 4) + data[: DISK_BYTES // 4] + footer


class AzureSandbox:
    """A running fake Azure with one planted incident (use as a context manager)."""

    cloud = "azure"

    def __init__(self, *, page_size: int = 10) -> None:
        self.fake = FakeAzure(page_size=page_size)
        self.graph = FakeGraph(page_size=page_size)
        self.blob = FakeBlobService()
        self.incident: PlantedIncident | None = None

    def __enter__(self) -> AzureSandbox:
        self.fake.on_write = self._log_own_write
        self.fake.start()
        ca_file = Path(self.fake.ca_file)  # Graph and Blob storage are served with the same self-signed certificate
        self.graph.start(ca_file, ca_file.with_name("fake-key.pem"))
        self.blob.certificate = (ca_file, ca_file.with_name("fake-key.pem"))
        self.blob.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.blob.__exit__()
        self.graph.stop()
        self.fake.stop()

    def provider_config(self) -> dict[str, Any]:
        """The ``create_provider`` settings that point the Azure provider at this sandbox."""
        return {
            "subscription_id": SUBSCRIPTION,
            "credential": StaticTokenCredential(sandbox_token()),
            "base_url": self.fake.base_url,
            "graph_url": self.graph.base_url,
            "connection_verify": self.fake.ca_file,
            "soc_subscription": SOC_SUBSCRIPTION,
            "soc_resource_group": SOC_RESOURCE_GROUP,
            "polling_interval": 0,
            "copy_poll_interval": 0.05,
            "retry_total": 2,
            "retry_backoff_factor": 0.01,
            "image_chunk_size": 256 * 1024,
            "blob_endpoint": self.blob.base_url + "/{account}",
        }

    def provider(self) -> Provider:
        """A provider configured against the fake."""
        return create_provider(**self.provider_config())

    # -- the incident -------------------------------------------------------------------------------------
    def _log_own_write(self, operation: str, path: str, headers: dict[str, str]) -> None:
        """Log a write made through the fake into the Activity Log, with the client request id it carried."""
        event = _event(
            dt.datetime.now(dt.UTC),
            RESPONDER,
            operation,
            path,
            RESPONDER_IP,
            client_request_id=headers.get("x-ms-client-request-id"),
        )
        self.fake.activity.setdefault(SUBSCRIPTION.lower(), []).append(event)
        if operation == "Microsoft.Compute/virtualMachines/write":
            self._drop_released_identity(path)

    def _drop_released_identity(self, vm_path: str) -> None:
        """A VM without its system-assigned identity any more: Entra deletes that identity's service principal."""
        vm = self.fake.get(vm_path) or {}
        if str((vm.get("identity") or {}).get("type", "None")).startswith("SystemAssigned"):
            return

        def released(sp: dict[str, Any]) -> bool:
            names = [str(name).lower() for name in sp.get("alternativeNames") or []]
            return "isexplicit=false" in names and vm_path.lower() in names

        self.graph.directory.remove_where("servicePrincipals", released)

    def plant_incident(self) -> PlantedIncident:
        """A VMSS member VM with OS + 2 data disks, a NIC with private/public IP, an NSG, and attacker activity."""
        vm_id = self._plant_workload()
        self._plant_bystander()
        now = incident_clock()
        window_start, window_end = now - dt.timedelta(hours=3), now - dt.timedelta(minutes=5)
        self.fake.activity[SUBSCRIPTION.lower()] = self._baseline_events(now) + self._attacker_events(now, vm_id)
        self._plant_tenant(now)
        self.graph.records["signIns"] = _baseline_sign_ins(now) + _attacker_sign_ins(now)
        self.graph.records["directoryAudits"] = _directory_audits(now)
        self._plant_principals(now)
        self._plant_flow_logs(window_start, now)
        self.incident = PlantedIncident(
            cloud="azure",
            target=TargetQuery(TargetKind.INSTANCE, VM_NAME),
            attacker_principal=ATTACKER,
            window_start=utc(window_start),
            window_end=utc(window_end),
            forensic_account=SOC_SUBSCRIPTION,
            alternate_targets=[
                TargetQuery(TargetKind.INSTANCE, vm_id),
                TargetQuery(TargetKind.INSTANCE, PRIVATE_IP),
                TargetQuery(TargetKind.INSTANCE, PUBLIC_IP),
            ],
            extra={
                "subscription_id": SUBSCRIPTION,
                "resource_group": RESOURCE_GROUP,
                "vm_id": vm_id,
                "disk_ids": self.disk_ids(),
                "vmss_vm_id": rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/virtualMachineScaleSets", VMSS_NAME)
                + f"/virtualMachines/{VM_NAME}",
                "soc_resource_group": SOC_RESOURCE_GROUP,
                "attacker_ip": ATTACKER_IP,
            },
        )
        return self.incident

    def _plant_principals(self, now: dt.datetime) -> None:
        """Entra users and service principals, and role assignments: an old one of jdoe, the backdoor jdoe made."""
        directory = self.graph.directory
        directory.add("users", _user(ATTACKER_USER_ID, ATTACKER, now), memberOf=[_group("Cloud Ops")],
                      appRoleAssignments=[], authentication_methods=_methods(now))  # fmt: skip
        alice = "alice@contoso.example"
        directory.add("users", _user(str(uuid.uuid5(uuid.NAMESPACE_DNS, alice)), alice, now))
        directory.add(
            "servicePrincipals",
            _service_principal(BACKDOOR_SP_ID, BACKDOOR_APP_ID, "backup-sync", now),
            owners=[{"@odata.type": "#microsoft.graph.user", "id": ATTACKER_USER_ID, "userPrincipalName": ATTACKER}],
            memberOf=[],
            appRoleAssignments=[],
        )
        vm_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/virtualMachines", VM_NAME)
        for sp_id, name, alternative in (
            (MANAGED_IDENTITY_ID, VM_NAME, ["isExplicit=False", vm_id]),  # the VM's system-assigned identity
            (USER_ASSIGNED_SP_ID, "id-storefront", ["isExplicit=True", USER_ASSIGNED_ID]),
            (DB_IDENTITY_SP_ID, "id-db", ["isExplicit=True", DB_IDENTITY_ID]),
        ):
            identity = _service_principal(sp_id, str(uuid.uuid5(uuid.NAMESPACE_URL, sp_id)), name, now)
            identity |= {"servicePrincipalType": "ManagedIdentity", "alternativeNames": alternative,
                         "passwordCredentials": []}  # fmt: skip
            directory.add("servicePrincipals", identity, owners=[], memberOf=[], appRoleAssignments=[])
        for identity_id, sp_id in ((USER_ASSIGNED_ID, USER_ASSIGNED_SP_ID), (DB_IDENTITY_ID, DB_IDENTITY_SP_ID)):
            self.fake.put(_user_assigned_identity(identity_id, sp_id))
        directory.add(
            "applications", {"id": BACKDOOR_APPLICATION_ID, "appId": BACKDOOR_APP_ID, "displayName": "backup-sync"}
        )
        for assignment_id, principal, role, created, creator in (
            (OLD_ASSIGNMENT, ATTACKER_USER_ID, READER_ROLE, now - dt.timedelta(days=200), "admin"),
            (BACKDOOR_ASSIGNMENT, BACKDOOR_SP_ID, CONTRIBUTOR_ROLE, now - dt.timedelta(minutes=150), ATTACKER_USER_ID),
        ):
            self.fake.put(_role_assignment(assignment_id, principal, role, created, creator))

    def _plant_flow_logs(self, start: dt.datetime, end: dt.datetime) -> None:
        """The NSG's flow log (version 2, to a storage account the responder may read) and its hourly blobs: the
        implant checking in with the attacker every 5 minutes from an hour before the window, beside what a web
        server does (the platform's DNS every minute, clients over HTTPS, a package update)."""
        nsg_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/networkSecurityGroups", "nsg-web")
        storage_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Storage/storageAccounts", FLOW_LOG_ACCOUNT)
        self.fake.put(network_watcher(SUBSCRIPTION, LOCATION))
        self.fake.put(flow_log_resource(SUBSCRIPTION, LOCATION, nsg_id, storage_id))
        first = start - dt.timedelta(hours=1)
        minutes = int((end - first).total_seconds() // 60)
        flows = [*beacon(ATTACKER_IP, first + dt.timedelta(seconds=17), period=300, beats=minutes // 5)]
        for minute in range(minutes):
            when = first + dt.timedelta(minutes=minute, seconds=3)
            flows.append(Flow(when, AZURE_DNS, 53, 50000 + minute, sent=74, received=90, protocol="U"))
            if minute % 7 == 0:  # clients over HTTPS, from the internet
                client = f"198.51.100.{20 + minute % 5}"
                flows.append(Flow(when, client, 50000 + minute, 443, outbound=False, sent=4200, received=52000))
        flows.append(Flow(first + dt.timedelta(minutes=95), "91.189.91.83", 80, 51515, sent=4000, received=2_000_000))
        self.blob.add_container(FLOW_LOG_ACCOUNT, NSG_CONTAINER, version_level_worm=False)
        for name, body in hourly_blobs(nsg_id, Nic(MAC, PRIVATE_IP), flows).items():
            self.blob.add_blob(FLOW_LOG_ACCOUNT, NSG_CONTAINER, name, body)
        self.blob.grant(FLOW_LOG_ACCOUNT, RESPONDER_OID, READER)

    def disk_ids(self) -> list[str]:
        """The planted VM's OS disk then data disks."""
        names = [f"{VM_NAME}_OsDisk_1", f"{VM_NAME}-data-0", f"{VM_NAME}-data-1"]
        return [rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/disks", name) for name in names]

    def _plant_workload(self) -> str:
        put = self.fake.put
        vm_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/virtualMachines", VM_NAME)
        vmss_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/virtualMachineScaleSets", VMSS_NAME)
        nsg_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/networkSecurityGroups", "nsg-web")
        nic_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/networkInterfaces", f"{VM_NAME}-nic")
        pip_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/publicIPAddresses", f"{VM_NAME}-pip")
        subnet_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/virtualNetworks", "vnet-prod") + "/subnets/web"
        des_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/diskEncryptionSets", "des-prod")
        tags = {"env": "prod", "app": "storefront"}
        disk_ids = self.disk_ids()
        for index, disk_id in enumerate(disk_ids):
            encryption = (
                {"type": "EncryptionAtRestWithCustomerKey", "diskEncryptionSetId": des_id}
                if index == 2
                else {"type": "EncryptionAtRestWithPlatformKey"}
            )
            put(
                {
                    "id": disk_id,
                    "name": disk_id.rsplit("/", 1)[1],
                    "type": "Microsoft.Compute/disks",
                    "location": LOCATION,
                    "tags": tags,
                    "sku": {"name": "Premium_LRS"},
                    "managedBy": vm_id,
                    "properties": {
                        "diskSizeGB": 30 if index == 0 else 64,
                        "osType": "Linux" if index == 0 else None,
                        "creationData": {"createOption": "FromImage" if index == 0 else "Empty"},
                        "encryption": encryption,
                        "diskState": "Attached",
                        "provisioningState": "Succeeded",
                        "uniqueId": str(uuid.uuid5(uuid.NAMESPACE_URL, disk_id)),
                    },
                },
                disk_content(disk_id),
            )
        put(
            {
                "id": vmss_id,
                "name": VMSS_NAME,
                "type": "Microsoft.Compute/virtualMachineScaleSets",
                "location": LOCATION,
                "tags": tags,
                "sku": {"name": "Standard_D2s_v5", "capacity": 3},
                "properties": {"orchestrationMode": "Flexible", "provisioningState": "Succeeded"},
            }
        )
        put(
            {
                "id": f"{vmss_id}/virtualMachines/{VM_NAME}",
                "name": VM_NAME,
                "instanceId": VM_NAME,
                "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
                "location": LOCATION,
                "properties": {
                    "protectionPolicy": {"protectFromScaleIn": False, "protectFromScaleSetActions": False},
                    "provisioningState": "Succeeded",
                },
            }
        )
        put(
            {
                "id": vm_id,
                "name": VM_NAME,
                "type": "Microsoft.Compute/virtualMachines",
                "location": LOCATION,
                "tags": tags,
                "identity": {
                    "type": "SystemAssigned, UserAssigned",
                    "principalId": MANAGED_IDENTITY_ID,
                    "tenantId": TENANT,
                    "userAssignedIdentities": {USER_ASSIGNED_ID: _identity_value(USER_ASSIGNED_SP_ID)},
                },
                "properties": {
                    "vmId": str(uuid.uuid5(uuid.NAMESPACE_URL, vm_id)),
                    "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                    "virtualMachineScaleSet": {"id": vmss_id},
                    "storageProfile": {
                        "osDisk": {
                            "osType": "Linux",
                            "name": disk_ids[0].rsplit("/", 1)[1],
                            "createOption": "FromImage",
                            "managedDisk": {"id": disk_ids[0]},
                        },
                        "dataDisks": [
                            {
                                "lun": lun,
                                "name": disk_id.rsplit("/", 1)[1],
                                "createOption": "Attach",
                                "managedDisk": {"id": disk_id},
                            }
                            for lun, disk_id in enumerate(disk_ids[1:])
                        ],
                    },
                    "osProfile": {"computerName": VM_NAME, "adminUsername": "azureuser"},
                    "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]},
                    "securityProfile": {"encryptionAtHost": False},
                    "provisioningState": "Succeeded",
                },
            }
        )
        put(
            {
                "id": nic_id,
                "name": nic_id.rsplit("/", 1)[1],
                "type": "Microsoft.Network/networkInterfaces",
                "location": LOCATION,
                "tags": tags,
                "properties": {
                    "ipConfigurations": [
                        {
                            "id": f"{nic_id}/ipConfigurations/ipconfig1",
                            "name": "ipconfig1",
                            "properties": {
                                "privateIPAddress": PRIVATE_IP,
                                "privateIPAllocationMethod": "Dynamic",
                                "primary": True,
                                "subnet": {"id": subnet_id},
                                "publicIPAddress": {"id": pip_id},
                            },
                        }
                    ],
                    "networkSecurityGroup": {"id": nsg_id},
                    "virtualMachine": {"id": vm_id},
                    "macAddress": "00-0D-3A-1B-2C-3D",
                    "provisioningState": "Succeeded",
                },
            }
        )
        put(
            {
                "id": pip_id,
                "name": pip_id.rsplit("/", 1)[1],
                "type": "Microsoft.Network/publicIPAddresses",
                "location": LOCATION,
                "properties": {
                    "ipAddress": PUBLIC_IP,
                    "publicIPAllocationMethod": "Static",
                    "ipConfiguration": {"id": f"{nic_id}/ipConfigurations/ipconfig1"},
                    "provisioningState": "Succeeded",
                },
            }
        )
        put(
            {
                "id": nsg_id,
                "name": "nsg-web",
                "type": "Microsoft.Network/networkSecurityGroups",
                "location": LOCATION,
                "properties": {
                    "securityRules": [
                        _rule(nsg_id, "allow-https", 100, direction="Inbound", access="Allow", port="443"),
                        _rule(nsg_id, "allow-ssh-any", 110, direction="Inbound", access="Allow", port="22"),
                    ],
                    "provisioningState": "Succeeded",
                },
            }
        )
        return vm_id

    def _plant_bystander(self) -> None:
        group = "rg-prod-db"
        vm_id = rid(SUBSCRIPTION, group, "Microsoft.Compute/virtualMachines", "db-vm-01")
        nic_id = rid(SUBSCRIPTION, group, "Microsoft.Network/networkInterfaces", "db-vm-01-nic")
        disk_id = rid(SUBSCRIPTION, group, "Microsoft.Compute/disks", "db-vm-01_OsDisk_1")
        self.fake.put(
            {
                "id": disk_id,
                "name": "db-vm-01_OsDisk_1",
                "type": "Microsoft.Compute/disks",
                "location": LOCATION,
                "properties": {"diskSizeGB": 30, "encryption": {"type": "EncryptionAtRestWithPlatformKey"}},
            },
            disk_content(disk_id),
        )
        self.fake.put(
            {
                "id": vm_id,
                "name": "db-vm-01",
                "type": "Microsoft.Compute/virtualMachines",
                "location": LOCATION,
                "identity": {
                    "type": "UserAssigned",
                    "userAssignedIdentities": {
                        USER_ASSIGNED_ID: _identity_value(USER_ASSIGNED_SP_ID),
                        DB_IDENTITY_ID: _identity_value(DB_IDENTITY_SP_ID),
                    },
                },
                "properties": {
                    "storageProfile": {"osDisk": {"name": "db-vm-01_OsDisk_1", "managedDisk": {"id": disk_id}}},
                    "networkProfile": {"networkInterfaces": [{"id": nic_id}]},
                },
            }
        )
        self.fake.put(
            {
                "id": nic_id,
                "name": "db-vm-01-nic",
                "type": "Microsoft.Network/networkInterfaces",
                "location": LOCATION,
                "properties": {
                    "ipConfigurations": [
                        {"id": f"{nic_id}/ipConfigurations/ipconfig1", "properties": {"privateIPAddress": "10.0.2.5"}}
                    ],
                    "virtualMachine": {"id": vm_id},
                },
            }
        )

    def _plant_tenant(self, now: dt.datetime) -> None:
        """The tenant's subscriptions as GET /subscriptions lists them, and the attacker's step into a member one."""
        self.fake.subscriptions = [
            {"id": f"/subscriptions/{sub}", "authorizationSource": "RoleBased", "managedByTenants": [],
             "subscriptionId": sub, "tenantId": TENANT, "displayName": name, "state": "Enabled",
             "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                      "quotaId": "EnterpriseAgreement_2014-09-01", "spendingLimit": "Off"}}
            for sub, name in ((SUBSCRIPTION, "prod"), (MEMBER_SUBSCRIPTION, "dev"), (SOC_SUBSCRIPTION, "soc"))
        ]  # fmt: skip
        member = f"/subscriptions/{MEMBER_SUBSCRIPTION}"
        events = [
            _event(now - dt.timedelta(minutes=minutes), ATTACKER, operation, f"{member}{rest}", ATTACKER_IP)
            for minutes, operation, rest in (
                (95, "Microsoft.Resources/subscriptions/resourceGroups/write", "/resourceGroups/rg-miner"),
                (90, "Microsoft.Compute/virtualMachines/write",
                 "/resourceGroups/rg-miner/providers/Microsoft.Compute/virtualMachines/gpu-01"),
            )
        ]  # fmt: skip
        self.fake.activity[MEMBER_SUBSCRIPTION.lower()] = [e | {"subscriptionId": MEMBER_SUBSCRIPTION} for e in events]

    def _baseline_events(self, now: dt.datetime) -> list[dict[str, Any]]:
        deployer = "deploy-pipeline (app 6c8e0f1a-3333-4444-8555-b66677778888)"
        events = []
        for hours in range(2, 72, 6):
            when = now - dt.timedelta(hours=hours)
            events.append(
                _event(when, deployer, "Microsoft.Resources/deployments/write", _deployment(when), "198.51.100.10")
            )
        events.append(
            _event(
                now - dt.timedelta(hours=30),
                "alice@contoso.example",
                "Microsoft.Compute/virtualMachines/restart/action",
                rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/virtualMachines", VM_NAME),
                "198.51.100.20",
            )
        )
        return events

    def _attacker_events(self, now: dt.datetime, vm_id: str) -> list[dict[str, Any]]:
        sub_scope = f"/subscriptions/{SUBSCRIPTION}"
        nsg_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/networkSecurityGroups", "nsg-web")
        snapshot_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/snapshots", "snap-exfil")
        role_assignment = f"{sub_scope}/providers/Microsoft.Authorization/roleAssignments/{BACKDOOR_ASSIGNMENT}"
        diagnostic = f"{sub_scope}/providers/microsoft.insights/diagnosticSettings/to-sentinel"
        rule = f"{nsg_id}/securityRules/allow-ssh-any"
        steps = [
            (150, "Microsoft.Authorization/roleAssignments/write", role_assignment),
            (140, "Microsoft.Insights/diagnosticSettings/delete", diagnostic),
            (120, "Microsoft.Network/networkSecurityGroups/securityRules/write", rule),
            (100, "Microsoft.Compute/virtualMachines/runCommand/action", vm_id),
            (80, "Microsoft.Compute/snapshots/write", snapshot_id),
            (75, "Microsoft.Compute/snapshots/beginGetAccess/action", snapshot_id),
        ]  # fmt: skip
        events = []
        for minutes, operation, resource_id in steps:
            when = now - dt.timedelta(minutes=minutes)
            correlation = str(uuid.uuid4())
            events.append(
                _event(
                    when, ATTACKER, operation, resource_id, ATTACKER_IP, status="Started", correlation_id=correlation
                )
            )
            events.append(
                _event(
                    when + dt.timedelta(seconds=4),
                    ATTACKER,
                    operation,
                    resource_id,
                    ATTACKER_IP,
                    correlation_id=correlation,
                )
            )
        # the implant the run command planted uses the VM's managed identity token, out through the VM's public IP
        storage_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Storage/storageAccounts", FLOW_LOG_ACCOUNT)
        for minutes, operation, resource_id in (
            (95, "Microsoft.Compute/virtualMachines/read", vm_id),
            (94, "Microsoft.Storage/storageAccounts/listKeys/action", storage_id),
        ):
            when = now - dt.timedelta(minutes=minutes)
            events.append(
                managed_identity_event(when, MANAGED_IDENTITY_ID, vm_id, operation, resource_id, client_ip=PUBLIC_IP)
            )
        return events

    # -- inspection -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the fake holds (resources, grants, disks)."""
        return self.fake.state()

    def snapshots_for_case(self, case_id: str) -> list[str]:
        """Ids of snapshots (in any subscription) tagged with the case id."""
        return sorted(
            snapshot["id"]
            for snapshot in self.fake.of_type("Microsoft.Compute/snapshots")
            if (snapshot.get("tags") or {}).get(CASE_TAG) == case_id
        )

    def is_preserved(self, incident: PlantedIncident) -> bool:
        """A CanNotDelete lock on the VM and each disk, and the VMSS instance protected from scale-in."""
        locked = all(
            any(lock["properties"].get("level") == "CanNotDelete" for lock in self.fake.locks_on(resource_id))
            for resource_id in [incident.extra["vm_id"], *incident.extra["disk_ids"]]
        )
        member = self.fake.get(incident.extra["vmss_vm_id"]) or {}
        protected = bool(member.get("properties", {}).get("protectionPolicy", {}).get("protectFromScaleIn"))
        return locked and protected

    def is_isolated(self, incident: PlantedIncident) -> bool:
        """Every NIC of the VM carries a cloudir NSG whose rules end in deny-all both ways."""
        vm = self.fake.get(incident.extra["vm_id"]) or {}
        nics = [self.fake.get(ref["id"]) or {} for ref in vm["properties"]["networkProfile"]["networkInterfaces"]]
        for nic in nics:
            nsg = self.fake.get(nic.get("properties", {}).get("networkSecurityGroup", {}).get("id", "")) or {}
            if not nsg.get("name", "").startswith(ISOLATION_PREFIX):
                return False
            denies = {
                rule["properties"]["direction"]
                for rule in nsg["properties"].get("securityRules", [])
                if rule["properties"]["access"] == "Deny"
                and rule["properties"].get("sourceAddressPrefix") == "*"
                and rule["properties"].get("destinationAddressPrefix") == "*"
            }
            if denies != {"Inbound", "Outbound"}:
                return False
        return bool(nics)

    @contextmanager
    def fail_next(self, operation: str, error_code: str = "InternalError") -> Iterator[None]:
        """Fail every call of an operation (``Microsoft.Compute/snapshots/write``, ``snapshots/write``) in the block."""
        self.fake.failures[operation] = error_code
        try:
            yield
        finally:
            self.fake.failures.pop(operation, None)

    @contextmanager
    def fail_provisioning(self, operation: str, error_code: str = "InternalDiskManagementError") -> Iterator[None]:
        """Accept every PUT of an operation (``snapshots/write``) in the block, and end its resource Failed."""
        self.fake.provisioning_failures[operation] = error_code
        try:
            yield
        finally:
            self.fake.provisioning_failures.pop(operation, None)

    def throttle(self, operation: str, *retry_after: int) -> None:
        """Answer the next calls of ``operation`` with 429 and these Retry-After values."""
        self.fake.throttles.setdefault(operation.lower(), []).extend(retry_after)


def _rule(nsg_id: str, name: str, priority: int, *, direction: str, access: str, port: str) -> dict[str, Any]:
    return {
        "id": f"{nsg_id}/securityRules/{name}",
        "name": name,
        "properties": {
            "priority": priority,
            "direction": direction,
            "access": access,
            "protocol": "Tcp",
            "sourceAddressPrefix": "*",
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*",
            "destinationPortRange": port,
        },
    }


def _deployment(when: dt.datetime) -> str:
    return rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Resources/deployments", f"storefront-{when:%Y%m%d%H}")


def _event(
    when: dt.datetime,
    caller: str,
    operation: str,
    resource_id: str,
    client_ip: str,
    *,
    status: str = "Succeeded",
    correlation_id: str | None = None,
    client_request_id: str | None = None,
    method: str = "PUT",
) -> dict[str, Any]:
    """One Activity Log record in the REST shape of ``eventtypes/management/values``."""
    namespace = operation.split("/", maxsplit=1)[0]
    resource_type = "/".join(operation.split("/")[:-1])
    event_id = str(uuid.uuid4())
    group = resource_id.split("/")[4] if "/resourceGroups/" in resource_id else None
    ticks = int(when.timestamp() * 10_000_000) + 621_355_968_000_000_000
    upn = "@" in caller
    return {
        "authorization": {"action": operation, "scope": resource_id},
        "caller": caller,
        "channels": "Operation",
        "claims": {"ipaddr": client_ip, "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": caller}
        if upn
        else {"ipaddr": client_ip, "appid": caller.rsplit("app ", maxsplit=1)[-1].rstrip(")")},
        "correlationId": correlation_id or str(uuid.uuid4()),
        "description": "",
        "eventDataId": event_id,
        "eventName": {"value": "BeginRequest" if status == "Started" else "EndRequest", "localizedValue": ""},
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "httpRequest": {
            "clientRequestId": client_request_id or str(uuid.uuid4()),
            "clientIpAddress": client_ip,
            "method": method,
        },
        "id": f"{resource_id}/events/{event_id}/ticks/{ticks}",
        "level": "Informational",
        "resourceGroupName": group,
        "resourceProviderName": {"value": namespace, "localizedValue": namespace},
        "resourceId": resource_id,
        "resourceType": {"value": resource_type, "localizedValue": resource_type},
        "operationId": str(uuid.uuid4()),
        "operationName": {"value": operation, "localizedValue": operation},
        "properties": {"statusCode": "OK" if status == "Succeeded" else ""},
        "status": {"value": status, "localizedValue": status},
        "subStatus": {"value": "OK" if status == "Succeeded" else "", "localizedValue": ""},
        "eventTimestamp": utc(when),
        "submissionTimestamp": utc(when + dt.timedelta(seconds=40)),
        "subscriptionId": SUBSCRIPTION,
        "tenantId": TENANT,
    }


def managed_identity_event(
    when: dt.datetime, principal_id: str, identity_resource: str, operation: str, resource_id: str, *, client_ip: str
) -> dict[str, Any]:
    """An Activity Log record of a call made with a managed identity's token: the caller is its principal (object)
    id; the claims carry it as ``objectidentifier``, its client id as ``appid``, ``idtyp`` app and the identity's
    resource (the VM for a system-assigned one) as ``xms_mirid``."""
    record = _event(when, principal_id, operation, resource_id, client_ip)
    record["claims"] = {
        "ipaddr": client_ip,
        "appid": str(uuid.uuid5(uuid.NAMESPACE_URL, principal_id)),
        "http://schemas.microsoft.com/identity/claims/objectidentifier": principal_id,
        "idtyp": "app",
        "xms_mirid": identity_resource,
    }
    return record


# -- Entra ID (Microsoft Graph v1.0 signIn and directoryAudit resources) -----------------------------------
ATTACKER_USER_ID = "7e1f3a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
GLOBAL_ADMIN_ROLE = "62e90394-69f5-4237-9190-012177145e10"  # the Global Administrator role template id


def _sign_in(
    when: dt.datetime, upn: str, ip: str, *, error_code: int = 0, reason: str | None = None, app: str = "Azure Portal"
) -> dict[str, Any]:
    user_id = ATTACKER_USER_ID if upn == ATTACKER else str(uuid.uuid5(uuid.NAMESPACE_DNS, upn))
    return {
        "id": str(uuid.uuid4()),
        "createdDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userDisplayName": upn.split("@", 1)[0],
        "userPrincipalName": upn,
        "userId": user_id,
        "appId": "c44b4083-3bb0-49c1-b47d-974e53cbdf3c",
        "appDisplayName": app,
        "ipAddress": ip,
        "clientAppUsed": "Browser",
        "correlationId": str(uuid.uuid4()),
        "conditionalAccessStatus": "notApplied",
        "isInteractive": True,
        "riskDetail": "none",
        "riskLevelAggregated": "none",
        "riskLevelDuringSignIn": "none",
        "riskState": "none",
        "riskEventTypes_v2": [],
        "resourceDisplayName": "Windows Azure Service Management API",
        "resourceId": "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        "status": {"errorCode": error_code, "failureReason": reason, "additionalDetails": None},
        "deviceDetail": {"deviceId": "", "displayName": "", "operatingSystem": "Linux", "browser": "Firefox 128.0"},
        "location": {
            "city": "Amsterdam" if ip == ATTACKER_IP else "Seattle",
            "state": "",
            "countryOrRegion": "NL" if ip == ATTACKER_IP else "US",
            "geoCoordinates": {},
        },
        "appliedConditionalAccessPolicies": [],
    }


def _baseline_sign_ins(now: dt.datetime) -> list[dict[str, Any]]:
    return [
        _sign_in(now - dt.timedelta(hours=hours), user, "198.51.100.20")
        for hours in range(4, 72, 8)
        for user in ("alice@contoso.example", ATTACKER)
    ]


def _attacker_sign_ins(now: dt.datetime) -> list[dict[str, Any]]:
    failures = [
        _sign_in(now - dt.timedelta(minutes=175 - i), ATTACKER, ATTACKER_IP, error_code=50126,
                 reason="Error validating credentials due to invalid username or password.")
        for i in range(4)
    ]  # fmt: skip
    return [*failures, _sign_in(now - dt.timedelta(minutes=170), ATTACKER, ATTACKER_IP)]


def _directory_audits(now: dt.datetime) -> list[dict[str, Any]]:
    initiator = {
        "user": {
            "id": ATTACKER_USER_ID,
            "displayName": "jdoe",
            "userPrincipalName": ATTACKER,
            "ipAddress": ATTACKER_IP,
        },
        "app": None,
    }

    def audit(minutes: int, activity: str, category: str, target: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"Directory_{uuid.uuid4()}",
            "category": category,
            "correlationId": str(uuid.uuid4()),
            "result": "success",
            "resultReason": "",
            "activityDisplayName": activity,
            "activityDateTime": (now - dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "loggedByService": "Core Directory",
            "operationType": "Add",
            "initiatedBy": initiator,
            "targetResources": [target],
            "additionalDetails": [],
        }

    role_target = {
        "id": ATTACKER_USER_ID, "displayName": None, "type": "User", "userPrincipalName": ATTACKER,
        "modifiedProperties": [
            {"displayName": "Role.TemplateId", "oldValue": None, "newValue": f'"{GLOBAL_ADMIN_ROLE}"'},
            {"displayName": "Role.DisplayName", "oldValue": None, "newValue": '"Global Administrator"'},
        ],
    }  # fmt: skip
    app_target = {
        "id": "4b8c1d2e-5555-4666-8777-988899990000", "displayName": "backup-sync", "type": "ServicePrincipal",
        "userPrincipalName": None,
        "modifiedProperties": [
            {"displayName": "KeyDescription", "oldValue": "[]", "newValue": '["[KeyIdentifier=..."]'}
        ],
    }  # fmt: skip
    return [
        audit(160, "Add member to role", "RoleManagement", role_target),
        audit(155, "Add service principal credentials", "ApplicationManagement", app_target),
    ]


# -- Entra principals and role assignments (Graph v1.0 user / servicePrincipal, ARM roleAssignments 2022-04-01) -----
BACKDOOR_SP_ID = "4b8c1d2e-5555-4666-8777-988899990000"
BACKDOOR_APP_ID = "0f1e2d3c-4b5a-4968-8776-655443322110"
BACKDOOR_APPLICATION_ID = "9d8c7b6a-5f4e-4d3c-8b2a-190817263544"
MANAGED_IDENTITY_ID = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"
USER_ASSIGNED_SP_ID = "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f"  # id-storefront: on web-vm-01 and db-vm-01
DB_IDENTITY_SP_ID = "6e7f8091-ab2c-4d3e-9f40-5b6c7d8e9fa0"  # id-db: on db-vm-01 only
_IDENTITIES = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers"
USER_ASSIGNED_ID = f"{_IDENTITIES}/Microsoft.ManagedIdentity/userAssignedIdentities/id-storefront"
DB_IDENTITY_ID = f"{_IDENTITIES}/Microsoft.ManagedIdentity/userAssignedIdentities/id-db"
OLD_ASSIGNMENT = "0a7b2c3d-1111-4222-8333-000000000001"
BACKDOOR_ASSIGNMENT = "0a7b2c3d-1111-4222-8333-000000000002"
_ROLES = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions"
READER_ROLE = f"{_ROLES}/acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR_ROLE = f"{_ROLES}/b24988ac-6180-42a0-ab88-20f7382dd24c"


def _graph_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _user(user_id: str, upn: str, now: dt.datetime) -> dict[str, Any]:
    name = upn.split("@", 1)[0]
    return {
        "id": user_id, "userPrincipalName": upn, "displayName": name, "givenName": name, "surname": None,
        "mail": upn, "businessPhones": [], "jobTitle": None, "mobilePhone": None, "officeLocation": None,
        "preferredLanguage": "en-US", "userType": "Member", "accountEnabled": True,
        "createdDateTime": _graph_time(now - dt.timedelta(days=400)),
        "lastPasswordChangeDateTime": _graph_time(now - dt.timedelta(days=90)),
        "signInSessionsValidFromDateTime": _graph_time(now - dt.timedelta(days=90)),
        "onPremisesSyncEnabled": None, "creationType": None, "identities": [],
        "signInActivity": {
            "lastSignInDateTime": _graph_time(now - dt.timedelta(minutes=170)),
            "lastNonInteractiveSignInDateTime": _graph_time(now - dt.timedelta(minutes=30)),
            "lastSuccessfulSignInDateTime": _graph_time(now - dt.timedelta(minutes=170)),
        },
    }  # fmt: skip


def _group(name: str) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.group", "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "displayName": name, "securityEnabled": True}  # fmt: skip


def _methods(now: dt.datetime) -> list[dict[str, Any]]:
    """A password, and the authenticator app the attacker registered after signing in."""
    return [
        {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
         "id": "28c10230-6103-485e-b985-444c60001490", "createdDateTime": None},
        {"@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
         "id": str(uuid.uuid4()), "displayName": "SM-A515F", "deviceTag": "SoftwareTokenActivated",
         "createdDateTime": _graph_time(now - dt.timedelta(minutes=165))},
    ]  # fmt: skip


def _service_principal(sp_id: str, app_id: str, name: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": sp_id, "appId": app_id, "displayName": name, "accountEnabled": True,
        "servicePrincipalType": "Application", "appOwnerOrganizationId": TENANT, "tags": [],
        "keyCredentials": [],
        "passwordCredentials": [
            {"keyId": str(uuid.uuid4()), "displayName": "sync", "hint": "Q~x",
             "startDateTime": _graph_time(now - dt.timedelta(minutes=155)),
             "endDateTime": _graph_time(now + dt.timedelta(days=730)), "secretText": None}
        ],
    }  # fmt: skip


def _role_assignment(name: str, principal: str, role: str, created: dt.datetime, creator: str) -> dict[str, Any]:
    scope = f"/subscriptions/{SUBSCRIPTION}"
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": role, "principalId": principal,
            "principalType": "User" if principal == ATTACKER_USER_ID else "ServicePrincipal",
            "scope": scope, "condition": None, "conditionVersion": None, "description": None,
            "createdOn": utc(created), "updatedOn": utc(created), "createdBy": creator, "updatedBy": creator,
            "delegatedManagedIdentityResourceId": None,
        },
    }  # fmt: skip


def _identity_value(sp_id: str) -> dict[str, str]:
    """A user-assigned identity as a VM's ``identity.userAssignedIdentities`` shows it (read-only ids)."""
    return {"principalId": sp_id, "clientId": str(uuid.uuid5(uuid.NAMESPACE_URL, sp_id))}


def _user_assigned_identity(identity_id: str, sp_id: str) -> dict[str, Any]:
    return {
        "id": identity_id,
        "name": identity_id.rsplit("/", 1)[1],
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": LOCATION,
        "properties": {"tenantId": TENANT, **_identity_value(sp_id)},
    }
