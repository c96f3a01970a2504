"""IAM principals as targets: users, roles, role sessions and access keys (AKIA… and temporary ASIA… keys).

Resolution is read-only. Acquisition captures the principal's full IAM state as evidence; containment,
gated on that acquisition, changes it step by step and records in each step's result how to undo it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cloudir.custody import utc_now
from cloudir.errors import CloudirError, TargetNotFoundError
from cloudir.plan import Plan, PlannedCall, Step, StepContext, StepFunc, StepKind, offline_plan
from cloudir.provider import ContainOptions, Target, TargetKind, TargetQuery
from cloudir.safepath import path_part
from providers.aws.calls import planned
from providers.aws.common import clean
from providers.aws.session import AwsClients, aws_errors

REVOKE_POLICY = "cloudir-revoke-older-sessions"
DENY_ALL_POLICY = "cloudir-deny-all"
_ARN = re.compile(r"^arn:aws[\w-]*:(iam|sts)::(\d{12}):(user|role|assumed-role)/(.+)$")
_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")


@dataclass(frozen=True)
class Principal:
    """An IAM user or role (with the session, for a role session), as a target names it."""

    type: str  # "user" | "role"
    name: str
    session: str | None = None


def revoke_policy(issued_before: str) -> str:
    """An inline policy denying everything to sessions issued before ``issued_before`` (ISO 8601 UTC)."""
    return _deny_all("CloudirRevokeOlderSessions", {"DateLessThan": {"aws:TokenIssueTime": issued_before}})


def _deny_all(sid: str, condition: dict[str, Any] | None = None) -> str:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Deny", "Action": "*", "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def now_iso() -> str:
    """The current time as IAM condition keys compare it (second precision, Z)."""
    return utc_now()[:19] + "Z"


# -- resolution -------------------------------------------------------------------------------------------
def parse_principal_arn(value: str) -> tuple[str, Principal] | None:
    """(account, principal) of an IAM user / role ARN or an STS assumed-role ARN; None for anything else."""
    match = _ARN.match(value)
    if match is None:
        return None
    service, account, kind, rest = match.groups()
    if kind == "assumed-role":
        if service != "sts" or "/" not in rest:
            return None
        role, session = rest.split("/", 1)
        return account, Principal("role", role, session)
    if service != "iam":
        return None
    return account, Principal(kind, rest.rsplit("/", 1)[-1])


def find_principal(clients: AwsClients, query: TargetQuery, account: str) -> Target:
    """Resolve a user / role / role-session ARN, or a bare user or role name, to its IAM principal."""
    value = query.value.strip()
    parsed = parse_principal_arn(value)
    if parsed is None:
        if not _NAME.match(value):
            raise CloudirError(
                f"{value!r} is not an IAM user or role ARN or name",
                hint="pass e.g. arn:aws:iam::123456789012:user/bob or arn:aws:sts::…:assumed-role/ROLE/SESSION",
            )
        principal = _user_or_role(clients, value)
    else:
        owner, principal = parsed
        if owner != account:
            raise CloudirError(
                f"{value} belongs to account {owner}, but the credentials are for account {account}",
                hint=f"pass --role-arn of a responder role in {owner} (or map it in the configuration)",
            )
    return _principal_target(clients, principal, account, TargetKind.PRINCIPAL, value)


def _user_or_role(clients: AwsClients, name: str) -> Principal:
    iam = clients.client("iam")
    for kind in ("user", "role"):
        try:
            with aws_errors(f"look up IAM {kind} {name}"):
                if kind == "user":
                    iam.get_user(UserName=name)
                else:
                    iam.get_role(RoleName=name)
        except TargetNotFoundError:
            continue
        return Principal(kind, name)
    raise TargetNotFoundError(f"no IAM user or role named {name!r}", hint="pass the principal's ARN")


def _principal_target(clients: AwsClients, principal: Principal, account: str, kind: TargetKind, value: str) -> Target:
    iam = clients.client("iam")
    with aws_errors(f"look up IAM {principal.type} {principal.name}"):
        if principal.type == "user":
            arn = iam.get_user(UserName=principal.name)["User"]["Arn"]
        else:
            arn = iam.get_role(RoleName=principal.name)["Role"]["Arn"]
    details: dict[str, Any] = {"matched_by": value, "principal_type": principal.type, principal.type: principal.name}
    target_id = value if kind is TargetKind.ACCESS_KEY else arn
    if principal.session:
        details["session"] = principal.session
        if kind is TargetKind.PRINCIPAL:
            target_id = f"arn:aws:sts::{account}:assumed-role/{principal.name}/{principal.session}"
    details["arn"] = arn
    return Target("aws", kind, target_id, "global", account, principal.name, details)


def find_access_key(clients: AwsClients, query: TargetQuery, account: str) -> Target:
    """The IAM user owning a long-term key (AKIA…), or the role (and session) a temporary key (ASIA…) came from."""
    key = query.value.strip()
    if key.startswith("ASIA"):
        return _trace_temporary_key(clients, key, query.location or clients.default_region, account)
    with aws_errors(f"find the owner of access key {key}"):
        try:
            owner = clients.client("iam").get_access_key_last_used(AccessKeyId=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchEntity", "AccessDenied", "InvalidClientTokenId"}:
                raise TargetNotFoundError(
                    f"access key {key} does not belong to an IAM user in account {account}",
                    hint="run with credentials of the account that owns the key (--role-arn)",
                ) from None
            raise
    user = owner.get("UserName")
    if not user or user == "root":
        raise CloudirError(f"access key {key} belongs to the root user; rotate it from the console")
    return _principal_target(clients, Principal("user", str(user)), account, TargetKind.ACCESS_KEY, key)


def _trace_temporary_key(clients: AwsClients, key: str, region: str, account: str) -> Target:
    """Find the session a temporary key belongs to from the CloudTrail events it signed (LookupEvents)."""
    with aws_errors(f"trace temporary key {key} in CloudTrail ({region})"):
        events = clients.client("cloudtrail", region).lookup_events(
            LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": key}], MaxResults=50
        )["Events"]
    for event in events:
        identity = json.loads(event.get("CloudTrailEvent") or "{}").get("userIdentity") or {}
        if identity.get("accessKeyId") != key or identity.get("accountId") != account:
            continue
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        if identity.get("type") == "AssumedRole" and issuer.get("type") == "Role" and issuer.get("userName"):
            session = str(identity.get("arn", "")).rsplit("/", 1)[-1] or None
            principal = Principal("role", str(issuer["userName"]), session)
            return _principal_target(clients, principal, account, TargetKind.ACCESS_KEY, key)
        if identity.get("type") == "IAMUser" and identity.get("userName"):
            return _principal_target(
                clients, Principal("user", str(identity["userName"])), account, TargetKind.ACCESS_KEY, key
            )
    raise TargetNotFoundError(
        f"no CloudTrail event in {region} of account {account} was signed with temporary key {key}",
        hint="pass --region where the key was used, or target its role with --principal",
    )


def principal_of(target: Target) -> Principal:
    """The IAM user or role a principal / access-key target stands for (placeholders when unresolved)."""
    kind = target.details.get("principal_type")
    if kind in {"user", "role"}:
        return Principal(str(kind), str(target.details[kind]), target.details.get("session"))
    parsed = parse_principal_arn(target.id)
    if parsed is not None:
        return parsed[1]
    if target.kind is TargetKind.ACCESS_KEY:
        if target.id.startswith("ASIA"):
            return Principal("role", f"<role whose session signed with {target.id}>")
        return Principal("user", f"<owner of {target.id}>")
    raise CloudirError(
        f"cannot plan for principal {target.id!r} offline: its type is unknown",
        hint="name it by ARN (arn:aws:iam::ACCOUNT:user/NAME or …:role/NAME)",
    )


# -- acquisition: the full IAM state as evidence ------------------------------------------------------------
def _policy_documents(iam: Any, attached: list[dict[str, Any]]) -> list[dict[str, Any]]:
    documents = []
    for policy in attached:
        meta = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]
        version = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=meta["DefaultVersionId"])
        documents.append({"Policy": meta, "Document": version["PolicyVersion"]["Document"]})
    return documents


def _login_profile(iam: Any, user: str) -> dict[str, Any] | None:
    try:
        return dict(iam.get_login_profile(UserName=user)["LoginProfile"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return None
        raise


def capture_user(iam: Any, user: str) -> dict[str, Any]:
    """Everything IAM holds about a user: keys and their last use, policies, groups and their policies, MFA, console."""
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    groups = iam.list_groups_for_user(UserName=user)["Groups"]
    group_policies = {
        g["GroupName"]: {
            "InlinePolicies": {
                name: iam.get_group_policy(GroupName=g["GroupName"], PolicyName=name)["PolicyDocument"]
                for name in iam.list_group_policies(GroupName=g["GroupName"])["PolicyNames"]
            },
            "AttachedPolicies": iam.list_attached_group_policies(GroupName=g["GroupName"])["AttachedPolicies"],
        }
        for g in groups
    }
    attached = iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    return {
        "User": iam.get_user(UserName=user)["User"],
        "AccessKeys": keys,
        "AccessKeyLastUsed": {
            k["AccessKeyId"]: clean(iam.get_access_key_last_used(AccessKeyId=k["AccessKeyId"])) for k in keys
        },
        "InlinePolicies": {
            name: iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"]
            for name in iam.list_user_policies(UserName=user)["PolicyNames"]
        },
        "AttachedPolicies": attached,
        "AttachedPolicyDocuments": _policy_documents(iam, attached),
        "Groups": groups,
        "GroupPolicies": group_policies,
        "MFADevices": iam.list_mfa_devices(UserName=user)["MFADevices"],
        "LoginProfile": _login_profile(iam, user),
        "SSHPublicKeys": iam.list_ssh_public_keys(UserName=user)["SSHPublicKeys"],
    }


def capture_role(iam: Any, role: str) -> dict[str, Any]:
    """Everything IAM holds about a role: trust policy, last use, inline and attached policies, instance profiles."""
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    return {
        "Role": iam.get_role(RoleName=role)["Role"],
        "InlinePolicies": {
            name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        },
        "AttachedPolicies": attached,
        "AttachedPolicyDocuments": _policy_documents(iam, attached),
        "InstanceProfiles": iam.list_instance_profiles_for_role(RoleName=role)["InstanceProfiles"],
    }


def _capture_calls(principal: Principal) -> list[PlannedCall]:
    if principal.type == "role":
        role = principal.name
        return [
            planned("iam", "GetRole", None, RoleName=role),
            planned("iam", "ListRolePolicies", None, RoleName=role),
            planned("iam", "GetRolePolicy", None, RoleName=role, PolicyName="<each inline policy>"),
            planned("iam", "ListAttachedRolePolicies", None, RoleName=role),
            planned("iam", "GetPolicy", None, PolicyArn="<each attached policy>"),
            planned("iam", "GetPolicyVersion", None, PolicyArn="<each attached policy>", VersionId="<default>"),
            planned("iam", "ListInstanceProfilesForRole", None, RoleName=role),
        ]
    user = principal.name
    return [
        planned("iam", "ListAccessKeys", None, UserName=user),
        planned("iam", "ListGroupsForUser", None, UserName=user),
        planned("iam", "ListGroupPolicies", None, GroupName="<each group>"),
        planned("iam", "GetGroupPolicy", None, GroupName="<each group>", PolicyName="<each inline policy>"),
        planned("iam", "ListAttachedGroupPolicies", None, GroupName="<each group>"),
        planned("iam", "ListAttachedUserPolicies", None, UserName=user),
        planned("iam", "GetUser", None, UserName=user),
        planned("iam", "GetAccessKeyLastUsed", None, AccessKeyId="<each key>"),
        planned("iam", "ListUserPolicies", None, UserName=user),
        planned("iam", "GetUserPolicy", None, UserName=user, PolicyName="<each inline policy>"),
        planned("iam", "GetPolicy", None, PolicyArn="<each attached policy>"),
        planned("iam", "GetPolicyVersion", None, PolicyArn="<each attached policy>", VersionId="<default>"),
        planned("iam", "ListMFADevices", None, UserName=user),
        planned("iam", "GetLoginProfile", None, UserName=user),
        planned("iam", "ListSSHPublicKeys", None, UserName=user),
    ]


def artifact_path(principal: Principal) -> str:
    """Where a principal's captured IAM state goes in the case."""
    return f"artifacts/aws/iam-{principal.type}/{path_part(principal.name)}/{principal.type}.json"


