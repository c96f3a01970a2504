"""One typed trigger parsed at the edge from every finding envelope cloudir responds to.

Accepted: GuardDuty findings (bare or in an EventBridge event), Security Hub ASFF findings (bare, a
``Findings`` batch, or EventBridge "Imported" / "Custom Action" events), Microsoft Defender for Cloud
alerts (ARM shape, workflow-automation shape, Event Grid or CloudEvents envelopes), Security Command
Center notifications (bare or in a Pub/Sub push / CloudEvent message with base64 data), and manual
triggers from the CLI. Anything else fails with an error naming the missing field; nothing runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.coverage import duration
from cloudir.errors import CloudirError
from cloudir.provider import CLOUDS, TargetKind, TargetQuery

SEVERITIES = ("informational", "low", "medium", "high", "critical")
_ACCESS_KEY = re.compile(r"\b((?:AKIA|ASIA)[A-Z0-9]{12,})\b")
_GCE_INSTANCE = re.compile(r"//compute\.googleapis\.com/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$")
_GCP_PROJECT = re.compile(r"/projects/([^/]+)")
_GCP_SERVICE_ACCOUNT = re.compile(r"/serviceAccounts/([^/]+)")
_AZURE_VM = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines/([^/]+)$", re.I
)
_AZURE_LOCATION = re.compile(r"/locations/([^/]+)/alerts/", re.I)


class TriggerError(CloudirError):
    """A finding that cannot be turned into a trigger; nothing runs."""


@dataclass(frozen=True)
class Trigger:
    """What fired, where, against what: the only thing playbooks see of a finding."""

    source: str  # guardduty | securityhub | defender | scc | manual
    cloud: str  # aws | azure | gcp
    account: str  # AWS account / Azure subscription / GCP project
    region: str | None
    target: TargetQuery
    time: str  # ISO 8601 UTC of the activity the finding is about
    severity: str  # one of SEVERITIES
    finding_type: str
    finding_id: str
    title: str = ""
    principal: str | None = None  # the identity the finding names, used to scope log pulls
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def severity_rank(self) -> int:
        """0 (informational) to 4 (critical)."""
        return SEVERITIES.index(self.severity)

    def as_dict(self) -> dict[str, Any]:
        """JSON form stored in the case (``trigger.json``)."""
        return {
            "source": self.source,
            "cloud": self.cloud,
            "account": self.account,
            "region": self.region,
            "target": {"kind": self.target.kind.value, "value": self.target.value, "location": self.target.location},
            "time": self.time,
            "severity": self.severity,
            "finding_type": self.finding_type,
            "finding_id": self.finding_id,
            "title": self.title,
            "principal": self.principal,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        """Inverse of :meth:`as_dict`."""
        target = data["target"]
        return cls(
            source=data["source"],
            cloud=data["cloud"],
            account=data["account"],
            region=data.get("region"),
            target=TargetQuery(TargetKind(target["kind"]), target["value"], target.get("location")),
            time=data["time"],
            severity=data["severity"],
            finding_type=data["finding_type"],
            finding_id=data["finding_id"],
            title=data.get("title", ""),
            principal=data.get("principal"),
            raw=data.get("raw", {}),
        )


# -- helpers ------------------------------------------------------------------------------------------------
def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _require(obj: Any, path: str, what: str) -> Any:
    value = _get(obj, path)
    if value is None or value == "":
        raise TriggerError(f"{what}: missing field {path}", hint="nothing was run")
    return value


def _iso(value: Any, what: str, path: str) -> str:
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TriggerError(f"{what}: field {path} is not an ISO 8601 time: {text!r}", hint="nothing was run") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _severity_label(value: Any, what: str, path: str) -> str:
    label = str(value).strip().lower()
    if label in SEVERITIES:
        return label
    if label in {"severity_unspecified", "unspecified", "info"}:
        return "informational"
    raise TriggerError(f"{what}: field {path} has unknown severity {value!r}", hint=f"expected one of {SEVERITIES}")


def _guardduty_severity(value: Any) -> str:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TriggerError(f"GuardDuty finding: field severity is not a number: {value!r}") from None
    if score >= 9:
        return "critical"
    if score >= 7:
        return "high"
    if score >= 4:
        return "medium"
    return "low" if score >= 1 else "informational"


# -- AWS ----------------------------------------------------------------------------------------------------
_GUARDDUTY_RUNTIME_TYPES = frozenset({"EKSCluster", "ECSCluster", "Container"})
_IAM_PRINCIPAL_ARN = re.compile(
    r"arn:aws[a-z-]*:(?:iam::\d{12}:(?:user|role)/|sts::\d{12}:assumed-role/)[\w+=,.@/-]+", re.ASCII
)


def _guardduty_principal_arn(finding: dict[str, Any]) -> str | None:
    """The IAM identity a finding without an instance or a key names: a Lambda function's execution role, or the
    IAM user / role an EKS cluster maps the Kubernetes caller to; None when it names none (or not an ARN)."""
    for path in ("resource.lambdaDetails.role", "resource.kubernetesDetails.kubernetesUserDetails.username"):
        value = _get(finding, path)
        if isinstance(value, str) and _IAM_PRINCIPAL_ARN.fullmatch(value):
            return value
    return None


def _guardduty(finding: dict[str, Any]) -> Trigger:
    what = "GuardDuty finding"
    resource_type = _require(finding, "resource.resourceType", what)
    region = str(_require(finding, "region", what))
    principal = None
    if resource_type == "Instance":
        target = TargetQuery(
            TargetKind.INSTANCE, str(_require(finding, "resource.instanceDetails.instanceId", what)), region
        )
    elif resource_type in _GUARDDUTY_RUNTIME_TYPES and _get(finding, "resource.instanceDetails.instanceId"):
        # a Runtime Monitoring finding on a container host names the EC2 node: its disks are the evidence
        target = TargetQuery(TargetKind.INSTANCE, str(_get(finding, "resource.instanceDetails.instanceId")), region)
    elif _get(finding, "resource.accessKeyDetails.accessKeyId"):  # AccessKey, S3Bucket, ... findings name the key
        key_id = str(_get(finding, "resource.accessKeyDetails.accessKeyId"))
        principal = _get(finding, "resource.accessKeyDetails.userName")
        target = TargetQuery(TargetKind.ACCESS_KEY, key_id, region)
    elif arn := _guardduty_principal_arn(finding):
        principal = arn
        target = TargetQuery(TargetKind.PRINCIPAL, arn, region)
    else:
        raise TriggerError(
            f"{what}: resource.resourceType {resource_type!r} names no instance, access key or IAM principal "
            "(missing field resource.accessKeyDetails.accessKeyId; no IAM ARN in resource.lambdaDetails.role or "
            "resource.kubernetesDetails.kubernetesUserDetails.username)",
            hint="use a manual trigger (--instance, --access-key, --principal) for this finding",
        )
    time_path = "service.eventLastSeen" if _get(finding, "service.eventLastSeen") else "updatedAt"
    return Trigger(
        source="guardduty",
        cloud="aws",
        account=str(_require(finding, "accountId", what)),
        region=region,
        target=target,
        time=_iso(_require(finding, time_path, what), what, time_path),
        severity=_guardduty_severity(_require(finding, "severity", what)),
        finding_type=str(_require(finding, "type", what)),
        finding_id=str(_require(finding, "id", what)),
        title=str(finding.get("title", "")),
        principal=str(principal) if principal else None,
        raw=finding,
    )


def _asff(finding: dict[str, Any]) -> Trigger:
    what = "Security Hub finding"
    resources = _require(finding, "Resources", what)
    if not isinstance(resources, list) or not resources:
        raise TriggerError(f"{what}: field Resources is empty", hint="nothing was run")
    region = str(finding.get("Region") or _require(resources[0], "Region", what))
    target: TargetQuery | None = None
    principal = None
    for index, resource in enumerate(resources):
        kind = _require(resource, "Type", f"{what} Resources[{index}]")
        resource_id = str(_require(resource, "Id", f"{what} Resources[{index}]"))
        if kind == "AwsEc2Instance":
            target = TargetQuery(TargetKind.INSTANCE, resource_id.rsplit("/", 1)[-1], resource.get("Region", region))
            break
        if kind == "AwsIamAccessKey":
            details = _get(resource, "Details.AwsIamAccessKey") or {}
            principal = details.get("PrincipalName") or details.get("UserName")
            match = _ACCESS_KEY.search(resource_id) or _ACCESS_KEY.search(json.dumps(details))
            if match is None:
                raise TriggerError(f"{what}: Resources[{index}] names no access key id (Id {resource_id!r})")
            target = TargetQuery(TargetKind.ACCESS_KEY, match.group(1), region)
            break
        role = _get(resource, "Details.AwsLambdaFunction.Role") if kind == "AwsLambdaFunction" else resource_id
        if kind in {"AwsIamUser", "AwsIamRole", "AwsLambdaFunction"} and isinstance(role, str):
            if kind == "AwsLambdaFunction" and not _IAM_PRINCIPAL_ARN.fullmatch(role):
                continue  # a function without a readable execution role ARN names no identity
            target = TargetQuery(TargetKind.PRINCIPAL, role, region)  # a function acts as its execution role
            principal = role
            break
    if target is None:
        kinds = ", ".join(str(r.get("Type")) for r in resources)
        raise TriggerError(
            f"{what}: no supported resource in Resources (found {kinds})",
            hint="supported: AwsEc2Instance, AwsIamAccessKey, AwsIamUser, AwsIamRole, AwsLambdaFunction (its Role)",
        )
    types = _require(finding, "Types", what)
    label = _get(finding, "Severity.Label") or _get(finding, "FindingProviderFields.Severity.Label")
    if label is None:
        raise TriggerError(f"{what}: missing field Severity.Label", hint="nothing was run")
    time_path = next(
        p for p in ("LastObservedAt", "FirstObservedAt", "UpdatedAt") if p == "UpdatedAt" or finding.get(p)
    )
    return Trigger(
        source="securityhub",
        cloud="aws",
        account=str(_require(finding, "AwsAccountId", what)),
        region=region,
        target=target,
        time=_iso(_require(finding, time_path, what), what, time_path),
        severity=_severity_label(label, what, "Severity.Label"),
        finding_type=str(types[0]) if isinstance(types, list) and types else str(types),
        finding_id=str(_require(finding, "Id", what)),
        title=str(finding.get("Title", "")),
        principal=str(principal) if principal else None,
        raw=finding,
    )


def _eventbridge(event: dict[str, Any]) -> list[Trigger]:
    source = event.get("source")
    detail = _require(event, "detail", f"EventBridge event from {source}")
    if source == "aws.guardduty":
        return [_guardduty(detail)]
    if source == "aws.securityhub":
        findings = _require(detail, "findings", "Security Hub EventBridge event: detail")
        return [_asff(finding) for finding in findings]
    raise TriggerError(
        f"EventBridge event from {source!r} ({event.get('detail-type')}) is not a finding cloudir handles",
        hint="route aws.guardduty or aws.securityhub events",
    )


# -- Azure --------------------------------------------------------------------------------------------------
def _lower_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(key).lower(): _lower_keys(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_lower_keys(item) for item in obj]
    return obj


def _defender(alert: dict[str, Any]) -> Trigger:
    """ARM shape (``properties.*``) or workflow-automation shape (PascalCase, top level)."""
    what = "Defender for Cloud alert"
    lowered = _lower_keys(alert)
    props = lowered.get("properties") if isinstance(lowered.get("properties"), dict) else lowered
    prefix = "properties." if props is not lowered else ""
    identifiers = props.get("resourceidentifiers") or []
    resource_id = next(
        (str(i.get("azureresourceid")) for i in identifiers if str(i.get("type", "")).lower() == "azureresource"),
        None,
    )
    if resource_id is None:
        raise TriggerError(
            f"{what}: missing field {prefix}resourceIdentifiers[type=AzureResource].azureResourceId",
            hint="nothing was run",
        )
    match = _AZURE_VM.match(resource_id)
    if match is None:
        raise TriggerError(
            f"{what}: the alerted resource {resource_id} is not a virtual machine",
            hint="supported: Microsoft.Compute/virtualMachines (use a manual trigger for other resources)",
        )
    subscription, group, _vm_name = match.groups()
    alert_id = str(lowered.get("id") or _require(props, "systemalertid", what))
    location = _AZURE_LOCATION.search(alert_id)
    time_path = "starttimeutc" if props.get("starttimeutc") else "timegeneratedutc"
    return Trigger(
        source="defender",
        cloud="azure",
        account=subscription,
        region=location.group(1) if location else None,
        target=TargetQuery(TargetKind.INSTANCE, resource_id, group),
        time=_iso(_require(props, time_path, what), what, prefix + time_path),
        severity=_severity_label(_require(props, "severity", what), what, prefix + "severity"),
        finding_type=str(_require(props, "alerttype", what)),
        finding_id=str(_require(props, "systemalertid", what)),
        title=str(props.get("alertdisplayname", "")),
        principal=None,
        raw=alert,
    )


def _is_defender(obj: dict[str, Any]) -> bool:
    lowered = {str(k).lower() for k in obj}
    props = obj.get("properties")
    if isinstance(props, dict):
        lowered |= {str(k).lower() for k in props}
    return bool(lowered & {"systemalertid", "alerttype"})


# -- GCP ----------------------------------------------------------------------------------------------------
def _scc(notification: dict[str, Any]) -> Trigger:
    what = "Security Command Center finding"
    finding = _require(notification, "finding", what)
    resource_name = str(_require(finding, "resourceName", f"{what}: finding"))
    principal = _get(finding, "access.principalEmail")
    instance = _GCE_INSTANCE.match(resource_name)
    if instance is not None:
        project, zone, name = instance.groups()
        target = TargetQuery(TargetKind.INSTANCE, name, zone)
        region = zone.rsplit("-", 1)[0]
    else:
        account = _GCP_SERVICE_ACCOUNT.search(resource_name)
        subject = account.group(1) if account else principal
        if not subject:
            raise TriggerError(
                f"{what}: resource {resource_name} is not a GCE instance and the finding names no principal "
                "(missing field finding.access.principalEmail)",
                hint="nothing was run",
            )
        project_match = _GCP_PROJECT.search(resource_name)
        project = project_match.group(1) if project_match else str(_require(notification, "resource.project", what))
        target = TargetQuery(TargetKind.PRINCIPAL, str(subject), None)
        region = None
    time_path = "eventTime" if finding.get("eventTime") else "createTime"
    return Trigger(
        source="scc",
        cloud="gcp",
        account=project,
        region=region,
        target=target,
        time=_iso(_require(finding, time_path, f"{what}: finding"), what, f"finding.{time_path}"),
        severity=_severity_label(_require(finding, "severity", f"{what}: finding"), what, "finding.severity"),
        finding_type=str(_require(finding, "category", f"{what}: finding")),
        finding_id=str(_require(finding, "name", f"{what}: finding")),
        title=str(finding.get("description", ""))[:200],
        principal=str(principal) if principal else None,
        raw=notification,
    )


def _pubsub_data(message: dict[str, Any]) -> dict[str, Any]:
    data = _require(message, "data", "Pub/Sub message")
    try:
        decoded = json.loads(base64.b64decode(str(data), validate=True))
    except (binascii.Error, ValueError):
        raise TriggerError("Pub/Sub message: field message.data is not base64-encoded JSON") from None
    if not isinstance(decoded, dict):
        raise TriggerError("Pub/Sub message: message.data does not hold a JSON object")
    return decoded


# -- dispatch -----------------------------------------------------------------------------------------------
def parse_triggers(payload: Any) -> list[Trigger]:
    """Every trigger in a delivered payload (one per finding); raises :class:`TriggerError` otherwise."""
    if isinstance(payload, list):
        if not payload:
            raise TriggerError("empty list: no finding to respond to")
        return [trigger for item in payload for trigger in parse_triggers(item)]
    if not isinstance(payload, dict):
        raise TriggerError(f"a finding must be a JSON object, got {type(payload).__name__}")
    if "detail-type" in payload and "source" in payload:
        return _eventbridge(payload)
    if str(payload.get("arn", "")).startswith("arn:aws:guardduty") or (
        "schemaVersion" in payload and "service" in payload and "resource" in payload
    ):
        return [_guardduty(payload)]
    if "SchemaVersion" in payload and "ProductArn" in payload:
        return [_asff(payload)]
    if isinstance(payload.get("Findings"), list):
        return [_asff(finding) for finding in payload["Findings"]]
    if "notificationConfigName" in payload or isinstance(payload.get("finding"), dict):
        return [_scc(payload)]
    if isinstance(payload.get("message"), dict):  # Pub/Sub push body
        return parse_triggers(_pubsub_data(payload["message"]))
    data = payload.get("data")
    if isinstance(data, dict) and ("eventType" in payload or "specversion" in payload):
        if isinstance(data.get("message"), dict):  # Pub/Sub CloudEvent
            return parse_triggers(_pubsub_data(data["message"]))
        return parse_triggers(data)  # Event Grid / CloudEvents envelope around an alert
    if _is_defender(payload):
        return [_defender(payload)]
    keys = ", ".join(sorted(map(str, payload))[:8]) or "none"
    raise TriggerError(
        f"unrecognized finding (top-level fields: {keys})",
        hint="expected GuardDuty, Security Hub (ASFF), Defender for Cloud or Security Command Center; nothing was run",
    )


def load_triggers(path: Path) -> list[Trigger]:
    """Read a finding file (JSON) and parse it."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TriggerError(f"finding file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TriggerError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})", hint="nothing was run") from None
    return parse_triggers(payload)


