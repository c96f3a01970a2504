"""Entra detections on audit and sign-in records in Microsoft's documented shapes - the Graph ``directoryAudit`` /
``signIn`` resources and the diagnostic-settings envelope (``properties``) - ingested and analyzed through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.analyze.conftest import rules_through_the_cli

ADMIN = {"user": {"id": "7d0c", "userPrincipalName": "admin@contoso.example", "ipAddress": "203.0.113.7"}}
MFA_POLICY = {"id": "c1", "displayName": "Require MFA", "state": "enabled",
              "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}  # fmt: skip
NO_MFA_POLICY = {**MFA_POLICY, "grantControls": None}


def _change(name: str, policy_from: dict[str, Any], policy_to: dict[str, Any]) -> dict[str, Any]:
    return {"displayName": name, "oldValue": json.dumps(policy_from), "newValue": json.dumps(policy_to)}


def _graph_audit(record_id: str, activity: str, *changes: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft Graph directoryAudit resource."""
    return {
        "id": record_id,
        "category": "Policy",
        "correlationId": f"corr-{record_id}",
        "result": "success",
        "activityDisplayName": activity,
        "activityDateTime": "2026-11-02T10:00:00Z",
        "loggedByService": "Conditional Access",
        "operationType": "Update",
        "initiatedBy": ADMIN,
        "targetResources": [
            {"id": "c1", "displayName": "Require MFA", "type": "Policy", "modifiedProperties": list(changes)}
        ],
    }


def _diagnostic_audit(record_id: str, activity: str, *changes: dict[str, Any]) -> dict[str, Any]:
    """The same activity as a diagnostic-settings record (category AuditLogs, the resource under ``properties``)."""
    graph = _graph_audit(record_id, activity, *changes)
    return {
        "time": graph["activityDateTime"],
        "resourceId": "/tenants/t1/providers/Microsoft.aadiam",
        "operationName": activity,
        "category": "AuditLogs",
        "tenantId": "t1",
        "properties": graph,
    }


def _signin(record_id: str, risk: str, state: str, *detections: str) -> dict[str, Any]:
    """A sign-in as a diagnostic-settings record (category SignInLogs)."""
    return {
        "time": "2026-11-02T11:00:00Z",
        "operationName": "Sign-in activity",
        "category": "SignInLogs",
        "tenantId": "t1",
        "properties": {
            "id": record_id,
            "createdDateTime": "2026-11-02T11:00:00Z",
            "userPrincipalName": "bob@contoso.example",
            "appDisplayName": "Azure Portal",
            "ipAddress": "198.51.100.4",
            "status": {"errorCode": 0},
            "riskLevelDuringSignIn": risk,
            "riskLevelAggregated": "none",
            "riskState": state,
            "riskEventTypes_v2": list(detections),
        },
    }


CA = "Update conditional access policy"
ELEVATE = "User has elevated their access to User Access Administrator for their Azure Resources"
REPORT_ONLY = {**MFA_POLICY, "state": "enabledForReportingButNotEnforced"}
RENAMED = {**MFA_POLICY, "displayName": "Require MFA (all)"}
DISCOVERY = json.dumps({"discoveryUrl": "https://idp.example/.well-known/openid-configuration"})
ELEVATE_PROPERTIES = {
    "id": "elevate",
    "activityDateTime": "2026-11-02T10:00:00Z",
    "initiatedBy": ADMIN,
    "result": "success",
    "loggedByService": "Microsoft.Authorization",
    "operationType": "Assign",
}


def _role_name(role: str) -> dict[str, Any]:
    """The Role.DisplayName property of an "Add member to role" target (its value a JSON string, as logged)."""
    return {"displayName": "Role.DisplayName", "oldValue": None, "newValue": json.dumps(role)}


def _user_type(old: str, new: str) -> dict[str, Any]:
    """The UserType property of an "Update user" target (values JSON strings, as logged)."""
    return {"displayName": "UserType", "oldValue": json.dumps([old]), "newValue": json.dumps([new])}


def _reply_address(old: str, new: str) -> dict[str, Any]:
    """The AppAddress property of an "Update application" target (values JSON text, as logged)."""
    return {"displayName": "AppAddress", "oldValue": old, "newValue": new}


def _device(name: str, value: str) -> dict[str, Any]:
    """A property of an "Add device" target (its value a JSON list, as logged)."""
    return {"displayName": name, "oldValue": "[]", "newValue": json.dumps([value])}


