"""Thin serverless entry points over the playbook engine (no cloud SDK imports here).

Configuration comes from the environment: ``CLOUDIR_CASE_ROOT`` (where case folders go, one per finding),
``CLOUDIR_PLAYBOOKS`` (a playbook folder instead of the shipped ones), ``CLOUDIR_PARAMS`` (JSON object of
playbook parameter overrides, e.g. the forensic account) and ``CLOUDIR_APPROVE_CONTAINMENT`` ("true" to
pre-approve containment; otherwise containment waits for ``cloudir respond --case DIR --approve``).
``CLOUDIR_STEP_RESERVE_SECONDS`` (default 300): when the platform says how long the invocation has left, no step
starts with less than that; the invocation fails instead, and the platform's retry resumes the case at that step.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudir.errors import CloudirError, StepFailedError
from cloudir.ops import Progress
from cloudir.ops.respond import RespondRequest, respond_all
from cloudir.plan import Step, StepObserver
from cloudir.playbook.model import load_playbooks
from cloudir.playbook.outcome import Outcome
from cloudir.playbook.routing import ProviderFactory, default_provider
from cloudir.triggers import Trigger, TriggerError, parse_triggers

DEFAULT_CASE_ROOT = "/tmp/cloudir-cases"  # noqa: S108 - the writable folder of Lambda / Functions; set CLOUDIR_CASE_ROOT
DEFAULT_STEP_RESERVE_SECONDS = 300.0
logger = logging.getLogger("cloudir.serverless")


class InvocationTimeUpError(StepFailedError):
    """Too little of this invocation is left to start the next step: the retried delivery resumes the case there."""


def _time_budget(time_left: Callable[[], float]) -> StepObserver:
    """An observer that refuses to start a step when less than the reserve is left in the invocation."""
    reserve = float(os.environ.get("CLOUDIR_STEP_RESERVE_SECONDS") or DEFAULT_STEP_RESERVE_SECONDS)

    def observe(step: Step, status: str) -> None:
        if status != "running":
            return
        left = time_left()
        if left < reserve:
            raise InvocationTimeUpError(
                f"{left:.0f} s left in this invocation, less than the {reserve:.0f} s reserved for a step: "
                f"step {step.id} and the later ones run in the next delivery, which resumes the case"
            )

    return observe


def handle_payload(
    payload: Any, provider_factory: ProviderFactory | None = None, *, time_left: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Respond to every finding in a delivered payload; each finding gets its own case folder.

    A malformed finding is rejected without running anything (and is not retried); a failed step raises
    so that the platform retries the delivery, which resumes the response where it stopped. ``time_left``
    (seconds left in the invocation) splits a long response across deliveries at step boundaries.
    """
    try:
        triggers = parse_triggers(payload)
    except TriggerError as exc:
        logger.warning("rejected delivery: %s", exc)
        return {"status": "rejected", "error": str(exc), "outcomes": []}
    root = Path(os.environ.get("CLOUDIR_CASE_ROOT", DEFAULT_CASE_ROOT))
    playbooks_dir = os.environ.get("CLOUDIR_PLAYBOOKS")
    playbooks = load_playbooks(Path(playbooks_dir) if playbooks_dir else None)
    try:
        loaded = json.loads(os.environ.get("CLOUDIR_PARAMS") or "{}")
    except json.JSONDecodeError as exc:
        raise CloudirError(f"CLOUDIR_PARAMS is not a JSON object: {exc}") from None
    if not isinstance(loaded, dict):
        raise CloudirError("CLOUDIR_PARAMS must be a JSON object")
    params = {key: None if value == "" else value for key, value in loaded.items()}  # empty template parameters
    approve = os.environ.get("CLOUDIR_APPROVE_CONTAINMENT", "").lower() == "true"
    request = RespondRequest(
        triggers,
        playbooks,
        case_root=root,
        approve=approve,
        resume=True,
        params=params,
        provider_factory=provider_factory or default_provider,
    )
    progress = Progress(observer=_time_budget(time_left) if time_left is not None else None)
    outcomes = [outcome.as_dict() for outcome in respond_all(request, progress, on_outcome=_log_outcome)]
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        raise StepFailedError(f"{len(failed)} response(s) failed: {failed[0]['message']}")
    return {"status": "ok", "outcomes": outcomes}


def _log_outcome(trigger: Trigger, outcome: Outcome) -> None:
    logger.info("%s %s: %s", outcome.status, trigger.finding_id, outcome.message)
