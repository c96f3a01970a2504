"""The AWS adapter: EC2 preservation, snapshots, copies, raw images, containment, and log pulls (lazily)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar

import boto3

from cloudir.case import Case
from cloudir.errors import CloudirError
from cloudir.plan import Plan
from cloudir.provider import (
    AcquireOptions,
    Capability,
    ContainOptions,
    LogPullRequest,
    Target,
    TargetKind,
    TargetQuery,
    require_target,
)
from providers.aws.acquire import AcquirePlanner
from providers.aws.calls import required_permissions
from providers.aws.contain import plan_contain
from providers.aws.evidence_bucket import S3EvidenceMirror, attach_evidence_bucket
from providers.aws.principals import find_access_key, find_principal, plan_acquire_principal
from providers.aws.session import AwsClients, aws_errors
from providers.aws.targets import find_instance


class AwsProvider:
    """cloudir's AWS adapter (satisfies :class:`cloudir.provider.Provider`)."""

    cloud: ClassVar[str] = "aws"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    targets: ClassVar[Mapping[TargetKind, frozenset[Capability]]] = {
        TargetKind.INSTANCE: frozenset(Capability) - {Capability.PULL_LOGS},
        TargetKind.ACCESS_KEY: frozenset({Capability.PRESERVE, Capability.REVOKE}),
        TargetKind.PRINCIPAL: frozenset({Capability.PRESERVE, Capability.REVOKE}),
    }

    def __init__(
        self,
        *,
        region: str | None = None,
        profile: str | None = None,
        session: boto3.Session | None = None,
        all_regions: bool = False,
        poll_seconds: float = 5.0,
        timeout_seconds: float = 6 * 3600.0,
        role_arn: str | None = None,
        external_id: str | None = None,
        forensic_role_arn: str | None = None,
        forensic_external_id: str | None = None,
    ) -> None:
        self._own = AwsClients(profile=profile, region=region, session=session)  # the responder's own credentials
        self.clients = self._own  # the target account's: the own ones, or those of ``role_arn`` once bound
        self.forensic_clients: AwsClients | None = None  # the forensic account's, with ``forensic_role_arn``
        self.roles = {"target": (role_arn, external_id), "forensic": (forensic_role_arn, forensic_external_id)}
        self.all_regions = all_regions
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self._identity: dict[str, str] | None = None

    def bind(self, case: Case | None) -> None:
        """Record every later call into ``case``, assume the configured roles and note each identity in custody."""
        self._own.bind(case)
        self.clients = self._assume("target", case) or self._own
        self.forensic_clients = self._assume("forensic", case)
        self._identity = None
        if case is not None:
            with case.action("identity.aws") as act:
                act.details["arn"] = self.identity()
                case.set_cloud_identity(self.cloud, act.details["arn"])

    def _assume(self, purpose: str, case: Case | None) -> AwsClients | None:
        """Clients of the role configured for ``purpose`` (None without one); the assumption is recorded."""
        role_arn, external_id = self.roles[purpose]
        if not role_arn:
            return None
        if case is None:
            return self._own.assume_role(role_arn, external_id=external_id)[0]
        with case.action("identity.assume-role", target=role_arn) as act:
            clients, user = self._own.assume_role(role_arn, external_id=external_id)
            act.details |= {
                "purpose": purpose,
                "assumed_arn": user["Arn"],
                "assumed_role_id": user["AssumedRoleId"],
                "expires": user["Expiration"],
                "external_id_given": bool(external_id),
            }
        clients.bind(case)
        return clients

    @property
    def evidence_clients(self) -> AwsClients:
        """Where evidence storage (the S3 evidence bucket) is reached: the forensic account when a role leads there."""
        return self.forensic_clients or self.clients

    def attach_evidence_mirror(
        self, case: Case, destination: str | None, *, retention_mode: str | None, retain_days: int | None
    ) -> S3EvidenceMirror | None:
        """Mirror every artifact of ``case`` to the S3 bucket ``destination`` (see :mod:`.evidence_bucket`)."""
        return attach_evidence_bucket(
            self.evidence_clients, case, destination, retention_mode=retention_mode, retain_days=retain_days
        )

    def _caller(self) -> dict[str, str]:
        if self._identity is None:
            with aws_errors("identify the AWS caller (sts:GetCallerIdentity)"):
                found = self.clients.client("sts").get_caller_identity()
            self._identity = {"arn": found["Arn"], "account": found["Account"]}
        return self._identity

    def identity(self) -> str:
        """The caller's ARN."""
        return self._caller()["arn"]

    def home_account(self) -> str:
        """The caller's account (sts:GetCallerIdentity)."""
        return self._caller()["account"]

    def find_target(self, query: TargetQuery) -> Target:
        """Resolve an instance (id, IP, ENI), a principal (user, role, role session) or an access key; read-only."""
        require_target(self, query.kind)
        account = self._caller()["account"]
        if query.kind is TargetKind.ACCESS_KEY:
            return find_access_key(self.clients, query, account)
        if query.kind is TargetKind.PRINCIPAL:
            return find_principal(self.clients, query, account)
        return find_instance(self.clients, query, account, self.all_regions)

    def plan_acquire(self, target: Target, options: AcquireOptions) -> Plan:
        """Preserve, capture, snapshot, copy/share and optionally image an instance; capture a principal's IAM state."""
        require_target(self, target.kind, Capability.PRESERVE)
        clients, target = self._clients_for(target), self._named(target)
        if target.kind is not TargetKind.INSTANCE:
            return plan_acquire_principal(clients, target)
        forensic = self.forensic_clients
        if forensic is not None and options.forensic_account:
            self._check_forensic_account(options.forensic_account)
            forensic = forensic.offline_copy() if target.symbolic else forensic
        planner = AcquirePlanner(
            clients,
            target,
            options,
            forensic=forensic,
            poll_seconds=self.poll_seconds,
            timeout_seconds=self.timeout_seconds,
        )
        return planner.plan()

    def plan_contain(self, target: Target, options: ContainOptions) -> Plan:
        """Isolate an instance and revoke its role sessions, or contain a principal or access key."""
        require_target(
            self, target.kind, Capability.ISOLATE if target.kind is TargetKind.INSTANCE else Capability.REVOKE
        )
        return plan_contain(self._clients_for(target), self._named(target), options)

    def _check_forensic_account(self, account: str) -> None:
        """Refuse a forensic account other than the one the forensic role is in."""
        role_arn = str(self.roles["forensic"][0])
        if role_arn.split(":")[4:5] != [account]:
            raise CloudirError(
                f"the forensic account {account} is not the account of the forensic role {role_arn}",
                hint="leave --forensic-account out: it is taken from --forensic-role-arn",
            )

    @staticmethod
    def _named(target: Target) -> Target:
        """An unresolved instance named by IP or ENI id stands as ``<instance with …>`` in plans."""
        if target.symbolic and target.kind is TargetKind.INSTANCE and not target.id.startswith("i-"):
            return replace(target, id=f"<instance with {target.id}>")
        return target

    def _clients_for(self, target: Target) -> AwsClients:
        """The clients a plan uses: ones that refuse every call for an unresolved (symbolic) target."""
        return self.clients.offline_copy() if target.symbolic else self.clients

    def plan_pull_logs(self, request: LogPullRequest) -> Plan:
        """CloudTrail collection (providers.aws.logs); VPC Flow Logs with ``extra["flows"]`` (providers.aws.flows)."""
        from providers.aws.flows import plan_pull_flows
        from providers.aws.logs import plan_pull_logs

        plan: Plan = (plan_pull_flows if request.extra.get("flows") else plan_pull_logs)(self.clients, request)
        return plan

    def required_permissions(self) -> list[str]:
        """Every IAM action of the planned-call tables: acquisition/containment (calls.py), log pulls (logs, flows)."""
        from providers.aws.flows import required_permissions as flow_permissions
        from providers.aws.logs import required_permissions as log_permissions

        return sorted({*required_permissions(), *log_permissions(), *flow_permissions()})
