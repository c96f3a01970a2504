"""Rewrite the responder policy in template.yaml from ``cloudir iam-policy aws`` (run after provider changes)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from textwrap import indent

import yaml

from cloudir.provider import get_provider
from cloudir.serverless.policy import least_privilege_policy

TEMPLATE = Path(__file__).with_name("template.yaml")
# The statement list of the ResponderPolicy resource: from its "Statement:" line to the next resource.
_STATEMENTS = re.compile(r"(  ResponderPolicy:\n(?:.*\n)*?        Statement:\n)((?:          .*\n)+)")


def main() -> None:
    """Replace the statements of the ResponderPolicy resource."""
    policy = least_privilege_policy("aws", get_provider("aws", region="us-east-1").required_permissions())
    lines = indent(yaml.safe_dump(policy["Statement"], sort_keys=False, width=200), " " * 10)
    text = TEMPLATE.read_text(encoding="utf-8")
    updated, count = _STATEMENTS.subn(lambda m: m.group(1) + lines, text, count=1)
    if count != 1:
        sys.exit("template.yaml: ResponderPolicy statements not found")
    TEMPLATE.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
