"""Rewrite the responder policy in template.yaml from ``cloudir iam-policy aws`` (run after provider changes)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cloudir.provider import get_provider
from cloudir.serverless.policy import least_privilege_policy

TEMPLATE = Path(__file__).with_name("template.yaml")
_ACTIONS = re.compile(r"(            Action:\n)((?:              - .+\n)+)")


def main() -> None:
    """Replace the action list of the ResponderPolicy resource."""
    policy = least_privilege_policy("aws", get_provider("aws", region="us-east-1").required_permissions())
    lines = "".join(f"              - {action}\n" for action in policy["Statement"][0]["Action"])
    text = TEMPLATE.read_text(encoding="utf-8")
    updated, count = _ACTIONS.subn(lambda m: m.group(1) + lines, text, count=1)
    if count != 1:
        sys.exit("template.yaml: ResponderPolicy action list not found")
    TEMPLATE.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
