"""SigmaHQ rules to DuckDB SQL: pySigma parses them, a small backend writes the filters over the timeline."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import yaml
from sigma.collection import SigmaCollection
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import CompareOperators

from cloudir.analyze.sigma import SigmaLoad

LOGSOURCE_FILTER: dict[tuple[str | None, str | None], str] = {
    ("aws", "cloudtrail"): "source_format = 'cloudtrail'",
    ("azure", "activitylogs"): "source_format = 'azure_activity'",
    ("azure", "auditlogs"): "source_format = 'entra_audit'",
    ("azure", "signinlogs"): "source_format = 'entra_signin'",
    ("gcp", "gcp.audit"): "source_format = 'gcp_audit'",
}
"""Sigma (product, service) -> timeline rows the rule applies to; other log sources are not in the timeline."""

COLUMN_FIELDS = {
    "gcp.audit.method_name": "operation",
    "operationName": "operation",
    "ActivityDisplayName": "operation",
    "eventName": "operation",
    "eventSource": "event_source",
    "userIdentity.type": "actor_type",
    "errorCode": "error_code",
    "sourceIPAddress": "source_ip",
    "userAgent": "user_agent",
    "awsRegion": "region",
}
"""Sigma fields read from a column of ``sigma_events`` instead of the raw JSON (cheap filters run first)."""

SOURCE_FORMATS = sorted({f.split("= ")[1] for f in LOGSOURCE_FILTER.values()})
EVENT_SOURCE_PATH = '$."eventSource"'
JSON_FIELD_PATHS: dict[str, list[str]] = {}
"""Column of ``sigma_events`` -> the raw-record JSON paths it is read from (the first that is present)."""


def build_sigma_events(con: duckdb.DuckDBPyConnection, source: str, wheres: list[str]) -> None:
    """``sigma_events``: the rows of ``source`` (``ev`` columns, no ``raw``) of the Sigma log sources, with every
    raw-record field the rules in ``wheres`` read as a column: each record is parsed once for all rules."""
    columns = sorted(set(re.findall(r"\bsf_[0-9a-f]{12}\b", " ".join(wheres))))
    paths = list(dict.fromkeys([EVENT_SOURCE_PATH, *(p for c in columns for p in JSON_FIELD_PATHS[c])]))
    fields = "".join(
        f", coalesce({', '.join(f'jf[{paths.index(p) + 1}]' for p in JSON_FIELD_PATHS[c])}) AS {c}" for c in columns
    )
    keep_raw = any("CAST(raw AS VARCHAR)" in where for where in wheres)
    formats = ", ".join(SOURCE_FORMATS)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sigma_events AS
        SELECT s.*, jf[1] AS event_source{fields}{", e.raw" if keep_raw else ""}
        FROM (SELECT * FROM {source} WHERE source_format IN ({formats})) s
        JOIN (SELECT event_uid, json_extract_string(raw, $paths) AS jf{", raw" if keep_raw else ""}
              FROM events WHERE source_format IN ({formats})) e USING (event_uid)
        """,
        {"paths": paths},
    )


def _json_path(parts: list[str]) -> str:
    return "$." + ".".join('"' + part.replace('"', "") + '"' for part in parts)


def field_sql(name: str) -> str:
    """SQL expression for a Sigma field: a timeline column, or a column of ``sigma_events`` extracted from the raw
    JSON (see :func:`build_sigma_events`)."""
    if name in COLUMN_FIELDS:
        return COLUMN_FIELDS[name]
    parts = name.split(".")
    if parts[0] == "data" and len(parts) > 1:
        parts = parts[1:]
    lowered = [part[:1].lower() + part[1:] for part in parts]
    column = "sf_" + hashlib.sha256(name.encode()).hexdigest()[:12]
    JSON_FIELD_PATHS[column] = [_json_path(parts)] + ([_json_path(lowered)] if lowered != parts else [])
    return column


