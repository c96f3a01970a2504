"""NSG flow logs for the sandboxed Azure: the Network Watcher flow-log resource (ARM) and its ``PT1H.json`` blobs.

Shaped as Microsoft documents them: one block blob per NSG, hour and NIC at ``resourceId=/SUBSCRIPTIONS/.../
NETWORKSECURITYGROUPS/<NSG>/y=/m=/d=/h=/m=00/macAddress=<MAC>/PT1H.json`` in container
``insights-logs-networksecuritygroupflowevent`` of the flow log's storage account, holding
``{"records": [...]}`` with category ``NetworkSecurityGroupFlowEvent`` and version 2 tuples
``unix seconds,src,dst,sport,dport,T|U,I|O,A|D,B|C|E,packets out,bytes out,packets in,bytes in`` grouped per rule.
VNet flow logs go to ``insights-logs-flowlogflowevent`` under ``flowLogResourceID=/...`` with the same hourly tail,
records of category ``FlowLogFlowEvent`` with ``flowRecords.flows[].flowGroups[].flowTuples[]`` tuples
``unix milliseconds,src,dst,sport,dport,protocol number,I|O,B|C|E|D,X|NX,packets,bytes,packets,bytes``.
Checked against Microsoft's pages: the VNet record schema (``flowLogVersion`` 4, ``flowRecords.flows[].aclID``,
``flowGroups[].rule``, ``flowTuples``) at https://learn.microsoft.com/azure/network-watcher/vnet-flow-logs-overview
(section "Log format"), the blob path at https://learn.microsoft.com/azure/network-watcher/vnet-flow-logs-cli
(section "Download a flow log").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

NSG_CONTAINER = "insights-logs-networksecuritygroupflowevent"
VNET_CONTAINER = "insights-logs-flowlogflowevent"


@dataclass(frozen=True)
class Nic:
    """The NIC whose traffic an NSG flow log records."""

    mac: str  # as flow logs write it: 12 hex digits, no separators
    address: str  # private IP


@dataclass(frozen=True)
class Flow:
    """One connection: when, the remote side, who opened it, bytes each way."""

    start: dt.datetime
    remote: str
    remote_port: int
    local_port: int
    outbound: bool = True
    sent: int = 600
    received: int = 400
    protocol: str = "T"
    rule: str = "DefaultRule_AllowInternetOutBound"


def flow_log_resource(
    subscription: str, location: str, nsg_id: str, storage_id: str, *, version: int = 2
) -> dict[str, Any]:
    """The Network Watcher flow-log resource of ``nsg_id`` (Microsoft.Network/networkWatchers/flowLogs)."""
    watcher = network_watcher(subscription, location)["id"]
    name = nsg_id.rsplit("/", 1)[1] + "-flowlog"
    return {
        "id": f"{watcher}/flowLogs/{name}",
        "name": name,
        "type": "Microsoft.Network/networkWatchers/flowLogs",
        "location": location,
        "properties": {
            "targetResourceId": nsg_id,
            "targetResourceGuid": hashlib.sha256(nsg_id.encode()).hexdigest()[:32],
            "storageId": storage_id,
            "enabled": True,
            "retentionPolicy": {"days": 30, "enabled": True},
            "format": {"type": "JSON", "version": version},
            "provisioningState": "Succeeded",
        },
    }


def network_watcher(subscription: str, location: str) -> dict[str, Any]:
    """The region's Network Watcher (created by Azure in resource group NetworkWatcherRG)."""
    return {
        "id": f"/subscriptions/{subscription}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/"
        f"networkWatchers/NetworkWatcher_{location}",
        "name": f"NetworkWatcher_{location}",
        "type": "Microsoft.Network/networkWatchers",
        "location": location,
        "properties": {"provisioningState": "Succeeded"},
    }


