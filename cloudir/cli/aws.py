"""`cloudir acquire aws` and `cloudir contain aws`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cloudir.case import Case, safe_name
from cloudir.cli.apps import acquire_app, contain_app
from cloudir.cli.common import (
    CaseOpt,
    DryRunOpt,
    ExaminerCidrOpt,
    ForceOpt,
    ResumeOpt,
    case_path,
    console,
    execute_plan,
    open_case,
    open_containment_case,
    resolve_acquired_target,
    resolve_target,
    show_dry_run,
)
from cloudir.errors import CloudirError
from cloudir.provider import AcquireOptions, ContainOptions, Provider, TargetKind, TargetQuery, get_provider
from cloudir.textsafe import esc

if TYPE_CHECKING:
    from providers.aws.evidence_bucket import S3EvidenceMirror

RegionOpt = Annotated[
    str | None, typer.Option("--region", help="Region of the target (default: your AWS profile's region).")
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="AWS CLI profile to use (default: AWS_PROFILE).")]


PrincipalOpt = Annotated[
    str | None,
    typer.Option(
        "--principal",
        help="Compromised IAM user or role: ARN (…:user/NAME, …:role/NAME, sts …:assumed-role/ROLE/SESSION) or name.",
    ),
]
_KINDS = {"access-key": TargetKind.ACCESS_KEY, "principal": TargetKind.PRINCIPAL}


def _query(region: str | None, **named: str | None) -> TargetQuery:
    given = [(option, value) for option, value in named.items() if value]
    if len(given) != 1:
        options = ", ".join(f"--{option.replace('_', '-')}" for option in named)
        raise CloudirError("name exactly one target", hint=f"use one of {options}")
    option, value = given[0]
    kind = _KINDS.get(option.replace("_", "-"), TargetKind.INSTANCE)
    return TargetQuery(kind, str(value).strip(), region)


def _evidence_bucket(
    provider: Provider, case: Case, bucket: str | None, mode: str | None, days: int | None
) -> S3EvidenceMirror | None:
    """The case's S3 evidence bucket mirror: the one given, or the one an earlier run of the case chose."""
    from providers.aws.evidence_bucket import attach_evidence_bucket

    clients = provider.clients  # type: ignore[attr-defined]
    return attach_evidence_bucket(clients, case, bucket, retention_mode=mode, retain_days=days)


