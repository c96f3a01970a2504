"""Log Analytics ``AuditLogs`` rows (Entra ID directory audit), JSON or the portal's CSV export."""

from cloudir.timeline.formats.log_analytics import cell, detect, time_fields, time_of

NAME = "la_audit_logs"
CLOUD = "azure"
DETECT = detect("OperationName", "InitiatedBy")

FIELDS = {
    **time_fields("TimeGenerated", "ActivityDateTime"),
    "OperationName": "VARCHAR",
    "ActivityDisplayName": "VARCHAR",
    "Result": "VARCHAR",
    "ResultReason": "VARCHAR",
    "CorrelationId": "VARCHAR",
    "Id": "VARCHAR",
    "LoggedByService": "VARCHAR",
    "TenantId": "VARCHAR",
    "OperationType": "VARCHAR",
    "InitiatedBy": "JSON",
    "TargetResources": "JSON",
}

_BY = cell("InitiatedBy")
_USER = f"coalesce({_BY} -> 'user' ->> 'userPrincipalName', {_BY} -> 'user' ->> 'id')"
_APP = (
    f"coalesce({_BY} -> 'app' ->> 'displayName', {_BY} -> 'app' ->> 'servicePrincipalId', {_BY} -> 'app' ->> 'appId')"
)
_RESULT = "lower(p.Result)"

COLUMNS = {
    "time": time_of("TimeGenerated", "ActivityDateTime"),
    "account": "p.TenantId",
    "region": "NULL",
    "service": "coalesce(p.LoggedByService, 'Microsoft.aadiam')",
    "operation": "coalesce(p.OperationName, p.ActivityDisplayName)",
    "actor": f"coalesce({_USER}, {_APP})",
    "actor_type": f"CASE WHEN {_USER} IS NOT NULL THEN 'User' WHEN {_APP} IS NOT NULL THEN 'ServicePrincipal' END",
    "session": "p.CorrelationId",
    "source_ip": f"{_BY} -> 'user' ->> 'ipAddress'",
    "user_agent": "NULL",
    "resources": f"list_filter(list_transform(json_extract({cell('TargetResources')}, '$[*]'), lambda t: "
    "coalesce(t ->> 'userPrincipalName', t ->> 'displayName', t ->> 'id')), lambda r: r IS NOT NULL)",
    "status": f"CASE WHEN {_RESULT} = 'success' THEN 'success' WHEN {_RESULT} IN ('failure', 'timeout') "
    "THEN 'failure' ELSE 'unknown' END",
    "error_code": f"CASE WHEN {_RESULT} <> 'success' THEN nullif(p.ResultReason, '') END",
    "request_id": "p.CorrelationId",
    "event_id": "p.Id",
    "read_only": "lower(p.OperationType) IN ('read', 'get')",
}
