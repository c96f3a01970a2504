"""Entra principals as targets: a user, a service principal (or its app registration), a managed identity.

Acquisition captures the principal's IAM state before anything changes, every response body stored as
received: from Microsoft Graph the object, its group and directory-role memberships, its app role grants, and
a user's authentication methods or a service principal's credentials and owners; from ARM every role
assignment of the subscription (the principal's own, and those it created). Containment revokes a user's
sessions and disables the account, disables a service principal, and removes the role assignments created
in the incident window by or for the principal (or named), each saved first with how to re-create it.
A managed identity cannot be disabled in Entra: it is captured, detached from the VMs that carry it
(:mod:`providers.azure.managed_identity`), and its assignments can be removed.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest

from cloudir.coverage import parse_utc
from cloudir.errors import CapabilityNotSupportedError, CloudirError, TargetNotFoundError
from cloudir.plan import Plan, Step, StepContext, StepKind, offline_plan
from cloudir.provider import ContainOptions, Target, TargetKind, TargetQuery
from cloudir.safepath import path_part
from providers.azure import calls, managed_identity
from providers.azure.entra import OBJECT_ID, check_same_endpoint
from providers.azure.session import describe_error

if TYPE_CHECKING:
    from azure.core import PipelineClient

    from providers.azure.provider import AzureProvider

ROLE_API_VERSION = "2022-04-01"
USER_SELECT = (
    "id,userPrincipalName,displayName,mail,userType,accountEnabled,createdDateTime,lastPasswordChangeDateTime,"
    "signInSessionsValidFromDateTime,signInActivity,onPremisesSyncEnabled,identities"
)
USER, SERVICE_PRINCIPAL, MANAGED_IDENTITY = "user", "service_principal", "managed_identity"
_UPN = re.compile(r"^[^\s/\\?#'\"]+@[^\s/\\?#'\"@]+$")
_RELATIONS = {
    USER: (("user.memberof", "memberOf"), ("user.approles", "appRoleAssignments"),
           ("user.methods", "authentication/methods")),
    SERVICE_PRINCIPAL: (("sp.owners", "owners"), ("sp.memberof", "memberOf"), ("sp.approles", "appRoleAssignments")),
}  # fmt: skip


def looks_like_principal(value: str) -> bool:
    """A user principal name (``name@domain``): what ``--target`` treats as a principal without ``--principal``."""
    return bool(_UPN.match(value.strip()))


def find_principal(provider: AzureProvider, query: TargetQuery) -> Target:
    """Resolve a user (UPN or object id), a service principal (object id or appId), an app registration or a
    managed identity (read-only)."""
    value = query.value.strip()
    client, graph = provider.session.graph_client(), f"{provider.session.graph_url}/v1.0"
    if _UPN.match(value):
        obj = {"@odata.type": "#microsoft.graph.user", **_json(client, f"{graph}/users/{quote(value)}", "user.read")}
    elif OBJECT_ID.match(value):
        obj = _by_object_id(client, graph, value)
    else:
        raise CloudirError(
            f"{value!r} is not an Entra principal",
            hint="give a user principal name (jdoe@contoso.example) or an object id / appId (a GUID)",
        )
    kind = obj.get("@odata.type")
    if kind == "#microsoft.graph.user":
        principal_type, name = USER, obj.get("userPrincipalName")
    elif kind == "#microsoft.graph.servicePrincipal":
        managed = obj.get("servicePrincipalType") == "ManagedIdentity"
        principal_type, name = (MANAGED_IDENTITY if managed else SERVICE_PRINCIPAL), obj.get("displayName")
    else:
        raise CapabilityNotSupportedError(
            f"{value} is a {str(kind).removeprefix('#microsoft.graph.')}, not a user or service principal",
            hint="target the users or service principals it holds",
        )
    details: dict[str, Any] = {
        "principal_type": principal_type,
        "app_id": obj.get("appId"),
        "matched_by": value,
        "tags": {},
    }
    if principal_type == MANAGED_IDENTITY:
        details |= managed_identity.identity_details(obj)
    return Target("azure", TargetKind.PRINCIPAL, str(obj["id"]), "global", provider.subscription_id, name, details)


def _by_object_id(client: PipelineClient[Any, Any], graph: str, value: str) -> dict[str, Any]:
    try:
        obj = _json(client, f"{graph}/directoryObjects/{value}", "object.read")
    except TargetNotFoundError:  # not an object id: maybe the appId of a service principal
        obj = {"@odata.type": "#microsoft.graph.servicePrincipal"}
        obj |= _json(client, f"{graph}/servicePrincipals(appId='{value}')", "sp_by_app.read")
    if obj.get("@odata.type") == "#microsoft.graph.application":  # an app registration: its service principal
        app_id = quote(str(obj.get("appId")), safe="")
        obj = {"@odata.type": "#microsoft.graph.servicePrincipal"}
        obj |= _json(client, f"{graph}/servicePrincipals(appId='{app_id}')", "sp_by_app.read")
    return obj


def _json(client: PipelineClient[Any, Any], url: str, key: str) -> dict[str, Any]:
    data = json.loads(_send(client, "GET", url, key))
    if not isinstance(data, dict):
        raise CloudirError(f"Microsoft Graph answered {url} with a {type(data).__name__}, not an object")
    return data


def _send(client: PipelineClient[Any, Any], method: str, url: str, key: str, body: Any = None) -> bytes:
    """One Graph or ARM call to an absolute URL; failures become one-line errors naming the permission to grant."""
    permission = calls.graph_permission(key) if key in calls.GRAPH_CALLS else calls.permission(key)
    request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
    try:
        response = client.send_request(request)
        response.raise_for_status()
    except AzureError as exc:
        raise describe_error(exc, f"{method} {url.split('?', maxsplit=1)[0]}", permission) from None
    return bytes(response.read())


def _folder(target: Target) -> str:
    return f"artifacts/azure/principals/{path_part(target.id)}"


def store_pages(ctx: StepContext, client: PipelineClient[Any, Any], url: str, key: str, path: str) -> list[Any]:
    """Every page of a collection stored as received (``<path>-00001.json``...); the records of all pages.

    A ``nextLink`` to another endpoint than the first page's is refused (it would carry the token)."""
    records: list[Any] = []
    number = 0
    next_url: str | None = url
    while next_url:
        check_same_endpoint(next_url, url)
        number += 1
        body = _send(client, "GET", next_url, key)
        ctx.case.write_bytes(f"{path}-{number:05d}.json", body)
        page = json.loads(body)
        records += page.get("value", []) if isinstance(page, dict) else []
        next_url = (page.get("@odata.nextLink") or page.get("nextLink")) if isinstance(page, dict) else None
    return records


