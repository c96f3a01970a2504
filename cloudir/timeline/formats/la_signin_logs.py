"""Log Analytics ``SigninLogs`` (and ``AADNonInteractiveUserSignInLogs``) rows, JSON or the portal's CSV export."""

from cloudir.timeline.formats.log_analytics import cell, detect, time_fields, time_of

NAME = "la_signin_logs"
CLOUD = "azure"
DETECT = detect("ResultType", "AppDisplayName", "UserPrincipalName")

FIELDS = {
    **time_fields("TimeGenerated", "CreatedDateTime"),
    "OperationName": "VARCHAR",
    "UserPrincipalName": "VARCHAR",
    "UserId": "VARCHAR",
    "ServicePrincipalName": "VARCHAR",
    "AppDisplayName": "VARCHAR",
    "ResourceDisplayName": "VARCHAR",
    "IPAddress": "VARCHAR",
    "Location": "VARCHAR",
    "UserAgent": "VARCHAR",
    "ResultType": "VARCHAR",
    "CorrelationId": "VARCHAR",
    "Id": "VARCHAR",
    "TenantId": "VARCHAR",
    "UniqueTokenIdentifier": "VARCHAR",
    "SessionId": "VARCHAR",
    "UserType": "VARCHAR",
    "LocationDetails": "JSON",
}

COLUMNS = {
    "time": time_of("TimeGenerated", "CreatedDateTime"),
    "account": "p.TenantId",
    "region": f"coalesce(nullif(p.Location, ''), {cell('LocationDetails')} ->> 'countryOrRegion')",
    "service": "coalesce(p.ResourceDisplayName, p.AppDisplayName)",
    "operation": "coalesce(p.OperationName, 'Sign-in activity')",
    "actor": "coalesce(p.UserPrincipalName, p.ServicePrincipalName, p.UserId)",
    "actor_type": "CASE WHEN p.UserPrincipalName IS NOT NULL THEN 'User' "
    "WHEN p.ServicePrincipalName IS NOT NULL THEN 'ServicePrincipal' END",
    "session": "coalesce(nullif(p.UniqueTokenIdentifier, ''), nullif(p.SessionId, ''), p.CorrelationId)",
    "source_ip": "p.IPAddress",
    "user_agent": "p.UserAgent",
    "resources": "list_filter([p.AppDisplayName, p.ResourceDisplayName], lambda r: nullif(r, '') IS NOT NULL)",
    "status": "CASE WHEN p.ResultType IS NULL THEN 'unknown' WHEN p.ResultType = '0' THEN 'success' ELSE 'failure' END",
    "error_code": "nullif(p.ResultType, '0')",
    "request_id": "p.CorrelationId",
    "event_id": "p.Id",
    "read_only": "NULL",
}
