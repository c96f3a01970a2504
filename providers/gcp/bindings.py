"""Remove the project IAM bindings an attacker added for or by a service account, after saving the whole policy.

Which bindings: those named (``ROLE=MEMBER``, from every binding of the role, conditional or not), and with a
start time those the Admin Activity audit log shows added since then by a ``SetIamPolicy`` the account made or
that granted the account (``protoPayload.serviceData.policyDelta.bindingDeltas`` with ``action: ADD``; a
conditional grant matches only the binding with the same condition). The policy is read at version 3, so
conditional bindings are seen and written back as they are, and written with its ``etag``: a policy changed
in between is refused (409 ``ABORTED``), read again and retried. Every audit page and every policy read is
stored as received before anything is parsed from it; the undo is one ``gcloud projects
add-iam-policy-binding`` per removed member.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc

from cloudir.errors import CloudirError
from cloudir.plan import Step, StepContext, StepKind
from cloudir.provider import Target
from cloudir.safepath import path_part
from providers.gcp.logs import quote, utc_time
from providers.gcp.permissions import call
from providers.gcp.session import RESOURCE_MANAGER_ENDPOINT, GcpApi, gcp_errors

ATTEMPTS = 3  # read-modify-write rounds before a policy that keeps changing is given up on
_ACTIVITY_LOG = "cloudaudit.googleapis.com%2Factivity"


@dataclass(frozen=True)
class Grant:
    """One member in one role; ``condition`` None is the unconditional binding, ``any_condition`` every binding."""

    role: str
    member: str
    condition: dict[str, Any] | None = None
    any_condition: bool = False

    def matches(self, binding: dict[str, Any]) -> bool:
        """Whether ``binding`` holds this grant."""
        if binding.get("role") != self.role or self.member not in binding.get("members", []):
            return False
        return self.any_condition or _expression(binding.get("condition")) == _expression(self.condition)


def named_grant(text: str) -> Grant:
    """``ROLE=MEMBER`` as given on the command line (``roles/owner=user:x@example.com``)."""
    role, _, member = text.partition("=")
    if not role.startswith(("roles/", "projects/", "organizations/")) or ":" not in member:
        raise CloudirError(f"{text!r} is not ROLE=MEMBER", hint="e.g. roles/owner=user:backdoor@example.com")
    return Grant(role, member, any_condition=True)


def audit_filter(project: str, since: str) -> str:
    """The Logging query for the project's SetIamPolicy calls since ``since`` (Admin Activity audit log)."""
    return " AND ".join(
        (
            f"logName={quote(f'projects/{project}/logs/{_ACTIVITY_LOG}')}",
            'protoPayload.methodName="SetIamPolicy"',
            f"timestamp>={quote(since)}",
        )
    )


def remove_step(api: GcpApi, target: Target, since: str | None, named: list[str]) -> Step:
    """The containment step removing the chosen bindings from the project of ``target`` (a service account)."""
    email, project = target.id, target.account
    grants = [named_grant(text) for text in named]
    since = utc_time(since, "--remove-bindings-since") if since else None
    parts = [f"added by or for it since {since}" if since else "", f"named ({len(grants)})" if grants else ""]
    scope = " or ".join(part for part in parts if part)
    calls = [call("logging", "entries.list", None, filter=audit_filter(project, since))] if since else []
    calls += [
        call("cloudresourcemanager", "projects.getIamPolicy", None, resource=f"projects/{project}", version=3),
        call("cloudresourcemanager", "projects.setIamPolicy", None, resource=f"projects/{project}", etag="<read>"),
    ]

    def run(ctx: StepContext) -> dict[str, Any]:
        folder = f"artifacts/gcp/service-accounts/{path_part(email)}/containment"
        chosen = list(grants)
        if since:
            chosen += _added_in_window(ctx, api, (project, email, since), folder)
        return _remove(ctx, api, project, chosen, folder)

    return Step(
        "contain.remove-iam-bindings",
        f"Remove the project {project} IAM bindings {scope} (the whole policy saved first)",
        StepKind.CONTAIN,
        calls,
        run,
    )


