"""pytest fixtures for the azure sandbox: the fake ARM server and the planted incident."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moto_fixtures.azure import AzureSandbox
from moto_fixtures.sandbox import PlantedIncident


@pytest.fixture
def azure_sandbox() -> Iterator[AzureSandbox]:
    """A running fake Azure (HTTPS on 127.0.0.1, self-signed CA) with nothing planted yet."""
    with AzureSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def azure_incident(azure_sandbox: AzureSandbox) -> PlantedIncident:
    """The planted incident: VMSS member VM web-vm-01 with 3 disks, NIC, public IP, NSG, attacker activity."""
    return azure_sandbox.plant_incident()
