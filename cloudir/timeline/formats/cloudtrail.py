"""AWS CloudTrail records: S3 delivery, LookupEvents, bare arrays, JSON Lines and Logstash (``@timestamp``)."""

NAME = "cloudtrail"
CLOUD = "aws"
DETECT = (
    "list_contains(keys, 'eventName') AND (list_contains(keys, 'eventSource') OR list_contains(keys, 'eventVersion'))"
)

FIELDS = {
    "eventTime": "VARCHAR",
    "@timestamp": "VARCHAR",
    "eventSource": "VARCHAR",
    "eventName": "VARCHAR",
    "awsRegion": "VARCHAR",
    "recipientAccountId": "VARCHAR",
    "sourceIPAddress": "VARCHAR",
    "userAgent": "VARCHAR",
    "errorCode": "VARCHAR",
    "errorMessage": "VARCHAR",
    "responseElements": "JSON",
    "requestID": "VARCHAR",
    "eventID": "VARCHAR",
    "readOnly": "VARCHAR",
    "userIdentity": {
        "type": "VARCHAR",
        "arn": "VARCHAR",
        "accountId": "VARCHAR",
        "principalId": "VARCHAR",
        "userName": "VARCHAR",
        "accessKeyId": "VARCHAR",
        "invokedBy": "VARCHAR",
        "sessionContext": {"sessionIssuer": {"arn": "VARCHAR"}},
    },
    "resources": [{"ARN": "VARCHAR"}],
}

SIGN_IN_OUTCOMES = ("ConsoleLogin", "CheckMfa", "SwitchRole", "ExitRole", "RenewRole", "PasswordUpdated")
SIGN_IN_FAILED = (
    "coalesce(p.eventSource = 'signin.amazonaws.com' AND 'Failure' IN ("
    + ", ".join(f"p.responseElements->>'$.{name}'" for name in SIGN_IN_OUTCOMES)
    + "), false)"
)
"""AWS sign-in events report a refusal in ``responseElements.<eventName>`` and ``errorMessage``, no ``errorCode``."""
ERROR_CODE = "nullif(trim(p.errorCode), '')"
"""A record carries ``errorCode`` only when the request failed; an export that writes every column of the record
schema (query results of Athena's CloudTrail table saved as CSV, then as JSON) leaves it empty on success."""

COLUMNS = {
    "time": 'utc_ts(coalesce(p.eventTime, p."@timestamp"))',
    "account": "coalesce(p.recipientAccountId, p.userIdentity.accountId)",
    "region": "p.awsRegion",
    "service": "regexp_replace(p.eventSource, '\\.amazonaws\\.com$', '')",
    "operation": "p.eventName",
    "actor": (
        "coalesce(p.userIdentity.arn, p.userIdentity.sessionContext.sessionIssuer.arn, p.userIdentity.invokedBy, "
        "p.userIdentity.principalId, p.userIdentity.userName)"
    ),
    "actor_type": "p.userIdentity.type",
    "session": "p.userIdentity.accessKeyId",
    "source_ip": "p.sourceIPAddress",
    "user_agent": "p.userAgent",
    "resources": "list_filter(list_transform(p.resources, lambda r: r.ARN), lambda a: a IS NOT NULL)",
    "status": f"CASE WHEN {ERROR_CODE} IS NULL AND NOT {SIGN_IN_FAILED} THEN 'success' ELSE 'failure' END",
    "error_code": f"coalesce({ERROR_CODE}, CASE WHEN {SIGN_IN_FAILED} THEN coalesce(p.errorMessage, 'Failure') END)",
    "request_id": "p.requestID",
    "event_id": "p.eventID",
    "read_only": "coalesce(try_cast(p.readOnly AS BOOLEAN), is_read_operation(p.eventName))",
}
