"""Microsoft Sentinel's ``OfficeActivity`` rows (the Microsoft 365 connector: the unified audit log in Log Analytics,
``OfficeWorkload``, ``Client_IPAddress``, ``OfficeObjectId``, ``OfficeId``), JSON or the portal's CSV export."""

from cloudir.timeline.formats.log_analytics import detect, time_fields, time_of
from cloudir.timeline.formats.office_activity import columns

NAME = "la_office_activity"
CLOUD = "azure"
DETECT = detect("Operation", "OfficeWorkload")

FIELDS = {
    **time_fields("TimeGenerated"),
    "OfficeId": "VARCHAR",
    "Operation": "VARCHAR",
    "OrganizationId": "VARCHAR",
    "TenantId": "VARCHAR",
    "UserId": "VARCHAR",
    "UserType": "VARCHAR",
    "OfficeWorkload": "VARCHAR",
    "ClientIP": "VARCHAR",
    "Client_IPAddress": "VARCHAR",
    "ClientInfoString": "VARCHAR",
    "ResultStatus": "VARCHAR",
    "OfficeObjectId": "VARCHAR",
    "SourceRecordId": "VARCHAR",
}

COLUMNS = columns(
    time=time_of("TimeGenerated"),
    account="coalesce(nullif(p.OrganizationId, ''), p.TenantId)",
    service="p.OfficeWorkload",
    addresses=("p.ClientIP", "p.Client_IPAddress"),
    object_id="p.OfficeObjectId",
    event_id="coalesce(nullif(p.OfficeId, ''), p.SourceRecordId)",
)
