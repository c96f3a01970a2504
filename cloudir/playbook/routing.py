"""Which adapter a finding's response uses: the configuration routes it (each provider's ``trigger_config``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from cloudir.config import load_config
from cloudir.errors import CloudirError
from cloudir.provider import Provider, get_provider
from cloudir.provider import offline_provider as offline_adapter
from cloudir.registry import provider_module
from cloudir.triggers import Trigger

ProviderFactory = Callable[[Trigger], Provider]


def default_provider(trigger: Trigger) -> Provider:
    """The adapter for the trigger's cloud, for its account and region, as the configuration routes it.

    Each provider module's ``trigger_config`` reads :mod:`cloudir.config` for the finding's account: AWS the role
    (and external id) ``[roles.aws]`` maps it to and the forensic account's role; Azure and GCP the forensic
    subscription / project ``[forensic]`` maps it to. ``CLOUDIR_PROVIDER_CONFIG`` (a JSON object keyed by cloud)
    adds adapter settings, e.g. ``{"gcp": {"forensic_project": "vault"}, "azure": {"soc_subscription": "..."}}``.
    """
    config = provider_module(trigger.cloud).trigger_config(trigger.account, trigger.region, load_config())
    return get_provider(trigger.cloud, **{**config, **_extra_config(trigger.cloud)})


def offline_provider(trigger: Trigger) -> Provider:
    """The adapter for the trigger's cloud built without credentials, to plan offline (it is never called): the
    provider module's ``offline_trigger_config`` names the finding's account and region as it gives them."""
    config = provider_module(trigger.cloud).offline_trigger_config(trigger.account, trigger.region)
    return offline_adapter(trigger.cloud, **{**config, **_extra_config(trigger.cloud)})


def _extra_config(cloud: str) -> dict[str, Any]:
    try:
        extra = json.loads(os.environ.get("CLOUDIR_PROVIDER_CONFIG") or "{}")
    except json.JSONDecodeError as exc:
        raise CloudirError(f"CLOUDIR_PROVIDER_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(extra, dict) or not isinstance(extra.get(cloud, {}), dict):
        raise CloudirError('CLOUDIR_PROVIDER_CONFIG must be a JSON object like {"gcp": {...}}')
    return dict(extra.get(cloud, {}))
