"""Microsoft 365 unified audit log: Office 365 Management Activity API records (common schema; ``Audit.*`` content
blobs, ``Search-UnifiedAuditLog`` ``AuditData``, Purview audit search exports).

The common schema: ``CreationTime`` (UTC, often without an offset), ``Id``, ``Operation``, ``OrganizationId``,
``RecordType``, ``UserId``, ``UserType`` (0 Regular, 2 Admin, 3 DcAdmin, 4 System, 5 Application,
6 ServicePrincipal, 7 CustomPolicy, 8 SystemPolicy), ``Workload``, ``ClientIP``, ``ResultStatus``, ``ObjectId``.
"""

from typing import Any

NAME = "office_activity"
CLOUD = "azure"
DETECT = (
    "list_contains(keys, 'CreationTime') AND list_contains(keys, 'Operation') AND list_contains(keys, 'RecordType') "
    "AND (list_contains(keys, 'Workload') OR list_contains(keys, 'OrganizationId'))"
)

FIELDS: dict[str, Any] = {
    "CreationTime": "VARCHAR",
    "Id": "VARCHAR",
    "Operation": "VARCHAR",
    "OrganizationId": "VARCHAR",
    "UserId": "VARCHAR",
    "UserType": "VARCHAR",
    "Workload": "VARCHAR",
    "ClientIP": "VARCHAR",
    "ClientIPAddress": "VARCHAR",
    "ActorIpAddress": "VARCHAR",
    "ClientInfoString": "VARCHAR",
    "ResultStatus": "VARCHAR",
    "ObjectId": "VARCHAR",
}

# UserType by number (the API) or by name (Sentinel's OfficeActivity)
_USERS = ("0", "2", "regular", "admin")
_APPS = ("5", "6", "application", "serviceprincipal")
_SYSTEM = ("1", "3", "4", "7", "8", "reserved", "dcadmin", "system", "custompolicy", "systempolicy")
# Mailbox and file reads the audit log names without a read verb
_READS = (
    "MailItemsAccessed",
    "FileAccessed",
    "FilePreviewed",
    "FileDownloaded",
    "SearchQueryPerformed",
    "MailboxLogin",
)


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _address(value: str) -> str:
    """An address without the port Exchange may add (``1.2.3.4:5678``, ``[2001:db8::1]:5678``)."""
    return (
        f"CASE WHEN regexp_matches({value}, '^\\d+\\.\\d+\\.\\d+\\.\\d+:\\d+$') THEN split_part({value}, ':', 1) "
        f"WHEN regexp_matches({value}, '^\\[.*\\](:\\d+)?$') THEN regexp_extract({value}, '^\\[(.*)\\]', 1) "
        f"ELSE nullif({value}, '') END"
    )


def columns(
    *, time: str, account: str, service: str, addresses: tuple[str, ...], object_id: str, event_id: str
) -> dict[str, str]:
    """The event columns of a unified audit log record over ``p``, its own columns named as its export names them."""
    user_type = "lower(p.UserType)"
    result = "lower(p.ResultStatus)"
    address = f"coalesce({', '.join(f'nullif({a}, {chr(39) * 2})' for a in addresses)})"
    return {
        "time": time,
        "account": account,
        "region": "NULL",
        "service": service,
        "operation": "p.Operation",
        "actor": "nullif(p.UserId, '')",
        "actor_type": f"CASE WHEN {user_type} IN ({_sql_list(_USERS)}) THEN 'User' "
        f"WHEN {user_type} IN ({_sql_list(_APPS)}) THEN 'ServicePrincipal' "
        f"WHEN {user_type} IN ({_sql_list(_SYSTEM)}) THEN 'System' END",
        "session": "NULL",
        "source_ip": _address(address),
        "user_agent": "nullif(p.ClientInfoString, '')",
        "resources": f"list_filter([{object_id}], lambda r: nullif(r, '') IS NOT NULL)",
        "status": f"CASE WHEN {result} IN ('succeeded', 'success', 'true', 'partiallysucceeded') THEN 'success' "
        f"WHEN {result} IN ('failed', 'failure', 'false') THEN 'failure' ELSE 'unknown' END",
        "error_code": "NULL",
        "request_id": "NULL",
        "event_id": event_id,
        "read_only": f"is_read_operation(p.Operation) OR p.Operation IN ({_sql_list(_READS)})",
    }


_CREATED = "p.CreationTime"
COLUMNS = columns(
    time=f"utc_ts(CASE WHEN regexp_matches({_CREATED}, '(Z|[+-]\\d\\d:?\\d\\d)$') THEN {_CREATED} "
    f"ELSE {_CREATED} || 'Z' END)",
    account="p.OrganizationId",
    service="p.Workload",
    addresses=("p.ClientIP", "p.ClientIPAddress", "p.ActorIpAddress"),
    object_id="p.ObjectId",
    event_id="p.Id",
)
