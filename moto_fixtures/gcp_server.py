"""A local fake of the Compute Engine REST v1, Cloud Logging v2 ``entries:list`` and Admin SDK Reports APIs.

Unmodified google-cloud clients talk to it over HTTP on 127.0.0.1. It keeps state (instances, disks,
snapshots, images, firewalls, managed instance groups, operations, log entries), answers with the
JSON shapes of the real APIs, and can throttle (429 RESOURCE_EXHAUSTED) or fail any operation once.

Every Compute change is a long-running operation that takes time (PENDING, RUNNING with its progress, DONE) and
makes its change only when DONE; ``*Operations.wait`` answers at DONE or at its deadline (scaled down from Compute's
2 minutes), so the caller polls several times. Compute's per-minute rate quotas are counted per project and quota
group, in synchronized one-minute intervals, and a request over one is refused with 403 ``rateLimitExceeded``;
IAM's and Resource Manager's (:data:`API_RATE_QUOTAS`) likewise, refused with 429 ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import itertools
import json
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from moto_fixtures.gcp_contract import Contract, ContractError, Method, api_of, contract, error_body

COMPUTE_PREFIX = "/compute/v1/projects/"
IAM_PREFIX = "/v1/projects/"
REPORTS_PREFIX = "/admin/reports/v1/activity/"
PUBLIC_BASE = "https://www.googleapis.com/compute/v1/projects/"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_STATUS_FOR_CODE = {
    "RESOURCE_EXHAUSTED": 429,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 412,
    "UNAVAILABLE": 503,
}


class LostResponse(Exception):  # noqa: N818 - not an error of the fake: the answer it drops on purpose
    """The request ran, but its answer is never sent: the server closes the connection instead."""


class FakeError(Exception):
    """An API error the fake answers with (Google JSON error envelope)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def link(project: str, *parts: str) -> str:
    """The selfLink form of a resource path."""
    return PUBLIC_BASE + "/".join((project, *parts))


def _public(value: Any) -> Any:
    """A copy of a Compute answer without the fake's own bookkeeping (keys starting with ``_``, never a Compute
    field name)."""
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, list):
        return [_public(item) for item in value]
    return value


def _project_number(project: str) -> int:
    """A stable 12-digit project number for a project id."""
    return 100_000_000_000 + int(hashlib.sha256(project.encode()).hexdigest(), 16) % 900_000_000_000


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _fingerprint(value: Any) -> str:
    """A fingerprint as Compute renders one (8 bytes, base64)."""
    return base64.b64encode(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]).decode()


@dataclass
class Project:
    """Every resource of one project."""

    instances: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # zone -> name -> instance
    disks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    igms: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnetworks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # region -> name -> subnetwork
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)  # requestId of a change -> the operation it started


# Compute Engine's rate quota groups (requests per minute per project, the documented defaults) and the group of
# each method: *.get reads, *.list lists, aggregatedList heavy-weight reads, operation polls, and the rest (changes).
COMPUTE_RATE_QUOTAS = {
    "Queries": 1500,
    "Read requests": 1500,
    "List requests": 1500,
    "Heavy-weight read requests": 1500,
    "Operation read requests": 1500,
}


# The per-minute rate quotas of the other APIs, per calling project: IAM v1's documented defaults (6,000 reads and
# 600 writes), Resource Manager's documented 600 reads (its "Quotas and usage limits" page: read operations and v3
# lists, 10 a second, 600 a minute) and 600 writes (write operations: 10 a second, 600 a minute). A request over
# one is refused with 429 RESOURCE_EXHAUSTED, as these APIs answer.
API_RATE_QUOTAS = {
    "iam": {"Read requests": 6000, "Write requests": 600},
    "cloudresourcemanager": {"Read requests": 600, "Write requests": 600},
}


def quota_group(operation: str) -> str:
    """The rate quota group a Compute method counts against."""
    collection, _, verb = operation.rpartition(".")
    if collection.endswith("Operations"):
        return "Operation read requests"
    if verb == "aggregatedList":
        return "Heavy-weight read requests"
    if verb.startswith("list"):
        return "List requests"
    return "Read requests" if verb.startswith("get") else "Queries"


@dataclass
class Injection:
    """A pending failure or throttle for one operation label."""

    code: str
    times: int
    after: int = 0  # successful calls to let through first


def _is_read(operation: str) -> bool:
    """Whether a POST method only reads (``entries.list``, ``listManagedInstances``, ``*Operations.wait``).

    Cloud Audit Logs write reads to the Data Access log, off by default for Compute; only changes reach Admin Activity.
    """
    verb = operation.rsplit(".", 1)[-1]
    return verb.startswith(("list", "get", "aggregatedList")) or verb == "wait"


