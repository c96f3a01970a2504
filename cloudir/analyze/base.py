"""Shared pieces of the analyzers: metadata, the analysis window, the candidate and output tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb


@dataclass(frozen=True)
class AnalyzerMeta:
    """What an analyzer is: shown by ``cloudir analyze --list`` and written into docs/analyzers.md."""

    name: str
    description: str
    mitre: tuple[str, ...]
    default_weight: float


@dataclass(frozen=True)
class AnalysisWindow:
    """The learning window (``time < baseline_until``), the scored window (``time >= incident_since``) and why.

    ``basis``: options | trigger | log-pull | change-point | last-week | last-day | short-history.
    ``history``: ``identity`` (rarity against each identity's own baseline), ``tenant`` (history too short:
    rarity against peers and the other identities of the tenant, over the whole timeline) or ``none`` (the
    timeline is not a history at all - fragments, one-off events: the rarity detectors abstain).
    """

    baseline_until: datetime
    incident_since: datetime
    basis: str = "options"
    reason: str = "set by --baseline-until / --incident-since"
    history: str = "identity"
    history_reason: str = ""

    @property
    def tenant(self) -> bool:
        """Whether rarity falls back to peers and the tenant (no usable per-identity baseline)."""
        return self.history in {"tenant", "none"}

    @property
    def abstains(self) -> bool:
        """Whether the rarity detectors abstain: even the tenant's whole timeline is no history to judge against."""
        return self.history == "none"

    def describe(self) -> str:
        """One paragraph for the console: the window, why, and how rarity is judged."""
        return (
            f"scored from {self.incident_since:%Y-%m-%d %H:%M:%S} ({self.basis}: {self.reason}); "
            f"rarity learned before {self.baseline_until:%Y-%m-%d %H:%M:%S}; {self.history_reason}"
        )


CANDIDATES_DDL = """
CREATE OR REPLACE TEMP TABLE candidates (
    analyzer    VARCHAR NOT NULL,
    rule        VARCHAR NOT NULL,
    raw_score   DOUBLE NOT NULL,
    actor       VARCHAR,
    identity    VARCHAR,
    session     VARCHAR,
    first_time  TIMESTAMP,
    last_time   TIMESTAMP,
    title       VARCHAR NOT NULL,
    explanation VARCHAR NOT NULL,
    mitre       VARCHAR[],
    event_ids   VARCHAR[],
    op_key      VARCHAR,          -- set when the finding is about one operation: tempered by pattern of life
    temper      BOOLEAN NOT NULL DEFAULT false,
    floor       DOUBLE NOT NULL DEFAULT 0,  -- tempering never lowers the score below this
    event_count BIGINT                      -- every supporting event, when event_ids is capped
)
"""

FINDINGS_DDL = """
CREATE OR REPLACE TABLE findings (
    finding_id  VARCHAR PRIMARY KEY,
    analyzer    VARCHAR NOT NULL,
    rule        VARCHAR NOT NULL,
    score       INTEGER NOT NULL,   -- 0-100 after weighting and pattern-of-life tempering
    severity    VARCHAR NOT NULL,   -- critical | high | medium | low
    actor       VARCHAR,
    identity    VARCHAR,            -- actor with the role session removed
    session     VARCHAR,
    first_time  TIMESTAMP,
    last_time   TIMESTAMP,
    title       VARCHAR NOT NULL,
    explanation VARCHAR NOT NULL,
    mitre       VARCHAR[],
    event_ids   VARCHAR[],          -- the events that carry the anomaly (events.event_id): capped, deterministic
    event_count BIGINT NOT NULL,    -- how many events support it in all (event_ids keeps at most 100)
    profile     JSON,               -- everything behind the score: full explanation, factors, familiarity
    incident_id VARCHAR
)
"""

INCIDENTS_DDL = """
CREATE OR REPLACE TABLE incidents (
    incident_id   VARCHAR PRIMARY KEY,
    score         INTEGER NOT NULL,
    severity      VARCHAR NOT NULL,
    identity      VARCHAR,
    sessions      VARCHAR[],
    first_time    TIMESTAMP,
    last_time     TIMESTAMP,
    finding_count INTEGER NOT NULL,
    analyzers     VARCHAR[],
    mitre         VARCHAR[],
    finding_ids   VARCHAR[],
    title         VARCHAR NOT NULL
)
"""

SEVERITY_SQL = (
    "CASE WHEN {s} >= 80 THEN 'critical' WHEN {s} >= 60 THEN 'high' WHEN {s} >= 40 THEN 'medium' ELSE 'low' END"
)
"""Severity from a 0-100 score expression."""

MAX_EVENT_IDS = 500
"""Candidates keep at most this many supporting event ids (each analyzer's most telling first)."""
FINDING_EVENT_IDS = 100
"""Findings keep at most this many of them, in a deterministic order (the analyzer's most telling first, then by
time and id); ``event_count`` says how many there are in all."""
MAX_EXPLANATION = 400
"""Explanations longer than this are cut (the full text stays in ``profile``)."""


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether a table or view of that name exists in the database."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
        [name],
    ).fetchone()
    return bool(row and row[0])