def _with(record: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """A diagnostic-settings record with more of the directoryAudit resource's fields under ``properties``."""
    return {**record, "properties": record["properties"] | properties}


APP_ADDRESS = json.dumps([{"AddressType": 0, "Address": "https://app.contoso.example/cb"}])
ATTACKER_ADDRESS = json.dumps([{"AddressType": 0, "Address": "https://attacker.example/cb"}])
RECORDS = [
    # MFA grant removed / policy switched to report-only: weakened, in either shape
    _graph_audit("weakened-graph", CA, _change("ConditionalAccessPolicy", MFA_POLICY, NO_MFA_POLICY)),
    _diagnostic_audit("weakened-diag", CA + " ", _change("ConditionalAccessPolicy", MFA_POLICY, REPORT_ONLY)),
    # MFA added, or the policy renamed with MFA kept: routine
    _graph_audit("strengthened", CA, _change("ConditionalAccessPolicy", NO_MFA_POLICY, MFA_POLICY)),
    _diagnostic_audit("kept", CA, _change("ConditionalAccessPolicy", MFA_POLICY, RENAMED)),
    _diagnostic_audit("deleted", "Delete conditional access policy"),
    _diagnostic_audit("oidc", "Update authentication methods policy",
                      {"displayName": "OpenIdConnectConfiguration", "oldValue": "", "newValue": DISCOVERY}),
    _diagnostic_audit("passwordless", "Update authentication methods policy",
                      {"displayName": "PasswordlessMFAEnabled", "oldValue": "false", "newValue": "true"}),
    # elevate access: the diagnostic record names the activity only in operationName
    {**_diagnostic_audit("elevate", ELEVATE), "properties": ELEVATE_PROPERTIES},
    _signin("medium-risk", "medium", "atRisk"),
    _signin("low-risk", "low", "atRisk"),
    _signin("medium-risk-dismissed", "medium", "dismissed"),
    _signin("anonymous-ip", "low", "atRisk", "unfamiliarFeatures", "anonymizedIPAddress"),
    _signin("unfamiliar-only", "low", "atRisk", "unfamiliarFeatures"),
    _diagnostic_audit("global-admin", "Add member to role", _role_name("Global Administrator")),
    _graph_audit("reports-reader", "Add member to role", _role_name("Reports Reader")),
    # a guest made a member (Graph and diagnostic shapes); a member made a guest, or "Guest" in another property
    _graph_audit("guest-to-member", "Update user", _user_type("Guest", "Member")),
    _diagnostic_audit("guest-to-member-diag", "Update user ", _user_type("Guest", "Member")),
    _graph_audit("member-to-guest", "Update user", _user_type("Member", "Guest")),
    _graph_audit("guest-named", "Update user", {"displayName": "DisplayName", "oldValue": '["Guest"]',
                                                "newValue": '["Member"]'}),
    # an app's reply address changed; a name that merely says AppAddress is data, not the property
    _diagnostic_audit("redirect", "Update application", _reply_address("[]", ATTACKER_ADDRESS)),
    _diagnostic_audit("app-renamed", "Update application", {"displayName": "DisplayName", "oldValue": '["a"]',
                      "newValue": '["AppAddress"]'}),
    # each property judged on its own values: UserType unchanged while another property went Guest -> Member, the
    # reply address unchanged while another property's new value names an address
    _graph_audit("user-type-kept", "Update user", _user_type("Member", "Member"), _user_type("Guest", "Member")
                 | {"displayName": "Department"}),
    _diagnostic_audit("reply-address-kept", "Update application", _reply_address(APP_ADDRESS, APP_ADDRESS),
                      _reply_address('["a"]', ATTACKER_ADDRESS) | {"displayName": "DisplayName"}),
    _diagnostic_audit("pim-settings", "Update role setting in PIM"),
    # a Temporary Access Pass named by the result reason; another method registered is routine
    _with(_diagnostic_audit("tap", "Admin registered security info"),
          resultReason="Admin registered temporary access pass method for user"),
    _with(_diagnostic_audit("phone-method", "Admin registered security info"),
          resultReason="Admin registered phone method for user"),
    # a federated credential trusting a new issuer; one removed is not
    _diagnostic_audit("federated", "Update application", {"displayName": "FederatedIdentityCredentials",
                      "oldValue": "[]", "newValue": json.dumps([{"Issuer": "https://token.actions.githubusercontent.com",
                                                                 "Subject": "repo:attacker/x:ref:refs/heads/main"}])}),
    _diagnostic_audit("federated-removed", "Update application", {"displayName": "FederatedIdentityCredentials",
                      "oldValue": json.dumps([{"Issuer": "https://idp.example"}]), "newValue": "[]"}),
    # a device registered with roadtx's defaults (its OS build and a DESKTOP- name); a current build is not
    _diagnostic_audit("roadtools", "Add device", _device("CloudDeviceOSVersion", "10.0.19041.928"),
                      _device("CloudDisplayName", "DESKTOP-8XK2QW1")),
    _diagnostic_audit("laptop", "Add device", _device("CloudDeviceOSVersion", "10.0.22631.4317"),
                      _device("CloudDisplayName", "DESKTOP-8XK2QW1")),
    # per-user MFA removed (the requirement gone from StrongAuthenticationRequirement); one added is routine
    _graph_audit("mfa-off", "Update user", {"displayName": "StrongAuthenticationRequirement",
                 "oldValue": json.dumps([{"RelyingParty": "*", "State": 1}]), "newValue": "[]"}),
    _graph_audit("mfa-on", "Update user", {"displayName": "StrongAuthenticationRequirement", "oldValue": "[]",
                 "newValue": json.dumps([{"RelyingParty": "*", "State": 1}])}),
    # PIM names the role as a target resource of its own
    _with(_diagnostic_audit("pim-global-admin", "Add eligible member to role in PIM completed (permanent)"),
          targetResources=[{"displayName": "Global Administrator", "type": "Role"},
                           {"displayName": "mallory", "type": "User"}]),
]  # fmt: skip
EXPECTED = {
    "weakened-graph": {"entra-conditional-access-weakened"},
    "weakened-diag": {"entra-conditional-access-weakened"},
    "deleted": {"entra-conditional-access-deleted"},
    "oidc": {"entra-external-idp-changed"},
    "elevate": {"entra-elevate-access"},
    "medium-risk": {"entra-medium-risk-signin"},
    "anonymous-ip": {"entra-risk-detection-signin"},
    "global-admin": {"entra-privileged-role-assigned", "entra-user-or-role"},
    "reports-reader": {"entra-user-or-role"},
    "guest-to-member": {"entra-guest-promoted-to-member"},
    "guest-to-member-diag": {"entra-guest-promoted-to-member"},
    "redirect": {"entra-app-redirect-uri-changed"},
    "pim-settings": {"entra-pim-role-setting-changed"},
    "tap": {"entra-temporary-access-pass"},
    "mfa-off": {"entra-per-user-mfa-removed"},
    "federated": {"entra-federated-credential-issuer-changed"},
    "roadtools": {"entra-device-registered-by-tool-defaults"},
    "pim-global-admin": {"entra-privileged-role-assigned", "entra-user-or-role"},
}


def test_entra_rules_read_the_documented_before_and_after_values(tmp_path: Path) -> None:
    assert rules_through_the_cli(tmp_path, RECORDS) == EXPECTED


def _session_signin(record_id: str, minute: int, address: str, country: str, session: str) -> dict[str, Any]:
    """A successful sign-in of bob in session ``session`` (diagnostic-settings record; every sign-in issues a new
    token, so uniqueTokenIdentifier differs while sessionId stays)."""
    at = f"2026-11-02T{10 + minute // 60:02d}:{minute % 60:02d}:00Z"
    return {
        "time": at,
        "operationName": "Sign-in activity",
        "category": "NonInteractiveUserSignInLogs",
        "tenantId": "t1",
        "properties": {
            "id": record_id,
            "createdDateTime": at,
            "userPrincipalName": "bob@contoso.example",
            "appDisplayName": "Microsoft Office",
            "ipAddress": address,
            "status": {"errorCode": 0},
            "location": {"countryOrRegion": country},
            "sessionId": session,
            "uniqueTokenIdentifier": f"uti-{record_id}",
            "correlationId": f"corr-{record_id}",
        },
    }


def test_a_session_used_from_another_country_or_many_networks_is_token_replay(tmp_path: Path) -> None:
    records = [
        # session s1: signed in from Germany, replayed from Nigeria 40 minutes later
        _session_signin("s1-home", 0, "198.51.100.4", "DE", "s1"),
        _session_signin("s1-replay", 40, "203.0.113.80", "NG", "s1"),
        # session s2: one country, three /24 networks within an hour
        _session_signin("s2-a", 0, "192.0.2.10", "DE", "s2"),
        _session_signin("s2-b", 20, "198.51.100.20", "DE", "s2"),
        _session_signin("s2-c", 45, "203.0.113.30", "DE", "s2"),
        # session s3: a laptop between office Wi-Fi and a phone's hotspot - two networks, one country
        _session_signin("s3-office", 0, "192.0.2.50", "DE", "s3"),
        _session_signin("s3-hotspot", 30, "198.51.100.60", "DE", "s3"),
        _session_signin("s3-office-again", 50, "192.0.2.51", "DE", "s3"),
        # two sessions of bob's in two countries: two devices, no session crossing
        _session_signin("s4-de", 0, "192.0.2.70", "DE", "s4"),
        _session_signin("s5-us", 10, "198.51.100.70", "US", "s5"),
    ]
    flagged = rules_through_the_cli(tmp_path, records, analyzer="correlation")
    session_rules = {event: {r for r in rules if r.startswith("entra-session")} for event, rules in flagged.items()}
    assert {event: rules for event, rules in session_rules.items() if rules} == {
        "s1-home": {"entra-session-country-change"},
        "s1-replay": {"entra-session-country-change"},
        "s2-a": {"entra-session-many-networks"},
        "s2-b": {"entra-session-many-networks"},
        "s2-c": {"entra-session-many-networks"},
    }
