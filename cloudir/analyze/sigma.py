"""SigmaHQ rules at run time (``--sigma-rules DIR``): each rule's hits become candidate findings.

pySigma, a second of start-up, is imported only when rules are given: the conversion lives in
:mod:`cloudir.analyze.sigma_sql`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta

if TYPE_CHECKING:
    from sigma.rule import SigmaRule

META = AnalyzerMeta(
    name="sigma",
    description=(
        "SigmaHQ-format rules loaded at run time (--sigma-rules DIR), converted with pySigma to DuckDB SQL over "
        "the timeline (raw JSON fields, GCP method_name and Azure operationName mapped to the operation column); "
        "rules that cannot be converted or run are listed, not silently dropped."
    ),
    mitre=(),
    default_weight=1.0,
)

LEVEL_SCORE = {"informational": 20, "low": 35, "medium": 60, "high": 75, "critical": 90}


@dataclass
class SigmaLoad:
    """Converted rules (rule, SQL filter) and the ones that could not be converted, with the reason."""

    converted: list[tuple[SigmaRule, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _mitre(rule: SigmaRule) -> list[str]:
    return [str(tag.name).upper() for tag in rule.tags if tag.namespace == "attack" and re.match(r"t\d", tag.name)]


def run(con: duckdb.DuckDBPyConnection, directory: Path) -> SigmaLoad:
    """Run every convertible rule over ``ev``; a rule whose SQL DuckDB rejects moves to ``failed``."""
    from cloudir.analyze.sigma_sql import build_sigma_events, load_rules

    loaded = load_rules(directory)
    build_sigma_events(con, "ev", [where for _, where in loaded.converted])
    working: list[tuple[SigmaRule, str]] = []
    for rule, where in loaded.converted:
        level = rule.level.name.lower() if rule.level else "medium"
        try:
            con.execute(
                f"""
                INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                        title, explanation, mitre, event_ids, op_key, temper, floor, event_count)
                SELECT 'sigma', $rule_id, $score, min(actor), identity, session, min(time), max(time),
                       'Sigma: ' || $title || ' by ' || identity,
                       $description || ' (Sigma rule ' || $rule_id || ', level ' || $level || ', author '
                           || $author || ') x' || count(*),
                       $mitre, list(event_id ORDER BY time, event_id)[1:{MAX_EVENT_IDS}], op_key, true,
                       $score / 2, count(*)
                FROM sigma_events WHERE {where}
                GROUP BY identity, session, op_key, date_trunc('hour', time)
                """,
                {
                    "rule_id": str(rule.id or rule.title),
                    "score": LEVEL_SCORE.get(level, 50),
                    "title": rule.title,
                    "description": (rule.description or rule.title).strip(),
                    "level": level,
                    "author": rule.author or "unknown",
                    "mitre": _mitre(rule),
                },
            )
            working.append((rule, where))
        except duckdb.Error as exc:
            label = f"{Path(str(rule.source.path)).name if rule.source else rule.id}: {rule.title}"
            loaded.failed.append((label, f"DuckDB rejected the SQL: {str(exc).splitlines()[0]}"))
    loaded.converted = working
    return loaded
