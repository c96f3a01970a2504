"""User configuration: defaults a responder sets once (forensic destinations, roles, signing key).

Read from ``$CLOUDIR_CONFIG``, else ``$XDG_CONFIG_HOME/cloudir/config.toml`` (``~/.config/cloudir/config.toml``);
``CLOUDIR_*`` environment variables override the file. A missing file is an empty configuration.

.. code-block:: toml

    [forensic]                  # where evidence copies go, per cloud
    aws = "111122223333"        # account id
    gcp = "forensics-vault"     # project id

    [forensic.azure]            # or per source account / subscription / project ("default": any other)
    "6f1c2a9e-..." = "9a8b7c6d-..."
    default = "9a8b7c6d-..."

    [roles.aws]                 # role to act as, per target account ("default": any other account)
    "444455556666" = "arn:aws:iam::444455556666:role/cloudir-responder"
    "777788889999" = { role = "cloudir-responder", external_id = "IR-7777" }   # a trust that needs an external id
    default = "cloudir-responder"

    [signing]
    key = "~/.config/cloudir/custody-signing.pem"
    # kms = "arn:aws:kms:us-east-1:111122223333:alias/cloudir-seal"   # sign seals with a KMS key instead
    # (or an Azure Key Vault key https://VAULT.vault.azure.net/keys/NAME, or a Cloud KMS key version)

    [accounts]                  # findings ``cloudir respond`` may act on, per cloud (default: the caller's own)
    aws = ["123456789012"]

    [logs.azure]                # what ``cloudir logs pull azure`` reads when no --subscription is given
    subscriptions = ["6f1c2a9e-...", "2b3c4d5e-..."]
    # all_subscriptions = true  # or every subscription the identity can read (ARM GET /subscriptions)

    [seals]                     # write-once copies of every command's seal (cloudir.sealstore)
    store = "s3://forensic-seals/cloudir"   # or azblob://ACCOUNT/CONTAINER/PREFIX, gs://BUCKET/PREFIX
    retain_days = 365

    [timestamp]                 # RFC 3161 timestamp of every command's seal (cloudir.timestamp)
    url = "https://tsa.example/tsr"
    cert = "~/.config/cloudir/tsa.pem"   # the TSA certificate verify pins

Environment: ``CLOUDIR_FORENSIC_AWS|AZURE|GCP``, ``CLOUDIR_ROLE_AWS|AZURE|GCP`` (the default role of that cloud),
``CLOUDIR_SIGNING_KEY``, ``CLOUDIR_SIGNING_KMS``, ``CLOUDIR_ACCOUNTS_AWS|AZURE|GCP`` (comma-separated),
``CLOUDIR_SEAL_STORE``, ``CLOUDIR_SEAL_RETAIN_DAYS``, ``CLOUDIR_TSA_URL``, ``CLOUDIR_TSA_CERT``,
``CLOUDIR_LOGS_AZURE_SUBSCRIPTIONS`` (comma-separated, or ``all``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudir.errors import CloudirError

CLOUDS = ("aws", "azure", "gcp")
_DEFAULT_ROLE = "default"
DEFAULT_SEAL_RETAIN_DAYS = 365


@dataclass(frozen=True)
class Config:
    """The effective configuration (file merged with the environment)."""

    path: Path | None = None  # the file it was read from, when there was one
    forensic: dict[str, dict[str, str]] = field(default_factory=dict)  # cloud -> {source or "default": destination}
    roles: dict[str, dict[str, str]] = field(default_factory=dict)  # cloud -> {account or "default": role}
    external_ids: dict[str, dict[str, str]] = field(default_factory=dict)  # cloud -> {account or "default": id}
    signing_key: Path | None = None
    signing_kms: str | None = None  # KMS key that signs seals instead of the key file
    accounts: dict[str, list[str]] = field(default_factory=dict)  # cloud -> accounts a finding may name
    seal_store: str | None = None  # URL of the write-once store every command's seal is copied to
    seal_retain_days: int = DEFAULT_SEAL_RETAIN_DAYS
    tsa_url: str | None = None  # RFC 3161 time-stamp authority every command's seal is timestamped by
    tsa_cert: Path | None = None  # its certificate, pinned by verify
    notify: dict[str, dict[str, Any]] = field(default_factory=dict)  # channel name -> [notify.NAME] table
    azure_log_subscriptions: list[str] = field(default_factory=list)  # [logs.azure] subscriptions
    azure_log_all_subscriptions: bool = False  # [logs.azure] all_subscriptions: tenant-wide

    def forensic_for(self, cloud: str, account: str | None = None) -> str | None:
        """The forensic destination for evidence from ``account`` of ``cloud``: its own, else the cloud's default."""
        destinations = self.forensic.get(cloud, {})
        return destinations.get(account or "") or destinations.get(_DEFAULT_ROLE)

    def lists_account(self, cloud: str, account: str | None) -> bool:
        """Whether the ``[accounts]`` list of ``cloud`` names ``account`` (no list names none)."""
        return account is not None and account in self.accounts.get(cloud, [])

    def role_for(self, cloud: str, account: str | None) -> str | None:
        """The role to act as in ``account`` of ``cloud``: the account's own, else the cloud's default."""
        roles = self.roles.get(cloud, {})
        return roles.get(account or "") or roles.get(_DEFAULT_ROLE)

    def external_id_for(self, cloud: str, account: str | None) -> str | None:
        """The external id the trust of :meth:`role_for`'s role needs (from the same entry), if any."""
        entry = account if account and account in self.roles.get(cloud, {}) else _DEFAULT_ROLE
        return self.external_ids.get(cloud, {}).get(entry)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the configuration file is looked for."""
    env = os.environ if env is None else env
    if env.get("CLOUDIR_CONFIG"):
        return Path(env["CLOUDIR_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "cloudir" / "config.toml"


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read the configuration file (if any) and apply ``CLOUDIR_*`` overrides."""
    env = os.environ if env is None else env
    path = config_path(env)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CloudirError(f"cannot read the configuration {path}: {exc}") from None
    unknown = set(data) - {"forensic", "roles", "signing", "accounts", "seals", "timestamp", "notify", "logs"}
    if unknown:
        raise CloudirError(
            f"{path}: unknown section(s) {', '.join(sorted(unknown))}",
            hint="known: forensic, roles, signing, accounts, seals, timestamp, notify, logs",
        )
    log_subscriptions, all_subscriptions = _azure_logs(data.get("logs", {}), env, f"{path} [logs.azure]")
    notify = data.get("notify", {})
    if not isinstance(notify, dict) or not all(isinstance(table, dict) for table in notify.values()):
        raise CloudirError(f"{path} [notify]: expected one [notify.NAME] table per channel")
    forensic = _forensic(data.get("forensic", {}), f"{path} [forensic]")
    roles_section = data.get("roles", {})
    if not isinstance(roles_section, dict) or set(roles_section) - set(CLOUDS):
        raise CloudirError(f"{path} [roles]: expected [roles.aws], [roles.azure] or [roles.gcp] tables")
    roles: dict[str, dict[str, str]] = {}
    external_ids: dict[str, dict[str, str]] = {}
    for cloud, table in roles_section.items():
        roles[cloud], external_ids[cloud] = _roles(table, f"{path} [roles.{cloud}]")
    signing = _strings(data.get("signing", {}), f"{path} [signing]", keys=("key", "kms"))
    accounts = _account_lists(data.get("accounts", {}), f"{path} [accounts]")
    for cloud in CLOUDS:
        if env.get(f"CLOUDIR_FORENSIC_{cloud.upper()}"):
            forensic.setdefault(cloud, {})[_DEFAULT_ROLE] = env[f"CLOUDIR_FORENSIC_{cloud.upper()}"]
        if env.get(f"CLOUDIR_ROLE_{cloud.upper()}"):
            roles.setdefault(cloud, {})[_DEFAULT_ROLE] = env[f"CLOUDIR_ROLE_{cloud.upper()}"]
        if env.get(f"CLOUDIR_ACCOUNTS_{cloud.upper()}"):
            accounts[cloud] = [
                item.strip() for item in env[f"CLOUDIR_ACCOUNTS_{cloud.upper()}"].split(",") if item.strip()
            ]
    key = env.get("CLOUDIR_SIGNING_KEY") or signing.get("key")
    store, retain_days = _seals(data.get("seals", {}), env, f"{path} [seals]")
    tsa = _strings(data.get("timestamp", {}), f"{path} [timestamp]", keys=("url", "cert"))
    tsa_cert = env.get("CLOUDIR_TSA_CERT") or tsa.get("cert")
    return Config(
        path=path if path.is_file() else None,
        forensic=forensic,
        roles=roles,
        external_ids=external_ids,
        signing_key=Path(key).expanduser() if key else None,
        signing_kms=env.get("CLOUDIR_SIGNING_KMS") or signing.get("kms"),
        accounts=accounts,
        seal_store=store,
        seal_retain_days=retain_days,
        tsa_url=env.get("CLOUDIR_TSA_URL") or tsa.get("url"),
        tsa_cert=Path(tsa_cert).expanduser() if tsa_cert else None,
        notify=notify,
        azure_log_subscriptions=log_subscriptions,
        azure_log_all_subscriptions=all_subscriptions,
    )


