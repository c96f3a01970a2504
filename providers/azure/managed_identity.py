"""Detach a managed identity from the VMs that carry it (the containment of an identity Entra cannot disable).

Entra names the resource behind a managed identity's service principal in ``alternativeNames``
(``isExplicit=False`` and the resource id for a system-assigned identity; ``isExplicit=True`` and the
``Microsoft.ManagedIdentity/userAssignedIdentities`` id for a user-assigned one). A system-assigned identity is
removed from its VM; a user-assigned one from every VM of the subscription that carries it. Each VM is saved
as read before its ``identity`` block is patched (Compute ``VirtualMachineIdentity``: ``type`` narrowed, or a
user-assigned id set to ``null``), and the ``az`` command that assigns the identity again is recorded as undo.
Other resource types that can carry an identity (App Service, Functions, scale sets, AKS) are not detached.
"""

from __future__ import annotations

import shlex
from functools import partial
from typing import TYPE_CHECKING, Any

from cloudir.plan import Step, StepContext, StepKind
from cloudir.provider import Target
from cloudir.safepath import path_part
from providers.azure import calls
from providers.azure.session import azure_errors

if TYPE_CHECKING:
    from providers.azure.provider import AzureProvider

SYSTEM_ASSIGNED, USER_ASSIGNED = "SystemAssigned", "UserAssigned"
_VM_TYPE = "/providers/microsoft.compute/virtualmachines/"


def identity_details(service_principal: dict[str, Any]) -> dict[str, Any]:
    """Whether a managed identity is user-assigned, and its resource id, from its service principal."""
    names = [str(name) for name in service_principal.get("alternativeNames") or []]
    resource = next((name for name in names if name.startswith("/subscriptions/")), None)
    return {"user_assigned": "isExplicit=True" in names, "identity_resource": resource}


def detach_steps(provider: AzureProvider, target: Target) -> tuple[list[Step], list[str]]:
    """The detach step for a managed identity target (or, unresolved, the step it would be), and plan notes."""
    if target.symbolic:
        return [_step(provider, target, "if a managed identity: Detach it from the VMs that carry it")], []
    resource = str(target.details.get("identity_resource") or "")
    if target.details.get("user_assigned"):
        title = f"Detach user-assigned identity {resource.rsplit('/', 1)[-1]} from every VM of {target.account}"
        note = "a user-assigned identity is detached from VMs only: check App Service, Functions, scale sets and AKS"
        return [_step(provider, target, title)], [note]
    if _VM_TYPE not in resource.lower():
        refusal = (
            f"the system-assigned identity of {resource or 'an unknown resource'} is not detached: cloudir detaches "
            "identities from VMs only; turn it off on that resource (its role assignments can still be removed)"
        )
        return [], [refusal]
    title = f"Remove the system-assigned identity from VM {resource.rsplit('/', 1)[-1]} (Azure deletes its principal)"
    note = (
        "a system-assigned identity assigned again is a new principal: grant again the role assignments saved in "
        "role-assignments-00001.json"
    )
    return [_step(provider, target, title)], [note]


def _step(provider: AzureProvider, target: Target, title: str) -> Step:
    change = "identity.userAssignedIdentities[<id>]=null or identity.type narrowed"
    return Step(
        "contain-detach-managed-identity",
        f"{title} (each VM saved first)",
        StepKind.CONTAIN,
        [
            calls.call("vm.read", None, scope=f"/subscriptions/{target.account}"),
            calls.call("vm.write", None, change=change),
            calls.call("compute.poll", None),
        ],
        partial(_detach, provider=provider, target=target),
    )


def _detach(ctx: StepContext, *, provider: AzureProvider, target: Target) -> dict[str, Any]:
    from providers.azure.provider import as_json, id_parts  # the provider imports this module

    compute = provider.session.client("compute", target.account)
    resource = str(target.details["identity_resource"])
    user_assigned = bool(target.details["user_assigned"])
    with azure_errors(f"find the VMs carrying {resource}", calls.permission("vm.read")):
        if user_assigned:
            vms = [vm for vm in map(as_json, compute.virtual_machines.list_all()) if _carries(vm, resource)]
        else:
            _, group, name = id_parts(resource)
            vms = [as_json(compute.virtual_machines.get(group, name))]
    detached, saved, undo = [], [], []
    for vm in vms:
        body = _patch(vm.get("identity") or {}, resource if user_assigned else None)
        if body is None:  # already without it (a re-run after the change)
            continue
        _, group, name = id_parts(vm["id"])
        before = f"artifacts/azure/principals/{path_part(target.id)}/containment/vm-{path_part(name)}-before.json"
        if not (ctx.case.root / before).is_file():  # a re-run keeps the state saved before the first change
            ctx.case.write_json(before, vm)
        with azure_errors(f"detach {resource} from {vm['id']}", calls.permission("vm.write")):
            compute.virtual_machines.begin_update(group, name, body, polling=provider.session.polling()).result()
        detached.append(vm["id"])
        saved.append(before)
        assign = ["az", "vm", "identity", "assign", "--resource-group", group, "--name", name]
        undo.append(shlex.join([*assign, "--identities", resource] if user_assigned else assign))
    return {"detached_from": detached, "saved": saved, "undo": undo}


def _carries(vm: dict[str, Any], resource: str) -> bool:
    assigned = (vm.get("identity") or {}).get("userAssignedIdentities") or {}
    return resource.lower() in {key.lower() for key in assigned}


def _patch(identity: dict[str, Any], user_assigned: str | None) -> dict[str, Any] | None:
    """The PATCH body removing one user-assigned identity (or, with None, the system-assigned one); None if absent."""
    kind = str(identity.get("type") or "None")
    has_system = kind.startswith(SYSTEM_ASSIGNED)
    if user_assigned is None:
        if not has_system:
            return None
        return {"identity": {"type": USER_ASSIGNED if USER_ASSIGNED in kind else "None"}}
    others = [key for key in identity.get("userAssignedIdentities") or {} if key.lower() != user_assigned.lower()]
    if len(others) == len(identity.get("userAssignedIdentities") or {}):
        return None
    if others:  # a JSON merge patch: null removes this one and keeps the others
        key = next(k for k in identity["userAssignedIdentities"] if k.lower() == user_assigned.lower())
        return {"identity": {"type": kind, "userAssignedIdentities": {key: None}}}
    return {"identity": {"type": SYSTEM_ASSIGNED if has_system else "None"}}
