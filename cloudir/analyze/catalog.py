"""The detection catalog as data: YAML rules under ``cloudir/analyze/rules/`` compiled by one engine to DuckDB SQL.

A rule names its platform, the operations it applies to (normalised: lower case, API-version suffix removed,
whitespace collapsed, dashes unified - Entra names carry trailing spaces and en dashes), an optional condition
over columns and raw JSON fields, a score, a floor, a MITRE technique and an explanation template. Every value of a
rule reaches SQL as a bind parameter; only the structure (column names from a fixed list, operators) is SQL text.

Condition grammar (``where``)::

    {all: [cond, ...]} | {any: [cond, ...]} | {not: cond}
    {field: NAME, equals: V} | {field: NAME, in: [V, ...]}         # case-insensitive
    {field: NAME, contains: S} | {field: NAME, regex: RE} | {field: NAME, exists: true|false}
    {field: NAME, same_as: NAME}                                   # both present, equal (case-insensitive)
    {field: NAME, account_other_than: NAME}                        # an ARN whose account is not the other field
    {field: NAME, grants_outside: true}                            # a resource policy granting anyone, or an
                                                                   # account outside the case, access
    {field: NAME, grants_account_outside: true}                    # a resource policy whose Allow names an
                                                                   # account outside the case as its principal
    {field: LIST, has: cond}                                       # some element of a list satisfies cond

``NAME`` is a timeline column (``COLUMNS``), ``raw`` (the whole record as text) or a JSON path into the raw record
(``$.requestParameters.policyArn``; with ``[*]`` wildcards every match joined by spaces:
``$.properties.targetResources[*].modifiedProperties[*].newValue``). ``LIST`` is a wildcard path to objects
(``$.properties.targetResources[*].modifiedProperties[*]``); inside ``has`` a field ``.NAME`` reads that element
(``{all: [{field: .displayName, equals: UserType}, {field: .newValue, contains: Member}]}``): a named property's
own old and new values, never those of another property joined with them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import duckdb
import yaml

from cloudir.errors import CloudirError

PLATFORMS: dict[str, str] = {
    "aws": "cloud = 'aws' AND service <> 'kubernetes' AND NOT aws_service",
    "azure": "cloud = 'azure' AND source_format IN ('azure_activity', 'la_azure_activity')",
    "entra": "source_format IN ('entra_audit', 'entra_signin', 'la_audit_logs', 'la_signin_logs')",
    "gcp": "cloud = 'gcp' AND service <> 'kubernetes'",
    "kubernetes": "service = 'kubernetes'",
}
"""Where a rule applies: platform -> the timeline rows of that platform. AWS services and their service-linked roles
acting for the account (``aws_service``: only the service can assume them) are no actor a rule judges."""

COLUMNS = (
    "operation",
    "actor",
    "actor_type",
    "user_agent",
    "source_ip",
    "error_code",
    "service",
    "region",
    "account",
    "session",
)
"""Timeline columns a condition may read by name."""

OPERATORS = (
    "equals",
    "in",
    "contains",
    "regex",
    "exists",
    "same_as",
    "account_other_than",
    "grants_outside",
    "grants_account_outside",
    "has",
)
RESTRICTING_CONDITION_KEYS = (
    "aws:sourcearn",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceowner",
    "aws:sourceaccount",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:userid",
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "s3:dataaccesspointarn",
    "s3:dataaccesspointaccount",
    "kms:calleraccount",
)
"""Condition keys that, set to fixed values, keep a ``Principal: *`` statement from being public (Amazon S3, "The
meaning of public"; IAM Access Analyzer's policy checks). Fixed: no wildcard, and no ``/0`` network (an org path:
no wildcard in its organization id, its first part). Not
``aws:SourceIp``: S3 calls a grant pinned to fixed addresses non-public, but anyone at an address the policy's author
chose (their own) can then read: opening a bucket to one outside address is how data is taken."""
ACCOUNT_CONDITION_KEYS = (
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:principalaccount",
    "s3:dataaccesspointaccount",
    "kms:calleraccount",
)
ARN_CONDITION_KEYS = ("aws:sourcearn", "aws:principalarn", "s3:dataaccesspointarn")
ORG_PATH_CONDITION_KEYS = ("aws:sourceorgpaths", "aws:principalorgpaths")
ORG_CONDITION_KEYS = ("aws:sourceorgid", "aws:principalorgid", *ORG_PATH_CONDITION_KEYS)
"""Restricting keys whose values name an account (an account id; an ARN's fifth field; an organization id, the
first part of an org path): pinned to an account outside the case's, ``Principal: *`` grants that account - a
cross-account grant (IAM Access Analyzer's "external access"), not a restriction. The case's accounts are
``case_accounts``: the AWS accounts of the timeline's events and those the config's ``[accounts]`` lists (an
organization id there, ``o-...``, makes the case's organization known; with none listed an org pin stays quiet)."""
CASE_ACCOUNTS_SQL = "coalesce(getvariable('case_accounts'), [])"
RESTRICTING_OPERATORS = ("stringequals", "stringequalsignorecase", "stringlike", "arnequals", "arnlike", "ipaddress")
"""Condition operators that require the key to have one of the values (``...IfExists`` and negations do not)."""
PLACEHOLDERS: dict[str, str] = {
    "title": "title",
    "operation": "op_key",
    "count": "CAST(n AS VARCHAR)",
    "distinct": "CAST(distinct_values AS VARCHAR)",
    "identity": "identity",
}
"""Explanation template placeholders -> the column of the grouped hits that fills them."""

GKE_METHOD = r"^io\.k8s\.(?:[a-z0-9-]+\.)*?v\d+(?:(?:alpha|beta)\d+)?\.([a-z0-9-]+)(?:\.([a-z0-9-]+))?\.([a-z]+)$"
"""A GKE Kubernetes API method, lower case (``io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>``): the
call EKS, AKS and the kube-apiserver log as ``verb`` and ``objectRef`` (``create pods/exec``), the one form rules
name (GKE's audit logging: methodName)."""
_K8S_BARE = r"^([a-z]+ [a-z0-9-]+)/$"
"""A GKE method without a subresource, after the rewrite (``list secrets/``)."""

OP_NORMALISE_SQL = (
    "regexp_replace(regexp_replace(trim(regexp_replace(regexp_replace(lower(regexp_replace(operation, "
    "'20\\d{6}(v\\d+)?$', '')), '[\u2013\u2014]', '-', 'g'), '\\s+', ' ', 'g')), "
    f"'{GKE_METHOD}', '\\3 \\1/\\2'), '{_K8S_BARE}', '\\1')"
)
"""SQL that normalises ``operation`` the way :func:`normalise_operation` does."""

RAW_TEXT_SQL = "CAST(raw AS VARCHAR)"
"""A condition on the whole record as text (field ``raw``)."""
SEVERITY_BANDS = (("critical", 80), ("high", 60), ("medium", 40), ("low", 0))
FAILED_FACTOR = 0.4
ATTEMPT_FACTOR = 0.85
"""A rule's score and floor times this when every attempt of the finding failed (see ``Rule.failed_factor``)."""


def allows(policy: str, principal_test: str) -> str:
    """SQL: whether the IAM policy document ``policy`` (JSON text; text that is no JSON object grants nothing) has an
    ``Allow`` statement ``stmt`` for which ``principal_test`` holds."""
    document = f"(CASE WHEN json_valid({policy}) THEN CAST({policy} AS JSON) END)"
    statements = (
        f"coalesce(try_cast(json_extract({document}, '$.Statement') AS JSON[]), "
        f"[json_extract({document}, '$.Statement')])"
    )
    return (
        f"coalesce(len(list_filter({statements}, lambda stmt: lower(stmt ->> '$.Effect') = 'allow' "
        f"AND {principal_test})) > 0, false)"
    )


def read_rules_yaml(text: str) -> Any:
    """A rule file's YAML, parsed by libyaml's safe loader when PyYAML has it (the pure-Python one was most of the
    command's start-up: about a second for the catalog), else by the pure-Python safe loader."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def normalise_operation(name: str) -> str:
    """Lower case, API-version suffix (``20150331v2``) removed, dashes unified, whitespace collapsed and trimmed; a
    GKE Kubernetes method as the verb and resource EKS and AKS log (``GKE_METHOD``)."""
    name = re.sub(r"20\d{6}(v\d+)?$", "", name).lower()
    name = re.sub("[\u2013\u2014]", "-", name)
    name = re.sub(r"\s+", " ", name).strip()
    return re.sub(_K8S_BARE, r"\1", re.sub(GKE_METHOD, r"\3 \1/\2", name))


def severity_of(score: int) -> str:
    """The severity band of a score (the same bands as findings: see ``SEVERITY_SQL``)."""
    return next(name for name, low in SEVERITY_BANDS if score >= low)


@dataclass(frozen=True)
class Rule:
    """One catalog rule, validated and compiled (its SQL fragments name bind parameters of the catalog)."""

    rule_id: str
    title: str
    platform: str
    severity: str
    score: int
    floor: int
    mitre: str
    explanation: str
    operations: tuple[str, ...]
    operation_regex: str | None
    references: tuple[str, ...]
    samples: dict[str, list[dict[str, Any]]]
    id_sql: str
    match_sql: str
    """The whole match: platform, operations and condition, over ``op_norm`` and the ``ev`` columns."""
    prefilter_sql: str
    """The cheap part of the match over the columns alone (operations, else the platform and the condition with
    its raw-record parts taken as true): the rows it keeps are the only ones whose raw record is read."""
    prefilter_by_operation: bool
    """The prefilter reads the operation alone (the rule names operations): judged once per distinct operation."""
    bulk_sql: str | None
    bulk_min: int
    explanation_sql: str
    """The explanation template over the grouped hits (columns of ``PLACEHOLDERS``)."""
    failed_factor: float
    """What a finding whose every attempt failed scores, as a share of the score and floor: ``ATTEMPT_FACTOR`` when
    the rule says ``attempts: true`` (trying is the signal: leaving the organization, a GPU instance), else
    ``FAILED_FACTOR`` - a refused change changed nothing, and stays below the default minimum score (the public
    catalogs match successful calls; bursts of refusals are the recon and correlation analyzers' evidence)."""


class Compiler:
    """Turns rules into SQL whose every value is a named bind parameter (one namespace per catalog).

    A ``$.`` path a rule reads becomes ``jf[i]``, the i-th of ``paths``: :func:`build_rule_events` extracts every
    path of the catalog from each record in one parse."""

    def __init__(self, prefix: str = "p") -> None:
        self.prefix = prefix
        """Bind parameters are named ``$<prefix>_<n>``: rule sets compiled with different prefixes share a statement."""
        self.params: dict[str, Any] = {}
        self.paths: list[str] = []
        self.elements: list[str] = []
        """The lambda variables of the ``has`` conditions being compiled, innermost last."""

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}_{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def field(self, name: object, rule_id: str) -> str:
        if not isinstance(name, str):
            raise CloudirError(f"rule {rule_id}: field must be a string, got {name!r}")
        if name.startswith(".") and "[*]" not in name and self.elements:  # a field of the element ``has`` judges
            return f"json_extract_string({self.elements[-1]}, {self.bind('$' + name)})"
        if name in COLUMNS:
            return name
        if name == "raw":
            return RAW_TEXT_SQL
        if name.startswith("$.") and "[*]" in name:  # every match of a wildcard path, joined (one path a call)
            return f"nullif(array_to_string(json_extract_string({RAW_TEXT_SQL}, {self.bind(name)}), ' '), '')"
        if name.startswith("$."):
            if name not in self.paths:
                self.paths.append(name)
            return f"jf[{self.paths.index(name) + 1}]"
        raise CloudirError(f"rule {rule_id}: unknown field {name!r} (a column of {COLUMNS}, 'raw' or a '$.' path)")

    def condition(self, cond: object, rule_id: str) -> str:
        if not isinstance(cond, dict) or not cond:
            raise CloudirError(f"rule {rule_id}: a condition is a mapping, got {cond!r}")
        if set(cond) in ({"all"}, {"any"}):
            key = next(iter(cond))
            parts = cond[key]
            if not isinstance(parts, list) or not parts:
                raise CloudirError(f"rule {rule_id}: '{key}' needs a non-empty list")
            joiner = " AND " if key == "all" else " OR "
            return "(" + joiner.join(f"coalesce({self.condition(part, rule_id)}, false)" for part in parts) + ")"
        if set(cond) == {"not"}:
            return f"(NOT coalesce({self.condition(cond['not'], rule_id)}, false))"
        ops = [op for op in OPERATORS if op in cond]
        if set(cond) - {"field", *OPERATORS} or len(ops) != 1 or "field" not in cond:
            raise CloudirError(f"rule {rule_id}: a condition has 'field' and one of {OPERATORS}: {cond!r}")
        op, value = ops[0], cond[ops[0]]
        if op == "has":
            return self.has(cond["field"], value, rule_id)
        column = self.field(cond["field"], rule_id)
        if op == "same_as":
            return f"(lower({column}) = lower({self.field(value, rule_id)}))"
        if op == "account_other_than":
            account = f"nullif(split_part({column}, ':', 5), '')"
            return f"(starts_with({column}, 'arn:') AND {account} <> {self.field(value, rule_id)})"
        if op == "grants_outside":
            return f"({'' if value else 'NOT '}{self.outside_grant(column)})"
        if op == "grants_account_outside":
            return f"({'' if value else 'NOT '}{self.account_outside_grant(column)})"
        if op == "exists":
            return f"({column} IS {'NOT ' if value else ''}NULL)"
        if op == "in":
            if not isinstance(value, list) or not value:
                raise CloudirError(f"rule {rule_id}: 'in' needs a non-empty list")
            return f"(lower({column}) IN ({', '.join(self.bind(str(v).lower()) for v in value)}))"
        if op == "equals":
            return f"(lower({column}) = {self.bind(str(value).lower())})"
        if op == "contains":
            return f"contains(lower({column}), {self.bind(str(value).lower())})"
        try:
            re.compile(str(value))
        except re.error as exc:
            raise CloudirError(f"rule {rule_id}: bad regex {value!r}: {exc}") from exc
        return f"regexp_matches({column}, {self.bind(str(value))})"

    def has(self, path: object, cond: object, rule_id: str) -> str:
        """Whether some object the wildcard ``path`` selects satisfies ``cond``, its ``.NAME`` fields read from that
        object alone."""
        if not isinstance(path, str) or not path.startswith("$.") or "[*]" not in path:
            raise CloudirError(f"rule {rule_id}: 'has' needs a '$.' path with a [*] wildcard, got {path!r}")
        element = f"el{len(self.elements)}"
        self.elements.append(element)
        try:
            inner = self.condition(cond, rule_id)
        finally:
            self.elements.pop()
        found = f"json_extract({RAW_TEXT_SQL}, {self.bind(path)})"
        return f"(len(list_filter({found}, lambda {element}: coalesce({inner}, false))) > 0)"

    def outside_grant(self, policy: str) -> str:
        """Whether the IAM policy document ``policy`` (JSON text) has an ``Allow`` statement for ``Principal: *``
        (or ``{"AWS": "*"}``) that no condition restricts to the case: an operator of ``RESTRICTING_OPERATORS``
        (``ForAnyValue:`` / ``ForAllValues:`` allowed) on a key of ``RESTRICTING_CONDITION_KEYS`` with fixed values,
        none naming an account outside ``case_accounts`` (see ``ACCOUNT_CONDITION_KEYS``). Conditions are ANDed
        (IAM policy evaluation), so one restricting condition is enough. Text that is no JSON object grants
        nothing; every key and value stays data (no JSON path is built from them)."""
        keys = self.bind(list(RESTRICTING_CONDITION_KEYS))
        operators = self.bind(list(RESTRICTING_OPERATORS))
        values = (
            "CASE WHEN json_type(cond_key.value) = 'ARRAY' THEN json_extract_string(cond_key.value, '$[*]') "
            "ELSE [cond_key.value ->> '$'] END"
        )
        known = CASE_ACCOUNTS_SQL
        key = "lower(cond_key.key)"
        arn_account = "split_part(v, ':', 5)"
        elsewhere = (
            f"CASE WHEN list_contains({self.bind(list(ACCOUNT_CONDITION_KEYS))}, {key}) "
            f"THEN len({known}) > 0 AND NOT list_contains({known}, v) "
            f"WHEN list_contains({self.bind(list(ARN_CONDITION_KEYS))}, {key}) "
            f"THEN len({known}) > 0 AND {arn_account} <> '' AND NOT list_contains({known}, {arn_account}) "
            f"WHEN list_contains({self.bind(list(ORG_CONDITION_KEYS))}, {key}) "
            f"THEN len(list_filter({known}, lambda a: starts_with(a, 'o-'))) > 0 "
            f"AND NOT list_contains({known}, split_part(v, '/', 1)) ELSE false END"
        )
        # an org path is pinned by its organization, its first part: o-.../r-.../ou-.../* is the documented form
        open_value = (
            f"CASE WHEN list_contains({self.bind(list(ORG_PATH_CONDITION_KEYS))}, {key}) "
            "THEN regexp_matches(split_part(v, '/', 1), '[*?]') ELSE regexp_matches(v, '[*?]|/0$') END"
        )
        fixed = (
            f"(len({values}) > 0 AND "
            f"len(list_filter({values}, lambda v: v IS NULL OR {open_value} OR {elsewhere})) = 0)"
        )
        restricting = (
            "len(list_filter(map_entries(try_cast(stmt -> '$.Condition' AS MAP(VARCHAR, MAP(VARCHAR, JSON)))), "
            f"lambda cond_op: list_contains({operators}, "
            "regexp_replace(lower(cond_op.key), '^for(anyvalue|allvalues):', '')) "
            "AND len(list_filter(map_entries(cond_op.value), "
            f"lambda cond_key: list_contains({keys}, lower(cond_key.key)) AND {fixed})) > 0)) > 0"
        )
        anyone = (
            "(stmt ->> '$.Principal' = '*' OR stmt ->> '$.Principal.AWS' = '*' "
            "OR list_contains(json_extract_string(stmt, '$.Principal.AWS[*]'), '*'))"
        )
        return allows(policy, f"{anyone} AND NOT coalesce({restricting}, false)")

    def account_outside_grant(self, policy: str) -> str:
        """Whether the IAM policy document ``policy`` has an ``Allow`` statement whose ``Principal.AWS`` names (by
        account id or ARN) an account outside ``case_accounts``; never when the case's accounts are unknown."""
        principals = (
            "CASE WHEN json_type(stmt, '$.Principal.AWS') = 'ARRAY' "
            "THEN json_extract_string(stmt, '$.Principal.AWS[*]') ELSE [stmt ->> '$.Principal.AWS'] END"
        )
        account = "CASE WHEN regexp_matches(p, '^[0-9]{12}$') THEN p ELSE split_part(p, ':', 5) END"
        known = CASE_ACCOUNTS_SQL
        outside = (
            f"len({known}) > 0 AND len(list_filter({principals}, lambda p: p IS NOT NULL "
            f"AND regexp_matches({account}, '^[0-9]{{12}}$') AND NOT list_contains({known}, {account}))) > 0"
        )
        return allows(policy, outside)

    def prefilter(self, cond: object, rule_id: str) -> str:
        """A condition over the columns only that holds wherever ``cond`` does (parts reading the raw record
        count as true): it picks the rows whose raw record is read."""
        if not _reads_raw(cond):
            return f"coalesce({self.condition(cond, rule_id)}, false)"
        if isinstance(cond, dict) and set(cond) in ({"all"}, {"any"}):
            key = next(iter(cond))
            joiner = " AND " if key == "all" else " OR "
            return "(" + joiner.join(self.prefilter(part, rule_id) for part in cond[key]) + ")"
        return "true"

    def explanation(self, template: str) -> str:
        """The template as one concatenation: literal parts bound, placeholders read from columns in one pass
        (a value that looks like a placeholder stays text)."""
        parts = [
            f"coalesce({PLACEHOLDERS[piece[1:-1]]}, '')" if index % 2 else self.bind(piece)
            for index, piece in enumerate(re.split(r"(\{\w+\})", template))
            if piece
        ]
        return " || ".join(parts) or "''"


def _reads_raw(cond: object) -> bool:
    """Whether a (validated) condition reads the raw record anywhere."""
    if isinstance(cond, dict):
        if "field" in cond:
            other = cond.get("same_as", cond.get("account_other_than", ""))
            return any(name == "raw" or str(name).startswith("$.") for name in (cond["field"], other))
        parts = [part for value in cond.values() for part in (value if isinstance(value, list) else [value])]
        return any(_reads_raw(part) for part in parts)
    return False


_REQUIRED = ("id", "title", "platform", "severity", "score", "mitre", "match", "samples")
_ALLOWED = {*_REQUIRED, "floor", "explanation", "bulk", "references", "attempts"}


def validate_rule_head(doc: object, source: str, required: tuple[str, ...], allowed: set[str]) -> dict[str, Any]:
    """What every YAML rule of either engine must satisfy first: a mapping with exactly the known keys, a known
    platform, and a score of 1-100 whose severity is the one that score implies."""
    if not isinstance(doc, dict):
        raise CloudirError(f"{source}: each rule is a mapping")
    rule_id = str(doc.get("id", "?"))
    missing = [key for key in required if key not in doc]
    unknown = sorted(set(doc) - allowed)
    if missing or unknown:
        raise CloudirError(f"{source}: rule {rule_id}: missing {missing}, unknown {unknown}")
    if doc["platform"] not in PLATFORMS:
        raise CloudirError(f"rule {rule_id}: platform must be one of {sorted(PLATFORMS)}")
    score = int(doc["score"])
    if not 0 < score <= 100 or doc["severity"] != severity_of(score):
        raise CloudirError(f"rule {rule_id}: score {score} must be 1-100 with severity {severity_of(score)!r}")
    return doc


def validate_rule_tail(doc: dict[str, Any], placeholders: Iterable[str], samples_are: str) -> dict[str, Any]:
    """What every YAML rule of either engine must satisfy last: positive and negative samples, and an explanation
    template naming only the engine's placeholders."""
    rule_id = str(doc["id"])
    samples = doc["samples"]
    if not isinstance(samples, dict) or not samples.get("positive") or not samples.get("negative"):
        raise CloudirError(f"rule {rule_id}: samples need positive and negative {samples_are}")
    unknown_placeholders = set(re.findall(r"\{(\w+)\}", str(doc.get("explanation", "")))) - set(placeholders)
    if unknown_placeholders:
        raise CloudirError(f"rule {rule_id}: unknown placeholders {sorted(unknown_placeholders)}")
    return doc


def _validate(raw: object, source: str) -> dict[str, Any]:
    doc = validate_rule_head(raw, source, _REQUIRED, _ALLOWED)
    rule_id = str(doc["id"])
    match = doc["match"]
    if not isinstance(match, dict) or not match or set(match) - {"operations", "operation_regex", "where"}:
        raise CloudirError(f"rule {rule_id}: match has operations, operation_regex and/or where")
    bulk = doc.get("bulk")
    if bulk is not None and (not isinstance(bulk, dict) or set(bulk) != {"field", "min"}):
        raise CloudirError(f"rule {rule_id}: bulk has field and min")
    return validate_rule_tail(doc, PLACEHOLDERS, "events")


def _rule(doc: dict[str, Any], compiler: Compiler) -> Rule:
    rule_id = str(doc["id"])
    match = doc["match"]
    operations = tuple(sorted({normalise_operation(str(op)) for op in match.get("operations") or []}))
    operation_regex = match.get("operation_regex")
    platform = str(doc["platform"])
    match_sql, prefilter_sql, by_operation = compile_match(platform, match, compiler, rule_id)
    bulk = doc.get("bulk")
    score = int(doc["score"])
    return Rule(
        rule_id=rule_id,
        title=str(doc["title"]),
        platform=platform,
        severity=str(doc["severity"]),
        score=score,
        floor=int(doc.get("floor", score // 2)),
        mitre=str(doc["mitre"]),
        explanation=str(doc.get("explanation", "{title} - {operation} x{count}")),
        operations=operations,
        operation_regex=operation_regex,
        references=tuple(str(r) for r in doc.get("references") or ()),
        samples={"positive": list(doc["samples"]["positive"]), "negative": list(doc["samples"]["negative"])},
        id_sql=compiler.bind(rule_id),
        match_sql=match_sql,
        prefilter_sql=prefilter_sql,
        prefilter_by_operation=by_operation,
        bulk_sql=compiler.field(bulk["field"], rule_id) if bulk else None,
        bulk_min=int(bulk["min"]) if bulk else 0,
        explanation_sql=compiler.explanation(str(doc.get("explanation", "{title} - {operation} x{count}"))),
        failed_factor=ATTEMPT_FACTOR if doc.get("attempts") is True else FAILED_FACTOR,
    )


def compile_match(platform: str, match: dict[str, Any], compiler: Compiler, rule_id: str) -> tuple[str, str, bool]:
    """A rule's ``match`` (operations, operation_regex, where) as SQL over ``op_norm`` and the ``ev`` columns:
    the whole match, the cheap prefilter over the columns alone (the operations, else the platform and the
    condition with its raw-record parts taken as true), and whether that prefilter reads ``op_norm`` alone."""
    operations = sorted({normalise_operation(str(op)) for op in match.get("operations") or []})
    ops: list[str] = []
    if operations:
        ops.append(f"op_norm IN ({', '.join(compiler.bind(op) for op in operations)})")
    if match.get("operation_regex") is not None:
        ops.append(f"regexp_matches(op_norm, {compiler.bind(str(match['operation_regex']))})")
    where_sql = compiler.condition(match["where"], rule_id) if "where" in match else "true"
    op_sql = "(" + " OR ".join(ops) + ")" if ops else "true"
    match_sql = f"({PLATFORMS[platform]}) AND {op_sql} AND coalesce({where_sql}, false)"
    if ops:
        return match_sql, op_sql, True
    where = compiler.prefilter(match["where"], rule_id) if "where" in match else "true"
    return match_sql, f"({PLATFORMS[platform]}) AND {where}", False


def bound_params(params: dict[str, Any], sql: str) -> dict[str, Any]:
    """The parameters of ``params`` that ``sql`` names (DuckDB refuses extra ones)."""
    return {name: params[name] for name in set(re.findall(r"\$([a-z]+_\d+)", sql)) if name in params}


@dataclass(frozen=True)
class RuleSet:
    """What :func:`build_rule_events` reads of a rule set: its name, each rule's (prefilter, match, prefilter reads
    the operation alone) SQL, the ``$.`` paths its SQL reads as ``jf[i]`` and its bind parameters."""

    name: str
    matches: tuple[tuple[str, str, bool], ...]
    paths: tuple[str, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class Catalog:
    """Every rule and the bind parameters of their compiled SQL."""

    rules: tuple[Rule, ...]
    params: dict[str, Any]
    paths: tuple[str, ...]

    def bound(self, sql: str) -> dict[str, Any]:
        """The parameters ``sql`` names (DuckDB refuses extra ones)."""
        return bound_params(self.params, sql)

    def rule_set(self) -> RuleSet:
        """The catalog's rules as :func:`build_rule_events` reads them."""
        matches = tuple((rule.prefilter_sql, rule.match_sql, rule.prefilter_by_operation) for rule in self.rules)
        return RuleSet("catalog", matches, self.paths, self.params)


@functools.cache
def load_catalog() -> Catalog:
    """Read, validate and compile every ``rules/*.yaml`` of the package (once per process)."""
    compiler = Compiler()
    rules: list[Rule] = []
    folder = resources.files("cloudir.analyze") / "rules"
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
        raise CloudirError(f"duplicate rule ids in the catalog: {duplicates}")
    return Catalog(rules=tuple(rules), params=compiler.params, paths=tuple(compiler.paths))


RULE_EVENTS = "rule_events"


def build_rule_events(con: duckdb.DuckDBPyConnection, source: str, rule_sets: list[RuleSet]) -> dict[str, str]:
    """``rule_events``: the rows of ``source`` (``ev`` columns) that a prefilter of some rule set keeps, with
    ``op_norm``, ``kept_<set>`` (a prefilter of that set keeps the row), every JSON path of the sets extracted from
    the raw record in one parse (``jf``: the first set's paths in its order, then the others' new ones; see
    the returned queries), and the raw record itself only where a rule reading the whole record as text
    (``RAW_TEXT_SQL``) may match. The operation is normalised, and the prefilters on it judged, once per distinct
    operation; only the kept rows' raw records are read, each once for every rule set.

    Returns, per set name, a query of the rows that set keeps: the ``ev`` columns, ``op_norm``, ``raw`` and ``jf``
    holding the set's own paths in its order (what its SQL reads as ``jf[i]``)."""
    paths = list(dict.fromkeys(path for rule_set in rule_sets for path in rule_set.paths))
    by_operation, kept = [], []
    for rule_set in rule_sets:
        on_op = " OR ".join(f"({pre})" for pre, _, by_op in rule_set.matches if by_op) or "false"
        by_row = " OR ".join(f"({pre})" for pre, _, by_op in rule_set.matches if not by_op) or "false"
        by_operation.append(f"{on_op} AS op_{rule_set.name}")
        kept.append(f"ops.op_{rule_set.name} OR ({by_row}) AS kept_{rule_set.name}")
    raw_text = (
        " OR ".join(f"({pre})" for rule_set in rule_sets for pre, match, _ in rule_set.matches if RAW_TEXT_SQL in match)
        or "false"
    )
    fields = "json_extract_string(e.raw, $paths)" if paths else "CAST(NULL AS VARCHAR[])"
    any_kept = " OR ".join(f"kept_{rule_set.name}" for rule_set in rule_sets) or "false"
    sql = f"""
        CREATE OR REPLACE TEMP TABLE {RULE_EVENTS} AS
        WITH ops AS (
            SELECT operation AS op_value, op_norm, {", ".join(by_operation)}
            FROM (SELECT operation, {OP_NORMALISE_SQL} AS op_norm FROM (SELECT DISTINCT operation FROM {source}))
        ),
        kept AS (
            SELECT * FROM (
                SELECT s.*, ops.op_norm, {", ".join(kept)}
                FROM {source} s JOIN ops ON ops.op_value IS NOT DISTINCT FROM s.operation
            ) WHERE {any_kept}
        )
        SELECT kept.*, {fields} AS jf,
               CASE WHEN {raw_text} THEN e.raw END AS raw
        FROM kept JOIN (SELECT event_uid, raw FROM events) e USING (event_uid)
    """
    params = {name: value for rule_set in rule_sets for name, value in rule_set.params.items()}
    bound = bound_params(params, sql)
    con.execute(sql, {**bound, "paths": paths} if paths else bound)
    flags = ", ".join(f"kept_{rule_set.name}" for rule_set in rule_sets)
    queries = {}
    for rule_set in rule_sets:
        positions = [paths.index(path) + 1 for path in rule_set.paths]
        jf = "jf" if positions == list(range(1, len(positions) + 1)) else f"list_select(jf, {positions})"
        queries[rule_set.name] = (
            f"SELECT * EXCLUDE ({flags}) REPLACE ({jf} AS jf) FROM {RULE_EVENTS} WHERE kept_{rule_set.name}"
        )
    return queries


def match_events(
    con: duckdb.DuckDBPyConnection, rule_events: str, source: str = "ev", known_accounts: Iterable[str] = ()
) -> Catalog:
    """``rule_hits``: one row per (rule, event) the catalog matches in ``rule_events``, the query
    :func:`build_rule_events` returned for the catalog over ``source`` (a table with the ``ev`` columns): only the
    rows the column filter keeps, their raw record parsed once for every rule set; each rule then reads only the
    rows it names. The case's accounts (``CASE_ACCOUNTS_SQL``): the AWS accounts of ``source``'s
    events and ``known_accounts`` (the config's)."""
    catalog = load_catalog()
    con.execute(
        f"""
        SET VARIABLE case_accounts = (
            SELECT coalesce(list(DISTINCT account ORDER BY account), []) FROM (
                SELECT account FROM {source} WHERE cloud = 'aws' AND account <> ''
                UNION ALL SELECT unnest($known::VARCHAR[])
            )
        )
        """,
        {"known": list(known_accounts)},
    )
    # one projection listing each row's matching rules: planning one expression per rule costs a fraction of
    # planning one scan per rule (which dominated the analysis of a small timeline)
    matched = ", ".join(f"CASE WHEN {rule.match_sql} THEN {rule.id_sql} END" for rule in catalog.rules)
    bulk = " ".join(
        f"WHEN {rule.id_sql} THEN CAST({rule.bulk_sql} AS VARCHAR)" for rule in catalog.rules if rule.bulk_sql
    )
    sql = f"""
        CREATE OR REPLACE TEMP TABLE rule_hits AS
        SELECT rule, event_id, time, actor, identity, session, op_key, failed,
               {f"CASE rule {bulk} END" if bulk else "NULL::VARCHAR"} AS bulk_value
        FROM (SELECT *, unnest(list_filter([{matched}], lambda r: r IS NOT NULL)) AS rule
              FROM ({rule_events}))
    """
    con.execute(sql, catalog.bound(sql))
    return catalog


TECHNIQUES: dict[str, tuple[str, str]] = {
    "T1021": ("Remote Services", "Lateral Movement"),
    "T1021.004": ("Remote Services: SSH", "Lateral Movement"),
    "T1040": ("Network Sniffing", "Credential Access"),
    "T1053": ("Scheduled Task/Job", "Persistence"),
    "T1059": ("Command and Scripting Interpreter", "Execution"),
    "T1070": ("Indicator Removal", "Defense Evasion"),
    "T1078.001": ("Valid Accounts: Default Accounts", "Initial Access"),
    "T1078.004": ("Valid Accounts: Cloud Accounts", "Initial Access"),
    "T1098": ("Account Manipulation", "Persistence"),
    "T1098.001": ("Account Manipulation: Additional Cloud Credentials", "Persistence"),
    "T1098.003": ("Account Manipulation: Additional Cloud Roles", "Privilege Escalation"),
    "T1098.004": ("Account Manipulation: SSH Authorized Keys", "Persistence"),
    "T1098.005": ("Account Manipulation: Device Registration", "Persistence"),
    "T1098.006": ("Account Manipulation: Additional Container Cluster Roles", "Privilege Escalation"),
    "T1110.001": ("Brute Force: Password Guessing", "Credential Access"),
    "T1114.003": ("Email Collection: Email Forwarding Rule", "Collection"),
    "T1110.003": ("Brute Force: Password Spraying", "Credential Access"),
    "T1133": ("External Remote Services", "Persistence"),
    "T1136.003": ("Create Account: Cloud Account", "Persistence"),
    "T1199": ("Trusted Relationship", "Initial Access"),
    "T1222": ("File and Directory Permissions Modification", "Defense Evasion"),
    "T1484.002": ("Domain or Tenant Policy Modification: Trust Modification", "Privilege Escalation"),
    "T1485": ("Data Destruction", "Impact"),
    "T1486": ("Data Encrypted for Impact", "Impact"),
    "T1490": ("Inhibit System Recovery", "Impact"),
    "T1496": ("Resource Hijacking", "Impact"),
    "T1525": ("Implant Internal Image", "Persistence"),
    "T1528": ("Steal Application Access Token", "Credential Access"),
    "T1530": ("Data from Cloud Storage", "Collection"),
    "T1531": ("Account Access Removal", "Impact"),
    "T1535": ("Unused/Unsupported Cloud Regions", "Defense Evasion"),
    "T1537": ("Transfer Data to Cloud Account", "Exfiltration"),
    "T1546": ("Event Triggered Execution", "Persistence"),
    "T1550.001": ("Use Alternate Authentication Material: Application Access Token", "Lateral Movement"),
    "T1550.004": ("Use Alternate Authentication Material: Web Session Cookie", "Lateral Movement"),
    "T1548.005": ("Abuse Elevation Control Mechanism: Temporary Elevated Cloud Access", "Privilege Escalation"),
    "T1552": ("Unsecured Credentials", "Credential Access"),
    "T1552.005": ("Unsecured Credentials: Cloud Instance Metadata API", "Credential Access"),
    "T1552.007": ("Unsecured Credentials: Container API", "Credential Access"),
    "T1555.006": ("Credentials from Password Stores: Cloud Secrets Management Stores", "Credential Access"),
    "T1556": ("Modify Authentication Process", "Credential Access"),
    "T1556.006": ("Modify Authentication Process: Multi-Factor Authentication", "Defense Evasion"),
    "T1556.009": ("Modify Authentication Process: Conditional Access Policies", "Defense Evasion"),
    "T1562": ("Impair Defenses", "Defense Evasion"),
    "T1562.001": ("Impair Defenses: Disable or Modify Tools", "Defense Evasion"),
    "T1562.007": ("Impair Defenses: Disable or Modify Cloud Firewall", "Defense Evasion"),
    "T1562.008": ("Impair Defenses: Disable or Modify Cloud Logs", "Defense Evasion"),
    "T1578.002": ("Modify Cloud Compute Infrastructure: Create Cloud Instance", "Defense Evasion"),
    "T1578.005": ("Modify Cloud Compute Infrastructure: Modify Cloud Compute Configurations", "Defense Evasion"),
    "T1580": ("Cloud Infrastructure Discovery", "Discovery"),
    "T1526": ("Cloud Service Discovery", "Discovery"),
    "T1584.001": ("Compromise Infrastructure: Domains", "Resource Development"),
    "T1609": ("Container Administration Command", "Execution"),
    "T1610": ("Deploy Container", "Execution"),
    "T1611": ("Escape to Host", "Privilege Escalation"),
    "T1621": ("Multi-Factor Authentication Request Generation", "Credential Access"),
    "T1648": ("Serverless Execution", "Execution"),
    "T1649": ("Steal or Forge Authentication Certificates", "Credential Access"),
    "T1651": ("Cloud Administration Command", "Execution"),
}
"""ATT&CK (enterprise, cloud platforms) techniques the catalog names: id -> (name, tactic)."""

TACTIC_ORDER = (
    "Initial Access",
    "Execution",
    "Persistence",
    "Privilege Escalation",
    "Defense Evasion",
    "Credential Access",
    "Discovery",
    "Lateral Movement",
    "Collection",
    "Exfiltration",
    "Impact",
    "Resource Development",
)


def coverage_table() -> str:
    """Markdown: per ATT&CK technique, the catalog and correlation rules of each platform (docs/analyzers.md embeds
    it)."""
    from cloudir.analyze.correlation import load_rules

    rules = [(r.rule_id, r.platform, r.mitre) for r in load_catalog().rules]
    rules += [(r.rule_id, r.platform, r.mitre) for r in load_rules().rules]
    platforms = sorted(PLATFORMS)
    lines = [
        "| tactic | technique | " + " | ".join(platforms) + " |",
        "|---|---|" + "---|" * len(platforms),
    ]
    used = sorted({mitre for _, _, mitre in rules}, key=lambda t: (TACTIC_ORDER.index(TECHNIQUES[t][1]), t))
    for technique in used:
        name, tactic = TECHNIQUES[technique]
        cells = [
            ", ".join(f"`{rule_id}`" for rule_id, on, mitre in rules if mitre == technique and on == platform) or "-"
            for platform in platforms
        ]
        lines.append(f"| {tactic} | {technique} {name} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{p} {sum(on == p for _, on, _ in rules)}" for p in platforms)
    correlations = len(load_rules().rules)
    lines.append("")
    lines.append(f"{len(rules)} rules ({counts}; {correlations} of them multi-event) over {len(used)} techniques.")
    return "\n".join(lines)
