"""CloudWatch Logs Insights as AWS documents it, served at the HTTP layer in place of moto's partial version.

moto 5.2 answers ``StartQuery`` / ``GetQueryResults`` without the ``filter`` command, without the 10,000-row
result limit, with ``Complete`` on the first poll and ``@timestamp`` as milliseconds. :func:`install` replaces both
actions on moto's Logs endpoint (as :mod:`moto_fixtures.cloudtrail` adds LookupEvents), so boto3's serializer,
retries and parser run for real. What it models, from the CloudWatch Logs API reference and the Insights query
syntax pages:

* ``StartQuery``: ``logGroupName`` / ``logGroupNames`` (one of them), ``startTime`` / ``endTime`` in epoch
  seconds, both inclusive (``startTime`` > ``endTime`` is refused), ``queryString`` at most 10,000 characters,
  ``limit`` 1..10,000; an unknown group is ``ResourceNotFoundException``; a query it cannot parse is
  ``MalformedQueryException``. Commands: ``fields``, ``filter @message like /regex/``, ``sort @timestamp asc|desc``,
  ``limit`` (at most 10,000).
* ``GetQueryResults``: ``Scheduled`` then ``Running`` (no rows) for :attr:`InsightsStore.polls_before_complete`
  polls, then ``Complete`` with at most 10,000 rows, ``@timestamp`` as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC, an opaque
  ``@ptr`` on every row and ``statistics.recordsMatched`` counting every matching event (beyond the rows
  returned); :attr:`InsightsStore.fail_next` ends the next query ``Failed``, ``Timeout`` or ``Cancelled``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.logs.models import logs_backends
from moto.logs.responses import LogsResponse

MAX_ROWS = 10_000
MAX_QUERY_CHARS = 10_000
_COMMAND = re.compile(r"^(fields|filter|sort|limit)\s+(.+)$", re.DOTALL)
_LIKE = re.compile(r"^@message\s+like\s+/(.*)/$", re.DOTALL)
_SORT = re.compile(r"^@timestamp(?:\s+(asc|desc))?$")


@dataclass
class InsightsStore:
    """Queries of the fake and knobs to make it slow or fail."""

    polls_before_complete: int = 1
    fail_next: str | None = None  # "Failed" | "Timeout" | "Cancelled"
    max_rows: int = MAX_ROWS  # the documented 10,000; a test lowers it to split windows on a small log group
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: list[dict[str, Any]] = field(default_factory=list)  # every StartQuery body, in order

    def reset(self) -> None:
        """Back to a fresh store."""
        self.polls_before_complete = 1
        self.fail_next = None
        self.max_rows = MAX_ROWS
        self.queries.clear()
        self.started.clear()


STORE = InsightsStore()


def _error(code: str, message: str) -> tuple[int, dict[str, Any], str]:
    body = json.dumps({"__type": code, "message": message})
    return 400, {"status": 400, "Content-Type": "application/x-amz-json-1.1"}, body


def _ok(payload: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    return 200, {"status": 200, "Content-Type": "application/x-amz-json-1.1"}, json.dumps(payload)


def _parse(query: str) -> dict[str, Any] | str:
    """The query's fields, message pattern, order and limit, or why it is malformed."""
    parsed: dict[str, Any] = {"fields": [], "pattern": None, "descending": True, "limit": MAX_ROWS}
    for part in (p.strip() for p in query.split("|")):
        match = _COMMAND.match(part)
        if match is None:
            return f"unexpected command {part[:40]!r}"
        command, argument = match.groups()
        if command == "fields":
            parsed["fields"] += [f.strip() for f in argument.split(",")]
        elif command == "filter":
            like = _LIKE.match(argument.strip())
            if like is None:
                return f"unsupported filter {argument[:40]!r}"
            try:
                parsed["pattern"] = re.compile(like.group(1))
            except re.error as exc:
                return f"invalid regular expression: {exc}"
        elif command == "sort":
            order = _SORT.match(argument.strip())
            if order is None:
                return f"unsupported sort {argument[:40]!r}"
            parsed["descending"] = order.group(1) != "asc"
        else:
            if not argument.strip().isdigit() or not 1 <= int(argument) <= MAX_ROWS:
                return f"limit must be between 1 and {MAX_ROWS}"
            parsed["limit"] = int(argument)
    return parsed


