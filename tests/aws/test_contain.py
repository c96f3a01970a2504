"""Containment: isolation, instance profile swap, session revocation, key deactivation, precondition."""

import json
import time
from types import SimpleNamespace

import pytest

from cloudir.case import Case
from cloudir.custody import read_records
from cloudir.plan import run_plan
from cloudir.provider import ContainOptions, Target, TargetKind, TargetQuery
from moto_fixtures.aws import AwsSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.aws import common
from providers.aws.common import IAM_PROPAGATION_DELAYS
from providers.aws.contain import QUARANTINE_PROFILE, REVOKE_POLICY
from providers.aws.provider import AwsProvider
from tests.aws.conftest import Acquire, api_outcomes


def test_contain_isolates_swaps_the_profile_and_revokes_role_sessions(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire(aws_incident.extra["instance_id"])
    provider = aws_sandbox.provider()
    provider.bind(case)
    target = provider.find_target(aws_incident.target)
    assert not aws_sandbox.is_isolated(aws_incident)
    result = run_plan(provider.plan_contain(target, ContainOptions(examiner_cidr="198.51.100.7/32")), case)
    assert result.ok
    assert aws_sandbox.is_isolated(aws_incident)
    ec2, iam = aws_sandbox.client("ec2"), aws_sandbox.client("iam")
    group = ec2.describe_security_groups(GroupIds=[result.results["contain.isolation-group"]["group_id"]])[
        "SecurityGroups"
    ][0]
    assert group["IpPermissions"][0]["IpRanges"][0]["CidrIp"] == "198.51.100.7/32"
    assert group["IpPermissionsEgress"] == []
    association = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    assert association[0]["IamInstanceProfile"]["Arn"].endswith(f"/{QUARANTINE_PROFILE}")
    policy = iam.get_role_policy(RoleName="web-app-role", PolicyName=REVOKE_POLICY)["PolicyDocument"]
    statement = policy["Statement"][0]
    assert statement["Effect"] == "Deny"
    assert "aws:TokenIssueTime" in statement["Condition"]["DateLessThan"]
    # running it again changes nothing and creates no second group
    again = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert again.ok
    assert all(o.status == "resumed" for o in again.outcomes)


def test_key_compromise_deactivates_keys_and_denies_sessions(
    aws_sandbox: AwsSandbox, compromised_user: tuple[str, str], tmp_path
):
    from cloudir.case import Case

    user, key = compromised_user
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    target = provider.find_target(TargetQuery(TargetKind.ACCESS_KEY, key))
    acquired = run_plan(provider.plan_acquire(target, None), case)  # type: ignore[arg-type]
    user_file = json.loads((case.root / f"artifacts/aws/iam-user/{user}/user.json").read_text())
    assert len(user_file["AccessKeys"]) == 2
    assert "deploy" in user_file["InlinePolicies"]
    assert acquired.ok
    result = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert result.ok
    iam = aws_sandbox.client("iam")
    assert {k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]} == {"Inactive"}
    assert REVOKE_POLICY in iam.list_user_policies(UserName=user)["PolicyNames"]


