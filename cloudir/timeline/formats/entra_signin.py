"""Entra ID sign-in logs: Microsoft Graph ``signIns`` records and diagnostic-settings records (``properties``)."""

from typing import Any

NAME = "entra_signin"
CLOUD = "azure"
DETECT = (
    "(list_contains(keys, 'category') AND rec ->> 'category' LIKE '%SignInLogs')"
    " OR (list_contains(keys, 'createdDateTime') AND list_contains(keys, 'appDisplayName'))"
)

_SIGNIN: dict[str, Any] = {
    "id": "VARCHAR",
    "createdDateTime": "VARCHAR",
    "userPrincipalName": "VARCHAR",
    "userId": "VARCHAR",
    "servicePrincipalName": "VARCHAR",
    "servicePrincipalId": "VARCHAR",
    "appDisplayName": "VARCHAR",
    "resourceDisplayName": "VARCHAR",
    "ipAddress": "VARCHAR",
    "userAgent": "VARCHAR",
    "correlationId": "VARCHAR",
    "uniqueTokenIdentifier": "VARCHAR",
    "sessionId": "VARCHAR",
    "status": {"errorCode": "VARCHAR"},
    "location": {"countryOrRegion": "VARCHAR"},
}

FIELDS = {
    **_SIGNIN,
    "time": "VARCHAR",
    "category": "VARCHAR",
    "operationName": "VARCHAR",
    "tenantId": "VARCHAR",
    "callerIpAddress": "VARCHAR",
    "resultType": "VARCHAR",
    "properties": {**_SIGNIN, "tenantId": "VARCHAR"},
}


def _get(name: str) -> str:
    return f"coalesce(p.properties.{name}, p.{name})"


_ERROR = f"coalesce({_get('status.errorCode')}, p.resultType)"

COLUMNS = {
    "time": f"utc_ts(coalesce({_get('createdDateTime')}, p.time))",
    "account": "coalesce(p.tenantId, p.properties.tenantId)",
    "region": _get("location.countryOrRegion"),
    "service": "'Microsoft.aadiam'",
    "operation": "coalesce(p.operationName, 'Sign-in activity')",
    "actor": f"coalesce({_get('userPrincipalName')}, {_get('servicePrincipalName')}, {_get('userId')}, "
    f"{_get('servicePrincipalId')})",
    "actor_type": f"CASE WHEN p.category LIKE 'ServicePrincipal%' OR {_get('servicePrincipalId')} IS NOT NULL "
    "THEN 'ServicePrincipal' ELSE 'User' END",
    "session": f"coalesce({_get('uniqueTokenIdentifier')}, {_get('sessionId')}, {_get('correlationId')})",
    "source_ip": f"coalesce({_get('ipAddress')}, p.callerIpAddress)",
    "user_agent": _get("userAgent"),
    "resources": f"list_filter([{_get('appDisplayName')}, {_get('resourceDisplayName')}], lambda r: r IS NOT NULL)",
    "status": f"CASE WHEN coalesce({_ERROR}, '0') = '0' THEN 'success' ELSE 'failure' END",
    "error_code": f"nullif({_ERROR}, '0')",
    "request_id": _get("correlationId"),
    "event_id": _get("id"),
    "read_only": "NULL",  # a sign-in neither reads nor changes a resource
}
