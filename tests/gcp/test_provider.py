"""Protocol conformance, capabilities, the permission table and request attribution."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudir.case import Case
from cloudir.custody import read_records
from cloudir.errors import CapabilityNotSupportedError, CloudAccessError
from cloudir.provider import (
    AcquireOptions,
    Capability,
    ContainOptions,
    LogPullRequest,
    Provider,
    Target,
    TargetKind,
    TargetQuery,
    get_provider,
    require,
)
from moto_fixtures.gcp import FORENSIC_PROJECT, RESPONDER, WINDOW_END, WINDOW_START
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider
from providers.gcp.permissions import PERMISSIONS, call
from providers.gcp.provider import label_value, resource_name
from providers.gcp.session import describe_request

BASE = "http://127.0.0.1:1/compute/v1/projects/p"


def test_is_a_provider_with_honest_capabilities(provider: GcpProvider, incident: PlantedIncident) -> None:
    assert isinstance(provider, Provider)
    assert provider.cloud == "gcp"
    assert provider.identity() == RESPONDER
    assert Capability.IMAGE not in provider.capabilities
    assert Capability.REVOKE not in provider.targets[TargetKind.INSTANCE]  # revocation is for service accounts
    assert Capability.REVOKE in provider.targets[TargetKind.PRINCIPAL]
    with pytest.raises(CapabilityNotSupportedError, match="cannot image"):
        require(provider, Capability.IMAGE)
    target = provider.find_target(incident.target)
    with pytest.raises(CapabilityNotSupportedError, match="raw disk images"):
        provider.plan_acquire(target, AcquireOptions(raw_image=True))
    with pytest.raises(CapabilityNotSupportedError):
        provider.find_target(TargetQuery(TargetKind.ACCESS_KEY, "AKIA"))


def test_every_planned_call_is_in_the_permission_table(provider: GcpProvider, target: Target) -> None:
    plans = [
        provider.plan_acquire(target, AcquireOptions(forensic_account=FORENSIC_PROJECT)),
        provider.plan_contain(target, ContainOptions(examiner_cidr="10.0.0.1/32")),
        provider.plan_pull_logs(LogPullRequest(start=WINDOW_START, end=WINDOW_END)),
    ]
    planned = {(c.service, c.operation) for plan in plans for step in plan.steps for c in step.calls}
    assert planned <= set(PERMISSIONS)
    permissions = provider.required_permissions()
    assert {
        "compute.snapshots.create",
        "compute.instances.setDeletionProtection",
        "compute.firewalls.create",
        "compute.instanceGroupManagers.update",
        "logging.logEntries.list",
    } <= set(permissions)
    assert permissions == sorted(set(permissions))
    with pytest.raises(KeyError):
        call("compute", "instances.delete")


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", f"{BASE}/aggregated/instances?maxResults=500", ("compute", "instances.aggregatedList", None)),
        ("GET", f"{BASE}/zones/z1/instances/vm", ("compute", "instances.get", "z1")),
        (
            "POST",
            f"{BASE}/zones/z1/instances/vm/setDeletionProtection",
            ("compute", "instances.setDeletionProtection", "z1"),
        ),
        ("GET", f"{BASE}/zones/z1/instances/vm/serialPort?port=1", ("compute", "instances.getSerialPortOutput", "z1")),
        ("POST", f"{BASE}/global/firewalls", ("compute", "firewalls.insert", "global")),
        ("POST", f"{BASE}/zones/z1/operations/op-1/wait", ("compute", "zoneOperations.wait", "z1")),
        ("POST", f"{BASE}/global/operations/op-1/wait", ("compute", "globalOperations.wait", "global")),
        ("POST", "http://127.0.0.1:1/v2/entries:list", ("logging", "entries.list", None)),
        (
            "POST",
            f"{BASE}/regions/r1/instanceGroupManagers/g/abandonInstances",
            ("compute", "regionInstanceGroupManagers.abandonInstances", "r1"),
        ),
        ("POST", f"{BASE}/regions/r1/operations/op-1/wait", ("compute", "regionOperations.wait", "r1")),
        ("GET", f"{BASE}/regions/r1/subnetworks/default", ("compute", "subnetworks.get", "r1")),
        (
            "GET",
            "http://h/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com",
            ("iam", "serviceAccounts.get", None),
        ),
        (
            "GET",
            "http://h/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com/keys",
            ("iam", "serviceAccounts.keys.list", None),
        ),
    ],
)
def test_request_attribution(method: str, url: str, expected: tuple[str, str, str | None]) -> None:
    assert describe_request(method, url) == expected


def test_unreachable_endpoint_is_one_line_error() -> None:
    provider = get_provider("gcp", project="p", api_endpoint="http://127.0.0.1:9", anonymous=True)
    with pytest.raises(CloudAccessError, match="cannot reach the Google Cloud endpoint") as caught:
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "vm", "z1"))
    assert "\n" not in str(caught.value)


def test_call_without_response_is_recorded(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    provider = get_provider("gcp", project="p", api_endpoint="http://127.0.0.1:9", anonymous=True)
    provider.bind(case)
    with pytest.raises(CloudAccessError):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "vm", "z1"))
    calls = [c for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]]
    assert [(c["operation"], c["region"], c["outcome"]) for c in calls] == [("instances.list", "z1", "ConnectionError")]


@pytest.mark.parametrize(
    "parts",
    [("cir-1a2b3c4d", "us-central1-a", "web-1"), ("9-starts-with-digit",), ("x" * 80, "Upper_Case"), ("a-", "-" * 70)],
)
def test_resource_names_are_valid_gce_names(parts: tuple[str, ...]) -> None:
    name = resource_name(*parts)
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    assert resource_name(*parts) == name


def test_label_values_are_valid() -> None:
    assert label_value("CIR-20261125-ABcd.12") == "cir-20261125-abcd_12"
    assert len(label_value("x" * 100)) == 63
