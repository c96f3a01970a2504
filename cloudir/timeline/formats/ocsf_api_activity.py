"""OCSF 1.x API Activity (``class_uid`` 6003) and the CloudTrail classes Amazon Security Lake writes.

Security Lake stores CloudTrail management events as OCSF (Parquet; JSON Lines when queried or exported):
OCSF 1.1 (Security Lake v2) writes every event as API Activity with ``actor.user.uid`` the ARN and
``uid_alt`` the principal id; OCSF 1.0.0-rc.2 (v1) used Account Change (3001), Authentication (3002) and
API Activity with ``actor.user.uuid`` the ARN and ``uid`` the principal id. ``time`` is epoch milliseconds.
"""

NAME = "ocsf_api_activity"
CLOUD = "aws"
DETECT = (
    "list_contains(keys, 'class_uid') AND list_contains(keys, 'api') "
    "AND json_extract_string(rec, '$.class_uid') IN ('6003', '3001', '3002') "
    "AND json_type(rec, '$.api.operation') = 'VARCHAR'"
)
CLOUD_SQL = (
    "CASE WHEN p.cloud.provider ILIKE 'azure%' OR p.cloud.provider ILIKE 'microsoft%' THEN 'azure' "
    "WHEN p.cloud.provider ILIKE 'gcp%' OR p.cloud.provider ILIKE 'google%' THEN 'gcp' ELSE 'aws' END"
)

FIELDS = {
    "time": "BIGINT",
    "time_dt": "VARCHAR",
    "status": "VARCHAR",
    "status_id": "INTEGER",
    "status_detail": "VARCHAR",
    "metadata": {"uid": "VARCHAR"},
    "api": {
        "operation": "VARCHAR",
        "service": {"name": "VARCHAR"},
        "request": {"uid": "VARCHAR"},
        "response": {"error": "VARCHAR", "message": "VARCHAR"},
    },
    "actor": {
        "user": {
            "type": "VARCHAR",
            "uid": "VARCHAR",
            "uid_alt": "VARCHAR",
            "uuid": "VARCHAR",
            "name": "VARCHAR",
            "credential_uid": "VARCHAR",
            "account_uid": "VARCHAR",
            "account": {"uid": "VARCHAR"},
        },
        "session": {"issuer": "VARCHAR"},
        "invoked_by": "VARCHAR",
    },
    "src_endpoint": {"ip": "VARCHAR", "domain": "VARCHAR"},
    "http_request": {"user_agent": "VARCHAR"},
    "cloud": {"provider": "VARCHAR", "region": "VARCHAR", "account": {"uid": "VARCHAR"}},
    "resources": [{"uid": "VARCHAR"}],
    "unmapped": "JSON",
}

_USER = "p.actor.user"
_ERROR = "nullif(trim(p.api.response.error), '')"
_FAILED = f"({_ERROR} IS NOT NULL OR p.status_id = 2 OR lower(p.status) = 'failure')"


def _arn(value: str) -> str:
    return f"CASE WHEN starts_with({value}, 'arn:') THEN {value} END"


COLUMNS = {
    "time": "coalesce(utc_ts(p.time_dt), epoch_ms(p.time))",
    "account": f"coalesce(p.cloud.account.uid, {_USER}.account.uid, {_USER}.account_uid)",
    "region": "p.cloud.region",
    "service": "regexp_replace(p.api.service.name, '\\.amazonaws\\.com$', '')",
    "operation": "p.api.operation",
    "actor": (
        f"coalesce({_arn(f'{_USER}.uid')}, {_arn(f'{_USER}.uuid')}, p.actor.session.issuer, p.actor.invoked_by, "
        f"{_USER}.uid_alt, {_USER}.uid, {_USER}.name)"
    ),
    "actor_type": f"{_USER}.type",
    "session": f"{_USER}.credential_uid",
    "source_ip": "coalesce(p.src_endpoint.ip, p.src_endpoint.domain)",
    "user_agent": "p.http_request.user_agent",
    "resources": "list_filter(list_transform(p.resources, lambda r: r.uid), lambda a: a IS NOT NULL)",
    "status": f"CASE WHEN {_FAILED} THEN 'failure' WHEN p.status_id = 1 OR lower(p.status) = 'success' "
    "THEN 'success' ELSE 'unknown' END",
    "error_code": f"coalesce({_ERROR}, CASE WHEN {_FAILED} THEN "
    "coalesce(p.api.response.message, p.status_detail, 'Failure') END)",
    "request_id": "p.api.request.uid",
    "event_id": "p.metadata.uid",
    "read_only": "coalesce(try_cast(p.unmapped ->> 'readOnly' AS BOOLEAN), is_read_operation(p.api.operation))",
}
