"""CloudTrail pieces moto lacks, served at the HTTP layer, plus trail files and a planted attack.

moto has no ``LookupEvents`` and no ``ListPublicKeys``. :func:`install` adds both actions to moto's
CloudTrail endpoint, answered from :data:`STORE` with JSON bodies, HTTP status codes and request ids as
AWS sends them, so boto3's parser, paginator, retries and adaptive rate limiter all run for real, in
pytest and in a plain ``with mock_aws():`` block (``cloudir demo``). A ``before-send`` botocore handler
cannot do this: botocore calls every ``before-send`` handler, so moto's own one would still refuse.

:func:`write_trail_files` writes gzipped hourly log files and signed, chained digest files in the
documented layout; :func:`plant_attacker_trail` creates a 14-day benign baseline and an attack.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from moto.cloudtrail.responses import CloudTrailResponse

LOOKUP_RETENTION = timedelta(days=90)
_MAX_RESULTS = 50
_ATTRIBUTE_KEYS = {
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
}
_RESOURCE_PARAMS = {
    "instanceId": "AWS::EC2::Instance",
    "snapshotId": "AWS::EC2::Snapshot",
    "userName": "AWS::IAM::User",
    "roleName": "AWS::IAM::Role",
    "policyArn": "AWS::IAM::Policy",
    "bucketName": "AWS::S3::Bucket",
    "name": "AWS::CloudTrail::Trail",
}


# -- the fake LookupEvents / ListPublicKeys service ---------------------------------------------------------
@dataclass
class CloudTrailStore:
    """Events and public keys the fake serves, and knobs to make it misbehave."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # region -> CloudTrail records
    public_keys: list[dict[str, Any]] = field(default_factory=list)
    throttle_next: int = 0  # answer the next N LookupEvents calls with ThrottlingException
    throttle_calls: set[int] = field(default_factory=set)  # 1-based call numbers to throttle
    fail_calls: dict[int, tuple[str, int]] = field(default_factory=dict)  # call number -> (code, HTTP status)
    calls: int = 0  # LookupEvents requests received (including throttled ones)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every LookupEvents request body
    _signer: rsa.RSAPrivateKey | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Make management-event records visible to LookupEvents in their ``awsRegion``."""
        with self._lock:
            for record in records:
                if record.get("managementEvent", True):
                    self.events.setdefault(record["awsRegion"], []).append(record)

    def reset(self) -> None:
        """Forget every event, key and failure setting."""
        with self._lock:
            self.events.clear()
            self.public_keys.clear()
            self.throttle_next = 0
            self.throttle_calls = set()
            self.fail_calls = {}
            self.calls = 0
            self.requests = []
            self._signer = None

    @property
    def signer(self) -> rsa.RSAPrivateKey:
        """The CloudTrail signing key (one per process, to keep tests quick; published on first use)."""
        if self._signer is None:
            self._signer = _default_signer()
            self.publish_key(self._signer)
        return self._signer

    def publish_key(
        self, key: rsa.RSAPrivateKey, *, valid_from: datetime | None = None, valid_to: datetime | None = None
    ) -> str:
        """Serve ``key``'s public half from ListPublicKeys; returns its fingerprint."""
        der = public_der(key)
        if any(entry["Fingerprint"] == fingerprint(key) for entry in self.public_keys):
            return fingerprint(key)
        now = datetime.now(UTC)
        entry = {
            "Value": base64.b64encode(der).decode(),
            "ValidityStartTime": (valid_from or now - timedelta(days=400)).timestamp(),
            "ValidityEndTime": (valid_to or now + timedelta(days=30)).timestamp(),
            "Fingerprint": fingerprint(key),
        }
        self.public_keys.append(entry)
        return str(entry["Fingerprint"])

    # -- request handling --------------------------------------------------------------------------------
    def lookup_events(self, region: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer one LookupEvents request: (HTTP status, JSON body)."""
        with self._lock:
            self.calls += 1
            call = self.calls
            self.requests.append(dict(body, _region=region))
            events = list(self.events.get(region, []))
            throttled = self.throttle_next > 0 or call in self.throttle_calls
            self.throttle_next = max(0, self.throttle_next - 1)
        if throttled:
            return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        if call in self.fail_calls:
            code, status = self.fail_calls[call]
            return status, {"__type": code, "message": f"injected failure on call {call}"}
        attributes = body.get("LookupAttributes") or []
        if len(attributes) > 1:
            return 400, {
                "__type": "InvalidLookupAttributesException",
                "message": "You cannot specify more than one lookup attribute.",
            }
        max_results = int(body.get("MaxResults") or _MAX_RESULTS)
        if not 1 <= max_results <= _MAX_RESULTS:
            return 400, {"__type": "InvalidMaxResultsException", "message": "MaxResults must be 1-50."}
        start = float(body.get("StartTime", 0))
        end = float(body.get("EndTime", datetime.now(UTC).timestamp()))
        entries = [_lookup_entry(record) for record in events]
        entries = [e for e in entries if start <= e["EventTime"] <= end and _matches(e, attributes)]
        entries.sort(key=lambda e: (e["EventTime"], e["EventId"]), reverse=True)
        query = hashlib.sha256(json.dumps([attributes, start, end], sort_keys=True).encode()).hexdigest()[:16]
        offset = _token_offset(body.get("NextToken"), query)
        if offset is None:
            return 400, {"__type": "InvalidNextTokenException", "message": "Invalid NextToken."}
        page = entries[offset : offset + max_results]
        result: dict[str, Any] = {"Events": page}
        if offset + max_results < len(entries):
            token_body = json.dumps({"offset": offset + max_results, "query": query}).encode()
            result["NextToken"] = base64.b64encode(token_body).decode()
        return 200, result

    def list_public_keys(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer ListPublicKeys: keys whose validity overlaps [StartTime, EndTime]."""
        start = float(body.get("StartTime", 0))
        end = float(body.get("EndTime", datetime.now(UTC).timestamp()))
        keys = [k for k in self.public_keys if k["ValidityStartTime"] <= end and k["ValidityEndTime"] >= start]
        return 200, {"PublicKeyList": keys}


STORE = CloudTrailStore()


@functools.cache
def _default_signer() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def _token_offset(token: str | None, query: str) -> int | None:
    """The offset a NextToken points at, or None when it is malformed or belongs to another query."""
    if not token:
        return 0
    try:
        decoded = json.loads(base64.b64decode(token))
        offset = int(decoded["offset"])
    except (ValueError, KeyError, TypeError):
        return None
    return offset if decoded.get("query") == query else None


def _lookup_entry(record: dict[str, Any]) -> dict[str, Any]:
    identity = record.get("userIdentity", {})
    if identity.get("type") == "AssumedRole":
        username = identity.get("arn", "").rsplit("/", 1)[-1]
    elif identity.get("type") == "Root":
        username = "root"
    else:
        username = identity.get("userName")
    resources = []
    for name, value in (record.get("requestParameters") or {}).items():
        if name in _RESOURCE_PARAMS and isinstance(value, str):
            resources.append({"ResourceType": _RESOURCE_PARAMS[name], "ResourceName": value})
    entry: dict[str, Any] = {
        "EventId": record["eventID"],
        "EventName": record["eventName"],
        "ReadOnly": "true" if record.get("readOnly") else "false",
        "EventTime": parse_time(record["eventTime"]).timestamp(),
        "EventSource": record["eventSource"],
        "Resources": resources,
        "CloudTrailEvent": json.dumps(record, separators=(",", ":")),
    }
    if identity.get("accessKeyId"):
        entry["AccessKeyId"] = identity["accessKeyId"]
    if username:
        entry["Username"] = username
    return entry


def _matches(entry: dict[str, Any], attributes: list[dict[str, str]]) -> bool:
    for attribute in attributes:
        key, value = attribute.get("AttributeKey"), attribute.get("AttributeValue")
        if key not in _ATTRIBUTE_KEYS:
            return False
        if key in {"ResourceType", "ResourceName"}:
            field_name = key
            if not any(r.get(field_name) == value for r in entry["Resources"]):
                return False
        elif entry.get(key) != value:
            return False
    return True


def _respond(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    return status, {"status": status, "Content-Type": "application/x-amz-json-1.1"}, json.dumps(payload)


def _lookup_events(self: CloudTrailResponse) -> tuple[int, dict[str, Any], str]:
    return _respond(*STORE.lookup_events(self.region, json.loads(self.body or "{}")))


def _list_public_keys(self: CloudTrailResponse) -> tuple[int, dict[str, Any], str]:
    return _respond(*STORE.list_public_keys(json.loads(self.body or "{}")))


def install() -> None:
    """Teach moto's CloudTrail endpoint LookupEvents and ListPublicKeys (idempotent).

    The request still travels boto3's whole stack (serializer, signer, retries, adaptive rate limiter,
    moto's HTTP dispatch, response parser), so paginators and throttling behave as against AWS.
    """
    CloudTrailResponse.lookup_events = _lookup_events  # type: ignore[attr-defined]
    CloudTrailResponse.list_public_keys = _list_public_keys  # type: ignore[attr-defined]


install()


@contextmanager
def fake_cloudtrail() -> Iterator[CloudTrailStore]:
    """A clean :data:`STORE` for the duration of the block (use inside ``mock_aws()``)."""
    STORE.reset()
    try:
        yield STORE
    finally:
        STORE.reset()


# -- signing and trail files ----------------------------------------------------------------------------
def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key standing in for CloudTrail's regional signing key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_der(key: rsa.RSAPrivateKey) -> bytes:
    """The public key as DER (the form ListPublicKeys returns)."""
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    """Hex fingerprint of the public key, as named in digest files."""
    return hashlib.md5(public_der(key)).hexdigest()


def parse_time(value: str) -> datetime:
    """CloudTrail ``eventTime`` (``2026-01-01T00:00:00Z``) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_digest(key: rsa.RSAPrivateKey, digest: dict[str, Any], content: bytes) -> str:
    """Hex SHA256withRSA signature over the documented digest signing string."""
    to_sign = "\n".join(
        [
            digest["digestEndTime"],
            f"{digest['digestS3Bucket']}/{digest['digestS3Object']}",
            hashlib.sha256(content).hexdigest(),
            digest["previousDigestSignature"] or "null",
        ]
    ).encode()
    return key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256()).hex()


def write_trail_files(  # noqa: PLR0917 - the signature the scenario builders share
    s3_client: Any,
    bucket: str,
    account_id: str,
    region: str,
    records: list[dict[str, Any]],
    signer_key: rsa.RSAPrivateKey,
    org_id: str | None = None,
    *,
    trail_name: str = "management-events",
    home_region: str | None = None,
    prefix: str = "",
) -> list[str]:
    """Write hourly ``{"Records": [...]}`` log files and a signed digest per hour; return the keys written.

    Digests form one unbroken chain from the first to the last hour holding records.
    """
    if not records:
        return []
    home_region = home_region or region
    base = f"{prefix}AWSLogs/" + (f"{org_id}/" if org_id else "") + account_id
    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["eventTime"]):
        hour = parse_time(record["eventTime"]).replace(minute=0, second=0, microsecond=0)
        by_hour.setdefault(hour, []).append(record)
    written: list[str] = []
    previous: tuple[str, str, bytes] | None = None  # key, signature, content
    hour = min(by_hour)
    last = max(by_hour)
    fpr = fingerprint(signer_key)
    while hour <= last:
        delivered = hour + timedelta(hours=1)
        log_entries = []
        if hour in by_hour:
            stamp = delivered.strftime("%Y%m%dT%H%MZ")
            key = (
                f"{base}/CloudTrail/{region}/{hour:%Y/%m/%d}/"
                f"{account_id}_CloudTrail_{region}_{stamp}_{uuid.uuid4().hex[:16]}.json.gz"
            )
            content = json.dumps({"Records": by_hour[hour]}).encode()
            s3_client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(content, mtime=0))
            written.append(key)
            times = [r["eventTime"] for r in by_hour[hour]]
            log_entries.append(
                {
                    "s3Bucket": bucket,
                    "s3Object": key,
                    "hashValue": hashlib.sha256(content).hexdigest(),
                    "hashAlgorithm": "SHA-256",
                    "newestEventTime": max(times),
                    "oldestEventTime": min(times),
                }
            )
        digest_key = (
            f"{base}/CloudTrail-Digest/{region}/{delivered:%Y/%m/%d}/{account_id}_CloudTrail-Digest_"
            f"{region}_{trail_name}_{home_region}_{delivered:%Y%m%dT%H%M%SZ}.json.gz"
        )
        digest: dict[str, Any] = {
            "awsAccountId": account_id,
            "digestStartTime": _iso(hour),
            "digestEndTime": _iso(delivered),
            "digestS3Bucket": bucket,
            "digestS3Object": digest_key,
            "digestPublicKeyFingerprint": fpr,
            "digestSignatureAlgorithm": "SHA256withRSA",
            "newestEventTime": max((e["newestEventTime"] for e in log_entries), default=None),
            "oldestEventTime": min((e["oldestEventTime"] for e in log_entries), default=None),
            "previousDigestS3Bucket": bucket if previous else None,
            "previousDigestS3Object": previous[0] if previous else None,
            "previousDigestHashValue": hashlib.sha256(previous[2]).hexdigest() if previous else None,
            "previousDigestHashAlgorithm": "SHA-256" if previous else None,
            "previousDigestSignature": previous[1] if previous else None,
            "logFiles": log_entries,
        }
        content = json.dumps(digest).encode()
        signature = sign_digest(signer_key, digest, content)
        s3_client.put_object(
            Bucket=bucket,
            Key=digest_key,
            Body=gzip.compress(content, mtime=0),
            Metadata={"signature": signature, "signature-algorithm": "SHA256withRSA"},
        )
        written.append(digest_key)
        previous = (digest_key, signature, content)
        hour = delivered
    return written


# -- scenario records -------------------------------------------------------------------------------------
_CONSOLE_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
_ATTACKER_UA = "aws-cli/2.15.30 Python/3.11.8 Linux/6.6.9-amd64 exe/x86_64.kali.2024 prompt/off command/iam.list-users"
_INSTANCE_UA = "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/ssm#1.52.3"
_CI_UA = "aws-cli/2.17.20 Python/3.11.9 Linux/6.5.0-1025-azure exe/x86_64.ubuntu.22 md/command#cloudformation.deploy"
_GLOBAL_SERVICES = {"iam.amazonaws.com", "signin.amazonaws.com", "organizations.amazonaws.com"}


@dataclass
class _Actor:
    identity: dict[str, Any]
    ip: str
    user_agent: str


class _RecordFactory:
    def __init__(self, account_id: str, region: str, seed: int) -> None:
        self.account_id = account_id
        self.region = region
        self.rng = random.Random(seed)

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def record(
        self,
        actor: _Actor,
        when: datetime,
        service: str,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        response: dict[str, Any] | None = None,
        read_only: bool = True,
        error: str | None = None,
        data_event: bool = False,
        event_type: str = "AwsApiCall",
    ) -> dict[str, Any]:
        source = f"{service}.amazonaws.com"
        record: dict[str, Any] = {
            "eventVersion": "1.09",
            "userIdentity": actor.identity,
            "eventTime": _iso(when),
            "eventSource": source,
            "eventName": name,
            "awsRegion": "us-east-1" if source in _GLOBAL_SERVICES else self.region,
            "sourceIPAddress": actor.ip,
            "userAgent": actor.user_agent,
            "requestParameters": params,
            "responseElements": None if error else response,
            "requestID": self.uid(),
            "eventID": self.uid(),
            "readOnly": read_only,
            "eventType": event_type,
            "managementEvent": not data_event,
            "recipientAccountId": self.account_id,
            "eventCategory": "Data" if data_event else "Management",
            "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"},
        }
        if error:
            record["errorCode"] = error
            record["errorMessage"] = (
                f"User: {actor.identity['arn']} is not authorized to perform: {service}:{name} "
                "because no identity-based policy allows the action"
            )
        return record


def _assumed_role(account_id: str, role_arn: str, session: str, key: str, factory: _RecordFactory) -> dict[str, Any]:
    role_name = role_arn.rsplit("/", 1)[-1]
    role_id = "AROA" + "".join(factory.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(17))
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{account_id}:assumed-role/{role_name}/{session}",
        "accountId": account_id,
        "accessKeyId": key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": role_arn,
                "accountId": account_id,
                "userName": role_name,
            },
            "attributes": {"creationDate": "2026-01-01T00:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def _baseline(
    factory: _RecordFactory, instance: _Actor, instance_id: str, start: datetime, days: int
) -> list[dict[str, Any]]:
    account = factory.account_id
    ci = _Actor(
        _assumed_role(account, f"arn:aws:iam::{account}:role/ci-deploy", "gha-deploy", "ASIACIDEPLOY0EXAMPLE", factory),
        "140.82.112.5",
        _CI_UA,
    )
    admin = _Actor(
        {
            "type": "IAMUser",
            "principalId": "AIDAADMINALICE0EXAMPLE",
            "arn": f"arn:aws:iam::{account}:user/alice.admin",
            "accountId": account,
            "accessKeyId": "ASIAALICECONSOLE0EX1",
            "userName": "alice.admin",
            "sessionContext": {"attributes": {"creationDate": "2026-01-01T08:00:00Z", "mfaAuthenticated": "true"}},
        },
        "198.51.100.23",
        _CONSOLE_UA,
    )
    records: list[dict[str, Any]] = []
    first = (start - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    hour = first
    while hour < start - timedelta(minutes=30):
        jitter = timedelta(minutes=factory.rng.randint(1, 50), seconds=factory.rng.randint(0, 59))
        records.append(
            factory.record(
                instance,
                hour + jitter,
                "ssm",
                "UpdateInstanceInformation",
                params={"instanceId": instance_id, "agentVersion": "3.3.987.0"},
                read_only=False,
            )
        )
        if hour.hour % 6 == 0:
            records.append(
                factory.record(
                    instance,
                    hour + jitter + timedelta(seconds=3),
                    "ec2",
                    "DescribeTags",
                    params={"filterSet": {"items": [{"name": "resource-id", "valueSet": [instance_id]}]}},
                )
            )
        weekday = hour.weekday() < 5
        if weekday and hour.hour in {10, 15}:
            stack = f"arn:aws:cloudformation:{factory.region}:{account}:stack/web-app/1"
            for offset, name, read_only in (
                (0, "DescribeStacks", True),
                (20, "CreateChangeSet", False),
                (45, "ExecuteChangeSet", False),
                (200, "DescribeStackEvents", True),
            ):
                records.append(
                    factory.record(
                        ci,
                        hour + timedelta(minutes=5, seconds=offset),
                        "cloudformation",
                        name,
                        params={"stackName": stack},
                        read_only=read_only,
                    )
                )
        if weekday and hour.hour == 9:
            login = hour + timedelta(minutes=factory.rng.randint(0, 40))
            records.append(
                factory.record(
                    admin,
                    login,
                    "signin",
                    "ConsoleLogin",
                    response={"ConsoleLogin": "Success"},
                    read_only=False,
                    event_type="AwsConsoleSignIn",
                )
            )
            for step, (service, name) in enumerate(
                [
                    ("ec2", "DescribeInstances"),
                    ("iam", "ListUsers"),
                    ("ec2", "DescribeSecurityGroups"),
                    ("cloudwatch", "DescribeAlarms"),
                    ("ec2", "DescribeInstances"),
                ]
            ):
                when = login + timedelta(minutes=20 + step * factory.rng.randint(30, 70))
                records.append(factory.record(admin, when, service, name))
        hour += timedelta(hours=1)
    return records


def _attack(factory: _RecordFactory, attacker: _Actor, start: datetime, trail_name: str) -> list[dict[str, Any]]:
    account = factory.account_id
    records: list[dict[str, Any]] = []

    def at(minutes: float, service: str, name: str, **kwargs: Any) -> None:
        records.append(factory.record(attacker, start + timedelta(minutes=minutes), service, name, **kwargs))

    at(0, "sts", "GetCallerIdentity")
    recon = [
        ("iam", "ListUsers", None),
        ("iam", "ListRoles", None),
        ("iam", "ListAttachedRolePolicies", "AccessDenied"),
        ("s3", "ListBuckets", None),
        ("ec2", "DescribeInstances", None),
        ("ec2", "DescribeSnapshots", None),
        ("iam", "GetAccountAuthorizationDetails", "AccessDenied"),
        ("secretsmanager", "ListSecrets", "AccessDenied"),
        ("kms", "ListKeys", None),
        ("cloudtrail", "DescribeTrails", None),
        ("lambda", "ListFunctions20150331", None),
        ("rds", "DescribeDBInstances", "AccessDenied"),
        ("organizations", "DescribeOrganization", "AccessDenied"),
        ("ec2", "DescribeSecurityGroups", None),
    ]
    for index, (service, name, error) in enumerate(recon):
        at(2 + index * 0.4, service, name, error=error)
    backdoor = "svc-backup"
    at(15, "iam", "CreateUser", params={"userName": backdoor}, read_only=False)
    at(
        16,
        "iam",
        "CreateAccessKey",
        params={"userName": backdoor},
        response={"accessKey": {"accessKeyId": "AKIABACKDOOR0EXAMPLE", "userName": backdoor, "status": "Active"}},
        read_only=False,
    )
    at(
        17,
        "iam",
        "AttachUserPolicy",
        params={"userName": backdoor, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        read_only=False,
    )
    for index in range(12):
        at(
            22 + index * 0.5,
            "s3",
            "GetObject",
            params={"bucketName": f"{account}-customer-data", "key": f"exports/customers-2026-{index + 1:02d}.csv.gz"},
            data_event=True,
        )
    at(
        30,
        "ec2",
        "ModifySnapshotAttribute",
        params={
            "snapshotId": "snap-0a1b2c3d4e5f60718",
            "attributeType": "CREATE_VOLUME_PERMISSION",
            "createVolumePermission": {"add": {"items": [{"userId": "999988887777"}]}},
        },
        read_only=False,
    )
    at(
        34,
        "cloudtrail",
        "StopLogging",
        params={"name": f"arn:aws:cloudtrail:{factory.region}:{account}:trail/{trail_name}"},
        read_only=False,
    )
    return records


def plant_attacker_trail(
    *,
    account_id: str,
    region: str,
    instance_id: str,
    role_arn: str,
    attacker_ip: str,
    start: datetime,
    bucket: str | None = None,
    baseline_days: int = 14,
    trail_file_days: int = 2,
    org_id: str | None = None,
    trail_name: str = "management-events",
    seed: int = 7,
) -> list[dict[str, Any]]:
    """Create a benign baseline before ``start`` and the attack from ``attacker_ip`` at ``start``.

    Management events go into :data:`STORE` (LookupEvents). With ``bucket``, a multi-region trail with
    log file validation and S3 data events is created, the records of the last ``trail_file_days`` before
    ``start`` and the attack (data events included) are written as signed trail files (fewer S3 writes
    keep the sandbox quick), and the trail is stopped, as the attacker's final ``StopLogging`` did.
    Returns every record, oldest first.
    """
    start = start.astimezone(UTC)
    factory = _RecordFactory(account_id, region, seed)
    role_session = _assumed_role(account_id, role_arn, instance_id, "ASIAINSTANCEROLE0EX1", factory)
    role_session["sessionContext"]["ec2RoleDelivery"] = "2.0"
    instance = _Actor(role_session, "3.91.22.14", _INSTANCE_UA)
    attacker = _Actor(role_session, attacker_ip, _ATTACKER_UA)
    records = _baseline(factory, instance, instance_id, start, baseline_days)
    records += _attack(factory, attacker, start, trail_name)
    records.sort(key=lambda r: r["eventTime"])
    STORE.add(records)
    if bucket is not None:
        since = _iso(start - timedelta(days=trail_file_days))
        recent = [r for r in records if r["eventTime"] >= since]
        _write_trail(recent, account_id=account_id, region=region, bucket=bucket, org_id=org_id, trail_name=trail_name)
    return records


def _write_trail(
    records: list[dict[str, Any]], *, account_id: str, region: str, bucket: str, org_id: str | None, trail_name: str
) -> None:
    s3 = boto3.client("s3", region_name=region)
    cloudtrail = boto3.client("cloudtrail", region_name=region)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
    cloudtrail.create_trail(
        Name=trail_name,
        S3BucketName=bucket,
        IsMultiRegionTrail=True,
        EnableLogFileValidation=True,
        IncludeGlobalServiceEvents=True,
    )
    cloudtrail.put_event_selectors(
        TrailName=trail_name,
        EventSelectors=[
            {
                "ReadWriteType": "All",
                "IncludeManagementEvents": True,
                "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}],
            }
        ],
    )
    cloudtrail.start_logging(Name=trail_name)
    by_region: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_region.setdefault(record["awsRegion"], []).append(record)
    for record_region, region_records in sorted(by_region.items()):
        write_trail_files(
            s3,
            bucket,
            account_id,
            record_region,
            region_records,
            STORE.signer,
            org_id,
            trail_name=trail_name,
            home_region=region,
        )
    cloudtrail.stop_logging(Name=trail_name)


def activity_records(
    *, account_id: str, region: str, start: datetime, hours: int, per_hour: int = 2, user: str = "alice", seed: int = 1
) -> list[dict[str, Any]]:
    """Plain management events by IAM user ``user``, ``per_hour`` each hour for ``hours`` from ``start``."""
    factory = _RecordFactory(account_id, region, seed)
    actor = _Actor(
        {
            "type": "IAMUser",
            "principalId": f"AIDA{user.upper()[:12]:0<12}EXAMPLE",
            "arn": f"arn:aws:iam::{account_id}:user/{user}",
            "accountId": account_id,
            "accessKeyId": f"AKIA{user.upper()[:12]:0<12}EXAM",
            "userName": user,
        },
        "198.51.100.7",
        _CI_UA,
    )
    names = ["DescribeInstances", "DescribeVolumes", "DescribeSnapshots", "DescribeSecurityGroups"]
    return [
        factory.record(
            actor,
            start.astimezone(UTC) + timedelta(hours=hour, minutes=(index + 1) * 50 // (per_hour + 1)),
            "ec2",
            names[(hour + index) % len(names)],
        )
        for hour in range(hours)
        for index in range(per_hour)
    ]


RESPONDER_IP = "198.51.100.10"
_READ_PREFIXES = ("Describe", "Get", "List", "Lookup", "Head")


def record_responder_calls(session: boto3.Session, account_id: str) -> None:
    """Log every call made with cloudir's user agent through ``session`` into :data:`STORE`, as CloudTrail would.

    The records carry the call's real request id and user agent, so the timeline can tell the
    responder's own activity from the attacker's, exactly as it must on a real account.
    """
    identity = {
        "type": "IAMUser",
        "principalId": "AIDASANDBOXRESPONDER",
        "arn": f"arn:aws:iam::{account_id}:user/incident-responder",
        "accountId": account_id,
        "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "userName": "incident-responder",
    }

    def remember_call(params: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
        context["cloudir_user_agent"] = params.get("headers", {}).get("User-Agent", "")
        request_signer = kwargs.get("request_signer")
        if request_signer is not None:
            context["client_region"] = request_signer.region_name

    def log_call(model: Any, parsed: dict[str, Any], context: dict[str, Any], event_name: str, **_: Any) -> None:
        agent = context.get("cloudir_user_agent", "")
        if "cloudir/" not in agent:
            return
        service = model.service_model.endpoint_prefix
        source = f"{service}.amazonaws.com"
        region = context.get("client_region") or session.region_name or "us-east-1"
        error = parsed.get("Error", {}).get("Code")
        record: dict[str, Any] = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": _iso(datetime.now(UTC)),
            "eventSource": source,
            "eventName": model.name,
            "awsRegion": "us-east-1" if source in _GLOBAL_SERVICES else region,
            "sourceIPAddress": RESPONDER_IP,
            "userAgent": agent,
            "requestParameters": None,
            "responseElements": None,
            "requestID": parsed.get("ResponseMetadata", {}).get("RequestId") or str(uuid.uuid4()),
            "eventID": str(uuid.uuid4()),
            "readOnly": model.name.startswith(_READ_PREFIXES),
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": account_id,
            "eventCategory": "Management",
        }
        if error:
            record["errorCode"] = error
        STORE.add([record])

    session.events.register("before-call.*.*", remember_call)
    session.events.register("after-call.*.*", log_call)