def _assignments_url(provider: AzureProvider, subscription: str) -> str:
    scope = f"{provider.session.base_url}/subscriptions/{quote(subscription)}"
    return f"{scope}/providers/Microsoft.Authorization/roleAssignments?api-version={ROLE_API_VERSION}"


# -- acquisition ----------------------------------------------------------------------------------------------
def plan_acquire(provider: AzureProvider, target: Target) -> Plan:
    """Capture the principal in Graph and the subscription's role assignments, before any change."""
    target = _in_subscription(provider, target)
    kinds = [target.details["principal_type"]] if not target.symbolic else [USER, SERVICE_PRINCIPAL]
    steps = [_capture_step(provider, target, kind) for kind in kinds]
    steps.append(
        Step(
            "capture-role-assignments",
            f"Capture every role assignment of subscription {target.account} (the principal's, and those it made)",
            StepKind.READ,
            [calls.call("role_assignment.read", None, scope=f"/subscriptions/{target.account}")],
            partial(_capture_assignments, provider=provider, target=target),
        )
    )
    notes = [
        "Graph calls need Entra application permissions granted to the responder: "
        + ", ".join(calls.graph_permissions())
    ]
    plan = Plan("acquire", "azure", target.ref, steps, notes)
    return offline_plan(plan) if target.symbolic else plan


def _in_subscription(provider: AzureProvider, target: Target) -> Target:
    """An unresolved principal is planned in the subscription the provider was given (``--subscription``)."""
    return replace(target, account=provider.subscription_id) if target.symbolic else target


def _capture_step(provider: AzureProvider, target: Target, kind: str) -> Step:
    graph_kind = USER if kind == USER else SERVICE_PRINCIPAL
    read = calls.graph_call("user.read", select=USER_SELECT) if graph_kind == USER else calls.graph_call("sp.read")
    relations = [calls.graph_call(key) for key, _ in _RELATIONS[graph_kind]]
    what = (
        "the user, its groups and roles, app role grants, authentication methods and sign-in activity"
        if graph_kind == USER
        else "the service principal with its key and password credentials, owners, groups and app role grants"
    )
    condition = {USER: "if a user: ", SERVICE_PRINCIPAL: "if a service principal or managed identity: "}
    return Step(
        f"capture-{graph_kind.replace('_', '-')}",
        f"{condition[graph_kind] if target.symbolic else ''}Capture {what} ({target.name or target.id})",
        StepKind.READ,
        [read, *relations],
        partial(_capture_entra, provider=provider, target=target, kind=graph_kind),
    )


