"""The Google Cloud adapter: Compute Engine acquisition and containment, Cloud Audit Log collection."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

import requests
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from cloudir.case import Case
from cloudir.errors import CapabilityNotSupportedError, CloudirError, TargetNotFoundError
from cloudir.plan import Plan, Step, StepContext, StepKind, offline_plan
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
from providers.gcp.flows import plan_flow_pull
from providers.gcp.logs import plan_audit_pull
from providers.gcp.permissions import all_permissions, call
from providers.gcp.principals import (
    find_service_account,
    plan_acquire_service_account,
    plan_contain_service_account,
)
from providers.gcp.session import OPERATION_TIMEOUT, GcpApi, gcp_errors

CASE_LABEL = "cloudir-case-id"
_LABEL_BAD = re.compile(r"[^a-z0-9_-]")
_NAME_BAD = re.compile(r"[^a-z0-9-]")
# A change is sent again after these (throttled, a server error, no answer: it may have run) with the same requestId,
# which Compute Engine documents as run-once for 60 minutes; the id derives from the case, so a resumed run reuses it.
_RESENT = (
    requests.ConnectionError,
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
)
CHANGE_ATTEMPTS = 6
_REQUEST_IDS = uuid.UUID("6f0c9b1e-4d2a-5c3b-9e8f-c10d1a2b3c4d")  # the uuid5 namespace of cloudir's request ids
_IGM_LINK = re.compile(r"projects/[^/]+/(zones|regions)/([^/]+)/instanceGroupManagers/([^/]+)$")


def label_value(value: str) -> str:
    """A value usable as a GCP label (lowercase letters, digits, ``_`` and ``-``, at most 63 chars)."""
    return _LABEL_BAD.sub("_", value.lower())[:63]


def resource_name(*parts: str) -> str:
    """A valid, deterministic GCE resource name (``[a-z]([-a-z0-9]*[a-z0-9])?``, at most 63 chars)."""
    joined = _NAME_BAD.sub("-", "-".join(parts).lower()).strip("-")
    if not joined[:1].isalpha():
        joined = f"c-{joined}"
    if len(joined) > 63:
        digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
        joined = f"{joined[:54].rstrip('-')}-{digest}"
    return joined


def evidence_prefix(case_id: str, project: str) -> str:
    """``cir-`` and 8 hex characters naming one case's evidence from one project (the full id is in labels)."""
    return "cir-" + hashlib.sha256(f"{case_id}/{project}".encode()).hexdigest()[:8]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _group_api(igm: dict[str, str]) -> tuple[str, str]:
    """(Compute collection, operation scope) of a zonal or regional managed instance group."""
    if igm["scope"] == "regions":
        return "regionInstanceGroupManagers", "region"
    return "instanceGroupManagers", "zone"


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = type(message).to_dict(message, preserving_proto_field_name=False)
    return result


