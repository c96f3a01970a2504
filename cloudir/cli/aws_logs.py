"""``cloudir logs pull aws``: CloudTrail into a case (LookupEvents pages, trail files, digests, coverage)."""

from __future__ import annotations

import json
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudir.cli.apps import pull_app
from cloudir.cli.aws import aws_query
from cloudir.cli.common import (
    AfterOpt,
    AroundOpt,
    BeforeOpt,
    CaseOpt,
    DryRunOpt,
    EndOpt,
    Grammar,
    LogTargetOpt,
    ResumeOpt,
    StartOpt,
    console,
    log_case,
    print_warnings,
    pull_logs,
)
from cloudir.cli.consoles import err_console, say
from cloudir.cli.rows import FormatOpt, RowFormat, print_rows
from cloudir.coverage import duration, iso_utc, parse_utc
from cloudir.errors import CloudirError
from cloudir.provider import LogPullRequest
from cloudir.textsafe import esc

_INTEGRITY_ORDER = ("verified", "no_digest", "hash_mismatch", "bad_signature", "chain_broken", "missing")


def parse_duration(value: str) -> timedelta:
    """``90s``, ``30m``, ``24h`` or ``7d`` as a timedelta."""
    span = duration(value)
    if span is None:
        raise CloudirError(f"cannot read the duration {value!r}", hint="use a number and s, m, h or d, e.g. 24h")
    return span


def _time(value: str, option: str) -> str:
    try:
        return iso_utc(parse_utc(value))
    except ValueError:
        raise CloudirError(
            f"{option}: cannot read the time {value!r}", hint="use ISO 8601, e.g. 2026-05-01T10:00Z"
        ) from None


def resolve_window(start: str | None, end: str | None, around: str | None, before: str, after: str) -> tuple[str, str]:
    """The window from ``--start/--end`` or from ``--around`` with ``--before``/``--after``."""
    if around is not None:
        if start or end:
            raise CloudirError("--around cannot be combined with --start/--end")
        center = parse_utc(_time(around, "--around"))
        return iso_utc(center - parse_duration(before)), iso_utc(center + parse_duration(after))
    if not start or not end:
        raise CloudirError("no time window", hint="pass --start and --end, or --around TIME [--before 24h --after 6h]")
    return _time(start, "--start"), _time(end, "--end")


def _summary(case_dir: Path, output: RowFormat) -> None:
    coverage_path = case_dir / "logs/aws/coverage.json"
    if not coverage_path.is_file():
        return
    coverage: dict[str, Any] = json.loads(coverage_path.read_text(encoding="utf-8"))
    rows = [
        (
            source["source"].split(":")[-1],
            source["location"],
            source["scope"],
            source["status"],
            source["items"],
            source["first_event"] or "-",
            source["last_event"] or "-",
            source["details"].get("files", "-"),
        )
        for source in coverage["sources"]
    ]
    columns = ("source", "region", "scope", "status", "events", "first event", "last event", "files")
    print_rows(columns, rows, output, title=f"CloudTrail {coverage['window_start']} .. {coverage['window_end']}")
    out = console if output is RowFormat.table else err_console
    validation_path = case_dir / "logs/aws/digest-validation.json"
    if validation_path.is_file():
        counts = json.loads(validation_path.read_text(encoding="utf-8"))["counts"]
        say(
            out,
            "trail file integrity: "
            + ", ".join(f"{name.replace('_', ' ')} {counts.get(name, 0)}" for name in _INTEGRITY_ORDER),
        )
    for retention in coverage["retention"]:
        say(
            out,
            f"{esc(retention['source'])}: oldest event {retention['oldest_event']} leaves it in "
            f"{retention['days_left']:.1f} days",
        )
    print_warnings(coverage["warnings"], output)


def flow_summary(coverage_path: Path, output: RowFormat, title: str = "VPC Flow Logs") -> None:
    """The flow-log coverage report of a pull as rows, then its warnings."""
    if not coverage_path.is_file():
        return
    coverage: dict[str, Any] = json.loads(coverage_path.read_text(encoding="utf-8"))
    rows = [
        (
            source["location"],
            source["source"].split(":")[-1],
            source["details"].get("flow_log", "-"),
            source["details"].get("since") or "-",
            source["status"],
            source["items"],
            source["first_event"] or "-",
            source["last_event"] or "-",
        )
        for source in coverage["sources"]
    ]
    columns = ("network", "source", "flow log", "since", "status", "records/files", "first", "last")
    print_rows(columns, rows, output, title=f"{title} {coverage['window_start']} .. {coverage['window_end']}")
    print_warnings(coverage["warnings"], output)


class FlowsVia(StrEnum):
    """How a flow-log pull reads a CloudWatch Logs group."""

    auto = "auto"
    filter = "filter"
    insights = "insights"


