"""AWS Lambda handler for GuardDuty / Security Hub findings delivered by EventBridge.

Handler: ``cloudir.serverless.aws_lambda.handler`` (see deploy/aws/template.yaml).
"""

from __future__ import annotations

from typing import Any

from cloudir.playbook.routing import ProviderFactory
from cloudir.serverless import handle_payload


def handler(
    event: dict[str, Any], context: Any = None, provider_factory: ProviderFactory | None = None
) -> dict[str, Any]:
    """Respond to the finding(s) in one EventBridge event, starting no step too close to the invocation's timeout."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    time_left = (lambda: remaining_ms() / 1000) if remaining_ms is not None else None
    return handle_payload(event, provider_factory, time_left=time_left)
