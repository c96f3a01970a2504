"""Shared fixtures for the gcp tests: a planted incident, a provider and a case."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudir.case import Case
from cloudir.provider import Target
from moto_fixtures.gcp import GcpSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider


@pytest.fixture
def incident(gcp_sandbox: GcpSandbox) -> PlantedIncident:
    """The planted incident in a running sandbox."""
    return gcp_sandbox.plant_incident()


@pytest.fixture
def provider(gcp_sandbox: GcpSandbox, incident: PlantedIncident) -> GcpProvider:
    """A provider pointed at the sandbox."""
    return gcp_sandbox.gcp_provider()


@pytest.fixture
def case(tmp_path: Path, provider: GcpProvider) -> Case:
    """A fresh case bound to the provider."""
    the_case = Case.create(tmp_path / "case")
    provider.bind(the_case)
    return the_case


@pytest.fixture
def target(provider: GcpProvider, incident: PlantedIncident) -> Target:
    """The compromised instance, resolved."""
    return provider.find_target(incident.target)