@pull_app.command("aws")
def pull_aws(  # noqa: PLR0917 - one parameter per CLI option
    target: LogTargetOpt = None,
    case: CaseOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    around: AroundOpt = None,
    before: BeforeOpt = "24h",
    after: AfterOpt = "6h",
    principal: Annotated[
        list[str] | None,
        typer.Option(
            help="User name, role session name, or ARN of a user, role session or role (a role ARN takes every event "
            "of the account: its sessions are named anything) (repeatable)."
        ),
    ] = None,
    access_key: Annotated[list[str] | None, typer.Option(help="Access key id, AKIA/ASIA... (repeatable).")] = None,
    instance: Annotated[list[str] | None, typer.Option(help="EC2 instance id (repeatable).")] = None,
    region: Annotated[list[str] | None, typer.Option(help="Region to collect (repeatable).")] = None,
    all_regions: Annotated[bool, typer.Option(help="Collect every enabled region.")] = False,
    trail_bucket: Annotated[
        str | None, typer.Option(help="Bucket holding the trail files (default: from the trails).")
    ] = None,
    trail_prefix: Annotated[
        str | None, typer.Option(help="S3 key prefix of the trail files in --trail-bucket.")
    ] = None,
    account: Annotated[
        list[str] | None, typer.Option(help="Also collect this member account's files from an organisation trail.")
    ] = None,
    flows: Annotated[
        bool,
        typer.Option(
            help="Pull VPC Flow Logs instead (CloudWatch Logs and S3) of the --instance's network, or of every "
            "network of the region, with its DescribeInstances pages."
        ),
    ] = False,
    flows_via: Annotated[
        FlowsVia,
        typer.Option(
            help="With --flows: how CloudWatch Logs groups are read. auto: Logs Insights (StartQuery) for a group "
            "storing 10 GiB or more (DescribeLogGroups storedBytes), FilterLogEvents below; filter or insights: "
            "always that API."
        ),
    ] = FlowsVia.auto,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    resume: ResumeOpt = False,
    role_arn: Annotated[
        str | None, typer.Option(help="Role to assume: in the member account, or the log-archive account of a trail.")
    ] = None,
    external_id: Annotated[str | None, typer.Option(help="External id the --role-arn trust requires.")] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile.")] = None,
) -> None:
    """Pull CloudTrail (or, with --flows, VPC Flow Logs) for a window and scope into a case; raw pages and files
    are kept as evidence.

    \b
    --target (instance id or IP, access key id, IAM user or role ARN) narrows the pull to it: an instance's
    resource events and its instance-role sessions (CloudTrail names them after the instance), a key's
    or a principal's own events; with --flows, the instance's network.

    \b
    Examples:
      cloudir logs pull aws --target i-0abc123 --region eu-west-1 --around 2026-11-25T10:00:00Z --dry-run
      cloudir logs pull aws --case cases/IR-42 --around 2026-11-25T10:00:00Z --before 24h --after 6h \\
          --principal web-app-role --all-regions --trail-bucket org-cloudtrail-logs
      cloudir logs pull aws --target i-0abc123 --region eu-west-1 --case cases/IR-42 --flows --around … --before 7d
    """
    window_start, window_end = resolve_window(start, end, around, before, after)
    if flows and (principal or access_key or trail_bucket or account or all_regions):
        raise CloudirError(
            "--flows takes --instance and one --region only", hint="flow logs are scoped by network, not principal"
        )
    request = LogPullRequest(
        start=window_start,
        end=window_end,
        principals=principal or [],
        access_keys=access_key or [],
        resources=instance or [],
        locations=region or [],
        extra={
            "all_regions": all_regions,
            "flows": flows,
            "flows_via": flows_via.value,
            "accounts": account or [],
            **({"trail_bucket": trail_bucket, "trail_prefix": trail_prefix or ""} if trail_bucket else {}),
        },
    )
    config = {
        "region": region[0] if region else None,
        "profile": profile,
        "all_regions": all_regions,
        "role_arn": role_arn,
        "external_id": external_id,
    }
    query = aws_query(target, region[0] if region else None) if target else None
    description = f"{'VPC Flow Logs' if flows else 'CloudTrail'} pull {window_start} .. {window_end}"
    grammar = Grammar(log_case(case, target) if not dry_run else case, dry_run, resume, fmt=output)
    try:
        pull_logs("aws", config, request, grammar, target=query, description=description)
    finally:
        if grammar.case is not None and not dry_run and flows:
            flow_summary(grammar.case / "logs/aws/flows/coverage.json", output)
        elif grammar.case is not None and not dry_run:
            _summary(grammar.case, output)
