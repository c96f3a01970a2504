"""The sandboxed clouds, registered as the demo's hook (entry point ``cloudir.sandboxes: demo``).

A sandbox starts a fake cloud (moto in-process for AWS, local fake HTTP servers for Azure and GCP),
plants an incident, hands out a provider configured against it, and can describe its whole state
so that a test can prove a dry run changed nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from cloudir.errors import CloudirError
from cloudir.sandbox import PlantedIncident, Sandbox
from moto_fixtures.guard import sandbox_environment
from moto_fixtures.seal_stores import seal_store_sandbox

__all__ = [
    "PlantedIncident",
    "Sandbox",
    "available_sandboxes",
    "open_sandbox",
    "sandbox_environment",
    "seal_store_sandbox",
]

SANDBOXES = {
    "aws": "moto_fixtures.aws:AwsSandbox",
    "azure": "moto_fixtures.azure:AzureSandbox",
    "gcp": "moto_fixtures.gcp:GcpSandbox",
}


def open_sandbox(cloud: str) -> Sandbox:
    """Instantiate the sandbox for ``cloud`` (not yet started)."""
    module_name, _, class_name = SANDBOXES[cloud].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in {"cloudir", "providers", "moto_fixtures"}:
            raise
        raise CloudirError(
            f"the {cloud} sandbox needs the Python package {exc.name!r}, which is not installed",
            hint="install cloudir[demo]",
        ) from None
    sandbox_class = getattr(module, class_name)
    sandbox: Sandbox = sandbox_class()
    return sandbox


def available_sandboxes() -> Iterator[str]:
    """Clouds whose sandbox module is importable."""
    for cloud, spec in SANDBOXES.items():
        module_name = spec.partition(":")[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        yield cloud