class DuckDBSigmaBackend(TextQueryBackend):
    """Sigma detection logic -> a DuckDB boolean expression; string matches are case-insensitive (ILIKE)."""

    name: ClassVar[str] = "cloudir DuckDB"
    formats: ClassVar[dict[str, str]] = {"default": "DuckDB WHERE clause"}
    requires_pipeline: ClassVar[bool] = False

    group_expression: ClassVar[str] = "({expr})"
    or_token: ClassVar[str] = "OR"  # noqa: S105 - SQL tokens, not secrets
    and_token: ClassVar[str] = "AND"  # noqa: S105
    not_token: ClassVar[str] = "NOT"  # noqa: S105
    eq_token: ClassVar[str] = " ILIKE "  # noqa: S105
    eq_expression: ClassVar[str] = "{field} ILIKE {value} ESCAPE '\\'"
    str_quote: ClassVar[str] = "'"
    escape_char: ClassVar[str] = "\\"
    wildcard_multi: ClassVar[str] = "%"
    wildcard_single: ClassVar[str] = "_"
    add_escaped: ClassVar[str] = "%_"
    bool_values: ClassVar[dict[bool, str | None]] = {True: "'true'", False: "'false'"}
    startswith_expression: ClassVar[str | None] = None
    endswith_expression: ClassVar[str | None] = None
    contains_expression: ClassVar[str | None] = None
    wildcard_match_expression: ClassVar[str | None] = "{field} ILIKE {value} ESCAPE '\\'"
    case_sensitive_match_expression: ClassVar[str | None] = "{field} LIKE {value} ESCAPE '\\'"
    re_expression: ClassVar[str | None] = "regexp_matches({field}, '{regex}')"
    re_escape_char: ClassVar[str] = "'"
    re_escape: ClassVar[list[str]] = ["'"]
    compare_op_expression: ClassVar[str | None] = "TRY_CAST({field} AS DOUBLE) {operator} {value}"
    compare_operators: ClassVar[dict[CompareOperators, str] | None] = {
        CompareOperators.LT: "<",
        CompareOperators.LTE: "<=",
        CompareOperators.GT: ">",
        CompareOperators.GTE: ">=",
    }
    field_null_expression: ClassVar[str | None] = "{field} IS NULL"
    field_exists_expression: ClassVar[str | None] = "{field} IS NOT NULL"
    field_not_exists_expression: ClassVar[str | None] = "{field} IS NULL"
    convert_or_as_in: ClassVar[bool] = False
    convert_and_as_in: ClassVar[bool] = False
    unbound_value_str_expression: ClassVar[str | None] = "CAST(raw AS VARCHAR) ILIKE '%' || {value} || '%' ESCAPE '\\'"
    unbound_value_num_expression: ClassVar[str | None] = "contains(CAST(raw AS VARCHAR), '{value}')"

    def escape_and_quote_field(self, field_name: str) -> str:
        """Fields become column names or JSON extractions instead of quoted identifiers."""
        return field_sql(field_name)

    def convert_value_str(self, s: Any, state: ConversionState) -> str:
        """SQL string literal: quotes doubled instead of backslash-escaped."""
        converted = str(super().convert_value_str(s, state))
        return converted.replace("\\'", "''")

    def convert_condition_field_eq_val_num(self, cond: Any, state: ConversionState) -> str:
        """Numbers compare as text so JSON numbers and strings both match."""
        return f"{self.escape_and_quote_field(cond.field)} = '{cond.value}'"


def load_rules(directory: Path) -> SigmaLoad:
    """Parse every ``*.yml`` rule under ``directory`` and convert those whose log source is in the timeline."""
    paths = sorted(directory.rglob("*.yml")) + sorted(directory.rglob("*.yaml"))
    converted, failed = _load_cached(tuple((str(p), p.stat().st_mtime_ns) for p in paths))
    return SigmaLoad(converted=list(converted), failed=list(failed))


@functools.lru_cache(maxsize=4)
def _load_cached(
    files: tuple[tuple[str, int], ...],
) -> tuple[tuple[tuple[SigmaRule, str], ...], tuple[tuple[str, str], ...]]:
    """Parse and convert once per set of rule files (path, modification time)."""
    result = SigmaLoad()
    backend = DuckDBSigmaBackend()
    for name, _ in files:
        path = Path(name)
        try:
            collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"), collect_errors=True)
        except (yaml.YAMLError, SigmaError, UnicodeDecodeError) as exc:
            result.failed.append((path.name, f"parse error: {str(exc).splitlines()[0]}"))
            continue
        for rule in collection.rules:
            _convert(backend, rule, path.name, result)
        if not collection.rules:
            result.failed.append((path.name, "parse error: no rule in the file"))
    return tuple(result.converted), tuple(result.failed)


def _convert(backend: DuckDBSigmaBackend, rule: object, file_name: str, result: SigmaLoad) -> None:
    label = f"{file_name}: {getattr(rule, 'title', '?')}"
    if not isinstance(rule, SigmaRule):
        result.failed.append((label, "correlation/filter rules are not supported"))
        return
    if rule.errors:
        result.failed.append((label, f"parse error: {rule.errors[0]}"))
        return
    source_filter = LOGSOURCE_FILTER.get((rule.logsource.product, rule.logsource.service))
    if source_filter is None:
        result.failed.append(
            (label, f"log source {rule.logsource.product}/{rule.logsource.service} not in the timeline")
        )
        return
    try:
        queries = backend.convert_rule(rule)
    except (SigmaError, NotImplementedError, TypeError) as exc:
        result.failed.append((label, f"conversion: {str(exc).splitlines()[0]}"))
        return
    where = " OR ".join(f"({query})" for query in queries)
    result.converted.append((rule, f"({source_filter}) AND ({where})"))
