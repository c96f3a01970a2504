"""What a log pull actually covered: per source, per location, retention, and every early stop.

Cloud-neutral: AWS, Azure and GCP log pulls fill one :class:`CoverageReport` and write it as
``logs/<cloud>/coverage.json``. Nothing is dropped silently: a source that stopped early (throttled
out, access denied) or a location without logging is a warning a responder reads first.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudir.custody import utc_now


def parse_utc(value: str) -> datetime:
    """An ISO 8601 time (``Z`` or offset; naive means UTC) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta | None:
    """``90s``, ``30m``, ``24h`` or ``7d`` as a timedelta; None when the text is not one (or too long to hold)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    try:
        return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        return None


def iso_utc(value: datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def days_left(oldest: datetime, retention_days: int, now: datetime | None = None) -> float:
    """Days until an event at ``oldest`` leaves a store that keeps ``retention_days`` (negative: gone)."""
    age = (now or datetime.now(UTC)) - oldest
    return round(retention_days - age.total_seconds() / 86400, 2)


@dataclass
class SourceCoverage:
    """One log source in one location and scope (e.g. LookupEvents in eu-west-1 for one user)."""

    source: str  # e.g. cloudtrail:lookup-events, cloudtrail:s3, azure:activity
    location: str  # region / subscription / project / bucket
    scope: str = "all"  # the filter applied, e.g. Username=alice
    status: str = "complete"  # complete | partial | stopped | empty | unavailable
    items: int = 0  # events or files collected
    first_event: str | None = None
    last_event: str | None = None
    stopped_reason: str | None = None  # throttled | access_denied | error: ...
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetentionCoverage:
    """How long the oldest collected event stays available in a source with fixed retention."""

    source: str
    retention_days: int
    oldest_event: str
    days_left: float


@dataclass
class CoverageReport:
    """The coverage of one log pull."""

    cloud: str
    account: str | None
    window_start: str
    window_end: str
    generated: str = field(default_factory=utc_now)
    sources: list[SourceCoverage] = field(default_factory=list)
    locations: dict[str, dict[str, Any]] = field(default_factory=dict)  # per region: trails, logging, data events
    retention: list[RetentionCoverage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add_source(self, source: SourceCoverage) -> None:
        """Record a source; an early stop or partial result also becomes a warning."""
        self.sources.append(source)
        where = f"{source.source} {source.location} ({source.scope})"
        if source.status == "stopped":
            self.warn(f"{where} stopped early: {source.stopped_reason}; {source.items} items collected")
        elif source.status == "partial":
            self.warn(f"{where} is incomplete: {source.stopped_reason or 'more pages remain'} (resume to continue)")
        elif source.status == "unavailable":
            self.warn(f"{where} unavailable: {source.stopped_reason}")

    def add_retention(self, source: str, retention_days: int, oldest: datetime, now: datetime | None = None) -> None:
        """Record how many days remain before ``oldest`` leaves ``source``; warn when under a week."""
        left = days_left(oldest, retention_days, now)
        self.retention.append(RetentionCoverage(source, retention_days, iso_utc(oldest), left))
        if left < 0:
            self.warn(f"{source} keeps {retention_days} days: events before {iso_utc(oldest)} are already gone")
        elif left < 7:
            self.warn(f"{source}: the oldest event in the window leaves it in {left:.1f} days; preserve now")

    def warn(self, message: str) -> None:
        """Add a warning once."""
        if message not in self.warnings:
            self.warnings.append(message)

    @property
    def covered(self) -> tuple[str | None, str | None]:
        """Earliest and latest event time over every source."""
        firsts = [s.first_event for s in self.sources if s.first_event]
        lasts = [s.last_event for s in self.sources if s.last_event]
        return (min(firsts) if firsts else None, max(lasts) if lasts else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what coverage.json holds)."""
        data = asdict(self)
        first, last = self.covered
        data["covered"] = {"first_event": first, "last_event": last}
        return data
