"""Azure Function (Event Grid trigger) for Microsoft Defender for Cloud alerts.

Binding: an ``eventGridTrigger`` named ``event`` calling :func:`main`. The function receives an
``azure.functions.EventGridEvent`` (its ``get_json()`` is the alert) or, in tests, the plain event dict.
"""

from __future__ import annotations

from typing import Any

from cloudir.playbook.engine import ProviderFactory
from cloudir.serverless import handle_payload


def main(event: Any, provider_factory: ProviderFactory | None = None) -> dict[str, Any]:
    """Respond to the Defender alert carried by one Event Grid event."""
    payload = event.get_json() if hasattr(event, "get_json") else event
    return handle_payload(payload, provider_factory)
