"""Entra ID audit logs: Microsoft Graph ``directoryAudits`` records and diagnostic-settings records."""

from typing import Any

NAME = "entra_audit"
CLOUD = "azure"
DETECT = (
    "(list_contains(keys, 'category') AND list_contains(keys, 'properties') AND rec ->> 'category' = 'AuditLogs')"
    " OR (list_contains(keys, 'activityDateTime') AND list_contains(keys, 'initiatedBy'))"
    " OR (list_contains(keys, 'properties') AND json_exists(rec, '$.properties.activityDateTime'))"
)

_INITIATOR: dict[str, Any] = {
    "user": {"id": "VARCHAR", "userPrincipalName": "VARCHAR", "ipAddress": "VARCHAR"},
    "app": {"appId": "VARCHAR", "displayName": "VARCHAR", "servicePrincipalId": "VARCHAR"},
}
_AUDIT: dict[str, Any] = {
    "id": "VARCHAR",
    "activityDateTime": "VARCHAR",
    "activityDisplayName": "VARCHAR",
    "operationName": "VARCHAR",
    "loggedByService": "VARCHAR",
    "operationType": "VARCHAR",
    "result": "VARCHAR",
    "resultReason": "VARCHAR",
    "correlationId": "VARCHAR",
    "initiatedBy": _INITIATOR,
    "targetResources": [{"id": "VARCHAR", "displayName": "VARCHAR", "userPrincipalName": "VARCHAR"}],
}

FIELDS = {
    **_AUDIT,
    "time": "VARCHAR",
    "tenantId": "VARCHAR",
    "callerIpAddress": "VARCHAR",
    "properties": {**_AUDIT, "tenantId": "VARCHAR"},
}


def _get(name: str) -> str:
    return f"coalesce(p.properties.{name}, p.{name})"


_USER = "initiatedBy.user"
_APP = "initiatedBy.app"
_RESULT = f"lower({_get('result')})"

COLUMNS = {
    "time": f"utc_ts(coalesce({_get('activityDateTime')}, p.time))",
    "account": "coalesce(p.tenantId, p.properties.tenantId)",
    "region": "NULL",
    "service": f"coalesce({_get('loggedByService')}, 'Microsoft.aadiam')",
    # the diagnostic-settings envelope names the activity in operationName too (some records, such as elevate
    # access, carry no activityDisplayName)
    "operation": f"coalesce({_get('activityDisplayName')}, {_get('operationName')})",
    "actor": f"coalesce({_get(_USER + '.userPrincipalName')}, {_get(_USER + '.id')}, {_get(_APP + '.displayName')}, "
    f"{_get(_APP + '.servicePrincipalId')}, {_get(_APP + '.appId')})",
    "actor_type": f"CASE WHEN coalesce({_get(_USER + '.userPrincipalName')}, {_get(_USER + '.id')}) IS NOT NULL "
    f"THEN 'User' WHEN coalesce({_get(_APP + '.appId')}, {_get(_APP + '.servicePrincipalId')}) IS NOT NULL "
    "THEN 'ServicePrincipal' END",
    "session": _get("correlationId"),
    "source_ip": f"coalesce({_get(_USER + '.ipAddress')}, p.callerIpAddress)",
    "user_agent": "NULL",
    "resources": "list_filter(list_transform(coalesce(p.properties.targetResources, p.targetResources), "
    "lambda t: coalesce(t.userPrincipalName, t.displayName, t.id)), lambda r: r IS NOT NULL)",
    "status": f"CASE WHEN {_RESULT} = 'success' THEN 'success' WHEN {_RESULT} IN ('failure', 'timeout') "
    "THEN 'failure' ELSE 'unknown' END",
    "error_code": f"CASE WHEN {_RESULT} <> 'success' THEN {_get('resultReason')} END",
    "request_id": _get("correlationId"),
    "event_id": _get("id"),
    "read_only": f"lower({_get('operationType')}) IN ('read', 'get')",
}
