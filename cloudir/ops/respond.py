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
from cloudir.playbook.engine import Outcome, ProviderFactory, default_provider, respond
from cloudir.playbook.model import Playbook
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


def respond_all(
    request: RespondRequest,
    progress: Progress | None = None,
    on_outcome: Callable[[Trigger, Outcome], None] | None = None,
) -> list[Outcome]:
    """Respond to every finding in turn (a second delivery of a finding id does nothing new); outcomes in order."""
    if request.case_dir is not None and len(request.triggers) > 1:
        raise CloudirError(
            f"the finding file holds {len(request.triggers)} findings; omit --case to get one case per finding"
        )
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
