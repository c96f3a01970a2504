"""Playbooks: YAML files listing response steps, their conditions and parameters, validated on load.

Errors name the file, the step and the field, e.g.
``playbooks/ec2.yaml: step 'contain': field when.min_severity: 'urgent' is not one of ...``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloudir.errors import CloudirError
from cloudir.provider import CLOUDS, TargetKind
from cloudir.triggers import SEVERITIES, Trigger

ACTIONS = (
    "preserve",
    "snapshot",
    "copy",
    "pull_logs",
    "collect_flows",  # the target network's flow logs and its instance inventory
    "timeline",
    "analyze",
    "contain",
    "report",
    "notify",
)
SOURCES = ("guardduty", "securityhub", "defender", "scc", "manual")
ACQUIRE_ACTIONS = ("preserve", "snapshot", "copy")
PARAMETERS: dict[str, tuple[type, ...]] = {
    "log_window_before_hours": (int, float),
    "log_window_after_hours": (int, float),
    "log_scope": (str,),  # account | target
    "forensic_account": (str, type(None)),
    "forensic_location": (str, type(None)),
    "encryption_key": (str, type(None)),
    "forensic_kms_key": (str, type(None)),  # AWS: the forensic account's key for the copies it owns
    "raw_image": (bool,),
    "group_mode": (str,),
    "examiner_cidr": (str, type(None)),
    "revoke_credentials": (bool,),
    "sigma_rules": (str, type(None)),
    "workspace_admin": (str, type(None)),  # GCP: the Workspace administrator the Reports API acts as
}
DEFAULT_PARAMETERS: dict[str, Any] = {
    "log_window_before_hours": 24,
    "log_window_after_hours": 2,
    "log_scope": "account",
    "forensic_account": None,
    "forensic_location": None,
    "encryption_key": None,
    "forensic_kms_key": None,
    "raw_image": False,
    "group_mode": "protect",
    "examiner_cidr": None,
    "revoke_credentials": True,
    "sigma_rules": None,
    "workspace_admin": None,
}
_TOP_KEYS = {"id", "title", "description", "priority", "match", "parameters", "containment", "steps"}
_MATCH_KEYS = {"clouds", "sources", "target_kinds", "finding_types", "min_severity"}
_STEP_KEYS = {"id", "action", "title", "when", "params"}
_WHEN_KEYS = {"min_severity", "finding_types", "sources", "unless_tags", "if_tags"}
_STEP_PARAMS: dict[str, dict[str, tuple[type, ...]]] = {
    "notify": {"format": (str,), "channels": (list,)},
    "report": {"formats": (list,)},
    "pull_logs": {"identity": (bool,)},  # also the identity provider's logs (Entra ID sign-ins/audits, Workspace)
}
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class PlaybookError(CloudirError):
    """An invalid playbook: the message names file, step and field."""


@dataclass(frozen=True)
class Condition:
    """When a step (or a whole playbook) applies; empty fields mean "any"."""

    min_severity: str | None = None
    finding_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    unless_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    if_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def trigger_reason(self, trigger: Trigger) -> str | None:
        """Why the trigger does not satisfy the condition (None when it does)."""
        if self.min_severity and trigger.severity_rank < SEVERITIES.index(self.min_severity):
            return f"severity {trigger.severity} is below {self.min_severity}"
        if self.sources and trigger.source not in self.sources:
            return f"source {trigger.source} is not one of {', '.join(self.sources)}"
        if self.finding_types and not any(
            fnmatch.fnmatchcase(trigger.finding_type.lower(), p.lower()) for p in self.finding_types
        ):
            return f"finding type {trigger.finding_type} matches none of {', '.join(self.finding_types)}"
        return None

    def tags_reason(self, tags: dict[str, str] | None) -> str | None:
        """Why the target's tags rule the step out (None when allowed).

        ``unless_tags`` rules it out when the target carries every listed tag (e.g. env=production AND
        role=database); ``if_tags`` requires every listed tag.
        """
        lowered = {k.lower(): v.lower() for k, v in (tags or {}).items()}

        def has(key: str, values: tuple[str, ...]) -> bool:
            return lowered.get(key.lower()) in {v.lower() for v in values}

        if self.unless_tags and all(has(key, values) for key, values in self.unless_tags.items()):
            found = ", ".join(f"{key}={lowered[key.lower()]}" for key in self.unless_tags)
            return f"target is tagged {found}"
        missing = [key for key, values in self.if_tags.items() if not has(key, values)]
        if missing:
            return f"target lacks tag {missing[0]} in {', '.join(self.if_tags[missing[0]])}"
        return None

    @property
    def uses_tags(self) -> bool:
        """True when the condition depends on the resolved target's tags."""
        return bool(self.unless_tags or self.if_tags)


@dataclass(frozen=True)
class PlaybookStep:
    """One step of a playbook."""

    id: str
    action: str
    title: str
    when: Condition
    params: dict[str, Any]


