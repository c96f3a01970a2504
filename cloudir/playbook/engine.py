"""Run a playbook for a finding into a case with idempotency and approval.

Each finding's progress is recorded in custody as ``response.<status>`` records keyed on the finding id (read
back through :class:`~cloudir.case.Case`), which makes a second delivery a no-op. The plan comes from
:mod:`cloudir.playbook.builder`, the adapter from :mod:`cloudir.playbook.routing`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from cloudir import ops
from cloudir.case import CASE_FILE, Case, finding_responses
from cloudir.caselock import CaseBusyError
from cloudir.config import load_config
from cloudir.errors import CloudirError, PreconditionError
from cloudir.plan import StepObserver
from cloudir.playbook.builder import build_response_plan
from cloudir.playbook.model import Playbook, load_playbooks, select_playbook
from cloudir.playbook.outcome import COMPLETED_WITH_SKIPS, Outcome
from cloudir.playbook.routing import ProviderFactory, default_provider
from cloudir.provider import Target
from cloudir.safepath import id_folder
from cloudir.triggers import Trigger


# -- response records ---------------------------------------------------------------------------------------
def _trigger_path(finding_id: str) -> str:
    return f"triggers/{id_folder(finding_id)}.json"


def _record(
    case: Case, status: str, trigger: Trigger, playbook: Playbook, target: Target | None, **details: Any
) -> None:
    case.custody.append(
        f"response.{status}",
        target=target.ref if target else None,
        outcome="failed" if status == "failed" else "ok",
        details={"finding_id": trigger.finding_id, "source": trigger.source, "playbook": playbook.id, **details},
        error=details.get("error"),
    )


# -- running ------------------------------------------------------------------------------------------------
_SCOPE = {"aws": "account", "azure": "subscription", "gcp": "project"}


def check_trigger_account(
    trigger: Trigger, account: str, allowed: list[str] | None, *, what: str = "this tool acts in"
) -> None:
    """Refuse a finding about another account than ``account`` (or one outside ``allowed``), before any change.

    A finding is data anyone allowed to import findings can write; only its account decides nothing.
    """
    scope = _SCOPE[trigger.cloud]
    named = trigger.account or account
    if allowed is not None and named not in allowed:
        raise PreconditionError(
            f"refused: the finding names {scope} {named}, which is not in the configured [accounts] {trigger.cloud} "
            f"list ({', '.join(allowed) or 'empty'}); nothing was changed"
        )
    if named != account:
        raise PreconditionError(
            f"refused: the finding names {scope} {named} but {what} {scope} {account}; nothing was "
            f"changed (a cross-{scope} response needs a role configured for {named} in [roles.{trigger.cloud}])"
        )


def respond(
    trigger: Trigger,
    case_dir: Path,
    *,
    provider_factory: ProviderFactory = default_provider,
    playbooks: list[Playbook] | None = None,
    playbook_id: str | None = None,
    approve: bool = False,
    resume: bool = False,
    params: dict[str, Any] | None = None,
    console: Console | None = None,
    observer: StepObserver | None = None,
) -> Outcome:
    """Respond to one finding into ``case_dir``: idempotent on the finding id, resumable, approval-gated."""
    console = console or Console(stderr=True, quiet=True)
    previous = finding_responses(case_dir).get(trigger.finding_id)
    if previous is not None:
        playbook_id = playbook_id or previous["details"].get("playbook")
    # choose the playbook before touching the case: a finding no playbook handles leaves nothing behind
    playbook = select_playbook(trigger, playbooks if playbooks is not None else load_playbooks(), playbook_id)
    case = _locked_case(trigger, case_dir)
    if case is None:
        message = f"finding {trigger.finding_id} is being handled by another delivery right now; this one did nothing"
        return Outcome(trigger.finding_id, case_dir, "in-progress", message, playbook.id)
    with case:
        return _respond_locked(
            case,
            trigger,
            playbook,
            provider_factory,
            approve=approve,
            resume=resume,
            params=params,
            console=console,
            observer=observer,
        )


def _locked_case(trigger: Trigger, case_dir: Path) -> Case | None:
    """The response's case, locked for the whole response; None when another delivery of this finding holds it."""
    purpose = f"respond to finding {trigger.finding_id}"
    description = f"response to {trigger.source} finding {trigger.finding_id}"
    try:
        return Case.open_or_create(case_dir, resume=True, description=description, wait=False, purpose=purpose)
    except CaseBusyError as busy:
        if busy.purpose == purpose:
            return None
    return Case.open_or_create(case_dir, resume=True, description=description, purpose=purpose)


