"""The one interface every cloud adapter implements, with declared capabilities.

Adapters live outside ``cloudir/`` (cloudir's own in the top-level ``providers`` package, the only code that
imports cloud SDKs) and are found through :mod:`cloudir.registry`, lazily, by :func:`get_provider`.
An adapter that cannot do something leaves the capability out and raises
:class:`~cloudir.errors.CapabilityNotSupportedError` from the matching method.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

from cloudir.case import Case
from cloudir.errors import CapabilityNotSupportedError, CloudirError
from cloudir.plan import Plan
from cloudir.registry import provider_module

CLOUDS = ("aws", "azure", "gcp")


class Capability(StrEnum):
    """What an adapter can do."""

    PRESERVE = "preserve"
    SNAPSHOT = "snapshot"
    COPY = "copy"
    IMAGE = "image"
    ISOLATE = "isolate"
    REVOKE = "revoke"
    PULL_LOGS = "pull_logs"
    PULL_FLOWS = "pull_flows"  # network flow logs of a target's network (LogPullRequest.extra["flows"])


class TargetKind(StrEnum):
    """What a responder can point the tool at."""

    INSTANCE = "instance"  # EC2 instance, Azure VM, GCE instance
    ACCESS_KEY = "access-key"  # AWS access key id
    PRINCIPAL = "principal"  # IAM user / role, Entra principal, service account
    DISK = "disk"  # EBS volume, Azure managed disk, persistent disk
    BUCKET = "bucket"  # S3 bucket, Azure storage account, Cloud Storage bucket
    CLUSTER = "cluster"  # EKS, AKS, GKE cluster


_RESOURCE_KINDS = (
    (TargetKind.DISK, re.compile(
        r"^(vol-[0-9a-f]{8,17}|arn:aws[a-z-]*:ec2:[^:]*:\d{12}:volume/vol-[0-9a-f]+"
        r"|/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/disks/[^/]+"
        r"|(https://www\.googleapis\.com/compute/v1/)?projects/[^/]+/(zones/[^/]+|regions/[^/]+)/disks/[^/]+)$",
        re.IGNORECASE)),
    (TargetKind.BUCKET, re.compile(
        r"^(arn:aws[a-z-]*:s3:::[^/]+|s3://[^/]+/?|gs://[^/]+/?|(//storage\.googleapis\.com/)?projects/_/buckets/[^/]+"
        r"|/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[^/]+)$",
        re.IGNORECASE)),
    (TargetKind.CLUSTER, re.compile(
        r"^(arn:aws[a-z-]*:eks:[^:]+:\d{12}:cluster/[^/]+"
        r"|/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/[^/]+"
        r"|(//container\.googleapis\.com/)?projects/[^/]+/(locations|zones)/[^/]+/clusters/[^/]+)$",
        re.IGNORECASE)),
)  # fmt: skip


def resource_kind(value: str) -> TargetKind | None:
    """The kind a value unmistakably names (a volume id, a bucket or cluster ARN / URL / resource id), else None.

    The CLIs type ``--target`` with it, so a disk, bucket or cluster reaches the provider as what it is and is
    refused by name where the provider does not handle that kind (instead of being looked up as an instance)."""
    return next((kind for kind, pattern in _RESOURCE_KINDS if pattern.match(value.strip())), None)


@dataclass(frozen=True)
class TargetQuery:
    """How the responder named the target: an id, a name, an IP or an interface id, and where to look."""

    kind: TargetKind
    value: str
    location: str | None = None  # region / zone / resource group; None = search all


@dataclass
class Target:
    """A resolved target."""

    cloud: str
    kind: TargetKind
    id: str
    location: str
    account: str
    name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def symbolic(self) -> bool:
        """True for a target named by a finding but not resolved: plans for it list calls and never run."""
        return bool(self.details.get("symbolic"))

    @property
    def ref(self) -> str:
        """Stable reference used in custody records and run state."""
        return f"{self.cloud}:{self.account}:{self.location}:{self.id}"


@dataclass
class AcquireOptions:
    """Acquisition settings shared by all clouds; cloud-specific ones go in ``extra``."""

    forensic_account: str | None = None  # AWS account / Azure subscription / GCP project receiving copies
    forensic_location: str | None = None  # region to copy into
    encryption_key: str | None = None  # customer-managed key for re-encryption
    raw_image: bool = False
    group_mode: str = "protect"  # autoscaling membership: protect | standby | detach
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContainOptions:
    """Containment settings."""

    examiner_cidr: str | None = None
    revoke_credentials: bool = True
    window_start: str | None = None  # ISO 8601 UTC: grants made since then (role assignments) are the attacker's
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogPullRequest:
    """Which control-plane logs to collect."""

    start: str  # ISO 8601 UTC
    end: str
    principals: list[str] = field(default_factory=list)
    access_keys: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)  # regions; empty = all enabled
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogScope:
    """The identities and resources a target's logs are narrowed to (each provider module's ``log_scope``)."""

    principals: tuple[str, ...] = ()
    access_keys: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a plan's notes, e.g. ``principals web@p.iam.gserviceaccount.com; resources i-0abc``."""
        parts = [(name, values) for name, values in vars(self).items() if values]
        return "; ".join(f"{name.replace('_', ' ')} {', '.join(values)}" for name, values in parts) or "nothing"