def _capture_entra(ctx: StepContext, *, provider: AzureProvider, target: Target, kind: str) -> dict[str, Any]:
    client = provider.session.graph_client()
    folder = _folder(target)
    collection = "users" if kind == USER else "servicePrincipals"
    base = f"{provider.session.graph_url}/v1.0/{collection}/{quote(target.id)}"
    select = f"?$select={USER_SELECT}" if kind == USER else ""
    body = _send(client, "GET", f"{base}{select}", "user.read" if kind == USER else "sp.read")
    artifacts = [ctx.case.write_bytes(f"{folder}/{collection[:-1]}.json", body).path]
    obj = json.loads(body)
    counts: dict[str, int] = {}
    for key, relation in _RELATIONS[kind]:
        name = relation.replace("/", "-")
        counts[name] = len(store_pages(ctx, client, f"{base}/{relation}", key, f"{folder}/{name}"))
        artifacts.append(f"{folder}/{name}-00001.json")
    result: dict[str, Any] = {"artifacts": artifacts, "account_enabled": obj.get("accountEnabled"), **counts}
    if kind == SERVICE_PRINCIPAL:
        result["credentials"] = len(obj.get("keyCredentials") or []) + len(obj.get("passwordCredentials") or [])
    return result


def _capture_assignments(ctx: StepContext, *, provider: AzureProvider, target: Target) -> dict[str, Any]:
    path = f"{_folder(target)}/role-assignments"
    client = provider.session.arm_client()
    assignments = store_pages(ctx, client, _assignments_url(provider, target.account), "role_assignment.read", path)
    own = [a["id"] for a in assignments if _of(a, "principalId") == target.id.lower()]
    made = [a["id"] for a in assignments if _of(a, "createdBy") == target.id.lower()]
    return {"artifacts": [f"{path}-00001.json"], "assignments": len(assignments), "own": own, "created_by_it": made}


def _of(assignment: dict[str, Any], name: str) -> str:
    return str((assignment.get("properties") or {}).get(name) or "").lower()


# -- containment ------------------------------------------------------------------------------------------------
def plan_contain(provider: AzureProvider, target: Target, options: ContainOptions) -> Plan:
    """Revoke and disable (user), disable (service principal), then remove the window's role assignments."""
    target = _in_subscription(provider, target)
    kind = "<unknown>" if target.symbolic else target.details["principal_type"]
    steps: list[Step] = []
    notes: list[str] = []
    if kind in {USER, "<unknown>"}:
        steps += _user_steps(provider, target)
    if kind in {SERVICE_PRINCIPAL, "<unknown>"}:
        steps.append(_disable_step(provider, target, "servicePrincipals", "sp"))
    if kind in {MANAGED_IDENTITY, "<unknown>"}:
        detach, detach_notes = managed_identity.detach_steps(provider, target)
        steps += detach
        notes += detach_notes
    since = options.window_start
    named = [str(item).lower() for item in options.extra.get("role_assignments") or []]
    if since or named:
        steps.append(_remove_assignments_step(provider, target, since, named))
    else:
        notes.append(
            "role assignments are kept: name them (--remove-assignment) or a start time "
            "(--remove-assignments-since) to remove those created for or by the principal since then"
        )
    notes.append("access tokens already issued stay valid until they expire (about an hour, or longer under CAE)")
    plan = Plan("contain", "azure", target.ref, steps, notes)
    return offline_plan(plan) if target.symbolic else plan


def _user_steps(provider: AzureProvider, target: Target) -> list[Step]:
    def revoke(ctx: StepContext) -> dict[str, Any]:
        url = f"{provider.session.graph_url}/v1.0/users/{quote(target.id)}/revokeSignInSessions"
        _send(provider.session.graph_client(), "POST", url, "user.revoke", {})
        return {"revoked": target.id, "undo": ["nothing to undo: the user signs in again once enabled"]}

    condition = "if a user: " if target.symbolic else ""
    return [
        Step(
            "contain-revoke-sessions",
            f"{condition}Revoke every sign-in session and refresh token of {target.name or target.id}",
            StepKind.CONTAIN,
            [calls.graph_call("user.revoke")],
            revoke,
        ),
        _disable_step(provider, target, "users", "user"),
    ]


