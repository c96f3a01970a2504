"""VPC Flow Logs collection: Cloud Logging entries of ``compute.googleapis.com/vpc_flows``, raw pages as evidence.

The same ``entries:list`` paging as the audit logs (throttle-safe, resumable, each page body stored before it is
parsed), into ``logs/gcp/flows/<project>/page-NNNNN.json`` with ``logs/gcp/flows/coverage.json``. Scoped to
instances, a pull keeps the entries either side of whose connection is one of them (flow entries name an instance
by its name, so instance ids are resolved to names first, with a recorded ``instances.aggregatedList``). Each
project's subnetworks are listed too (``subnetworks.aggregatedList``, kept as ``logs/gcp/flows/<project>/
subnetworks.json``) so the coverage says which subnets had flow logging on, with what aggregation interval and
sampling, and warns of those without; its instances too (``instances.aggregatedList``, kept as ``instances.json``:
the ``instances`` table of the timeline, with each instance's managed instance group, template, labels, addresses
and service accounts).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from google.cloud import compute_v1

from cloudir.plan import Plan, Step, StepContext, StepKind
from cloudir.provider import LogPullRequest, TargetKind, TargetQuery
from providers.gcp.logs import LogSource, ProjectPull, in_window, quote, scope_id, window_clauses
from providers.gcp.permissions import call
from providers.gcp.session import gcp_errors

if TYPE_CHECKING:
    from providers.gcp.provider import GcpProvider

FLOW_LOG = "compute.googleapis.com%2Fvpc_flows"
FLOWS_COVERAGE = "logs/gcp/flows/coverage.json"


def flows_filter(project: str, request: LogPullRequest) -> str:
    """The Logging query for one project's flow entries in the window, for the named instances when given."""
    clauses = [f"logName={quote(f'projects/{project}/logs/{FLOW_LOG}')}", *window_clauses(request)]
    names = [quote(name) for name in request.resources]
    if names:
        sides = [f"jsonPayload.{side}.vm_name={name}" for name in names for side in ("src_instance", "dest_instance")]
        clauses.append("(" + " OR ".join(sides) + ")")
    return " AND ".join(clauses)


def _coverage(scope: str) -> str:
    return f"logs/gcp/flows/scopes/{scope}/coverage.json" if scope else FLOWS_COVERAGE


FLOWS = LogSource("flows", "gcp_flows", "gcp:vpc-flow-logs", "VPC flow log", flows_filter, _coverage)


def plan_flow_pull(provider: GcpProvider, request: LogPullRequest) -> Plan:
    """One READ step per project: resolve instance ids to names (when given), then page through the entries."""
    request = in_window(request)
    projects: list[str] = list(request.extra.get("projects") or [provider.project])
    scope = scope_id(request)
    target = f"gcp:{','.join(projects)}:{request.start}/{request.end}:flows" + (f":{scope}" if scope else "")
    ids = [resource for resource in request.resources if resource.isdigit()]
    steps = []
    for project in projects:
        calls = [call("compute", "instances.aggregatedList", None, project=project)]  # names, then the inventory
        calls.append(
            call(
                "logging",
                "entries.list",
                None,
                resourceNames=f"projects/{project}",
                filter=flows_filter(project, request),
                orderBy="timestamp asc",
                pageSize=provider.log_page_size,
            )
        )
        calls.append(call("compute", "subnetworks.aggregatedList", None, project=project))
        steps.append(
            Step(
                f"logs:flows:{project}",
                f"Pull VPC Flow Logs of project {project}, {request.start} to {request.end}",
                StepKind.READ,
                calls,
                _FlowPull(provider, request, target, project, scope).run,
            )
        )
    folder = "logs/gcp/flows/<project>" + (f"/{scope}" if scope else "")
    notes = [f"raw pages go to {folder}/page-NNNNN.json; coverage to {_coverage(scope)}"]
    if ids:
        notes.append(f"instance ids {', '.join(ids)} are resolved to instance names first (flow entries name them)")
    return Plan("logs", provider.cloud, target, steps, notes)


class _FlowPull:
    """One project's flow entries, for instances named (ids resolved when the step runs)."""

    def __init__(self, provider: GcpProvider, request: LogPullRequest, target: str, project: str, scope: str) -> None:
        self.provider = provider
        self.request = request
        self.target = target
        self.project = project
        self.scope = scope

    def run(self, ctx: StepContext) -> dict[str, Any]:
        """Resolve instance ids to names, then page through the flow entries into the case."""
        names = [self._name(resource) for resource in self.request.resources]
        request = LogPullRequest(self.request.start, self.request.end, resources=names, extra=self.request.extra)
        pull = ProjectPull(FLOWS, self.provider, request, target=self.target, project=self.project, scope=self.scope)
        pulled = pull.pull(ctx.case)
        return {
            **pulled,
            "instances": names,
            "inventory": self._inventory(ctx, pull.folder),
            "subnetworks": self._subnet_coverage(ctx, pull.folder),
        }

    def _inventory(self, ctx: StepContext, folder: str) -> int:
        """The project's instances as Compute lists them, kept raw (``instances.json``): flow entries name an
        instance only, its peer group (MIG, template, labels) and its service accounts' API calls need the rest."""
        client = self.provider.api.compute(compute_v1.InstancesClient)
        with gcp_errors(f"list the instances of project {self.project}", "compute.instances.list"):
            instances = [
                compute_v1.Instance.to_dict(instance, preserving_proto_field_name=False)
                for _, scoped in client.aggregated_list(project=self.project)
                for instance in scoped.instances
            ]
        ctx.case.write_json(
            f"{folder}/instances.json", {"gcpInventory": 1, "project": self.project, "instances": instances}
        )
        return len(instances)

    def _subnet_coverage(self, ctx: StepContext, folder: str) -> dict[str, dict[str, Any]]:
        """List the project's subnetworks (kept raw) and add which had flow logging on to the coverage report."""
        client = self.provider.api.compute(compute_v1.SubnetworksClient)
        with gcp_errors(f"list the subnetworks of project {self.project}", "compute.subnetworks.list"):
            subnets = [
                compute_v1.Subnetwork.to_dict(subnet)
                for _, scoped in client.aggregated_list(project=self.project)
                for subnet in scoped.subnetworks
            ]
        ctx.case.write_json(f"{folder}/subnetworks.json", {"project": self.project, "subnetworks": subnets})
        found = {
            f"{str(s.get('region', '')).rsplit('/', 1)[-1]}/{s.get('name')}": {
                "flow_logs": bool((s.get("log_config") or {}).get("enable")),
                "aggregation_interval": (s.get("log_config") or {}).get("aggregation_interval"),
                "flow_sampling": (s.get("log_config") or {}).get("flow_sampling"),
                "range": s.get("ip_cidr_range"),
            }
            for s in subnets
        }
        path = ctx.case.root / _coverage(self.scope)
        report = json.loads(path.read_text(encoding="utf-8"))
        report["locations"].update({f"{self.project}/{name}": details for name, details in found.items()})
        report["warnings"] += [
            f"{self.project}/{name}: VPC Flow Logs are off on this subnet (nothing of its traffic was recorded)"
            for name, details in sorted(found.items())
            if not details["flow_logs"]
        ]
        ctx.case.write_json(_coverage(self.scope), report)
        return found

    def _name(self, resource: str) -> str:
        if not resource.isdigit():
            return resource
        found = self.provider.find_target(TargetQuery(TargetKind.INSTANCE, resource))
        return found.name or resource
