"""What a sandboxed cloud offers the demo and the tests: a planted incident and a provider configured against it.

Implementations live outside ``cloudir/`` (cloudir's own in ``moto_fixtures``) and are found through the
registry (:func:`cloudir.registry.demo_sandboxes`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloudir.provider import Provider, TargetQuery


@dataclass
class PlantedIncident:
    """What a sandbox planted: where the compromised workload is and who the attacker acted as."""

    cloud: str
    target: TargetQuery  # the compromised instance / VM
    attacker_principal: str
    window_start: str  # ISO 8601 UTC covering the attacker's activity
    window_end: str
    forensic_account: str | None = None
    encryption_key: str | None = None  # customer-managed key usable for re-encryption
    access_key: str | None = None  # a compromised access key, where the cloud has them
    alternate_targets: list[TargetQuery] = field(default_factory=list)  # same target by name / IP / interface
    extra: dict[str, Any] = field(default_factory=dict)


class Sandbox(Protocol):
    """A running sandboxed cloud (use as a context manager)."""

    cloud: str

    def __enter__(self) -> Sandbox:
        """Start the fake cloud."""

    def __exit__(self, *exc: object) -> None:
        """Stop it and forget all state."""

    def plant_incident(self) -> PlantedIncident:
        """Create the compromised workload and the attacker's API activity."""

    def provider(self) -> Provider:
        """A provider configured to talk to this sandbox."""

    def state(self) -> dict[str, Any]:
        """A full description of the cloud's resources (to compare before and after a dry run)."""

    def snapshots_for_case(self, case_id: str) -> list[str]:
        """Ids of the snapshots (and copies) carrying the case id tag/label."""

    def is_preserved(self, incident: PlantedIncident) -> bool:
        """True when the target is protected from deletion / termination / scale-in."""

    def is_isolated(self, incident: PlantedIncident) -> bool:
        """True when the target's network is isolated by the tool."""

    def fail_next(self, operation: str, error_code: str = "InternalError") -> AbstractContextManager[None]:
        """Make the next call of ``operation`` fail with ``error_code`` while the context is open."""


class SandboxHook(Protocol):
    """The demo's way in: fake credentials with a loopback-only network guard, then one sandbox per cloud."""

    def sandbox_environment(self) -> AbstractContextManager[None]:
        """Fake credentials, and every connection that is not to loopback refused, while open."""

    def open_sandbox(self, cloud: str) -> Sandbox:
        """The sandbox for ``cloud`` (not yet started)."""

    def seal_store_sandbox(self, url: str | None) -> AbstractContextManager[None]:
        """The write-once seal store ``url`` names, provisioned in a sandbox while open (nothing for None)."""
