"""CloudTrail collection: LookupEvents pages, trail files from S3, digest validation and coverage.

Every response is stored in the case before it is parsed. LookupEvents pages are kept as the exact
response bodies (``logs/aws/lookup-events/<region>/<scope>/page-00001.json``); each page's ``NextToken``
is the cursor a resumed run continues from, so finished pages are never fetched twice. Trail files and
digests are copied byte for byte (``logs/aws/s3/<bucket>/<key>``), the digests' signatures (S3 object
metadata) alongside (``logs/aws/s3-meta/...``), so the digest validation can be repeated offline.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from botocore.exceptions import BotoCoreError, ClientError
from botocore.paginate import TokenEncoder

from cloudir.case import ActionPool, Case
from cloudir.coverage import CoverageReport, SourceCoverage, iso_utc, parse_utc
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.plan import Plan, PlannedCall, Step, StepContext, StepKind
from cloudir.provider import LogPullRequest
from cloudir.safepath import PathClaims, path_part
from providers.aws.digest import StoredDigest, public_keys_from_pages, uncompressed_sha256, validate
from providers.aws.principals import parse_principal_arn
from providers.aws.session import AwsClients, aws_errors, describe_error

LOG_ROOT = "logs/aws"
LOOKUP_DIR = f"{LOG_ROOT}/lookup-events"
S3_DIR = f"{LOG_ROOT}/s3"
S3_META_DIR = f"{LOG_ROOT}/s3-meta"
LISTING_FILE = f"{LOG_ROOT}/s3-listing.json"
TRAILS_FILE = f"{LOG_ROOT}/trails.json"
VALIDATION_FILE = f"{LOG_ROOT}/digest-validation.json"
COVERAGE_FILE = f"{LOG_ROOT}/coverage.json"
LOOKUP_RETENTION_DAYS = 90
MAX_REFUSED_IN_RECORD = 100  # refused objects named in the custody record (all of them are in the listing)
GLOBAL_REGION = "us-east-1"  # IAM, STS global endpoint and console sign-in events are recorded here
DEFAULT_LOOKUP_RATE = 2.0  # LookupEvents allows about 2 requests per second per account and region
_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "OperationNotPermittedException"}
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
_LOG_TIME = re.compile(r"_(\d{8}T\d{4})Z_[^/]*\.json\.gz$")
_DIGEST_TIME = re.compile(r"_(\d{8}T\d{6})Z\.json\.gz$")
_CHUNK = 1024 * 1024

# Every call a log pull may make, with the IAM actions it needs.
LOG_CALLS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sts", "GetCallerIdentity"): ("sts:GetCallerIdentity",),
    ("ec2", "DescribeRegions"): ("ec2:DescribeRegions",),
    ("cloudtrail", "DescribeTrails"): ("cloudtrail:DescribeTrails",),
    ("cloudtrail", "GetTrailStatus"): ("cloudtrail:GetTrailStatus",),
    ("cloudtrail", "GetEventSelectors"): ("cloudtrail:GetEventSelectors",),
    ("cloudtrail", "LookupEvents"): ("cloudtrail:LookupEvents",),
    ("cloudtrail", "ListPublicKeys"): ("cloudtrail:ListPublicKeys",),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "GetObject"): ("s3:GetObject",),
}


def required_permissions() -> list[str]:
    """IAM actions a log pull may use."""
    return sorted({action for actions in LOG_CALLS.values() for action in actions})


def _call(service: str, operation: str, region: str | None = None, **params: Any) -> PlannedCall:
    if (service, operation) not in LOG_CALLS:
        raise KeyError(f"{service}:{operation} is not in providers.aws.logs.LOG_CALLS")
    return PlannedCall(service, operation, region, params)


class TokenBucket:
    """Client-side rate limit: at most ``rate`` acquisitions per second, no bursts."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, **_: Any) -> None:
        """Wait for the next slot (usable as a botocore event handler)."""
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            time.sleep(wait)


class RawResponses:
    """Captures HTTP response bodies of one operation before botocore parses them."""

    def __init__(self) -> None:
        self.bodies: list[tuple[int, bytes]] = []
        self.throttled = 0

    def __call__(self, response_dict: dict[str, Any], **_: Any) -> None:
        status = int(response_dict.get("status_code", 0))
        if status == 200:
            self.bodies.append((status, bytes(response_dict["body"])))
        elif b"Throttl" in bytes(response_dict.get("body") or b""):
            self.throttled += 1

    def last_ok(self) -> bytes:
        """The body of the newest successful response (and forget older ones)."""
        if not self.bodies:
            raise CloudirError("no successful response body was captured")
        body = self.bodies[-1][1]
        self.bodies.clear()
        return body


