"""Shared fixtures for the gcp tests: a planted incident, a provider and a case."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cloudir.case import Case
from cloudir.provider import Target
from moto_fixtures.gcp import GcpSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider
from providers.gcp import session as gcp_session


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


@pytest.fixture
def slept(gcp_sandbox: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The adapter's sleeps advance the clock the fake's quotas count by, so a minute passes at once."""
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(gcp_session, "time", SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    gcp_sandbox.fake.clock = lambda: now[0]
    return slept