@acquire_app.command("aws")
def acquire_aws(  # noqa: PLR0917 - one parameter per CLI option
    instance: Annotated[str | None, typer.Option("--instance", help="EC2 instance id, e.g. i-0abc123.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="Private or public IP of the instance.")] = None,
    eni: Annotated[str | None, typer.Option("--eni", help="Network interface id (eni-…) of the instance.")] = None,
    access_key: Annotated[
        str | None,
        typer.Option("--access-key", help="Compromised access key id: capture its IAM user (AKIA…) or role (ASIA…)."),
    ] = None,
    principal: PrincipalOpt = None,
    region: RegionOpt = None,
    all_regions: Annotated[
        bool, typer.Option("--all-regions", help="Search every enabled region for the target.")
    ] = False,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    forensic_account: Annotated[
        str | None, typer.Option("--forensic-account", help="Account id to share the snapshots with.")
    ] = None,
    forensic_region: Annotated[
        str | None, typer.Option("--forensic-region", help="Region to copy the snapshots to (default: the target's).")
    ] = None,
    kms_key: Annotated[
        str | None,
        typer.Option(
            "--kms-key", help="Customer-managed KMS key ARN to re-encrypt copies (needed for aws/ebs volumes)."
        ),
    ] = None,
    raw_image: Annotated[
        bool,
        typer.Option("--raw-image", help="Also read each snapshot into images/aws/<snapshot>.raw (EBS direct APIs)."),
    ] = False,
    asg_mode: Annotated[
        str,
        typer.Option(
            "--asg-mode",
            help="Auto Scaling member: protect (scale-in protection), standby (out of service) or detach.",
        ),
    ] = "protect",
    evidence_bucket: Annotated[
        str | None,
        typer.Option("--evidence-bucket", help="S3 bucket to mirror every artifact to (Object Lock honoured)."),
    ] = None,
    retention_mode: Annotated[
        str,
        typer.Option("--retention-mode", help="Object Lock mode for the evidence bucket: COMPLIANCE or GOVERNANCE."),
    ] = "COMPLIANCE",
    retain_days: Annotated[int, typer.Option("--retain-days", help="Object Lock retention in days.")] = 365,
    profile: ProfileOpt = None,
) -> None:
    """Preserve an EC2 instance and acquire its evidence into a case folder.

    \b
    In order:
      1. preserve: termination protection, keep volumes, stop on shutdown, Auto Scaling protection
      2. capture: instance, tags, user data, volumes, interfaces, security groups, instance profile
         and role policies, console output -> artifacts/aws/<instance>/
      3. snapshot every volume at once, tagged cloudir:case-id (a re-run never duplicates them)
      4. optional: copy/re-encrypt, share with --forensic-account, --raw-image
    Every API call and artifact SHA-256 goes into custody.jsonl; check it with `cloudir verify`.

    \b
    Examples:
      cloudir acquire aws --instance i-0abc123 --region us-east-1 --dry-run
      cloudir acquire aws --ip 10.0.3.7 --region eu-west-1 --case cases/IR-42
      cloudir acquire aws --instance i-0abc123 --forensic-account 111122223333 \\
          --kms-key arn:aws:kms:us-east-1:111122223333:key/… --raw-image
      cloudir acquire aws --instance i-0abc123 --case cases/IR-42 --resume   # after a failure
      cloudir acquire aws --access-key AKIA… --case cases/IR-42              # key compromise
      cloudir acquire aws --access-key ASIA… --case cases/IR-42              # stolen session: its role
      cloudir acquire aws --principal arn:aws:iam::123456789012:user/bob --case cases/IR-42

    Exit codes: 0 done, 2 bad input / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    query = _query(region, instance=instance, ip=ip, eni=eni, access_key=access_key, principal=principal)
    provider = get_provider("aws", region=region, profile=profile, all_regions=all_regions)
    options = AcquireOptions(
        forensic_account=forensic_account,
        forensic_location=forensic_region,
        encryption_key=kms_key,
        raw_image=raw_image,
        group_mode=asg_mode,
    )
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_acquire(provider.find_target(query), options))
        return
    the_case = open_case(provider, case_path(case, safe_name(query.value)), resume=resume)
    mirror = _evidence_bucket(provider, the_case, evidence_bucket, retention_mode, retain_days)
    try:
        target = resolve_target(provider, query, the_case)
        execute_plan(provider.plan_acquire(target, options), the_case)
    finally:
        if mirror is not None:
            mirror.upload_custody(the_case)


@contain_app.command("aws")
def contain_aws(  # noqa: PLR0917 - one parameter per CLI option
    instance: Annotated[str | None, typer.Option("--instance", help="EC2 instance id to isolate.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="Private or public IP of the instance to isolate.")] = None,
    access_key: Annotated[
        str | None,
        typer.Option(
            "--access-key", help="Compromised key: deactivate its user's keys (AKIA…) or revoke its role (ASIA…)."
        ),
    ] = None,
    principal: PrincipalOpt = None,
    case: CaseOpt = None,
    examiner_cidr: ExaminerCidrOpt = None,
    force: ForceOpt = False,
    keep_credentials: Annotated[
        bool, typer.Option("--keep-credentials", help="Isolate the network only; leave roles and sessions alone.")
    ] = False,
    dry_run: DryRunOpt = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Contain a target after acquisition (refused until `cloudir acquire aws` completed in the case, or --force).

    \b
    Instance:
      - an isolation security group with no rules (or only --examiner-cidr ingress)
        replaces the groups of every network interface
      - the instance profile is swapped for an empty quarantine profile
      - the old role denies every session issued before now
    Access key (AKIA…):
      - every active key of its user is deactivated
      - the user denies every session issued before now
    IAM user (--principal): every key deactivated, an inline deny-all policy, console password removed
    Role, role session or temporary key (ASIA…): the role denies every session issued before now
    Each step's result in custody.jsonl says how to undo it.

    \b
    Examples:
      cloudir contain aws --instance i-0abc123 --region us-east-1 --case cases/IR-42 --dry-run
      cloudir contain aws --instance i-0abc123 --region us-east-1 --case cases/IR-42 \\
          --examiner-cidr 198.51.100.7/32
      cloudir contain aws --access-key AKIA… --case cases/IR-42
      cloudir contain aws --principal arn:aws:iam::123456789012:user/bob --case cases/IR-42
      cloudir contain aws --instance i-0abc123 --force   # no acquisition first: only when you must

    Exit codes: 0 done, 2 refused / bad input / access problem, 3 a step failed (re-run to continue).
    """
    query = _query(region, instance=instance, ip=ip, access_key=access_key, principal=principal)
    provider = get_provider("aws", region=region, profile=profile)
    options = ContainOptions(examiner_cidr=examiner_cidr, revoke_credentials=not keep_credentials)
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_contain(provider.find_target(query), options))
        return
    the_case = open_containment_case(provider, case_path(case, safe_name(query.value)), cloud="aws", force=force)
    mirror = _evidence_bucket(provider, the_case, None, None, None)
    try:
        target = resolve_acquired_target(provider, query, the_case, force=force)
        execute_plan(provider.plan_contain(target, options), the_case)
    finally:
        if mirror is not None:
            mirror.upload_custody(the_case)
    console.print(f"[green]contained[/] {esc(target.ref)}", soft_wrap=True)
