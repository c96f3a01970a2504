"""Resolve what the responder named (instance id, private/public IP, ENI id, access key) to one target."""

from __future__ import annotations

import ipaddress
from typing import Any

from botocore.exceptions import ClientError

from cloudir.case import ActionPool
from cloudir.errors import CloudirError, TargetNotFoundError
from cloudir.provider import Target, TargetKind, TargetQuery
from providers.aws.session import AwsClients, aws_errors

_MISSING = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "InvalidNetworkInterfaceID.NotFound"}


def enabled_regions(clients: AwsClients) -> list[str]:
    """Regions enabled for the account (opted-in or not requiring opt-in)."""
    with aws_errors("list the enabled regions"):
        regions = clients.client("ec2").describe_regions(AllRegions=False)["Regions"]
    return sorted(r["RegionName"] for r in regions if r.get("OptInStatus") != "not-opted-in")


def _instances(ec2: Any, **kwargs: Any) -> list[dict[str, Any]]:
    try:
        pages = ec2.get_paginator("describe_instances").paginate(**kwargs)
        return [inst for page in pages for res in page["Reservations"] for inst in res["Instances"]]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            return []
        raise


def _instance_ids_in_region(clients: AwsClients, region: str, value: str) -> set[str]:
    ec2 = clients.client("ec2", region)
    if value.startswith("i-"):
        return {inst["InstanceId"] for inst in _instances(ec2, InstanceIds=[value])}
    if value.startswith("eni-"):
        try:
            enis = ec2.describe_network_interfaces(NetworkInterfaceIds=[value])["NetworkInterfaces"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return set()
            raise
    else:
        found = {inst["InstanceId"] for inst in _instances(ec2, Filters=[{"Name": "ip-address", "Values": [value]}])}
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "addresses.private-ip-address", "Values": [value]}])[
            "NetworkInterfaces"
        ]
        return found | {eni["Attachment"]["InstanceId"] for eni in enis if eni.get("Attachment", {}).get("InstanceId")}
    attached = [eni["Attachment"]["InstanceId"] for eni in enis if eni.get("Attachment", {}).get("InstanceId")]
    if enis and not attached:
        raise TargetNotFoundError(f"network interface {value} in {region} is not attached to an instance")
    return set(attached)


def _check_instance_value(value: str) -> None:
    if value.startswith(("i-", "eni-")):
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise CloudirError(
            f"{value!r} is not an instance id (i-…), ENI id (eni-…) or IP address",
            hint="pass --instance, --ip or --eni",
        ) from None


def find_instance(clients: AwsClients, query: TargetQuery, account: str, all_regions: bool) -> Target:
    """Find the one instance matching ``query`` in its region, or in every enabled region."""
    _check_instance_value(query.value)
    regions = (
        enabled_regions(clients) if all_regions or query.location == "*" else [query.location or clients.default_region]
    )
    with aws_errors(f"look up {query.value}"), ActionPool(max_workers=8) as pool:
        found = dict(
            zip(regions, pool.map(lambda r: _instance_ids_in_region(clients, r, query.value), regions), strict=True)
        )
    matches = [(region, iid) for region, ids in found.items() for iid in sorted(ids)]
    if not matches:
        where = "any enabled region" if len(regions) > 1 else regions[0]
        raise TargetNotFoundError(
            f"no EC2 instance matches {query.value} in {where}",
            hint="check the id/IP, pass --region, or search everywhere with --all-regions",
        )
    if len(matches) > 1:
        listed = ", ".join(f"{iid} ({region})" for region, iid in matches)
        raise CloudirError(
            f"{query.value} matches several instances: {listed}", hint="name the instance with --instance"
        )
    region, instance_id = matches[0]
    with aws_errors(f"describe instance {instance_id}"):
        instance = _instances(clients.client("ec2", region), InstanceIds=[instance_id])[0]
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    return Target(
        cloud="aws",
        kind=TargetKind.INSTANCE,
        id=instance_id,
        location=region,
        account=account,
        name=tags.get("Name"),
        details={
            "matched_by": query.value,
            "vpc_id": instance.get("VpcId"),
            "state": instance["State"]["Name"],
            "tags": tags,
        },
    )