def _added_in_window(ctx: StepContext, api: GcpApi, what: tuple[str, str, str], folder: str) -> list[Grant]:
    project, email, since = what
    member = f"serviceAccount:{email}"
    body: dict[str, Any] = {"resourceNames": [f"projects/{project}"], "filter": audit_filter(project, since)}
    grants: list[Grant] = []
    number = len(list((ctx.case.root / folder).glob("iam-changes-*.json")))
    while True:
        number += 1
        pages: list[bytes] = []
        with (
            gcp_errors(f"read the SetIamPolicy audit entries of {project}", "logging.logEntries.list"),
            api.raw_bodies(pages.append),
        ):
            response = api.logging().logging_api.api_request(method="POST", path="/entries:list", data=body)
        ctx.case.write_bytes(f"{folder}/iam-changes-{number:05d}.json", pages[-1])
        for entry in response.get("entries", []):
            payload = entry.get("protoPayload") or {}
            actor = (payload.get("authenticationInfo") or {}).get("principalEmail")
            deltas = ((payload.get("serviceData") or {}).get("policyDelta") or {}).get("bindingDeltas") or []
            grants += [
                Grant(str(delta.get("role")), str(delta.get("member")), delta.get("condition"))
                for delta in deltas
                if delta.get("action") == "ADD" and (actor == email or delta.get("member") == member)
            ]
        if not response.get("nextPageToken"):
            return grants
        body["pageToken"] = response["nextPageToken"]


def _remove(ctx: StepContext, api: GcpApi, project: str, chosen: list[Grant], folder: str) -> dict[str, Any]:
    saved: list[str] = []
    for _ in range(ATTEMPTS):
        with gcp_errors(f"read the IAM policy of {project}", "resourcemanager.projects.getIamPolicy"):
            raw = api.rest("POST", f"projects/{project}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}},
                           endpoint=RESOURCE_MANAGER_ENDPOINT)  # fmt: skip
        number = len(list((ctx.case.root / folder).glob("project-iam-policy-before-*.json"))) + 1
        saved.append(ctx.case.write_bytes(f"{folder}/project-iam-policy-before-{number:02d}.json", raw).path)
        policy = json.loads(raw)
        kept, removed = _without(policy.get("bindings") or [], chosen)
        if not removed:
            return {"removed": [], "saved": saved, "undo": []}
        with gcp_errors(f"write the IAM policy of {project}", "resourcemanager.projects.setIamPolicy"):
            try:
                api.rest("POST", f"projects/{project}:setIamPolicy", {"policy": {**policy, "version": 3,
                         "bindings": kept}}, endpoint=RESOURCE_MANAGER_ENDPOINT)  # fmt: skip
            except gexc.Conflict:  # 409 ABORTED: the policy changed since it was read; read it again
                continue
        return {"removed": removed, "saved": saved, "undo": [_undo(project, each) for each in removed]}
    raise CloudirError(
        f"the IAM policy of {project} changed during each of {ATTEMPTS} attempts to remove the bindings",
        hint="someone is changing it now: find out who, then re-run with --resume",
    )


def _without(bindings: list[dict[str, Any]], chosen: list[Grant]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The bindings without the chosen members (a binding left empty dropped), and what was removed."""
    kept: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    for binding in bindings:
        gone = [m for m in binding.get("members", []) if any(g.matches(binding) and g.member == m for g in chosen)]
        removed += [{"role": binding["role"], "member": m, "condition": binding.get("condition")} for m in gone]
        members = [m for m in binding.get("members", []) if m not in gone]
        if members:
            kept.append({**binding, "members": members})
    return kept, removed


def _expression(condition: dict[str, Any] | None) -> str | None:
    return None if condition is None else str(condition.get("expression"))


def _undo(project: str, removed: dict[str, Any]) -> str:
    condition = removed["condition"]
    text = "None" if condition is None else f"^;^expression={condition['expression']};title={condition.get('title')}"
    args = ["gcloud", "projects", "add-iam-policy-binding", project, f"--member={removed['member']}",
            f"--role={removed['role']}", f"--condition={text}"]  # fmt: skip
    return shlex.join(args)
