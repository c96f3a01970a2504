"""Azure Activity, GCP audit and Google Workspace behaviours from the Elastic catalog's gaps, in the providers'
documented record forms, ingested and analyzed through the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.analyze.conftest import rules_through_the_cli

TIME = "2026-11-02T10:00:00Z"
ROBOT = "service-123456@container-engine-robot.iam.gserviceaccount.com"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
ARC = "MICROSOFT.KUBERNETES/CONNECTEDCLUSTERS/"
AKS = "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/"


def _activity(record_id: str, operation: str) -> dict[str, Any]:
    """An Azure Activity log record as diagnostic settings deliver it (category Administrative)."""
    return {"time": TIME, "eventDataId": record_id, "correlationId": record_id, "category": "Administrative",
            "operationName": operation, "resultType": "Success", "callerIpAddress": "203.0.113.70",
            "resourceId": "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/" + operation.rsplit("/", 1)[0],
            "identity": {"claims": {UPN: "eve@contoso.example"}},
            "properties": {}}  # fmt: skip


def _gcp(insert_id: str, service: str, method: str, caller: str = "eve@example.com", **extra: Any) -> dict[str, Any]:
    """A Cloud Audit Logs LogEntry (admin activity)."""
    return {"insertId": insert_id, "logName": "projects/p1/logs/cloudaudit.googleapis.com%2Factivity",
            "timestamp": TIME, "resource": {"type": "project", "labels": {"project_id": "p1"}},
            "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog", "serviceName": service,
                             "methodName": method, "authenticationInfo": {"principalEmail": caller},
                             "requestMetadata": {"callerIp": "203.0.113.71"}, "resourceName": "projects/p1",
                             **extra}}  # fmt: skip


def _activities(*events: tuple[str, str, str]) -> list[dict[str, Any]]:
    """Admin SDK Reports activities.list pages of one activity each: (id, application, event name)."""
    items = [{"kind": "admin#reports#activity",
              "id": {"time": TIME, "uniqueQualifier": uid, "applicationName": app, "customerId": "C01"},
              "actor": {"callerType": "USER", "email": "eve@example.com"}, "ipAddress": "203.0.113.72",
              "events": [{"type": "DOMAIN_SETTINGS", "name": name,
                          "parameters": [{"name": "DOMAIN_NAME", "value": "partner.example"}]}]}
             for uid, app, name in events]  # fmt: skip
    return [{"kind": "admin#reports#activities", "items": [item]} for item in items]


def _binding(member: str) -> dict[str, Any]:
    return {"serviceData": {"@type": "type.googleapis.com/google.iam.v1.logging.AuditData",
                            "policyDelta": {"bindingDeltas": [{"action": "ADD", "role": "roles/storage.admin",
                                                               "member": member}]}}}  # fmt: skip


RECORDS = [
    _activity("watcher", "MICROSOFT.NETWORK/NETWORKWATCHERS/DELETE"),
    _activity("watcher-read", "MICROSOFT.NETWORK/NETWORKWATCHERS/READ"),
    _activity("acl", "MICROSOFT.STORAGE/STORAGEACCOUNTS/BLOBSERVICES/CONTAINERS/BLOBS/MODIFYPERMISSIONS/ACTION"),
    _activity("sas-rule", "MICROSOFT.EVENTHUB/NAMESPACES/AUTHORIZATIONRULES/WRITE"),
    _activity("arc-binding", ARC + "RBAC.AUTHORIZATION.K8S.IO/CLUSTERROLEBINDINGS/WRITE"),
    _activity("aks-webhook", AKS + "ADMISSIONREGISTRATION.K8S.IO/VALIDATINGWEBHOOKCONFIGURATIONS/WRITE"),
    _gcp("route", "compute.googleapis.com", "v1.compute.routes.insert"),
    _gcp("route-gke", "compute.googleapis.com", "v1.compute.routes.insert", caller=ROBOT),
    _gcp("network", "compute.googleapis.com", "v1.compute.networks.delete"),
    _gcp("bucket-iam", "storage.googleapis.com", "storage.setIamPermissions", **_binding("user:x@partner.example")),
    _gcp("bucket-public", "storage.googleapis.com", "storage.setIamPermissions", **_binding("allUsers")),
    _gcp("role", "iam.googleapis.com", "google.iam.admin.v1.DeleteRole"),
    *_activities(("trusted", "admin", "ADD_TRUSTED_DOMAINS"), ("untrusted", "admin", "REMOVE_TRUSTED_DOMAINS"),
                ("privilege", "admin", "ADD_PRIVILEGE"), ("app", "admin", "ADD_APPLICATION"),
                ("2sv-off", "user_accounts", "2sv_disable"), ("2sv-on", "user_accounts", "2sv_enroll")),
]  # fmt: skip
EXPECTED = {
    "watcher": {"azure-network-watcher-deleted"},
    "acl": {"azure-blob-permissions-changed"},
    "sas-rule": {"azure-eventhub-access-key-rule"},
    "arc-binding": {"azure-k8s-rbac-written"},
    "aks-webhook": {"azure-k8s-admission-webhook"},
    "route": {"gcp-vpc-network-or-route-changed"},
    "network": {"gcp-vpc-network-or-route-changed"},
    "bucket-iam": {"gcp-bucket-iam-changed"},
    "bucket-public": {"gcp-public-iam"},
    "role": {"gcp-custom-role-deleted"},
    "trusted": {"gcp-workspace-trusted-domain-added"},
    "privilege": {"gcp-workspace-role-privilege-added"},
    "app": {"gcp-workspace-app-added"},
    "2sv-off": {"gcp-workspace-user-2sv-disabled"},
}


def test_elastic_catalog_gaps_are_findings_in_the_documented_forms(tmp_path: Path) -> None:
    flagged = rules_through_the_cli(tmp_path, RECORDS)
    assert {event: rules for event, rules in flagged.items() if event in EXPECTED} == EXPECTED
    assert set(flagged) - set(EXPECTED) == set()


def _admin_setting(uid: str, name: str, **parameters: str) -> dict[str, Any]:
    """An Admin SDK Reports activities.list page of one Admin audit settings event and its parameters."""
    item = {"kind": "admin#reports#activity",
            "id": {"time": TIME, "uniqueQualifier": uid, "applicationName": "admin", "customerId": "C01"},
            "actor": {"callerType": "USER", "email": "eve@example.com"}, "ipAddress": "203.0.113.72",
            "events": [{"type": "APPLICATION_SETTINGS", "name": name,
                        "parameters": [{"name": k, "value": v} for k, v in parameters.items()]}]}  # fmt: skip
    return {"kind": "admin#reports#activities", "items": [item]}


MARKETPLACE = "Google Workspace Marketplace"
ALLOWLIST = "Apps Access Setting Allowlist access"
PASSWORD_LENGTH = "Password Management - Minimum password length"
SETTINGS = [
    # each parameter judged by its own name: a route named in SETTING_NAME; EMAIL_ROUTE as another's value is not
    _admin_setting("route", "CREATE_GMAIL_SETTING", SETTING_NAME="EMAIL_ROUTE", ORG_UNIT_NAME="Sales"),
    _admin_setting("spam", "CHANGE_GMAIL_SETTING", SETTING_NAME="SPAM_FILTER", NEW_VALUE="EMAIL_ROUTE"),
    _admin_setting("allow-all", "CHANGE_APPLICATION_SETTING", APPLICATION_NAME=MARKETPLACE, SETTING_NAME=ALLOWLIST,
                   OLD_VALUE="ALLOW_LISTED_APPS", NEW_VALUE="ALLOW_ALL"),
    _admin_setting("allow-listed", "CHANGE_APPLICATION_SETTING", APPLICATION_NAME=MARKETPLACE, SETTING_NAME=ALLOWLIST,
                   OLD_VALUE="ALLOW_ALL", NEW_VALUE="ALLOW_LISTED_APPS"),
    _admin_setting("bitlocker", "CHANGE_APPLICATION_SETTING", SETTING_NAME="BitLocker Encryption",
                   OLD_VALUE="Enabled", NEW_VALUE="Disabled"),
    _admin_setting("password", "CHANGE_APPLICATION_SETTING", SETTING_NAME=PASSWORD_LENGTH,
                   OLD_VALUE="12", NEW_VALUE="8"),
    _admin_setting("takeout", "CUSTOMER_TAKEOUT_CREATED"),
    _admin_setting("calendar-transfer", "CREATE_DATA_TRANSFER_REQUEST", APPLICATION_NAME="Calendar"),
    _admin_setting("unsuspend", "UNSUSPEND_USER", USER_EMAIL="cfo@example.com"),
]  # fmt: skip
SETTINGS_EXPECTED = {
    "route": {"gcp-workspace-mail-routing-changed"},
    "allow-all": {"gcp-workspace-marketplace-restriction-lifted"},
    "bitlocker": {"gcp-workspace-bitlocker-disabled"},
    "password": {"gcp-workspace-password-policy-changed"},
    "takeout": {"gcp-workspace-data-export"},
    "unsuspend": {"gcp-workspace-user-unsuspended"},
}


def test_workspace_setting_changes_are_judged_by_their_named_parameters(tmp_path: Path) -> None:
    assert rules_through_the_cli(tmp_path, SETTINGS) == SETTINGS_EXPECTED
