"""Turn a playbook and a trigger into one flat plan.

The acquisition, log and containment steps are the plans :mod:`cloudir.ops` builds for the CLI (the same typed
options and functions: :func:`~cloudir.ops.acquisition_plan`, :func:`~cloudir.ops.log_plan`,
:func:`~cloudir.ops.containment_plan`), adopted as they are next to the engine's own steps (timeline, analysis,
report, notification: :mod:`cloudir.playbook.steps`), so a dry run lists every API call and the shared runner gives
custody records and resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudir import ops
from cloudir.config import load_config
from cloudir.errors import CapabilityNotSupportedError
from cloudir.plan import Plan, Step, StepContext, StepKind
from cloudir.playbook.model import ACQUIRE_ACTIONS, Playbook, PlaybookStep
from cloudir.playbook.steps import (
    analyze_step,
    approval_step,
    missing_step,
    notify_step,
    report_step,
    timeline_step,
)
from cloudir.provider import (
    AcquireOptions,
    Capability,
    ContainOptions,
    LogPullRequest,
    Provider,
    Target,
    TargetKind,
)
from cloudir.triggers import Trigger


@dataclass
class ResponsePlan:
    """A playbook applied to one trigger and target."""

    playbook: Playbook
    trigger: Trigger
    target: Target
    plan: Plan
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (playbook step id, reason)
    awaiting_approval: bool = False  # containment steps were held back for approval


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
        return Step(ids[step.id], step.title, step.kind, step.calls, run, step.lane)

    return [wrap(step) for step in steps]


def _window(trigger: Trigger, params: dict[str, Any]) -> tuple[str, str]:
    when = datetime.fromisoformat(trigger.time.replace("Z", "+00:00"))
    start = when - timedelta(hours=float(params["log_window_before_hours"]))
    end = min(when + timedelta(hours=float(params["log_window_after_hours"])), datetime.now(UTC))
    end = max(end, when)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def log_request(trigger: Trigger, params: dict[str, Any]) -> LogPullRequest:
    """The log pull for the window around the finding, in the finding's region."""
    start, end = _window(trigger, params)
    return LogPullRequest(start=start, end=end, locations=[trigger.region] if trigger.region else [])


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
            "timeline": (StepKind.READ, timeline_step),
            "analyze": (StepKind.READ, analyze_step(self.params)),
            "report": (StepKind.READ, report_step),
            "notify": (
                StepKind.READ,
                notify_step(self.trigger, pb_step.params.get("format", "md"), pb_step.params.get("channels")),
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
            self._acquire = ops.acquisition_plan(self.provider, self.target, options)
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
        request = log_request(self.trigger, self.params)
        if Capability.PULL_LOGS not in self.provider.capabilities:
            return [], f"the {self.trigger.cloud} provider cannot pull logs; skipped"
        scoped_to: Target | None = None
        if pb_step.action == "collect_flows":  # the target's network: its instance's connections
            if Capability.PULL_FLOWS not in self.provider.capabilities:
                return [], f"the {self.trigger.cloud} provider cannot pull flow logs yet; skipped"
            request.extra["flows"] = True
            scoped_to = self.target
        else:
            if pb_step.params.get("identity"):  # the identity provider's logs too: Entra ID, Google Workspace
                request.extra["identity"] = True
                if self.params["workspace_admin"]:
                    request.extra["workspace_admin"] = self.params["workspace_admin"]
            if self.params["log_scope"] == "target":  # the target's identities and resources, and the finding's
                scoped_to = self.target
                request.principals += [self.trigger.principal] if self.trigger.principal else []
        try:
            plan = ops.log_plan(self.provider, request, scoped_to)
        except ImportError as exc:
            message = f"the {self.trigger.cloud} provider's log collection is not in this build ({exc})"
            return [missing_step(pb_step, message)], None
        return _adopt(plan.steps, pb_step.id, {}), "; ".join(plan.notes) or None

    def _contain_steps(self, pb_step: PlaybookStep) -> tuple[list[Step], str | None]:
        if not ({Capability.ISOLATE, Capability.REVOKE} & self.provider.capabilities):
            return [], f"the {self.trigger.cloud} provider cannot contain; skipped"
        needs_approval = self.playbook.containment_requires_approval or pb_step.id in self._unverified
        if needs_approval and not self.approved:
            self.result.awaiting_approval = True
            return [approval_step(pb_step, self.trigger)], "held back until a responder approves containment"
        options = ContainOptions(
            examiner_cidr=self.params["examiner_cidr"],
            revoke_credentials=bool(self.params["revoke_credentials"]),
            window_start=_window(self.trigger, self.params)[0],
        )
        plan = ops.containment_plan(self.provider, self.target, options)
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
