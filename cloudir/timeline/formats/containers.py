"""Wrappers around records. SQL over ``doc`` (JSON) and ``keys`` (its top-level keys); ``records`` is JSON[].

Records held as JSON text in a string (LookupEvents ``CloudTrailEvent``, CloudWatch ``message``) are minified
(``json()``) like every other record, so an event's content hash is the same in every shape it arrives in.

Forwarder and SIEM exports (Splunk ``_raw``, Elastic ``event.original``, a Pub/Sub push's base64 ``message.data``)
carry the record as text: the record is that text parsed, so it maps, hashes and deduplicates exactly as the record
in its native shape; text that is not a JSON object leaves the wrapper as the record (quarantined as unrecognized).
Only the wrapper's own keys choose the container: values inside the record never do.

Order matters: the first match wins; a document matching none is one record.
"""


def _message_data(message: str) -> str:
    """SQL: a Pub/Sub message as the Splunk Add-on for Google Cloud writes it ({"data": {LogEntry}, "message_id",
    "publish_time", "attributes"}) as its LogEntry; any other object as itself."""
    return (
        f"CASE WHEN json_type({message}, '$.data') = 'OBJECT' AND json_type({message}, '$.publish_time') IS NOT NULL "
        f"THEN json({message} -> '$.data') ELSE json({message}) END"
    )


def _embedded(text: str, wrapper: str) -> str:
    """SQL: the JSON object held as text in ``text`` (minified), else ``wrapper`` itself."""
    parsed = f"try(({text})::JSON)"
    return f"coalesce(CASE WHEN json_type({parsed}) = 'OBJECT' THEN {_message_data(parsed)} END, {wrapper})"


def _ecs_original(doc: str) -> str:
    """SQL: an Elastic (ECS) document's ``event.original`` record (nested or dotted key), else the document."""
    return _embedded(f"coalesce({doc} ->> '$.event.original', {doc} ->> '$.\"event.original\"')", doc)


_SPLUNK_RAW = "json_type(doc, '$.result._raw') = 'VARCHAR'"
_ECS = (
    "list_contains(keys, '@timestamp') AND "
    "(json_type(doc, '$.event.original') = 'VARCHAR' OR json_type(doc, '$.\"event.original\"') = 'VARCHAR')"
)

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
    # (EKS control-plane audit logs, a trail delivered to CloudWatch Logs); the message is the record. A Reports
    # API activity (one item of an activities.list page, `jq -c '.items[]'`) also has an "events" array: its own.
    {
        "name": "cloudwatch_logs_events",
        "detect": "list_contains(keys, 'events') AND json_type(doc, '$.events') = 'ARRAY' "
        "AND coalesce(doc ->> 'kind', '') <> 'admin#reports#activity'",
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
    # Splunk search exports (`splunk search ... -output json`, REST ``export?output_mode=json``): one
    # {"preview": false, "result": {"_raw": "<record>", "sourcetype": "aws:cloudtrail", ...}} per line.
    {
        "name": "splunk_result",
        "detect": f"list_contains(keys, 'result') AND {_SPLUNK_RAW}",
        "records": "[" + _embedded("doc ->> '$.result._raw'", "doc -> '$.result'") + "]",
    },
    # Splunk REST ``results?output_mode=json`` pages: {"preview": false, "fields": [...], "results": [{"_raw": ...}]}
    # (streamed element by element when large: see reader.STREAM_KEYS).
    {
        "name": "splunk_results_page",
        "detect": "list_contains(keys, 'results') AND json_type(doc, '$.results[0]._raw') = 'VARCHAR'",
        "records": "list_transform(json_extract(doc, '$.results[*]'), lambda r: "
        + _embedded("r ->> '_raw'", "r")
        + ")",
    },
    # One Splunk event with its fields (a results row saved as JSON Lines, a row of the CSV export):
    # {"_raw": "<record>", "_time": ...}.
    {
        "name": "splunk_event",
        "detect": "list_contains(keys, '_raw') AND json_type(doc, '$._raw') = 'VARCHAR'",
        "records": "[" + _embedded("doc ->> '_raw'", "doc") + "]",
    },
    # Elasticsearch search responses: {"hits": {"hits": [{"_index": ..., "_source": {ECS document}}]}}.
    {
        "name": "elastic_search_hits",
        "detect": "list_contains(keys, 'hits') AND json_type(doc, '$.hits.hits') = 'ARRAY'",
        "records": "list_transform(json_extract(doc, '$.hits.hits[*]'), lambda h: "
        + _ecs_original("(h -> '_source')")
        + ")",
    },
    # One Elasticsearch hit per line (elasticdump, `_search` hits saved with jq): {"_index": ..., "_source": {...}}.
    {
        "name": "elastic_hit",
        "detect": "list_contains(keys, '_source') AND list_contains(keys, '_index') "
        "AND json_type(doc, '$._source') = 'OBJECT'",
        "records": "[" + _ecs_original("(doc -> '_source')") + "]",
    },
    # Filebeat / Elastic Agent ECS documents (aws.cloudtrail, azure.*, gcp.audit) keeping ``event.original``.
    {
        "name": "elastic_ecs_original",
        "detect": _ECS,
        "records": f"[{_ecs_original('doc')}]",
    },
    # GCP Pub/Sub push deliveries (a log sink to a topic, pushed): {"message": {"data": "<base64 LogEntry>",
    # "messageId": ...}, "subscription": "projects/.../subscriptions/..."}.
    {
        "name": "pubsub_push",
        "detect": "list_contains(keys, 'message') AND list_contains(keys, 'subscription') "
        "AND json_type(doc, '$.message.data') = 'VARCHAR'",
        "records": "[" + _embedded("decode(from_base64(doc ->> '$.message.data'))", "doc") + "]",
    },
    # A Pub/Sub message with its LogEntry as an object (the Splunk Add-on for Google Cloud's events, saved alone).
    {
        "name": "pubsub_message",
        "detect": "list_contains(keys, 'data') AND list_contains(keys, 'publish_time')",
        "records": f"[{_message_data('doc')}]",
    },
    # Panther rule test cases: the raw record is in "event".
    {
        "name": "panther_test_case",
        "detect": "list_contains(keys, 'event') AND list_contains(keys, 'log_type')",
        "records": "[json_extract(doc, '$.event')]",
    },
)
