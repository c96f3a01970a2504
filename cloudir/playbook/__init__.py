"""Playbooks: validated YAML response procedures, and the engine that runs them against a trigger."""

from cloudir.playbook.engine import (
    Outcome,
    ResponsePlan,
    approve_pending,
    build_response_plan,
    default_provider,
    offline_provider,
    respond,
    symbolic_target,
)
from cloudir.playbook.model import Playbook, PlaybookError, load_playbook, load_playbooks, select_playbook

__all__ = [
    "Outcome",
    "Playbook",
    "PlaybookError",
    "ResponsePlan",
    "approve_pending",
    "build_response_plan",
    "default_provider",
    "load_playbook",
    "load_playbooks",
    "offline_provider",
    "respond",
    "select_playbook",
    "symbolic_target",
]
