"""Log Analytics ``AzureActivity`` rows, JSON or the portal's CSV export (``OperationNameValue`` upper-cased)."""

from cloudir.timeline.formats.log_analytics import cell, detect, time_fields, time_of

NAME = "la_azure_activity"
CLOUD = "azure"
DETECT = detect("OperationNameValue")

FIELDS = {
    **time_fields("TimeGenerated", "EventSubmissionTimestamp"),
    "OperationNameValue": "VARCHAR",
    "OperationName": "VARCHAR",
    "Caller": "VARCHAR",
    "CallerIpAddress": "VARCHAR",
    "ResourceId": "VARCHAR",
    "_ResourceId": "VARCHAR",
    "SubscriptionId": "VARCHAR",
    "ResourceProviderValue": "VARCHAR",
    "ActivityStatusValue": "VARCHAR",
    "ActivitySubstatusValue": "VARCHAR",
    "CorrelationId": "VARCHAR",
    "EventDataId": "VARCHAR",
    "Claims": "JSON",
    "Properties_d": "JSON",
}

_CLAIMS = cell("Claims")
_STATUS = "lower(p.ActivityStatusValue)"

COLUMNS = {
    "time": time_of("TimeGenerated", "EventSubmissionTimestamp"),
    "account": "coalesce(nullif(p.SubscriptionId, ''), "
    "regexp_extract(coalesce(p.ResourceId, p._ResourceId), '(?i)/subscriptions/([^/]+)', 1))",
    "region": "NULL",
    "service": "p.ResourceProviderValue",
    "operation": "coalesce(p.OperationNameValue, p.OperationName)",
    "actor": "nullif(p.Caller, '')",
    "actor_type": f"CASE WHEN {_CLAIMS} ->> 'idtyp' = 'app' OR p.Caller NOT LIKE '%@%' THEN 'ServicePrincipal' "
    "WHEN p.Caller LIKE '%@%' THEN 'User' END",
    "session": f"{_CLAIMS} ->> 'uti'",
    "source_ip": "nullif(p.CallerIpAddress, '')",
    "user_agent": "NULL",
    "resources": "list_filter([coalesce(p.ResourceId, p._ResourceId)], lambda r: nullif(r, '') IS NOT NULL)",
    "status": f"CASE WHEN {_STATUS} IN ('success', 'succeeded') THEN 'success' "
    f"WHEN {_STATUS} IN ('failure', 'failed') THEN 'failure' ELSE 'unknown' END",
    "error_code": "nullif(p.ActivitySubstatusValue, '')",
    "request_id": "p.CorrelationId",
    "event_id": "p.EventDataId",
    "read_only": "regexp_matches(coalesce(p.OperationNameValue, ''), '/read$', 'i')",
}
