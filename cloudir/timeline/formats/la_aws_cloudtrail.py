"""Microsoft Sentinel / Log Analytics ``AWSCloudTrail`` rows (the AWS S3 connector's table), JSON or portal CSV.

``az monitor log-analytics query`` and data export write JSON rows with every column (empty strings for absent
values); the portal's CSV export writes ``TimeGenerated [UTC]`` and ``Resources`` / ``ResponseElements`` as JSON
text. ``TimeGenerated`` is the record's ``eventTime``.
"""

from cloudir.timeline.formats.cloudtrail import outcome_columns
from cloudir.timeline.formats.log_analytics import cell, detect, time_fields, time_of

NAME = "la_aws_cloudtrail"
CLOUD = "aws"
DETECT = detect("EventName", "EventSource", "AwsEventId")

_TEXT = (
    "EventSource", "EventName", "AWSRegion", "RecipientAccountId", "SourceIpAddress", "UserAgent", "ErrorCode",
    "ErrorMessage", "AwsRequestId_", "AwsRequestId", "AwsEventId", "ReadOnly", "UserIdentityType",
    "UserIdentityArn", "UserIdentityAccountId", "UserIdentityPrincipalid", "UserIdentityUserName",
    "UserIdentityAccessKeyId", "UserIdentityInvokedBy", "SessionIssuerArn",
)  # fmt: skip
FIELDS = {
    **time_fields("TimeGenerated"),
    **dict.fromkeys(_TEXT, "VARCHAR"),
    "Resources": "JSON",
    "ResponseElements": "JSON",
}


def _value(column: str) -> str:
    return f"nullif(trim(p.{column}), '')"


_ACTOR = (
    "UserIdentityArn",
    "SessionIssuerArn",
    "UserIdentityInvokedBy",
    "UserIdentityPrincipalid",
    "UserIdentityUserName",
)

_ARNS = f"json_extract_string({cell('Resources')}, '$[*].ARN')"
COLUMNS = {
    "time": time_of("TimeGenerated"),
    "account": f"coalesce({_value('RecipientAccountId')}, {_value('UserIdentityAccountId')})",
    "region": _value("AWSRegion"),
    "service": f"regexp_replace({_value('EventSource')}, '\\.amazonaws\\.com$', '')",
    "operation": "p.EventName",
    "actor": f"coalesce({', '.join(_value(column) for column in _ACTOR)})",
    "actor_type": _value("UserIdentityType"),
    "session": _value("UserIdentityAccessKeyId"),
    "source_ip": _value("SourceIpAddress"),
    "user_agent": _value("UserAgent"),
    "resources": f"nullif(list_filter({_ARNS}, lambda a: a IS NOT NULL), [])",
    **outcome_columns(_value("ErrorCode"), _value("EventSource"), cell("ResponseElements"), _value("ErrorMessage")),
    "request_id": f"coalesce({_value('AwsRequestId_')}, {_value('AwsRequestId')})",
    "event_id": _value("AwsEventId"),
    "read_only": f"coalesce(try_cast({_value('ReadOnly')} AS BOOLEAN), is_read_operation(p.EventName))",
}
