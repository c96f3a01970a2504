"""Target resolution: by name, numeric id, internal and external IP; one zone or every zone."""

from __future__ import annotations

import pytest

from cloudir.errors import TargetNotFoundError
from cloudir.provider import TargetKind, TargetQuery
from moto_fixtures.gcp import EXTERNAL_IP, INSTANCE, INTERNAL_IP, MIG, ZONE, GcpSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider


@pytest.mark.parametrize(
    ("value", "zone"),
    [(INSTANCE, ZONE), (INSTANCE, None), (INTERNAL_IP, None), (EXTERNAL_IP, None), (INTERNAL_IP, ZONE)],
)
def test_finds_instance_by_name_or_ip(
    provider: GcpProvider, incident: PlantedIncident, value: str, zone: str | None
) -> None:
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, value, zone))
    assert (target.name, target.location, target.account) == (INSTANCE, ZONE, "victim-prod")
    assert target.details["managed_instance_group"] == {"scope": "zones", "location": ZONE, "name": MIG}
    assert target.details["external_ips"] == [EXTERNAL_IP]
    assert len(target.details["disks"]) == 2
    assert target.details["tags"] == {"app": "web-frontend", "env": "prod"}  # labels, for playbook tag conditions


def test_finds_by_numeric_id_and_alternate_targets(provider: GcpProvider, incident: PlantedIncident) -> None:
    by_name = provider.find_target(incident.target)
    assert provider.find_target(TargetQuery(TargetKind.INSTANCE, by_name.id)).ref == by_name.ref
    assert {provider.find_target(alt).ref for alt in incident.alternate_targets} == {by_name.ref}


def test_all_zones_uses_aggregated_list(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident
) -> None:
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, "batch-worker-1"))
    assert target.location == "europe-west1-b"
    assert [r["operation"] for r in gcp_sandbox.fake.requests] == ["instances.aggregatedList"]


@pytest.mark.parametrize(("value", "zone"), [("no-such-vm", None), ("10.9.9.9", ZONE), (INSTANCE, "asia-east1-a")])
def test_not_found_is_one_line(provider: GcpProvider, incident: PlantedIncident, value: str, zone: str | None) -> None:
    with pytest.raises(TargetNotFoundError) as caught:
        provider.find_target(TargetQuery(TargetKind.INSTANCE, value, zone))
    message = str(caught.value)
    assert value in message
    assert "victim-prod" in message
    assert "\n" not in message


def test_configured_zone_is_the_default(gcp_sandbox: GcpSandbox, incident: PlantedIncident) -> None:
    provider = gcp_sandbox.gcp_provider(zone="europe-west1-b")
    assert provider.find_target(TargetQuery(TargetKind.INSTANCE, "batch-worker-1")).location == "europe-west1-b"
    with pytest.raises(TargetNotFoundError, match="zone europe-west1-b"):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, INSTANCE))
    assert provider.find_target(TargetQuery(TargetKind.INSTANCE, INSTANCE, ZONE)).name == INSTANCE