@contextmanager
def capturing(client: Any, operation: str, limiter: TokenBucket | None = None) -> Iterator[RawResponses]:
    """Capture raw bodies of ``operation`` on ``client`` (and rate-limit it) inside the block."""
    service = client.meta.service_model.service_id.hyphenize()
    raw = RawResponses()
    tag = f"cloudir-raw-{id(raw)}"
    parse_event = f"before-parse.{service}.{operation}"
    call_event = f"before-call.{service}.{operation}"
    client.meta.events.register(parse_event, raw, unique_id=tag)
    if limiter is not None:
        client.meta.events.register(call_event, limiter.acquire, unique_id=tag)
    try:
        yield raw
    finally:
        client.meta.events.unregister(parse_event, unique_id=tag)
        if limiter is not None:
            client.meta.events.unregister(call_event, unique_id=tag)


@dataclass(frozen=True)
class Series:
    """One LookupEvents call series: a region and at most one lookup attribute."""

    region: str
    key: str | None = None
    value: str | None = None

    @property
    def name(self) -> str:
        """Scope label, e.g. ``Username=alice`` or ``all``."""
        return f"{self.key}={self.value}" if self.key else "all"

    @property
    def folder(self) -> str:
        """Where its pages are stored in the case."""
        return f"{LOOKUP_DIR}/{path_part(self.region)}/{path_part(self.name)}"

    def attributes(self) -> list[dict[str, str]]:
        """LookupAttributes for the call."""
        return [{"AttributeKey": self.key, "AttributeValue": self.value or ""}] if self.key else []


def _principal_scope(principal: str) -> tuple[str | None, str | None]:
    """The lookup attribute for one principal: a user's name, a role session's name; a role needs every event.

    CloudTrail's ``Username`` is the session name for assumed-role sessions, so a role (whose sessions can be
    named anything) cannot be looked up by its name: its events are filtered from the whole account's.
    """
    parsed = parse_principal_arn(principal)
    if parsed is None:
        return ("Username", principal)
    found = parsed[1]
    if found.type == "user":
        return ("Username", found.name)
    return ("Username", found.session) if found.session else (None, None)


def lookup_scopes(request: LogPullRequest) -> list[tuple[str | None, str | None]]:
    """The lookup attributes a request asks for (LookupEvents takes one per call); none means everything."""
    scopes: list[tuple[str | None, str | None]] = []
    scopes += [_principal_scope(name) for name in request.principals]
    scopes += [("AccessKeyId", key) for key in request.access_keys]
    for resource in request.resources:
        scopes.append(("ResourceName", resource))
        if resource.startswith("i-"):
            scopes.append(("Username", resource))  # instance-role sessions are named after the instance
    if (None, None) in scopes:  # a role's sessions: only the whole account's events hold them all
        return [(None, None)]
    return list(dict.fromkeys(scopes)) or [(None, None)]


def _iso(value: Any) -> Any:
    return iso_utc(value) if isinstance(value, datetime) else value


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _data_events(selectors: dict[str, Any]) -> bool:
    if any(s.get("DataResources") for s in selectors.get("EventSelectors") or []):
        return True
    for advanced in selectors.get("AdvancedEventSelectors") or []:
        for selector in advanced.get("FieldSelectors", []):
            if selector.get("Field") == "eventCategory" and "Data" in selector.get("Equals", []):
                return True
    return False


@dataclass
class _Listed:
    bucket: str
    key: str
    size: int
    kind: str  # log | digest
    region: str
    in_window: bool


