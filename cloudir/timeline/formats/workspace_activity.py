"""Google Workspace audit activities: Admin SDK Reports ``activities.list`` items (admin, login, token, ...)."""

NAME = "workspace_activity"
CLOUD = "gcp"
DETECT = "rec ->> 'kind' = 'admin#reports#activity'"

FIELDS = {
    "id": {"time": "VARCHAR", "uniqueQualifier": "VARCHAR", "applicationName": "VARCHAR", "customerId": "VARCHAR"},
    "actor": {"callerType": "VARCHAR", "email": "VARCHAR", "profileId": "VARCHAR", "key": "VARCHAR"},
    "ipAddress": "VARCHAR",
    "events": [{"type": "VARCHAR", "name": "VARCHAR", "parameters": [{"name": "VARCHAR", "value": "VARCHAR"}]}],
}

# Parameters that name what an event acted on (a user, a role, a group, an OAuth client or app).
_TARGETS = "('USER_EMAIL', 'ROLE_NAME', 'GROUP_EMAIL', 'DOMAIN_NAME', 'APPLICATION_NAME', 'app_name', 'client_id')"
_EVENT = "p.events[1]"  # an activity's first event names it (most activities carry exactly one)

COLUMNS = {
    "time": "utc_ts(p.id.time)",
    "account": "p.id.customerId",
    "region": "NULL",
    "service": "'workspace:' || p.id.applicationName",
    "operation": f"{_EVENT}.name",
    "actor": "coalesce(p.actor.email, p.actor.key, p.actor.profileId)",
    "actor_type": "CASE WHEN p.actor.callerType = 'KEY' THEN 'Application' ELSE 'User' END",
    "session": "NULL",
    "source_ip": "p.ipAddress",
    "user_agent": "NULL",
    "resources": f"list_transform(list_filter({_EVENT}.parameters, lambda x: x.name IN {_TARGETS} "
    "AND x.value IS NOT NULL), lambda x: x.value)",
    "status": f"CASE WHEN {_EVENT}.name = 'login_failure' THEN 'failure' ELSE 'success' END",
    "error_code": f"CASE WHEN {_EVENT}.name = 'login_failure' THEN list_filter({_EVENT}.parameters, "
    "lambda x: x.name = 'login_failure_type')[1].value END",
    "request_id": "p.id.uniqueQualifier",
    "event_id": "p.id.uniqueQualifier",
    "read_only": "FALSE",
}
