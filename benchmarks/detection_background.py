"""Benign CloudTrail background for the detection benchmark: a small organisation's month of management events.

The generator knows nothing about the attack datasets; it models an ordinary AWS organisation:

* 3 accounts (prod, staging, shared-services), activity mostly in us-east-1, some in eu-west-1.
* Service roles with periodic jobs (metrics exporter every 60 s, cluster autoscaler every 60 s, config sync every
  15 min with SecureString parameters and two secrets, hourly EBS backups, 6-hourly ECR logins on 10 nodes),
  with +-3 s jitter and ~1 % missed beats, calling from each account's NAT addresses with SDK user agents.
* AWS services acting for the account (Lambda cold-start AssumeRole, KMS data keys for S3/EBS).
* CI roles: GitHub Actions deploys (5-15 runs per working day, a new session per run, runner addresses spread
  over 40 /24 networks) and Terraform (plan bursts of 30-80 Describe/List/Get calls, applies, nightly drift check).
* 4 administrators and 12 developers behind SSO roles, each with a time zone, working hours, a home network,
  the office network, travel days from unknown networks (~5 % of days), console / CLI / SDK user agents whose
  versions drift, and a personal Zipf-weighted operation mix so the tail of rarely used operations keeps
  appearing. Administrators do occasional sensitive work (create users and access keys, attach read-only
  policies, open ports to the office, SSM sessions and commands, snapshots, role changes, login profiles for
  new staff). ~1 % of human calls fail with AccessDenied. A new developer joins on day 25.
* 3 data analysts polling Athena queries.

Volume per identity is set to realistic rates; ``target_events`` scales the human and CI intensity so the total
lands near the requested size. Output: gzip CloudTrail files ``{"Records": [...]}``, one per account and hour.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ACCOUNTS = {"prod": "111111111111", "staging": "222222222222", "shared": "333333333333"}
NAT = {"111111111111": "52.20.14.7", "222222222222": "52.20.15.9", "333333333333": "52.20.16.11"}
OFFICE_NET = "198.51.100"
MAIN_REGION = "us-east-1"

READ_OPS = [
    ("ec2", "DescribeInstances"), ("ec2", "DescribeVolumes"), ("ec2", "DescribeSecurityGroups"),
    ("ec2", "DescribeSubnets"), ("ec2", "DescribeVpcs"), ("ec2", "DescribeImages"), ("ec2", "DescribeSnapshots"),
    ("ec2", "DescribeNetworkInterfaces"), ("ec2", "DescribeAddresses"), ("ec2", "DescribeRouteTables"),
    ("s3", "ListBuckets"), ("s3", "GetBucketLocation"), ("s3", "ListObjects"), ("s3", "GetBucketPolicy"),
    ("s3", "GetBucketAcl"), ("s3", "GetBucketTagging"), ("lambda", "ListFunctions20150331"),
    ("lambda", "GetFunction20150331v2"), ("lambda", "GetFunctionConfiguration20150331v2"),
    ("logs", "DescribeLogGroups"), ("logs", "DescribeLogStreams"), ("logs", "FilterLogEvents"),
    ("logs", "GetLogEvents"), ("logs", "StartQuery"), ("logs", "GetQueryResults"), ("cloudwatch", "GetMetricData"),
    ("cloudwatch", "DescribeAlarms"), ("cloudwatch", "ListMetrics"), ("dynamodb", "DescribeTable"),
    ("dynamodb", "ListTables"), ("iam", "ListRoles"), ("iam", "GetRole"), ("iam", "ListUsers"),
    ("iam", "ListPolicies"), ("iam", "GetPolicy"), ("iam", "ListAttachedRolePolicies"), ("sts", "GetCallerIdentity"),
    ("ecs", "DescribeServices"), ("ecs", "ListClusters"), ("ecs", "DescribeTasks"), ("ecs", "ListTasks"),
    ("rds", "DescribeDBInstances"), ("rds", "DescribeDBClusters"), ("cloudformation", "DescribeStacks"),
    ("cloudformation", "ListStacks"), ("cloudformation", "DescribeStackEvents"),
    ("ssm", "DescribeInstanceInformation"), ("ssm", "GetParameter"), ("kms", "ListKeys"), ("kms", "DescribeKey"),
    ("secretsmanager", "ListSecrets"), ("secretsmanager", "DescribeSecret"), ("route53", "ListHostedZones"),
    ("route53", "ListResourceRecordSets"), ("elasticloadbalancing", "DescribeLoadBalancers"),
    ("elasticloadbalancing", "DescribeTargetHealth"), ("autoscaling", "DescribeAutoScalingGroups"),
    ("ecr", "DescribeRepositories"), ("ecr", "DescribeImages"), ("sns", "ListTopics"), ("sqs", "ListQueues"),
    ("cloudtrail", "DescribeTrails"), ("cloudtrail", "LookupEvents"), ("guardduty", "ListFindings"),
    ("config", "DescribeConfigRules"), ("organizations", "DescribeOrganization"), ("health", "DescribeEvents"),
]  # fmt: skip
DEV_WRITES = [
    ("lambda", "UpdateFunctionCode20150331v2"), ("s3", "PutObject"), ("logs", "CreateLogGroup"),
    ("cloudformation", "UpdateStack"), ("ecs", "UpdateService"), ("lambda", "UpdateFunctionConfiguration20150331v2"),
    ("secretsmanager", "GetSecretValue"), ("sqs", "CreateQueue"), ("ec2", "CreateTags"),
]  # fmt: skip
ADMIN_WRITES = [
    ("iam", "CreateUser"), ("iam", "CreateAccessKey"), ("iam", "AttachUserPolicy"), ("iam", "CreateRole"),
    ("iam", "PutRolePolicy"), ("ec2", "AuthorizeSecurityGroupIngress"), ("ec2", "RunInstances"),
    ("ec2", "TerminateInstances"), ("ec2", "CreateSnapshot"), ("ssm", "StartSession"), ("ssm", "SendCommand"),
    ("iam", "UpdateAssumeRolePolicy"), ("kms", "CreateKey"), ("s3", "PutBucketPolicy"),
    ("ec2", "ModifyInstanceAttribute"), ("iam", "CreateLoginProfile"), ("iam", "DeleteAccessKey"),
    ("iam", "DetachUserPolicy"), ("ec2", "StopInstances"), ("ec2", "StartInstances"),
]  # fmt: skip


@dataclass
class Human:
    """An SSO user: role, time zone, networks, tools and a personal operation mix."""

    name: str
    role: str
    account: str
    tz: int
    home: str
    ops: list[tuple[str, str]]
    weights: list[float]
    writes: list[tuple[str, str]]
    write_rate: float
    calls_per_day: int
    start_day: int = 0
    tools: list[str] = field(default_factory=list)


@dataclass
class Writer:
    """Collects records per account and day and writes CloudTrail delivery files."""

    out: Path
    count: int = 0
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        key = (record["recipientAccountId"], record["eventTime"][:13].replace(":", ""))
        self.buckets.setdefault(key, []).append(record)
        self.count += 1

    def flush(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for (account, day), records in self.buckets.items():
            path = self.out / f"{account}_CloudTrail_{day}.json.gz"
            with gzip.open(path, "wt", compresslevel=1) as handle:
                json.dump({"Records": records}, handle, separators=(",", ":"))
        self.buckets.clear()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(
    moment: datetime,
    service: str,
    operation: str,
    account: str,
    identity: dict[str, Any],
    source_ip: str,
    agent: str,
    *,
    params: dict[str, Any] | None = None,
    error: str | None = None,
    region: str = MAIN_REGION,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": _iso(moment),
        "eventSource": f"{service}.amazonaws.com",
        "eventName": operation,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": agent,
        "requestParameters": params,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": operation.startswith(("Describe", "List", "Get", "Lookup", "Filter")),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
    }
    if error:
        record["errorCode"] = error
        record["errorMessage"] = "User is not authorized to perform this operation"
    return record


def _role_identity(account: str, role: str, session: str) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROA{zlib.crc32(role.encode()):012d}:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": f"ASIA{zlib.crc32((role + session).encode()):016d}",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{account}:role/{role}"}},
    }


def _service_identity(service: str) -> dict[str, Any]:
    return {"type": "AWSService", "invokedBy": service}


def _beats(start: datetime, days: int, period: int, rng: random.Random, jitter: float = 3.0) -> Iterator[datetime]:
    """Periodic moments with jitter and ~1 % missed beats."""
    total = days * 86400 // period
    offset = rng.uniform(0, period)
    for index in range(total):
        if rng.random() < 0.01:
            continue
        yield start + timedelta(seconds=offset + index * period + rng.uniform(-jitter, jitter))


def _sdk_agent(rng: random.Random, day: int) -> str:
    minor = 34 + day // 10
    return f"Boto3/1.{minor}.{rng.randint(0, 9)} md/Botocore#1.{minor}.{rng.randint(0, 9)} ua/2.0 os/linux lang/python"


def _periodic_jobs(writer: Writer, start: datetime, days: int, rng: random.Random) -> None:
    prod, staging, shared = ACCOUNTS["prod"], ACCOUNTS["staging"], ACCOUNTS["shared"]
    jobs: list[tuple[str, str, int, list[tuple[str, str, dict[str, Any] | None]]]] = [
        (prod, "metrics-exporter", 60, [("cloudwatch", "GetMetricData", None)]),
        (staging, "metrics-exporter", 60, [("cloudwatch", "GetMetricData", None)]),
        (prod, "eks-cluster-autoscaler", 60,
         [("autoscaling", "DescribeAutoScalingGroups", None), ("ec2", "DescribeInstances", None)]),
        (prod, "config-sync", 900,
         [("ssm", "GetParameters", {"names": ["/app/db/url", "/app/db/user", "/app/db/password"],
                                    "withDecryption": True}),
          ("secretsmanager", "GetSecretValue", {"secretId": "prod/app/api-key"}),
          ("secretsmanager", "GetSecretValue", {"secretId": "prod/app/db"})]),
        (staging, "config-sync", 900,
         [("ssm", "GetParameters", {"names": ["/app/db/url", "/app/db/password"], "withDecryption": True})]),
        (prod, "ebs-backup", 3600,
         [("ec2", "CreateSnapshot", {"volumeId": "vol-0a1"}), ("ec2", "CreateSnapshot", {"volumeId": "vol-0a2"}),
          ("ec2", "DescribeSnapshots", None), ("ec2", "DeleteSnapshot", {"snapshotId": "snap-old"})]),
        (shared, "inventory-collector", 1800,
         [("ec2", "DescribeInstances", None), ("ec2", "DescribeVolumes", None), ("s3", "ListBuckets", None),
          ("iam", "ListRoles", None), ("rds", "DescribeDBInstances", None)]),
    ]  # fmt: skip
    for account, role, period, calls in jobs:
        session = f"{role}-{rng.randint(1000, 9999)}"
        identity = _role_identity(account, role, session)
        for moment in _beats(start, days, period, rng):
            agent = _sdk_agent(rng, (moment - start).days)
            for position, (service, operation, params) in enumerate(calls):
                writer.add(_record(moment + timedelta(milliseconds=40 * position), service, operation, account,
                                   identity, NAT[account], agent, params=params))  # fmt: skip
    for node in range(10):
        identity = _role_identity(prod, "eks-node-role", f"i-0{node:016x}")
        for moment in _beats(start, days, 6 * 3600, rng, jitter=30):
            writer.add(_record(moment, "ecr", "GetAuthorizationToken", prod, identity, NAT[prod],
                               "aws-sdk-go/1.44.0 (go1.21; linux; amd64)"))  # fmt: skip
    for account in (prod, staging):
        for function in range(8):
            identity = _service_identity("lambda.amazonaws.com")
            for moment in _beats(start, days, 300 + 60 * function, rng, jitter=120):
                params = {"roleArn": f"arn:aws:iam::{account}:role/fn-{function}", "roleSessionName": f"fn-{function}"}
                writer.add(_record(moment, "sts", "AssumeRole", account, identity, "lambda.amazonaws.com",
                                   "lambda.amazonaws.com", params=params))  # fmt: skip
        for moment in _beats(start, days, 120, rng, jitter=60):
            writer.add(_record(moment, "kms", "GenerateDataKey", account, _service_identity("s3.amazonaws.com"),
                               "s3.amazonaws.com", "s3.amazonaws.com"))  # fmt: skip


def _ci(writer: Writer, start: datetime, days: int, rng: random.Random, scale: float) -> None:
    prod, staging = ACCOUNTS["prod"], ACCOUNTS["staging"]
    runner_nets = [f"20.{rng.randint(1, 250)}.{rng.randint(0, 255)}" for _ in range(40)]
    for day in range(days):
        base = start + timedelta(days=day)
        weekend = base.weekday() >= 5
        runs = 0 if weekend else int(rng.randint(5, 15) * scale)
        for run in range(runs):
            account = prod if rng.random() < 0.6 else staging
            moment = base + timedelta(hours=rng.uniform(13, 23))  # runners follow the US/EU working day
            ip = f"{rng.choice(runner_nets)}.{rng.randint(1, 254)}"
            identity = _role_identity(account, "github-actions-deploy", f"GitHubActions-{day}-{run}")
            agent = f"aws-cli/2.{15 + day // 15}.{rng.randint(0, 30)} Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22"
            steps = [("sts", "GetCallerIdentity"), ("ecr", "GetAuthorizationToken"), ("ecr", "DescribeImages"),
                     ("s3", "PutObject"), ("lambda", "UpdateFunctionCode20150331v2"),
                     ("lambda", "GetFunctionConfiguration20150331v2"), ("ecs", "DescribeServices"),
                     ("ecs", "RegisterTaskDefinition"), ("ecs", "UpdateService"),
                     ("ecs", "DescribeServices")]  # fmt: skip
            for position, (service, operation) in enumerate(steps):
                writer.add(_record(moment + timedelta(seconds=7 * position), service, operation, account, identity,
                                   ip, agent))  # fmt: skip
        tf_runs = [2.0] + ([] if weekend else [rng.uniform(14, 22) for _ in range(int(4 * scale))])  # nightly drift
        for run, hour in enumerate(tf_runs):
            account = prod if run % 2 == 0 else staging
            identity = _role_identity(account, "terraform-ci", f"tf-{day}-{run}")
            ip = f"{rng.choice(runner_nets)}.{rng.randint(1, 254)}"
            agent = f"APN/1.0 HashiCorp/1.0 Terraform/1.{7 + day // 20}.0 (+https://www.terraform.io) aws-sdk-go/1.50"
            moment = base + timedelta(hours=hour)
            plan = rng.sample(READ_OPS, rng.randint(30, 60))
            for position, (service, operation) in enumerate(plan):
                writer.add(_record(moment + timedelta(seconds=0.5 * position), service, operation, account,
                                   identity, ip, agent))  # fmt: skip
            if hour != 2.0 and rng.random() < 0.4:
                for position, (service, operation) in enumerate(rng.sample(ADMIN_WRITES[4:9] + DEV_WRITES[:4], 3)):
                    writer.add(_record(moment + timedelta(seconds=60 + 5 * position), service, operation, account,
                                       identity, ip, agent, params=_write_params(operation, account)))  # fmt: skip


def _write_params(operation: str, account: str) -> dict[str, Any] | None:
    """Benign request parameters for write operations (scoped policies, office CIDRs, small instances)."""
    if operation == "AuthorizeSecurityGroupIngress":
        return {"groupId": "sg-0app", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 443,
                "toPort": 443, "ipRanges": {"items": [{"cidrIp": f"{OFFICE_NET}.0/24"}]}}]}}  # fmt: skip
    if operation in {"AttachUserPolicy", "DetachUserPolicy"}:
        return {"userName": "svc-reporting", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}
    if operation == "RunInstances":
        return {"instanceType": "t3.medium", "instancesSet": {"items": [{"imageId": "ami-0base", "maxCount": 1}]}}
    if operation == "ModifyInstanceAttribute":
        return {"instanceId": "i-0app", "instanceType": {"value": "m5.large"}}
    if operation == "PutBucketPolicy":
        return {"bucketName": "corp-logs", "bucketPolicy": {"Statement": [{"Effect": "Allow", "Principal": {
            "Service": "logging.s3.amazonaws.com"}, "Action": "s3:PutObject"}]}}  # fmt: skip
    if operation == "PutRolePolicy":
        return {"roleName": "app-role", "policyName": "app-s3", "policyDocument": '{"Statement":[{"Effect":"Allow",'
                '"Action":"s3:GetObject","Resource":"arn:aws:s3:::corp-app/*"}]}'}  # fmt: skip
    if operation == "UpdateAssumeRolePolicy":
        return {"roleName": "app-role", "policyDocument": '{"Statement":[{"Effect":"Allow","Principal":{"AWS":'
                f'"arn:aws:iam::{account}:root"}},"Action":"sts:AssumeRole"}}]}}'}  # fmt: skip
    if operation == "UpdateFunctionConfiguration20150331v2":
        return {"functionName": "api", "environment": {}, "memorySize": 512}
    return None


def _humans(rng: random.Random, scale: float) -> list[Human]:
    people: list[Human] = []
    tools = ["console.amazonaws.com", "aws-cli", "boto3"]
    for index in range(16):
        admin = index < 4
        name = f"{'admin' if admin else 'dev'}{index:02d}@corp.example"
        ops = rng.sample(READ_OPS, rng.randint(25, 45))
        people.append(
            Human(
                name=name,
                role="AWSReservedSSO_AdministratorAccess_5f2a" if admin else "AWSReservedSSO_Developer_91c3",
                account=ACCOUNTS["prod"] if admin or index % 3 else ACCOUNTS["staging"],
                tz=rng.choice([0, 1, -5, -8, 5]),
                home=f"{rng.randint(70, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}",
                ops=ops,
                weights=[1 / (rank + 1) ** 1.1 for rank in range(len(ops))],
                writes=ADMIN_WRITES if admin else DEV_WRITES,
                write_rate=0.01 if admin else 0.015,
                calls_per_day=int(rng.randint(500, 1400) * scale),
                start_day=24 if index == 15 else 0,
                tools=rng.sample(tools, rng.randint(1, 3)),
            )
        )
    return people


def _agent(tool: str, rng: random.Random, day: int) -> str:
    if tool == "console.amazonaws.com":
        return "console.amazonaws.com"
    if tool == "aws-cli":
        return f"aws-cli/2.{15 + day // 12}.{rng.randint(0, 40)} Python/3.11.8 Darwin/23.4.0 exe/x86_64 prompt/off"
    return _sdk_agent(rng, day)


def _human_days(writer: Writer, start: datetime, days: int, rng: random.Random, scale: float) -> None:
    for person in _humans(rng, scale):
        for day in range(person.start_day, days):
            base = start + timedelta(days=day)
            if base.weekday() >= 5 and rng.random() > 0.05:
                continue
            travel = rng.random() < 0.05
            network = f"{rng.randint(100, 190)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.9" if travel else None
            session = f"{person.name}"
            identity = _role_identity(person.account, person.role, session)
            calls = int(person.calls_per_day * rng.uniform(0.4, 1.3))
            sessions = rng.randint(2, 6)
            for _ in range(sessions):
                local_hour = rng.uniform(8.5, 18) if rng.random() > 0.03 else rng.uniform(19, 23.5)
                moment = base + timedelta(hours=local_hour - person.tz)
                office = f"{OFFICE_NET}.{rng.randint(2, 250)}"
                where = network or (office if rng.random() < 0.6 else person.home + ".17")
                tool = rng.choice(person.tools)
                agent = _agent(tool, rng, day)
                region = MAIN_REGION if rng.random() < 0.9 else "eu-west-1"
                for _ in range(calls // sessions):
                    moment += timedelta(seconds=rng.expovariate(1 / 6))
                    if rng.random() < person.write_rate:
                        service, operation = rng.choice(person.writes)
                        params = _write_params(operation, person.account)
                    else:
                        service, operation = rng.choices(person.ops, person.weights)[0]
                        params = None
                    error = "AccessDenied" if rng.random() < 0.01 else None
                    writer.add(_record(moment, service, operation, person.account, identity, where, agent,
                                       params=params, error=error, region=region))  # fmt: skip


def _analysts(writer: Writer, start: datetime, days: int, rng: random.Random, scale: float) -> None:
    for index in range(3):
        identity = _role_identity(ACCOUNTS["shared"], "AWSReservedSSO_DataAnalyst_77aa", f"analyst{index}@corp.example")
        for day in range(days):
            base = start + timedelta(days=day)
            if base.weekday() >= 5:
                continue
            for _ in range(int(rng.randint(10, 30) * scale)):
                moment = base + timedelta(hours=rng.uniform(8, 17))
                agent = "console.amazonaws.com"
                ip = f"{OFFICE_NET}.{rng.randint(2, 250)}"
                writer.add(_record(moment, "athena", "StartQueryExecution", ACCOUNTS["shared"], identity, ip, agent))
                for poll in range(rng.randint(3, 30)):
                    writer.add(_record(moment + timedelta(seconds=2 * (poll + 1)), "athena", "GetQueryExecution",
                                       ACCOUNTS["shared"], identity, ip, agent))  # fmt: skip
                writer.add(_record(moment + timedelta(seconds=65), "athena", "GetQueryResults", ACCOUNTS["shared"],
                                   identity, ip, agent))  # fmt: skip


def generate_background(out: Path, *, start: datetime, days: int = 30, target_events: int = 1_000_000,
                        seed: int = 20260101) -> int:  # fmt: skip
    """Write the background into ``out``; return the number of records written."""
    rng = random.Random(seed)
    writer = Writer(out)
    _periodic_jobs(writer, start, days, rng)
    fixed = writer.count
    per_scale = 278_000 * days / 30  # human + CI + analyst records at scale 1.0 (measured)
    scale = max(0.05, (target_events - fixed) / per_scale)
    _ci(writer, start, days, rng, scale)
    _human_days(writer, start, days, rng, scale)
    _analysts(writer, start, days, rng, scale)
    count = writer.count
    writer.flush()
    return count


if __name__ == "__main__":
    import sys

    target = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    total = generate_background(Path(sys.argv[1]), start=datetime(2026, 3, 1), target_events=target)
    print(f"{total} background records written to {sys.argv[1]} (~{math.ceil(total / 1000)}k)")