def _disable_step(provider: AzureProvider, target: Target, collection: str, prefix: str) -> Step:
    def disable(ctx: StepContext) -> dict[str, Any]:
        client = provider.session.graph_client()
        url = f"{provider.session.graph_url}/v1.0/{collection}/{quote(target.id)}"
        select = "?$select=id,accountEnabled" if collection == "users" else ""
        before = _json(client, f"{url}{select}", f"{prefix}.read").get("accountEnabled")
        _send(client, "PATCH", url, f"{prefix}.write", {"accountEnabled": False})
        undo = _az_rest(url, {"accountEnabled": True})
        return {"disabled": target.id, "was_enabled": before, "undo": [undo] if before else []}

    what = "user" if collection == "users" else "service principal"
    condition = {"users": "if a user: ", "servicePrincipals": "if a service principal: "}[collection]
    return Step(
        f"contain-disable-{what.replace(' ', '-')}",
        f"{condition if target.symbolic else ''}Disable the {what} {target.name or target.id} (accountEnabled=false)",
        StepKind.CONTAIN,
        [calls.graph_call(f"{prefix}.read"), calls.graph_call(f"{prefix}.write", accountEnabled=False)],
        disable,
    )


def _remove_assignments_step(provider: AzureProvider, target: Target, since: str | None, named: list[str]) -> Step:
    window = parse_utc(since) if since else None

    def remove(ctx: StepContext) -> dict[str, Any]:
        client = provider.session.arm_client()
        saved = f"{_folder(target)}/containment/role-assignments-removed.json"
        listing = f"{_folder(target)}/containment/role-assignments-before"
        assignments = store_pages(
            ctx, client, _assignments_url(provider, target.account), "role_assignment.read", listing
        )
        mine = {target.id.lower()}
        chosen = [
            a
            for a in assignments
            if str(a["id"]).lower() in named
            or (
                window is not None
                and (_of(a, "principalId") in mine or _of(a, "createdBy") in mine)
                and parse_utc(str(a["properties"].get("createdOn"))) >= window
            )
        ]
        unknown = sorted(set(named) - {str(a["id"]).lower() for a in assignments})
        if unknown:
            raise CloudirError(f"not a role assignment of subscription {target.account}: {', '.join(unknown)}")
        if (ctx.case.root / saved).is_file():  # a re-run keeps what the first run saved, and adds what is new
            earlier = json.loads((ctx.case.root / saved).read_text(encoding="utf-8"))
            chosen_ids = {a["id"] for a in chosen}
            ctx.case.write_json(saved, [*chosen, *(a for a in earlier if a["id"] not in chosen_ids)])
        else:
            ctx.case.write_json(saved, chosen)
        for assignment in chosen:
            _send(client, "DELETE", f"{provider.session.base_url}{assignment['id']}?api-version={ROLE_API_VERSION}",
                  "role_assignment.delete")  # fmt: skip
        return {"removed": [a["id"] for a in chosen], "saved": saved, "undo": [_recreate(a) for a in chosen]}

    scope = f"created since {since}" if since else ""
    scope = " or ".join(part for part in (scope, f"named ({len(named)})" if named else "") if part)
    return Step(
        "contain-remove-role-assignments",
        f"Remove the role assignments for or by {target.name or target.id} {scope} (each saved first)",
        StepKind.CONTAIN,
        [
            calls.call("role_assignment.read", None, scope=f"/subscriptions/{target.account}"),
            calls.call("role_assignment.delete", None, roleAssignment="<each chosen assignment>"),
        ],
        remove,
    )


def _recreate(assignment: dict[str, Any]) -> str:
    props = assignment["properties"]
    return " ".join(
        shlex.quote(str(part))
        for part in (
            "az", "role", "assignment", "create", "--assignee-object-id", props["principalId"],
            "--assignee-principal-type", props.get("principalType", "User"), "--role", props["roleDefinitionId"],
            "--scope", props["scope"],
        )
    )  # fmt: skip


def _az_rest(url: str, body: dict[str, Any]) -> str:
    return " ".join(
        shlex.quote(p) for p in ("az", "rest", "--method", "PATCH", "--url", url, "--body", json.dumps(body))
    )