def _azure_logs(table: object, env: Mapping[str, str], where: str) -> tuple[list[str], bool]:
    """[logs.azure]: subscriptions = [ids] or all_subscriptions = true; ``CLOUDIR_LOGS_AZURE_SUBSCRIPTIONS`` wins."""
    if not isinstance(table, dict) or set(table) - {"azure"} or not isinstance(table.get("azure", {}), dict):
        raise CloudirError(f"{where[: -len('.azure]')]}]: expected a [logs.azure] table")
    azure = table.get("azure", {})
    if set(azure) - {"subscriptions", "all_subscriptions"}:
        raise CloudirError(f"{where}: expected subscriptions = [ids] or all_subscriptions = true")
    subscriptions = azure.get("subscriptions", [])
    everything = azure.get("all_subscriptions", False)
    if not isinstance(subscriptions, list) or not all(isinstance(item, str) and item for item in subscriptions):
        raise CloudirError(f"{where}: subscriptions must be a list of subscription ids")
    if not isinstance(everything, bool) or (everything and subscriptions):
        raise CloudirError(f"{where}: give subscriptions or all_subscriptions = true, not both")
    if env.get("CLOUDIR_LOGS_AZURE_SUBSCRIPTIONS"):
        items = [item.strip() for item in env["CLOUDIR_LOGS_AZURE_SUBSCRIPTIONS"].split(",") if item.strip()]
        return ([], True) if items == ["all"] else (items, False)
    return list(subscriptions), everything


