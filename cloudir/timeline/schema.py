"""The timeline schema: the contract between normalizers, analyzers, reports and responders' SQL.

``events`` is close to OCSF API Activity (class 6003); ``events_ocsf`` presents it with OCSF names.
Times are UTC (``TIMESTAMP`` without zone, always UTC). ``raw`` keeps the original record.
"""

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events (
    event_uid       VARCHAR PRIMARY KEY,  -- cloud || ':' || event_id; the de-duplication key
    time            TIMESTAMP NOT NULL,   -- UTC
    cloud           VARCHAR NOT NULL,     -- aws | azure | gcp
    source_format   VARCHAR NOT NULL,     -- cloudtrail | gcp_audit | azure_activity | entra_signin | entra_audit
    account         VARCHAR,              -- AWS account id / Azure subscription or tenant / GCP project
    region          VARCHAR,
    service         VARCHAR,              -- iam, ec2, s3 / compute.googleapis.com / Microsoft.Compute
    operation       VARCHAR NOT NULL,     -- eventName / methodName / operationName
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
    is_responder    BOOLEAN NOT NULL DEFAULT false,  -- the tool's own calls (cloudir user agent or custody request id)
    raw             JSON                  -- the original record
);
CREATE TABLE IF NOT EXISTS quarantine (
    source_file     VARCHAR NOT NULL,
    source_position BIGINT,
    reason          VARCHAR NOT NULL,
    raw             VARCHAR
);
"""

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
)
