"""The operations layer: one function per use case, shared by every front end.

Each function takes a typed request and returns a typed result; front ends (the CLI, the playbook engine,
the demo, the serverless handlers) only parse their input into a request and present the result.

Re-run rule, the same on every cloud: a case folder can be joined by any later acquisition, containment or
log pull; running a plan that already ran in the case needs ``resume``, which continues a failed or
interrupted run and never repeats a completed step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cloudir.case import CASE_FILE, Case
from cloudir.errors import CloudirError
from cloudir.plan import Plan, RunResult, StepObserver, require_completed, run_plan
from cloudir.provider import (
    AcquireOptions,
    ContainOptions,
    LogPullRequest,
    LogScope,
    Provider,
    Target,
    TargetKind,
    TargetQuery,
    credentials_found,
    get_provider,
    log_scope,
    offline_provider,
    symbolic_target,
)

CaseHook = Callable[[Case], None]  # called once the case is open, before anything runs (e.g. attach a mirror)
NO_CREDENTIALS_NOTE = "no {cloud} credentials found: nothing was resolved, identifiers are shown as given"


@dataclass(frozen=True)
class AcquireRequest:
    """Preserve a target and acquire its evidence into a case."""

    query: TargetQuery
    case_dir: Path
    options: AcquireOptions = field(default_factory=AcquireOptions)
    resume: bool = False
    on_case: CaseHook | None = None


@dataclass(frozen=True)
class ContainRequest:
    """Contain a target whose acquisition completed in the case (``force``: without one, recorded)."""

    query: TargetQuery
    case_dir: Path
    options: ContainOptions = field(default_factory=ContainOptions)
    resume: bool = False
    force: bool = False
    on_case: CaseHook | None = None


@dataclass(frozen=True)
class LogsRequest:
    """Collect control-plane logs into a case (created when missing); ``target``: narrowed to its identities and
    resources (:func:`target_logs`)."""

    pull: LogPullRequest
    case_dir: Path
    resume: bool = False
    description: str = ""
    on_case: CaseHook | None = None
    target: TargetQuery | None = None


@dataclass(frozen=True)
class Progress:
    """Where a run reports progress: a console for long steps and an observer of step status."""

    console: Console | None = None
    observer: StepObserver | None = None


@dataclass
class RunReport:
    """What a run did: the case and the runner's result."""

    case: Case
    run: RunResult


@dataclass
class TargetReport(RunReport):
    """What a run against a target did, and the target it resolved to."""

    target: Target


def open_case(provider: Provider, root: Path, *, description: str = "") -> Case:
    """Join the case at ``root`` (created when missing) and send ``provider``'s calls to its custody log."""
    case = Case.open(root) if (root / CASE_FILE).exists() else Case.create(root, description=description)
    provider.bind(case)
    return case


def check_rerun(case: Case, plan: Plan, *, resume: bool) -> None:
    """Refuse a second run of ``plan`` in ``case`` unless ``resume`` (which never repeats a completed step)."""
    status = case.run_status(plan.key)
    if status is None or resume:
        return
    hint = (
        "it is complete; --resume re-checks it without repeating any step"
        if status == "completed"
        else "add --resume to continue it from where it stopped"
    )
    raise CloudirError(f"this {plan.name} of {plan.target} already ran in {case.root} ({status})", hint=hint)


def resolve_target(provider: Provider, query: TargetQuery, case: Case) -> Target:
    """Resolve the target, recording what it resolved to in the case's custody log."""
    with case.action("target.resolve", target=query.value) as act:
        target = provider.find_target(query)
        act.details |= {"ref": target.ref, "kind": target.kind.value, "name": target.name, **target.details}
    return target


# -- plans: what each use case runs, built in one place for the CLI, its dry runs, the demo and the playbooks --
def acquisition_plan(provider: Provider, target: Target, options: AcquireOptions) -> Plan:
    """Preserve, capture, snapshot, copy and optionally image ``target``."""
    return provider.plan_acquire(target, options)


def containment_plan(provider: Provider, target: Target, options: ContainOptions) -> Plan:
    """Isolate ``target`` and/or revoke its credentials."""
    return provider.plan_contain(target, options)


def log_plan(provider: Provider, pull: LogPullRequest, target: Target | None = None) -> Plan:
    """Pull logs for a window and scope; with ``target``, narrowed to it (the plan's notes say to what)."""
    if target is None:
        return provider.plan_pull_logs(pull)
    narrowed = target_logs(pull, target)
    plan = provider.plan_pull_logs(narrowed)
    scope = LogScope(tuple(narrowed.principals), tuple(narrowed.access_keys), tuple(narrowed.resources))
    plan.notes.insert(0, f"narrowed to {target.ref}: {scope.describe()}")
    return plan


def target_logs(pull: LogPullRequest, target: Target) -> LogPullRequest:
    """``pull`` narrowed to the target's identities and resources as its provider derives them: the instance's
    role sessions (AWS), managed identities (Azure) or service accounts (Google Cloud), a key's or a principal's
    own events. A flow-log pull is narrowed to the instance's network (:func:`target_flows`)."""
    if pull.extra.get("flows"):
        return target_flows(pull, target)
    scope = log_scope(target)
    return replace(
        pull,
        principals=list(dict.fromkeys([*pull.principals, *scope.principals])),
        access_keys=list(dict.fromkeys([*pull.access_keys, *scope.access_keys])),
        resources=list(dict.fromkeys([*pull.resources, *scope.resources])),
    )


