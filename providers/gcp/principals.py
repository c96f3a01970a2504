"""Service accounts as targets: resolve, capture the IAM state as evidence, then disable keys and the account,
and remove the project IAM bindings added for or by it (:mod:`providers.gcp.bindings`).

The IAM v1 and Resource Manager v1 REST APIs are called through :meth:`GcpApi.rest` (no client library
for them is installed); every response body is stored as received before anything is parsed from it.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from cloudir.errors import CapabilityNotSupportedError, CloudirError
from cloudir.plan import Plan, Step, StepContext, StepKind, offline_plan
from cloudir.provider import ContainOptions, Target, TargetKind, TargetQuery
from cloudir.safepath import path_part
from providers.gcp import bindings
from providers.gcp.permissions import call
from providers.gcp.session import RESOURCE_MANAGER_ENDPOINT, GcpApi, gcp_errors

_EMAIL = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]@[a-z0-9.-]+\.gserviceaccount\.com$")


def service_account_email(value: str) -> str:
    """A service account's email, named as EMAIL, ``serviceAccount:EMAIL`` or ``projects/P/serviceAccounts/EMAIL``."""
    email = value.strip().removeprefix("serviceAccount:").rsplit("/serviceAccounts/", 1)[-1]
    if _EMAIL.match(email):
        return email
    if value.strip().startswith(("user:", "group:", "domain:")) or "@" in email:
        raise CapabilityNotSupportedError(
            f"the gcp provider contains service accounts only, not {value!r}",
            hint="suspend a Google Workspace / Cloud Identity user from the Admin console",
        )
    raise CloudirError(f"{value!r} is not a service account email", hint="pass NAME@PROJECT.iam.gserviceaccount.com")


def find_service_account(api: GcpApi, query: TargetQuery) -> Target:
    """Resolve a service account (read-only: serviceAccounts.get)."""
    email = service_account_email(query.value)
    with gcp_errors(f"look up service account {email}", "iam.serviceAccounts.get"):
        account = json.loads(api.rest("GET", f"projects/-/serviceAccounts/{email}"))
    details = {
        "principal_type": "service_account",
        "unique_id": account.get("uniqueId"),
        "disabled": bool(account.get("disabled")),
        "matched_by": query.value,
    }
    return Target("gcp", TargetKind.PRINCIPAL, email, "global", str(account.get("projectId")), email, details)


def _folder(email: str) -> str:
    return f"artifacts/gcp/service-accounts/{path_part(email)}"


def plan_acquire_service_account(api: GcpApi, target: Target) -> Plan:
    """Capture the account, its keys and the project IAM policy (the account's role bindings) as raw evidence."""
    email, project = target.id, target.account

    def run(ctx: StepContext) -> dict[str, Any]:
        folder = _folder(email)
        with gcp_errors(f"capture service account {email}", "iam.serviceAccounts.get"):
            account = api.rest("GET", f"projects/-/serviceAccounts/{email}")
            keys = api.rest("GET", f"projects/-/serviceAccounts/{email}/keys")
            policy = api.rest(
                "POST",
                f"projects/{project}:getIamPolicy",
                {"options": {"requestedPolicyVersion": 3}},
                endpoint=RESOURCE_MANAGER_ENDPOINT,
            )
        artifacts = [
            ctx.case.write_bytes(f"{folder}/account.json", account).path,
            ctx.case.write_bytes(f"{folder}/keys.json", keys).path,
            ctx.case.write_bytes(f"{folder}/project-iam-policy.json", policy).path,
        ]
        member = f"serviceAccount:{email}"
        roles = [b["role"] for b in json.loads(policy).get("bindings", []) if member in b.get("members", [])]
        key_names = [k["name"] for k in json.loads(keys).get("keys", [])]
        return {"artifacts": artifacts, "keys": key_names, "project_roles": roles}

    step = Step(
        "capture.service-account",
        f"Capture service account {email}: the account, its keys, its roles in project {project}",
        StepKind.READ,
        [
            call("iam", "serviceAccounts.get", None, name=f"projects/-/serviceAccounts/{email}"),
            call("iam", "serviceAccounts.keys.list", None, name=f"projects/-/serviceAccounts/{email}"),
            call("cloudresourcemanager", "projects.getIamPolicy", None, resource=f"projects/{project}"),
        ],
        run,
    )
    plan = Plan("acquire", "gcp", target.ref, [step])
    return offline_plan(plan) if target.symbolic else plan


def plan_contain_service_account(api: GcpApi, target: Target, options: ContainOptions) -> Plan:
    """Disable every user-managed key, then the account itself, then (with a start time or named bindings) remove
    the project IAM bindings added for or by it; each step records how to undo it."""
    email = target.id

    def disable_keys(ctx: StepContext) -> dict[str, Any]:
        with gcp_errors(f"disable the keys of {email}", "iam.serviceAccountKeys.disable"):
            keys = json.loads(api.rest("GET", f"projects/-/serviceAccounts/{email}/keys?keyTypes=USER_MANAGED"))
            active = [k["name"] for k in keys.get("keys", []) if not k.get("disabled")]
            for name in active:
                api.rest("POST", f"{name}:disable", {})
        undo = [
            _gcloud("iam", "service-accounts", "keys", "enable", n.rsplit("/", 1)[-1], f"--iam-account={email}")
            for n in active
        ]
        return {"disabled_keys": active, "undo": undo}

    def disable_account(ctx: StepContext) -> dict[str, Any]:
        with gcp_errors(f"disable service account {email}", "iam.serviceAccounts.disable"):
            api.rest("POST", f"projects/-/serviceAccounts/{email}:disable", {})
        return {"disabled": email, "undo": [_gcloud("iam", "service-accounts", "enable", email)]}

    steps = [
        Step(
            "contain.disable-keys",
            f"Disable every user-managed key of {email}",
            StepKind.CONTAIN,
            [
                call("iam", "serviceAccounts.keys.list", None, name=email, keyTypes="USER_MANAGED"),
                call("iam", "serviceAccounts.keys.disable", None, name="<each enabled user-managed key>"),
            ],
            disable_keys,
        ),
        Step(
            "contain.disable-account",
            f"Disable service account {email} (its tokens stop working; workloads using it fail)",
            StepKind.CONTAIN,
            [call("iam", "serviceAccounts.disable", None, name=f"projects/-/serviceAccounts/{email}")],
            disable_account,
        ),
    ]
    named = [str(item) for item in options.extra.get("iam_bindings") or []]
    if options.window_start or named:
        steps.append(bindings.remove_step(api, target, options.window_start, named))
        notes = ["bindings are removed from the project's own IAM policy only (not buckets, folders or others)"]
    else:
        kept = (
            "IAM bindings are kept: name them (--remove-binding ROLE=MEMBER) or a start time "
            "(--remove-bindings-since) to remove those added by or for the account since then"
        )
        notes = [kept]
    notes.append("access tokens issued before may stay valid until they expire (1 hour by default)")
    plan = Plan("contain", "gcp", target.ref, steps, notes)
    return offline_plan(plan) if target.symbolic else plan


def _gcloud(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in ("gcloud", *args))
