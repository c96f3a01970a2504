"""Small ``events`` tables for analyzer tests, built from EVENTS_DDL with plain INSERTs."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from cloudir.timeline.schema import EVENTS_COLUMNS, EVENTS_DDL

T0 = datetime(2026, 1, 1)


def event(
    operation: str,
    *,
    actor: str = "arn:aws:iam::111111111111:user/alice",
    time: datetime = T0,
    cloud: str = "aws",
    service: str = "iam",
    source_ip: str = "198.51.100.7",
    user_agent: str = "aws-cli/2.15.0 Python/3.11",
    error_code: str | None = None,
    raw: dict[str, Any] | None = None,
    is_responder: bool = False,
    actor_type: str = "IAMUser",
    session: str | None = None,
    region: str = "eu-west-1",
    account: str = "111111111111",
    source_format: str | None = None,
) -> dict[str, Any]:
    """One timeline row with sensible defaults (a CloudTrail call by alice)."""
    event_id = str(uuid.uuid4())
    record = {"eventName": operation, "eventSource": f"{service}.amazonaws.com", **(raw or {})}
    fmt = source_format or {"aws": "cloudtrail", "azure": "azure_activity", "gcp": "gcp_audit"}[cloud]
    return {
        "event_uid": f"{cloud}:{event_id}",
        "time": time,
        "cloud": cloud,
        "source_format": fmt,
        "account": account,
        "region": region,
        "service": service,
        "operation": operation,
        "actor": actor,
        "actor_type": actor_type,
        "session": session,
        "source_ip": source_ip,
        "user_agent": user_agent,
        "resources": [],
        "status": "failure" if error_code else "success",
        "error_code": error_code,
        "request_id": None,
        "event_id": event_id,
        "read_only": operation.startswith(("List", "Describe", "Get")),
        "source_file": "test",
        "source_position": 0,
        "is_responder": is_responder,
        "raw": json.dumps(record),
    }


def routine(
    operations: list[str], *, days: int = 20, per_day: int = 3, start: datetime = T0, **kwargs: Any
) -> list[dict[str, Any]]:
    """A daily routine: each operation ``per_day`` times a day during working hours for ``days`` days."""
    rows = []
    for day in range(days):
        for index in range(per_day):
            for position, operation in enumerate(operations):
                when = start + timedelta(days=day, hours=9 + index, minutes=position)
                rows.append(event(operation, time=when, **kwargs))
    return rows


def write_db(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Create the events table at ``path`` and insert ``rows`` (through a JSON Lines file: fast)."""
    staging = path.with_suffix(".rows.jsonl")
    staging.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows), encoding="utf-8")
    with duckdb.connect(str(path)) as con:
        con.execute(EVENTS_DDL)
        if rows:
            columns = ", ".join(f"'{name}': '{kind}'" for name, kind in _TYPES.items())
            con.execute(
                "INSERT INTO events BY NAME SELECT * FROM read_json(?, format = 'newline_delimited', "
                f"columns = {{{columns}}})",
                [str(staging)],
            )
    staging.unlink()
    return path


_TYPES = dict.fromkeys(EVENTS_COLUMNS, "VARCHAR") | {
    "time": "TIMESTAMP",
    "resources": "VARCHAR[]",
    "read_only": "BOOLEAN",
    "source_position": "BIGINT",
    "is_responder": "BOOLEAN",
}


def cloudtrail_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Minimal CloudTrail -> timeline mapping for tests that replay real records."""
    rows = []
    for record in records:
        identity = record.get("userIdentity", {})
        row = event(
            record["eventName"],
            actor=identity.get("arn") or identity.get("invokedBy") or "anonymous",
            actor_type=identity.get("type", "Unknown"),
            time=datetime.fromisoformat(record["eventTime"].replace("Z", "")),
            service=record["eventSource"].removesuffix(".amazonaws.com"),
            source_ip=record.get("sourceIPAddress", ""),
            user_agent=record.get("userAgent", ""),
            error_code=record.get("errorCode"),
            session=identity.get("accessKeyId"),
            region=record.get("awsRegion", ""),
            account=record.get("recipientAccountId", ""),
        )
        row["event_id"] = record["eventID"]
        row["event_uid"] = "aws:" + record["eventID"]
        row["raw"] = json.dumps(record)
        rows.append(row)
    return rows