def plan_acquire_principal(clients: AwsClients, target: Target) -> Plan:
    """Capture the full IAM state of the user or role behind a principal or access-key target (read-only)."""
    principal = principal_of(target)
    iam = clients.client("iam")

    def run(ctx: StepContext) -> dict[str, Any]:
        with aws_errors(f"capture IAM {principal.type} {principal.name}"):
            state = capture_user(iam, principal.name) if principal.type == "user" else capture_role(iam, principal.name)
        if principal.session:
            state["Session"] = principal.session
        ctx.case.write_json(artifact_path(principal), state)
        summary: dict[str, Any] = {principal.type: principal.name, "artifact": artifact_path(principal)}
        if principal.type == "user":
            summary |= {
                "access_keys": [k["AccessKeyId"] for k in state["AccessKeys"]],
                "console_access": state["LoginProfile"] is not None,
            }
        return summary

    what = (
        "trust policy, last use, policies, instance profiles"
        if principal.type == "role"
        else "access keys and last use, policies, groups, MFA devices, console access, SSH keys"
    )
    step = Step(
        f"capture.iam-{principal.type}",
        f"Capture IAM {principal.type} {principal.name}: {what}",
        StepKind.READ,
        _capture_calls(principal),
        run,
    )
    plan = Plan(name="acquire", cloud="aws", target=target.ref, steps=[step], notes=_notes(target, principal))
    return offline_plan(plan) if target.symbolic else plan


