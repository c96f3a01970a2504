"""The Azure adapter: find a VM, preserve it, snapshot/copy/image its disks, isolate it, pull the Activity Log."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute import models
from rich.console import Console

from cloudir import __version__
from cloudir.case import Case
from cloudir.errors import CapabilityNotSupportedError, CloudirError, TargetNotFoundError
from cloudir.plan import Plan, Step, StepContext, StepFunc, StepKind, offline_plan
from cloudir.progress import operation_progress
from cloudir.provider import (
    AcquireOptions,
    Capability,
    ContainOptions,
    LogPullRequest,
    Target,
    TargetKind,
    TargetQuery,
    bind_recorder,
    require_target,
)
from cloudir.safepath import path_part
from providers.azure import activity, calls, principals
from providers.azure.calls import call
from providers.azure.image import export_snapshot
from providers.azure.session import AzureSession, azure_errors, token_identity

CASE_TAG = "cloudir-case-id"
SOURCE_TAG = "cloudir-source"
LOCK_LEVEL = "CanNotDelete"
ISOLATION_PREFIX = "cloudir-isolate-"
_VM_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines/([^/]+)$",
    re.IGNORECASE,
)
SNAPSHOT_ATTEMPTS = 3  # a snapshot found Failed is made again under a new name at most twice
_ID_PARTS = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/.+/([^/]+)$", re.IGNORECASE)


def as_json(model: Any) -> dict[str, Any]:
    """An SDK model in its REST JSON shape."""
    data: dict[str, Any] = model.as_dict()
    return data


def id_parts(resource_id: str) -> tuple[str, str, str]:
    """(subscription, resource group, name) of an ARM resource id."""
    match = _ID_PARTS.match(resource_id)
    if match is None:
        raise CloudirError(f"not an Azure resource id: {resource_id}")
    return match.group(1), match.group(2), match.group(3)


def snapshot_name(case_id: str, disk_name: str) -> str:
    """A deterministic snapshot name (so a re-run finds, not duplicates, the snapshot); 80 characters at most."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"cloudir-{case_id}-{disk_name}")[:80].rstrip(".-")


