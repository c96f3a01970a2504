"""VPC Flow Logs for the sandboxed Google Cloud: Cloud Logging entries of ``compute.googleapis.com/vpc_flows``.

Shaped as Google documents them (the ``jsonPayload`` of a VPC flow record: ``connection``, ``bytes_sent`` and
``packets_sent`` as int64 strings, ``start_time`` / ``end_time``, ``reporter``, the reporting side's instance and
VPC, ``dest_location`` for an address outside Google Cloud). Served by the fake's ``entries:list``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

FLOW_LOG = "compute.googleapis.com%2Fvpc_flows"


def flow_entry(
    project: str,
    instance: dict[str, str],
    start: dt.datetime,
    src: tuple[str, int],
    dst: tuple[str, int],
    *,
    sent: int,
    packets: int = 4,
) -> dict[str, Any]:
    """One egress flow record reported by the source instance (``instance``: vm_name, zone, region, vpc, subnet)."""
    end = start + dt.timedelta(seconds=2)
    stamp = end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    key = f"{instance['vm_name']}|{src}|{dst}|{stamp}"
    return {
        "insertId": hashlib.sha256(key.encode()).hexdigest()[:16],
        "logName": f"projects/{project}/logs/{FLOW_LOG}",
        "resource": {
            "type": "gce_subnetwork",
            "labels": {"project_id": project, "location": instance["zone"], "subnetwork_name": instance["subnet"]},
        },
        "timestamp": stamp,
        "receiveTimestamp": stamp,
        "jsonPayload": {
            "connection": {
                "src_ip": src[0],
                "src_port": src[1],
                "dest_ip": dst[0],
                "dest_port": dst[1],
                "protocol": 6,
            },
            "bytes_sent": str(sent),
            "packets_sent": str(packets),
            "start_time": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "end_time": stamp,
            "reporter": "SRC",
            "src_instance": {
                "project_id": project,
                "region": instance["region"],
                "zone": instance["zone"],
                "vm_name": instance["vm_name"],
            },
            "src_vpc": {"project_id": project, "vpc_name": instance["vpc"], "subnetwork_name": instance["subnet"]},
            "dest_location": {"continent": "America", "country": "usa"},
        },
    }


def beacon_entries(
    project: str,
    instance: dict[str, str],
    source_ip: str,
    remote: str,
    first: dt.datetime,
    *,
    period: int = 600,
    beats: int = 72,
) -> list[dict[str, Any]]:
    """An implant's check-ins to ``remote``:443 about every ``period`` seconds (a few seconds of jitter)."""
    entries = []
    for beat in range(beats):
        jitter = int(hashlib.sha256(f"{remote}|{beat}".encode()).hexdigest()[:4], 16) % 21 - 10
        when = first + dt.timedelta(seconds=beat * period + jitter)
        entries.append(flow_entry(project, instance, when, (source_ip, 41000 + beat), (remote, 443), sent=1200))
    return entries
