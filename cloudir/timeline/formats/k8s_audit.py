"""Kubernetes audit events (``audit.k8s.io`` ``Event``): EKS control-plane logs from CloudWatch Logs, any JSON Lines.

The cloud is AWS when the record came out of CloudWatch Logs or names an AWS identity (EKS maps IAM principals
into ``user.extra.arn``), else ``kubernetes`` (a cluster of unknown provider).
"""

from typing import Any

NAME = "k8s_audit"
CLOUD = "kubernetes"
DETECT = "list_contains(keys, 'auditID') AND list_contains(keys, 'verb') AND list_contains(keys, 'stage')"

FIELDS: dict[str, Any] = {
    "auditID": "VARCHAR",
    "stage": "VARCHAR",
    "requestURI": "VARCHAR",
    "verb": "VARCHAR",
    "user": {
        "username": "VARCHAR",
        "uid": "VARCHAR",
        "extra": {"arn": ["VARCHAR"], "accessKeyId": ["VARCHAR"], "sessionName": ["VARCHAR"]},
    },
    "impersonatedUser": {"username": "VARCHAR"},
    "sourceIPs": ["VARCHAR"],
    "userAgent": "VARCHAR",
    "objectRef": {
        "resource": "VARCHAR",
        "namespace": "VARCHAR",
        "name": "VARCHAR",
        "apiGroup": "VARCHAR",
        "subresource": "VARCHAR",
    },
    "responseStatus": {"code": "VARCHAR", "reason": "VARCHAR"},
    "requestReceivedTimestamp": "VARCHAR",
    "stageTimestamp": "VARCHAR",
}


def columns(p: str) -> dict[str, str]:
    """The event columns over the audit event struct ``p`` (shared with AKS, whose events are nested)."""
    resource = f"concat_ws('/', {p}.objectRef.resource, {p}.objectRef.subresource)"
    code = f"try_cast({p}.responseStatus.code AS INTEGER)"
    return {
        "time": f"utc_ts(coalesce({p}.requestReceivedTimestamp, {p}.stageTimestamp))",
        "account": "NULL",
        "region": "NULL",
        "service": "'kubernetes'",
        "operation": f"{p}.verb || CASE WHEN {resource} <> '' THEN ' ' || {resource} ELSE '' END",
        "actor": f"coalesce({p}.user.extra.arn[1], {p}.user.username)",
        "actor_type": f"CASE WHEN {p}.user.username LIKE 'system:serviceaccount:%' THEN 'ServiceAccount' "
        f"WHEN {p}.user.username LIKE 'system:%' OR {p}.user.username LIKE 'eks:%' THEN 'System' "
        f"WHEN {p}.user.username IS NOT NULL THEN 'User' END",
        "session": f"coalesce({p}.user.extra.accessKeyId[1], {p}.user.extra.sessionName[1])",
        "source_ip": f"{p}.sourceIPs[1]",
        "user_agent": f"{p}.userAgent",
        "resources": f"list_filter([concat_ws('/', CASE WHEN {p}.objectRef.namespace IS NOT NULL THEN 'namespaces/' "
        f"|| {p}.objectRef.namespace END, {p}.objectRef.resource, {p}.objectRef.name)], lambda r: r <> '')",
        "status": f"CASE WHEN {code} IS NULL THEN 'unknown' WHEN {code} < 400 THEN 'success' ELSE 'failure' END",
        "error_code": f"CASE WHEN {code} >= 400 THEN coalesce({p}.responseStatus.reason, {p}.responseStatus.code) END",
        "request_id": f"{p}.auditID",
        "event_id": f"{p}.auditID || '/' || {p}.stage",
        "read_only": f"{p}.verb IN ('get', 'list', 'watch')",
    }


COLUMNS = columns("p")
CLOUD_SQL = (
    "CASE WHEN container = 'cloudwatch_logs_events' OR p.user.extra.arn IS NOT NULL "
    "OR p.user.username LIKE 'arn:aws:%' THEN 'aws' ELSE 'kubernetes' END"
)
