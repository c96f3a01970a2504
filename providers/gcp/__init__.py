"""Google Cloud adapter: Compute Engine (REST) acquisition and containment, Cloud Audit Log collection."""

from __future__ import annotations

import os
from typing import Any

from google.auth.credentials import Credentials

from cloudir.config import Config
from cloudir.errors import CloudirError
from cloudir.provider import LogScope, Target, TargetKind
from providers.gcp.provider import GcpProvider
from providers.gcp.session import GcpApi, anonymous_credentials, credentials_found

# Credential settings that build the adapter without credentials or any call (plans of symbolic targets).
OFFLINE_CONFIG: dict[str, Any] = {"anonymous": True}


def create_provider(
    *,
    project: str | None = None,
    zone: str | None = None,
    credentials: Credentials | None = None,
    api_endpoint: str | None = None,
    url_scheme: str = "https",
    anonymous: bool = False,
    forensic_project: str | None = None,
    principal: str | None = None,
    api_backoff: float = 1.0,
    **tuning: Any,
) -> GcpProvider:
    """A :class:`GcpProvider` for ``project``.

    ``api_endpoint`` (``host:port`` or ``http://host:port``) points both Compute and Logging at another
    endpoint; ``zone`` is where targets are looked up when a query names none (default: every zone,
    via aggregatedList); ``anonymous`` sends no token (local fakes only). ``api_backoff`` is the first gap before
    a rate-limited Compute call is resent or an operation polled again after an early answer (doubling);
    ``tuning`` passes ``log_page_size``, ``log_max_retries``, ``log_backoff`` and ``change_backoff`` to the provider.
    """
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
    if not project:
        raise CloudirError("no Google Cloud project given", hint="pass --project or set GOOGLE_CLOUD_PROJECT")
    if anonymous and credentials is None:
        credentials = anonymous_credentials()
    api = GcpApi(
        project=project, credentials=credentials, api_endpoint=api_endpoint, url_scheme=url_scheme, backoff=api_backoff
    )
    return GcpProvider(api, zone=zone, principal=principal, forensic_project=forensic_project, **tuning)


__all__ = [
    "OFFLINE_CONFIG",
    "GcpProvider",
    "create_provider",
    "credentials_found",
    "offline_trigger_config",
    "trigger_config",
]


def trigger_config(account: str | None, region: str | None, config: Config) -> dict[str, Any]:
    """Settings for a finding from project ``account``, which is data anyone may write: the project to act in is the
    finding's only when ``[accounts] gcp`` lists it, else the tool's own (``GOOGLE_CLOUD_PROJECT``, resolved when the
    adapter is made), so a finding naming another one is refused; and the forensic project ``[forensic] gcp`` maps
    it to."""
    vault = config.forensic_for("gcp", account)
    return ({"project": account} if config.lists_account("gcp", account) else {}) | (
        {"forensic_project": vault} if vault else {}
    )


def offline_trigger_config(account: str | None, region: str | None) -> dict[str, Any]:
    """Settings to plan a finding's response offline (no credentials, never called): the finding's project."""
    return {"project": account or "<project>"}


def log_scope(target: Target) -> LogScope:
    """Audit logs narrowed to a target: a service account's own entries; an instance's by the service accounts it
    runs as (what its credentials did), or, when it runs as none, the entries naming the instance."""
    if target.kind is TargetKind.PRINCIPAL:
        return LogScope(principals=(target.id,))
    if target.kind is not TargetKind.INSTANCE:
        return LogScope(resources=(target.name or target.id,))
    if target.symbolic:
        return LogScope(principals=(f"<service account of {target.id}>",))
    accounts = tuple(str(email) for email in target.details.get("service_accounts") or ())
    return LogScope(principals=accounts) if accounts else LogScope(resources=(target.name or target.id,))
