"""pytest plugin: fake credentials and a network guard for every test, plus sandbox fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moto_fixtures.guard import sandbox_environment


@pytest.fixture(autouse=True)
def _cloud_sandbox_guard() -> Iterator[None]:
    """Every test runs with fake credentials and cannot open a connection off this machine."""
    with sandbox_environment():
        yield


pytest_plugins = [
    "moto_fixtures.fixtures_aws",
    "moto_fixtures.fixtures_logs",
    "moto_fixtures.fixtures_azure",
    "moto_fixtures.fixtures_gcp",
]
