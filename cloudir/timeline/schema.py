"""The timeline schema: the contract between normalizers, analyzers, reports and responders' SQL.

``events`` is close to OCSF API Activity (class 6003); ``events_ocsf`` presents it with OCSF names.
Times are UTC (``TIMESTAMP`` without zone, always UTC). ``raw`` keeps the original record.
"""

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events (
    event_uid       VARCHAR NOT NULL,     -- cloud || ':' || event_id; unique (ingest drops duplicates)
    time            TIMESTAMP NOT NULL,   -- UTC
    cloud           VARCHAR NOT NULL,     -- aws | azure | gcp
    source_format   VARCHAR NOT NULL,     -- cloudtrail | gcp_audit | azure_activity | entra_signin | entra_audit
    account         VARCHAR,              -- AWS account id / Azure subscription or tenant / GCP project
    region          VARCHAR,
    service         VARCHAR,              -- iam, ec2, s3 / compute.googleapis.com / Microsoft.Compute
    operation       VARCHAR NOT NULL,     -- eventName / methodName / operationName, normalized (see docs/timeline.md)
    actor           VARCHAR,              -- ARN, principal email, UPN or object id
    actor_type      VARCHAR,              -- IAMUser, AssumedRole, Root, AWSService, ServiceAccount, User, ...
    session         VARCHAR,              -- access key id / session name / token or correlation id
    source_ip       VARCHAR,
    user_agent      VARCHAR,
    resources       VARCHAR[],            -- ARNs / resource names / resource ids touched
    status          VARCHAR,              -- success | failure
    error_code      VARCHAR,
    request_id      VARCHAR,
    event_id        VARCHAR NOT NULL,
    read_only       BOOLEAN,
    source_file     VARCHAR,              -- file the record was read from
    source_position BIGINT,               -- record index (0-based) inside that file
    is_responder    BOOLEAN NOT NULL DEFAULT false,  -- the tool's own calls: request id recorded in the custody log
    raw             JSON USING COMPRESSION zstd,  -- the original record (minified)
    content_hash    BLOB,                 -- SHA-256 of raw (lower(hex(content_hash)) = sha256(raw::VARCHAR)), set
                                          -- when another record has this cloud and event_id (identity compared)
    id_collision    BOOLEAN DEFAULT false,  -- another event has this cloud and event_id, other content
    operation_original VARCHAR            -- the operation as the record spells it, when normalizing changed it
);
CREATE TABLE IF NOT EXISTS quarantine (
    source_file     VARCHAR NOT NULL,
    source_position BIGINT,               -- record index in the file; NULL for the whole file
    reason          VARCHAR NOT NULL,
    raw             VARCHAR,              -- the record (or the rest of the file), invalid UTF-8 as U+FFFD
    raw_hex         VARCHAR,              -- the original bytes when they were not valid UTF-8
    repaired        BOOLEAN NOT NULL DEFAULT false,  -- a note: the record was kept after repair, not refused
    target_table    VARCHAR NOT NULL DEFAULT 'events'  -- the table the record was meant for
);
-- One row per file read: records = events + duplicates + quarantined (events: rows added to target_table).
CREATE TABLE IF NOT EXISTS ingest_files (
    file            VARCHAR NOT NULL,     -- as source_file
    sha256          VARCHAR NOT NULL,     -- of the file's bytes as stored
    target_table    VARCHAR NOT NULL,     -- events (flows for network flow logs)
    format          VARCHAR NOT NULL,     -- record formats found, comma-separated
    records         BIGINT NOT NULL,
    events          BIGINT NOT NULL,
    duplicates      BIGINT NOT NULL,
    quarantined     BIGINT NOT NULL,
    repaired        BIGINT NOT NULL,      -- records kept after repair (invalid UTF-8 decoded with U+FFFD)
    id_collisions   BIGINT NOT NULL,      -- new events whose id another event with other content has
    bytes           BIGINT NOT NULL,      -- file size
    reader          VARCHAR NOT NULL,     -- json | jsonl | csv | unknown
    ingested_at     TIMESTAMP NOT NULL
);
"""

# Built after the first bulk load (later loads maintain it): per-actor lookups stay fast on millions of rows.
EVENTS_INDEXES = "CREATE INDEX IF NOT EXISTS events_actor ON events (actor)"

EVENTS_COLUMNS = (
    "event_uid",
    "time",
    "cloud",
    "source_format",
    "account",
    "region",
    "service",
    "operation",
    "actor",
    "actor_type",
    "session",
    "source_ip",
    "user_agent",
    "resources",
    "status",
    "error_code",
    "request_id",
    "event_id",
    "read_only",
    "source_file",
    "source_position",
    "is_responder",
    "raw",
    "content_hash",
    "id_collision",
    "operation_original",
)

_LAST_WORD = "lower(regexp_extract(operation, '([^./:]+)$', 1))"
# OCSF API Activity activity_id from the operation's verb (the last word of eventName / methodName / operation).
_ACTIVITY_VERBS = (
    (
        2,
        "get|list|describe|head|lookup|search|read|select|batchget|scan|query|aggregatedlist|testiampermissions|sign-in",
    ),
    (4, "delete|remove|terminate|revoke|destroy|purge|deregister|disable"),
    (1, "create|put|run|add|insert|register|import|allocate|copy|generate|issue|upload"),
    (
        3,
        "update|modify|set|attach|detach|enable|patch|write|associate|change|reset|replace|tag|untag|stop|start|restore",
    ),
)
_ACTIVITY_ID = (
    "CASE "
    + " ".join(f"WHEN regexp_matches({_LAST_WORD}, '^({verbs})') THEN {uid}" for uid, verbs in _ACTIVITY_VERBS)
    + " ELSE 99 END"
)

EVENTS_OCSF_VIEW = f"""
CREATE OR REPLACE VIEW events_ocsf AS
SELECT
    6003 AS class_uid,
    'API Activity' AS class_name,
    6 AS category_uid,
    'Application Activity' AS category_name,
    activity_id,
    CASE activity_id WHEN 1 THEN 'Create' WHEN 2 THEN 'Read' WHEN 3 THEN 'Update' WHEN 4 THEN 'Delete'
        ELSE 'Other' END AS activity_name,
    600300 + activity_id AS type_uid,
    time,
    CASE status WHEN 'success' THEN 1 WHEN 'failure' THEN 2 ELSE 0 END AS status_id,
    CASE status WHEN 'success' THEN 'Success' WHEN 'failure' THEN 'Failure' ELSE 'Unknown' END AS status,
    error_code AS status_code,
    1 AS severity_id,
    'Informational' AS severity,
    {{'operation': operation, 'service': {{'name': service}}, 'request': {{'uid': request_id}}}} AS api,
    {{'user': {{'uid': actor, 'type': actor_type}}, 'session': {{'uid': session}}}} AS actor,
    {{'ip': source_ip}} AS src_endpoint,
    {{'user_agent': user_agent}} AS http_request,
    {{'provider': CASE cloud WHEN 'aws' THEN 'AWS' WHEN 'azure' THEN 'Azure' WHEN 'gcp' THEN 'GCP' ELSE cloud END,
      'account': {{'uid': account}}, 'region': region}} AS cloud,
    list_transform(resources, lambda r: {{'uid': r}}) AS resources,
    {{'uid': event_uid, 'original_uid': event_id, 'log_name': source_format, 'log_provider': source_file,
      'product': {{'name': 'cloudir'}}, 'version': '1.3.0'}} AS metadata,
    read_only,
    is_responder,
    raw AS raw_data
FROM (SELECT *, {_ACTIVITY_ID} AS activity_id FROM events)
"""