def target_flows(pull: LogPullRequest, target: Target) -> LogPullRequest:
    """The flow logs of the target's network: an instance's connections (no identity or key scope applies)."""
    instance = [target.id] if target.kind is TargetKind.INSTANCE else []
    return replace(pull, resources=instance, principals=[], access_keys=[], extra={**pull.extra, "flows": True})


def run(plan: Plan, case: Case, progress: Progress | None = None, *, raise_on_failure: bool = True) -> RunResult:
    """Run ``plan`` in ``case`` through the shared runner (custody records, run state, resume)."""
    progress = progress or Progress()
    return run_plan(plan, case, console=progress.console, observer=progress.observer, raise_on_failure=raise_on_failure)


def _run(plan: Plan, case: Case, resume: bool, progress: Progress) -> RunResult:
    check_rerun(case, plan, resume=resume)
    return run(plan, case, progress)


def _joined(provider: Provider, case: Case | None, root: Path, hook: CaseHook | None, *, description: str = "") -> Case:
    """The case to run in: ``case`` when the caller holds it open already, else the one at ``root`` joined."""
    if case is not None:
        provider.bind(case)
        return case
    opened = open_case(provider, root, description=description)
    if hook is not None:
        hook(opened)
    return opened


def acquire(
    provider: Provider, request: AcquireRequest, progress: Progress | None = None, *, case: Case | None = None
) -> TargetReport:
    """Resolve the target, then preserve, capture, snapshot, copy and optionally image it (``case``: held open)."""
    case = _joined(provider, case, request.case_dir, request.on_case)
    target = resolve_target(provider, request.query, case)
    plan = acquisition_plan(provider, target, request.options)
    return TargetReport(case, _run(plan, case, request.resume, progress or Progress()), target)


def contain(
    provider: Provider, request: ContainRequest, progress: Progress | None = None, *, case: Case | None = None
) -> TargetReport:
    """Isolate a target and/or revoke its credentials, only after its acquisition completed in the case."""
    root = request.case_dir
    if case is None and not (root / CASE_FILE).exists() and not request.force:
        raise CloudirError(
            f"no case at {root}",
            hint=f"acquire the target into a case first (cloudir acquire {provider.cloud}), or pass --force",
        )
    case = _joined(provider, case, root, request.on_case)
    target = resolve_target(provider, request.query, case)
    require_completed(case, "acquire", target.ref, force=request.force)
    plan = containment_plan(provider, target, request.options)
    return TargetReport(case, _run(plan, case, request.resume, progress or Progress()), target)


def collect_logs(
    provider: Provider, request: LogsRequest, progress: Progress | None = None, *, case: Case | None = None
) -> RunReport:
    """Pull control-plane logs for a window and scope into the case; raw pages are kept as evidence. With a target,
    it is resolved (recorded in the case) and the pull narrowed to it (:func:`target_logs`)."""
    log_plan(provider, request.pull)  # refuse an impossible pull before a case folder is made
    case = _joined(provider, case, request.case_dir, request.on_case, description=request.description)
    target = resolve_target(provider, request.target, case) if request.target is not None else None
    plan = log_plan(provider, request.pull, target)  # planned once bound: as the identities assumed for the case
    return RunReport(case, _run(plan, case, request.resume, progress or Progress()))


def _dry_provider(cloud: str, config: dict[str, Any]) -> Provider | None:
    """The adapter to plan with: bound to nothing when credentials exist, else None (plan offline)."""
    if not credentials_found(cloud, **config):
        return None
    provider = get_provider(cloud, **config)
    provider.bind(None)
    return provider


def dry_run(cloud: str, config: dict[str, Any], build: Callable[[Provider, Target], Plan], query: TargetQuery) -> Plan:
    """The plan ``build`` makes for the target, changing nothing and recording nothing.

    With credentials the target is resolved (read-only calls); without any, the plan is built offline
    from the declared calls with the target's identifiers as given, and no cloud call is made.
    """
    provider = _dry_provider(cloud, config)
    if provider is not None:
        return build(provider, provider.find_target(query))
    offline = offline_provider(cloud, **config)
    plan = build(offline, symbolic_target(cloud, query, account=_given_account(offline)))
    plan.notes.append(NO_CREDENTIALS_NOTE.format(cloud=cloud))
    return plan


def _given_account(provider: Provider) -> str | None:
    """The account / subscription / project the adapter was configured with, when it knows it without a call."""
    try:
        return provider.home_account() or None
    except CloudirError:  # AWS learns its account from sts:GetCallerIdentity, which an offline plan never calls
        return None


def dry_run_acquire(cloud: str, config: dict[str, Any], query: TargetQuery, options: AcquireOptions) -> Plan:
    """The acquisition plan for the target, changing nothing (see :func:`dry_run`)."""
    return dry_run(cloud, config, lambda provider, target: acquisition_plan(provider, target, options), query)


def dry_run_contain(cloud: str, config: dict[str, Any], query: TargetQuery, options: ContainOptions) -> Plan:
    """The containment plan for the target, changing nothing (see :func:`dry_run`)."""
    return dry_run(cloud, config, lambda provider, target: containment_plan(provider, target, options), query)


def dry_run_logs(
    cloud: str, config: dict[str, Any], request: LogPullRequest, target: TargetQuery | None = None
) -> Plan:
    """The log pull plan, changing nothing; built offline when there are no credentials (a target then narrows it
    as given, see :func:`dry_run`)."""
    if target is not None:
        return dry_run(cloud, config, lambda provider, resolved: log_plan(provider, request, resolved), target)
    provider = _dry_provider(cloud, config)
    if provider is not None:
        return log_plan(provider, request)
    plan = log_plan(offline_provider(cloud, **config), request)
    plan.notes.append(NO_CREDENTIALS_NOTE.format(cloud=cloud))
    return plan
