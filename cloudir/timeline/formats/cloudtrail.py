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
ERROR_CODE = "nullif(trim(p.errorCode), '')"
"""A record carries ``errorCode`` only when the request failed; an export that writes every column of the record
schema (query results of Athena's CloudTrail table saved as CSV, then as JSON) leaves it empty on success."""


def outcome_columns(error_code: str, event_source: str, response_elements: str, error_message: str) -> dict[str, str]:
    """SQL of ``status`` and ``error_code`` from a trail record's fields, as each shape of the record names them.

    AWS sign-in events report a refusal in ``responseElements.<eventName>`` and ``errorMessage``, no ``errorCode``.
    """
    sign_in_failed = (
        f"coalesce({event_source} = 'signin.amazonaws.com' AND 'Failure' IN ("
        + ", ".join(f"{response_elements}->>'$.{name}'" for name in SIGN_IN_OUTCOMES)
        + "), false)"
    )
    return {
        "status": f"CASE WHEN {error_code} IS NULL AND NOT {sign_in_failed} THEN 'success' ELSE 'failure' END",
        "error_code": (
            f"coalesce({error_code}, CASE WHEN {sign_in_failed} THEN coalesce({error_message}, 'Failure') END)"
        ),
    }


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
    **outcome_columns(ERROR_CODE, "p.eventSource", "p.responseElements", "p.errorMessage"),
    "request_id": "p.requestID",
    "event_id": "p.eventID",
    "read_only": "coalesce(try_cast(p.readOnly AS BOOLEAN), is_read_operation(p.eventName))",
}