def test_quarantine_profile_swap_waits_for_iam_propagation(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire(aws_incident.extra["instance_id"])
    provider = aws_sandbox.provider()
    provider.bind(case)
    target = provider.find_target(aws_incident.target)
    result = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert result.ok
    swaps = [
        call["outcome"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] == "ReplaceIamInstanceProfileAssociation"
    ]
    assert len(swaps) == 2  # refused once while EC2 did not know the new profile, then accepted
    assert swaps[0] != swaps[1]


def test_a_profile_iam_never_propagates_fails_the_swap_after_its_bounded_retries(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire, monkeypatch: pytest.MonkeyPatch
):
    """The retry on IAM's eventual consistency is bounded: a profile EC2 never learns fails the step with EC2's error
    after the documented waits (about 31 s, slept at once here), instead of waiting forever."""
    case, _ = acquire(aws_incident.extra["instance_id"])
    aws_sandbox.iam_propagation_seconds = float("inf")
    aws_sandbox.describe_lag_seconds = aws_sandbox.change_lag_seconds = 0.0  # only IAM lags: every sleep is its own
    slept: list[float] = []
    monkeypatch.setattr(common, "time", SimpleNamespace(sleep=slept.append, monotonic=time.monotonic))
    provider = aws_sandbox.provider()
    provider.bind(case)
    target = provider.find_target(aws_incident.target)
    result = run_plan(provider.plan_contain(target, ContainOptions()), case, raise_on_failure=False)
    assert result.failed is not None
    assert "Invalid IAM Instance Profile" in (result.failed.error or "")
    swaps = [
        call["outcome"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] == "ReplaceIamInstanceProfileAssociation"
    ]
    assert swaps == ["InvalidParameterValue"] * (len(IAM_PROPAGATION_DELAYS) + 1)
    assert slept == list(IAM_PROPAGATION_DELAYS)


def test_a_new_isolation_group_is_waited_for_while_ec2_does_not_know_it(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """EC2 answers InvalidGroup.NotFound for a security group created a moment ago (the sandbox's default lag):
    the tool looks again instead of failing the containment."""
    case, _ = acquire(aws_incident.extra["instance_id"])
    provider = aws_sandbox.provider()
    provider.bind(case)
    result = run_plan(provider.plan_contain(provider.find_target(aws_incident.target), ContainOptions()), case)
    assert result.ok, result.failed
    assert aws_sandbox.is_isolated(aws_incident)
    lookups = [
        call["outcome"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] == "DescribeSecurityGroups"
    ]
    # the new group asked for by id: refused while EC2 does not know it (in custody), then seen
    assert lookups[-2:] == ["InvalidGroup.NotFound", "ok"], lookups


def _isolation_calls(case_root) -> list[tuple[str, str]]:
    return [
        (call["operation"], call["outcome"])
        for record in read_records(case_root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] in {"CreateSecurityGroup", "DescribeSecurityGroups"}
    ]


def _contain_ready(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
) -> tuple[Case, AwsProvider, Target]:
    """The incident's instance acquired, and the provider bound to its case: (case, provider, target)."""
    case, _ = acquire(aws_incident.extra["instance_id"])
    provider = aws_sandbox.provider()
    provider.bind(case)
    return case, provider, provider.find_target(aws_incident.target)


def test_an_isolation_group_made_a_moment_ago_by_an_earlier_run_is_found_not_refused(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """A containment re-run within EC2's lag: the group the first run made is not listed yet, so the create is
    answered InvalidGroup.Duplicate; the tool waits until EC2 lists the group and uses it."""
    case, provider, target = _contain_ready(aws_sandbox, aws_incident, acquire)
    ec2 = aws_sandbox.client("ec2")
    vpc = ec2.describe_instances(InstanceIds=[target.id])["Reservations"][0]["Instances"][0]["VpcId"]
    aws_sandbox.describe_lag_seconds = 3.0  # longer than planning takes on a loaded machine
    earlier = ec2.create_security_group(GroupName=f"cloudir-isolation-{vpc}", Description="earlier run", VpcId=vpc)
    result = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert result.ok, result.failed
    assert result.results["contain.isolation-group"]["group_id"] == earlier["GroupId"]
    assert aws_sandbox.is_isolated(aws_incident)
    calls = _isolation_calls(case.root)
    assert ("CreateSecurityGroup", "InvalidGroup.Duplicate") in calls, calls
    assert calls[-1] == ("DescribeSecurityGroups", "ok"), calls


def test_an_isolation_group_planted_under_the_tools_name_is_emptied_of_its_rules_before_isolating(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """The group's name is public (the tool is open source): whoever holds EC2 rights in the account can make it
    first with a way in. Isolation keeps only the examiner's rule and records what it revoked."""
    case, provider, target = _contain_ready(aws_sandbox, aws_incident, acquire)
    ec2 = aws_sandbox.client("ec2")
    vpc = ec2.describe_instances(InstanceIds=[target.id])["Reservations"][0]["Instances"][0]["VpcId"]
    planted = ec2.create_security_group(GroupName=f"cloudir-isolation-{vpc}", Description="cloudir", VpcId=vpc)
    way_in = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ec2.authorize_security_group_ingress(GroupId=planted["GroupId"], IpPermissions=[way_in])
    result = run_plan(provider.plan_contain(target, ContainOptions(examiner_cidr="198.51.100.7/32")), case)
    assert result.ok, result.failed
    group = ec2.describe_security_groups(GroupIds=[planted["GroupId"]])["SecurityGroups"][0]
    assert [(p["IpProtocol"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == [
        ("-1", ["198.51.100.7/32"])
    ]
    assert group["IpPermissionsEgress"] == []
    revoked = result.results["contain.isolation-group"]["revoked_ingress"]
    assert [p["FromPort"] for p in revoked] == [22]
    assert aws_sandbox.is_isolated(aws_incident)


def test_a_lost_create_answer_resent_as_a_duplicate_isolates_with_the_group_it_made(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """The create ran but its answer was lost: the SDK's resend is answered InvalidGroup.Duplicate while EC2 does
    not list the group yet; the tool finds the one group and isolates with it."""
    case, _ = acquire(aws_incident.extra["instance_id"])
    provider = aws_sandbox.provider()
    provider.bind(case)
    target = provider.find_target(aws_incident.target)
    with aws_sandbox.lose_responses("CreateSecurityGroup", 1):
        result = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert result.ok, result.failed
    assert aws_sandbox.lost == ["CreateSecurityGroup"]
    assert aws_sandbox.is_isolated(aws_incident)
    groups = aws_sandbox.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["cloudir-isolation-*"]}]
    )["SecurityGroups"]
    assert [g["GroupId"] for g in groups] == [result.results["contain.isolation-group"]["group_id"]]


def _isolated_after_not_found(
    aws_sandbox: AwsSandbox, incident: PlantedIncident, case: Case, provider: AwsProvider, target: Target, action: str
) -> None:
    """Containment succeeds, its ``action`` first answered InvalidGroup.NotFound and finally sent again with success."""
    result = run_plan(provider.plan_contain(target, ContainOptions()), case)
    assert result.ok, result.failed
    assert aws_sandbox.is_isolated(incident)
    outcomes = api_outcomes(case, action)
    assert outcomes[0] == "InvalidGroup.NotFound", outcomes
    assert outcomes[-1] == "ok", outcomes


def test_changes_to_a_new_isolation_group_wait_while_ec2_does_not_know_it_though_describe_shows_it(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """The group made a moment ago is listed by DescribeSecurityGroups but still unknown to the calls that revoke its
    default egress (InvalidGroup.NotFound): each is sent again with a bounded backoff, in custody."""
    case, provider, target = _contain_ready(aws_sandbox, aws_incident, acquire)
    aws_sandbox.change_lag_seconds = 3.0  # longer than the group's create and its lookup take under load
    _isolated_after_not_found(aws_sandbox, aws_incident, case, provider, target, "RevokeSecurityGroupEgress")


def test_isolating_the_interfaces_waits_while_ec2_does_not_know_a_group_made_a_moment_ago(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """An earlier run's group, already without rules, made a moment ago: the tool finds it and has nothing to
    change in it, and ModifyNetworkInterfaceAttribute is answered InvalidGroup.NotFound until EC2 knows it."""
    case, provider, target = _contain_ready(aws_sandbox, aws_incident, acquire)
    ec2 = aws_sandbox.client("ec2")
    vpc = ec2.describe_instances(InstanceIds=[target.id])["Reservations"][0]["Instances"][0]["VpcId"]
    group = ec2.create_security_group(GroupName=f"cloudir-isolation-{vpc}", Description="earlier run", VpcId=vpc)
    egress = ec2.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0]["IpPermissionsEgress"]
    ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=egress)
    aws_sandbox.describe_lag_seconds, aws_sandbox.change_lag_seconds = 0.0, 3.0
    _isolated_after_not_found(aws_sandbox, aws_incident, case, provider, target, "ModifyNetworkInterfaceAttribute")