@runtime_checkable
class Provider(Protocol):
    """A cloud adapter."""

    cloud: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    targets: ClassVar[Mapping[TargetKind, frozenset[Capability]]]  # what it can do to each kind of target

    def bind(self, case: Case | None) -> None:
        """Send every later API call to ``case``'s custody log (None: record nothing, e.g. dry run)."""

    def identity(self) -> str:
        """The cloud identity the adapter acts as (ARN, object id, service account)."""

    def home_account(self) -> str:
        """The account / subscription / project the adapter acts in: the only one it may change."""

    def find_target(self, query: TargetQuery) -> Target:
        """Resolve a target or raise TargetNotFoundError; read-only."""

    def plan_acquire(self, target: Target, options: AcquireOptions) -> Plan:
        """Preserve, capture metadata, snapshot, copy and optionally image."""

    def plan_contain(self, target: Target, options: ContainOptions) -> Plan:
        """Isolate the workload and/or revoke credentials."""

    def plan_pull_logs(self, request: LogPullRequest) -> Plan:
        """Collect control-plane logs into the case as raw evidence."""

    def required_permissions(self) -> list[str]:
        """Every cloud permission the adapter's plans may use (for least-privilege policies)."""


class CallRecorder(Protocol):
    """What an adapter sends its API calls through: records each one into the bound case."""

    def bind(self, case: Case | None) -> None:
        """Record every later call into ``case`` (None: record nothing)."""


def bind_recorder(provider: Provider, recorder: CallRecorder, case: Case | None) -> None:
    """Bind ``provider``'s call recorder to ``case`` and note the cloud identity it acts as in the case."""
    recorder.bind(case)
    if case is not None:
        case.set_cloud_identity(provider.cloud, provider.identity())


class CustodyCopy(Protocol):
    """A copy of the case kept elsewhere, whose custody log is uploaded when a command ends."""

    def upload_custody(self, case: Case) -> str:
        """Upload the case's custody log; where it went."""


@runtime_checkable
class EvidenceMirroring(Protocol):
    """An adapter that mirrors every artifact of a case to write-once storage (AWS: an S3 bucket with Object Lock)."""

    def attach_evidence_mirror(
        self, case: Case, destination: str | None, *, retention_mode: str | None, retain_days: int | None
    ) -> CustodyCopy | None:
        """Mirror ``case`` to ``destination`` (or the one an earlier run chose); None when there is neither."""


def require(provider: Provider, capability: Capability) -> None:
    """Raise a clear error when ``provider`` lacks ``capability``."""
    if capability not in provider.capabilities:
        raise CapabilityNotSupportedError(
            f"the {provider.cloud} provider cannot {capability.value.replace('_', ' ')}",
            hint=f"supported: {', '.join(sorted(c.value for c in provider.capabilities))}",
        )


def require_target(provider: Provider, kind: TargetKind, capability: Capability | None = None) -> None:
    """Raise a clear error when ``provider`` cannot target ``kind`` (or cannot do ``capability`` to it)."""
    supported = provider.targets.get(kind)
    if supported is None or (capability is not None and capability not in supported):
        verb = capability.value.replace("_", " ") if supported and capability else "handle"
        what = f"{verb} targets of kind {kind.value!r}"
        offered = "; ".join(
            f"{k.value} ({', '.join(sorted(c.value for c in caps))})" for k, caps in provider.targets.items()
        )
        raise CapabilityNotSupportedError(f"the {provider.cloud} provider cannot {what}", hint=f"it targets: {offered}")


def _adapter(cloud: str) -> Any:
    if cloud not in CLOUDS:
        raise CloudirError(f"unknown cloud {cloud!r}", hint=f"choose one of {', '.join(CLOUDS)}")
    return provider_module(cloud)


def get_provider(cloud: str, **config: Any) -> Provider:
    """Load the adapter for ``cloud`` (``providers.<cloud>.create_provider(**config)``)."""
    provider: Provider = _adapter(cloud).create_provider(**config)
    return provider


def offline_provider(cloud: str, **config: Any) -> Provider:
    """The adapter built with the provider's ``OFFLINE_CONFIG`` (no credentials), to plan for symbolic targets."""
    return get_provider(cloud, **{**config, **_adapter(cloud).OFFLINE_CONFIG})


def credentials_found(cloud: str, **config: Any) -> bool:
    """Whether ``cloud``'s standard credential chain has credentials, decided without calling the cloud."""
    return bool(_adapter(cloud).credentials_found(**config))


def log_scope(target: Target) -> LogScope:
    """What ``target``'s logs narrow to, as its provider module's ``log_scope`` derives it (resolved, or as given)."""
    scope: LogScope = _adapter(target.cloud).log_scope(target)
    return scope


def symbolic_target(cloud: str, query: TargetQuery, *, account: str | None = None) -> Target:
    """The target as the responder named it, unresolved: plans for it list their calls and never run."""
    return Target(
        cloud=cloud,
        kind=query.kind,
        id=query.value,
        location=query.location or "<location>",
        account=account or "<account>",
        details={"symbolic": True},
    )
