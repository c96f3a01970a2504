"""Azure adapter (ARM compute, network, locks, monitor). Only this package imports the Azure SDK."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cloudir.config import Config
from cloudir.errors import CloudirError
from cloudir.provider import LogScope, Target, TargetKind
from providers.azure.provider import CASE_TAG, AzureProvider
from providers.azure.session import ARM_ENDPOINT, GRAPH_ENDPOINT, AzureSession, StaticTokenCredential

__all__ = [
    "CASE_TAG",
    "OFFLINE_CONFIG",
    "AzureProvider",
    "create_provider",
    "credentials_found",
    "log_scope",
    "offline_trigger_config",
    "trigger_config",
]

# Credential settings that build the adapter without credentials or any call (plans of symbolic targets).
OFFLINE_CONFIG: dict[str, Any] = {"token": "offline-plan"}
_CREDENTIAL_VARIABLES = ("AZURE_ACCESS_TOKEN", "AZURE_CLIENT_ID", "IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def credentials_found(**config: Any) -> bool:
    """Whether a token, AZURE_* credentials, a managed identity or an Azure CLI login is there (no call made)."""
    if config.get("token") or config.get("credential"):
        return True
    if any(os.environ.get(name) for name in _CREDENTIAL_VARIABLES):
        return True
    cli_dir = Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure")
    return (cli_dir / "msal_token_cache.json").is_file() or (cli_dir / "msal_token_cache.bin").is_file()


SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"


def create_provider(
    *,
    subscription_id: str | None = None,
    credential: Any = None,
    token: str | None = None,
    base_url: str | None = None,
    graph_url: str | None = None,
    connection_verify: bool | str = True,
    soc_subscription: str | None = None,
    soc_resource_group: str = "rg-cloudir-evidence",
    polling_interval: float = 5.0,
    retry_total: int = 6,
    retry_backoff_factor: float = 0.8,
    image_chunk_size: int = 4 * 1024 * 1024,
    image_workers: int = 8,
    copy_poll_interval: float = 30.0,
    blob_endpoint: str | None = None,
) -> AzureProvider:
    """An Azure provider for one subscription.

    ``credential`` is any azure-core TokenCredential; ``token`` a bearer token already held; with neither,
    DefaultAzureCredential (environment, managed identity, Azure CLI login...) is used. ``blob_endpoint`` is the
    Blob service URL of a storage account (``{account}`` replaced by its name) where flow logs are read.
    """
    subscription_id = subscription_id or os.environ.get(SUBSCRIPTION_ENV)
    if not subscription_id:
        raise CloudirError(
            "no Azure subscription given: the one this tool acts in is not known",
            hint=f"pass --subscription or set {SUBSCRIPTION_ENV}; for findings from several subscriptions, list them "
            "under [accounts] azure in the configuration",
        )
    if credential is None:
        if token:
            credential = StaticTokenCredential(token)
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
    session = AzureSession(
        credential,
        base_url=base_url or ARM_ENDPOINT,
        graph_url=graph_url or GRAPH_ENDPOINT,
        connection_verify=connection_verify,
        polling_interval=polling_interval,
        retry_total=retry_total,
        retry_backoff_factor=retry_backoff_factor,
    )
    return AzureProvider(
        session,
        subscription_id,
        soc_subscription=soc_subscription,
        soc_resource_group=soc_resource_group,
        image_chunk_size=image_chunk_size,
        image_workers=image_workers,
        copy_poll_interval=copy_poll_interval,
        blob_endpoint=blob_endpoint,
    )


def trigger_config(account: str | None, region: str | None, config: Config) -> dict[str, Any]:
    """Settings for a finding from subscription ``account``, which is data anyone may write: the subscription to act
    in is the finding's only when ``[accounts] azure`` lists it, else the tool's own (``AZURE_SUBSCRIPTION_ID``), so
    a finding naming another one is refused; and the SOC subscription ``[forensic] azure`` maps it to."""
    acting = account if config.lists_account("azure", account) else os.environ.get(SUBSCRIPTION_ENV)
    soc = config.forensic_for("azure", account)
    return ({"subscription_id": acting} if acting else {}) | ({"soc_subscription": soc} if soc else {})


def offline_trigger_config(account: str | None, region: str | None) -> dict[str, Any]:
    """Settings to plan a finding's response offline (no credentials, never called): the finding's subscription."""
    return {"subscription_id": account or "<subscription>"}


def log_scope(target: Target) -> LogScope:
    """Logs narrowed to a target: a VM's Activity Log events (its resource id) and, in the Entra logs, the managed
    identities it carries; a principal's own entries."""
    if target.kind is TargetKind.PRINCIPAL:
        return LogScope(principals=(target.id,))
    identities = tuple(str(principal) for principal in target.details.get("identity_principals") or ())
    return LogScope(principals=identities, resources=(target.id,))