class FakeGcp:
    """The fake cloud's state and request handling (independent of the HTTP server)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.projects: dict[str, Project] = {}
        self.log_entries: list[dict[str, Any]] = []
        self.service_accounts: dict[str, dict[str, Any]] = {}  # email -> {"account": {...}, "keys": [...]}
        self.iam_policies: dict[str, dict[str, Any]] = {}  # project -> its IAM policy (Resource Manager v1)
        self.requests: list[dict[str, Any]] = []  # method, path, operation, user_agent, status
        self.injections: dict[str, list[Injection]] = {}
        self.losses: dict[str, int] = {}  # operation -> how many more calls run and then lose their answer
        self.log_page_size = 50
        # Cloud Logging's read quota: entries.list requests per minute per project (60 by default, as documented);
        # a request over it is refused with 429 RESOURCE_EXHAUSTED and does not count.
        self.log_read_quota = 60
        self.log_read_window = 60.0
        self._log_reads: dict[str, deque[float]] = {}
        self._rate_counts: dict[tuple[str, int, str, int], int] = {}
        self.clock = time.monotonic
        self.workspace_activities: dict[str, list[dict[str, Any]]] = {}  # Reports API application -> activities
        self.reports_page_size = 1000  # what a page holds at most (maxResults caps it further)
        # Every change is an operation that takes time and reports progress, as on GCE, and makes its change when
        # DONE: a snapshot or image takes ``long_operation_seconds`` (the resource CREATING or PENDING until then),
        # any other change ``short_operation_seconds``. ``*Operations.wait`` blocks at most
        # ``operation_wait_seconds`` (Compute's 2 minutes, scaled down like the operations) and answers anyway.
        self.long_operation_seconds = 0.1
        self.short_operation_seconds = 0.03
        self.operation_wait_seconds = 0.02
        self.operation_min_polls = 0  # and DONE no sooner than its Nth poll (a test's, independent of machine load)
        # Compute's rate quotas per project and group (requests per synchronized interval of ``rate_window``
        # seconds, by :attr:`clock`); a request over one is refused (403 rateLimitExceeded) and does not count.
        self.compute_rate_quotas = dict(COMPUTE_RATE_QUOTAS)
        self.api_rate_quotas = copy.deepcopy(API_RATE_QUOTAS)  # API -> group -> requests, in the same intervals
        self.rate_window = 60.0
        # Called after each successful change (method, operation, path, user agent), so a sandbox can write the
        # caller's own changes into the audit log as Cloud Audit Logs does.
        # (method, operation, path, user agent, long-running operation name or None)
        self.on_write: Callable[[str, str, str, str, str | None], None] | None = None
        self._ids = itertools.count(1_000_000_001)
        # Every request is held to Google's discovery documents first (None: no contract check, for a test that
        # shows what a lenient fake would let through).
        self.contract: Contract | None = contract()

    # -- test controls ----------------------------------------------------------------------------
    def inject(self, operation: str, code: str, times: int = 1, *, after: int = 0) -> None:
        """Answer ``times`` calls of ``operation`` (e.g. ``disks.createSnapshot``) with ``code``, after ``after``."""
        with self.lock:
            self.injections.setdefault(operation, []).append(Injection(code, times, after))

    def clear_injections(self, operation: str) -> None:
        """Drop pending injections for ``operation``."""
        with self.lock:
            self.injections.pop(operation, None)

    def lose_responses(self, operation: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` run, but the connection closes before their answer is sent."""
        with self.lock:
            self.losses[operation] = times

    def project(self, name: str) -> Project:
        """A project's state (created on first use)."""
        with self.lock:
            return self.projects.setdefault(name, Project())

    def new_id(self) -> str:
        """A numeric resource id, as the API renders uint64 ids (a string)."""
        return str(next(self._ids))

    def state(self) -> dict[str, Any]:
        """A deep copy of all resources (operations excluded: they are bookkeeping, not resources)."""
        with self.lock:
            self._settle()
            return {
                name: {
                    "instances": copy.deepcopy(p.instances),
                    "disks": copy.deepcopy(p.disks),
                    "igms": copy.deepcopy(p.igms),
                    "snapshots": copy.deepcopy(p.snapshots),
                    "images": copy.deepcopy(p.images),
                    "firewalls": copy.deepcopy(p.firewalls),
                }
                for name, p in self.projects.items()
            } | {
                "_service_accounts": copy.deepcopy(self.service_accounts),
                "_iam_policies": copy.deepcopy(self.iam_policies),
            }

    @property
    def clock(self) -> Callable[[], float]:
        """What the rate and read quotas count time by (``time.monotonic`` unless a test sets its own)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        """A new time base: the requests counted under the old one count for nothing under it (a test's clock
        reading 1,000 s must not meet what the fixtures sent when the machine had been up 1,000 s)."""
        with self.lock:
            self._clock = clock
            self._rate_counts.clear()
            self._log_reads.clear()

    # -- dispatch ---------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: dict[str, Any], user_agent: str) -> tuple[int, dict[str, Any]]:
        """Answer one request: (HTTP status, JSON body)."""
        split = urlsplit(raw_path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        path = unquote(split.path)
        operation = "unknown"
        lost = repeated = False
        refusal: str | None = None
        api = api_of(split.path)
        try:
            documented = None if self.contract is None else self.contract.check(method, raw_path, body)
            api = api if documented is None else documented.api
            handler, operation, args = self._route(method, path, split.path)
            if operation.endswith("Operations.wait"):  # documented: blocks until DONE or close to 2 minutes
                time.sleep(min(self._remaining(args[0], args[-1]), self.operation_wait_seconds))
            with self.lock:
                self._settle()
                self._charge_rate(api, args[0] if args else "", operation)
                self._maybe_fail(operation)
                earlier = self._once(operation, args, query)
                repeated = earlier is not None
                status, payload = 200, earlier or handler(*args, query=query, body=body)
                if api == "compute":  # its resources carry the fake's bookkeeping; log entries are data, as stored
                    payload = _public(payload)
                if documented is not None:
                    self._check_answer(documented, payload)
                if payload.get("kind") == "compute#operation" and "requestId" in query:
                    self.project(args[0]).request_ids.setdefault(query["requestId"], payload["name"])
                lost = self.losses.get(operation, 0) > 0
                if lost:
                    self.losses[operation] -= 1
        except ContractError as exc:
            refusal = exc.message
            status, payload = exc.status, error_body(api, exc.status, exc.reason, exc.message, field=exc.field)
        except FakeError as exc:
            status, payload = exc.status, error_body(api, exc.status, exc.code, exc.message)
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "operation": operation,
                    "user_agent": user_agent,
                    "status": status,
                    "request_id": query.get("requestId"),
                    "refusal": refusal,  # what Google's published contract refuses in the request, if anything
                }
            )
        if self.on_write is not None and not repeated and status < 400 and method != "GET" and not _is_read(operation):
            lro = payload.get("name") if payload.get("kind") == "compute#operation" else None
            self.on_write(method, operation, path, user_agent, lro)
        if lost:
            raise LostResponse(operation)
        return status, payload

    def _check_answer(self, documented: Method, payload: dict[str, Any]) -> None:
        """A bug of the fake unless its answer is of the documented response schema (raised: answered 500)."""
        assert self.contract is not None
        try:
            self.contract.check_response(documented, payload)
        except ContractError as exc:
            raise RuntimeError(f"the fake's answer is not a documented {documented.id} response: {exc}") from None

    def _once(self, operation: str, args: tuple[str, ...], query: dict[str, str]) -> dict[str, Any] | None:
        """The operation an earlier call with the same ``requestId`` started, if any (the change is not made again).

        Compute Engine documents ``requestId`` on every change: a UUID (not the zero UUID); a retried request
        with the same id within 60 minutes returns the first request's operation instead of running again.
        """
        request_id = query.get("requestId")
        if request_id is None or not args or _is_read(operation):
            return None
        if not _UUID.fullmatch(request_id) or not request_id.strip("0-"):
            raise FakeError(
                400,
                "INVALID_ARGUMENT",
                f"Invalid value for field 'requestId': '{request_id}'. The request ID must be a valid UUID with "
                "the exception that zero UUID is not supported.",
            )
        earlier = self.project(args[0]).request_ids.get(request_id)
        return None if earlier is None else self._poll(args[0], earlier)

    def _charge_rate(self, api: str, project: str, operation: str) -> None:
        """Count one request against its rate quota group, or refuse it as the API does: Compute's per project in
        the path (403 ``rateLimitExceeded``), the other APIs' per calling project (429 ``RESOURCE_EXHAUSTED``).

        Cloud Logging's read quota is counted by :meth:`_charge_log_read`, per project in the request."""
        if api == "compute":
            group = quota_group(operation)
            quota: int | None = self.compute_rate_quotas[group]
            consumer, status, code = _project_number(project), 403, "rateLimitExceeded"
        else:
            group = "Read requests" if _is_read(operation) else "Write requests"
            quota = self.api_rate_quotas.get(api, {}).get(group)
            consumer, status, code = 0, 429, "RESOURCE_EXHAUSTED"  # the caller's project: one in the sandbox
        if quota is None:
            return
        key = (api, consumer, group, int(self.clock() // self.rate_window))
        if self._rate_counts.get(key, 0) >= quota:
            raise FakeError(
                status,
                code,
                f"Quota exceeded for quota metric '{group}' and limit '{group} per minute' of service "
                f"'{api}.googleapis.com' for consumer 'project_number:{consumer:012d}'.",
            )
        self._rate_counts[key] = self._rate_counts.get(key, 0) + 1

    def _maybe_fail(self, operation: str) -> None:
        pending = self.injections.get(operation)
        if not pending:
            return
        injection = pending[0]
        if injection.after > 0:
            injection.after -= 1
            return
        injection.times -= 1
        if injection.times <= 0:
            pending.pop(0)
        status = _STATUS_FOR_CODE.get(injection.code, 500)
        raise FakeError(status, injection.code, f"injected {injection.code} for {operation}")

    def _route(
        self, method: str, path: str, raw_path: str
    ) -> tuple[Callable[..., dict[str, Any]], str, tuple[str, ...]]:
        if path == "/v2/entries:list" and method == "POST":
            return self.entries_list, "entries.list", ()
        if raw_path.startswith(REPORTS_PREFIX) and method == "GET":  # segments decoded one by one: %2F stays inside
            parts = [unquote(part) for part in raw_path.removeprefix(REPORTS_PREFIX).split("/")]
            if len(parts) != 4 or parts[0] != "users" or parts[2] != "applications":
                raise FakeError(404, "NOT_FOUND", f"no route for {method} {path}")
            return self.activities_list, "activities.list", (parts[1], parts[3])
        prefix = next((p for p in (COMPUTE_PREFIX, IAM_PREFIX) if path.startswith(p)), None)
        if prefix is None:
            raise FakeError(404, "NOT_FOUND", f"unknown path {path}")
        parts = path[len(prefix) :].split("/")
        routes = self._routes() if prefix == COMPUTE_PREFIX else self._iam_routes()
        for route_method, pattern, handler, operation in routes:
            if route_method == method and len(pattern) == len(parts):
                args: list[str] = []
                for want, got in zip(pattern, parts, strict=True):
                    verb = want[1:] if want.startswith("*:") else None  # a custom method: NAME:verb
                    if want == "*":
                        args.append(got)
                    elif verb and got.endswith(verb) and len(got) > len(verb):
                        args.append(got[: -len(verb)])
                    elif want != got:
                        break
                else:
                    return handler, operation, tuple(args)
        raise FakeError(404, "NOT_FOUND", f"no route for {method} {path}")

    def _routes(self) -> list[tuple[str, list[str], Callable[..., dict[str, Any]], str]]:
        zone_instance = ["*", "zones", "*", "instances", "*"]
        zone_igm = ["*", "zones", "*", "instanceGroupManagers", "*"]
        region_igm = ["*", "regions", "*", "instanceGroupManagers", "*"]
        return [
            ("GET", ["*", "aggregated", "instances"], self.instances_aggregated, "instances.aggregatedList"),
            ("GET", ["*", "aggregated", "subnetworks"], self.subnetworks_aggregated, "subnetworks.aggregatedList"),
            ("GET", ["*", "zones", "*", "instances"], self.instances_list, "instances.list"),
            ("GET", zone_instance, self.instances_get, "instances.get"),
            (
                "POST",
                [*zone_instance, "setDeletionProtection"],
                self.set_deletion_protection,
                "instances.setDeletionProtection",
            ),
            ("POST", [*zone_instance, "setTags"], self.set_tags, "instances.setTags"),
            ("GET", [*zone_instance, "serialPort"], self.serial_port, "instances.getSerialPortOutput"),
            ("GET", ["*", "zones", "*", "disks", "*"], self.disks_get, "disks.get"),
            ("POST", ["*", "zones", "*", "disks", "*", "createSnapshot"], self.create_snapshot, "disks.createSnapshot"),
            ("GET", ["*", "global", "snapshots"], self.snapshots_list, "snapshots.list"),
            ("GET", ["*", "global", "snapshots", "*"], self.snapshots_get, "snapshots.get"),
            ("GET", ["*", "global", "images"], self.images_list, "images.list"),
            ("POST", ["*", "global", "images"], self.images_insert, "images.insert"),
            ("GET", ["*", "global", "firewalls"], self.firewalls_list, "firewalls.list"),
            ("POST", ["*", "global", "firewalls"], self.firewalls_insert, "firewalls.insert"),
            ("GET", zone_igm, self.igm_get, "instanceGroupManagers.get"),
            (
                "POST",
                [*zone_igm, "listManagedInstances"],
                self.igm_list_managed,
                "instanceGroupManagers.listManagedInstances",
            ),
            ("POST", [*zone_igm, "abandonInstances"], self.igm_abandon, "instanceGroupManagers.abandonInstances"),
            (
                "POST",
                [*region_igm, "listManagedInstances"],
                self.igm_list_managed,
                "regionInstanceGroupManagers.listManagedInstances",
            ),
            (
                "POST",
                [*region_igm, "abandonInstances"],
                self.igm_abandon,
                "regionInstanceGroupManagers.abandonInstances",
            ),
            (
                "POST",
                ["*", "regions", "*", "operations", "*", "wait"],
                self.scoped_operation_wait,
                "regionOperations.wait",
            ),
            ("GET", ["*", "zones", "*", "operations", "*"], self.scoped_operation_get, "zoneOperations.get"),
            ("POST", ["*", "zones", "*", "operations", "*", "wait"], self.scoped_operation_wait, "zoneOperations.wait"),
            ("GET", ["*", "global", "operations", "*"], self.global_operation_get, "globalOperations.get"),
            ("POST", ["*", "global", "operations", "*", "wait"], self.global_operation_wait, "globalOperations.wait"),
        ]

    def _iam_routes(self) -> list[tuple[str, list[str], Callable[..., dict[str, Any]], str]]:
        return [
            ("GET", ["*", "serviceAccounts", "*"], self.service_account_get, "serviceAccounts.get"),
            ("GET", ["*", "serviceAccounts", "*", "keys"], self.service_account_keys, "serviceAccounts.keys.list"),
            ("POST", ["*", "serviceAccounts", "*:disable"], self.service_account_disable, "serviceAccounts.disable"),
            (
                "POST",
                ["*", "serviceAccounts", "*", "keys", "*:disable"],
                self.service_account_key_disable,
                "serviceAccounts.keys.disable",
            ),
            ("POST", ["*:getIamPolicy"], self.project_iam_policy, "projects.getIamPolicy"),
            ("POST", ["*:setIamPolicy"], self.project_set_iam_policy, "projects.setIamPolicy"),
        ]

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _found(store: dict[str, dict[str, Any]], name: str, path: str) -> dict[str, Any]:
        """``store[name]`` or the API's 404 for ``path``."""
        if name not in store:
            raise FakeError(404, "NOT_FOUND", f"The resource '{path}' was not found")
        return store[name]

    def _insert(
        self, project: str, collection: str, name: str, resource: dict[str, Any], *, now: bool = True
    ) -> dict[str, Any]:
        """A new global resource with its id and selfLink (409 when the name is taken or being created), stored at
        once (``now``) or left for the caller to store when its operation is DONE."""
        store: dict[str, dict[str, Any]] = getattr(self.project(project), collection)
        self_link = link(project, "global", collection, name)
        if name in store or self._pending(self_link):
            raise FakeError(
                409, "alreadyExists", f"The resource 'projects/{project}/global/{collection}/{name}' already exists"
            )
        created = {**resource, "id": self.new_id(), "name": name, "selfLink": self_link}
        if now:
            store[name] = created
        return created

    def _instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        store = self.project(project).instances.get(zone, {})
        return self._found(store, name, f"projects/{project}/zones/{zone}/instances/{name}")

    def _igm(self, project: str, zone: str, name: str) -> dict[str, Any]:
        store = self.project(project).igms.get(zone, {})
        return self._found(store, name, f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}")

    def _operation(
        self,
        project: str,
        op_type: str,
        target: str,
        *where: str,
        creating: dict[str, Any] | None = None,
        change: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """A PENDING operation under ``where``: ``("zones", zone)``, ``("regions", region)`` or ``("global",)``.

        PENDING for its first tenth, then RUNNING with its progress, then DONE, when ``change`` is made and the
        resource it is ``creating`` becomes READY; it takes :attr:`long_operation_seconds` when creating a
        resource, :attr:`short_operation_seconds` otherwise.
        """
        name = f"operation-{self.new_id()}"
        seconds = self.long_operation_seconds if creating is not None else self.short_operation_seconds
        op = {
            "kind": "compute#operation",
            "id": self.new_id(),
            "name": name,
            "operationType": op_type,
            "targetLink": target,
            "status": "PENDING",
            "progress": 0,
            "insertTime": _now_rfc3339(),
            "selfLink": link(project, *where, "operations", name),
            **({where[0][:-1]: link(project, *where)} if len(where) == 2 else {}),
        }
        self.project(project).operations[name] = op | {
            "_started": time.monotonic(),
            "_seconds": seconds,
            "_creating": creating,
            "_change": change,
            "_polls": 0,
        }
        return copy.deepcopy(op)

    def _settle(self) -> None:
        """Finish every operation whose time is up, polled or not (a change happens whether anyone looks)."""
        for project, state in self.projects.items():
            for name, op in state.operations.items():
                if op["status"] != "DONE" and time.monotonic() - op["_started"] >= op["_seconds"]:
                    self._poll(project, name, polled=False)

    def _pending(self, link: str) -> bool:
        """Whether an operation that is not DONE yet targets ``link``."""
        return any(
            op["status"] != "DONE" and op["targetLink"] == link
            for state in self.projects.values()
            for op in state.operations.values()
        )

    def _remaining(self, project: str, name: str) -> float:
        """Seconds until operation ``name`` finishes (0 when unknown or done)."""
        with self.lock:
            op = self.project(project).operations.get(name)
            if op is None:
                return 0.0
            return max(0.0, op["_started"] + op["_seconds"] - time.monotonic())

    def _poll(self, project: str, name: str, *, polled: bool = True) -> dict[str, Any]:
        op = self.project(project).operations.get(name)
        if op is None:
            raise FakeError(404, "NOT_FOUND", f"operation {name} not found")
        elapsed = time.monotonic() - op["_started"]
        op["_polls"] += polled
        if op["status"] == "DONE":
            pass
        elif elapsed >= op["_seconds"] and op["_polls"] >= self.operation_min_polls:
            op.update(status="DONE", progress=100, startTime=op.get("startTime") or op["insertTime"])
            op["endTime"] = _now_rfc3339()
            if op["_change"] is not None:
                op["_change"]()
            if op["_creating"] is not None:
                op["_creating"]["status"] = "READY"
        elif elapsed >= op["_seconds"] / 10:
            op.setdefault("startTime", _now_rfc3339())
            op.update(status="RUNNING", progress=min(99, int(100 * elapsed / op["_seconds"])))
        return {key: value for key, value in op.items() if not key.startswith("_")}

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, str], key: str = "items") -> dict[str, Any]:
        size = int(query.get("maxResults", "500"))
        start = int(query.get("pageToken") or 0)
        page: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return page

    @staticmethod
    def _compute_filter(items: list[dict[str, Any]], expression: str | None) -> list[dict[str, Any]]:
        """Support the one filter form the API documents most: ``field = "value"`` (dotted fields)."""
        if not expression:
            return items
        match = re.fullmatch(r'\s*([\w.-]+)\s*(=|!=|eq|ne)\s*"?([^"]*)"?\s*', expression)
        if match is None:
            raise FakeError(400, "INVALID_ARGUMENT", f"unsupported filter {expression!r}")
        dotted, op, value = match.groups()

        def lookup(item: dict[str, Any]) -> Any:
            current: Any = item
            for part in dotted.split("."):
                current = current.get(part) if isinstance(current, dict) else None
            return current

        want_equal = op in {"=", "eq"}
        return [item for item in items if (str(lookup(item)) == value) == want_equal]

    # -- compute handlers -------------------------------------------------------------------------
    def instances_aggregated(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        zones = self.project(project).instances
        flat = [(zone, inst) for zone in sorted(zones) for inst in zones[zone].values()]
        page = self._page([{"zone": zone, "instance": inst} for zone, inst in flat], query)
        items: dict[str, Any] = {}
        for entry in page.pop("items"):
            items.setdefault(f"zones/{entry['zone']}", {"instances": []})["instances"].append(entry["instance"])
        return {"kind": "compute#instanceAggregatedList", "items": items, **page}

    def subnetworks_aggregated(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        regions = self.project(project).subnetworks
        flat = [(region, subnet) for region in sorted(regions) for subnet in regions[region].values()]
        page = self._page([{"region": region, "subnetwork": subnet} for region, subnet in flat], query)
        items: dict[str, Any] = {}
        for entry in page.pop("items"):
            items.setdefault(f"regions/{entry['region']}", {"subnetworks": []})["subnetworks"].append(
                entry["subnetwork"]
            )
        return {"kind": "compute#subnetworkAggregatedList", "items": items, **page}

    def instances_list(self, project: str, zone: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        items = self._compute_filter(list(self.project(project).instances.get(zone, {}).values()), query.get("filter"))
        return {"kind": "compute#instanceList", **self._page(items, query)}

    def instances_get(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._instance(project, zone, name)

    def set_deletion_protection(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        instance = self._instance(project, zone, name)
        wanted = query.get("deletionProtection", "true").lower() == "true"
        groups = [
            igm["name"]
            for scoped in self.project(project).igms.values()
            for igm in scoped.values()
            if instance["selfLink"] in igm["_managed"]
        ]
        if wanted and groups:
            # GCE documents that deletion protection cannot be applied to members of a managed instance group.
            raise FakeError(
                400,
                "INVALID_ARGUMENT",
                f"Invalid value for field 'deletionProtection': 'true'. Deletion protection cannot be enabled on "
                f"instance '{name}' because it is part of managed instance group '{groups[0]}'.",
            )
        return self._operation(
            project, "setDeletionProtection", instance["selfLink"], "zones", zone,
            change=lambda: instance.update(deletionProtection=wanted),
        )  # fmt: skip

    def set_tags(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        instance = self._instance(project, zone, name)
        if body.get("fingerprint") != instance["tags"]["fingerprint"]:
            raise FakeError(412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint.")
        items = sorted(set(body.get("items", [])))
        return self._operation(
            project, "setTags", instance["selfLink"], "zones", zone,
            change=lambda: instance.update(tags={"items": items, "fingerprint": _fingerprint(items)}),
        )  # fmt: skip

    def serial_port(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        instance = self._instance(project, zone, name)
        contents = instance.get("_serial", "")
        start = int(query.get("start") or 0)
        return {
            "kind": "compute#serialPortOutput",
            "contents": contents[start:],
            "start": str(start),
            "next": str(len(contents)),
            "selfLink": instance["selfLink"] + "/serialPort",
        }

    def disks_get(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        store = self.project(project).disks.get(zone, {})
        return self._found(store, name, f"projects/{project}/zones/{zone}/disks/{name}")

    def create_snapshot(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        disk = self.disks_get(project, zone, name, query=query, body=body)
        snap_name = body.get("name") or f"{name}-{self.new_id()}"
        snapshot = self._insert(
            project,
            "snapshots",
            snap_name,
            {
                "kind": "compute#snapshot",
                "description": body.get("description", ""),
                "labels": body.get("labels", {}),
                "labelFingerprint": _fingerprint(body.get("labels", {})),
                "sourceDisk": disk["selfLink"],
                "sourceDiskId": disk["id"],
                "diskSizeGb": disk["sizeGb"],
                "storageBytes": "0",  # counted once the snapshot is READY
                "storageBytesStatus": "UPDATING",
                "status": "CREATING",
            },
        )
        stored = str(int(disk["sizeGb"]) * 1024**3 // 10)
        return self._operation(
            project, "createSnapshot", disk["selfLink"], "zones", zone, creating=snapshot,
            change=lambda: snapshot.update(storageBytes=stored, storageBytesStatus="UP_TO_DATE"),
        )  # fmt: skip

    def snapshots_list(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        items = self._compute_filter(list(self.project(project).snapshots.values()), query.get("filter"))
        return {"kind": "compute#snapshotList", **self._page(items, query)}

    def snapshots_get(self, project: str, name: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        return self._found(self.project(project).snapshots, name, f"projects/{project}/global/snapshots/{name}")

    def images_list(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        items = self._compute_filter(list(self.project(project).images.values()), query.get("filter"))
        return {"kind": "compute#imageList", **self._page(items, query)}

    def images_insert(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        source = str(body.get("sourceSnapshot", ""))
        match = re.search(r"projects/([^/]+)/global/snapshots/([^/]+)$", source)
        if match is None:
            raise FakeError(400, "INVALID_ARGUMENT", "sourceSnapshot must name a snapshot")
        snapshot = self.snapshots_get(match[1], match[2], query=query, body=body)
        if snapshot["status"] != "READY":
            raise FakeError(
                400, "resourceNotReady", f"The resource '{source}' is not ready (status {snapshot['status']})"
            )
        image = self._insert(
            project,
            "images",
            body["name"],
            {
                "kind": "compute#image",
                "description": body.get("description", ""),
                "labels": body.get("labels", {}),
                "sourceSnapshot": snapshot["selfLink"],
                "sourceSnapshotId": snapshot["id"],
                "diskSizeGb": snapshot["diskSizeGb"],
                "status": "PENDING",
            },
        )
        return self._operation(project, "insert", image["selfLink"], "global", creating=image)

    def firewalls_list(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        items = self._compute_filter(list(self.project(project).firewalls.values()), query.get("filter"))
        return {"kind": "compute#firewallList", **self._page(items, query)}

    def firewalls_insert(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        firewall = self._insert(project, "firewalls", body["name"], {**body, "kind": "compute#firewall"}, now=False)
        store = self.project(project).firewalls
        return self._operation(
            project, "insert", firewall["selfLink"], "global", change=lambda: store.update({firewall["name"]: firewall})
        )

    def igm_get(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        igm = self._igm(project, zone, name)
        return {key: value for key, value in igm.items() if key != "_managed"}

    def igm_list_managed(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        managed = self._igm(project, zone, name)["_managed"]
        return {
            "managedInstances": [
                {"instance": url, "instanceStatus": "RUNNING", "currentAction": "NONE"} for url in managed
            ]
        }

    def igm_abandon(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        igm = self._igm(project, zone, name)
        urls = list(body.get("instances", []))
        for url in urls:
            if url not in igm["_managed"]:
                raise FakeError(400, "INVALID_ARGUMENT", f"{url} is not a member of {name}")

        def abandon() -> None:
            for url in (url for url in urls if url in igm["_managed"]):  # one sent twice is abandoned once
                igm["_managed"].remove(url)
                igm["targetSize"] -= 1
                instance_zone, instance_name = url.split("/zones/", 1)[1].split("/instances/")
                instance = self._instance(project, instance_zone, instance_name)
                items = instance["metadata"].get("items", [])
                instance["metadata"]["items"] = [item for item in items if item["key"] != "created-by"]

        scope = "regions" if "/regions/" in igm["selfLink"] else "zones"
        return self._operation(
            project, "compute.instanceGroupManagers.abandonInstances", igm["selfLink"], scope, zone, change=abandon
        )

    def scoped_operation_get(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._poll(project, name)

    def scoped_operation_wait(
        self, project: str, zone: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._poll(project, name)

    def global_operation_get(
        self, project: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._poll(project, name)

    def global_operation_wait(
        self, project: str, name: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._poll(project, name)

    # -- iam ------------------------------------------------------------------------------------------
    def _service_account(self, email: str) -> dict[str, Any]:
        return self._found(self.service_accounts, email, f"projects/-/serviceAccounts/{email}")

    def service_account_get(
        self, project: str, email: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        account: dict[str, Any] = self._service_account(email)["account"]
        return account

    def service_account_keys(
        self, project: str, email: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        keys = self._service_account(email)["keys"]
        wanted = query.get("keyTypes")
        if wanted not in {None, "USER_MANAGED", "SYSTEM_MANAGED"}:
            raise FakeError(400, "INVALID_ARGUMENT", f"Invalid value for keyTypes: {wanted}")
        return {"keys": [k for k in keys if wanted in {None, k["keyType"]}]}

    def service_account_disable(
        self, project: str, email: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        self._service_account(email)["account"]["disabled"] = True
        return {}

    def service_account_key_disable(
        self, project: str, email: str, key_id: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        name = f"projects/{project}/serviceAccounts/{email}/keys/{key_id}"
        keys = [k for k in self._service_account(email)["keys"] if k["name"].rsplit("/", 1)[-1] == key_id]
        if not keys:
            raise FakeError(404, "NOT_FOUND", f"Service account key {name} does not exist.")
        if keys[0]["keyType"] != "USER_MANAGED":
            raise FakeError(400, "FAILED_PRECONDITION", f"Key {name} is managed by Google and cannot be disabled.")
        keys[0]["disabled"] = True
        return {}

    def project_iam_policy(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        version = (body.get("options") or {}).get("requestedPolicyVersion", 1)
        if version not in {0, 1, 3}:
            raise FakeError(400, "INVALID_ARGUMENT", f"Invalid requestedPolicyVersion: {version}")
        if project not in self.projects:
            raise FakeError(403, "PERMISSION_DENIED", f"The caller does not have permission on project {project}")
        policy = copy.deepcopy(self.iam_policies.get(project, {"version": 1, "etag": "BwAAAAAAAAA="}))
        if version < 3 and any("condition" in binding for binding in policy.get("bindings", [])):
            # as documented: a lower version sees each conditional binding under a role renamed _withcond_<hash>
            policy["version"] = 1
            for binding in policy["bindings"]:
                condition = binding.pop("condition", None)
                if condition is not None:
                    digest = hashlib.sha256(json.dumps(condition, sort_keys=True).encode()).hexdigest()[:20]
                    binding["role"] = f"{binding['role']}_withcond_{digest}"
        return policy

    def project_set_iam_policy(self, project: str, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """Resource Manager v1 ``projects.setIamPolicy``: refused with 409 ABORTED unless ``policy.etag`` is the
        current one (a concurrent change), and with 400 unless a policy holding conditions is version 3."""
        if project not in self.projects:
            raise FakeError(403, "PERMISSION_DENIED", f"The caller does not have permission on project {project}")
        policy = body.get("policy")
        if not isinstance(policy, dict) or set(body) - {"policy", "updateMask"}:
            raise FakeError(400, "INVALID_ARGUMENT", "Invalid JSON payload: expected {policy, updateMask}")
        current = self.iam_policies.get(project, {"version": 1, "etag": "BwAAAAAAAAA="})
        if policy.get("etag") != current["etag"]:
            raise FakeError(409, "ABORTED", "There were concurrent policy changes. Please retry the whole "
                            "read-modify-write with exponential backoff.")  # fmt: skip
        bindings = policy.get("bindings", [])
        for binding in bindings:
            role, members = binding.get("role", ""), binding.get("members")
            if "_withcond_" in role or not _ROLE.fullmatch(role):
                raise FakeError(400, "INVALID_ARGUMENT", f"Role {role} is not supported for this resource.")
            if not members or not all(isinstance(m, str) and _MEMBER.fullmatch(m) for m in members):
                raise FakeError(400, "INVALID_ARGUMENT", f"Invalid members of the binding of {role}: {members!r}")
            if "condition" in binding and policy.get("version") != 3:
                raise FakeError(400, "INVALID_ARGUMENT", "Policies with conditional role bindings must be version 3")
        stored = {"version": policy.get("version", 1), "etag": base64.b64encode(os.urandom(8)).decode(),
                  "bindings": copy.deepcopy(bindings)}  # fmt: skip
        self.iam_policies[project] = stored
        return copy.deepcopy(stored)

    # -- logging ----------------------------------------------------------------------------------
    def activities_list(
        self, user_key: str, application: str, *, query: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        """Admin SDK Reports ``activities.list``: newest first, startTime/endTime RFC 3339, maxResults 1-1000.

        The application names and query parameters are the discovery document's (checked before this runs).
        """
        size = query.get("maxResults", "1000")
        if not size.isdigit() or not 1 <= int(size) <= 1000:
            raise FakeError(400, "INVALID_ARGUMENT", f"Invalid value '{size}' for maxResults: 1 to 1000")
        start, end = (_rfc3339(query[name], name) if name in query else None for name in ("startTime", "endTime"))
        if start is not None and end is not None and start > end:
            raise FakeError(400, "INVALID_ARGUMENT", "Start time must be less than or equal to the end time")
        matching = sorted(
            (
                activity
                for activity in self.workspace_activities.get(application, [])
                if user_key in {"all", activity["actor"].get("email"), activity["actor"].get("profileId")}
                and (start is None or _rfc3339(activity["id"]["time"], "time") >= start)
                and (end is None or _rfc3339(activity["id"]["time"], "time") <= end)
            ),
            key=lambda activity: activity["id"]["time"],
            reverse=True,
        )
        if not query.get("pageToken", "0").isdigit():
            raise FakeError(400, "INVALID_ARGUMENT", "Invalid page token")
        offset = int(query.get("pageToken", "0"))
        count = min(int(size), self.reports_page_size)
        page: dict[str, Any] = {"kind": "admin#reports#activities", "etag": f'"{self.new_id()}"'}
        if matching[offset : offset + count]:
            page["items"] = matching[offset : offset + count]
        if offset + count < len(matching):
            page["nextPageToken"] = str(offset + count)
        return page

    def _charge_log_read(self, parent: str) -> None:
        """Count one ``entries.list`` against ``parent``'s read quota, or refuse it as Cloud Logging does."""
        now = self.clock()
        reads = self._log_reads.setdefault(parent, deque())
        while reads and reads[0] <= now - self.log_read_window:
            reads.popleft()
        if len(reads) >= self.log_read_quota:
            raise FakeError(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service "
                f"'logging.googleapis.com' for consumer '{parent}'.",
            )
        reads.append(now)

    def entries_list(self, *, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        parents = body.get("resourceNames", [])
        if not parents or not all(_PARENT.fullmatch(str(name)) for name in parents):
            raise FakeError(400, "INVALID_ARGUMENT", f"resourceNames must be projects/, organizations/, folders/ or "
                            f"billingAccounts/ names: {parents!r}")  # fmt: skip
        self._charge_log_read(parents[0])
        predicate = LogFilter(body.get("filter", "")).compile()
        rows = [
            entry
            for entry in self.log_entries
            if any(entry["logName"].startswith(f"{parent}/logs/") for parent in parents) and predicate(entry)
        ]
        rows.sort(key=lambda entry: entry["timestamp"], reverse=body.get("orderBy", "").endswith("desc"))
        size = int(body.get("pageSize") or self.log_page_size)
        start = int(body.get("pageToken") or 0)
        page: dict[str, Any] = {"entries": rows[start : start + size]}
        if start + size < len(rows):
            page["nextPageToken"] = str(start + size)
        return page


_ROLE = re.compile(r"roles/[A-Za-z0-9_.]+|(projects|organizations)/[A-Za-z0-9_.:-]+/roles/[A-Za-z0-9_.]+")
_MEMBER = re.compile(r"(user|serviceAccount|group|domain|deleted:user|deleted:serviceAccount|deleted:group):\S+"
                     r"|allUsers|allAuthenticatedUsers|principal(Set)?://\S+")  # fmt: skip
_PARENT = re.compile(r"(projects|organizations|folders|billingAccounts)/[A-Za-z0-9_.:-]+")


class LogFilter:
    """A parser for the subset of the Logging query language the tool sends.

    Grammar: ``expr := term (AND term)*``, ``term := atom (OR atom)*``, ``atom := '(' expr ')' |
    NOT atom | field OP "value"`` with OP one of ``= != >= <= > < :``. Anything else is rejected
    with INVALID_ARGUMENT, as the real API would, so an unsupported filter cannot pass silently.
    """

    _TOKEN = re.compile(r'\s*(?:(\()|(\))|(AND|OR|NOT)\b|([\w.@%-]+)\s*(>=|<=|!=|=|>|<|:)\s*"((?:[^"\\]|\\.)*)")')

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, ...]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = self._TOKEN.match(text, position)
            if match is None:
                raise FakeError(400, "INVALID_ARGUMENT", f"unsupported filter near {text[position : position + 30]!r}")
            lparen, rparen, keyword, name, op, value = match.groups()
            if lparen:
                self.tokens.append(("(",))
            elif rparen:
                self.tokens.append((")",))
            elif keyword:
                self.tokens.append((keyword,))
            else:
                self.tokens.append(("cmp", name, op, value.replace('\\"', '"')))
            position = match.end()
        self.index = 0

    def compile(self) -> Callable[[dict[str, Any]], bool]:
        """The filter as a predicate over a LogEntry dict."""
        if not self.tokens:
            return lambda entry: True
        predicate = self._expr()
        if self.index != len(self.tokens):
            raise FakeError(400, "INVALID_ARGUMENT", "unbalanced filter expression")
        return predicate

    def _peek(self) -> str | None:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else None

    def _expr(self) -> Callable[[dict[str, Any]], bool]:
        terms = [self._term()]
        while self._peek() == "AND" or self._peek() in {"(", "NOT", "cmp"}:
            if self._peek() == "AND":
                self.index += 1
            terms.append(self._term())
        return lambda entry: all(term(entry) for term in terms)

    def _term(self) -> Callable[[dict[str, Any]], bool]:
        atoms = [self._atom()]
        while self._peek() == "OR":
            self.index += 1
            atoms.append(self._atom())
        return lambda entry: any(atom(entry) for atom in atoms)

    def _atom(self) -> Callable[[dict[str, Any]], bool]:
        kind = self._peek()
        if kind is None:
            raise FakeError(400, "INVALID_ARGUMENT", "filter ends early")
        token = self.tokens[self.index]
        self.index += 1
        if kind == "(":
            inner = self._expr()
            if self._peek() != ")":
                raise FakeError(400, "INVALID_ARGUMENT", "missing ')' in filter")
            self.index += 1
            return inner
        if kind == "NOT":
            negated = self._atom()
            return lambda entry: not negated(entry)
        if kind != "cmp":
            raise FakeError(400, "INVALID_ARGUMENT", f"unexpected {kind} in filter")
        _, name, op, value = token
        return lambda entry: _compare(_field(entry, name), op, value)


def _rfc3339(value: str, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FakeError(400, "INVALID_ARGUMENT", f"Invalid value '{value}' for {name}: not RFC 3339") from None
    if parsed.tzinfo is None:
        raise FakeError(400, "INVALID_ARGUMENT", f"Invalid value '{value}' for {name}: no time zone")
    return parsed


def _field(entry: dict[str, Any], dotted: str) -> Any:
    current: Any = entry
    for part in dotted.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return current


def _compare(actual: Any, op: str, value: str) -> bool:
    if actual is None:
        return op == "!="
    text = str(actual)
    results = {
        "=": text == value,
        "!=": text != value,
        ":": value.lower() in text.lower(),
        ">=": text >= value,
        "<=": text <= value,
        ">": text > value,
        "<": text < value,
    }
    return results[op]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        """Send each response at once (no Nagle delay between headers and body)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        agent = " ".join(filter(None, (self.headers.get("User-Agent"), self.headers.get("x-goog-api-client"))))
        api = api_of(self.path)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            status, payload = 400, error_body(api, 400, "parseError", f"Invalid JSON payload received. {exc}.")
        else:
            try:
                status, payload = self.server.fake.handle(self.command, self.path, body, agent)
            except LostResponse:
                self.close_connection = True  # no status line: the client sees the connection drop
                return
            except Exception as exc:  # a bug in the fake answers 500, never a dropped connection
                status, payload = 500, error_body(api, 500, "backendError", f"{type(exc).__name__}: {exc}")
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - names fixed by the base class

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Keep test output quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeGcp) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeGcpServer:
    """Runs :class:`FakeGcp` on an ephemeral 127.0.0.1 port in a background thread."""

    def __init__(self, fake: FakeGcp | None = None) -> None:
        self.fake = fake or FakeGcp()
        self._server = _Server(self.fake)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-gcp", daemon=True
        )

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Begin serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
