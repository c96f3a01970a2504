"""`cloudir acquire aws` and `cloudir contain aws`."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from cloudir.cli.apps import acquire_app, contain_app
from cloudir.cli.common import (
    CaseOpt,
    DryRunOpt,
    ExaminerCidrOpt,
    ForceOpt,
    ForensicOpt,
    Grammar,
    Mirror,
    ResumeOpt,
    TargetOpt,
    acquire_target,
    contain_target,
    forensic_destination,
    hidden,
    one_target,
)
from cloudir.cli.rows import FormatOpt, RowFormat
from cloudir.config import load_config
from cloudir.errors import CloudirError
from cloudir.provider import (
    AcquireOptions,
    ContainOptions,
    TargetKind,
    TargetQuery,
    resource_kind,
)
from cloudir.registry import provider_module

RegionOpt = Annotated[
    str | None, typer.Option("--region", help="Region of the target (default: your AWS profile's region).")
]
RoleArnOpt = Annotated[
    str | None,
    typer.Option("--role-arn", help="Role to assume in the target's account (each assumption goes into custody)."),
]
ExternalIdOpt = Annotated[str | None, typer.Option("--external-id", help="External id the --role-arn trust requires.")]
AccountOpt = Annotated[
    str | None,
    typer.Option(
        "--account",
        help="The target's account: act as the role the configuration's [roles.aws] maps it to (with its external "
        "id), unless --role-arn names one; the forensic account's role too.",
        show_default=False,
    ),
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="AWS CLI profile to use (default: AWS_PROFILE).")]
PrincipalOpt = Annotated[
    str | None,
    typer.Option(
        "--principal",
        help="Compromised IAM user or role by name (an ARN also works with --target): …:user/NAME, …:role/NAME, "
        "sts …:assumed-role/ROLE/SESSION.",
    ),
]
_ACCESS_KEY = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,}$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:(user|role|assumed-role)/")


def _routed(
    account: str | None, region: str | None, *, role_arn: str | None, forensic_role_arn: str | None = None
) -> dict[str, Any]:
    """The roles the configuration maps ``account`` (and the forensic account) to, for those no option named."""
    if not account:
        return {}
    if not re.fullmatch(r"\d{12}", account):
        raise CloudirError(f"--account {account!r} is not a 12-digit AWS account id")
    routed: dict[str, Any] = provider_module("aws").trigger_config(account, region, load_config())
    if role_arn is None and "role_arn" not in routed:
        raise CloudirError(
            f"the configuration maps account {account} to no role", hint="add it under [roles.aws], or pass --role-arn"
        )
    keep = ({"role_arn", "external_id"} if role_arn is None else set()) | (
        {"forensic_role_arn", "forensic_external_id"} if forensic_role_arn is None else set()
    )
    return {key: value for key, value in routed.items() if key in keep}


def aws_query(value: str, region: str | None, *, principal: bool = False) -> TargetQuery:
    """What ``--target`` names on AWS: a principal ARN (or ``--principal`` name), an access key id, a typed resource,
    else an instance (by id, IP or ENI)."""
    if principal or _PRINCIPAL_ARN.match(value):
        return TargetQuery(TargetKind.PRINCIPAL, value, region)
    kind = TargetKind.ACCESS_KEY if _ACCESS_KEY.match(value) else resource_kind(value) or TargetKind.INSTANCE
    return TargetQuery(kind, value, region)


@acquire_app.command("aws")
def acquire_aws(  # noqa: PLR0917 - one parameter per CLI option
    target: TargetOpt = None,
    principal: PrincipalOpt = None,
    region: RegionOpt = None,
    all_regions: Annotated[
        bool, typer.Option("--all-regions", help="Search every enabled region for the target.")
    ] = False,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    forensic: ForensicOpt = None,
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
    role_arn: RoleArnOpt = None,
    external_id: ExternalIdOpt = None,
    account: AccountOpt = None,
    forensic_role_arn: Annotated[
        str | None,
        typer.Option(
            "--forensic-role-arn",
            help="Role in the forensic account: it copies the shared snapshots into itself, then the share is removed.",
        ),
    ] = None,
    forensic_external_id: Annotated[
        str | None, typer.Option("--forensic-external-id", help="External id the --forensic-role-arn trust requires.")
    ] = None,
    forensic_kms_key: Annotated[
        str | None,
        typer.Option("--forensic-kms-key", help="Customer-managed key ARN in the forensic account for its copies."),
    ] = None,
    profile: ProfileOpt = None,
    instance: Annotated[str | None, hidden("--instance")] = None,
    ip: Annotated[str | None, hidden("--ip")] = None,
    eni: Annotated[str | None, hidden("--eni")] = None,
    access_key: Annotated[str | None, hidden("--access-key")] = None,
    forensic_account: Annotated[str | None, hidden("--forensic-account")] = None,
) -> None:
    """Preserve an EC2 instance and acquire its evidence into a case folder.

    \b
    --target: an instance id, private/public IP, ENI id (eni-…), access key id (AKIA… user, ASIA… session:
    its role), or IAM user/role ARN.
    In order:
      1. preserve: termination protection, keep volumes, stop on shutdown, Auto Scaling protection
      2. capture: instance, tags, user data, volumes, interfaces, security groups, instance profile
         and role policies, console output -> artifacts/aws/<instance>/
      3. snapshot every volume at once, tagged cloudir:case-id (a re-run never duplicates them);
         with --raw-image each volume is read as soon as its own snapshot completes
      4. optional: copy/re-encrypt, share with --forensic (account id)
      5. with --forensic-role-arn: the forensic account copies the shared snapshots into itself
         under --forensic-kms-key, then the share and the key grant are removed
    The plan notes say where each copy ends and who can delete it.
    Every API call and artifact SHA-256 goes into custody.jsonl; check it with `cloudir verify`.

    \b
    Examples:
      cloudir acquire aws --target i-0abc123 --region us-east-1 --dry-run   # no credentials needed
      cloudir acquire aws --target 10.0.3.7 --region eu-west-1 --case cases/IR-42
      cloudir acquire aws --target i-0abc123 --forensic 111122223333 \\
          --kms-key arn:aws:kms:us-east-1:111122223333:key/… --raw-image
      cloudir acquire aws --target i-0abc123 --case cases/IR-42 --resume   # after a failure
      cloudir acquire aws --target i-0abc123 --kms-key arn:aws:kms:…:444455556666:key/… \\
          --role-arn arn:aws:iam::444455556666:role/cloudir-responder --external-id IR-42 \\
          --forensic-role-arn arn:aws:iam::111122223333:role/cloudir-forensic \\
          --forensic-kms-key arn:aws:kms:…:111122223333:key/… --evidence-bucket ir-evidence-locked
      cloudir acquire aws --target AKIA… --case cases/IR-42                # key compromise
      cloudir acquire aws --target ASIA… --case cases/IR-42                # stolen session: its role
      cloudir acquire aws --target arn:aws:iam::123456789012:user/bob --case cases/IR-42
      cloudir acquire aws --target i-0abc123 --account 444455556666 --case cases/IR-42  # its [roles.aws] role

    Exit codes: 0 done, 2 bad input / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    name = one_target(target, instance=instance, ip=ip, eni=eni, access_key=access_key, principal=principal)
    query = aws_query(name, region, principal=bool(principal))
    config = {
        "region": region,
        "profile": profile,
        "all_regions": all_regions,
        "role_arn": role_arn,
        "external_id": external_id,
        "forensic_role_arn": forensic_role_arn,
        "forensic_external_id": forensic_external_id,
    } | _routed(account, region, role_arn=role_arn, forensic_role_arn=forensic_role_arn)
    forensic_id = forensic_destination("aws", forensic, forensic_account, source=account)
    routed_forensic = str(config.get("forensic_role_arn") or "")
    if routed_forensic and not forensic_id and routed_forensic.count(":") >= 5:
        forensic_id = routed_forensic.split(":")[4]
    options = AcquireOptions(
        forensic_account=forensic_id,
        forensic_location=forensic_region,
        encryption_key=kms_key,
        raw_image=raw_image,
        group_mode=asg_mode,
        extra={"forensic_kms_key": forensic_kms_key} if forensic_kms_key else {},
    )
    grammar = Grammar(case, dry_run, resume, fmt=output)
    acquire_target("aws", config, query, options, grammar, mirror=Mirror(evidence_bucket, retention_mode, retain_days))