def _tuples(nic: Nic, flow: Flow) -> list[tuple[int, str]]:
    """The begin and end tuples of one connection (the end one carries the counts), with their unix seconds."""
    local, remote = (nic.address, flow.local_port), (flow.remote, flow.remote_port)
    src, dst = (local, remote) if flow.outbound else (remote, local)
    first = int(flow.start.timestamp())
    head = f"{src[0]},{dst[0]},{src[1]},{dst[1]},{flow.protocol},{'O' if flow.outbound else 'I'},A"
    packets_out, packets_in = max(1, flow.sent // 1200), max(1, flow.received // 1200)
    return [
        (first, f"{first},{head},B,,,,"),
        (first + 2, f"{first + 2},{head},E,{packets_out},{flow.sent},{packets_in},{flow.received}"),
    ]


def hourly_blobs(nsg_id: str, nic: Nic, flows: list[Flow]) -> dict[str, bytes]:
    """The ``PT1H.json`` blobs (name -> body) of one NIC's flows: one record per minute with tuples per rule."""
    minutes: dict[int, dict[str, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
    for flow in flows:
        for second, text in _tuples(nic, flow):
            minutes[second // 60 * 60][flow.rule].append((second, text))
    hours: dict[dt.datetime, list[dict[str, Any]]] = defaultdict(list)
    for minute in sorted(minutes):
        when = dt.datetime.fromtimestamp(minute, dt.UTC)
        hours[when.replace(minute=0, second=0)].append(
            {
                "time": when.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
                "systemId": hashlib.sha256(nsg_id.encode()).hexdigest()[:32],
                "macAddress": nic.mac,
                "category": "NetworkSecurityGroupFlowEvent",
                "resourceId": nsg_id.upper(),
                "operationName": "NetworkSecurityGroupFlowEvents",
                "properties": {
                    "Version": 2,
                    "flows": [
                        {"rule": rule, "flows": [{"mac": nic.mac, "flowTuples": [t for _, t in sorted(tuples)]}]}
                        for rule, tuples in sorted(minutes[minute].items())
                    ],
                },
            }
        )
    root = f"resourceId={nsg_id.upper()}"
    return {
        f"{root}/y={hour:%Y}/m={hour:%m}/d={hour:%d}/h={hour:%H}/m=00/macAddress={nic.mac}/PT1H.json": json.dumps(
            {"records": records}
        ).encode()
        for hour, records in hours.items()
    }


def beacon(remote: str, first: dt.datetime, *, period: int, beats: int, port: int = 443) -> list[Flow]:
    """An implant's check-ins to ``remote``: about every ``period`` seconds, a few seconds of jitter, fixed sizes."""
    flows = []
    for beat in range(beats):
        jitter = int(hashlib.sha256(f"{remote}|{beat}".encode()).hexdigest()[:4], 16) % 21 - 10
        start = first + dt.timedelta(seconds=beat * period + jitter)
        flows.append(Flow(start, remote, port, 40000 + beat % 20000, sent=1180, received=320))
    return flows


def vnet_blob(flow_log_id: str, vnet_id: str, nic: Nic, flows: list[Flow]) -> tuple[str, bytes]:
    """One hour's ``PT1H.json`` blob (name, body) of a VNet flow log: one record holding every flow's end tuple."""
    first = min(flow.start for flow in flows).replace(minute=0, second=0, microsecond=0)
    tuples = []
    for flow in flows:
        local, remote = (nic.address, flow.local_port), (flow.remote, flow.remote_port)
        src, dst = (local, remote) if flow.outbound else (remote, local)
        millis = int(flow.start.timestamp() * 1000)
        protocol = 6 if flow.protocol == "T" else 17
        tuples.append(
            f"{millis},{src[0]},{dst[0]},{src[1]},{dst[1]},{protocol},{'O' if flow.outbound else 'I'},E,NX,"
            f"{max(1, flow.sent // 1200)},{flow.sent},{max(1, flow.received // 1200)},{flow.received}"
        )
    record = {
        "time": first.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "flowLogVersion": 4,
        "flowLogGUID": hashlib.sha256(flow_log_id.encode()).hexdigest()[:32],
        "macAddress": nic.mac,
        "category": "FlowLogFlowEvent",
        "flowLogResourceID": flow_log_id.upper(),
        "targetResourceID": vnet_id,
        "operationName": "FlowLogFlowEvent",
        "flowRecords": {"flows": [{"aclID": "00000000-1234-abcd-ef00-c1c2c3c4c5c6", "flowGroups": [
            {"rule": "DefaultRule_AllowInternetOutBound", "flowTuples": tuples}
        ]}]},
    }  # fmt: skip
    name = (
        f"flowLogResourceID={flow_log_id.upper()}/y={first:%Y}/m={first:%m}/d={first:%d}/h={first:%H}/m=00/"
        f"macAddress={nic.mac}/PT1H.json"
    )
    return name, json.dumps({"records": [record]}).encode()