class AzureProvider:
    """Azure adapter over ARM (compute, network, locks, monitor)."""

    cloud: ClassVar[str] = "azure"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PRESERVE,
            Capability.SNAPSHOT,
            Capability.COPY,
            Capability.IMAGE,
            Capability.ISOLATE,
            Capability.REVOKE,
            Capability.PULL_LOGS,
            Capability.PULL_FLOWS,
        }
    )
    targets: ClassVar[Mapping[TargetKind, frozenset[Capability]]] = {
        TargetKind.INSTANCE: frozenset(
            {Capability.PRESERVE, Capability.SNAPSHOT, Capability.COPY, Capability.IMAGE, Capability.ISOLATE}
        ),
        # Entra users, service principals / app registrations, managed identities (revoke: detached from VMs)
        TargetKind.PRINCIPAL: frozenset({Capability.PRESERVE, Capability.REVOKE}),
    }

    def __init__(
        self,
        session: AzureSession,
        subscription_id: str,
        *,
        soc_subscription: str | None = None,
        soc_resource_group: str = "rg-cloudir-evidence",
        image_chunk_size: int = 4 * 1024 * 1024,
        image_workers: int = 8,
        copy_poll_interval: float = 30.0,
        copy_timeout: float = 6 * 3600,
        blob_endpoint: str | None = None,
    ) -> None:
        self.session = session
        self.subscription_id = subscription_id
        self.soc_subscription = soc_subscription
        self.soc_resource_group = soc_resource_group
        self.image_chunk_size = image_chunk_size
        self.image_workers = image_workers
        self.copy_poll_interval = copy_poll_interval
        self.copy_timeout = copy_timeout
        self.blob_endpoint = blob_endpoint

    # -- protocol basics ----------------------------------------------------------------------------------
    def bind(self, case: Case | None) -> None:
        """Record every later ARM call into ``case``."""
        bind_recorder(self, self.session, case)

    def identity(self) -> str:
        """The principal named in the ARM access token."""
        return token_identity(self.session.access_token())

    def home_account(self) -> str:
        """The subscription the adapter was configured for."""
        return self.subscription_id

    def required_permissions(self) -> list[str]:
        """Azure RBAC actions the plans use (from the one call table)."""
        return calls.required_permissions()

    def _client(self, kind: str, subscription: str | None = None) -> Any:
        return self.session.client(kind, subscription or self.subscription_id)

    # -- target resolution -----------------------------------------------------------------------------------
    def find_target(self, query: TargetQuery) -> Target:
        """Resolve a VM by resource id, private/public IP or name, or an Entra principal (read-only)."""
        require_target(self, query.kind)
        if query.kind is TargetKind.PRINCIPAL:
            return principals.find_principal(self, query)
        value = query.value.strip()
        if _VM_ID.match(value):
            return self._target_from_id(value)
        return self._target_by_ip(value) if _is_ip(value) else self._target_by_name(value, query.location)

    def _target_from_id(self, vm_id: str) -> Target:
        subscription, group, name = id_parts(vm_id)
        with azure_errors(f"find VM {vm_id}", calls.permission("vm.read")):
            vm = as_json(self._client("compute", subscription).virtual_machines.get(group, name))
        return self._target(vm)

    def _target_by_name(self, name: str, location: str | None) -> Target:
        with azure_errors(f"list VMs in subscription {self.subscription_id}", calls.permission("vm.read")):
            vms = [as_json(vm) for vm in self._client("compute").virtual_machines.list_all()]
        matches = [
            vm
            for vm in vms
            if vm["name"].lower() == name.lower()
            and (location is None or location.lower() in {vm["location"].lower(), id_parts(vm["id"])[1].lower()})
        ]
        if not matches:
            where = f" in {location}" if location else ""
            raise TargetNotFoundError(
                f"no VM named {name!r} in subscription {self.subscription_id}{where}",
                hint="check --subscription, or give the VM's resource id or IP",
            )
        if len(matches) > 1:
            raise CloudirError(
                f"{len(matches)} VMs are named {name!r}: {', '.join(vm['id'] for vm in matches)}",
                hint="give the resource id, or the resource group as the location",
            )
        return self._target(matches[0])

    def _target_by_ip(self, address: str) -> Target:
        network = self._client("network")
        with azure_errors(f"find the NIC holding {address}", calls.permission("nic.read")):
            nic_id = next(
                (
                    nic["id"]
                    for nic in map(as_json, network.network_interfaces.list_all())
                    for config in nic.get("properties", {}).get("ipConfigurations", [])
                    if config.get("properties", {}).get("privateIPAddress") == address
                ),
                None,
            )
            if nic_id is None:
                config_id = next(
                    (
                        pip["properties"].get("ipConfiguration", {}).get("id")
                        for pip in map(as_json, network.public_ip_addresses.list_all())
                        if pip.get("properties", {}).get("ipAddress") == address
                    ),
                    None,
                )
                nic_id = config_id.split("/ipConfigurations/")[0] if config_id else None
            vm_ref = None
            if nic_id is not None:
                _, group, nic_name = id_parts(nic_id)
                nic = as_json(network.network_interfaces.get(group, nic_name))
                vm_ref = nic.get("properties", {}).get("virtualMachine", {}).get("id")
        if vm_ref is None:
            raise TargetNotFoundError(
                f"no VM has the IP address {address} in subscription {self.subscription_id}",
                hint="check --subscription; a VMSS uniform instance or a load balancer IP cannot be resolved this way",
            )
        return self._target_from_id(vm_ref)

    def _target(self, vm: dict[str, Any]) -> Target:
        subscription, group, name = id_parts(vm["id"])
        props = vm.get("properties", {})
        storage = props.get("storageProfile", {})
        attached = [("os", storage.get("osDisk") or {})]
        attached += [(f"data-lun{disk['lun']}", disk) for disk in storage.get("dataDisks", [])]
        unmanaged = [role for role, disk in attached if not disk.get("managedDisk", {}).get("id")]
        if unmanaged:
            raise CapabilityNotSupportedError(
                f"{name} has unmanaged (VHD blob) disks: {', '.join(unmanaged)}",
                hint="copy those VHD blobs with a storage tool; cloudir snapshots managed disks only",
            )
        disks = [{"role": role, "id": disk["managedDisk"]["id"], "name": disk.get("name")} for role, disk in attached]
        for disk in disks:
            disk["name"] = disk["name"] or disk["id"].rsplit("/", 1)[1]
        return Target(
            cloud=self.cloud,
            kind=TargetKind.INSTANCE,
            id=vm["id"],
            location=vm["location"],
            account=subscription,
            name=name,
            details={
                "resource_group": group,
                "vmss_id": props.get("virtualMachineScaleSet", {}).get("id"),
                "disks": disks,
                "nics": [nic["id"] for nic in props.get("networkProfile", {}).get("networkInterfaces", [])],
                "tags": vm.get("tags") or {},
                "restore_point_refusal": _restore_point_refusal(storage),
                "identity_principals": _identity_principals(vm.get("identity") or {}),
            },
        )

    # -- acquisition -------------------------------------------------------------------------------------------
    def plan_acquire(self, target: Target, options: AcquireOptions) -> Plan:
        """Metadata, locks, scale-in protection, incremental snapshots, copies to the SOC, optional SAS images.

        A principal's acquisition is the capture of its IAM state (:mod:`providers.azure.principals`).
        """
        if target.kind is TargetKind.PRINCIPAL:
            return principals.plan_acquire(self, target)
        require_target(self, target.kind, Capability.SNAPSHOT)
        if options.group_mode != "protect":
            raise CapabilityNotSupportedError(
                f"Azure scale sets have no {options.group_mode!r} mode",
                hint="use group mode 'protect' (protectFromScaleIn on the instance)",
            )
        symbolic = target.symbolic
        target = _symbolic_vm(target) if symbolic else target
        region, disks = target.location, target.details["disks"]
        soc_subscription = options.forensic_account or self.soc_subscription
        copy_region = options.forensic_location or region
        soc_group = options.extra.get("soc_resource_group") or self.soc_resource_group
        copying = soc_subscription is not None or copy_region != region
        steps = [
            Step(
                "metadata",
                "Capture VM, disk, NIC, NSG, public IP, scale set, tag and encryption metadata",
                StepKind.READ,
                [
                    call(key, region)
                    for key in ("vm.read", "disk.read", "nic.read", "nsg.read", "pip.read", "vmss.read")
                ],
                lambda ctx: self._capture_metadata(ctx, target),
            ),
            Step(
                "preserve-locks",
                f"Put a {LOCK_LEVEL} lock on the VM and its {'' if symbolic else f'{len(disks)} '}disks",
                StepKind.PRESERVE,
                [
                    call("lock.write", region, scope=rid, level=LOCK_LEVEL)
                    for rid in [target.id, *(d["id"] for d in disks)]
                ],
                lambda ctx: self._lock(ctx, target),
            ),
        ]
        if target.details["vmss_id"]:
            steps.append(
                Step(
                    "preserve-scale-in",
                    f"Protect the instance from scale-in in {target.details['vmss_id'].rsplit('/', 1)[1]}",
                    StepKind.PRESERVE,
                    [
                        call("vmss_vm.read", region),
                        call("vmss_vm.write", region, protectFromScaleIn=True),
                        call("compute.poll", region),
                    ],
                    lambda ctx: self._protect_scale_in(target),
                )
            )
        consistent = len(disks) > 1 and not target.details.get("restore_point_refusal")
        if consistent:
            steps.append(
                Step(
                    "restore-point",
                    f"Crash-consistent VM restore point of all {'' if symbolic else f'{len(disks)} '}disks at once",
                    StepKind.ACQUIRE,
                    [
                        call("restore_point.read", region),
                        call("restore_points.write", region, source=target.id),
                        call("restore_point.write", region, consistencyMode="CrashConsistent"),
                        call("compute.poll", region),
                    ],
                    lambda ctx: self._restore_point(ctx, target),
                )
            )
        for disk in disks:
            # with a restore point, each disk's snapshot is made from its disk restore point (Disks and Snapshots -
            # Create Or Update: createOption Restore, sourceResourceId the disk restore point), so the snapshots, and
            # the copies and images made from them, are the restore point's crash-consistent set
            source = f"<disk restore point of {disk['name']}>" if consistent else disk["id"]
            steps.append(
                Step(
                    f"snapshot-{disk['role']}",
                    f"Incremental snapshot of {disk['role']} disk {disk['name']}"
                    + (" from its disk restore point" if consistent else ""),
                    StepKind.ACQUIRE,
                    [
                        call("snapshot.read", region),
                        call(
                            "snapshot.write",
                            region,
                            createOption="Restore" if consistent else "Copy",
                            source=source,
                            tag=CASE_TAG,
                        ),
                        call("compute.poll", region),
                    ],
                    partial(self._snapshot, target=target, disk=disk, options=options),
                )
            )
        if copying:
            dest_subscription = soc_subscription or target.account
            create_option = "Copy" if copy_region == region else "CopyStart"
            for disk in disks:
                steps.append(
                    Step(
                        f"copy-{disk['role']}",
                        f"Copy the {disk['role']} snapshot to subscription {dest_subscription} ({copy_region})",
                        StepKind.ACQUIRE,
                        [
                            call("snapshot.read", copy_region),
                            call("snapshot.write", copy_region, createOption=create_option, resourceGroup=soc_group),
                            call("compute.poll", copy_region),
                        ],
                        partial(
                            self._copy,
                            target=target,
                            disk=disk,
                            destination=(dest_subscription, soc_group, copy_region),
                        ),
                        lane=f"copy-{disk['role']}",
                    )
                )
        if options.raw_image:
            for disk in disks:
                steps.append(
                    Step(
                        f"image-{disk['role']}",
                        f"Stream the {disk['role']} snapshot as a VHD through a read-only SAS, hashing it",
                        StepKind.ACQUIRE,
                        [
                            call("snapshot.grant", region, access="Read"),
                            call("compute.poll", region),
                            call("blob.read", region, chunk=self.image_chunk_size),
                            call("snapshot.revoke", region),
                        ],
                        partial(self._image, disk=disk),
                        lane=f"image-{disk['role']}",
                    )
                )
        per_disk = (
            "each disk's incremental snapshot of a running VM is crash-consistent on its own (no guest flush), but "
            "the disks are snapshotted one after another"
        )
        if len(disks) == 1:
            note = "the disk's incremental snapshot of a running VM is crash-consistent (no guest flush)"
        elif consistent:
            note = (
                "a VM restore point (consistencyMode CrashConsistent) captures every disk at the same instant; each "
                "disk's snapshot is made from its disk restore point, so the snapshots, copies and images are "
                "consistent with each other (if Azure refuses the restore point, the snapshots are taken from the "
                f"live disks instead and the step's result says so: {per_disk})"
            )
        else:
            refusal = target.details.get("restore_point_refusal")
            why = f" (no VM restore point: {refusal})" if refusal and len(disks) > 1 else ""
            note = f"{per_disk}: consistency across disks is not guaranteed{why}"
        notes = [f"{note}; memory is not captured"]
        if copying and copy_region != region:
            notes.append(
                "cross-region copies use CopyStart from the incremental snapshots; each copy step waits until Azure "
                "reports the background copy 100% complete"
            )
        plan = Plan("acquire", self.cloud, target.ref, self._regional(steps), notes)
        if not symbolic:
            return plan
        each_data_disk = "for each data disk, if any"
        conditions = {"preserve-scale-in": "if the VM is a scale set instance"}
        conditions |= {f"{kind}-{DATA_DISK_ROLE}": each_data_disk for kind in ("snapshot", "copy", "image")}
        return offline_plan(plan, conditions)

    def _regional(self, steps: list[Step]) -> list[Step]:
        """Make each step tell the custody recorder which region its calls act in (ARM URLs rarely say)."""

        def in_region(run: StepFunc, region: str | None) -> StepFunc:
            def wrapped(ctx: StepContext) -> dict[str, Any] | None:
                self.session.region = region
                try:
                    return run(ctx)
                finally:
                    self.session.region = None

            return wrapped

        for step in steps:
            step.run = in_region(step.run, step.calls[0].region if step.calls else None)
        return steps

    def _capture_metadata(self, ctx: StepContext, target: Target) -> dict[str, Any]:
        compute, network = self._client("compute", target.account), self._client("network", target.account)
        group, base = target.details["resource_group"], self._artifact_dir(target)
        with azure_errors(f"read metadata of {target.id}", calls.permission("vm.read")):
            vm = as_json(compute.virtual_machines.get(group, target.name))
            disks = [as_json(compute.disks.get(*id_parts(d["id"])[1:])) for d in target.details["disks"]]
            nics = [as_json(network.network_interfaces.get(*id_parts(nic_id)[1:])) for nic_id in target.details["nics"]]
            nsg_ids = sorted(
                {
                    nic["properties"]["networkSecurityGroup"]["id"]
                    for nic in nics
                    if nic.get("properties", {}).get("networkSecurityGroup")
                }
            )
            nsgs = [as_json(network.network_security_groups.get(*id_parts(nsg_id)[1:])) for nsg_id in nsg_ids]
            pip_ids = sorted(
                {
                    config["properties"]["publicIPAddress"]["id"]
                    for nic in nics
                    for config in nic.get("properties", {}).get("ipConfigurations", [])
                    if config.get("properties", {}).get("publicIPAddress")
                }
            )
            pips = [as_json(network.public_ip_addresses.get(*id_parts(pip_id)[1:])) for pip_id in pip_ids]
            vmss = None
            if target.details["vmss_id"]:
                vmss = as_json(compute.virtual_machine_scale_sets.get(*id_parts(target.details["vmss_id"])[1:]))
        documents: dict[str, Any] = {
            "vm": vm,
            "disks": disks,
            "nics": nics,
            "nsgs": nsgs,
            "public_ips": pips,
            "vmss": vmss,
            "tags": {item["id"]: item.get("tags") or {} for item in [vm, *disks, *nics, *nsgs, *pips]},
            "encryption": {
                "vm_security_profile": vm.get("properties", {}).get("securityProfile"),
                "disks": {
                    disk["id"]: {
                        key: disk.get("properties", {}).get(key)
                        for key in ("encryption", "encryptionSettingsCollection", "securityProfile")
                    }
                    for disk in disks
                },
            },
        }
        for name, document in documents.items():
            ctx.case.write_json(f"{base}/metadata/{name}.json", document)
        return {"artifacts": sorted(documents), "disks": len(disks), "nics": len(nics), "nsgs": nsg_ids}

    def _artifact_dir(self, target: Target) -> str:
        return f"artifacts/azure/{path_part(target.details['resource_group'])}/{path_part(target.name or target.id)}"

    def _lock(self, ctx: StepContext, target: Target) -> dict[str, Any]:
        locks = self._client("locks", target.account)
        name = f"cloudir-{ctx.case.case_id}"
        locked = []
        for resource_id in [target.id, *(d["id"] for d in target.details["disks"])]:
            _, group, resource_name = id_parts(resource_id)
            namespace, resource_type = resource_id.split("/providers/")[1].split("/")[:2]
            with azure_errors(f"lock {resource_id}", calls.permission("lock.write")):
                # the resource-level form keeps the id's slashes unescaped (the by-scope form escapes them)
                locks.management_locks.create_or_update_at_resource_level(
                    group,
                    namespace,
                    "",
                    resource_type,
                    resource_name,
                    name,
                    {"properties": {"level": LOCK_LEVEL, "notes": f"cloudir case {ctx.case.case_id}: evidence"}},
                )
            locked.append(resource_id)
        return {"lock": name, "level": LOCK_LEVEL, "resources": locked}

    def _protect_scale_in(self, target: Target) -> dict[str, Any]:
        compute = self._client("compute", target.account)
        _, group, vmss_name = id_parts(target.details["vmss_id"])
        instance_id = target.name
        with azure_errors(f"protect {target.name} from scale-in", calls.permission("vmss_vm.write")):
            member = as_json(compute.virtual_machine_scale_set_vms.get(group, vmss_name, instance_id))
            policy = member.setdefault("properties", {}).setdefault("protectionPolicy", {})
            before = dict(policy)
            policy["protectFromScaleIn"] = True
            compute.virtual_machine_scale_set_vms.begin_update(
                group, vmss_name, instance_id, member, polling=self.session.polling()
            ).result()
        return {"vmss": target.details["vmss_id"], "instance": instance_id, "before": before}

    def _restore_point(self, ctx: StepContext, target: Target) -> dict[str, Any]:
        """A CrashConsistent restore point of the VM (every disk at one instant), or the reason Azure refused it."""
        compute = self._client("compute", target.account)
        group = target.details["resource_group"]
        collection, name = snapshot_name(ctx.case.case_id, str(target.name)), snapshot_name(ctx.case.case_id, "rp")
        with azure_errors(f"restore point of {target.id}", calls.permission("restore_point.write")):
            try:
                point = as_json(compute.restore_points.get(group, collection, name))
                reused = True
            except ResourceNotFoundError:
                reused = False
                compute.restore_point_collections.create_or_update(
                    group,
                    collection,
                    models.RestorePointCollection(
                        location=target.location,
                        tags=self._tags(ctx.case, target.id),
                        properties=models.RestorePointCollectionProperties(
                            source=models.RestorePointCollectionSourceProperties(id=target.id)
                        ),
                    ),
                )
                body = models.RestorePoint(properties=models.RestorePointProperties(consistency_mode="CrashConsistent"))
                try:
                    poller = compute.restore_points.begin_create(
                        group, collection, name, body, polling=self.session.polling()
                    )
                    point = as_json(_finished(poller, ctx.console, f"restore point of {target.name}"))
                except HttpResponseError as exc:
                    if exc.status_code != 400:
                        raise
                    # The VM cannot have one (a configuration the adapter could not see): the snapshots still run.
                    return {"consistent": False, "refused": str(exc.message).splitlines()[0]}
        ctx.case.write_json(f"{self._artifact_dir(target)}/restore-points/{path_part(name)}.json", point)
        storage = point.get("properties", {}).get("sourceMetadata", {}).get("storageProfile", {})
        disks = [storage.get("osDisk") or {}, *storage.get("dataDisks", [])]
        return {
            "consistent": True,
            "restore_point_id": point["id"],
            "consistency_mode": point["properties"].get("consistencyMode"),
            "time_created": point["properties"].get("timeCreated"),
            "disk_restore_points": {
                d["managedDisk"]["id"]: d["diskRestorePoint"]["id"] for d in disks if d.get("diskRestorePoint")
            },
            "reused": reused,
        }

    def _existing_snapshot(self, compute: Any, group: str, name: str) -> dict[str, Any] | None:
        try:
            return as_json(compute.snapshots.get(group, name))
        except ResourceNotFoundError:
            return None

    def _snapshot(
        self, ctx: StepContext, target: Target, disk: dict[str, Any], options: AcquireOptions
    ) -> dict[str, Any]:
        compute = self._client("compute", target.account)
        group, name = target.details["resource_group"], snapshot_name(ctx.case.case_id, disk["name"])
        point = ctx.results.get("restore-point", {})
        restore_point = {key.lower(): value for key, value in point.get("disk_restore_points", {}).items()}.get(
            disk["id"].lower()
        )
        encryption = (
            models.Encryption(type="EncryptionAtRestWithCustomerKey", disk_encryption_set_id=options.encryption_key)
            if options.encryption_key
            else None
        )
        create_option, source = ("Restore", restore_point) if restore_point else ("Copy", disk["id"])
        body = _snapshot_model(target.location, self._tags(ctx.case, disk["id"]), create_option, source, encryption)
        with azure_errors(f"snapshot disk {disk['id']}", calls.permission("snapshot.write")):
            snapshot, reused, failed = self._provisioned_snapshot(
                ctx, compute, (group, name), body, f"snapshot of disk {disk['name']}"
            )
        ctx.case.write_json(f"{self._artifact_dir(target)}/snapshots/{path_part(snapshot['name'])}.json", snapshot)
        source_id = snapshot.get("properties", {}).get("creationData", {}).get("sourceResourceId")
        return {
            "snapshot_id": snapshot["id"],
            "source_disk": disk["id"],
            "source": source_id,
            "from_restore_point": "/diskrestorepoints/" in str(source_id).lower(),
            "reused": reused,
            "failed_snapshots": failed,
        }

    def _provisioned_snapshot(
        self, ctx: StepContext, compute: Any, place: tuple[str, str], body: Any, label: str
    ) -> tuple[dict[str, Any], bool, list[str]]:
        """(snapshot, reused, ids of Failed ones) for the case's snapshot ``place`` (resource group, name), returned
        only once Azure reports it Succeeded (and a CopyStart copy complete): made, or found and waited for.

        A snapshot still Creating (an interrupted run, a lost state) is waited for, never taken as evidence. One that
        ends Failed while this run waits for it fails the step: Azure's reason (a quota, a disk encryption set it
        cannot use) needs the responder, and the copies, images and containment after it must not run on missing
        evidence. One found Failed on a later run (``--resume``, after the fix) is kept, since cloudir deletes
        nothing, named in the step's result (its custody record), and made again under the next name
        (``<name>-r1``, ...), so the responder gets the evidence without clearing the failed resource first.
        """
        group, base = place
        failed: list[str] = []
        for attempt in range(SNAPSHOT_ATTEMPTS):
            name = base if not attempt else f"{base[: 80 - 4]}-r{attempt}"
            snapshot = self._existing_snapshot(compute, group, name)
            reused = snapshot is not None
            if snapshot is None:
                poller = compute.snapshots.begin_create_or_update(group, name, body, polling=self.session.polling())
                snapshot = as_json(_finished(poller, ctx.console, label))
            snapshot = self._await_snapshot(ctx, compute, group, snapshot)
            if snapshot["properties"].get("provisioningState") == "Succeeded":
                return snapshot, reused, failed
            failed.append(snapshot["id"])
        raise CloudirError(
            f"{label}: Azure left {len(failed)} attempts Failed ({', '.join(failed)})",
            hint="see the snapshots' provisioning errors in the Azure portal; the failed snapshots are kept",
        )

    def _tags(self, case: Case, source: str) -> dict[str, str]:
        return {CASE_TAG: case.case_id, SOURCE_TAG: source[-256:], "cloudir-tool": f"cloudir/{__version__}"}

    def _copy(
        self, ctx: StepContext, target: Target, disk: dict[str, Any], destination: tuple[str, str, str]
    ) -> dict[str, Any]:
        subscription, group, region = destination
        source_id = ctx.results[f"snapshot-{disk['role']}"]["snapshot_id"]
        compute = self._client("compute", subscription)
        name = snapshot_name(ctx.case.case_id, disk["name"])
        source_subscription, source_group, source_name = id_parts(source_id)
        with azure_errors(f"copy snapshot {source_id} to {subscription}/{group}", calls.permission("snapshot.write")):
            source = as_json(self._client("compute", source_subscription).snapshots.get(source_group, source_name))
            create_option = "Copy" if source["location"] == region else "CopyStart"
            body = _snapshot_model(region, self._tags(ctx.case, source_id), create_option, source_id)
            copy, reused, failed = self._provisioned_snapshot(
                ctx, compute, (group, name), body, f"copy of snapshot {source_name}"
            )
        ctx.case.write_json(
            f"{self._artifact_dir(target)}/snapshots/{path_part(subscription)}-{path_part(copy['name'])}.json", copy
        )
        return {"copy_id": copy["id"], "source_snapshot": source_id, "reused": reused, "failed_snapshots": failed}

    def _await_snapshot(self, ctx: StepContext, compute: Any, group: str, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Poll a snapshot while Azure provisions it and, for a CopyStart copy, until its ``completionPercent``
        reaches 100 (the PUT succeeds long before); return it Succeeded and complete, or Failed."""
        deadline = time.monotonic() + self.copy_timeout
        with operation_progress(ctx.console, f"snapshot {snapshot['name']}") as on_progress:
            while _snapshot_pending(snapshot):
                percent = float(snapshot["properties"].get("completionPercent") or 0.0)
                if time.monotonic() > deadline:
                    raise CloudirError(
                        f"snapshot {snapshot['id']} is still {snapshot['properties'].get('provisioningState')} "
                        f"at {percent}%",
                        hint="Azure goes on making it; run again with --resume to wait for it",
                    )
                on_progress(int(percent), 100)
                time.sleep(self.copy_poll_interval)
                snapshot = as_json(compute.snapshots.get(group, snapshot["name"]))
            on_progress(100, 100)
        return snapshot

    def _image(self, ctx: StepContext, disk: dict[str, Any]) -> dict[str, Any]:
        snapshot_id = ctx.results[f"snapshot-{disk['role']}"]["snapshot_id"]
        subscription, group, name = id_parts(snapshot_id)
        rel_path = f"images/azure/{path_part(name)}.vhd"
        image = export_snapshot(
            self.session,
            self._client("compute", subscription),
            ctx.case,
            (group, name),
            rel_path,
            chunk_size=self.image_chunk_size,
            workers=self.image_workers,
        )
        return {**image, "snapshot_id": snapshot_id, "source_disk": disk["id"]}

    # -- containment ----------------------------------------------------------------------------------------
    def plan_contain(self, target: Target, options: ContainOptions) -> Plan:
        """An isolation NSG denying all traffic except the examiner, attached to every NIC of the VM.

        A principal's containment revokes and disables it and removes role assignments (``principals``).
        """
        if target.kind is TargetKind.PRINCIPAL:
            return principals.plan_contain(self, target, options)
        require_target(self, target.kind, Capability.ISOLATE)
        symbolic = target.symbolic
        target = _symbolic_vm(target) if symbolic else target
        region, group = target.location, target.details["resource_group"]
        nsg_name = f"{ISOLATION_PREFIX}{target.name}"[:80]
        nsg_id = f"/subscriptions/{target.account}/resourceGroups/{group}/providers/Microsoft.Network"
        nsg_id += f"/networkSecurityGroups/{nsg_name}"
        steps = [
            Step(
                "isolate-nsg",
                f"Create NSG {nsg_name} denying all inbound and outbound traffic"
                + (f" except {options.examiner_cidr}" if options.examiner_cidr else ""),
                StepKind.CONTAIN,
                [
                    call("nsg.write", region, name=nsg_name, examiner=options.examiner_cidr or "none"),
                    call("network.poll", region),
                ],
                lambda ctx: self._create_isolation_nsg(ctx, target, nsg_name, options.examiner_cidr),
            )
        ]
        for index, nic_id in enumerate(target.details["nics"]):
            steps.append(
                Step(
                    f"isolate-nic-{'<n>' if symbolic else index}",
                    f"Attach {nsg_name} to NIC {nic_id.rsplit('/', 1)[1]}",
                    StepKind.CONTAIN,
                    [
                        call("nic.read", region),
                        call("nsg.join", region, nsg=nsg_name),
                        call("nic.write", region, networkSecurityGroup=nsg_name),
                        call("network.poll", region),
                    ],
                    partial(self._attach_nsg, target=target, nic_id=nic_id, nsg_id=nsg_id),
                )
            )
        notes = ["an NSG decides new flows; connections already established may live on until they close or time out"]
        if options.revoke_credentials:
            notes.append(
                "a VM's network is isolated here; contain the Entra principal that was used separately: "
                "cloudir contain azure --principal <UPN or object id>"
            )
        plan = Plan("contain", self.cloud, target.ref, self._regional(steps), notes)
        return offline_plan(plan, {"isolate-nic-<n>": "for each NIC of the VM"}) if symbolic else plan

    def _create_isolation_nsg(
        self, ctx: StepContext, target: Target, nsg_name: str, examiner: str | None
    ) -> dict[str, Any]:
        rules = []
        for direction in ("Inbound", "Outbound"):
            if examiner:
                rules.append(_rule(f"cloudir-allow-examiner-{direction.lower()}", 100, direction, "Allow", examiner))
            rules.append(_rule(f"cloudir-deny-all-{direction.lower()}", 4096, direction, "Deny", None))
        body = {
            "location": target.location,
            "tags": self._tags(ctx.case, target.id),
            "properties": {"securityRules": rules},
        }
        network = self._client("network", target.account)
        with azure_errors(f"create isolation NSG {nsg_name}", calls.permission("nsg.write")):
            nsg = as_json(
                network.network_security_groups.begin_create_or_update(
                    target.details["resource_group"], nsg_name, body, polling=self.session.polling()
                ).result()
            )
        return {"nsg_id": nsg["id"], "rules": [rule["name"] for rule in rules]}

    def _attach_nsg(self, ctx: StepContext, target: Target, nic_id: str, nsg_id: str) -> dict[str, Any]:
        network = self._client("network", target.account)
        _, group, nic_name = id_parts(nic_id)
        before_path = f"{self._artifact_dir(target)}/containment/{path_part(nic_name)}-before.json"
        with azure_errors(f"attach the isolation NSG to {nic_id}", calls.permission("nic.write")):
            nic = as_json(network.network_interfaces.get(group, nic_name))
            if (ctx.case.root / before_path).is_file():  # a re-run keeps the state saved before the first change
                before = json.loads((ctx.case.root / before_path).read_text(encoding="utf-8"))
            else:
                before = nic
                ctx.case.write_json(before_path, nic)
            previous = before.get("properties", {}).get("networkSecurityGroup", {}).get("id")
            isolated = {**nic, "properties": {**nic.get("properties", {}), "networkSecurityGroup": {"id": nsg_id}}}
            network.network_interfaces.begin_create_or_update(
                group, nic_name, isolated, polling=self.session.polling()
            ).result()
        return {"nic": nic_id, "previous_nsg": previous, "nsg": nsg_id, "saved": before_path}

    # -- logs ----------------------------------------------------------------------------------------------------
    def plan_pull_logs(self, request: LogPullRequest) -> Plan:
        """Activity Log pages per subscription (raw pages kept), then a coverage report; with ``extra["flows"]``, the
        NSG and VNet flow logs (providers.azure.flows)."""
        if request.extra.get("flows"):
            from providers.azure.flows import plan_pull_flows

            return plan_pull_flows(self, request)
        return activity.plan_pull(self, request)


DATA_DISK_ROLE = "data-lun<n>"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _snapshot_model(
    location: str, tags: dict[str, str], create_option: str, source_id: str, encryption: Any = None
) -> Any:
    """An incremental snapshot (CopyStart accepts only incremental sources, and copies stay incremental)."""
    return models.Snapshot(
        location=location,
        tags=tags,
        properties=models.SnapshotProperties(
            creation_data=models.CreationData(create_option=create_option, source_resource_id=source_id),
            incremental=True,
            encryption=encryption,
        ),
    )


def _snapshot_pending(snapshot: dict[str, Any]) -> bool:
    """Whether Azure is still making the snapshot: provisioning, or Succeeded with a background copy under way."""
    properties = snapshot.get("properties", {})
    state = properties.get("provisioningState")
    if state == "Succeeded":
        return float(properties.get("completionPercent", 100.0)) < 100.0
    return state in {"Creating", "Updating"}


def _restore_point_refusal(storage: dict[str, Any]) -> str | None:
    """Why the VM's storage profile rules out a VM restore point (None: Azure supports one)."""
    if (storage.get("osDisk") or {}).get("diffDiskSettings"):
        return "restore points do not support ephemeral OS disks"
    return None


def _finished(poller: Any, console: Console, label: str) -> Any:
    """The result of a long-running ARM operation, its progress shown while Azure works (ARM reports no percent)."""
    with operation_progress(console, label) as on_progress:
        while not poller.done():
            on_progress(0, 0)
            poller.wait(timeout=1.0)
        on_progress(1, 1)
        return poller.result()


def _identity_principals(identity: dict[str, Any]) -> list[str]:
    """The Entra object ids of a VM's managed identities: the system-assigned one, then each user-assigned one."""
    assigned = [value.get("principalId") for value in (identity.get("userAssignedIdentities") or {}).values()]
    return [str(principal) for principal in [identity.get("principalId"), *assigned] if principal]


def _symbolic_vm(target: Target) -> Target:
    """An unresolved VM (named by a finding) with placeholders for what only ARM knows."""
    if _VM_ID.match(target.id):
        subscription, group, name = id_parts(target.id)
    else:
        subscription, group, name = target.account, "<resource group>", target.id
        if _is_ip(name):
            name = f"<VM with {name}>"
    base = f"/subscriptions/{subscription}/resourceGroups/{group}/providers"
    disks = [
        {"role": "os", "id": f"{base}/Microsoft.Compute/disks/<OS disk of {name}>", "name": f"<OS disk of {name}>"},
        {
            "role": DATA_DISK_ROLE,
            "id": f"{base}/Microsoft.Compute/disks/<each data disk of {name}>",
            "name": f"<each data disk of {name}>",
        },
    ]
    details = {
        **target.details,
        "resource_group": group,
        "vmss_id": f"{base}/Microsoft.Compute/virtualMachineScaleSets/<scale set of {name}>",
        "disks": disks,
        "nics": [f"{base}/Microsoft.Network/networkInterfaces/<each NIC of {name}>"],
    }
    vm_id = target.id if _VM_ID.match(target.id) else f"{base}/Microsoft.Compute/virtualMachines/{name}"
    return replace(target, id=vm_id, account=subscription, name=name, details=details)


def _rule(name: str, priority: int, direction: str, access: str, examiner: str | None) -> dict[str, Any]:
    inbound = direction == "Inbound"
    return {
        "name": name,
        "properties": {
            "priority": priority,
            "direction": direction,
            "access": access,
            "protocol": "*",
            "sourceAddressPrefix": (examiner or "*") if inbound else "*",
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*" if inbound else (examiner or "*"),
            "destinationPortRange": "*",
        },
    }