def _respond_locked(
    case: Case,
    trigger: Trigger,
    playbook: Playbook,
    provider_factory: ProviderFactory,
    *,
    approve: bool,
    resume: bool,
    params: dict[str, Any] | None,
    console: Console,
    observer: StepObserver | None,
) -> Outcome:
    case_dir = case.root
    previous = case.finding_responses().get(trigger.finding_id)  # read again under the lock
    status = previous["action"].removeprefix("response.") if previous else None
    if previous is not None:
        params = {**previous["details"].get("params", {}), **(params or {})}
    if status == "completed" or (status == "awaiting-approval" and not approve):
        hint = f"; approve containment with: cloudir respond --case {case_dir} --approve" if not approve else ""
        case.custody.append(
            "trigger.duplicate",
            details={"finding_id": trigger.finding_id, "previous": status, "source": trigger.source},
        )
        message = f"finding {trigger.finding_id} was already handled in case {case.case_id} ({status}){hint}"
        return Outcome(trigger.finding_id, case_dir, "duplicate", message + "; nothing new was done", playbook.id)
    if status in {"started", "failed"} and not resume:
        raise CloudirError(
            f"the response to finding {trigger.finding_id} in {case_dir} stopped before it finished ({status})",
            hint="re-run with --resume to continue from the failed step",
        )
    if previous is None:
        with case.action("trigger.received", target=trigger.finding_id, finding_id=trigger.finding_id) as act:
            case.write_json(_trigger_path(trigger.finding_id), trigger.as_dict())
            act.details.update(
                source=trigger.source,
                cloud=trigger.cloud,
                severity=trigger.severity,
                finding_type=trigger.finding_type,
                time=trigger.time,
            )
    return _run_response(
        case,
        trigger,
        playbook,
        provider_factory,
        approve=approve,
        params=params or {},
        console=console,
        observer=observer,
    )


def _run_response(
    case: Case,
    trigger: Trigger,
    playbook: Playbook,
    provider_factory: ProviderFactory,
    *,
    approve: bool,
    params: dict[str, Any],
    console: Console,
    observer: StepObserver | None,
) -> Outcome:
    run_number = 1 + case.response_runs(trigger.finding_id)
    provider = provider_factory(trigger)
    provider.bind(case)
    try:
        try:
            with case.action("trigger.resolve", target=trigger.target.value, finding_id=trigger.finding_id) as act:
                case.set_cloud_identity(trigger.cloud, provider.identity())
                home = provider.home_account()
                act.details["home_account"] = home
                check_trigger_account(trigger, home, load_config().accounts.get(trigger.cloud))
                target = provider.find_target(trigger.target)
                check_trigger_account(trigger, target.account, None, what="the target was found in")
                act.details["target"] = target.ref
            with case.action("playbook.plan", target=target.ref, finding_id=trigger.finding_id) as act:
                response = build_response_plan(
                    playbook, trigger, provider, target, approved=approve, params=params, run_number=run_number
                )
                act.details.update(playbook=playbook.id, steps=len(response.plan.steps), skipped=dict(response.skipped))
        except CloudirError as exc:
            _record(case, "failed", trigger, playbook, None, params=params, error=str(exc))
            raise
        if approve and playbook.containment_requires_approval:
            case.custody.append(
                "containment.approved",
                target=target.ref,
                details={"finding_id": trigger.finding_id, "approved_by": case.custody.caller.get("operator")},
            )
        _record(
            case,
            "started",
            trigger,
            playbook,
            target,
            params=params,
            steps=[s.id for s in response.plan.steps],
            skipped=dict(response.skipped),
        )
        result = ops.run(response.plan, case, ops.Progress(console, observer), raise_on_failure=False)
    finally:
        provider.bind(None)
    if not result.ok:
        failed = result.failed
        error = f"step {failed.step_id} failed: {failed.error}" if failed else "a step did not finish"
        _record(case, "failed", trigger, playbook, target, params=params, error=error)
        return Outcome(
            trigger.finding_id,
            case.root,
            "failed",
            f"{error}; later changes were not made; re-run with --resume",
            playbook.id,
        )
    if response.awaiting_approval:
        _record(case, "awaiting-approval", trigger, playbook, target, params=params)
        message = (
            f"playbook {playbook.id} done except containment, which awaits approval: "
            f"cloudir respond --case {case.root} --approve"
        )
        return Outcome(trigger.finding_id, case.root, "awaiting-approval", message, playbook.id)
    _record(case, "completed", trigger, playbook, target, params=params, skipped=dict(response.skipped))
    if response.skipped:
        skipped = "; ".join(f"skipped: {step_id}: {reason}" for step_id, reason in response.skipped)
        message = f"playbook {playbook.id} completed with skipped steps for {trigger.finding_id} ({skipped})"
        return Outcome(trigger.finding_id, case.root, COMPLETED_WITH_SKIPS, message, playbook.id)
    return Outcome(
        trigger.finding_id,
        case.root,
        "completed",
        f"playbook {playbook.id} completed for {trigger.finding_id}",
        playbook.id,
    )


def approve_pending(
    case_dir: Path,
    *,
    provider_factory: ProviderFactory = default_provider,
    playbooks: list[Playbook] | None = None,
    console: Console | None = None,
    observer: StepObserver | None = None,
) -> list[Outcome]:
    """Run the held-back containment of every finding in the case that awaits approval."""
    if not (case_dir / CASE_FILE).exists():
        raise CloudirError(f"{case_dir} is not a cloudir case")
    pending = [fid for fid, rec in finding_responses(case_dir).items() if rec["action"] == "response.awaiting-approval"]
    if not pending:
        raise CloudirError(f"nothing in {case_dir} awaits approval")
    outcomes = []
    for finding_id in pending:
        trigger = Trigger.from_dict(json.loads((case_dir / _trigger_path(finding_id)).read_text(encoding="utf-8")))
        outcomes.append(
            respond(
                trigger,
                case_dir,
                provider_factory=provider_factory,
                playbooks=playbooks,
                approve=True,
                console=console,
                observer=observer,
            )
        )
    return outcomes
