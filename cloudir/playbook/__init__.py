"""Playbooks: validated YAML response procedures, and the engine that runs them against a trigger.

:mod:`~cloudir.playbook.model` (the YAML and its validation), :mod:`~cloudir.playbook.builder` (one flat plan per
finding), :mod:`~cloudir.playbook.steps` (the engine's own steps), :mod:`~cloudir.playbook.routing` (which adapter),
:mod:`~cloudir.playbook.engine` (running it into a case), :mod:`~cloudir.playbook.outcome` (what a delivery did).
"""

from cloudir.playbook.builder import ResponsePlan, build_response_plan, symbolic_target
from cloudir.playbook.engine import approve_pending, respond
from cloudir.playbook.model import Playbook, PlaybookError, load_playbook, load_playbooks, select_playbook
from cloudir.playbook.outcome import Outcome
from cloudir.playbook.routing import default_provider, offline_provider

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