class GcpProvider:
    """Google Cloud adapter over google-cloud-compute (REST) and google-cloud-logging (JSON API)."""

    cloud: ClassVar[str] = "gcp"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PRESERVE,
            Capability.SNAPSHOT,
            Capability.COPY,
            Capability.ISOLATE,
            Capability.REVOKE,
            Capability.PULL_LOGS,
            Capability.PULL_FLOWS,
        }
    )
    targets: ClassVar[Mapping[TargetKind, frozenset[Capability]]] = {
        TargetKind.INSTANCE: frozenset({Capability.PRESERVE, Capability.SNAPSHOT, Capability.COPY, Capability.ISOLATE}),
        TargetKind.PRINCIPAL: frozenset({Capability.PRESERVE, Capability.REVOKE}),  # service accounts
    }

    def __init__(
        self,
        api: GcpApi,
        *,
        zone: str | None = None,
        principal: str | None = None,
        forensic_project: str | None = None,
        log_page_size: int = 1000,
        log_max_retries: int = 6,
        log_backoff: float = 1.0,
        change_backoff: float = 1.0,
    ) -> None:
        self.api = api
        self.change_backoff = change_backoff
        self.project = api.project
        self.principal = principal
        self.forensic_project = forensic_project
        self.default_zone = zone
        self.log_page_size = log_page_size
        self.log_max_retries = log_max_retries
        self.log_backoff = log_backoff

    # -- protocol basics ------------------------------------------------------------------------
    def bind(self, case: Case | None) -> None:
        """Record later API calls into ``case`` (None: record nothing)."""
        bind_recorder(self, self.api, case)

    def identity(self) -> str:
        """The service account (or configured principal) the adapter acts as; makes no API call."""
        email = getattr(self.api.credentials, "service_account_email", None)
        return self.principal or (str(email) if email else "application-default-credentials")

    def home_account(self) -> str:
        """The project the adapter was configured for."""
        return self.project

    def required_permissions(self) -> list[str]:
        """Every IAM permission the gcp plans may use (from the one planned-call table)."""
        return all_permissions()

    # -- targets ---------------------------------------------------------------------------------
    def find_target(self, query: TargetQuery) -> Target:
        """Resolve an instance by name, numeric id, internal or external IP, in one zone or all zones."""
        require_target(self, query.kind)
        if query.kind is TargetKind.PRINCIPAL:
            return find_service_account(self.api, query)
        zone = query.location or self.default_zone
        where = f"zone {zone}" if zone else "all zones"
        client = self.api.compute(compute_v1.InstancesClient)
        with gcp_errors(f"list instances in project {self.project} ({where})", "compute.instances.list"):
            if zone:
                found = [(zone, inst) for inst in client.list(project=self.project, zone=zone)]
            else:
                found = [
                    (_last(scope), inst)
                    for scope, scoped in client.aggregated_list(project=self.project)
                    for inst in scoped.instances
                ]
        matches = [(zone, inst) for zone, inst in found if self._matches(inst, query.value)]
        if not matches:
            what = "with IP" if _is_ip(query.value) else "named"
            raise TargetNotFoundError(f"no instance {what} {query.value} in project {self.project} ({where})")
        if len(matches) > 1:
            zones = ", ".join(sorted(zone for zone, _ in matches))
            raise CloudirError(f"{len(matches)} instances match {query.value} (zones {zones})", hint="pass --zone")
        zone, inst = matches[0]
        return self._target(zone, inst)

    @staticmethod
    def _matches(inst: Any, value: str) -> bool:
        if value in {inst.name, str(inst.id)}:
            return True
        for nic in inst.network_interfaces:
            if value == nic.network_i_p or any(value == ac.nat_i_p for ac in nic.access_configs):
                return True
        return False

    def _target(self, zone: str, inst: Any) -> Target:
        metadata = {item.key: item.value for item in inst.metadata.items}
        igm = _IGM_LINK.search(metadata.get("created-by", ""))
        details = {
            "zone": zone,
            "self_link": inst.self_link,
            "disks": [{"name": _last(d.source), "device_name": d.device_name, "boot": d.boot} for d in inst.disks],
            "networks": sorted({nic.network for nic in inst.network_interfaces}),
            "internal_ips": [nic.network_i_p for nic in inst.network_interfaces],
            "external_ips": [ac.nat_i_p for nic in inst.network_interfaces for ac in nic.access_configs if ac.nat_i_p],
            "service_accounts": [sa.email for sa in inst.service_accounts],
            "managed_instance_group": {"scope": igm[1], "location": igm[2], "name": igm[3]} if igm else None,
            "tags": dict(inst.labels),  # labels: what playbook tag conditions check (network tags are not labels)
        }
        return Target(self.cloud, TargetKind.INSTANCE, str(inst.id), zone, self.project, inst.name, details)

    # -- acquisition -----------------------------------------------------------------------------
    def plan_acquire(self, target: Target, options: AcquireOptions) -> Plan:
        """Deletion protection, abandon from the MIG, capture metadata, snapshot each disk, copy each snapshot."""
        require_target(self, target.kind, Capability.PRESERVE)
        if target.kind is TargetKind.PRINCIPAL:
            return plan_acquire_service_account(self.api, target)
        if options.raw_image:
            raise CapabilityNotSupportedError(
                "the gcp provider cannot export raw disk images",
                hint="snapshots and forensic-project image copies are taken; export an image to GCS separately",
            )
        symbolic = target.symbolic
        target = _symbolic_instance(target) if symbolic else target
        zone, name = target.location, str(target.name)
        forensic = options.forensic_account or self.forensic_project
        steps: list[Step] = []
        notes: list[str] = []
        igm = target.details.get("managed_instance_group")
        if igm:
            api, where = _group_api(igm)
            steps.append(
                Step(
                    "preserve:abandon-from-group",
                    f"Abandon {name} from managed instance group {igm['name']} so the group cannot delete it",
                    StepKind.PRESERVE,
                    [
                        call("compute", f"{api}.listManagedInstances", igm["location"], group=igm["name"]),
                        call("compute", f"{api}.abandonInstances", igm["location"], group=igm["name"], instances=name),
                        call("compute", f"{where}Operations.wait", igm["location"]),
                    ],
                    lambda ctx: self._abandon(target, igm),
                )
            )
            member = "if it is in a managed instance group, " if symbolic else ""
            notes.append(
                f"{member}{name} leaves group {igm['name']} first (GCE refuses deletion protection on group members); "
                "the group's target size drops by one."
            )
        steps.append(
            Step(
                "preserve:deletion-protection",
                f"Turn on deletion protection for {name}",
                StepKind.PRESERVE,
                [
                    call("compute", "instances.setDeletionProtection", zone, resource=name, deletionProtection=True),
                    call("compute", "zoneOperations.wait", zone),
                ],
                lambda ctx: self._protect(target),
            )
        )
        disks = [str(disk["name"]) for disk in target.details["disks"]]
        steps.append(
            Step(
                "capture:metadata",
                f"Capture metadata of {name}: instance, disks, firewall rules, service account, serial port",
                StepKind.READ,
                [
                    call("compute", "instances.get", zone, instance=name),
                    *[call("compute", "disks.get", zone, disk=disk) for disk in disks],
                    call("compute", "firewalls.list", "global"),
                    call("compute", "instances.getSerialPortOutput", zone, instance=name, port=1),
                    *[
                        call("iam", operation, None, serviceAccount=email)
                        for email in target.details["service_accounts"]
                        for operation in ("serviceAccounts.get", "serviceAccounts.keys.list")
                    ],
                ],
                lambda ctx: self._capture(ctx, target),
            )
        )
        for disk in disks:
            steps.append(
                Step(
                    f"snapshot:{disk}",
                    f"Snapshot disk {disk} (labelled {CASE_LABEL})",
                    StepKind.ACQUIRE,
                    [
                        call("compute", "snapshots.list", "global", filter=f"labels.{CASE_LABEL}=<case>"),
                        call("compute", "disks.createSnapshot", zone, disk=disk, labels=f"{CASE_LABEL}=<case>"),
                        call("compute", "zoneOperations.wait", zone),
                        call("compute", "snapshots.get", "global"),
                    ],
                    partial(self._snapshot, target=target, disk=disk),
                    lane=f"disk:{disk}",  # every disk at once, each copied as soon as its own snapshot is ready
                )
            )
        if len(disks) > 1 or symbolic:
            notes.append(
                f"{'its' if symbolic else f'the {len(disks)}'} disks are snapshotted at the same time but each by its "
                "own disks.createSnapshot, crash-consistent each on its own: consistency across disks is not "
                "guaranteed; memory is not captured."
            )
        if forensic:
            for disk in disks:
                steps.append(
                    Step(
                        f"copy:{disk}",
                        f"Copy the snapshot of {disk} into forensic project {forensic} as an image",
                        StepKind.ACQUIRE,
                        [
                            call("compute", "images.list", "global", project=forensic),
                            call("compute", "images.insert", "global", project=forensic, sourceSnapshot=f"<{disk}>"),
                            call("compute", "globalOperations.wait", "global", project=forensic),
                        ],
                        partial(self._copy, forensic=forensic, disk=disk),
                        lane=f"disk:{disk}",
                    )
                )
        else:
            notes.append("no forensic project given: snapshots stay in the source project (pass --forensic-project).")
        plan = Plan("acquire", self.cloud, target.ref, steps, notes)
        if not symbolic:
            return plan
        return offline_plan(plan, {"preserve:abandon-from-group": "if the instance is in a managed instance group"})

    def _protect(self, target: Target) -> dict[str, Any]:
        """Deletion protection; skipped, with GCE's reason, while the instance is still in a managed group."""
        zone, name = target.location, str(target.name)
        request = compute_v1.SetDeletionProtectionInstanceRequest(
            project=self.project, zone=zone, resource=name, deletion_protection=True
        )
        with gcp_errors(f"set deletion protection on {name}", "compute.instances.setDeletionProtection"):
            try:
                op = self.api.compute(compute_v1.InstancesClient).set_deletion_protection_unary(request=request)
            except gexc.BadRequest as exc:
                if not target.details.get("managed_instance_group"):
                    raise
                # Never let the refusal block the snapshots: the abandon already keeps the group from deleting it.
                return {"deletion_protection": False, "skipped": f"refused for a group member: {exc.message}"}
            self.api.wait(op, project=self.project, zone=zone)
        return {"deletion_protection": True, "operation": op.name}

    def _abandon(self, target: Target, igm: dict[str, str]) -> dict[str, Any]:
        regional = igm["scope"] == "regions"
        where = {"region": igm["location"]} if regional else {"zone": igm["location"]}
        group = {"project": self.project, "instance_group_manager": igm["name"], **where}
        suffix = f"zones/{target.location}/instances/{target.name}"
        instances = [target.details["self_link"]]
        with gcp_errors(f"abandon {target.name} from group {igm['name']}", "compute.instanceGroupManagers.update"):
            if regional:
                client: Any = self.api.compute(compute_v1.RegionInstanceGroupManagersClient)
                request: Any = compute_v1.AbandonInstancesRegionInstanceGroupManagerRequest(
                    **group,
                    region_instance_group_managers_abandon_instances_request_resource=(
                        compute_v1.RegionInstanceGroupManagersAbandonInstancesRequest(instances=instances)
                    ),
                )
            else:
                client = self.api.compute(compute_v1.InstanceGroupManagersClient)
                request = compute_v1.AbandonInstancesInstanceGroupManagerRequest(
                    **group,
                    instance_group_managers_abandon_instances_request_resource=(
                        compute_v1.InstanceGroupManagersAbandonInstancesRequest(instances=instances)
                    ),
                )
            members = [m.instance for m in client.list_managed_instances(**group)]
            if not any(url.endswith(suffix) for url in members):
                return {"group": igm["name"], "abandoned": False, "reason": "not a member any more"}
            op = client.abandon_instances_unary(request=request)
            self.api.wait(op, project=self.project, zone=where.get("zone"), region=where.get("region"))
        return {"group": igm["name"], "abandoned": True, "operation": op.name}

    def _capture(self, ctx: StepContext, target: Target) -> dict[str, Any]:
        zone, name = target.location, str(target.name)
        base = f"artifacts/gcp/{path_part(self.project)}/{path_part(zone)}/{path_part(name)}"
        instances = self.api.compute(compute_v1.InstancesClient)
        raw: list[bytes] = []
        artifacts: list[str] = []
        with gcp_errors(f"capture metadata of {name}", "compute.instances.get"), self.api.raw_bodies(raw.append):
            inst = instances.get(project=self.project, zone=zone, instance=name)
            artifacts.append(ctx.case.write_bytes(f"{base}/instance.json", raw.pop()).path)
            for disk in target.details["disks"]:
                self.api.compute(compute_v1.DisksClient).get(project=self.project, zone=zone, disk=disk["name"])
                artifacts.append(ctx.case.write_bytes(f"{base}/disks/{path_part(disk['name'])}.json", raw.pop()).path)
            rules = list(self.api.compute(compute_v1.FirewallsClient).list(project=self.project))
            raw.clear()
            serial = instances.get_serial_port_output(
                request=compute_v1.GetSerialPortOutputInstanceRequest(
                    project=self.project, zone=zone, instance=name, port=1
                )
            )
            raw.clear()
        account_errors = self._capture_service_accounts(
            ctx.case, base, artifacts, list(target.details["service_accounts"])
        )
        tags = set(inst.tags.items)
        accounts = {sa.email for sa in inst.service_accounts}
        networks = {nic.network for nic in inst.network_interfaces}
        applying = [
            _as_dict(rule)
            for rule in rules
            if rule.network in networks
            and not rule.disabled
            and (
                (not rule.target_tags and not rule.target_service_accounts)
                or tags & set(rule.target_tags)
                or accounts & set(rule.target_service_accounts)
            )
        ]
        metadata = {item.key: item.value for item in inst.metadata.items}
        summary = {
            "instance": {
                "name": inst.name,
                "id": str(inst.id),
                "zone": zone,
                "status": inst.status,
                "deletion_protection": inst.deletion_protection,
            },
            "labels": dict(inst.labels),
            "tags": sorted(tags),
            "service_accounts": [_as_dict(sa) for sa in inst.service_accounts],
            "network_interfaces": [_as_dict(nic) for nic in inst.network_interfaces],
            "metadata": metadata,
            "startup_script": metadata.get("startup-script"),
            "managed_instance_group": target.details.get("managed_instance_group"),
            "service_account_capture_errors": account_errors,
        }
        artifacts += [
            ctx.case.write_json(f"{base}/firewall-rules.json", applying).path,
            ctx.case.write_bytes(f"{base}/serial-port-1.txt", serial.contents.encode()).path,
            ctx.case.write_json(f"{base}/summary.json", summary).path,
        ]
        result = {"artifacts": artifacts, "firewall_rules": [rule["name"] for rule in applying]}
        return result | ({"service_account_capture_errors": account_errors} if account_errors else {})

    def _capture_service_accounts(
        self, case: Case, base: str, artifacts: list[str], emails: list[str]
    ) -> dict[str, str]:
        """Raw IAM records of each attached service account and its keys; a refusal is reported, not fatal."""
        errors: dict[str, str] = {}
        for email in emails:
            folder = f"{base}/service-accounts/{path_part(email)}"
            try:
                account = self.api.iam_get(f"projects/-/serviceAccounts/{email}")
                keys = self.api.iam_get(f"projects/-/serviceAccounts/{email}/keys")
            except gexc.GoogleAPICallError as exc:
                errors[email] = f"{exc.code} {str(exc.message).splitlines()[0]}"
                continue
            artifacts += [
                case.write_bytes(f"{folder}/account.json", account).path,
                case.write_bytes(f"{folder}/keys.json", keys).path,
            ]
        return errors

    def _snapshot(self, ctx: StepContext, target: Target, disk: str) -> dict[str, Any]:
        case_label = label_value(ctx.case.case_id)
        zone = target.location
        snapshots = self.api.compute(compute_v1.SnapshotsClient)
        with gcp_errors(f"snapshot disk {disk}", "compute.disks.createSnapshot"):
            listing = compute_v1.ListSnapshotsRequest(
                project=self.project, filter=f'labels.{CASE_LABEL} = "{case_label}"'
            )
            for existing in snapshots.list(request=listing):
                if existing.labels.get(CASE_LABEL) == case_label and existing.source_disk.endswith(
                    f"zones/{zone}/disks/{disk}"
                ):
                    return self._snapshot_result(self._until_ready(existing), reused=True)
            snapshot = compute_v1.Snapshot(
                name=resource_name(evidence_prefix(ctx.case.case_id, self.project), zone, disk),
                description=f"cloudir case {ctx.case.case_id}: disk {disk} of instance {target.name}",
                labels={
                    CASE_LABEL: case_label,
                    "cloudir-source-instance": label_value(str(target.name)),
                    "cloudir-source-disk": label_value(disk),
                },
            )
            disks = self.api.compute(compute_v1.DisksClient)
            op = self._send_change(
                f"{ctx.case.case_id}/{self.project}/{zone}/{disk}/snapshot",
                lambda request_id: disks.create_snapshot_unary(
                    request=compute_v1.CreateSnapshotDiskRequest(
                        project=self.project, zone=zone, disk=disk, snapshot_resource=snapshot, request_id=request_id
                    )
                ),
            )
            with operation_progress(ctx.console, f"snapshot of disk {disk}") as on_progress:
                self.api.wait(op, project=self.project, zone=zone, on_progress=on_progress)
            created = snapshots.get(project=self.project, snapshot=snapshot.name)
        if created.status != "READY":  # its operation is DONE: anything else is not a usable snapshot
            raise CloudirError(
                f"snapshot {created.name} of disk {disk} is {created.status} after its operation finished"
            )
        return self._snapshot_result(created, reused=False)

    def _until_ready(self, snapshot: Any) -> Any:
        """A snapshot an earlier run started, once READY (read again with doubling gaps while CREATING or
        UPLOADING, as after a run stopped during its operation); refused if it failed or is being deleted."""
        snapshots = self.api.compute(compute_v1.SnapshotsClient)
        gap, deadline = self.api.backoff, time.monotonic() + OPERATION_TIMEOUT
        while snapshot.status in {"CREATING", "UPLOADING"} and time.monotonic() < deadline:
            time.sleep(min(gap, 10.0))
            gap *= 2
            snapshot = snapshots.get(project=self.project, snapshot=snapshot.name)
        if snapshot.status != "READY":
            raise CloudirError(f"snapshot {snapshot.name} from an earlier run is {snapshot.status}, not READY")
        return snapshot

    def _send_change(self, key: str, send: Callable[[str], compute_v1.Operation]) -> compute_v1.Operation:
        """``send(request_id)`` with a request id derived from ``key``, sent again with the same id while it is
        throttled, fails on the server or gets no answer (Compute Engine then runs it once, not twice)."""
        request_id = str(uuid.uuid5(_REQUEST_IDS, key))
        for attempt in range(CHANGE_ATTEMPTS - 1):
            try:
                return send(request_id)
            except _RESENT:
                time.sleep(self.change_backoff * 2**attempt)
        return send(request_id)

    @staticmethod
    def _snapshot_result(snapshot: Any, *, reused: bool) -> dict[str, Any]:
        return {
            "snapshot": snapshot.name,
            "snapshot_id": str(snapshot.id),
            "self_link": snapshot.self_link,
            "source_disk": snapshot.source_disk,
            "storage_bytes": int(snapshot.storage_bytes),
            "reused": reused,
        }

    def _copy(self, ctx: StepContext, forensic: str, disk: str) -> dict[str, Any]:
        source = ctx.results.get(f"snapshot:{disk}")
        if not source:
            raise CloudirError(f"no snapshot of {disk} to copy", hint="the snapshot step must finish first")
        case_label = label_value(ctx.case.case_id)
        images = self.api.compute(compute_v1.ImagesClient)
        with gcp_errors(f"copy snapshot {source['snapshot']} into project {forensic}", "compute.images.create"):
            listing = compute_v1.ListImagesRequest(project=forensic, filter=f'labels.{CASE_LABEL} = "{case_label}"')
            for existing in images.list(request=listing):
                if existing.source_snapshot_id == source["snapshot_id"]:
                    return {
                        "project": forensic,
                        "image": existing.name,
                        "self_link": existing.self_link,
                        "reused": True,
                    }
            image = compute_v1.Image(
                name=resource_name(source["snapshot"], "copy"),
                source_snapshot=source["self_link"],
                description=f"cloudir case {ctx.case.case_id}: copy of snapshot {source['snapshot']}",
                labels={
                    CASE_LABEL: case_label,
                    "cloudir-source-project": label_value(self.project),
                    "cloudir-source-snapshot": label_value(source["snapshot"]),
                },
            )
            op = self._send_change(
                f"{ctx.case.case_id}/{forensic}/{image.name}/image",
                lambda request_id: images.insert_unary(
                    request=compute_v1.InsertImageRequest(project=forensic, image_resource=image, request_id=request_id)
                ),
            )
            with operation_progress(ctx.console, f"image copy of snapshot {source['snapshot']}") as on_progress:
                self.api.wait(op, project=forensic, zone=None, on_progress=on_progress)
        return {"project": forensic, "image": image.name, "self_link": str(op.target_link), "reused": False}

    # -- containment -----------------------------------------------------------------------------
    def plan_contain(self, target: Target, options: ContainOptions) -> Plan:
        """Deny-all ingress/egress rules on a network tag (examiner range still allowed), then tag the instance."""
        if target.kind is TargetKind.PRINCIPAL:
            require_target(self, target.kind, Capability.REVOKE)
            return plan_contain_service_account(self.api, target, options)
        require_target(self, target.kind, Capability.ISOLATE)
        symbolic = target.symbolic
        target = _symbolic_instance(target) if symbolic else target
        name = str(target.name)
        tag = f"cloudir-isolate-{target.id}" if symbolic else resource_name("cloudir-isolate", target.id)
        rules = self._isolation_rules(target, tag, options.examiner_cidr)
        steps = [
            Step(
                "contain:firewall-rules",
                f"Create {len(rules)} firewall rules for network tag {tag}: deny all ingress and egress"
                + (f", allow {options.examiner_cidr} first" if options.examiner_cidr else ""),
                StepKind.CONTAIN,
                [
                    call(
                        "compute",
                        "firewalls.insert",
                        "global",
                        name=rule.name,
                        direction=rule.direction,
                        priority=rule.priority,
                    )
                    for rule in rules
                ]
                + [call("compute", "globalOperations.wait", "global")],
                lambda ctx: self._create_rules(rules),
            ),
            Step(
                "contain:tag-instance",
                f"Add network tag {tag} to {name} (activates the rules)",
                StepKind.CONTAIN,
                [
                    call("compute", "instances.get", target.location, instance=name),
                    call("compute", "instances.setTags", target.location, instance=name, add=tag),
                    call("compute", "zoneOperations.wait", target.location),
                ],
                lambda ctx: self._tag(target, tag),
            ),
        ]
        notes = [
            (
                "deny rules use priority 1 and examiner allows priority 0; an existing allow rule at priority 0 "
                "that targets this instance would still apply. The metadata server (169.254.169.254) stays reachable."
            )
        ]
        if options.revoke_credentials:
            notes.append(
                "the gcp provider cannot revoke credentials (no 'revoke' capability): disable the service account "
                f"{', '.join(target.details.get('service_accounts') or ['(none)'])} or its keys in IAM yourself."
            )
        plan = Plan("contain", self.cloud, target.ref, steps, notes)
        return offline_plan(plan, {"contain:firewall-rules": "for each network of the instance"}) if symbolic else plan

    def _isolation_rules(self, target: Target, tag: str, examiner_cidr: str | None) -> list[compute_v1.Firewall]:
        """Per network and direction: allow the examiner range (priority 0), then deny everything (priority 1)."""
        rules: list[compute_v1.Firewall] = []
        for index, network in enumerate(target.details["networks"]):
            prefix = f"cloudir-{target.id}-n{'<k>' if target.symbolic else index}"
            for direction in ("INGRESS", "EGRESS"):
                ranges = "source_ranges" if direction == "INGRESS" else "destination_ranges"
                wanted = [("allow-examiner", 0, examiner_cidr)] if examiner_cidr else []
                for purpose, priority, cidr in [*wanted, ("deny-all", 1, "0.0.0.0/0")]:
                    action = (
                        {"allowed": [compute_v1.Allowed(I_p_protocol="all")]}
                        if purpose == "allow-examiner"
                        else {"denied": [compute_v1.Denied(I_p_protocol="all")]}
                    )
                    rules.append(
                        compute_v1.Firewall(
                            name=(
                                f"{prefix}-{purpose}-{direction.lower()}"
                                if target.symbolic
                                else resource_name(prefix, purpose, direction)
                            ),
                            network=network,
                            direction=direction,
                            priority=priority,
                            target_tags=[tag],
                            description=f"cloudir containment: {purpose}",
                            **{ranges: [cidr]},
                            **action,
                        )
                    )
        return rules

    def _create_rules(self, rules: list[Any]) -> dict[str, Any]:
        client = self.api.compute(compute_v1.FirewallsClient)
        created, existing = [], []
        for rule in rules:
            with gcp_errors(f"create firewall rule {rule.name}", "compute.firewalls.create"):
                try:
                    op = client.insert_unary(project=self.project, firewall_resource=rule)
                except gexc.Conflict:
                    existing.append(rule.name)
                    continue
                self.api.wait(op, project=self.project, zone=None)
            created.append(rule.name)
        return {"created": created, "already_present": existing}

    def _tag(self, target: Target, tag: str) -> dict[str, Any]:
        zone, name = target.location, str(target.name)
        client = self.api.compute(compute_v1.InstancesClient)
        with gcp_errors(f"add network tag {tag} to {name}", "compute.instances.setTags"):
            inst = client.get(project=self.project, zone=zone, instance=name)
            items = list(inst.tags.items)
            if tag in items:
                return {"tag": tag, "tags": items, "changed": False}
            tags = compute_v1.Tags(items=[*items, tag], fingerprint=inst.tags.fingerprint)
            op = client.set_tags_unary(project=self.project, zone=zone, instance=name, tags_resource=tags)
            self.api.wait(op, project=self.project, zone=zone)
        return {"tag": tag, "tags": [*items, tag], "changed": True}

    # -- logs ------------------------------------------------------------------------------------
    def plan_pull_logs(self, request: LogPullRequest) -> Plan:
        """Cloud Audit Logs (admin activity, data access, system event, policy denied) for the window; with
        ``extra["flows"]``, VPC Flow Logs instead."""
        if request.extra.get("flows"):
            return plan_flow_pull(self, request)
        return plan_audit_pull(self, request)


def _symbolic_instance(target: Target) -> Target:
    """An unresolved instance (named by a finding) with placeholders for what only the API knows."""
    name = target.name or target.id
    if _is_ip(name) or name.isdigit():
        name = f"<instance {name}>"
    details = {
        **target.details,
        "self_link": f"<self link of {name}>",
        "disks": [{"name": f"<each disk of {name}>", "device_name": "<device>", "boot": None}],
        "networks": [f"<each network of {name}>"],
        "service_accounts": [f"<service account of {name}>"],
        "managed_instance_group": {"scope": "zones", "location": target.location, "name": f"<group of {name}>"},
    }
    return replace(target, id=f"<id of {name}>", name=name, details=details)
