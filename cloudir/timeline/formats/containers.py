"""Wrappers around records. SQL over ``doc`` (JSON) and ``keys`` (its top-level keys); ``records`` is JSON[].

Records held as JSON text in a string (LookupEvents ``CloudTrailEvent``, CloudWatch ``message``) are minified
(``json()``) like every other record, so an event's content hash is the same in every shape it arrives in.

Order matters: the first match wins; a document matching none is one record.
"""

CONTAINERS = (
    # A bare JSON array of records (Stratus Red Team detonations, `aws cloudtrail lookup-events` jq output).
    {
        "name": "json_array",
        "detect": "len(keys) = 0 AND starts_with(ltrim(doc), '[')",
        "records": "json_extract(doc, '$[*]')",
    },
    # CloudTrail S3 delivery files: {"Records": [...]}.
    {
        "name": "cloudtrail_records",
        "detect": "list_contains(keys, 'Records') AND json_type(doc, '$.Records') = 'ARRAY'",
        "records": "json_extract(doc, '$.Records[*]')",
    },
    # LookupEvents response pages: {"Events": [{"CloudTrailEvent": "<json string>", ...}], "NextToken": ...}.
    {
        "name": "cloudtrail_lookup_page",
        "detect": "list_contains(keys, 'Events') AND json_type(doc, '$.Events') = 'ARRAY'",
        "records": (
            "list_transform(json_extract(doc, '$.Events[*]'), "
            "lambda e: coalesce(json(try((e ->> 'CloudTrailEvent')::JSON)), e))"
        ),
    },
    # One LookupEvents event per document or line (`aws cloudtrail lookup-events | jq -c '.Events[]'`, the shape
    # Plaso's aws_cloudtrail_log parser reads): {"EventId": ..., "CloudTrailEvent": "<json string>", ...}.
    {
        "name": "cloudtrail_lookup_event",
        "detect": "list_contains(keys, 'CloudTrailEvent') AND list_contains(keys, 'EventId')",
        "records": "[coalesce(json(try((doc ->> 'CloudTrailEvent')::JSON)), doc)]",
    },
    # GCP logging entries:list pages: {"entries": [...], "nextPageToken": ...}.
    {
        "name": "gcp_entries_page",
        "detect": "list_contains(keys, 'entries') AND json_type(doc, '$.entries') = 'ARRAY'",
        "records": "json_extract(doc, '$.entries[*]')",
    },
    # Admin SDK Reports activities.list pages: {"kind": "admin#reports#activities", "items": [...]}; an empty
    # page has no "items".
    {
        "name": "workspace_reports_page",
        "detect": "list_contains(keys, 'kind') AND doc ->> 'kind' = 'admin#reports#activities'",
        "records": "coalesce(json_extract(doc, '$.items[*]'), []::JSON[])",
    },
    # Azure REST list pages: {"value": [...], "nextLink": ...}.
    {
        "name": "azure_rest_page",
        "detect": "list_contains(keys, 'value') AND json_type(doc, '$.value') = 'ARRAY'",
        "records": "json_extract(doc, '$.value[*]')",
    },
    # Azure diagnostic settings (Event Hub / storage): {"records": [...]}.
    {
        "name": "azure_diagnostic_records",
        "detect": "list_contains(keys, 'records') AND json_type(doc, '$.records') = 'ARRAY'",
        "records": "json_extract(doc, '$.records[*]')",
    },
    # CloudWatch Logs filter-log-events / get-log-events output: {"events": [{"message": "<json string>", ...}]}
    # (EKS control-plane audit logs, a trail delivered to CloudWatch Logs); the message is the record.
    {
        "name": "cloudwatch_logs_events",
        "detect": "list_contains(keys, 'events') AND json_type(doc, '$.events') = 'ARRAY'",
        "records": (
            "list_transform(json_extract(doc, '$.events[*]'), "
            "lambda e: coalesce(json(try((e ->> 'message')::JSON)), e))"
        ),
    },
    # CloudTrail Lake get-query-results: {"QueryResultRows": [[{"eventID": ...}, {"eventTime": ...}], ...]}.
    {
        "name": "cloudtrail_lake_results",
        "detect": "list_contains(keys, 'QueryResultRows') AND json_type(doc, '$.QueryResultRows') = 'ARRAY'",
        "records": "list_transform(json_extract(doc, '$.QueryResultRows[*]'), "
        "lambda row: list_reduce(json_extract(row, '$[*]'), lambda a, b: json_merge_patch(a, b)))",
    },
    # Panther rule test cases: the raw record is in "event".
    {
        "name": "panther_test_case",
        "detect": "list_contains(keys, 'event') AND list_contains(keys, 'log_type')",
        "records": "[json_extract(doc, '$.event')]",
    },
)