def _stamp(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _start_query(self: LogsResponse) -> tuple[int, dict[str, Any], str]:
    body = json.loads(self.body or "{}")
    STORE.started.append(body)
    names = body.get("logGroupNames") or ([body["logGroupName"]] if body.get("logGroupName") else [])
    if bool(body.get("logGroupName")) == bool(body.get("logGroupNames")):
        return _error("InvalidParameterException", "exactly one of logGroupName and logGroupNames is required")
    start, end, query = body.get("startTime"), body.get("endTime"), body.get("queryString")
    if not isinstance(start, int) or not isinstance(end, int) or not isinstance(query, str):
        return _error("InvalidParameterException", "startTime, endTime and queryString are required")
    if start > end:
        return _error("InvalidParameterException", "startTime must be less than or equal to endTime")
    if len(query) > MAX_QUERY_CHARS:
        return _error("InvalidParameterException", f"queryString is longer than {MAX_QUERY_CHARS} characters")
    if "limit" in body and not 1 <= int(body["limit"]) <= MAX_ROWS:
        return _error("InvalidParameterException", f"limit must be between 1 and {MAX_ROWS}")
    backend = logs_backends[self.current_account][self.region]
    missing = [name for name in names if name not in backend.groups]
    if missing:
        return _error("ResourceNotFoundException", f"Log group {missing[0]} does not exist")
    parsed = _parse(query)
    if isinstance(parsed, str):
        return _error("MalformedQueryException", parsed)
    rows = []
    for name in names:
        for stream in backend.groups[name].streams.values():
            for event in stream.events:
                if not start * 1000 <= event.timestamp <= end * 1000 + 999:
                    continue
                if parsed["pattern"] is not None and not parsed["pattern"].search(event.message):
                    continue
                rows.append((event.timestamp, event.message, stream.log_stream_name))
    rows.sort(key=lambda r: r[0], reverse=parsed["descending"])
    query_id = str(uuid.uuid4())
    STORE.queries[query_id] = {
        "rows": rows,
        "fields": parsed["fields"],
        "limit": min(parsed["limit"], int(body.get("limit", MAX_ROWS))),
        "polls": 0,
        "status": STORE.fail_next or "Complete",
    }
    STORE.fail_next = None
    return _ok({"queryId": query_id})


def _row(fields: list[str], event: tuple[int, str, str]) -> list[dict[str, str]]:
    values = {"@timestamp": _stamp(event[0]), "@message": event[1], "@logStream": event[2]}
    row = [{"field": name, "value": values[name]} for name in fields if name in values]
    ptr = hashlib.sha256(f"{event[2]}|{event[0]}|{event[1]}".encode()).hexdigest()[:40]
    return [*row, {"field": "@ptr", "value": ptr}]


def _get_query_results(self: LogsResponse) -> tuple[int, dict[str, Any], str]:
    query = STORE.queries.get(json.loads(self.body or "{}").get("queryId", ""))
    if query is None:
        return _error("ResourceNotFoundException", "the query does not exist")
    query["polls"] += 1
    matched = len(query["rows"])
    if query["polls"] <= STORE.polls_before_complete:
        status = "Scheduled" if query["polls"] == 1 else "Running"
        return _ok({"results": [], "statistics": {"recordsMatched": 0.0, "recordsScanned": 0.0}, "status": status})
    rows = [] if query["status"] != "Complete" else query["rows"][: min(query["limit"], STORE.max_rows)]
    scanned = sum(len(r[1]) for r in query["rows"])
    return _ok(
        {
            "results": [_row(query["fields"], r) for r in rows],
            "statistics": {"recordsMatched": float(matched), "recordsScanned": float(matched), "bytesScanned": scanned},
            "status": query["status"],
        }
    )


def install() -> None:
    """Answer StartQuery and GetQueryResults on moto's Logs endpoint from :data:`STORE` (idempotent)."""
    LogsResponse.start_query = _start_query  # type: ignore[method-assign,assignment]
    LogsResponse.get_query_results = _get_query_results  # type: ignore[method-assign,assignment]


install()
