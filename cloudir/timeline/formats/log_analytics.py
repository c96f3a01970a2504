"""Helpers for Log Analytics rows (``AuditLogs``, ``SigninLogs``, ``AzureActivity``) as exported.

Data export rules and the query API give PascalCase JSON with nested objects; the portal's CSV export names
time columns ``TimeGenerated [UTC]``, writes times as ``5/1/2024, 10:02:03.123 AM`` and nested values as JSON
text. Both are read: nested cells are ``JSON`` fields parsed with :func:`cell` whether object or text.
"""

from typing import Any


def time_fields(*names: str) -> dict[str, Any]:
    """The fields for these time columns in both export shapes."""
    return {key: "VARCHAR" for name in names for key in (name, f"{name} [UTC]")}


def time_of(*names: str) -> str:
    """Event time from the first present of these time columns (ISO 8601 or the portal's US format)."""
    values = ", ".join(f'p."{key}"' for name in names for key in (name, f"{name} [UTC]"))
    return f"coalesce(utc_ts(coalesce({values})), try_strptime(coalesce({values}), '%m/%d/%Y, %I:%M:%S.%g %p'))"


def detect(*columns: str) -> str:
    """SQL: the record has a TimeGenerated column (either shape) and all of ``columns``."""
    present = " AND ".join(f"list_contains(keys, '{column}')" for column in columns)
    return f"(list_contains(keys, 'TimeGenerated') OR list_contains(keys, 'TimeGenerated [UTC]')) AND {present}"


def cell(field: str) -> str:
    """A nested cell as JSON, whether it was exported as an object or as JSON text."""
    return f"try((p.{field} ->> '$')::JSON)"
