"""AWS VPC Flow Logs: versions 2-5, default and custom formats, as text lines (S3 or CloudWatch Logs) or Parquet.

A record is a list of fields named by the flow log's format (``${version} ${account-id} ...``): S3 text files
start with a header line naming them, CloudWatch Logs messages use the format the collector saved in the
series' ``request.json`` (``logFormat``), else the default version 2 format; Parquet columns carry the names
with ``_`` for ``-``. ``-`` means no value.
"""

from __future__ import annotations

import re

CLOUD = "aws"
NAME = "aws_vpc_flow"

DEFAULT_FORMAT = (
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
)
"""The default (version 2) format, used for CloudWatch Logs messages when no format was recorded."""

FIELD = re.compile(r"^[a-z][a-z0-9-]*$")
HEADER_FIELDS = {"srcaddr", "dstaddr"}
"""A first line whose words are all field names, including these, is a header."""


def parse_format(text: str) -> list[str]:
    """Field names from a LogFormat (``${version} ${srcaddr}``) or a header line (``version srcaddr``)."""
    return [word.removeprefix("${").removesuffix("}") for word in text.split()]


def is_header(line: str) -> bool:
    """Whether a text line names fields rather than holding a record."""
    words = line.split()
    return bool(words) and all(FIELD.match(word) for word in words) and set(words) >= HEADER_FIELDS


def _seconds(expression: str) -> str:
    return f"make_timestamp(try_cast({expression} AS BIGINT) * 1000000)"


def columns(fields: dict[str, str]) -> dict[str, str]:
    """The flows columns as SQL over ``fields``: format field name -> VARCHAR expression (absent ones NULL)."""

    def value(name: str) -> str:
        return f"nullif({fields.get(name, 'NULL::VARCHAR')}, '-')"

    return {
        "time": _seconds(value("start")),
        "end_time": _seconds(value("end")),
        "cloud": f"'{CLOUD}'",
        "source_format": f"'{NAME}'",
        "account": value("account-id"),
        "region": value("region"),
        "network": value("vpc-id"),
        "subnet": value("subnet-id"),
        "interface": value("interface-id"),
        "instance": value("instance-id"),
        "src_addr": value("srcaddr"),
        "dst_addr": value("dstaddr"),
        "src_port": f"try_cast({value('srcport')} AS INTEGER)",
        "dst_port": f"try_cast({value('dstport')} AS INTEGER)",
        "protocol": f"try_cast({value('protocol')} AS INTEGER)",
        "packets": f"try_cast({value('packets')} AS BIGINT)",
        "bytes": f"try_cast({value('bytes')} AS BIGINT)",
        "reply_packets": "NULL::BIGINT",
        "reply_bytes": "NULL::BIGINT",
        "action": f"upper({value('action')})",
        "direction": f"lower({value('flow-direction')})",
        "flow_state": "NULL::VARCHAR",
        "log_status": f"coalesce(upper({value('log-status')}), 'OK')",
    }
