"""Cloud Function (Pub/Sub trigger) for Security Command Center finding notifications.

Entry point: :func:`handle_pubsub`, given a CloudEvent whose ``data`` is ``{"message": {"data": base64}}``
(functions-framework), or the plain dict form of it in tests.
"""

from __future__ import annotations

from typing import Any

from cloudir.playbook.engine import ProviderFactory
from cloudir.serverless import handle_payload


def handle_pubsub(cloud_event: Any, provider_factory: ProviderFactory | None = None) -> dict[str, Any]:
    """Respond to the SCC finding in one Pub/Sub message."""
    payload = cloud_event.data if hasattr(cloud_event, "data") and not isinstance(cloud_event, dict) else cloud_event
    return handle_payload(payload, provider_factory)
