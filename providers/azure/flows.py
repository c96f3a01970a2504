"""NSG and VNet flow logs: the Network Watcher flow-log configuration (ARM), then the ``PT1H.json`` blobs each flow
log writes to its storage account (azure-storage-blob), as evidence.

Layout in the case (``logs/azure/flows/``):

* ``<subscription>/flow-logs.json``: the Network Watchers and their flow logs (target NSG or VNet, enabled,
  format version, storage account, retention), as ARM returned them;
* ``<subscription>/inventory.json``: the subscription's NICs and VMs (the ``instances`` table: which VM owns the
  MAC address a flow record names, its scale set, image, subnet and NSG);
* ``blobs/<storage account>/<container>/<blob name>``: the hourly blobs of the window copied byte for byte, SHA-256
  while streaming (``blob-listing.json``: what was listed, kept and refused); a blob that grew since an earlier pull
  (the current hour's is appended to) is kept beside the first copy as ``PT1H.<etag>.json``;
* ``coverage.json``: per flow log, whether it was enabled, its format, and the first and last hour collected.

NSG flow logs go to container ``insights-logs-networksecuritygroupflowevent`` under
``resourceId=/SUBSCRIPTIONS/<id>/RESOURCEGROUPS/<rg>/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/<nsg>/
y=YYYY/m=MM/d=DD/h=HH/m=00/macAddress=<mac>/PT1H.json``; VNet flow logs to ``insights-logs-flowlogflowevent``
under ``flowLogResourceID=/...`` with the same hourly tail (https://learn.microsoft.com/azure/network-watcher/
vnet-flow-logs-cli, "Download a flow log"; the portal's page spells the part after ``flowLogResourceID=/`` otherwise,
so the whole ``flowLogResourceID=/`` prefix is listed and each blob's hour read from its ``y=/m=/d=/h=`` tail). Blob
storage is read with ``AZURE_STORAGE_ACCESS_TOKEN``
when set (a token for https://storage.azure.com), else with the adapter's credential; the account URL is
``https://<account>.blob.core.windows.net`` unless the adapter's ``blob_endpoint`` or ``CLOUDIR_AZURE_BLOB_ENDPOINT``
gives another (``{account}`` is replaced by the account name).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import ContainerClient

from cloudir.coverage import CoverageReport, SourceCoverage, iso_utc, parse_utc
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.plan import Plan, Step, StepContext, StepKind
from cloudir.safepath import PathClaims, path_part
from providers.azure import calls
from providers.azure.seal_store import ENDPOINT_ENV, TOKEN_ENV, blob_call
from providers.azure.session import RESPONDER_USER_AGENT, StaticTokenCredential, describe_error

if TYPE_CHECKING:
    from cloudir.provider import LogPullRequest
    from providers.azure.provider import AzureProvider

FLOWS_ROOT = "logs/azure/flows"
COVERAGE_FILE = f"{FLOWS_ROOT}/coverage.json"
NSG_CONTAINER = "insights-logs-networksecuritygroupflowevent"
VNET_CONTAINER = "insights-logs-flowlogflowevent"
SOURCE = "azure:flow-logs"
MAX_REFUSED_IN_RECORD = 20
_HOUR = re.compile(r"/y=(\d{4})/m=(\d{2})/d=(\d{2})/h=(\d{2})/m=00/")
_NSG_TYPE = "/providers/microsoft.network/networksecuritygroups/"


def blob_hour(name: str) -> datetime | None:
    """The hour a ``PT1H.json`` blob holds, from its path (None when the path has no valid hour)."""
    match = _HOUR.search(name)
    if match is None:
        return None
    try:
        year, month, day, hour = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return None


def _flow_log(data: dict[str, Any]) -> dict[str, Any]:
    """What the pull needs of one flow-log resource (REST shape)."""
    properties = data.get("properties") or {}
    target = str(properties.get("targetResourceId") or "")
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "location": data.get("location"),
        "target": target,
        "kind": "nsg" if _NSG_TYPE in target.lower() else "vnet",
        "storage": properties.get("storageId"),
        "enabled": bool(properties.get("enabled")),
        "version": (properties.get("format") or {}).get("version"),
        "retention_days": (properties.get("retentionPolicy") or {}).get("days"),
        "state": properties.get("provisioningState"),
    }


@dataclass
class FlowPull:
    """The steps of one flow-log pull: configuration, blobs, coverage; holds what the steps share."""

    provider: AzureProvider
    request: LogPullRequest
    subscriptions: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.start = parse_utc(self.request.start)
        self.end = parse_utc(self.request.end)
        if self.start >= self.end:
            raise CloudirError(f"the window start {self.request.start} is not before its end {self.request.end}")
        self.subscriptions = list(self.request.extra.get("subscriptions") or [self.provider.subscription_id])

    def plan(self) -> Plan:
        """The pull as READ steps (no call is made while planning)."""
        window = f"{iso_utc(self.start)}/{iso_utc(self.end)}"
        steps = [
            Step(
                "flow-logs",
                "Read the Network Watchers' flow-log configuration, NICs, public IPs and VMs of each subscription",
                StepKind.READ,
                [
                    calls.call("watcher.read"),
                    calls.call("flowlog.read", networkWatcher="<each watcher>"),
                    calls.call("nic.read"),
                    calls.call("pip.read"),
                    calls.call("vm.read"),
                ],
                self._flow_logs,
            ),
            Step(
                "blobs",
                "List and copy each flow log's PT1H.json blobs of the window, SHA-256 while streaming",
                StepKind.READ,
                [
                    calls.call("flowblob.list", container=f"{NSG_CONTAINER} | {VNET_CONTAINER}", prefix="<by hour>"),
                    calls.call("flowblob.read", blob="<each PT1H.json of the window>"),
                ],
                self._blobs,
            ),
            Step("coverage", "Write the flow-log coverage report", StepKind.READ, [], self._coverage),
        ]
        reader = f"blob storage needs Storage Blob Data Reader on each flow log's storage account ({TOKEN_ENV} or "
        notes = [
            "every flow log of the subscription is collected: peer groups need the other workloads",
            reader + "the adapter's credential)",
        ]
        target = f"azure-flow-logs:{','.join(self.subscriptions)}:{window}"
        return Plan("logs", self.provider.cloud, target, steps, notes)

    # -- configuration -------------------------------------------------------------------------------------
    def _flow_logs(self, ctx: StepContext) -> dict[str, Any]:
        found: list[dict[str, Any]] = []
        for subscription in self.subscriptions:
            network = self.provider.session.client("network", subscription)
            try:
                watchers = [w.as_dict() for w in network.network_watchers.list_all()]
                flow_logs = []
                for watcher in watchers:
                    group = str(watcher["id"]).split("/")[4]
                    flow_logs += [f.as_dict() for f in network.flow_logs.list(group, watcher["name"])]
            except AzureError as exc:
                raise describe_error(
                    exc, f"read the flow-log configuration of {subscription}", calls.permission("flowlog.read")
                ) from None
            ctx.case.write_json(
                f"{FLOWS_ROOT}/{path_part(subscription)}/flow-logs.json", {"watchers": watchers, "flowLogs": flow_logs}
            )
            found += [_flow_log(flow_log) for flow_log in flow_logs]
            self._inventory(ctx, subscription)
        return {"flow_logs": found}

    def _inventory(self, ctx: StepContext, subscription: str) -> None:
        """The subscription's NICs, public IP addresses and VMs as ARM lists them: flow records name a NIC's MAC,
        peers need the VM, and a VM's calls may come from its public address (a NIC names only its resource id)."""
        network = self.provider.session.client("network", subscription)
        compute = self.provider.session.client("compute", subscription)
        listings = {
            "networkInterfaces": ("nic.read", network.network_interfaces.list_all),
            "publicIPAddresses": ("pip.read", network.public_ip_addresses.list_all),
            "virtualMachines": ("vm.read", compute.virtual_machines.list_all),
        }
        inventory: dict[str, Any] = {"azureInventory": 1, "subscription": subscription}
        for kind, (call, list_all) in listings.items():
            try:
                inventory[kind] = [item.as_dict() for item in list_all()]
            except AzureError as exc:
                raise describe_error(exc, f"list the {kind} of {subscription}", calls.permission(call)) from None
        ctx.case.write_json(f"{FLOWS_ROOT}/{path_part(subscription)}/inventory.json", inventory)

    # -- blobs ---------------------------------------------------------------------------------------------
    def _container(self, ctx: StepContext, account: str, container: str) -> ContainerClient:
        template = (
            self.provider.blob_endpoint or os.environ.get(ENDPOINT_ENV) or "https://{account}.blob.core.windows.net"
        )
        token = os.environ.get(TOKEN_ENV)
        credential: Any = StaticTokenCredential(token) if token else self.provider.session.credential
        return ContainerClient(
            template.replace("{account}", account),
            container,
            credential=credential,
            user_agent=RESPONDER_USER_AGENT,
            raw_response_hook=lambda response: ctx.case.record_api_call(blob_call(response)),
            connection_verify=self.provider.session.connection_verify,
            retry_total=self.provider.session.retry_total,
            max_single_get_size=self.provider.image_chunk_size,  # larger blobs are read in ranges of this size
            max_chunk_get_size=self.provider.image_chunk_size,
        )

    def _prefixes(self, flow_log: dict[str, Any]) -> tuple[str, list[str]]:
        """The container and the listing prefixes of one flow log: per day of the window for NSG flow logs."""
        if flow_log["kind"] == "nsg":
            root = f"resourceId={flow_log['target'].upper()}/"
            day = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
            days = []
            while day <= self.end:
                days.append(f"{root}y={day:%Y}/m={day:%m}/d={day:%d}/")
                day += timedelta(days=1)
            return NSG_CONTAINER, days
        return VNET_CONTAINER, ["flowLogResourceID=/"]

    def _list(self, ctx: StepContext, flow_logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        listed: dict[tuple[str, str, str], dict[str, Any]] = {}
        for flow_log in flow_logs:
            account = str(flow_log["storage"] or "").rstrip("/").rsplit("/", 1)[-1]
            if not account:
                continue
            container, prefixes = self._prefixes(flow_log)
            client = self._container(ctx, account, container)
            try:
                for prefix in prefixes:
                    for item in client.list_blobs(name_starts_with=prefix):
                        hour = blob_hour(item.name)
                        if hour is None or not self.start - timedelta(hours=1) < hour <= self.end:
                            continue
                        key = (account, container, item.name)
                        listed[key] = {
                            "account": account,
                            "container": container,
                            "name": item.name,
                            "size": int(item.size),
                            "etag": str(item.etag).strip('"'),
                            "hour": iso_utc(hour),
                            "flow_logs": [*listed.get(key, {}).get("flow_logs", []), flow_log["id"]],
                        }
            except (AzureError, OSError) as exc:
                raise _storage_error(exc, f"list the flow-log blobs of {account}/{container}") from None
        return list(listed.values())

    def _blobs(self, ctx: StepContext) -> dict[str, Any]:
        listed = self._list(ctx, ctx.results["flow-logs"]["flow_logs"])
        claims = PathClaims()
        kept: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for item in sorted(listed, key=lambda i: (i["account"], i["container"], i["name"])):
            reason = claims.claim(item["name"], [f"{item['account']}/{item['container']}/{item['name']}"])
            (kept if reason is None else refused).append(item if reason is None else item | {"reason": reason})
        ctx.case.write_json(f"{FLOWS_ROOT}/blob-listing.json", {"blobs": kept, "refused": refused})
        downloaded = present = 0
        for item in kept:
            rel = self._local(ctx, item)
            if rel is None:
                present += 1
                continue
            client = self._container(ctx, item["account"], item["container"])
            try:
                stream = client.download_blob(
                    item["name"], etag=item["etag"], match_condition=MatchConditions.IfNotModified
                )
                ctx.case.write_bytes(rel, stream.chunks())
            except (AzureError, OSError) as exc:
                raise _storage_error(exc, f"download {item['account']}/{item['container']}/{item['name']}") from None
            downloaded += 1
        return {
            "blobs": len(kept),
            "downloaded": downloaded,
            "already_present": present,
            "refused_blobs": refused[:MAX_REFUSED_IN_RECORD],
            "refused_count": len(refused),
        }

    @staticmethod
    def _local(ctx: StepContext, item: dict[str, Any]) -> str | None:
        """Where a listed blob goes; None when an earlier pull copied this version (same size) already."""
        base = f"{FLOWS_ROOT}/blobs/{item['account']}/{item['container']}/{item['name']}"
        first = ctx.case.root / base
        if not first.is_file():
            return base
        if first.stat().st_size == item["size"]:
            return None
        grown = f"{base.removesuffix('.json')}.{hashlib.sha256(item['etag'].encode()).hexdigest()[:12]}.json"
        return None if (ctx.case.root / grown).is_file() else grown

    # -- coverage ------------------------------------------------------------------------------------------
    def _coverage(self, ctx: StepContext) -> dict[str, Any]:
        flow_logs = ctx.results["flow-logs"]["flow_logs"]
        listing = json.loads((ctx.case.root / FLOWS_ROOT / "blob-listing.json").read_text(encoding="utf-8"))
        report = CoverageReport("azure", ",".join(self.subscriptions), iso_utc(self.start), iso_utc(self.end))
        for flow_log in flow_logs:
            mine = [b for b in listing["blobs"] if flow_log["id"] in b["flow_logs"]]
            bad = [b for b in listing["refused"] if flow_log["id"] in b["flow_logs"]]
            hours = sorted(b["hour"] for b in mine)
            where = flow_log["target"]
            report.locations[where] = {
                "flow_log": flow_log["id"],
                "enabled": flow_log["enabled"],
                "version": flow_log["version"],
                "since": hours[0] if hours else None,
            }
            if not flow_log["enabled"]:
                report.warn(f"{where}: flow log {flow_log['name']} is disabled (blobs of the window are still read)")
            if hours and parse_utc(hours[0]) > self.start:
                report.warn(f"{where}: flow-log blobs start at {hours[0]}, after the window start")
            reason = f"{len(bad)} blobs refused (unsafe or colliding names), first {bad[0]['name']!r}" if bad else None
            if reason:
                report.warn(f"{where}: {reason}: {bad[0]['reason']}; the others were copied")
            report.add_source(
                SourceCoverage(
                    f"{SOURCE}:{flow_log['kind']}",
                    where,
                    flow_log["storage"] or "-",
                    "partial" if bad else "complete" if mine else "empty",
                    len(mine),
                    hours[0] if hours else None,
                    hours[-1] if hours else None,
                    reason,
                    {
                        "flow_log": flow_log["name"],
                        "since": hours[0] if hours else None,
                        "storage": flow_log["storage"],
                        "version": flow_log["version"],
                        "enabled": flow_log["enabled"],
                    },
                )
            )
        if not flow_logs:
            report.warn("no Network Watcher flow log in the subscription: no network traffic was recorded")
        ctx.case.write_json(COVERAGE_FILE, report.to_dict())
        return {"warnings": len(report.warnings), "networks": report.locations}


def _storage_error(exc: AzureError | OSError, action: str) -> CloudirError:
    if isinstance(exc, HttpResponseError):
        headers: Any = getattr(exc.response, "headers", {}) or {}
        code = headers.get("x-ms-error-code") or exc.status_code
        hint = (
            "grant the responder Storage Blob Data Reader on the flow logs' storage account"
            if exc.status_code == 403
            else None
        )
        return CloudAccessError(f"cannot {action}: {code}: {exc.reason}", hint=hint)
    return CloudAccessError(f"cannot {action}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def plan_pull_flows(provider: AzureProvider, request: LogPullRequest) -> Plan:
    """The NSG / VNet flow-log pull for ``request`` as a plan of READ steps."""
    return FlowPull(provider, request).plan()
