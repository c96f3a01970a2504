"""Turn a playbook and a trigger into one plan, and run it into a case with idempotency and approval.

The plan is flat: the provider's acquisition, log and containment steps appear as they are, next to the
engine's own steps (timeline, analysis, report, notification), so a dry run lists every API call and the
shared runner gives custody records and resume. Each finding's progress is recorded in custody as
``response.<status>`` records keyed on the finding id, which makes a second delivery a no-op.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from cloudir.case import CASE_FILE, REPORTS_DIR, TIMELINE_DB, Case
from cloudir.caselock import CaseBusyError
from cloudir.config import load_config
from cloudir.custody import read_records
from cloudir.errors import CapabilityNotSupportedError, CloudirError, PreconditionError
from cloudir.plan import Plan, Step, StepContext, StepKind, StepObserver, run_plan
from cloudir.playbook.model import ACQUIRE_ACTIONS, Playbook, PlaybookStep, load_playbooks, select_playbook
from cloudir.provider import (
    AcquireOptions,
    Capability,
    ContainOptions,
    LogPullRequest,
    Provider,
    Target,
    TargetKind,
    get_provider,
)
from cloudir.provider import offline_provider as offline_adapter
from cloudir.registry import provider_module
from cloudir.safepath import id_folder
from cloudir.textsafe import esc
from cloudir.triggers import Trigger

ProviderFactory = Callable[[Trigger], Provider]
REPORT_FILE = f"{REPORTS_DIR}/report.html"


def default_provider(trigger: Trigger) -> Provider:
    """The adapter for the trigger's cloud, for its account and region, as the configuration routes it.

    Each provider module's ``trigger_config`` reads :mod:`cloudir.config` for the finding's account: AWS the role
    (and external id) ``[roles.aws]`` maps it to and the forensic account's role; Azure and GCP the forensic
    subscription / project ``[forensic]`` maps it to. ``CLOUDIR_PROVIDER_CONFIG`` (a JSON object keyed by cloud)
    adds adapter settings, e.g. ``{"gcp": {"forensic_project": "vault"}, "azure": {"soc_subscription": "..."}}``.
    """
    config = provider_module(trigger.cloud).trigger_config(trigger.account, trigger.region, load_config())
    return get_provider(trigger.cloud, **{**config, **_extra_config(trigger.cloud)})


def offline_provider(trigger: Trigger) -> Provider:
    """The adapter for the trigger's cloud built without credentials, to plan offline (it is never called)."""
    config: dict[str, Any] = {
        "aws": {"region": trigger.region or "us-east-1"},
        "azure": {"subscription_id": trigger.account or "<subscription>"},
        "gcp": {"project": trigger.account or "<project>"},
    }[trigger.cloud]
    return offline_adapter(trigger.cloud, **{**config, **_extra_config(trigger.cloud)})


