"""pytest fixtures for the gcp sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moto_fixtures.gcp import GcpSandbox


@pytest.fixture
def gcp_sandbox() -> Iterator[GcpSandbox]:
    """A started fake Google Cloud (Compute Engine REST v1 + Logging v2) on 127.0.0.1; stopped after the test.

    Every request the test made must have passed Google's discovery documents, unless the test sets
    ``refusals_expected`` (it sends invalid requests on purpose).
    """
    with GcpSandbox() as sandbox:
        yield sandbox
        refused = [f"{r['method']} {r['path']}: {r['refusal']}" for r in sandbox.fake.requests if r["refusal"]]
        if refused and not sandbox.refusals_expected:
            pytest.fail("requests the real API refuses:\n" + "\n".join(refused))