@dataclass
class LogPull:
    """The steps of one CloudTrail pull; holds what the steps of one run share."""

    clients: AwsClients
    request: LogPullRequest
    start: datetime = field(init=False)
    end: datetime = field(init=False)
    series_status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = parse_utc(self.request.start)
        self.end = parse_utc(self.request.end)
        if self.start >= self.end:
            raise CloudirError(f"the window start {self.request.start} is not before its end {self.request.end}")
        extra = self.request.extra
        self.rate = float(extra.get("lookup_rate", DEFAULT_LOOKUP_RATE))
        self.page_size = int(extra.get("page_size", 50))
        self.workers = int(extra.get("download_workers", 8))
        self.all_regions = bool(extra.get("all_regions", False))

    # -- plan ----------------------------------------------------------------------------------------------
    def planned_regions(self) -> list[str]:
        """Regions known before discovery (all-regions are found at run time)."""
        regions = self.request.locations or [self.clients.default_region]
        return list(dict.fromkeys([*regions, GLOBAL_REGION]))

    def plan(self) -> Plan:
        """The pull as READ steps."""
        regions = ["<every enabled region>"] if self.all_regions else self.planned_regions()
        window = {"StartTime": iso_utc(self.start), "EndTime": iso_utc(self.end)}
        lookup_calls = [
            _call(
                "cloudtrail",
                "LookupEvents",
                region,
                **({"LookupAttributes": f"{key}={value}"} if key else {}),
                **window,
            )
            for region in regions
            for key, value in lookup_scopes(self.request)
        ]
        bucket = self.request.extra.get("trail_bucket") or "<trail buckets from DescribeTrails>"
        discover = [_call("sts", "GetCallerIdentity")]
        if self.all_regions:
            discover.append(_call("ec2", "DescribeRegions"))
        discover += [_call("cloudtrail", "DescribeTrails", region, includeShadowTrails=True) for region in regions]
        discover += [_call("cloudtrail", "GetTrailStatus"), _call("cloudtrail", "GetEventSelectors")]
        steps = [
            Step(
                "discover",
                "Discover trails, logging status and data events per region",
                StepKind.READ,
                discover,
                self._discover,
            ),
            Step(
                "lookup-events",
                "LookupEvents pages (raw, resumable from the stored cursor)",
                StepKind.READ,
                lookup_calls,
                self._lookup,
            ),
            Step(
                "s3-list",
                "List trail log and digest files by day prefix",
                StepKind.READ,
                [
                    _call(
                        "s3",
                        "ListObjectsV2",
                        None,
                        Bucket=bucket,
                        Prefix="AWSLogs/[<org>/]<account>/CloudTrail*/<region>/<day>/",
                    )
                ],
                self._list_s3,
            ),
            Step(
                "s3-download",
                f"Download trail files in parallel ({self.workers} threads), SHA-256 while streaming",
                StepKind.READ,
                [_call("s3", "GetObject", None, Bucket=bucket)],
                self._download,
            ),
            Step(
                "digest-validation",
                "Validate digest signatures, log file hashes and the digest chain",
                StepKind.READ,
                [
                    _call("cloudtrail", "ListPublicKeys", None, **window),
                    _call("s3", "GetObject", None, Key="<previous digest>"),
                ],
                self._validate,
            ),
            Step("coverage", "Write the coverage report", StepKind.READ, [], self._coverage),
        ]
        scope = ",".join(f"{k}={v}" for k, v in lookup_scopes(self.request) if k) or "all"
        where = "all-regions" if self.all_regions else ",".join(regions)
        target = f"cloudtrail:{where}:{iso_utc(self.start)}/{iso_utc(self.end)}:{scope}"
        notes = [
            (
                "LookupEvents returns management events of the last 90 days only; data events (S3 object reads) "
                "come from trail files"
            ),
            f"{GLOBAL_REGION} is always included: IAM, global STS and console sign-in events are recorded there",
            f"LookupEvents is rate-limited client-side to {self.rate:g} requests/s with adaptive retries",
        ]
        return Plan("logs", "aws", target, steps, notes)

    # -- discover ------------------------------------------------------------------------------------------
    def _discover(self, ctx: StepContext) -> dict[str, Any]:
        with aws_errors("identify the AWS caller (sts:GetCallerIdentity)"):
            caller = self.clients.client("sts").get_caller_identity()
        regions = self.planned_regions()
        if self.all_regions:
            with aws_errors("list enabled regions (ec2:DescribeRegions)"):
                found = self.clients.client("ec2").describe_regions()["Regions"]
            regions = sorted({r["RegionName"] for r in found} | {GLOBAL_REGION})
        trails: dict[str, dict[str, Any]] = {}
        region_trails: dict[str, dict[str, Any]] = {}
        for region in regions:
            try:
                listed = self.clients.client("cloudtrail", region).describe_trails(includeShadowTrails=True)
            except (ClientError, BotoCoreError) as exc:
                region_trails[region] = {"trails": [], "error": str(describe_error(exc, "cloudtrail:DescribeTrails"))}
                continue
            region_trails[region] = {"trails": [t["TrailARN"] for t in listed["trailList"]]}
            for trail in listed["trailList"]:
                trails.setdefault(trail["TrailARN"], dict(trail))
        for arn, trail in trails.items():
            home = trail.get("HomeRegion") or arn.split(":")[3]
            client = self.clients.client("cloudtrail", home)
            try:
                trail["Status"] = {k: _iso(v) for k, v in _strip(client.get_trail_status(Name=arn)).items()}
                trail["Selectors"] = _strip(client.get_event_selectors(TrailName=trail["Name"]))
            except (ClientError, BotoCoreError) as exc:
                trail["Error"] = str(describe_error(exc, f"read the status of trail {trail['Name']}"))
        ctx.case.write_json(TRAILS_FILE, {"caller": _strip(caller), "regions": region_trails, "trails": trails})
        summaries = [
            {
                "arn": arn,
                "name": t["Name"],
                "home_region": t.get("HomeRegion") or arn.split(":")[3],
                "bucket": t.get("S3BucketName"),
                "prefix": t.get("S3KeyPrefix") or "",
                "multi_region": bool(t.get("IsMultiRegionTrail")),
                "organization": bool(t.get("IsOrganizationTrail")),
                "validation": bool(t.get("LogFileValidationEnabled")),
                "logging": t.get("Status", {}).get("IsLogging"),
                "stop_logging_time": t.get("Status", {}).get("StopLoggingTime"),
                "data_events": _data_events(t.get("Selectors", {})),
                "error": t.get("Error"),
            }
            for arn, t in trails.items()
        ]
        return {"account": caller["Account"], "regions": regions, "trails": summaries, "region_trails": region_trails}

    # -- LookupEvents --------------------------------------------------------------------------------------
    def _lookup(self, ctx: StepContext) -> dict[str, Any]:
        regions = ctx.results.get("discover", {}).get("regions") or self.planned_regions()
        limiter = TokenBucket(self.rate)
        failures: list[str] = []
        for region in regions:
            for key, value in lookup_scopes(self.request):
                series = Series(region, key, value)
                status = self._pull_series(ctx.case, series, limiter)
                self.series_status[f"{region}/{series.name}"] = status
                if status["stopped"] and status["stopped"] != "access_denied":
                    failures.append(f"{region} {series.name}: {status['error']}")
        if failures:
            raise CloudAccessError(
                f"LookupEvents stopped early in {len(failures)} series, first: {failures[0]}",
                hint="finished pages are kept; re-run with --resume to continue from the stored cursor",
            )
        return {"series": self.series_status}

    def _pull_series(self, case: Case, series: Series, limiter: TokenBucket) -> dict[str, Any]:
        folder = case.root / series.folder
        params: dict[str, Any] = {"StartTime": self.start, "EndTime": self.end}
        if series.key:
            params["LookupAttributes"] = series.attributes()
        request_record = {"region": series.region, **{k: _iso(v) for k, v in params.items()}}
        case.claim_folder(
            series.folder,
            request_record,
            f"{series.folder} holds a pull with a different window or scope",
            "use a new --case folder for a different window",
        )
        pages = sorted(folder.glob("page-*.json"))
        status: dict[str, Any] = {
            "region": series.region,
            "scope": series.name,
            "pages": len(pages),
            "resumed_pages": len(pages),
            "stopped": None,
            "error": None,
            "throttled_responses": 0,
        }
        token = json.loads(pages[-1].read_bytes()).get("NextToken") if pages else None
        if pages and token is None:
            status["complete"] = True
            return status
        config: dict[str, Any] = {"PageSize": self.page_size}
        if token:
            config["StartingToken"] = TokenEncoder().encode({"NextToken": token})
        client = self.clients.client("cloudtrail", series.region)
        number = len(pages)
        with capturing(client, "LookupEvents", limiter) as raw:
            try:
                for page in client.get_paginator("lookup_events").paginate(**params, PaginationConfig=config):
                    number += 1
                    case.write_bytes(f"{series.folder}/page-{number:05d}.json", raw.last_ok())
                    token = page.get("NextToken")
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code"))
                status["stopped"] = (
                    "access_denied" if code in _ACCESS_DENIED else "throttled" if code in _THROTTLED else "error"
                )
                status["error"] = str(describe_error(exc, f"LookupEvents in {series.region} ({series.name})"))
            except BotoCoreError as exc:
                status["stopped"], status["error"] = "error", str(describe_error(exc, "LookupEvents"))
            status["throttled_responses"] = raw.throttled
        status["pages"] = number
        status["complete"] = status["stopped"] is None
        status["next_token"] = token if status["stopped"] else None
        return status

    # -- S3 trail files ------------------------------------------------------------------------------------
    def _buckets(self, discovered: dict[str, Any]) -> list[tuple[str, str]]:
        if self.request.extra.get("trail_bucket"):
            return [(str(self.request.extra["trail_bucket"]), str(self.request.extra.get("trail_prefix") or ""))]
        pairs = {(t["bucket"], t["prefix"]) for t in discovered.get("trails", []) if t.get("bucket")}
        return sorted(pairs)

    def _days(self) -> list[datetime]:
        day = (self.start - timedelta(hours=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        days = []
        while day <= self.end + timedelta(hours=2):
            days.append(day)
            day += timedelta(days=1)
        return days

    def _roots(self, s3: Any, bucket: str, prefix: str, accounts: set[str]) -> list[str]:
        """``AWSLogs/<account>/`` and organisation ``AWSLogs/<org-id>/<account>/`` folders for ``accounts``."""
        base = f"{prefix.rstrip('/') + '/' if prefix else ''}AWSLogs/"
        roots: list[str] = []
        for top in _folders(s3, bucket, base):
            name = top[len(base) :].strip("/")
            if name in accounts:
                roots.append(top)
            elif name.startswith("o-"):
                roots += [sub for sub in _folders(s3, bucket, top) if sub[len(top) :].strip("/") in accounts]
        return roots

    def _list_s3(self, ctx: StepContext) -> dict[str, Any]:
        discovered = ctx.results.get("discover", {})
        account = discovered.get("account")
        accounts = {str(a) for a in [account, *self.request.extra.get("accounts", [])] if a}
        regions = discovered.get("regions") or self.planned_regions()
        s3 = self.clients.client("s3")
        objects: list[_Listed] = []
        folders: list[tuple[str, str]] = []
        buckets = self._buckets(discovered)
        for bucket, prefix in buckets:
            with aws_errors(f"list trail files in s3://{bucket} (s3:ListBucket)"):
                roots = self._roots(s3, bucket, prefix, accounts)
                for root in roots:
                    for kind, folder_name in (("log", "CloudTrail"), ("digest", "CloudTrail-Digest")):
                        for region in regions:
                            for day in self._days():
                                folder = f"{root}{folder_name}/{region}/{day:%Y/%m/%d}/"
                                folders.append((bucket, folder))
                                for item in _list(s3, bucket, folder):
                                    objects.append(
                                        _Listed(
                                            bucket,
                                            item["Key"],
                                            int(item["Size"]),
                                            kind,
                                            region,
                                            self._in_window(kind, item["Key"]),
                                        )
                                    )
        objects, refused = _claim_local_paths(objects)
        ctx.case.write_json(
            LISTING_FILE,
            {"buckets": buckets, "folders": folders, "objects": [vars(o) for o in objects], "refused": refused},
        )
        return {
            "buckets": [b for b, _ in buckets],
            "folders_listed": len(folders),
            "log_files": sum(1 for o in objects if o.kind == "log" and o.in_window),
            "digest_files": sum(1 for o in objects if o.kind == "digest" and o.in_window),
            "refused_objects": refused[:MAX_REFUSED_IN_RECORD],
            "refused_count": len(refused),
        }

    def _in_window(self, kind: str, key: str) -> bool:
        """Log files delivered within an hour of the window; digests up to two hours after it."""
        match = (_LOG_TIME if kind == "log" else _DIGEST_TIME).search(key)
        if match is None:
            return False
        stamp = match.group(1)
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%S" if len(stamp) == 15 else "%Y%m%dT%H%M").replace(tzinfo=UTC)
        after = timedelta(hours=1 if kind == "log" else 2)
        return self.start - timedelta(hours=1) <= when <= self.end + after

    def _listing(self, case: Case) -> dict[str, Any]:
        path = case.root / LISTING_FILE
        if not path.is_file():
            return {"buckets": [], "folders": [], "objects": []}
        listing: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return listing

    def _download(self, ctx: StepContext) -> dict[str, Any]:
        wanted = [o for o in self._listing(ctx.case)["objects"] if o["in_window"]]
        s3 = self.clients.client("s3")
        with ActionPool(max_workers=self.workers) as pool:
            outcomes = list(pool.map(lambda o: self._fetch(ctx.case, s3, o), wanted))
        errors = [o for o in outcomes if o.startswith("error")]
        if errors:
            raise CloudAccessError(
                f"{len(errors)} of {len(wanted)} trail files could not be downloaded, first: {errors[0][6:]}",
                hint="downloaded files are kept; fix the cause and re-run with --resume",
            )
        return {
            "downloaded": outcomes.count("downloaded"),
            "already_present": outcomes.count("present"),
            "bytes": sum(o["size"] for o in wanted),
        }

    def _fetch(self, case: Case, s3: Any, item: dict[str, Any]) -> str:
        bucket, key = item["bucket"], item["key"]
        rel = f"{S3_DIR}/{bucket}/{key}"
        meta_rel = f"{S3_META_DIR}/{bucket}/{key}.json"
        path = case.root / rel
        if path.is_file() and path.stat().st_size == item["size"] and (case.root / meta_rel).is_file():
            return "present"
        try:
            self._get_object(case, s3, bucket, key)
        except (ClientError, BotoCoreError) as exc:
            return f"error:{describe_error(exc, f'download s3://{bucket}/{key}')}"
        return "downloaded"

    def _get_object(self, case: Case, s3: Any, bucket: str, key: str) -> None:
        response = s3.get_object(Bucket=bucket, Key=key)
        with case.open_artifact(f"{S3_DIR}/{bucket}/{key}") as writer:
            for chunk in response["Body"].iter_chunks(_CHUNK):
                writer.write(chunk)
        case.write_json(
            f"{S3_META_DIR}/{bucket}/{key}.json",
            {
                "bucket": bucket,
                "key": key,
                "metadata": response.get("Metadata", {}),
                "etag": response.get("ETag"),
                "last_modified": _iso(response.get("LastModified")),
                "version_id": response.get("VersionId"),
                "content_length": response.get("ContentLength"),
                "request_id": response.get("ResponseMetadata", {}).get("RequestId"),
            },
        )

    # -- digest validation ---------------------------------------------------------------------------------
    def _stored_digest(self, case: Case, bucket: str, key: str) -> StoredDigest:
        meta = json.loads((case.root / f"{S3_META_DIR}/{bucket}/{key}.json").read_text(encoding="utf-8"))
        metadata = meta.get("metadata", {})
        raw = (case.root / f"{S3_DIR}/{bucket}/{key}").read_bytes()
        return StoredDigest(bucket, key, raw, metadata.get("signature"), metadata.get("signature-algorithm"))

    def _anchors(self, case: Case, digests: list[StoredDigest]) -> list[StoredDigest]:
        """Fetch the digest just before each chain's first collected digest."""
        have = {(d.bucket, d.key) for d in digests}
        firsts: dict[tuple[str, str], StoredDigest] = {}
        for digest in sorted(digests, key=lambda d: d.key):
            chain = (digest.bucket, digest.key.rsplit("/", 1)[-1].rsplit("_", 1)[0])
            firsts.setdefault(chain, digest)
        s3 = self.clients.client("s3")
        anchors: list[StoredDigest] = []
        for first in firsts.values():
            try:
                data = json.loads(gzip.decompress(first.raw))
            except (OSError, EOFError, ValueError):
                continue
            bucket, key = data.get("previousDigestS3Bucket"), data.get("previousDigestS3Object")
            if not bucket or not key or (bucket, key) in have:
                continue
            try:
                self._get_object(case, s3, bucket, key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                    continue  # reported as a broken chain
                raise describe_error(exc, f"download the previous digest s3://{bucket}/{key}") from None
            anchors.append(self._stored_digest(case, bucket, key))
        return anchors

    def _public_keys(self, case: Case, regions: set[str]) -> dict[str, bytes]:
        pages: list[bytes] = []
        for region in sorted(regions):
            client = self.clients.client("cloudtrail", region)
            params: dict[str, Any] = {
                "StartTime": self.start - timedelta(days=1),
                "EndTime": self.end + timedelta(hours=3),
            }
            number = 0
            with capturing(client, "ListPublicKeys") as raw, aws_errors(f"cloudtrail:ListPublicKeys in {region}"):
                while True:
                    response = client.list_public_keys(**params)
                    number += 1
                    body = raw.last_ok()
                    case.write_bytes(f"{LOG_ROOT}/public-keys/{region}/page-{number:05d}.json", body)
                    pages.append(body)
                    if not response.get("NextToken"):
                        break
                    params["NextToken"] = response["NextToken"]
        return public_keys_from_pages(pages)

    def _validate(self, ctx: StepContext) -> dict[str, Any]:
        listing = self._listing(ctx.case)
        wanted = [  # what was downloaded: a failed download is reported by the coverage, not validated here
            o
            for o in listing["objects"]
            if o["in_window"] and (ctx.case.root / f"{S3_META_DIR}/{o['bucket']}/{o['key']}.json").is_file()
        ]
        digests = [self._stored_digest(ctx.case, o["bucket"], o["key"]) for o in wanted if o["kind"] == "digest"]
        log_hashes = {
            (o["bucket"], o["key"]): uncompressed_sha256(
                (ctx.case.root / f"{S3_DIR}/{o['bucket']}/{o['key']}").read_bytes()
            )
            for o in wanted
            if o["kind"] == "log"
        }
        if not digests and not log_hashes:
            report: dict[str, Any] = validate([], {}, {})
        else:
            anchors = self._anchors(ctx.case, digests)
            keys = (
                self._public_keys(ctx.case, {o["region"] for o in wanted if o["kind"] == "digest"}) if digests else {}
            )
            listed = {(bucket, folder) for bucket, folder in listing["folders"]}
            report = validate(digests, log_hashes, keys, listed_prefixes=listed, anchors=anchors)
        ctx.case.write_json(VALIDATION_FILE, report)
        return {"log_files": report["counts"], "digests": report["digest_counts"]}

    # -- coverage ------------------------------------------------------------------------------------------
    def _coverage(self, ctx: StepContext) -> dict[str, Any]:
        case = ctx.case
        discovered = ctx.results.get("discover", {})
        report = CoverageReport("aws", discovered.get("account"), iso_utc(self.start), iso_utc(self.end))
        if not discovered:
            report.warn("trail discovery did not finish: trails, logging status and data events are unknown")
        self._trail_coverage(report, discovered)
        oldest = self._lookup_coverage(case, report, discovered.get("regions") or self.planned_regions())
        report.add_retention("cloudtrail:lookup-events", LOOKUP_RETENTION_DAYS, oldest or self.start)
        self._s3_coverage(case, report, ctx.results.get("s3-list"))
        validation_path = case.root / VALIDATION_FILE
        if validation_path.is_file():
            counts = json.loads(validation_path.read_text(encoding="utf-8"))["counts"]
            bad = {k: v for k, v in counts.items() if k != "verified" and v}
            report.locations.setdefault("_integrity", {}).update(counts)
            if bad:
                report.warn(
                    "trail file integrity: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(bad.items()))
                )
        case.write_json(COVERAGE_FILE, report.to_dict())
        return {"warnings": len(report.warnings), "covered": report.to_dict()["covered"]}

    def _trail_coverage(self, report: CoverageReport, discovered: dict[str, Any]) -> None:
        trails = {t["arn"]: t for t in discovered.get("trails", [])}
        for region, info in discovered.get("region_trails", {}).items():
            covering = [trails[arn] for arn in info.get("trails", []) if arn in trails]
            logging = [t for t in covering if t.get("logging")]
            report.locations[region] = {
                "trails": [t["name"] for t in covering],
                "logging": [t["name"] for t in logging],
                "data_events": any(t["data_events"] for t in covering),
                "log_file_validation": any(t["validation"] for t in covering),
                "error": info.get("error"),
            }
            if info.get("error"):
                report.warn(f"{region}: trails unknown ({info['error']})")
            elif not covering:
                report.warn(f"{region}: no CloudTrail trail; only LookupEvents (90 days, management events) remains")
        for trail in trails.values():
            if trail.get("logging") is False:
                when = trail.get("stop_logging_time") or "unknown time"
                report.warn(f"trail {trail['name']} is not logging (stopped at {when})")
            if trail.get("error"):
                report.warn(f"trail {trail['name']}: {trail['error']}")
        if trails and not any(t["data_events"] for t in trails.values()):
            report.warn("no trail records data events: S3 object reads and Lambda invocations are not in any log")

    def _lookup_coverage(self, case: Case, report: CoverageReport, regions: list[str]) -> datetime | None:
        stats = _lookup_stats(case)
        oldest: datetime | None = None
        for region in regions:
            for key, value in lookup_scopes(self.request):
                series = Series(region, key, value)
                pages = sorted((case.root / series.folder).glob("page-*.json"))
                count, first, last = stats.get(series.folder, (0, None, None))
                run = self.series_status.get(f"{region}/{series.name}", {})
                more = bool(pages) and json.loads(pages[-1].read_bytes()).get("NextToken") is not None
                if run.get("stopped"):
                    status, reason = "stopped", f"{run['stopped']}: {run['error']}"
                elif not pages:
                    status, reason = "unavailable", "no page was collected"
                elif more:
                    status, reason = "partial", "the last stored page has a NextToken"
                else:
                    status, reason = ("complete" if count else "empty"), None
                report.add_source(
                    SourceCoverage(
                        source="cloudtrail:lookup-events",
                        location=region,
                        scope=series.name,
                        status=status,
                        items=count,
                        first_event=iso_utc(first) if first else None,
                        last_event=iso_utc(last) if last else None,
                        stopped_reason=reason,
                        details={"pages": len(pages), "throttled_responses": run.get("throttled_responses", 0)},
                    )
                )
                if first and (oldest is None or first < oldest):
                    oldest = first
        return oldest

    def _s3_coverage(self, case: Case, report: CoverageReport, listed: dict[str, Any] | None) -> None:
        listing = self._listing(case)
        unavailable = None
        if listed is None:
            unavailable = "listing the trail bucket failed (see the custody log); re-run with --resume"
        elif not listing["buckets"]:
            unavailable = "no trail bucket (none discovered and no --trail-bucket)"
        if unavailable:
            report.add_source(SourceCoverage("cloudtrail:s3", "-", status="unavailable", stopped_reason=unavailable))
            return
        stats = _s3_stats(case)
        refused: dict[str, list[dict[str, Any]]] = {}
        for item in listing.get("refused", []):
            refused.setdefault(item["region"], []).append({"key": item["key"], "reason": item["reason"]})
        files: dict[str, list[bool]] = {region: [] for region in refused}
        for item in listing["objects"]:
            if item["kind"] == "log" and item["in_window"]:
                on_disk = (case.root / f"{S3_DIR}/{item['bucket']}/{item['key']}").is_file()
                files.setdefault(item["region"], []).append(on_disk)
        for region, present in sorted(files.items()):
            count, first, last = stats.get(region, (0, None, None))
            missing = present.count(False)
            bad = refused.get(region, [])
            reasons = [f"{missing} of {len(present)} listed files not downloaded"] if missing else []
            if bad:
                reasons.append(f"{len(bad)} objects refused (unsafe or colliding keys), first {bad[0]['key']!r}")
                report.warn(f"cloudtrail:s3 {region}: {reasons[-1]}: {bad[0]['reason']}; the others were downloaded")
            report.add_source(
                SourceCoverage(
                    source="cloudtrail:s3",
                    location=region,
                    scope=",".join(b for b, _ in listing["buckets"]),
                    status="partial" if reasons else "complete" if count else "empty",
                    items=count,
                    first_event=first,
                    last_event=last,
                    stopped_reason="; ".join(reasons) or None,
                    details={"files": len(present) - missing, "refused": bad[:MAX_REFUSED_IN_RECORD]},
                )
            )
            if last and parse_utc(last) < self.end - timedelta(hours=1):
                report.warn(
                    f"trail files in {region} end at {last}, before the window end {iso_utc(self.end)} "
                    "(logging stopped?); LookupEvents may still hold later management events"
                )


def _claim_local_paths(objects: list[_Listed]) -> tuple[list[_Listed], list[dict[str, Any]]]:
    """Keep the objects whose keys are safe, distinct local paths; the others are refused, with their reasons."""
    claims = PathClaims()
    kept: list[_Listed] = []
    refused: list[dict[str, Any]] = []
    for item in sorted(objects, key=lambda o: (o.bucket, o.key)):
        local = [f"{S3_DIR}/{item.bucket}/{item.key}", f"{S3_META_DIR}/{item.bucket}/{item.key}.json"]
        reason = claims.claim(item.key, local) if item.in_window else None  # only files in the window are copied
        if reason is None:
            kept.append(item)
        else:
            refused.append({**vars(item), "reason": reason})
    return kept, refused


def _folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        found += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return found


def _list(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        items += page.get("Contents", [])
    return items


def _event_spans(files: list[str], *, group: str, array: str, time_sql: str, gzip: bool) -> list[tuple[Any, ...]]:
    """(group, events, first, last) over JSON files holding an event array, grouped by a path regex (DuckDB)."""
    if not files:
        return []
    compression = "gzip" if gzip else "none"
    return (
        duckdb.connect()
        .execute(
            f"""
        SELECT regexp_extract(filename, $group, 1) AS grp, count(*), min({time_sql}), max({time_sql})
        FROM (SELECT filename, unnest(from_json(json->'{array}', '["json"]')) AS e
              FROM read_json_objects($files, filename = true, compression = '{compression}',
                                     maximum_object_size = 268435456))
        GROUP BY grp
        """,
            {"files": files, "group": group},
        )
        .fetchall()
    )


def _lookup_stats(case: Case) -> dict[str, tuple[int, datetime | None, datetime | None]]:
    """Events and first/last event time per stored LookupEvents series folder."""
    rows = _event_spans(
        sorted(str(p) for p in (case.root / LOOKUP_DIR).glob("*/*/page-*.json")),
        group="(logs/aws/lookup-events/[^/]+/[^/]+)/page-",
        array="Events",
        time_sql="CAST(e->>'EventTime' AS DOUBLE)",
        gzip=False,
    )
    return {
        str(folder): (int(count), datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC))
        for folder, count, first, last in rows
    }


def _s3_stats(case: Case) -> dict[str, tuple[int, str | None, str | None]]:
    """Records and first/last eventTime per region over the downloaded trail log files."""
    rows = _event_spans(
        sorted(str(p) for p in (case.root / S3_DIR).glob("**/CloudTrail/*/*/*/*/*.json.gz")),
        group="/CloudTrail/([^/]+)/",
        array="Records",
        time_sql="e->>'eventTime'",
        gzip=True,
    )
    return {str(region): (int(count), first, last) for region, count, first, last in rows}


def plan_pull_logs(clients: AwsClients, request: LogPullRequest) -> Plan:
    """The CloudTrail pull for ``request`` as a plan of READ steps (no API call is made while planning)."""
    return LogPull(clients, request).plan()