@contain_app.command("aws")
def contain_aws(  # noqa: PLR0917 - one parameter per CLI option
    target: TargetOpt = None,
    principal: PrincipalOpt = None,
    case: CaseOpt = None,
    examiner_cidr: ExaminerCidrOpt = None,
    force: ForceOpt = False,
    keep_credentials: Annotated[
        bool, typer.Option("--keep-credentials", help="Isolate the network only; leave roles and sessions alone.")
    ] = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    resume: ResumeOpt = False,
    region: RegionOpt = None,
    role_arn: RoleArnOpt = None,
    external_id: ExternalIdOpt = None,
    account: AccountOpt = None,
    profile: ProfileOpt = None,
    instance: Annotated[str | None, hidden("--instance")] = None,
    ip: Annotated[str | None, hidden("--ip")] = None,
    access_key: Annotated[str | None, hidden("--access-key")] = None,
) -> None:
    """Contain a target after acquisition (refused until `cloudir acquire aws` completed in the case, or --force).

    \b
    --target: an instance id, private/public IP, access key id (AKIA… user, ASIA… session: its role), or
    IAM user/role ARN.
    Instance:
      - an isolation security group with no rules (or only --examiner-cidr ingress)
        replaces the groups of every network interface
      - the instance profile is swapped for an empty quarantine profile
      - the old role denies every session issued before now
    Access key (AKIA…):
      - every active key of its user is deactivated
      - the user denies every session issued before now
    IAM user (a user ARN, or --principal NAME): every key deactivated, an inline deny-all policy, console
    password removed
    Role, role session or temporary key (ASIA…): the role denies every session issued before now
    Each step's result in custody.jsonl says how to undo it.

    \b
    Examples:
      cloudir contain aws --target i-0abc123 --region us-east-1 --case cases/IR-42 --dry-run
      cloudir contain aws --target i-0abc123 --region us-east-1 --case cases/IR-42 \\
          --examiner-cidr 198.51.100.7/32
      cloudir contain aws --target AKIA… --case cases/IR-42
      cloudir contain aws --principal bob --case cases/IR-42
      cloudir contain aws --target i-0abc123 --case cases/IR-42 --resume   # after a failed step
      cloudir contain aws --target i-0abc123 --force   # no acquisition first: only when you must

    Exit codes: 0 done, 2 refused / bad input / access problem, 3 a step failed (re-run to continue).
    """
    name = one_target(target, instance=instance, ip=ip, access_key=access_key, principal=principal)
    query = aws_query(name, region, principal=bool(principal))
    config = {"region": region, "profile": profile, "role_arn": role_arn, "external_id": external_id}
    config |= {k: v for k, v in _routed(account, region, role_arn=role_arn).items() if not k.startswith("forensic")}
    options = ContainOptions(examiner_cidr=examiner_cidr, revoke_credentials=not keep_credentials)
    contain_target("aws", config, query, options, Grammar(case, dry_run, resume, force, output))