def _notes(target: Target, principal: Principal) -> list[str]:
    if principal.type == "role" and (principal.session or target.id.startswith("ASIA")):
        session = principal.session or "the session"
        return [f"{target.id} is a session of role {principal.name} ({session}); containment acts on the role"]
    return []


# -- containment -------------------------------------------------------------------------------------------
def _cmd(*parts: str) -> str:
    return " ".join(shlex.quote(p) for p in parts)


def _deactivate_keys_step(iam: Any, user: str, keys: list[str], title: str) -> Step:
    def run(ctx: StepContext) -> dict[str, Any]:
        with aws_errors(f"deactivate the access keys of {user}"):
            active = [
                k["AccessKeyId"]
                for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
                if k["Status"] == "Active"
            ]
            for key in active:
                iam.update_access_key(UserName=user, AccessKeyId=key, Status="Inactive")
        undo = [
            _cmd("aws", "iam", "update-access-key", "--user-name", user, "--access-key-id", k, "--status", "Active")
            for k in active
        ]
        return {"user": user, "deactivated": active, "undo": undo}

    calls = [
        planned("iam", "ListAccessKeys", None, UserName=user),
        *[planned("iam", "UpdateAccessKey", None, UserName=user, AccessKeyId=k, Status="Inactive") for k in keys],
    ]
    return Step("contain.deactivate-access-keys", title, StepKind.CONTAIN, calls, run)


