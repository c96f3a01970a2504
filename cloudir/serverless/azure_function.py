"""Azure Function (Event Grid trigger) for Microsoft Defender for Cloud alerts.

deploy/azure/function_app.py (Python v2 programming model) declares the ``eventGridTrigger`` and calls :func:`main`
with the ``azure.functions.EventGridEvent`` (its ``get_json()`` is the alert); the plain event dict works too.
"""

from __future__ import annotations

from typing import Any

from cloudir.playbook.routing import ProviderFactory
from cloudir.serverless import handle_payload


def main(event: Any, provider_factory: ProviderFactory | None = None) -> dict[str, Any]:
    """Respond to the Defender alert carried by one Event Grid event."""
    payload = event.get_json() if hasattr(event, "get_json") else event
    return handle_payload(payload, provider_factory)
