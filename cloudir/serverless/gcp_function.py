"""Cloud Function (Pub/Sub trigger) for Security Command Center finding notifications.

deploy/gcp/main.py (functions-framework, ``@functions_framework.cloud_event``) calls :func:`handle_pubsub` with the
CloudEvent whose ``data`` is ``{"message": {"data": base64}}``; the plain dict form of it (a push body) works too.
"""

from __future__ import annotations

from typing import Any

from cloudir.playbook.routing import ProviderFactory
from cloudir.serverless import handle_payload


def handle_pubsub(cloud_event: Any, provider_factory: ProviderFactory | None = None) -> dict[str, Any]:
    """Respond to the SCC finding in one Pub/Sub message."""
    payload = cloud_event.data if hasattr(cloud_event, "data") and not isinstance(cloud_event, dict) else cloud_event
    return handle_payload(payload, provider_factory)
