"""CloudTrail rows exported as CSV (console "Download events" and alerting-tool exports).

The reader normalizes header names (``Event Name`` -> ``event_name``). Nested values may be
Python-repr text (``{'type': 'AWSAccount'}``); ``py_json`` turns them into JSON.
"""

NAME = "cloudtrail_csv"
CLOUD = "aws"
DETECT = "list_contains(keys, 'event_name') AND list_contains(keys, 'event_id')"

_IDENTITY = (
    "json_transform(py_json(p.user_id), "
    '\'{"type":"VARCHAR","arn":"VARCHAR","accountId":"VARCHAR","principalId":"VARCHAR",'
    '"userName":"VARCHAR","accessKeyId":"VARCHAR"}\')'
)

FIELDS = dict.fromkeys(
    (
        "event_id",
        "event_name",
        "event_time",
        "event_datetime",
        "event_source",
        "user_id",
        "user_name",
        "aws_access_key",
        "aws_region",
        "error_code",
        "request_id",
        "source_ip",
        "source_ip_address",
        "request_user_agent",
        "user_agent",
        "request_parameters",
        "resource_name",
    ),
    "VARCHAR",
)

COLUMNS = {
    "time": "utc_ts(coalesce(p.event_time, p.event_datetime))",
    "account": f"nullif({_IDENTITY}.accountId, 'ANONYMOUS_PRINCIPAL')",
    "region": "p.aws_region",
    "service": "coalesce(regexp_replace(p.event_source, '\\.amazonaws\\.com$', ''), "
    "CASE WHEN p.request_parameters LIKE '%bucketName%' THEN 's3' END)",
    "operation": "p.event_name",
    "actor": f"coalesce({_IDENTITY}.arn, nullif({_IDENTITY}.principalId, ''), p.user_name, {_IDENTITY}.accountId)",
    "actor_type": f"coalesce({_IDENTITY}.type, CASE WHEN p.user_name IS NOT NULL THEN 'IAMUser' END)",
    "session": f"coalesce(p.aws_access_key, {_IDENTITY}.accessKeyId)",
    "source_ip": "coalesce(p.source_ip, p.source_ip_address)",
    "user_agent": "coalesce(p.request_user_agent, p.user_agent)",
    "resources": 'list_filter([json_transform(py_json(p.request_parameters), \'{"bucketName":"VARCHAR"}\')'
    ".bucketName, p.resource_name], lambda r: r IS NOT NULL)",
    "status": "CASE WHEN nullif(p.error_code, '') IS NULL THEN 'success' ELSE 'failure' END",
    "error_code": "nullif(p.error_code, '')",
    "request_id": "p.request_id",
    "event_id": "p.event_id",
    "read_only": "is_read_operation(p.event_name)",
}
