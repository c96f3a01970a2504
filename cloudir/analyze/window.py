"""The analysis window, chosen from the case (trigger, log pull) or else from the data, and said.

Signature and sensitive-action detectors score every event whatever the window; the window decides what the
rarity detectors learn from (``time < baseline_until``) and what they score (``time >= incident_since``).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from cloudir.analyze.base import AnalysisWindow
from cloudir.errors import CloudirError

HISTORY_MIN_DAYS = 7
"""A per-identity baseline needs history spanning at least this many days before the scored window ..."""
HISTORY_MIN_ACTIVE_DAYS = 4
"""... with events on at least this many distinct days ..."""
HISTORY_MIN_EVENTS = 50
"""... and at least this many events; otherwise rarity falls back to peers and the tenant."""
HISTORY_RECENT_DAYS = 28
"""Only history this close to the scored window counts: an unrelated log from years before is not a baseline."""
REFERENCE_MIN_DAY_SHARE = 0.5
"""Tenant-wide rarity needs one log, not fragments of several: events on at least this share of the calendar days
the timeline spans (a month-long export has events nearly every day; test fixtures or detonations from years apart
leave almost every day empty) ..."""
REFERENCE_MAX_ONE_OFF_SHARE = 0.3
"""... and a reference that repeats itself: when at least this share of the identities' events are the only time
that identity did that operation (Good-Turing's estimate of the chance that the next event is a pair never seen
before), being unseen is the norm there and says nothing about an event."""
TENANT_FALLBACK = "rarity is judged against peer groups and the other identities over the whole timeline"
TRIGGER_LOOKBACK = timedelta(hours=24)
"""A trigger's scored window starts this long before the activity the finding is about."""
LAST_WEEK = timedelta(days=7)
"""Without a case or a change point, the last week is scored when the history before it is a baseline; attacks
are seldom one day long, and a responder looks back at least that far."""
LAST_DAY = timedelta(hours=24)
CHANGE_POINT_DAYS = 7
"""A change point is looked for in the last days of data; before them, the first week is warm-up."""
CHANGE_FACTOR = 3.0
CHANGE_MIN_NEW = 10
"""A day starts the incident when its first-seen (principal, operation) pairs exceed both this many more than the
median day before it and ``CHANGE_FACTOR`` times that median."""


def resolve_window(
    con: duckdb.DuckDBPyConnection,
    case_root: Path | None,
    baseline_until: datetime | None,
    incident_since: datetime | None,
) -> AnalysisWindow:
    """Explicit bounds win; else the case's trigger time, else its log-pull window, else the data decides."""
    row = con.execute("SELECT min(time), max(time), count(*) FROM events WHERE NOT is_responder").fetchone()
    if row is None or not row[2]:
        raise CloudirError("the timeline has no events to analyze (table events is empty)")
    first, last = row[0], row[1]
    if baseline_until is not None or incident_since is not None:
        until = _naive(baseline_until or incident_since)
        since = _naive(incident_since or baseline_until)
        return _with_history(
            con,
            until=until,
            since=since,
            basis="options",
            reason="set by --baseline-until / --incident-since",
        )
    chosen = _from_trigger(case_root, first, last) or _from_log_pull(case_root, first)
    if chosen is not None:
        since, basis, reason = chosen
        return _with_history(con, until=since, since=since, basis=basis, reason=reason)
    return _from_data(con, first, last)