@dataclass(frozen=True)
class Match:
    """Which triggers a playbook is for."""

    clouds: tuple[str, ...]
    sources: tuple[str, ...]
    target_kinds: tuple[str, ...]
    condition: Condition

    def reason(self, trigger: Trigger) -> str | None:
        """Why the playbook does not apply (None when it does)."""
        if self.clouds and trigger.cloud not in self.clouds:
            return f"cloud {trigger.cloud} not in {', '.join(self.clouds)}"
        if self.sources and trigger.source not in self.sources:
            return f"source {trigger.source} not in {', '.join(self.sources)}"
        if self.target_kinds and trigger.target.kind.value not in self.target_kinds:
            return f"target kind {trigger.target.kind.value} not in {', '.join(self.target_kinds)}"
        return self.condition.trigger_reason(trigger)


@dataclass(frozen=True)
class Playbook:
    """A validated playbook."""

    id: str
    title: str
    description: str
    priority: int
    match: Match
    parameters: dict[str, Any]
    containment_requires_approval: bool
    steps: tuple[PlaybookStep, ...]
    path: Path


# -- validation ---------------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> PlaybookError:
        return PlaybookError(f"{self.path}: {where}{message}")

    def mapping(self, value: Any, where: str, name: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"field {name}: expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(where, f"field {name}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
        return value

    def strings(self, value: Any, where: str, name: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise self.fail(where, f"field {name}: expected a string or a list of strings")
        for item in items:
            if choices is not None and item not in choices:
                raise self.fail(where, f"field {name}: {item!r} is not one of {', '.join(choices)}")
        return tuple(items)

    def severity(self, value: Any, where: str, name: str) -> str | None:
        if value is None:
            return None
        if value not in SEVERITIES:
            raise self.fail(where, f"field {name}: {value!r} is not one of {', '.join(SEVERITIES)}")
        return str(value)

    def tags(self, value: Any, where: str, name: str) -> dict[str, tuple[str, ...]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"field {name}: expected a mapping of tag key to values")
        return {str(key): self.strings(values, where, f"{name}.{key}") for key, values in value.items()}

    def condition(self, value: Any, where: str, name: str, keys: set[str]) -> Condition:
        data = self.mapping(value, where, name, keys)
        return Condition(
            min_severity=self.severity(data.get("min_severity"), where, f"{name}.min_severity"),
            finding_types=self.strings(data.get("finding_types"), where, f"{name}.finding_types"),
            sources=self.strings(data.get("sources"), where, f"{name}.sources", SOURCES),
            unless_tags=self.tags(data.get("unless_tags"), where, f"{name}.unless_tags"),
            if_tags=self.tags(data.get("if_tags"), where, f"{name}.if_tags"),
        )

    def parameters(self, value: Any, where: str, name: str) -> dict[str, Any]:
        data = self.mapping(value, where, name, set(PARAMETERS))
        for key, item in data.items():
            if not isinstance(item, PARAMETERS[key]) or (isinstance(item, bool) and bool not in PARAMETERS[key]):
                expected = " or ".join("null" if t is type(None) else t.__name__ for t in PARAMETERS[key])
                raise self.fail(where, f"field {name}.{key}: expected {expected}, got {item!r}")
        if data.get("log_scope", "account") not in {"account", "target"}:
            raise self.fail(where, f"field {name}.log_scope: expected 'account' or 'target'")
        return data


def parse_playbook(data: Any, path: Path) -> Playbook:
    """Validate a loaded YAML document."""
    check = _Checker(path)
    top = check.mapping(data, "", "(top level)", _TOP_KEYS)
    for required in ("id", "title", "steps"):
        if required not in top:
            raise check.fail("", f"field {required}: required")
    playbook_id = str(top["id"])
    if not _ID.match(playbook_id):
        raise check.fail("", f"field id: {playbook_id!r} must be lower-case letters, digits, '-' or '_'")
    match = check.mapping(top.get("match"), "", "match", _MATCH_KEYS)
    steps_data = top["steps"]
    if not isinstance(steps_data, list) or not steps_data:
        raise check.fail("", "field steps: expected a non-empty list")
    steps: list[PlaybookStep] = []
    for index, raw_step in enumerate(steps_data, start=1):
        label = raw_step.get("id", f"#{index}") if isinstance(raw_step, dict) else f"#{index}"
        where = f"step {label!r}: "
        step = check.mapping(raw_step, where, "step", _STEP_KEYS)
        for required in ("id", "action"):
            if required not in step:
                raise check.fail(where, f"field {required}: required")
        step_id = str(step["id"])
        if not _ID.match(step_id):
            raise check.fail(where, "field id: must be lower-case letters, digits, '-' or '_'")
        if any(s.id == step_id for s in steps):
            raise check.fail(where, "field id: duplicate step id")
        action = step["action"]
        if action not in ACTIONS:
            raise check.fail(where, f"field action: {action!r} is not one of {', '.join(ACTIONS)}")
        params = check.mapping(step.get("params"), where, "params", set(_STEP_PARAMS.get(action, {})))
        for key, item in params.items():
            if not isinstance(item, _STEP_PARAMS[action][key]):
                raise check.fail(where, f"field params.{key}: expected {_STEP_PARAMS[action][key][0].__name__}")
        if action == "notify" and params.get("format", "md") not in {"md", "json"}:
            raise check.fail(where, "field params.format: expected 'md' or 'json'")
        if action == "notify" and not all(isinstance(name, str) for name in params.get("channels", [])):
            raise check.fail(where, "field params.channels: expected a list of [notify.NAME] channel names")
        steps.append(
            PlaybookStep(
                id=step_id,
                action=action,
                title=str(step.get("title") or action.replace("_", " ")),
                when=check.condition(step.get("when"), where, "when", _WHEN_KEYS),
                params=params,
            )
        )
    _check_order(check, steps)
    containment = check.mapping(top.get("containment"), "", "containment", {"require_approval"})
    approval = containment.get("require_approval", True)
    if not isinstance(approval, bool):
        raise check.fail("", "field containment.require_approval: expected true or false")
    priority = top.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise check.fail("", "field priority: expected an integer")
    return Playbook(
        id=playbook_id,
        title=str(top["title"]),
        description=str(top.get("description", "")).strip(),
        priority=priority,
        match=Match(
            clouds=check.strings(match.get("clouds"), "", "match.clouds", CLOUDS),
            sources=check.strings(match.get("sources"), "", "match.sources", SOURCES),
            target_kinds=check.strings(
                match.get("target_kinds"), "", "match.target_kinds", tuple(k.value for k in TargetKind)
            ),
            condition=check.condition(
                {k: match[k] for k in ("min_severity", "finding_types") if k in match},
                "",
                "match",
                {"min_severity", "finding_types"},
            ),
        ),
        parameters={**DEFAULT_PARAMETERS, **check.parameters(top.get("parameters"), "", "parameters")},
        containment_requires_approval=approval,
        steps=tuple(steps),
        path=path,
    )


def _check_order(check: _Checker, steps: list[PlaybookStep]) -> None:
    """Steps that consume another step's output must come after it."""
    position = {step.action: index for index, step in reversed(list(enumerate(steps)))}
    needs = {"copy": "snapshot", "analyze": "timeline"}
    for step in steps:
        if step.action in needs:
            before = needs[step.action]
            if before not in position or position[before] > position[step.action]:
                raise check.fail(f"step {step.id!r}: ", f"field action: {step.action} needs a {before} step before it")
        if step.action == "contain" and not any(
            position.get(action, len(steps)) < position["contain"] for action in ACQUIRE_ACTIONS
        ):
            raise check.fail(
                f"step {step.id!r}: ",
                f"field action: contain needs an acquisition step ({', '.join(ACQUIRE_ACTIONS)}) before it",
            )
    actions = [step.action for step in steps]
    for action in set(actions):
        if actions.count(action) > 1:
            raise check.fail("", f"field steps: action {action} appears more than once")


def load_playbook(path: Path) -> Playbook:
    """Read and validate one playbook file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlaybookError(f"{path}: no such playbook file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PlaybookError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_playbook(data, path)


def shipped_playbooks_dir() -> Path:
    """``playbooks/`` in a source tree, or ``cloudir/_playbooks`` in an installed wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_playbooks", package.parent / "playbooks"):
        if candidate.is_dir():
            return candidate
    raise PlaybookError("no shipped playbooks found", hint="pass --playbooks DIR")


def load_playbooks(directory: Path | None = None) -> list[Playbook]:
    """Every playbook in ``directory`` (default: the shipped ones); ids must be unique."""
    directory = directory or shipped_playbooks_dir()
    paths = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not paths:
        raise PlaybookError(f"{directory}: no playbook files (*.yaml)")
    playbooks = [load_playbook(path) for path in paths]
    seen: dict[str, Path] = {}
    for playbook in playbooks:
        if playbook.id in seen:
            raise PlaybookError(f"{playbook.path}: field id: {playbook.id!r} is also used by {seen[playbook.id]}")
        seen[playbook.id] = playbook.path
    return playbooks


def select_playbook(trigger: Trigger, playbooks: list[Playbook], playbook_id: str | None = None) -> Playbook:
    """The named playbook, or the highest-priority one that applies to the trigger."""
    if playbook_id is not None:
        chosen = next((p for p in playbooks if p.id == playbook_id), None)
        if chosen is None:
            raise PlaybookError(
                f"no playbook with id {playbook_id!r}", hint=f"available: {', '.join(p.id for p in playbooks)}"
            )
        return chosen
    applicable = [p for p in playbooks if p.match.reason(trigger) is None]
    if not applicable:
        raise PlaybookError(
            f"no playbook applies to {trigger.source} finding {trigger.finding_type} on {trigger.cloud}",
            hint="add a catch-all playbook or pass --playbook",
        )
    return max(applicable, key=lambda p: (p.priority, p.id))
