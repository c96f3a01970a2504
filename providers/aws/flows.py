"""VPC Flow Logs collection: the target network's flow logs from CloudWatch Logs and S3, and its instances.

Layout in the case (``logs/aws/flows/<region>/``):

* ``instances/describe-instances-xml/page-00001.xml`` (the raw DescribeInstances response) and
  ``instances/page-00001.json`` (the same page as JSON, which the ``instances`` table reads);
* ``flow-logs.json``: the DescribeFlowLogs answer for the network (what logs it, where to, in which format, since
  when);
* ``cloudwatch/<log group>/page-00001.json``: raw FilterLogEvents response bodies, with ``request.json`` holding
  the window and the flow log's ``logFormat`` (the message fields); each page's ``nextToken`` is the cursor a
  resumed run continues from;
* ``cloudwatch/<log group>/insights/window-<start>-<end>.json``: for a group read with Logs Insights instead, the
  raw final ``GetQueryResults`` body of each query window (epoch seconds, both inclusive), with ``request.json``
  (window, ``logFormat``, ``queryString``). A query answers at most 10,000 rows: a window whose
  ``recordsMatched`` is more is kept as ``capped-windows/window-....json`` (evidence, not read again) and split in two
  until each half fits. Which API a group is read with is the stated rule :data:`INSIGHTS_ABOVE_BYTES`;
* ``s3/<bucket>/<key>``: delivered ``.log.gz`` / ``.parquet`` objects copied byte for byte, SHA-256 while
  streaming (``s3-listing.json``: what was listed).

``coverage.json`` beside them says, per network, which flow logs covered it, from when, and what was collected.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from botocore.exceptions import BotoCoreError, ClientError

from cloudir.case import Case, safe_name
from cloudir.coverage import CoverageReport, SourceCoverage, iso_utc, parse_utc
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.plan import Plan, PlannedCall, Step, StepContext, StepKind
from cloudir.provider import LogPullRequest
from cloudir.safepath import PathClaims, path_part
from providers.aws.logs import MAX_REFUSED_IN_RECORD, TokenBucket, capturing
from providers.aws.session import AwsClients, aws_errors, describe_error

FLOWS_ROOT = "logs/aws/flows"
COVERAGE_FILE = f"{FLOWS_ROOT}/coverage.json"
DEFAULT_FILTER_RATE = 5.0  # FilterLogEvents: 5 requests per second per account and region
DEFAULT_FORMAT = (
    "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} "
    "${bytes} ${start} ${end} ${action} ${log-status}"
)
INSIGHTS_ABOVE_BYTES = 10 * 1024**3
"""``--flows-via auto`` reads a log group with Logs Insights when DescribeLogGroups says it stores at least this
much, else with FilterLogEvents: paging 10 GiB through FilterLogEvents (at most 1 MB a page, 5 requests/s) takes
half an hour or more and scans the whole group client-side; Insights filters server-side."""
INSIGHTS_ROWS = 10_000  # GetQueryResults returns at most 10,000 rows per query (CloudWatch Logs quotas)
INSIGHTS_MAX_QUERY = 10_000  # characters of a queryString
INSIGHTS_DONE = frozenset({"Complete", "Failed", "Cancelled", "Timeout", "Unknown"})
POLL_FIRST_SECONDS, POLL_MAX_SECONDS = 0.25, 16.0
_ENI = re.compile(r"^eni-[0-9a-f]+$")
_CHUNK = 1024 * 1024
_S3_STAMP = re.compile(r"_(\d{8}T\d{4})Z_[^/]*$")

# Every call a flow-log pull may make, with the IAM actions it needs.
FLOW_CALLS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sts", "GetCallerIdentity"): ("sts:GetCallerIdentity",),
    ("ec2", "DescribeInstances"): ("ec2:DescribeInstances",),
    ("ec2", "DescribeFlowLogs"): ("ec2:DescribeFlowLogs",),
    ("logs", "FilterLogEvents"): ("logs:FilterLogEvents",),
    ("logs", "DescribeLogGroups"): ("logs:DescribeLogGroups",),
    ("logs", "StartQuery"): ("logs:StartQuery",),
    ("logs", "GetQueryResults"): ("logs:GetQueryResults",),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "GetObject"): ("s3:GetObject",),
}


def required_permissions() -> list[str]:
    """IAM actions a flow-log pull may use."""
    return sorted({action for actions in FLOW_CALLS.values() for action in actions})


def _call(service: str, operation: str, region: str | None = None, **params: Any) -> PlannedCall:
    if (service, operation) not in FLOW_CALLS:
        raise KeyError(f"{service}:{operation} is not in providers.aws.flows.FLOW_CALLS")
    return PlannedCall(service, operation, region, params)


def _claim_local_paths(listed: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Keep the objects whose keys are safe, distinct paths under ``s3/<bucket>/``; refuse the others with a reason.

    An attacker who can write to the bucket chooses keys (``../``, ``./``, ``//``, a genuine file's key as a
    folder): none of them leaves the folder or overwrites another object's copy.
    """
    claims = PathClaims()
    kept: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for item in sorted(listed, key=lambda o: (o["bucket"], o["key"])):
        reason = claims.claim(item["key"], [f"{item['bucket']}/{item['key']}"])
        (kept if reason is None else refused).append(item if reason is None else item | {"reason": reason})
    return kept, refused


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class FlowPull:
    """The steps of one VPC Flow Logs pull in one region; holds what the steps of a run share."""

    clients: AwsClients
    request: LogPullRequest
    start: datetime = field(init=False)
    end: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.start = parse_utc(self.request.start)
        self.end = parse_utc(self.request.end)
        if self.start >= self.end:
            raise CloudirError(f"the window start {self.request.start} is not before its end {self.request.end}")
        if len(self.request.locations) > 1:
            raise CloudirError("a flow-log pull covers one region", hint="run one pull per --region")
        self.region = self.request.locations[0] if self.request.locations else self.clients.default_region
        self.instances = [r for r in self.request.resources if r.startswith("i-")]
        self.rate = float(self.request.extra.get("filter_rate", DEFAULT_FILTER_RATE))
        self.via = str(self.request.extra.get("flows_via") or "auto")
        if self.via not in {"auto", "filter", "insights"}:
            raise CloudirError(f"--flows-via {self.via}: expected auto, filter or insights")
        self.folder = f"{FLOWS_ROOT}/{safe_name(self.region)}"

    # -- plan ----------------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The pull as READ steps."""
        window = {"startTime": iso_utc(self.start), "endTime": iso_utc(self.end)}
        scope = ",".join(self.instances) or "every network"
        network_filter = "<VPCs of " + scope + ">" if self.instances else None
        describe = [_call("sts", "GetCallerIdentity")]
        if self.instances:
            describe.append(_call("ec2", "DescribeInstances", self.region, InstanceIds=",".join(self.instances)))
        describe.append(
            _call(
                "ec2",
                "DescribeInstances",
                self.region,
                **({"Filters": f"vpc-id={network_filter}"} if network_filter else {}),
            )
        )
        steps = [
            Step(
                "inventory",
                "DescribeInstances pages of the network (raw and JSON)",
                StepKind.READ,
                describe,
                self._inventory,
            ),
            Step(
                "flow-logs",
                "Find the flow logs of the network's VPCs, subnets and interfaces",
                StepKind.READ,
                [_call("ec2", "DescribeFlowLogs", self.region, Filter="resource-id=<VPCs, subnets, ENIs>")],
                self._flow_logs,
            ),
            Step(
                "cloudwatch",
                "FilterLogEvents pages, or Logs Insights query windows, of each CloudWatch Logs destination (raw, "
                "resumable)",
                StepKind.READ,
                [
                    *(
                        [_call("logs", "DescribeLogGroups", self.region, logGroupNamePrefix="<from DescribeFlowLogs>")]
                        if self.via == "auto"
                        else []
                    ),
                    *(
                        [
                            _call(
                                "logs", "FilterLogEvents", self.region, logGroupName="<from DescribeFlowLogs>", **window
                            )
                        ]
                        if self.via != "insights"
                        else []
                    ),
                    *(
                        [
                            _call(
                                "logs",
                                "StartQuery",
                                self.region,
                                logGroupName="<from DescribeFlowLogs>",
                                queryString=self._query(["<the network's ENIs>"] if self.instances else []),
                                limit=INSIGHTS_ROWS,
                                **window,
                            ),
                            _call("logs", "GetQueryResults", self.region, queryId="<each query>"),
                        ]
                        if self.via != "filter"
                        else []
                    ),
                ],
                self._cloudwatch,
            ),
            Step(
                "s3",
                "List and copy the S3-delivered flow-log objects of the window, SHA-256 while streaming",
                StepKind.READ,
                [
                    _call(
                        "s3",
                        "ListObjectsV2",
                        None,
                        Bucket="<from DescribeFlowLogs>",
                        Prefix=".../vpcflowlogs/<region>/<day>/",
                    ),
                    _call("s3", "GetObject", None, Bucket="<from DescribeFlowLogs>"),
                ],
                self._s3,
            ),
            Step("coverage", "Write the flow-log coverage report", StepKind.READ, [], self._coverage),
        ]
        target = f"vpc-flow-logs:{self.region}:{iso_utc(self.start)}/{iso_utc(self.end)}:{scope}"
        notes = [
            "flow logs of the target's whole network are collected: peer groups need the other instances",
            f"CloudWatch Logs calls are rate-limited client-side to {self.rate:g} requests/s",
            {
                "auto": "CloudWatch Logs groups storing >= 10 GiB (DescribeLogGroups storedBytes) are read with Logs "
                "Insights StartQuery, smaller ones with FilterLogEvents (--flows-via auto)",
                "filter": "CloudWatch Logs groups are read with FilterLogEvents (--flows-via filter)",
                "insights": "CloudWatch Logs groups are read with Logs Insights StartQuery (--flows-via insights)",
            }[self.via],
        ]
        return Plan("logs", "aws", target, steps, notes)

    # -- inventory -----------------------------------------------------------------------------------------
    def _inventory(self, ctx: StepContext) -> dict[str, Any]:
        with aws_errors("identify the AWS caller (sts:GetCallerIdentity)"):
            account = str(self.clients.client("sts").get_caller_identity()["Account"])
        ec2 = self.clients.client("ec2", self.region)
        params: dict[str, Any] = {}
        if self.instances:
            with aws_errors(f"describe {', '.join(self.instances)} (ec2:DescribeInstances)"):
                found = ec2.describe_instances(InstanceIds=self.instances)
            vpcs = sorted({i["VpcId"] for r in found["Reservations"] for i in r["Instances"] if i.get("VpcId")})
            if not vpcs:
                raise CloudirError(f"{', '.join(self.instances)}: no VPC found (EC2-Classic or terminated)")
            params["Filters"] = [{"Name": "vpc-id", "Values": vpcs}]
        instances: list[dict[str, Any]] = []
        number = 0
        with capturing(ec2, "DescribeInstances") as raw, aws_errors("describe the network's instances"):
            for page in ec2.get_paginator("describe_instances").paginate(**params):
                number += 1
                name = f"page-{number:05d}"
                ctx.case.write_bytes(f"{self.folder}/instances/describe-instances-xml/{name}.xml", raw.last_ok())
                ctx.case.write_json(f"{self.folder}/instances/{name}.json", _jsonable(page))
                instances += [i for r in page["Reservations"] for i in r["Instances"]]
        vpcs = sorted({i["VpcId"] for i in instances if i.get("VpcId")})
        return {
            "account": account,
            "pages": number,
            "instances": len(instances),
            "vpcs": vpcs,
            "subnets": sorted({i["SubnetId"] for i in instances if i.get("SubnetId")}),
            "interfaces": sorted({n["NetworkInterfaceId"] for i in instances for n in i.get("NetworkInterfaces", [])}),
        }

    # -- flow logs -----------------------------------------------------------------------------------------
    def _flow_logs(self, ctx: StepContext) -> dict[str, Any]:
        found = ctx.results["inventory"]
        resources = [*found["vpcs"], *found["subnets"], *found["interfaces"]]
        ec2 = self.clients.client("ec2", self.region)
        flow_logs: list[dict[str, Any]] = []
        with aws_errors("find the network's flow logs (ec2:DescribeFlowLogs)"):
            params: dict[str, Any] = {}
            if self.instances:
                params["Filter"] = [{"Name": "resource-id", "Values": resources or ["-"]}]
            for page in ec2.get_paginator("describe_flow_logs").paginate(**params):
                flow_logs += page["FlowLogs"]
        record = _jsonable({"resources": resources, "FlowLogs": flow_logs})
        ctx.case.write_json(f"{self.folder}/flow-logs.json", record)
        return {
            "flow_logs": [
                {
                    "id": f["FlowLogId"],
                    "resource": f.get("ResourceId"),
                    "destination_type": f.get("LogDestinationType", "cloud-watch-logs"),
                    "group": f.get("LogGroupName"),
                    "destination": f.get("LogDestination"),
                    "format": f.get("LogFormat") or DEFAULT_FORMAT,
                    "created": _jsonable(f.get("CreationTime")),
                    "status": f.get("FlowLogStatus"),
                    "delivery": f.get("DeliverLogsStatus"),
                    "traffic": f.get("TrafficType"),
                    "hive": bool((f.get("DestinationOptions") or {}).get("HiveCompatiblePartitions")),
                }
                for f in flow_logs
            ]
        }

    # -- CloudWatch Logs -----------------------------------------------------------------------------------
    def _groups(self, ctx: StepContext) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for flow_log in ctx.results["flow-logs"]["flow_logs"]:
            if flow_log["destination_type"] == "cloud-watch-logs" and flow_log["group"]:
                groups.setdefault(flow_log["group"], flow_log)
        return groups

    def _cloudwatch(self, ctx: StepContext) -> dict[str, Any]:
        limiter = TokenBucket(self.rate)
        series: dict[str, dict[str, Any]] = {}
        interfaces = ctx.results["inventory"]["interfaces"] if self.instances else []
        for group, flow_log in self._groups(ctx).items():
            via, why = self._via(group, limiter)
            if via == "insights":
                status = self._insights_group(ctx.case, group, flow_log, limiter, interfaces)
            else:
                status = self._pull_group(ctx.case, group, flow_log, limiter)
            series[group] = status | {"via": via, "why": why}
        stopped = [f"{group}: {status['error']}" for group, status in series.items() if status["error"]]
        if stopped:
            raise CloudAccessError(
                f"CloudWatch Logs reads stopped early in {len(stopped)} log groups, first: {stopped[0]}",
                hint="finished pages and query windows are kept; re-run with --resume to continue from them",
            )
        return {"groups": series}

    def _via(self, group: str, limiter: TokenBucket) -> tuple[str, str]:
        """FilterLogEvents or Logs Insights for one group, and why (the rule the plan states)."""
        if self.via != "auto":
            return self.via, f"--flows-via {self.via}"
        logs = self.clients.client("logs", self.region)
        stored = 0
        with capturing(logs, "DescribeLogGroups", limiter), aws_errors(f"describe log group {group}"):
            for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=group):
                stored += sum(int(g.get("storedBytes") or 0) for g in page["logGroups"] if g["logGroupName"] == group)
        via = "insights" if stored >= INSIGHTS_ABOVE_BYTES else "filter"
        return via, f"stores {stored} bytes ({'>=' if via == 'insights' else '<'} {INSIGHTS_ABOVE_BYTES})"

    @staticmethod
    def _query(interfaces: list[str]) -> str:
        """The Logs Insights query: every message of the window, oldest first, of the network's ENIs when given."""
        pattern = "|".join(interfaces)
        query = "fields @timestamp, @message, @logStream"
        if interfaces and len(query) + len(pattern) + 100 < INSIGHTS_MAX_QUERY:
            query += f" | filter @message like /({pattern})/"
        return f"{query} | sort @timestamp asc | limit {INSIGHTS_ROWS}"

    @staticmethod
    def _request(case: Case, folder: str, record: dict[str, Any]) -> None:
        """Write the pull's ``request.json`` or check that the stored one is this pull's."""
        case.claim_folder(
            folder,
            record,
            f"{folder} holds a pull with a different window or format",
            "use a new --case folder for a different window",
        )

    def _insights_group(
        self, case: Case, group: str, flow_log: dict[str, Any], limiter: TokenBucket, interfaces: list[str]
    ) -> dict[str, Any]:
        """Query windows of one group; a window at the 10,000-row cap is kept aside and split in two."""
        folder = f"{self.folder}/cloudwatch/{path_part(group)}/insights"
        query = self._query([i for i in interfaces if _ENI.match(i)])
        first, last = int(self.start.timestamp()), int(self.end.timestamp())
        record = {"region": self.region, "logGroupName": group, "startTime": first, "endTime": last,
                  "logFormat": flow_log["format"], "flowLogId": flow_log["id"], "queryString": query}  # fmt: skip
        self._request(case, folder, record)
        status: dict[str, Any] = {"queries": 0, "windows": 0, "split": 0, "capped_one_second": [], "error": None}
        logs = self.clients.client("logs", self.region)
        windows = [(first, last)]
        while windows:
            low, high = windows.pop()
            name = f"window-{low}-{high}.json"
            if (case.root / folder / name).is_file():
                status["windows"] += 1
                continue
            capped = case.root / folder / "capped-windows" / name
            if capped.is_file():
                body = capped.read_bytes()
            else:
                try:
                    body = self._run_query(logs, limiter, group, (low, high), query)
                except (ClientError, BotoCoreError) as exc:
                    status["error"] = str(describe_error(exc, f"Logs Insights on {group}"))
                    break
                status["queries"] += 1
            answer = json.loads(body)
            if answer["status"] != "Complete":
                status["error"] = f"the query of {low}..{high} ended {answer['status']}"
                break
            matched = int((answer.get("statistics") or {}).get("recordsMatched") or 0)
            if (matched > len(answer["results"]) or len(answer["results"]) >= INSIGHTS_ROWS) and high > low:
                if not capped.is_file():
                    case.write_bytes(f"{folder}/capped-windows/{name}", [body])
                middle = (low + high) // 2
                windows += [(middle + 1, high), (low, middle)]  # the earlier half next
                status["split"] += 1
                continue
            if matched > len(answer["results"]):
                status["capped_one_second"].append(low)  # more than 10,000 records in one second: cannot split
            case.write_bytes(f"{folder}/{name}", [body])
            status["windows"] += 1
        return status

    @staticmethod
    def _run_query(logs: Any, limiter: TokenBucket, group: str, window: tuple[int, int], query: str) -> bytes:
        """StartQuery, then GetQueryResults with backoff until the query is done: its final raw body."""
        with capturing(logs, "StartQuery", limiter), capturing(logs, "GetQueryResults", limiter) as raw:
            started = logs.start_query(
                logGroupName=group, startTime=window[0], endTime=window[1], queryString=query, limit=INSIGHTS_ROWS
            )
            delay = POLL_FIRST_SECONDS
            while True:
                if logs.get_query_results(queryId=started["queryId"])["status"] in INSIGHTS_DONE:
                    return raw.last_ok()
                time.sleep(delay)
                delay = min(POLL_MAX_SECONDS, delay * 2)

    def _pull_group(self, case: Case, group: str, flow_log: dict[str, Any], limiter: TokenBucket) -> dict[str, Any]:
        folder = f"{self.folder}/cloudwatch/{path_part(group)}"
        start_ms, end_ms = int(self.start.timestamp() * 1000), int(self.end.timestamp() * 1000)
        record = {
            "region": self.region,
            "logGroupName": group,
            "startTime": start_ms,
            "endTime": end_ms,
            "logFormat": flow_log["format"],
            "flowLogId": flow_log["id"],
        }
        self._request(case, folder, record)
        pages = sorted((case.root / folder).glob("page-*.json"))
        token = json.loads(pages[-1].read_bytes()).get("nextToken") if pages else None
        status: dict[str, Any] = {"pages": len(pages), "resumed_pages": len(pages), "error": None}
        if pages and token is None:
            return status
        logs = self.clients.client("logs", self.region)
        params: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "endTime": end_ms}
        number = len(pages)
        with capturing(logs, "FilterLogEvents", limiter) as raw:
            try:
                while True:
                    response = logs.filter_log_events(**params, **({"nextToken": token} if token else {}))
                    number += 1
                    case.write_bytes(f"{folder}/page-{number:05d}.json", raw.last_ok())
                    token = response.get("nextToken")
                    if not token:
                        break
            except (ClientError, BotoCoreError) as exc:
                status["error"] = str(describe_error(exc, f"FilterLogEvents on {group}"))
            status["throttled_responses"] = raw.throttled
        status["pages"] = number
        return status

    # -- S3 delivery ---------------------------------------------------------------------------------------
    def _days(self) -> Iterator[datetime]:
        day = (self.start - timedelta(hours=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        while day <= self.end + timedelta(hours=1):
            yield day
            day += timedelta(days=1)

    def _prefixes(self, destination: str, account: str, hive: bool) -> tuple[str, list[str]]:
        bucket, _, prefix = destination.removeprefix("arn:aws:s3:::").partition("/")
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        if hive:
            root = f"{base}AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={self.region}/"
            return bucket, [f"{root}year={d:%Y}/month={d:%m}/day={d:%d}/" for d in self._days()]
        root = f"{base}AWSLogs/{account}/vpcflowlogs/{self.region}/"
        return bucket, [f"{root}{d:%Y/%m/%d}/" for d in self._days()]

    def _in_window(self, key: str, flow_log_id: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        match = _S3_STAMP.search(name)
        if match is None or f"_{flow_log_id}_" not in name:
            return False
        when = datetime.strptime(match.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC)
        return self.start - timedelta(hours=1) <= when <= self.end + timedelta(hours=1)

    def _s3(self, ctx: StepContext) -> dict[str, Any]:
        account = ctx.results["inventory"]["account"]
        s3 = self.clients.client("s3")
        listed: list[dict[str, Any]] = []
        for flow_log in ctx.results["flow-logs"]["flow_logs"]:
            if flow_log["destination_type"] != "s3" or not flow_log["destination"]:
                continue
            bucket, prefixes = self._prefixes(flow_log["destination"], account, flow_log["hive"])
            with aws_errors(f"list flow-log objects in s3://{bucket} (s3:ListBucket)"):
                for prefix in prefixes:
                    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                        listed += [
                            {"flow_log": flow_log["id"], "bucket": bucket, "key": o["Key"], "size": int(o["Size"])}
                            for o in page.get("Contents", [])
                            if self._in_window(o["Key"], flow_log["id"])
                        ]
        listed, refused = _claim_local_paths(listed)
        ctx.case.write_json(f"{self.folder}/s3-listing.json", {"objects": listed, "refused": refused})
        downloaded = present = 0
        for item in listed:
            rel = f"{self.folder}/s3/{item['bucket']}/{item['key']}"
            path = ctx.case.root / rel
            if path.is_file() and path.stat().st_size == item["size"]:
                present += 1
                continue
            with aws_errors(f"download s3://{item['bucket']}/{item['key']}"):
                body = s3.get_object(Bucket=item["bucket"], Key=item["key"])["Body"]
                ctx.case.write_bytes(rel, body.iter_chunks(_CHUNK))
            downloaded += 1
        return {
            "objects": len(listed),
            "downloaded": downloaded,
            "already_present": present,
            "refused_objects": refused[:MAX_REFUSED_IN_RECORD],
            "refused_count": len(refused),
        }

    # -- coverage ------------------------------------------------------------------------------------------
    def _coverage(self, ctx: StepContext) -> dict[str, Any]:
        found = ctx.results["inventory"]
        flow_logs = ctx.results["flow-logs"]["flow_logs"]
        report = CoverageReport("aws", found["account"], iso_utc(self.start), iso_utc(self.end))
        spans = _cloudwatch_spans(ctx.case.root / self.folder / "cloudwatch")
        s3_files, s3_refused = _count_by(ctx.results.get("s3", {}), ctx.case.root / self.folder / "s3")
        instance_vpc = _instance_networks(ctx.case.root / self.folder / "instances")
        for vpc in found["vpcs"]:
            covering = [f for f in flow_logs if f["resource"] == vpc or instance_vpc.get(f["resource"]) == vpc]
            report.locations[vpc] = {
                "flow_logs": [f["id"] for f in covering],
                "since": min((f["created"] for f in covering if f["created"]), default=None),
                "traffic": sorted({f["traffic"] for f in covering if f["traffic"]}),
            }
            if not covering:
                report.warn(f"{vpc}: no flow log covers this network (nothing of its traffic was recorded)")
            for flow_log in covering:
                self._add_source(report, vpc, flow_log, spans, (s3_files, s3_refused))
        written = _write(ctx.case, report)
        failed = [step for step in ("cloudwatch", "s3") if step not in ctx.results]
        if failed:  # written as far as it goes; failing too makes --resume write it again after the pull
            raise CloudirError(f"the coverage report is partial: the {' and '.join(failed)} step did not finish")
        return {"warnings": len(report.warnings), "networks": report.locations} | written

    def _add_source(
        self,
        report: CoverageReport,
        vpc: str,
        flow_log: dict[str, Any],
        spans: dict[str, tuple[int, int, str | None, str | None]],
        s3: tuple[dict[str, int], dict[str, list[dict[str, Any]]]],
    ) -> None:
        created = flow_log["created"]
        if created and parse_utc(created) > self.start:
            report.warn(f"{vpc}: flow log {flow_log['id']} exists only since {created}, after the window start")
        if flow_log["status"] not in {None, "ACTIVE"} or flow_log["delivery"] not in {None, "SUCCESS"}:
            report.warn(f"{vpc}: flow log {flow_log['id']} is {flow_log['status']}, delivery {flow_log['delivery']}")
        if flow_log["traffic"] not in {None, "ALL"}:
            report.warn(f"{vpc}: flow log {flow_log['id']} records {flow_log['traffic']} traffic only")
        details = {"flow_log": flow_log["id"], "resource": flow_log["resource"], "since": created}
        if flow_log["destination_type"] == "cloud-watch-logs":
            pages, items, first, last = spans.get(path_part(flow_log["group"] or ""), (0, 0, None, None))
            status = "unavailable" if not pages else "complete" if items else "empty"
            report.add_source(
                SourceCoverage(
                    "vpc-flow-logs:cloudwatch",
                    vpc,
                    flow_log["group"] or "-",
                    status,
                    items,
                    first,
                    last,
                    "no page was collected" if not pages else None,
                    details | {"pages": pages},
                )
            )
        elif flow_log["destination_type"] == "s3":
            files, bad = s3[0].get(flow_log["id"], 0), s3[1].get(flow_log["id"], [])
            reason = f"{len(bad)} objects refused (unsafe or colliding keys), first {bad[0]['key']!r}" if bad else None
            if bad:
                report.warn(f"{vpc}: flow log {flow_log['id']}: {reason}: {bad[0]['reason']}; the others were copied")
            report.add_source(
                SourceCoverage(
                    "vpc-flow-logs:s3",
                    vpc,
                    flow_log["destination"] or "-",
                    "partial" if bad else "complete" if files else "empty",
                    files,
                    stopped_reason=reason,
                    details=details | {"refused": [{"key": b["key"], "reason": b["reason"]} for b in bad]},
                )
            )
        else:
            report.add_source(
                SourceCoverage(
                    f"vpc-flow-logs:{flow_log['destination_type']}",
                    vpc,
                    flow_log["destination"] or "-",
                    "unavailable",
                    stopped_reason="this destination type is not collected",
                    details=details,
                )
            )


def _write(case: Case, report: CoverageReport) -> dict[str, Any]:
    case.write_json(COVERAGE_FILE, report.to_dict())
    return {"covered": report.to_dict()["covered"]}


def _cloudwatch_spans(root: Path) -> dict[str, tuple[int, int, str | None, str | None]]:
    """(pages, events, first, last event time) per stored log-group folder (DuckDB over the raw FilterLogEvents
    pages and Logs Insights windows)."""
    pages = sorted(str(p) for p in root.glob("*/page-*.json"))
    windows = sorted(str(p) for p in root.glob("*/insights/window-*.json"))
    if not pages and not windows:
        return {}
    read = "read_json_objects({}, filename = true, maximum_object_size = 268435456)"
    events = (
        "SELECT filename, unnest(from_json(json->'events', '[{\"timestamp\":\"BIGINT\"}]')).timestamp AS e "
        f"FROM {read.format('$pages')}"
    )
    rows = (
        "SELECT filename, epoch_ms(strptime(list_filter(r, lambda f: f.field = '@timestamp')[1].value, "
        "'%Y-%m-%d %H:%M:%S.%g')) AS e FROM (SELECT filename, unnest(from_json(json->'results', "
        f'\'[[{{"field":"VARCHAR","value":"VARCHAR"}}]]\')) AS r FROM {read.format("$windows")})'
    )
    found = " UNION ALL ".join([*([events] if pages else []), *([rows] if windows else [])])
    answer = (
        duckdb.connect()
        .execute(
            f"""
        SELECT grp, count(DISTINCT filename), count(e), min(e), max(e)
        FROM (SELECT *, regexp_extract(filename, '/cloudwatch/([^/]+)/', 1) AS grp FROM ({found}))
        GROUP BY grp
        """,
            {name: files for name, files in (("pages", pages), ("windows", windows)) if files},
        )
        .fetchall()
    )
    return {str(g): (int(p), int(n), _stamp(lo), _stamp(hi)) for g, p, n, lo, hi in answer}


def _stamp(milliseconds: int | None) -> str | None:
    return iso_utc(datetime.fromtimestamp(milliseconds / 1000, UTC)) if milliseconds is not None else None


def _count_by(result: dict[str, Any], root: Path) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """Downloaded and refused S3 objects per flow log id (from the listing the s3 step wrote)."""
    listing = root.parent / "s3-listing.json"
    if not result or not listing.is_file():
        return {}, {}
    written = json.loads(listing.read_text(encoding="utf-8"))
    counts: dict[str, int] = {}
    for item in written["objects"]:
        if (root / item["bucket"] / item["key"]).is_file():
            counts[item["flow_log"]] = counts.get(item["flow_log"], 0) + 1
    refused: dict[str, list[dict[str, Any]]] = {}
    for item in written.get("refused", []):
        refused.setdefault(item["flow_log"], []).append(item)
    return counts, refused


def _instance_networks(root: Path) -> dict[str, str]:
    """The VPC of every subnet and interface in the stored DescribeInstances pages."""
    owners: dict[str, str] = {}
    for page in sorted(root.glob("page-*.json")):
        for reservation in json.loads(page.read_text(encoding="utf-8"))["Reservations"]:
            for instance in reservation["Instances"]:
                vpc = instance.get("VpcId")
                if not vpc:
                    continue
                owners[instance.get("SubnetId", "")] = vpc
                for interface in instance.get("NetworkInterfaces", []):
                    owners[interface["NetworkInterfaceId"]] = vpc
    return owners


def plan_pull_flows(clients: AwsClients, request: LogPullRequest) -> Plan:
    """The VPC Flow Logs pull for ``request`` as a plan of READ steps (no API call is made while planning)."""
    return FlowPull(clients, request).plan()
