"""boto3 clients that report every API call to the case's custody log and tag the tool's own activity."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from cloudir import __version__
from cloudir.case import Case
from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError, TargetNotFoundError

RESPONDER_USER_AGENT = f"cloudir/{__version__}"

_NOT_FOUND_CODES = {
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
    "InvalidNetworkInterfaceID.NotFound",
    "NoSuchEntity",
    "InvalidAccessKeyId",
    "InvalidSnapshot.NotFound",
    "InvalidVolume.NotFound",
}
_KMS_HINTS = {
    "kms": "the caller needs kms:CreateGrant, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey* and "
    "kms:DescribeKey on the source and target keys",
}


def _config_options(agent: str, *, resend: bool, connections: int) -> dict[str, Any]:
    """botocore ``Config`` keyword arguments of every client of the tool (plain values: another process gets them)."""
    return {
        "user_agent_extra": agent,
        "retries": {"mode": "adaptive", "max_attempts": 10} if resend else {"total_max_attempts": 1},
        "connect_timeout": 10,
        "read_timeout": 60,
        "max_pool_connections": connections,
    }


@dataclass(frozen=True)
class ClientSpec:
    """What another process needs to make the client :meth:`AwsClients.client` makes.

    The credentials are frozen ones: the process is sent fresh ones when they are refreshed here (see
    :meth:`AwsClients.frozen_credentials`); the calls are recorded here, from what the process sends back.
    """

    service: str
    region: str
    endpoint_url: str
    user_agent: str
    connections: int

    def client_arguments(self) -> dict[str, Any]:
        """Keyword arguments of botocore's ``Session.create_client`` for this client, without credentials; plain
        values (``config`` as ``Config`` keyword arguments), so the process unpickles nothing of this package."""
        return {
            "service_name": self.service,
            "region_name": self.region,
            "endpoint_url": self.endpoint_url,
            "config": _config_options(self.user_agent, resend=True, connections=self.connections),
        }


class AwsClients:
    """A boto3 session whose clients record calls into the bound case."""

    def __init__(
        self,
        *,
        profile: str | None = None,
        region: str | None = None,
        session: boto3.Session | None = None,
        case_tag: str | None = None,
    ) -> None:
        self.session = session or boto3.Session(profile_name=profile, region_name=region)
        self.default_region = region or self.session.region_name or "us-east-1"
        self.case: Case | None = None
        self.case_tag = case_tag
        self._clients: dict[tuple[str, str, bool, int], Any] = {}
        self.offline = False

    def offline_copy(self) -> AwsClients:
        """Clients for an offline plan: same session and region, but no boto3 client is ever created."""
        clients = AwsClients(session=self.session, region=self.default_region, case_tag=self.case_tag)
        clients.offline = True
        return clients

    def assume_role(self, role_arn: str, *, external_id: str | None) -> tuple[AwsClients, dict[str, Any]]:
        """Clients acting as ``role_arn``, and the first AssumeRole answer's AssumedRoleUser and expiry.

        The session is named after the case (``cloudir-<case id>``), so CloudTrail in the role's account
        names the responder; its credentials are refreshed before they expire through this object's STS
        client, so every AssumeRole call lands in the bound case's custody log.
        """
        session_name = re.sub(r"[^\w+=,.@-]", "-", f"cloudir-{self.case_tag or 'dry-run'}")[:64]
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name}
        if external_id:
            params["ExternalId"] = external_id
        first: dict[str, Any] = {}

        def fetch() -> dict[str, str]:
            with aws_errors(f"assume role {role_arn} (sts:AssumeRole)"):
                answer = self.client("sts").assume_role(**params)
            creds = answer["Credentials"]
            first.setdefault("user", {**answer["AssumedRoleUser"], "Expiration": creds["Expiration"].isoformat()})
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        credentials = RefreshableCredentials.create_from_metadata(fetch(), fetch, "sts-assume-role")
        core = botocore.session.get_session()
        # botocore has no public setter for refreshable credentials; this attribute is what it reads them from
        core._credentials = credentials  # type: ignore[attr-defined]
        session = boto3.Session(botocore_session=core, region_name=self.default_region)
        return AwsClients(session=session, region=self.default_region, case_tag=self.case_tag), first["user"]

    def bind(self, case: Case | None) -> None:
        """Record later calls into ``case`` (None stops recording); tags the user agent with the case id."""
        self.case = case
        self.case_tag = case.case_id if case else self.case_tag
        self._clients.clear()

    def client(self, service: str, region: str | None = None, *, resend: bool = True, connections: int = 10) -> Any:
        """A cached client for ``service`` in ``region`` (default region when None).

        ``resend=False`` gives a client whose SDK never resends: for calls that are not idempotent, which the caller
        retries itself after checking whether the lost attempt ran (each send is then its own custody record).
        ``connections`` sizes its connection pool: at least the calls the caller keeps in flight at once.
        """
        region = region or self.default_region
        if self.offline:
            return _OfflineClient(service)
        key = (service, region, resend, connections)
        if key not in self._clients:
            config = Config(**_config_options(self._user_agent, resend=resend, connections=connections))
            client = self.session.client(service, region_name=region, config=config)  # type: ignore[call-overload]
            client.meta.events.register("after-call.*.*", self._make_recorder(service, region))
            client.meta.events.register("after-call-error.*.*", self._make_error_recorder(service, region))
            self._clients[key] = client
        return self._clients[key]

    @property
    def _user_agent(self) -> str:
        return RESPONDER_USER_AGENT + (f" case/{self.case_tag}" if self.case_tag else "")

    def spec(self, service: str, region: str, *, connections: int) -> ClientSpec:
        """How another process makes this service's client in ``region`` (same endpoint, user agent, retries)."""
        endpoint = str(self.client(service, region).meta.endpoint_url)
        return ClientSpec(service, region, endpoint, self._user_agent, connections)

    def frozen_credentials(self) -> tuple[str, str, str | None]:
        """The current credentials (refreshed first when they are about to expire, the refresh recorded)."""
        credentials = self.session.get_credentials()
        if credentials is None:
            raise describe_error(NoCredentialsError(), "read snapshot blocks in reader processes")
        frozen = credentials.get_frozen_credentials()
        return str(frozen.access_key), str(frozen.secret_key), frozen.token

    def record(self, call: ApiCall) -> None:
        """Record a call another process made with a :class:`ClientSpec` of these clients."""
        if self.case is not None:
            self.case.record_api_call(call)

    def _make_recorder(self, service: str, region: str) -> Any:
        def record(**kwargs: Any) -> None:
            if self.case is None:
                return
            parsed = kwargs.get("parsed") or {}
            meta = parsed.get("ResponseMetadata", {})
            error = parsed.get("Error", {}).get("Code")
            self.case.record_api_call(
                ApiCall(
                    service=service,
                    operation=kwargs["model"].name,
                    region=region,
                    request_id=meta.get("RequestId"),
                    outcome=error or "ok",
                    http_status=meta.get("HTTPStatusCode"),
                )
            )

        return record

    def _make_error_recorder(self, service: str, region: str) -> Any:
        def record(**kwargs: Any) -> None:
            if self.case is None:
                return
            exc = kwargs.get("exception")
            operation = kwargs.get("event_name", "").split(".")[-1]
            self.case.record_api_call(ApiCall(service, operation, region, None, f"{type(exc).__name__}"))

        return record


