"""Azure Activity Log: REST records (``value`` pages), diagnostic-settings records (``records``) and the Azure SDK's
``EventData.as_dict()`` (azure-mgmt-monitor ``activity_logs.list``: snake-case keys but inside ``claims`` and
``properties``, dictionaries it copies as received)."""

NAME = "azure_activity"
CLOUD = "azure"
DETECT = (
    "list_contains(keys, 'operationName') AND (list_contains(keys, 'eventTimestamp') OR list_contains(keys, 'time'))"
    " AND (list_contains(keys, 'resourceId') OR list_contains(keys, 'category'))"
)
SNAKE_CASE_KEEP = ("claims", "properties")

_CLAIMS = {
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "VARCHAR",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name": "VARCHAR",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "VARCHAR",
    "appid": "VARCHAR",
    "ipaddr": "VARCHAR",
    "idtyp": "VARCHAR",
    "uti": "VARCHAR",
}

FIELDS = {
    "eventTimestamp": "VARCHAR",
    "time": "VARCHAR",
    "eventDataId": "VARCHAR",
    "operationName": "JSON",
    "resourceProviderName": {"value": "VARCHAR"},
    "status": {"value": "VARCHAR"},
    "subStatus": {"value": "VARCHAR"},
    "resultType": "VARCHAR",
    "resultSignature": "VARCHAR",
    "resourceId": "VARCHAR",
    "subscriptionId": "VARCHAR",
    "tenantId": "VARCHAR",
    "location": "VARCHAR",
    "caller": "VARCHAR",
    "callerIpAddress": "VARCHAR",
    "correlationId": "VARCHAR",
    "httpRequest": {"clientRequestId": "VARCHAR", "clientIpAddress": "VARCHAR"},
    "claims": _CLAIMS,
    "identity": {"claims": _CLAIMS},
    "properties": {"statusCode": "VARCHAR"},
}

_OPERATION = (
    "CASE json_type(p.operationName) WHEN 'OBJECT' THEN p.operationName ->> 'value' ELSE p.operationName ->> '$' END"
)
_CLAIM = 'coalesce(p.claims."{0}", p.identity.claims."{0}")'
_UPN = _CLAIM.format("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")
_ACTOR = (
    f"coalesce(p.caller, {_UPN}, {_CLAIM.format('http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name')}, "
    f"{_CLAIM.format('http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress')}, {_CLAIM.format('appid')})"
)
_RESULT = "lower(coalesce(p.status.value, p.resultType))"

COLUMNS = {
    "time": "utc_ts(coalesce(p.eventTimestamp, p.time))",
    "account": "coalesce(p.subscriptionId, regexp_extract(p.resourceId, '(?i)/subscriptions/([^/]+)', 1), p.tenantId)",
    "region": "p.location",
    "service": f"coalesce(p.resourceProviderName.value, nullif(split_part({_OPERATION}, '/', 1), ''))",
    "operation": _OPERATION,
    "actor": _ACTOR,
    "actor_type": f"CASE WHEN lower({_CLAIM.format('idtyp')}) = 'app' THEN 'ServicePrincipal' "
    f"WHEN lower({_CLAIM.format('idtyp')}) = 'user' OR {_ACTOR} LIKE '%@%' THEN 'User' "
    f"WHEN {_CLAIM.format('appid')} IS NOT NULL THEN 'ServicePrincipal' END",
    "session": f"{_CLAIM.format('uti')}",
    "source_ip": f"coalesce(p.httpRequest.clientIpAddress, p.callerIpAddress, {_CLAIM.format('ipaddr')})",
    "user_agent": "NULL",
    "resources": "list_filter([p.resourceId], lambda r: r IS NOT NULL)",
    "status": f"CASE WHEN {_RESULT} IN ('failed', 'failure') THEN 'failure' "
    f"WHEN {_RESULT} IS NULL THEN 'unknown' ELSE 'success' END",
    "error_code": f"CASE WHEN {_RESULT} IN ('failed', 'failure') "
    "THEN coalesce(p.subStatus.value, p.properties.statusCode, p.resultSignature) END",
    "request_id": "coalesce(p.httpRequest.clientRequestId, p.correlationId)",
    "event_id": "p.eventDataId",
    "read_only": f"is_read_operation({_OPERATION})",
}
