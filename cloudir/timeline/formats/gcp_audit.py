"""GCP Cloud Audit Logs: LogEntry with an AuditLog ``protoPayload`` (API, sinks, entries:list pages)."""

NAME = "gcp_audit"
CLOUD = "gcp"
DETECT = "list_contains(keys, 'protoPayload')"

# Cloud Logging entries that are not audit logs (VPC flow logs, application logs): why they are quarantined.
_LOG_NAME = "left(rec ->> 'logName', 200)"
_PAYLOAD = (
    "CASE WHEN json_exists(rec, '$.textPayload') THEN 'textPayload' "
    "ELSE 'jsonPayload' || coalesce(' @type ' || left(json_extract_string(rec, '$.jsonPayload.\"@type\"'), 200), '') "
    "END"
)
NOT_READ = (
    "CASE WHEN rec ->> 'logName' IS NOT NULL "
    "AND (json_exists(rec, '$.jsonPayload') OR json_exists(rec, '$.textPayload')) "
    f"THEN CASE WHEN regexp_matches(rec ->> 'logName', '(/|%2F)vpc_flows$') THEN 'GCP VPC flow log entry (logName ' "
    f"|| {_LOG_NAME} || ') among other records: cloudir reads VPC flow logs into flows from files of flow entries' "
    f"ELSE 'GCP log entry that is not an audit log (logName ' || {_LOG_NAME} || ', ' || {_PAYLOAD} "
    "|| '): cloudir reads Cloud Audit Logs entries (protoPayload) only' END END"
)

FIELDS = {
    "insertId": "VARCHAR",
    "logName": "VARCHAR",
    "timestamp": "VARCHAR",
    "receiveTimestamp": "VARCHAR",
    "resource": {
        "type": "VARCHAR",
        "labels": {"project_id": "VARCHAR", "location": "VARCHAR", "zone": "VARCHAR", "region": "VARCHAR"},
    },
    "operation": {"id": "VARCHAR"},
    "protoPayload": {
        "serviceName": "VARCHAR",
        "methodName": "VARCHAR",
        "resourceName": "VARCHAR",
        "authenticationInfo": {
            "principalEmail": "VARCHAR",
            "principalSubject": "VARCHAR",
            "serviceAccountKeyName": "VARCHAR",
            "authoritySelector": "VARCHAR",
        },
        "requestMetadata": {
            "callerIp": "VARCHAR",
            "callerSuppliedUserAgent": "VARCHAR",
            "requestAttributes": {"id": "VARCHAR"},
        },
        "status": {"code": "VARCHAR", "message": "VARCHAR"},
        "authorizationInfo": [{"granted": "VARCHAR"}],
    },
}

_ACTOR = (
    "coalesce(p.protoPayload.authenticationInfo.principalEmail, p.protoPayload.authenticationInfo.principalSubject, "
    "CASE WHEN p.protoPayload.authenticationInfo.authoritySelector IN ('system:anonymous', 'system:unauthenticated') "
    "THEN p.protoPayload.authenticationInfo.authoritySelector END)"
)
"""Who called: the principal; for a GKE request that authenticated as no one, the anonymous identity GKE names in
``authoritySelector`` (only those two values: any other selector is what the caller asked for, not who it is)."""

_GRANTS = "list_transform(coalesce(p.protoPayload.authorizationInfo, []), lambda a: lower(a.granted))"
_ALL_DENIED = f"(len(list_filter({_GRANTS}, lambda g: g IS NOT NULL)) > 0 AND NOT list_contains({_GRANTS}, 'true'))"
"""No authorization check of the call granted (``authorizationInfo[].granted`` said, and never true): the call failed
(PERMISSION_DENIED, code 7) whether or not the record carries a ``status``."""

COLUMNS = {
    "time": "utc_ts(coalesce(p.timestamp, p.receiveTimestamp))",
    "account": "coalesce(p.resource.labels.project_id, regexp_extract(p.logName, '^projects/([^/]+)/', 1))",
    "region": "coalesce(p.resource.labels.location, p.resource.labels.region, p.resource.labels.zone)",
    # GKE's Kubernetes API audit (serviceName k8s.io, or a record of the k8s_cluster resource or an io.k8s.* method
    # that leaves serviceName out) joins EKS and AKS audit events as service kubernetes
    "service": "CASE WHEN p.protoPayload.serviceName = 'k8s.io' OR (p.protoPayload.serviceName IS NULL AND "
    "(p.resource.type = 'k8s_cluster' OR starts_with(p.protoPayload.methodName, 'io.k8s.'))) THEN 'kubernetes' "
    "ELSE p.protoPayload.serviceName END",
    "operation": "p.protoPayload.methodName",
    "actor": _ACTOR,
    "actor_type": f"CASE WHEN {_ACTOR} LIKE '%.gserviceaccount.com' THEN 'ServiceAccount' "
    f"WHEN {_ACTOR} LIKE '%@%' THEN 'User' END",
    "session": "p.protoPayload.authenticationInfo.serviceAccountKeyName",
    # the AuditLog JSON name is callerIp; GKE and exported records also spell it callerIP (keys are case-sensitive)
    "source_ip": "coalesce(p.protoPayload.requestMetadata.callerIp, rec ->> '$.protoPayload.requestMetadata.callerIP')",
    "user_agent": "p.protoPayload.requestMetadata.callerSuppliedUserAgent",
    "resources": "list_filter([p.protoPayload.resourceName], lambda r: r IS NOT NULL)",
    "status": f"CASE WHEN coalesce(p.protoPayload.status.code, '0') = '0' AND NOT {_ALL_DENIED} THEN 'success' "
    "ELSE 'failure' END",
    "error_code": f"coalesce(nullif(p.protoPayload.status.code, '0'), CASE WHEN {_ALL_DENIED} THEN '7' END)",
    "request_id": "coalesce(p.protoPayload.requestMetadata.requestAttributes.id, p.operation.id)",
    "event_id": "p.insertId",
    "read_only": "is_read_operation(p.protoPayload.methodName)",
}