def _extra_config(cloud: str) -> dict[str, Any]:
    try:
        extra = json.loads(os.environ.get("CLOUDIR_PROVIDER_CONFIG") or "{}")
    except json.JSONDecodeError as exc:
        raise CloudirError(f"CLOUDIR_PROVIDER_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(extra, dict) or not isinstance(extra.get(cloud, {}), dict):
        raise CloudirError('CLOUDIR_PROVIDER_CONFIG must be a JSON object like {"gcp": {...}}')
    return dict(extra.get(cloud, {}))


@dataclass
class ResponsePlan:
    """A playbook applied to one trigger and target."""

    playbook: Playbook
    trigger: Trigger
    target: Target
    plan: Plan
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (playbook step id, reason)
    awaiting_approval: bool = False  # containment steps were held back for approval


COMPLETED_WITH_SKIPS = "completed with skipped steps"


@dataclass
class Outcome:
    """What one delivery of a finding did."""

    finding_id: str
    case_dir: Path
    status: str  # completed | completed with skipped steps | awaiting-approval | failed | duplicate | in-progress
    message: str
    playbook: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form returned by the serverless handlers."""
        return {
            "finding_id": self.finding_id,
            "case_dir": str(self.case_dir),
            "status": self.status,
            "message": self.message,
            "playbook": self.playbook,
        }


# -- target -------------------------------------------------------------------------------------------------
def symbolic_target(trigger: Trigger) -> Target:
    """The target as the finding names it, without asking the cloud (for offline plans).

    Azure findings give the resource group as the query's location; the VM's region is the finding's.
    """
    query = trigger.target
    location = trigger.region if trigger.cloud == "azure" else query.location or trigger.region
    return Target(
        cloud=trigger.cloud,
        kind=query.kind,
        id=query.value,
        location=location or "<location>",
        account=trigger.account or "<account>",
        details={"symbolic": True},
    )


def target_tags(trigger: Trigger, target: Target) -> dict[str, str] | None:
    """Tags known for the target (resolved details first, then the finding); None when unknown."""
    tags: dict[str, str] = {}
    raw_tags = _get_path(trigger.raw, "resource.instanceDetails.tags") or []
    tags.update({str(t.get("key")): str(t.get("value")) for t in raw_tags if isinstance(t, dict)})
    for resource in trigger.raw.get("Resources", []) if isinstance(trigger.raw.get("Resources"), list) else []:
        if isinstance(resource.get("Tags"), dict):
            tags.update({str(k): str(v) for k, v in resource["Tags"].items()})
    resolved = target.details.get("tags")
    if not tags and resolved is None:
        return None
    if isinstance(resolved, dict):
        tags.update({str(k): str(v) for k, v in resolved.items()})
    elif isinstance(resolved, list):
        tags.update({str(t.get("Key", t.get("key"))): str(t.get("Value", t.get("value"))) for t in resolved})
    return tags


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


# -- plan building ------------------------------------------------------------------------------------------
def _acquire_group(step: Step) -> str:
    if step.kind in {StepKind.PRESERVE, StepKind.READ}:
        return "preserve"
    text = f"{step.id} {step.title}".lower()
    return "copy" if "copy" in text or "share" in text else "snapshot"


def _adopt(steps: list[Step], prefix: str, ids: dict[str, str]) -> list[Step]:
    """Provider steps renamed ``prefix.<id>``; each still sees the results of its own plan under the original ids.

    ``ids`` maps original to new ids for every adopted step of the same provider plan (filled as groups are
    adopted), so a copy step finds the snapshot step's result even though they sit in different groups.
    """

    def wrap(step: Step) -> Step:
        def run(ctx: StepContext) -> dict[str, Any] | None:
            view = {orig: ctx.results[new] for orig, new in ids.items() if new in ctx.results}
            return step.run(StepContext(ctx.case, view, ctx.console))

        ids[step.id] = f"{prefix}.{step.id}"
        return Step(ids[step.id], step.title, step.kind, step.calls, run)

    return [wrap(step) for step in steps]


def _window(trigger: Trigger, params: dict[str, Any]) -> tuple[str, str]:
    when = datetime.fromisoformat(trigger.time.replace("Z", "+00:00"))
    start = when - timedelta(hours=float(params["log_window_before_hours"]))
    end = min(when + timedelta(hours=float(params["log_window_after_hours"])), datetime.now(UTC))
    end = max(end, when)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def log_request(trigger: Trigger, target: Target, params: dict[str, Any]) -> LogPullRequest:
    """The log pull for the window around the finding; scoped to the target when ``log_scope: target``."""
    start, end = _window(trigger, params)
    request = LogPullRequest(start=start, end=end, locations=[trigger.region] if trigger.region else [])
    if params["log_scope"] == "target":
        if target.kind is TargetKind.ACCESS_KEY:
            request.access_keys.append(target.id)
        elif target.kind is TargetKind.INSTANCE:
            request.resources.append(target.id)
        elif target.kind is TargetKind.PRINCIPAL:
            request.principals.append(target.id)
        if trigger.principal and trigger.principal not in request.principals:
            request.principals.append(trigger.principal)
    return request


class _Builder:
    def __init__(
        self,
        playbook: Playbook,
        trigger: Trigger,
        provider: Provider,
        target: Target,
        params: dict[str, Any],
        *,
        approved: bool,
        run_number: int,
    ) -> None:
        self.playbook = playbook
        self.trigger = trigger
        self.provider = provider
        self.target = target
        self.params = params
        self.approved = approved
        self.run_number = run_number
        self.offline = target.symbolic
        self.result = ResponsePlan(playbook, trigger, target, Plan(f"playbook:{playbook.id}", trigger.cloud, "", []))
        self._acquire: Plan | None = None
        self._acquire_ids: dict[str, str] = {}
        self._unverified: set[str] = set()  # steps whose tag condition could not be checked

    def build(self) -> ResponsePlan:
        steps: list[Step] = []
        notes: list[str] = []
        tags = target_tags(self.trigger, self.target)
        # an instance is acquired by its snapshots; a key or principal by the capture of its state
        evidence = {"snapshot"} if self.target.kind is TargetKind.INSTANCE else set(ACQUIRE_ACTIONS)
        acquired = False
        for pb_step in self.playbook.steps:
            reason = pb_step.when.trigger_reason(self.trigger)
            if reason is None and pb_step.action == "contain" and not acquired:
                reason = f"no acquisition of {self.target.ref} runs before it in this plan"
            if reason is None and pb_step.when.uses_tags:
                if tags is not None:
                    reason = pb_step.when.tags_reason(tags)
                elif self.offline:
                    notes.append(f"{pb_step.id}: tag conditions are checked once the target is resolved")
                else:  # the condition cannot be checked: a responder must look before it runs
                    self._unverified.add(pb_step.id)
                    notes.append(f"{pb_step.id}: target tags unknown, so it runs only after approval")
            if reason is not None:
                self.result.skipped.append((pb_step.id, reason))
                notes.append(f"{pb_step.id}: skipped ({reason})")
                continue
            new_steps, note = self._expand(pb_step)
            steps.extend(new_steps)
            acquired = acquired or (pb_step.action in evidence and bool(new_steps))
            if note:
                notes.append(f"{pb_step.id}: {note}")
        self.result.plan = Plan(
            name=f"playbook:{self.playbook.id}",
            cloud=self.trigger.cloud,
            target=self.target.ref,
            steps=steps,
            notes=notes,
            symbolic=self.offline,
        )
        return self.result

    def _expand(self, pb_step: PlaybookStep) -> tuple[list[Step], str | None]:
        action = pb_step.action
        if action in ACQUIRE_ACTIONS:
            return self._acquire_steps(pb_step)
        if action in {"pull_logs", "collect_flows"}:
            return self._log_steps(pb_step)
        if action == "contain":
            return self._contain_steps(pb_step)
        # the report and the notification describe the case as it is now: every run writes them afresh
        suffix = f".run{self.run_number}" if action in {"report", "notify"} else ""
        local = {
            "timeline": (StepKind.READ, _timeline_step),
            "analyze": (StepKind.READ, _analyze_step(self.params)),
            "report": (StepKind.READ, _report_step),
            "notify": (
                StepKind.READ,
                _notify_step(self.trigger, pb_step.params.get("format", "md"), pb_step.params.get("channels")),
            ),
        }
        kind, run = local[action]
        return [Step(pb_step.id + suffix, pb_step.title, kind, [], run)], None

    def _acquire_plan(self) -> Plan:
        if self._acquire is None:
            actions = {s.action for s in self.playbook.steps}
            configured = load_config().forensic_for(self.trigger.cloud, self.trigger.account)
            options = AcquireOptions(
                forensic_account=(self.params["forensic_account"] or configured) if "copy" in actions else None,
                forensic_location=self.params["forensic_location"],
                encryption_key=self.params["encryption_key"],
                raw_image=bool(self.params["raw_image"]),
                group_mode=str(self.params["group_mode"]),
                extra={"forensic_kms_key": self.params["forensic_kms_key"]} if self.params["forensic_kms_key"] else {},
            )
            self._acquire = self.provider.plan_acquire(self.target, options)
        return self._acquire

    def _acquire_steps(self, pb_step: PlaybookStep) -> tuple[list[Step], str | None]:
        capability = {"preserve": Capability.PRESERVE, "snapshot": Capability.SNAPSHOT, "copy": Capability.COPY}
        if capability[pb_step.action] not in self.provider.capabilities:
            return [], f"the {self.trigger.cloud} provider cannot {pb_step.action}; skipped"
        try:
            plan = self._acquire_plan()
        except CapabilityNotSupportedError as exc:
            return [], f"skipped: {exc}"
        chosen = [s for s in plan.steps if _acquire_group(s) == pb_step.action]
        if not chosen:
            return [], f"nothing to {pb_step.action} for {self.target.kind.value} {self.target.id}"
        first = not self._acquire_ids  # the acquisition plan's notes are shown once, with its first group
        return _adopt(chosen, pb_step.id, self._acquire_ids), ("; ".join(plan.notes) or None) if first else None

    def _log_steps(self, pb_step: PlaybookStep) -> tuple[list[Step], str | None]:
        request = log_request(self.trigger, self.target, self.params)
        if pb_step.params.get("identity"):  # the identity provider's logs too: Entra ID, Google Workspace
            request.extra["identity"] = True
            if self.params["workspace_admin"]:
                request.extra["workspace_admin"] = self.params["workspace_admin"]
        if Capability.PULL_LOGS not in self.provider.capabilities:
            return [], f"the {self.trigger.cloud} provider cannot pull logs; skipped"
        if pb_step.action == "collect_flows":
            if Capability.PULL_FLOWS not in self.provider.capabilities:
                return [], f"the {self.trigger.cloud} provider cannot pull flow logs yet; skipped"
            instance = [self.target.id] if self.target.kind is TargetKind.INSTANCE else []
            request = replace(request, resources=instance, principals=[], access_keys=[], extra={"flows": True})
        try:
            plan = self.provider.plan_pull_logs(request)
        except ImportError as exc:
            message = f"the {self.trigger.cloud} provider's log collection is not in this build ({exc})"
            return [_missing_step(pb_step, message)], None
        return _adopt(plan.steps, pb_step.id, {}), "; ".join(plan.notes) or None

    def _contain_steps(self, pb_step: PlaybookStep) -> tuple[list[Step], str | None]:
        if not ({Capability.ISOLATE, Capability.REVOKE} & self.provider.capabilities):
            return [], f"the {self.trigger.cloud} provider cannot contain; skipped"
        needs_approval = self.playbook.containment_requires_approval or pb_step.id in self._unverified
        if needs_approval and not self.approved:
            self.result.awaiting_approval = True
            return [_approval_step(pb_step, self.trigger)], "held back until a responder approves containment"
        options = ContainOptions(
            examiner_cidr=self.params["examiner_cidr"],
            revoke_credentials=bool(self.params["revoke_credentials"]),
            window_start=_window(self.trigger, self.params)[0],
        )
        plan = self.provider.plan_contain(self.target, options)
        return _adopt(plan.steps, pb_step.id, {}), "; ".join(plan.notes) or None


def build_response_plan(
    playbook: Playbook,
    trigger: Trigger,
    provider: Provider,
    target: Target,
    *,
    approved: bool,
    params: dict[str, Any] | None = None,
    run_number: int = 1,
) -> ResponsePlan:
    """The flat plan for ``playbook`` on ``trigger``; for a symbolic target it is an offline plan that cannot run."""
    merged = {**playbook.parameters, **(params or {})}
    return _Builder(playbook, trigger, provider, target, merged, approved=approved, run_number=run_number).build()


# -- engine steps -------------------------------------------------------------------------------------------
def _missing_step(pb_step: PlaybookStep, message: str) -> Step:
    """A step whose implementation is missing from this build: it fails with a clear error when run."""

    def run(ctx: StepContext) -> dict[str, Any]:
        raise CloudirError(message)

    return Step(pb_step.id, f"{pb_step.title} (unavailable)", StepKind.READ, [], run)


def _approval_step(pb_step: PlaybookStep, trigger: Trigger) -> Step:
    def run(ctx: StepContext) -> dict[str, Any]:
        return {"status": "awaiting approval", "finding_id": trigger.finding_id}

    return Step(f"{pb_step.id}.awaiting-approval", f"{pb_step.title}: awaiting approval", StepKind.READ, [], run)


def _timeline_step(ctx: StepContext) -> dict[str, Any]:
    from cloudir.ops.investigate import build_timeline

    stats = build_timeline(ctx.case)
    return {"timeline": TIMELINE_DB, "events": stats.ingested}


def _analyze_step(params: dict[str, Any]) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        from cloudir.ops.investigate import AnalyzeRequest, analyze

        db_path = ctx.case.root / TIMELINE_DB
        if not db_path.is_file():
            raise CloudirError(f"the analyze step needs {db_path}; run the timeline step first")
        rules = params.get("sigma_rules")
        summary = analyze(AnalyzeRequest(db_path, sigma_rules=Path(rules) if rules else None), ctx.case)
        return {"findings": summary.findings}

    return run


def _report_step(ctx: StepContext) -> dict[str, Any]:
    from cloudir.ops.investigate import ReportRequest, report

    path = report(ReportRequest(ctx.case.root, ctx.case.root / REPORT_FILE), ctx.case)
    return {"report": path.relative_to(ctx.case.root).as_posix()}


def _notify_step(trigger: Trigger, fmt: str, channels: list[str] | None) -> Callable[[StepContext], dict[str, Any]]:
    """Write the incident summary into the case, then send it on the configured channels (all, or ``channels``)."""

    def run(ctx: StepContext) -> dict[str, Any]:
        from cloudir.notify import channels_from_config, deliver, message_for
        from cloudir.report import incident_summary, render_summary

        summary = incident_summary(ctx.case.root)
        rel = f"notifications/{id_folder(trigger.finding_id)}.{fmt}"
        ctx.case.write_bytes(rel, render_summary(summary, fmt).encode())
        ctx.console.print(f"incident summary written to {esc(ctx.case.root / rel)}", soft_wrap=True)
        message = message_for(summary, str(ctx.case.root))
        sent = [
            deliver(channel, message, case=ctx.case) for channel in channels_from_config(load_config().notify, channels)
        ]
        for item in sent:
            style = "green" if item["outcome"] == "sent" else "red"
            detail = esc(f"{item['channel']} ({item['type']})" + (f": {item['error']}" if "error" in item else ""))
            ctx.console.print(f"[{style}]notification {item['outcome']}[/] on {detail}", soft_wrap=True)
        return {"channel": "file", "path": rel, "sent": sent}

    return run


# -- response records ---------------------------------------------------------------------------------------
def _trigger_path(finding_id: str) -> str:
    return f"triggers/{id_folder(finding_id)}.json"


def response_history(case_dir: Path) -> dict[str, dict[str, Any]]:
    """The newest ``response.*`` custody record per finding id."""
    path = case_dir / "custody.jsonl"
    if not path.is_file():
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for record in read_records(path):
        if record["action"].startswith("response.") and "finding_id" in record["details"]:
            latest[record["details"]["finding_id"]] = record
    return latest


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
    previous = response_history(case_dir).get(trigger.finding_id)
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
    previous = response_history(case_dir).get(trigger.finding_id)  # read again under the lock
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
                source=trigger.source, cloud=trigger.cloud, severity=trigger.severity, finding_type=trigger.finding_type
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
    run_number = 1 + sum(
        1
        for record in read_records(case.root / "custody.jsonl")
        if record["action"] == "response.started" and record["details"].get("finding_id") == trigger.finding_id
    )
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
        result = run_plan(response.plan, case, console=console, observer=observer, raise_on_failure=False)
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
    pending = [fid for fid, rec in response_history(case_dir).items() if rec["action"] == "response.awaiting-approval"]
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