class _OfflineClient:
    """Stands in for a boto3 client in an offline plan: any use of it is refused."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __getattr__(self, name: str) -> Any:
        raise CloudirError(f"{self.service}.{name} was not called: the plan was built offline for an unresolved target")


def describe_error(exc: BaseException, action: str) -> CloudirError:
    """Turn a boto3/botocore failure into a one-line error naming the call and what is missing."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CloudAccessError(
            f"no AWS credentials found while trying to {action}",
            hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run in a role",
        )
    if isinstance(exc, NoRegionError):
        return CloudAccessError(f"no AWS region set while trying to {action}", hint="pass --region")
    if isinstance(exc, EndpointConnectionError):
        return CloudAccessError(f"cannot reach the AWS endpoint while trying to {action}: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")).strip()
        operation = exc.operation_name
        if code in _NOT_FOUND_CODES:
            return TargetNotFoundError(f"{action}: {code}: {message}")
        if code.startswith("KMS") or "kms" in message.lower() or code in {"InvalidKeyId", "KeyUnavailable"}:
            return CloudAccessError(
                f"KMS error during {operation} ({action}): {code}: {message}", hint=_KMS_HINTS["kms"]
            )
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure"}:
            return CloudAccessError(
                f"access denied calling {operation} ({action}): {message or code}",
                hint="grant the permission named above to the responder role (cloudir iam-policy aws)",
            )
        return CloudAccessError(f"{operation} failed ({action}): {code}: {message}")
    if isinstance(exc, BotoCoreError):
        return CloudAccessError(f"AWS SDK error while trying to {action}: {exc}")
    return CloudirError(f"{action}: {exc}")


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Translate SDK exceptions raised inside the block into :class:`CloudirError`."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, action) from None