def _naive(value: datetime | None) -> datetime:
    assert value is not None
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(tz=None).replace(tzinfo=None)


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = (parsed - parsed.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
    return parsed


def _json_files(folder: Path, pattern: str) -> list[dict[str, object]]:
    documents = []
    for path in sorted(folder.glob(pattern)):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def _from_trigger(case_root: Path | None, first: datetime, last: datetime) -> tuple[datetime, str, str] | None:
    """The earliest trigger of the case whose time falls in the timeline: scored from a day before it."""
    if case_root is None:
        return None
    found = []
    for trigger in _json_files(case_root / "triggers", "*.json"):
        when = _parse(trigger.get("time"))
        if when is not None and first - TRIGGER_LOOKBACK <= when <= last + TRIGGER_LOOKBACK:
            found.append((when, str(trigger.get("finding_id", "?"))[:80], str(trigger.get("source", "finding"))[:40]))
    if not found:
        return None
    when, finding, source = min(found)
    since = max(first, when - TRIGGER_LOOKBACK)
    return since, "trigger", f"{source} {finding} at {when:%Y-%m-%d %H:%M:%S}, scored from 24 h before it"


def _from_log_pull(case_root: Path | None, first: datetime) -> tuple[datetime, str, str] | None:
    """The latest log pull's window start, when the timeline also holds history from before it."""
    if case_root is None:
        return None
    starts = [s for c in _json_files(case_root / "logs", "*/coverage.json") if (s := _parse(c.get("window_start")))]
    if not starts or max(starts) - first < timedelta(days=1):
        return None
    since = max(starts)
    return since, "log-pull", f"the latest log pull's window starts at {since:%Y-%m-%d %H:%M:%S}"


def _from_data(con: duckdb.DuckDBPyConnection, first: datetime, last: datetime) -> AnalysisWindow:
    """A change point in first-seen activity during the last week, else the last week (the last day when only it
    leaves a baseline before it); the whole timeline when there is too little history for a baseline."""
    last_day = _with_history(
        con,
        until=last - LAST_DAY,
        since=last - LAST_DAY,
        basis="last-day",
        reason="no change point in the last week; too little history before it for a baseline: the last 24 h",
    )
    if last_day.tenant:
        return _with_history(
            con,
            until=first,
            since=first,
            basis="short-history",
            reason="too little history for a baseline: every event is scored",
        )
    change = _change_point(con, first.date(), last.date())
    if change is not None:
        day, new, median = change
        since = datetime(day.year, day.month, day.day)
        reason = (
            f"change point: {new} first-seen principal/operation pairs on {day} against a median of {median:g} "
            "per day before"
        )
        return _with_history(con, until=since, since=since, basis="change-point", reason=reason)
    last_week = _with_history(
        con,
        until=last - LAST_WEEK,
        since=last - LAST_WEEK,
        basis="last-week",
        reason="no change point in the last week: the last 7 days, learned from the history before them",
    )
    return last_day if last_week.tenant else last_week


def _change_point(con: duckdb.DuckDBPyConnection, first: date, last: date) -> tuple[date, int, float] | None:
    rows = con.execute(
        """
        WITH firsts AS (
            SELECT CAST(min(time) AS DATE) AS day FROM events WHERE NOT is_responder
            GROUP BY coalesce(actor, ''), coalesce(service, ''), operation
        ),
        news AS (SELECT day, count(*) AS n FROM firsts GROUP BY day),
        days AS (SELECT DISTINCT CAST(time AS DATE) AS day FROM events WHERE NOT is_responder)
        SELECT d.day, coalesce(n.n, 0) FROM days d LEFT JOIN news n USING (day) ORDER BY d.day
        """
    ).fetchall()
    warm_up_end = first + timedelta(days=HISTORY_MIN_DAYS)
    settled = [(day, int(n)) for day, n in rows if day >= warm_up_end]
    for index, (day, new) in enumerate(settled):
        if day <= last - timedelta(days=CHANGE_POINT_DAYS):
            continue
        before = [n for _, n in settled[:index]]
        if len(before) < 3:
            continue
        median = statistics.median(before)
        if new > max(CHANGE_FACTOR * median, median + CHANGE_MIN_NEW):
            return day, new, median
    return None


def _with_history(
    con: duckdb.DuckDBPyConnection, *, until: datetime, since: datetime, basis: str, reason: str
) -> AnalysisWindow:
    """Decide between per-identity and tenant-wide rarity from the history before ``until``."""
    row = con.execute(
        "SELECT count(*), count(DISTINCT CAST(time AS DATE)), min(time) FROM events "
        "WHERE NOT is_responder AND time < $until AND time >= $recent",
        {"until": until, "recent": until - timedelta(days=HISTORY_RECENT_DAYS)},
    ).fetchone()
    events, days = (int(row[0]), int(row[1])) if row else (0, 0)
    span = until - row[2] if row and row[2] is not None else timedelta(0)
    span_days = round(span.total_seconds() / 86400, 1)
    enough = (
        span >= timedelta(days=HISTORY_MIN_DAYS) and days >= HISTORY_MIN_ACTIVE_DAYS and events >= HISTORY_MIN_EVENTS
    )
    if enough:
        history_reason = (
            f"per-identity baselines; the {HISTORY_RECENT_DAYS} days before the window hold {span_days} days of "
            f"history ({events} events on {days} days)"
        )
    else:
        history_reason = (
            f"the {HISTORY_RECENT_DAYS} days before the window hold {span_days} days of history, {events} events on "
            f"{days} days (a baseline needs {HISTORY_MIN_DAYS} days, {HISTORY_MIN_ACTIVE_DAYS} active days and "
            f"{HISTORY_MIN_EVENTS} events): {TENANT_FALLBACK}"
        )
    return AnalysisWindow(
        baseline_until=until,
        incident_since=since,
        basis=basis,
        reason=reason,
        history="identity" if enough else "tenant",
        history_reason=history_reason,
    )


def judge_reference(con: duckdb.DuckDBPyConnection, window: AnalysisWindow) -> AnalysisWindow:
    """In tenant mode, whether the timeline (``ev``) is a history at all: one log that covers the days it spans and
    repeats itself. When it is not, the window's history becomes ``none`` and says why: the rarity detectors abstain
    rather than call every one-off event rare."""
    if not window.tenant:
        return window
    row = con.execute(
        """
        WITH pairs AS (SELECT count(*) AS n FROM ev WHERE NOT aws_service GROUP BY identity, op_key)
        SELECT (SELECT count(DISTINCT CAST(time AS DATE)) FROM ev),
               (SELECT date_diff('day', CAST(min(time) AS DATE), CAST(max(time) AS DATE)) + 1 FROM ev),
               (SELECT count(*) FILTER (WHERE n = 1) FROM pairs),
               (SELECT coalesce(sum(n), 0) FROM pairs)
        """
    ).fetchone()
    assert row is not None
    days, span, one_offs, events = (int(value or 0) for value in row)
    day_share = days / max(span, 1)
    one_off_share = one_offs / max(events, 1)
    measured = (
        f"events on {days} of the {span} days it spans (a history: at least {REFERENCE_MIN_DAY_SHARE:.0%}), "
        f"{one_offs} of {events} identity events ({one_off_share:.0%}) the only time that identity did that "
        f"operation (a history: under {REFERENCE_MAX_ONE_OFF_SHARE:.0%})"
    )
    if day_share >= REFERENCE_MIN_DAY_SHARE and one_off_share < REFERENCE_MAX_ONE_OFF_SHARE:
        return dataclasses.replace(window, history_reason=f"{window.history_reason}, a history: {measured}")
    abstain = (
        f"nor is the whole timeline a history: {measured}; the rarity detectors (pattern of life, peer divergence) "
        "abstain and nothing is called rare or unseen; every identity is scored as one without a baseline"
    )
    return dataclasses.replace(
        window, history="none", history_reason=window.history_reason.replace(TENANT_FALLBACK, abstain)
    )
