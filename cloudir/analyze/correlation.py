"""Multi-event detections as data: YAML rules under ``cloudir/analyze/rules/correlation/`` run by one engine in
DuckDB SQL over the timeline.

A rule selects its events with the catalog's ``match`` grammar (:mod:`cloudir.analyze.catalog`), groups them by
``group_by`` (timeline columns or ``$.`` paths of the raw record) and fires when, within ``window`` seconds, a
group has ``threshold`` events - or ``threshold`` distinct values of ``distinct``. ``then`` makes it a sequence:
a second match by the same group within ``within`` seconds of the threshold being reached (brute force, then a
successful sign-in). ``kind: travel`` compares one group's successive events instead: the value of ``distinct``
(a country) changes within ``window`` seconds. Every value of a rule and of the data reaches SQL as a bind
parameter or a column; only the structure is SQL text.

Each finding lists the events that carry the pattern (the episode's matches, and the event that completed the
sequence), sorted by time and id, capped, with the count of all of them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta
from cloudir.analyze.catalog import (
    Compiler,
    RuleSet,
    bound_params,
    compile_match,
    read_rules_yaml,
    validate_rule_head,
    validate_rule_tail,
)
from cloudir.errors import CloudirError

GROUP_COLUMNS = ("identity", "actor", "source_ip", "network", "account", "session", "user_agent", "region", "op_key")
"""Timeline (``ev``) columns a rule may group by or count distinct values of; ``$.`` paths read the raw record."""

PLACEHOLDERS = ("title", "group", "count", "distinct", "values", "span")
"""Explanation template placeholders: the rule title, the group's value (cut, control characters removed), the
number of matching events, the most distinct values within one window, up to three of them, and the episode's
length."""

KINDS = ("threshold", "travel")
MAX_SHOWN = 60
"""An attacker-chosen group value or listed value is cut to this many characters in titles and explanations."""

_REQUIRED = ("id", "title", "platform", "severity", "score", "mitre", "match", "group_by", "window", "samples")
_ALLOWED = {*_REQUIRED, "kind", "threshold", "distinct", "then", "explanation", "references"}


@dataclass(frozen=True)
class CorrelationRule:
    """One multi-event rule, validated and compiled (its SQL names bind parameters of the rule set)."""

    rule_id: str
    title: str
    platform: str
    severity: str
    score: int
    mitre: str
    kind: str
    window: int
    threshold: int
    within: int
    references: tuple[str, ...]
    samples: dict[str, list[list[dict[str, Any]]]]
    id_sql: str
    match_sql: str
    prefilter_sql: str
    prefilter_by_operation: bool
    then_sql: str | None
    then_prefilter_sql: str | None
    then_prefilter_by_operation: bool
    group_sql: str
    distinct_sql: str | None
    explanation_sql: str


@dataclass(frozen=True)
class CorrelationRules:
    """Every correlation rule and the bind parameters of their compiled SQL."""

    rules: tuple[CorrelationRule, ...]
    params: dict[str, Any]
    paths: tuple[str, ...]

    def bound(self, sql: str) -> dict[str, Any]:
        """The parameters ``sql`` names (DuckDB refuses extra ones)."""
        return bound_params(self.params, sql)

    def rule_set(self) -> RuleSet:
        """Both steps of every rule as :func:`cloudir.analyze.catalog.build_rule_events` reads them."""
        matches = [(rule.prefilter_sql, rule.match_sql, rule.prefilter_by_operation) for rule in self.rules]
        matches += [
            (rule.then_prefilter_sql, rule.then_sql, rule.then_prefilter_by_operation)
            for rule in self.rules
            if rule.then_sql and rule.then_prefilter_sql
        ]
        return RuleSet("correlation", tuple(matches), self.paths, self.params)


def _field(name: object, compiler: Compiler, rule_id: str) -> str:
    if isinstance(name, str) and name in GROUP_COLUMNS:
        return name
    if isinstance(name, str) and name.startswith("$."):
        return compiler.field(name, rule_id)
    raise CloudirError(f"rule {rule_id}: unknown field {name!r} (one of {GROUP_COLUMNS} or a '$.' path)")


def _shown(sql: str) -> str:
    """An attacker-chosen value as one short line of text."""
    return f"left(regexp_replace(coalesce(CAST({sql} AS VARCHAR), '-'), '[\\x00-\\x1f\\x7f]+', ' ', 'g'), {MAX_SHOWN})"


def _explanation(template: str, compiler: Compiler) -> str:
    columns = {
        "title": "title",
        "group": _shown("grp"),
        "count": "CAST(n AS VARCHAR)",
        "distinct": "CAST(peak AS VARCHAR)",
        "values": "array_to_string(list_transform(shown_values, lambda v: " + _shown("v") + "), ', ')",
        "span": "span_text",
    }
    parts = [
        columns[piece[1:-1]] if index % 2 else compiler.bind(piece)
        for index, piece in enumerate(re.split(r"(\{\w+\})", template))
        if piece
    ]
    return " || ".join(parts) or "''"


def _validate(raw: object, source: str) -> dict[str, Any]:
    doc = validate_rule_head(raw, source, _REQUIRED, _ALLOWED)
    rule_id = str(doc["id"])
    kind = doc.get("kind", "threshold")
    if kind not in KINDS or (kind == "travel" and ("distinct" not in doc or "then" in doc)):
        raise CloudirError(f"rule {rule_id}: kind is one of {KINDS}; travel needs distinct and no then")
    group_by = doc["group_by"]
    if not isinstance(group_by, list) or not group_by:
        raise CloudirError(f"rule {rule_id}: group_by is a non-empty list of fields")
    then = doc.get("then")
    if then is not None and (not isinstance(then, dict) or set(then) != {"match", "within"}):
        raise CloudirError(f"rule {rule_id}: then has match and within")
    if int(doc["window"]) <= 0 or int(doc.get("threshold", 2)) < 2:
        raise CloudirError(f"rule {rule_id}: window is positive seconds and threshold at least 2")
    return validate_rule_tail(doc, PLACEHOLDERS, "event sets")


def _rule(doc: dict[str, Any], compiler: Compiler) -> CorrelationRule:
    rule_id = str(doc["id"])
    platform = str(doc["platform"])
    match_sql, prefilter_sql, by_operation = compile_match(platform, doc["match"], compiler, rule_id)
    then = doc.get("then")
    then_sql, then_prefilter, then_by_operation = (
        compile_match(platform, then["match"], compiler, rule_id) if then else (None, None, False)
    )
    group = [_field(name, compiler, rule_id) for name in doc["group_by"]]
    group_sql = group[0] if len(group) == 1 else "concat_ws(' / ', " + ", ".join(group) + ")"
    score = int(doc["score"])
    return CorrelationRule(
        rule_id=rule_id,
        title=str(doc["title"]),
        platform=platform,
        severity=str(doc["severity"]),
        score=score,
        mitre=str(doc["mitre"]),
        kind=str(doc.get("kind", "threshold")),
        window=int(doc["window"]),
        threshold=int(doc.get("threshold", 2)),
        within=int(then["within"]) if then else 0,
        references=tuple(str(r) for r in doc.get("references") or ()),
        samples={"positive": list(doc["samples"]["positive"]), "negative": list(doc["samples"]["negative"])},
        id_sql=compiler.bind(rule_id),
        match_sql=match_sql,
        prefilter_sql=prefilter_sql,
        prefilter_by_operation=by_operation,
        then_sql=then_sql,
        then_prefilter_sql=then_prefilter,
        then_prefilter_by_operation=then_by_operation,
        group_sql=group_sql,
        distinct_sql=_field(doc["distinct"], compiler, rule_id) if "distinct" in doc else None,
        explanation_sql=_explanation(
            str(doc.get("explanation", "{title}: {group}, {count} events in {span}")), compiler
        ),
    )


@functools.cache
def load_rules() -> CorrelationRules:
    """Read, validate and compile every ``rules/correlation/*.yaml`` of the package (once per process)."""
    compiler = Compiler("c")  # its own parameter names: its prefilters share a statement with the catalog's
    rules: list[CorrelationRule] = []
    folder = resources.files("cloudir.analyze") / "rules" / "correlation"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        docs = read_rules_yaml(entry.read_text(encoding="utf-8"))
        if not isinstance(docs, list):
            raise CloudirError(f"{entry.name}: a rule file is a list of rules")
        rules.extend(_rule(_validate(doc, entry.name), compiler) for doc in docs)
    ids = [rule.rule_id for rule in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CloudirError(f"duplicate correlation rule ids: {duplicates}")
    return CorrelationRules(rules=tuple(rules), params=compiler.params, paths=tuple(compiler.paths))


META = AnalyzerMeta(
    name="correlation",
    description=(
        "Multi-event rules (cloudir/analyze/rules/correlation/*.yaml): per group (identity, source address, ...) "
        "a threshold of events or of distinct values within a window, optionally followed by a second event "
        "within a time (console and Entra brute force then success, password spraying from one source, MFA "
        "prompts denied in a row, many denied calls then a success, mass deletion, many secrets read), and "
        "successive sign-ins of one identity from different countries within an hour where the log has the "
        "country (Entra), and one Entra sign-in session used from two countries or from three networks within an "
        "hour (a replayed session token)."
    ),
    mitre=tuple(sorted({rule.mitre for rule in load_rules().rules})),
    default_weight=1.0,
)


def _hits_sql(rule: CorrelationRule) -> str:
    """The rule's first-step matches, each with the largest count (or distinct count) of its group's matches in the
    window ending at it; ``travel`` rules: whether the value differs from the group's previous match."""
    distinct = rule.distinct_sql or "NULL"
    frame = f"(PARTITION BY grp ORDER BY time RANGE BETWEEN INTERVAL '{rule.window} seconds' PRECEDING AND CURRENT ROW)"
    if rule.kind == "travel":
        peak = (
            f"CASE WHEN lag(dval) OVER w IS DISTINCT FROM dval AND lag(dval) OVER w IS NOT NULL "
            f"AND time - lag(time) OVER w <= INTERVAL '{rule.window} seconds' THEN 2 ELSE 1 END"
        )
        window = "WINDOW w AS (PARTITION BY grp ORDER BY time, event_id)"
    else:
        counted = "count(DISTINCT dval)" if rule.distinct_sql else "count(*)"
        peak = f"{counted} OVER {frame}"
        window = ""
    return f"""
        SELECT {rule.id_sql} AS rule, grp, dval, event_id, time, actor, identity, session, {peak} AS peak
        FROM (SELECT CAST({rule.group_sql} AS VARCHAR) AS grp, CAST({distinct} AS VARCHAR) AS dval, *
              FROM corr_ev WHERE {rule.match_sql}) WHERE grp IS NOT NULL {window}
    """


def run(con: duckdb.DuckDBPyConnection, rule_events: str) -> None:
    """Insert one candidate per rule, group and episode (matches of one group less than a window apart) whose
    peak reaches the threshold - and, for a sequence, whose second step follows. ``rule_events``: the query
    :func:`cloudir.analyze.catalog.build_rule_events` returned for the rule set."""
    ruleset = load_rules()
    rules = ruleset.rules
    con.execute(f"CREATE OR REPLACE TEMP TABLE corr_ev AS {rule_events}")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE corr_rules (rule VARCHAR, title VARCHAR, mitre VARCHAR, score INTEGER, "
        "win INTEGER, threshold INTEGER, within INTEGER, sequence BOOLEAN)"
    )
    con.executemany(
        "INSERT INTO corr_rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [r.rule_id, r.title, r.mitre, r.score, r.window, r.threshold, r.within, r.then_sql is not None]
            for r in rules
        ],
    )
    sql = "CREATE OR REPLACE TEMP TABLE corr_hits AS " + " UNION ALL ".join(_hits_sql(rule) for rule in rules)
    con.execute(sql, ruleset.bound(sql))
    sql = "CREATE OR REPLACE TEMP TABLE corr_then AS " + " UNION ALL ".join(
        [
            (
                "SELECT NULL::VARCHAR AS rule, NULL::VARCHAR AS grp, NULL::VARCHAR AS event_id, "
                "NULL::TIMESTAMP AS time, NULL::VARCHAR AS identity, NULL::VARCHAR AS op_key WHERE false"
            ),
            *(
                f"SELECT {r.id_sql}, CAST({r.group_sql} AS VARCHAR), event_id, time, identity, op_key "
                f"FROM corr_ev WHERE {r.then_sql}"
                for r in rules
                if r.then_sql is not None
            ),
        ]
    )
    con.execute(sql, ruleset.bound(sql))
    explanation = "CASE rule " + " ".join(f"WHEN {r.id_sql} THEN {r.explanation_sql}" for r in rules) + " END"
    sql = f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, temper, floor, event_count)
        WITH gapped AS (
            SELECT h.*, r.win, coalesce(h.time - lag(h.time) OVER (PARTITION BY h.rule, h.grp ORDER BY h.time,
                                                                   h.event_id) > to_seconds(r.win), true) AS starts
            FROM corr_hits h JOIN corr_rules r USING (rule)
        ),
        episodes AS (
            SELECT *, sum(CAST(starts AS INTEGER)) OVER (PARTITION BY rule, grp ORDER BY time, event_id
                                                         ROWS UNBOUNDED PRECEDING) AS episode
            FROM gapped
        ),
        fired AS (
            SELECT e.rule, e.grp, e.episode, min(e.time) AS t0, max(e.time) AS t1, count(*) AS n,
                   max(e.peak) AS peak, min(e.time) FILTER (WHERE e.peak >= r.threshold) AS reached,
                   list({{'t': e.time, 'id': e.event_id}}) AS events,
                   list(DISTINCT e.dval ORDER BY e.dval) FILTER (WHERE e.dval IS NOT NULL) AS dvals,
                   mode(e.identity ORDER BY e.identity) AS identity, mode(e.actor ORDER BY e.actor) AS actor,
                   CASE WHEN count(DISTINCT e.session) = 1 THEN any_value(e.session) END AS session,
                   any_value(r.title) AS title, any_value(r.mitre) AS mitre, any_value(r.score) AS score,
                   any_value(r.within) AS within, any_value(r.sequence) AS sequence
            FROM episodes e JOIN corr_rules r USING (rule)
            GROUP BY e.rule, e.grp, e.episode
            HAVING max(e.peak) >= any_value(r.threshold)
        ),
        completed AS (  -- a sequence's second step: the group's first match after the threshold, within its time
            SELECT f.rule, f.grp, f.episode,
                   min({{'t': t.time, 'id': t.event_id, 'op': t.op_key, 'who': t.identity}}) AS then_ev
            FROM fired f JOIN corr_then t ON t.rule = f.rule AND t.grp = f.grp
                AND t.time >= f.reached AND t.time <= f.t1 + to_seconds(f.within)
                AND NOT list_contains(list_transform(f.events, lambda x: x.id), t.event_id)
            WHERE f.sequence GROUP BY ALL
        ),
        described AS (
            SELECT f.*, c.then_ev.id AS then_id, c.then_ev.t AS then_time, c.then_ev.op AS then_op,
                   c.then_ev.who AS then_identity, f.dvals[1:3] AS shown_values,
                   CASE WHEN epoch(f.t1 - f.t0) < 60 THEN CAST(CAST(epoch(f.t1 - f.t0) AS INTEGER) AS VARCHAR) || ' s'
                        WHEN epoch(f.t1 - f.t0) < 7200
                            THEN CAST(CAST(round(epoch(f.t1 - f.t0) / 60) AS INTEGER) AS VARCHAR) || ' min'
                        ELSE CAST(CAST(round(epoch(f.t1 - f.t0) / 3600) AS INTEGER) AS VARCHAR) || ' h' END
                       AS span_text
            FROM fired f LEFT JOIN completed c USING (rule, grp, episode)
            WHERE NOT f.sequence OR c.then_ev IS NOT NULL
        )
        SELECT 'correlation', rule, score, actor, coalesce(then_identity, identity), session, t0,
               greatest(t1, coalesce(then_time, t1)), title || ': ' || {_shown("grp")},
               ({explanation}) || CASE WHEN then_id IS NULL THEN ''
                   ELSE '; then ' || {_shown("then_op")} || ' '
                        || CAST(CAST(epoch(then_time - reached) AS INTEGER) AS VARCHAR) || ' s after the threshold'
                   END,
               [mitre],
               list_transform(list_sort(CASE WHEN then_id IS NULL THEN events
                                             ELSE list_append(events, {{'t': then_time, 'id': then_id}}) END),
                              lambda x: x.id)[1:{MAX_EVENT_IDS}],
               false, score, n + CASE WHEN then_id IS NULL THEN 0 ELSE 1 END
        FROM described
    """
    con.execute(sql, ruleset.bound(sql))
    for table in ("corr_ev", "corr_hits", "corr_then", "corr_rules"):
        con.execute(f"DROP TABLE {table}")