def _forensic(table: object, where: str) -> dict[str, dict[str, str]]:
    """[forensic]: per cloud one destination, or a table of source account -> destination (``default`` too)."""
    if not isinstance(table, dict):
        raise CloudirError(f"{where}: expected aws, azure or gcp = destination, or [forensic.CLOUD] tables")
    unknown = sorted(set(table) - set(CLOUDS))
    if unknown:
        raise CloudirError(f"{where}: unknown key {unknown[0]!r}", hint=f"known: {', '.join(CLOUDS)}")
    forensic: dict[str, dict[str, str]] = {}
    for cloud, value in table.items():
        if isinstance(value, dict):
            forensic[cloud] = _strings(value, f"{where[:-1]}.{cloud}]")
        elif isinstance(value, str) and value:
            forensic[cloud] = {_DEFAULT_ROLE: value}
        else:
            raise CloudirError(f"{where}: {cloud} must be a non-empty string or a table of accounts")
    return forensic


def _roles(table: object, where: str) -> tuple[dict[str, str], dict[str, str]]:
    """A [roles.CLOUD] table: account -> role, or account -> {role = ..., external_id = ...}."""
    if not isinstance(table, dict):
        raise CloudirError(f"{where}: expected a table of accounts to roles")
    roles: dict[str, str] = {}
    external_ids: dict[str, str] = {}
    for account, value in table.items():
        entry = _strings(value, f"{where} {account}", keys=("role", "external_id")) if isinstance(value, dict) else {}
        role = entry.get("role") if isinstance(value, dict) else value
        if not isinstance(role, str) or not role:
            raise CloudirError(f"{where}: {account} must be a role, or a table with role (and external_id)")
        roles[account] = role
        if entry.get("external_id"):
            external_ids[account] = entry["external_id"]
    return roles, external_ids


def _seals(table: object, env: Mapping[str, str], where: str) -> tuple[str | None, int]:
    """The [seals] table (store URL, retention in days), ``CLOUDIR_SEAL_STORE|RETAIN_DAYS`` taking precedence."""
    if not isinstance(table, dict) or set(table) - {"store", "retain_days"}:
        raise CloudirError(f"{where}: expected store = URL and retain_days = N")
    store = env.get("CLOUDIR_SEAL_STORE") or table.get("store")
    days: object = env.get("CLOUDIR_SEAL_RETAIN_DAYS") or table.get("retain_days", DEFAULT_SEAL_RETAIN_DAYS)
    if store is not None and (not isinstance(store, str) or not store):
        raise CloudirError(f"{where}: store must be a URL such as s3://bucket/prefix")
    try:
        retain_days = int(days) if isinstance(days, int | str) and not isinstance(days, bool) else 0
    except ValueError:
        retain_days = 0
    if retain_days < 1:
        raise CloudirError(f"{where}: retain_days must be a whole number of days, at least 1")
    return store or None, retain_days


def _account_lists(table: object, where: str) -> dict[str, list[str]]:
    """The [accounts] table: per cloud, a list of account / subscription / project ids."""
    if not isinstance(table, dict) or set(table) - set(CLOUDS):
        raise CloudirError(f"{where}: expected aws, azure or gcp = [ids]")
    for cloud, ids in table.items():
        if not isinstance(ids, list) or not all(isinstance(item, str) and item for item in ids):
            raise CloudirError(f"{where}: {cloud} must be a list of non-empty strings")
    return {cloud: list(ids) for cloud, ids in table.items()}


def _strings(table: object, where: str, *, keys: tuple[str, ...] | None = None) -> dict[str, str]:
    """A TOML table of string values, optionally restricted to ``keys``."""
    if not isinstance(table, dict):
        raise CloudirError(f"{where}: expected a table of names to strings")
    for key, value in table.items():
        if keys is not None and key not in keys:
            raise CloudirError(f"{where}: unknown key {key!r}", hint=f"known: {', '.join(keys)}")
        if not isinstance(value, str) or not value:
            raise CloudirError(f"{where}: {key} must be a non-empty string")
    return dict(table)
