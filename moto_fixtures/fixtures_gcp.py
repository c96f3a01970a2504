"""pytest fixtures for the gcp sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moto_fixtures.gcp import GcpSandbox


@pytest.fixture
def gcp_sandbox() -> Iterator[GcpSandbox]:
    """A started fake Google Cloud (Compute Engine REST v1 + Logging v2) on 127.0.0.1; stopped after the test."""
    with GcpSandbox() as sandbox:
        yield sandbox