def _inline_policy_step(
    iam: Any, principal: Principal, *, step_id: str, title: str, policy: str, document: StepFunc
) -> Step:
    """PutUserPolicy / PutRolePolicy of ``policy`` whose document ``document(ctx)`` returns (with its cutoff)."""
    kind, name = principal.type, principal.name
    operation = "PutUserPolicy" if kind == "user" else "PutRolePolicy"
    name_param = "UserName" if kind == "user" else "RoleName"

    def run(ctx: StepContext) -> dict[str, Any]:
        made = document(ctx) or {}
        with aws_errors(f"put inline policy {policy} on {kind} {name}"):
            put = iam.put_user_policy if kind == "user" else iam.put_role_policy
            put(**{name_param: name}, PolicyName=policy, PolicyDocument=made["document"])
        undo = _cmd("aws", "iam", f"delete-{kind}-policy", f"--{kind}-name", name, "--policy-name", policy)
        return {kind: name, "policy": policy, **{k: v for k, v in made.items() if k != "document"}, "undo": [undo]}

    call = planned("iam", operation, None, **{name_param: name}, PolicyName=policy)
    if policy == REVOKE_POLICY:
        call = planned("iam", operation, None, **{name_param: name}, PolicyName=policy, TokenIssueTime="<now>")
    return Step(step_id, title, StepKind.CONTAIN, [call], run)


