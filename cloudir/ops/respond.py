"""The response use case: run the matching playbook for each delivered finding, one case folder per finding.

Shared by ``cloudir respond`` and the serverless handlers (the playbook engine does one finding; this decides
where each finding's case goes and runs them in turn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudir.errors import CloudirError
from cloudir.ops import Progress
from cloudir.playbook.builder import ResponsePlan, build_response_plan, symbolic_target
from cloudir.playbook.engine import approve_pending, respond
from cloudir.playbook.model import Playbook, select_playbook
from cloudir.playbook.outcome import Outcome
from cloudir.playbook.routing import ProviderFactory, default_provider, offline_provider
from cloudir.safepath import id_folder
from cloudir.triggers import Trigger


@dataclass(frozen=True)
class RespondRequest:
    """Findings to respond to: into ``case_dir`` (one finding), else ``case_root/<escaped id>-<hash>`` each."""

    triggers: list[Trigger]
    playbooks: list[Playbook]
    case_root: Path = Path("cases")
    case_dir: Path | None = None
    playbook_id: str | None = None
    approve: bool = False  # containment approved up front
    resume: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    provider_factory: ProviderFactory = default_provider


def case_for(request: RespondRequest, trigger: Trigger) -> Path:
    """The case folder of one finding (collision-free for distinct finding ids)."""
    return request.case_dir or request.case_root / id_folder(trigger.finding_id)


def check_case_folder(triggers: list[Trigger], case_dir: Path | None) -> None:
    """Refuse several findings into one given case folder (each finding needs its own)."""
    if case_dir is not None and len(triggers) > 1:
        raise CloudirError(f"the finding file holds {len(triggers)} findings; omit --case to get one case per finding")


def respond_all(
    request: RespondRequest,
    progress: Progress | None = None,
    on_outcome: Callable[[Trigger, Outcome], None] | None = None,
) -> list[Outcome]:
    """Respond to every finding in turn (a second delivery of a finding id does nothing new); outcomes in order."""
    check_case_folder(request.triggers, request.case_dir)
    progress = progress or Progress()
    outcomes = []
    for trigger in request.triggers:
        outcome = respond(
            trigger,
            case_for(request, trigger),
            provider_factory=request.provider_factory,
            playbooks=request.playbooks,
            playbook_id=request.playbook_id,
            approve=request.approve,
            resume=request.resume,
            params=request.params,
            console=progress.console,
            observer=progress.observer,
        )
        if on_outcome is not None:
            on_outcome(trigger, outcome)
        outcomes.append(outcome)
    return outcomes


def approve(case_dir: Path, playbooks: list[Playbook], progress: Progress | None = None) -> list[Outcome]:
    """Run the containment held back for approval of every finding in the case awaiting it; outcomes in order."""
    progress = progress or Progress()
    return approve_pending(case_dir, playbooks=playbooks, console=progress.console, observer=progress.observer)


@dataclass(frozen=True)
class PlannedResponse:
    """What a playbook would do for one finding, changing nothing."""

    trigger: Trigger
    playbook: Playbook
    response: ResponsePlan


def plan_response(request: RespondRequest, *, resolve: bool = False) -> list[PlannedResponse]:
    """Each finding's playbook and every step and API call it would run, changing nothing.

    Without ``resolve`` no cloud call is made (the target's unknown details are placeholders); with it, the target
    is resolved with read-only calls so the exact calls are listed.
    """
    planned = []
    for trigger in request.triggers:
        chosen = select_playbook(trigger, request.playbooks, request.playbook_id)
        if resolve:
            provider = request.provider_factory(trigger)
            provider.bind(None)
            target = provider.find_target(trigger.target)
        else:
            provider, target = offline_provider(trigger), symbolic_target(trigger)
        response = build_response_plan(chosen, trigger, provider, target, approved=True, params=request.params)
        notes = response.plan.notes
        if not resolve:
            notes.append(
                "target not resolved (no cloud call made); --resolve lists the exact calls using read-only describe "
                "calls"
            )
        if chosen.containment_requires_approval and any(s.action == "contain" for s in chosen.steps):
            notes.append("containment steps run only after approval (--approve-containment / --approve)")
        settings = {**chosen.parameters, **request.params}
        notes.append("parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if v is not None))
        planned.append(PlannedResponse(trigger, chosen, response))
    return planned
