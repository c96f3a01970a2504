"""VPC Flow Logs in the AWS sandbox: flow logs created through EC2 and delivered as AWS delivers them.

moto records a flow log's configuration but delivers nothing; this module plays the delivery service: it writes
an instance's flow records into the flow log's CloudWatch Logs group (one stream per interface, the flow log's
format) and into its S3 bucket (``AWSLogs/<account>/vpcflowlogs/<region>/<yyyy>/<mm>/<dd>/`` gzip files with a
header line, the default format), through the ordinary CloudWatch Logs and S3 APIs.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

CLOUDWATCH_FORMAT = (
    "${version} ${account-id} ${interface-id} ${instance-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} "
    "${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${flow-direction}"
)
S3_HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
)
LOG_GROUP = "/cloudir-sandbox/vpc-flow-logs"
FLOW_BUCKET = "sandbox-vpc-flow-logs"
DELIVERY_ROLE = "arn:aws:iam::{account}:role/vpc-flow-logs-delivery"


@dataclass(frozen=True)
class FlowLogs:
    """The flow logs created for one network."""

    vpc: str
    cloudwatch_id: str
    s3_id: str


@dataclass(frozen=True)
class Connection:
    """One outbound connection of an instance (one record per direction)."""

    start: int  # epoch seconds
    remote: str
    port: int
    bytes_out: int
    source_port: int


def create_flow_logs(sandbox: Any, vpc: str, account: str) -> FlowLogs:
    """A CloudWatch Logs flow log (custom version 5 format) and an S3 flow log (default format) on ``vpc``."""
    ec2, logs, s3 = sandbox.client("ec2"), sandbox.client("logs"), sandbox.client("s3")
    logs.create_log_group(logGroupName=LOG_GROUP)
    location = (
        {} if sandbox.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": sandbox.region}}
    )
    s3.create_bucket(Bucket=FLOW_BUCKET, **location)
    common = {"ResourceIds": [vpc], "ResourceType": "VPC", "TrafficType": "ALL"}
    cloudwatch = ec2.create_flow_logs(
        **common,
        LogDestinationType="cloud-watch-logs",
        LogGroupName=LOG_GROUP,
        DeliverLogsPermissionArn=DELIVERY_ROLE.format(account=account),
        LogFormat=CLOUDWATCH_FORMAT,
    )["FlowLogIds"][0]
    to_s3 = ec2.create_flow_logs(**common, LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{FLOW_BUCKET}")
    return FlowLogs(vpc, str(cloudwatch), str(to_s3["FlowLogIds"][0]))


def _records(instance: dict[str, Any], account: str, connection: Connection, window: int) -> list[dict[str, Any]]:
    """The two directions of ``connection`` as field dicts (end = the end of its aggregation window)."""
    end = connection.start - connection.start % window + window
    local = instance["PrivateIpAddress"]
    packets = max(1, connection.bytes_out // 500)
    common = {
        "version": "5",
        "account-id": account,
        "interface-id": instance["NetworkInterfaces"][0]["NetworkInterfaceId"],
        "instance-id": instance["InstanceId"],
        "protocol": "6",
        "start": str(connection.start),
        "end": str(end),
        "action": "ACCEPT",
        "log-status": "OK",
    }
    out = {
        "srcaddr": local,
        "dstaddr": connection.remote,
        "srcport": connection.source_port,
        "dstport": connection.port,
        "packets": packets,
        "bytes": connection.bytes_out,
        "flow-direction": "egress",
    }
    back = {
        "srcaddr": connection.remote,
        "dstaddr": local,
        "srcport": connection.port,
        "dstport": connection.source_port,
        "packets": packets,
        "bytes": 2 * connection.bytes_out,
        "flow-direction": "ingress",
    }
    return [common | {k: str(v) for k, v in out.items()}, common | {k: str(v) for k, v in back.items()}]


def _line(record: dict[str, Any], fields: list[str]) -> str:
    return " ".join(record.get(name, "-") for name in fields)


def deliver(
    sandbox: Any,
    flow_logs: FlowLogs,
    instance: dict[str, Any],
    account: str,
    connections: list[Connection],
    *,
    window: int = 60,
) -> None:
    """Deliver ``connections`` of ``instance`` to both flow logs, as the flow-log service would."""
    records = [r for c in sorted(connections, key=lambda c: c.start) for r in _records(instance, account, c, window)]
    eni = instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    logs = sandbox.client("logs")
    stream = f"{eni}-all"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    cloudwatch_fields = [w.removeprefix("${").removesuffix("}") for w in CLOUDWATCH_FORMAT.split()]
    events = [{"timestamp": int(r["end"]) * 1000, "message": _line(r, cloudwatch_fields)} for r in records]
    for batch in range(0, len(events), 5000):
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[batch : batch + 5000])
    by_hour: dict[datetime, list[str]] = {}
    for record in records:
        hour = datetime.fromtimestamp(int(record["end"]), UTC).replace(minute=0, second=0) + timedelta(hours=1)
        by_hour.setdefault(hour, []).append(_line(record, S3_HEADER.split()))
    s3 = sandbox.client("s3")
    for hour, lines in sorted(by_hour.items()):
        body = gzip.compress(("\n".join([S3_HEADER, *lines]) + "\n").encode())
        digest = hashlib.sha256(body).hexdigest()[:8]
        name = f"{account}_vpcflowlogs_{sandbox.region}_{flow_logs.s3_id}_{hour:%Y%m%dT%H%MZ}_{digest}"
        key = f"AWSLogs/{account}/vpcflowlogs/{sandbox.region}/{hour:%Y/%m/%d}/{name}.log.gz"
        s3.put_object(Bucket=FLOW_BUCKET, Key=key, Body=body)


def beacon(start: datetime, remote: str, *, period: int, beats: int, bytes_out: int = 420) -> list[Connection]:
    """An implant's check-ins: one short HTTPS connection every ``period`` seconds (a few seconds of jitter)."""
    t0 = int(start.timestamp())
    return [
        Connection(t0 + n * period + (n * 7919) % 5, remote, 443, bytes_out + (n * 31) % 40, 40000 + n % 20000)
        for n in range(beats)
    ]


def plant_beacon(sandbox: Any, instance_id: str, account: str, now: datetime, remote: str) -> FlowLogs:
    """Flow logs on the instance's VPC holding an implant's 10-minute check-ins to ``remote`` over the last 12
    hours, and one package download (what a web server also does)."""
    ec2 = sandbox.client("ec2")
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    flow_logs = create_flow_logs(sandbox, instance["VpcId"], account)
    mirror = Connection(int((now - timedelta(hours=3)).timestamp()), "151.101.2.132", 80, 90_000, 51000)
    deliver(
        sandbox,
        flow_logs,
        instance,
        account,
        [*beacon(now - timedelta(hours=13), remote, period=600, beats=72), mirror],
    )
    return flow_logs