def revoke_sessions_step(iam: Any, principal: Principal) -> Step:
    """Deny every session of the user or role issued before the step runs (aws:TokenIssueTime)."""

    def document(ctx: StepContext) -> dict[str, Any]:
        cutoff = now_iso()
        return {"document": revoke_policy(cutoff), "issued_before": cutoff}

    return _inline_policy_step(
        iam,
        principal,
        step_id=f"contain.revoke-{principal.type}-sessions",
        title=f"Deny every session of {principal.type} {principal.name} issued before now (aws:TokenIssueTime)",
        policy=REVOKE_POLICY,
        document=document,
    )


def _deny_all_step(iam: Any, user: str) -> Step:
    return _inline_policy_step(
        iam,
        Principal("user", user),
        step_id="contain.deny-all",
        title=f"Attach an inline deny-all policy {DENY_ALL_POLICY} to user {user}",
        policy=DENY_ALL_POLICY,
        document=lambda ctx: {"document": _deny_all("CloudirDenyAll")},
    )


def _console_step(iam: Any, user: str) -> Step:
    def run(ctx: StepContext) -> dict[str, Any]:
        with aws_errors(f"remove the console access of {user}"):
            profile = _login_profile(iam, user)
            if profile is not None:
                iam.delete_login_profile(UserName=user)
        undo = (
            [
                _cmd("aws", "iam", "create-login-profile", "--user-name", user, "--password-reset-required"),
                "(with a new password: the old one cannot be restored)",
            ]
            if profile
            else []
        )
        return {"user": user, "had_console_access": profile is not None, "login_profile": profile, "undo": undo}

    return Step(
        "contain.remove-console-access",
        f"Remove the console password of {user} (its login profile was captured at acquisition)",
        StepKind.CONTAIN,
        [
            planned("iam", "GetLoginProfile", None, UserName=user),
            planned("iam", "DeleteLoginProfile", None, UserName=user),
        ],
        run,
    )


def plan_contain_principal(clients: AwsClients, target: Target, options: ContainOptions) -> Plan:
    """Contain the user or role behind a principal or access-key target.

    A user named as a principal: every key deactivated, a deny-all inline policy, its console password removed.
    A long-term key: its user's keys deactivated and the user's older sessions denied. A role, a role session
    or a temporary key: every session of the role issued before now denied.
    """
    principal = principal_of(target)
    iam = clients.client("iam")
    if principal.type == "role":
        steps = [revoke_sessions_step(iam, principal)]
        notes = [f"new sessions of role {principal.name} still work: also contain what can assume it"]
    else:
        user = principal.name
        keys = ["<each active key of the user>"] if target.symbolic else _active_keys(iam, user)
        if target.kind is TargetKind.ACCESS_KEY:
            title = f"Deactivate the access keys of {user} (the compromised key {target.id} and any other active key)"
            steps = [_deactivate_keys_step(iam, user, keys, title)]
            if options.revoke_credentials:
                steps.append(revoke_sessions_step(iam, principal))
        else:
            title = f"Deactivate every access key of {user}"
            steps = [_deactivate_keys_step(iam, user, keys, title), _deny_all_step(iam, user), _console_step(iam, user)]
        notes = []
    plan = Plan(name="contain", cloud="aws", target=target.ref, steps=steps, notes=notes)
    return offline_plan(plan) if target.symbolic else plan


def _active_keys(iam: Any, user: str) -> list[str]:
    with aws_errors(f"list the access keys of {user}"):
        return [
            k["AccessKeyId"]
            for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
            if k["Status"] == "Active"
        ]