_AROUND_HINT = "use ISO 8601 with an offset (2026-05-01T10:00Z, 2026-05-01T12:00+02:00) or a time ago (-6h, -30m, -2d)"


def manual_time(around: str, *, now: datetime | None = None) -> str:
    """A responder's ``--around`` as UTC: ISO 8601 with an offset, or a time before ``now`` (``-6h``, ``-2d``).

    Refused when unreadable, without an offset (whose clock would it be?) or in the future."""
    now = now or datetime.now(UTC)
    text = around.strip()
    ago = duration(text[1:]) if text.startswith("-") else None
    try:
        when = now - ago if ago is not None else datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise TriggerError(f"--around: cannot read the time {around!r}", hint=_AROUND_HINT) from None
    if when.tzinfo is None:
        raise TriggerError(f"--around {around!r} has no UTC offset", hint=_AROUND_HINT)
    if when > now:
        raise TriggerError(
            f"--around {around!r} is in the future ({when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ})",
            hint="name when the activity happened; nothing was run",
        )
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manual_trigger(
    cloud: str,
    kind: TargetKind,
    value: str,
    *,
    location: str | None = None,
    account: str = "",
    around: str | None = None,
    severity: str = "high",
    finding_type: str = "Manual",
    finding_id: str | None = None,
) -> Trigger:
    """A trigger typed in by a responder (``--instance``, ``--access-key``, ``--principal``), at ``around`` (see
    :func:`manual_time`; default now): the time the playbook's log window and the analysis's incident window use.
    Its finding id names the target and the ``around`` time given: the same command again is a second delivery of
    the same response, a response around another time is a response of its own."""
    if cloud not in CLOUDS:
        raise TriggerError(f"unknown cloud {cloud!r}", hint=f"choose one of {', '.join(CLOUDS)}")
    if cloud != "aws" and not account:
        raise TriggerError(f"a manual {cloud} trigger needs --account (the subscription / project)")
    severity = _severity_label(severity, "manual trigger", "--severity")
    when = manual_time(around) if around else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = f"{cloud}|{kind.value}|{value}|{location or ''}|{account}"
    if around:
        key += f"|{when}"
    return Trigger(
        source="manual",
        cloud=cloud,
        account=account,
        region=location,
        target=TargetQuery(kind, value, location),
        time=when,
        severity=severity,
        finding_type=finding_type,
        finding_id=finding_id or f"manual-{hashlib.sha256(key.encode()).hexdigest()[:16]}",
        title=f"manual response to {kind.value} {value}",
        principal=value if kind is TargetKind.PRINCIPAL else None,
        raw={"manual": {"cloud": cloud, "kind": kind.value, "value": value, "location": location, "around": around}},
    )
