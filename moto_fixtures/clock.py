"""The sandboxes' incident clock: every planted incident sits at fixed offsets from a fixed time of day.

Analyzers learn hours of the day, so an incident planted relative to the wall clock would give other findings
at 03:00 than at 15:00. The sandboxes plant relative to :func:`incident_clock` instead: the latest 12:00 UTC at
least an hour in the past (recent enough for every log service's retention, and never in the future).
"""

from __future__ import annotations

import datetime as dt

INCIDENT_TIME_OF_DAY = dt.time(12, 0, tzinfo=dt.UTC)
MINIMUM_AGE = dt.timedelta(hours=1)


def utc_now() -> dt.datetime:
    """The wall clock, in UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def incident_clock(now: dt.datetime | None = None) -> dt.datetime:
    """The latest 12:00 UTC at least an hour before ``now`` (default: the wall clock)."""
    latest = (now or utc_now()) - MINIMUM_AGE
    anchor = dt.datetime.combine(latest.date(), INCIDENT_TIME_OF_DAY)
    return anchor if anchor <= latest else anchor - dt.timedelta(days=1)
