"""Containment plans: isolate an instance and revoke its role's sessions, or disable a compromised access key."""

from __future__ import annotations

from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from cloudir.plan import Plan, Step, StepContext, StepKind, offline_plan
from cloudir.provider import ContainOptions, Target, TargetKind
from providers.aws.acquire import symbolic_instance
from providers.aws.calls import planned
from providers.aws.common import TAG_CASE, tag_list, until_iam_propagates, until_listed, until_visible
from providers.aws.principals import REVOKE_POLICY, now_iso, plan_contain_principal, revoke_policy
from providers.aws.session import AwsClients, aws_errors

ISOLATION_GROUP = "cloudir-isolation"
QUARANTINE_PROFILE = "cloudir-quarantine"


def plan_contain_instance(clients: AwsClients, target: Target, options: ContainOptions) -> Plan:
    """Isolation security group on every interface, quarantine instance profile, revoke the old role's sessions."""
    region, iid = target.location, target.id
    ec2 = clients.client("ec2", region)
    if target.symbolic:
        instance = symbolic_instance(target)
    else:
        with aws_errors(f"describe instance {iid}"):
            instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    vpc_id = instance.get("VpcId")
    eni_ids = [e["NetworkInterfaceId"] for e in instance.get("NetworkInterfaces", [])]
    profile_arn = (instance.get("IamInstanceProfile") or {}).get("Arn")
    group_name = f"{ISOLATION_GROUP}-{vpc_id}"
    cidr = options.examiner_cidr

    def isolation_group(ctx: StepContext) -> dict[str, Any]:
        def listed() -> list[dict[str, Any]]:
            filters = [{"Name": "group-name", "Values": [group_name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
            return list(ec2.describe_security_groups(Filters=filters)["SecurityGroups"])

        with aws_errors(f"create the isolation security group in {vpc_id}"):
            found = listed()
            if found:
                group = found[0]
            else:
                try:
                    group_id = ec2.create_security_group(
                        GroupName=group_name,
                        Description="cloudir isolation: no traffic except the examiner",
                        VpcId=vpc_id,
                        TagSpecifications=[
                            {"ResourceType": "security-group", "Tags": tag_list({TAG_CASE: ctx.case.case_id})}
                        ],
                    )["GroupId"]
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "InvalidGroup.Duplicate":
                        raise
                    # made a moment ago (an earlier run, or a send whose answer was lost) and not listed yet
                    found = until_listed(listed)
                    if not found:
                        raise
                    group = found[0]
                else:
                    # EC2 may not know the new group for a moment (eventual consistency)
                    group = until_visible(
                        lambda: ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
                    )
            group_id = group["GroupId"]
            examiner = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": cidr, "Description": "cloudir examiner"}]}
            # a group found by its name may hold rules anyone with EC2 rights put there: all of them go but the
            # examiner's, and are recorded
            ingress = [p for p in group.get("IpPermissions", []) if not (cidr and _only_examiner(p, cidr))]
            # each change may still meet EC2's lag for a group made a moment ago, though DescribeSecurityGroups
            # already shows it
            if group.get("IpPermissionsEgress"):
                until_visible(
                    lambda: ec2.revoke_security_group_egress(
                        GroupId=group_id, IpPermissions=group["IpPermissionsEgress"]
                    )
                )
            if ingress:
                until_visible(lambda: ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=ingress))
            if cidr and len(ingress) == len(group.get("IpPermissions", [])):
                until_visible(lambda: ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[examiner]))
        return {
            "group_id": group_id,
            "examiner_cidr": cidr,
            "revoked_ingress": ingress,
            "revoked_egress": group.get("IpPermissionsEgress", []),
        }

    def isolate(ctx: StepContext) -> dict[str, Any]:
        group_id = ctx.results["contain.isolation-group"]["group_id"]
        before = {}
        with aws_errors(f"isolate the network interfaces of {iid}"):
            for eni in ec2.describe_network_interfaces(NetworkInterfaceIds=eni_ids)["NetworkInterfaces"]:
                before[eni["NetworkInterfaceId"]] = [g["GroupId"] for g in eni.get("Groups", [])]
                # the isolation group may be made a moment ago: InvalidGroup.NotFound for a while
                eni_id = eni["NetworkInterfaceId"]
                until_visible(
                    partial(ec2.modify_network_interface_attribute, NetworkInterfaceId=eni_id, Groups=[group_id])
                )
        return {"isolated": sorted(before), "groups_before": before}

    steps = [
        Step(
            "contain.isolation-group",
            f"Create an isolation security group in {vpc_id} (no rules" + (f", ingress from {cidr})" if cidr else ")"),
            StepKind.CONTAIN,
            [
                planned("ec2", "DescribeSecurityGroups", region, GroupName=group_name, VpcId=vpc_id),
                planned("ec2", "CreateSecurityGroup", region, GroupName=group_name, VpcId=vpc_id),
                planned("ec2", "RevokeSecurityGroupEgress", region, GroupId="<isolation group>", IpPermissions="all"),
                planned(
                    "ec2", "RevokeSecurityGroupIngress", region, GroupId="<isolation group>", IpPermissions="found"
                ),
                *(
                    [planned("ec2", "AuthorizeSecurityGroupIngress", region, GroupId="<isolation group>", CidrIp=cidr)]
                    if cidr
                    else []
                ),
            ],
            isolation_group,
        ),
        Step(
            "contain.isolate-interfaces",
            "Replace the security groups of "
            + ("each network interface" if target.symbolic else f"{len(eni_ids)} network interface(s)")
            + " with the isolation group",
            StepKind.CONTAIN,
            [
                planned("ec2", "DescribeNetworkInterfaces", region, NetworkInterfaceIds=eni_ids),
                *[
                    planned(
                        "ec2",
                        "ModifyNetworkInterfaceAttribute",
                        region,
                        NetworkInterfaceId=e,
                        Groups="<isolation group>",
                    )
                    for e in eni_ids
                ],
            ],
            isolate,
        ),
    ]
    if profile_arn and options.revoke_credentials:
        profile_name = profile_arn.rsplit("/", 1)[-1]
        roles = ["<each role of the instance profile>"] if target.symbolic else _profile_roles(clients, profile_name)
        steps += _profile_steps(clients, region, iid, profile_name, roles)
    plan = Plan(
        name="contain",
        cloud="aws",
        target=target.ref,
        steps=steps,
        notes=["security group changes do not cut connections already tracked; watch for them in flow logs"],
    )
    if not target.symbolic:
        return plan
    condition = "if the instance has an instance profile"
    return offline_plan(
        plan, {"contain.replace-instance-profile": condition, "contain.revoke-role-sessions": condition}
    )


def _profile_roles(clients: AwsClients, profile_name: str) -> list[str]:
    with aws_errors(f"read instance profile {profile_name}"):
        profile = clients.client("iam").get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    return [r["RoleName"] for r in profile["Roles"]]


def _profile_steps(clients: AwsClients, region: str, iid: str, profile_name: str, roles: list[str]) -> list[Step]:
    ec2 = clients.client("ec2", region)
    iam = clients.client("iam")

    def replace(ctx: StepContext) -> dict[str, Any]:
        with aws_errors(f"replace the instance profile of {iid}"):
            try:
                quarantine = iam.get_instance_profile(InstanceProfileName=QUARANTINE_PROFILE)["InstanceProfile"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                    raise
                quarantine = iam.create_instance_profile(
                    InstanceProfileName=QUARANTINE_PROFILE, Tags=tag_list({TAG_CASE: ctx.case.case_id})
                )["InstanceProfile"]
            associations = ec2.describe_iam_instance_profile_associations(
                Filters=[{"Name": "instance-id", "Values": [iid]}]
            )["IamInstanceProfileAssociations"]
            active = [a for a in associations if a.get("State") in {"associated", "associating"}]
            if not active or active[0]["IamInstanceProfile"]["Arn"] == quarantine["Arn"]:
                return {"replaced": None, "quarantine": quarantine["Arn"]}
            until_iam_propagates(
                lambda: ec2.replace_iam_instance_profile_association(
                    AssociationId=active[0]["AssociationId"], IamInstanceProfile={"Arn": quarantine["Arn"]}
                )
            )
        return {"replaced": active[0]["IamInstanceProfile"]["Arn"], "quarantine": quarantine["Arn"]}

    def revoke(ctx: StepContext) -> dict[str, Any]:
        cutoff = now_iso()
        with aws_errors(f"revoke the sessions of roles {', '.join(roles)}"):
            for role in roles:
                iam.put_role_policy(RoleName=role, PolicyName=REVOKE_POLICY, PolicyDocument=revoke_policy(cutoff))
        return {"roles": roles, "issued_before": cutoff}

    return [
        Step(
            "contain.replace-instance-profile",
            f"Swap instance profile {profile_name} for the empty {QUARANTINE_PROFILE} profile",
            StepKind.CONTAIN,
            [
                planned("iam", "GetInstanceProfile", None, InstanceProfileName=QUARANTINE_PROFILE),
                planned("iam", "CreateInstanceProfile", None, InstanceProfileName=QUARANTINE_PROFILE),
                planned("ec2", "DescribeIamInstanceProfileAssociations", region, InstanceId=iid),
                planned("ec2", "ReplaceIamInstanceProfileAssociation", region, IamInstanceProfile=QUARANTINE_PROFILE),
            ],
            replace,
        ),
        Step(
            "contain.revoke-role-sessions",
            f"Deny every session of {', '.join(roles) or 'the role'} issued before now",
            StepKind.CONTAIN,
            [
                planned("iam", "PutRolePolicy", None, RoleName=r, PolicyName=REVOKE_POLICY, TokenIssueTime="<now>")
                for r in roles
            ],
            revoke,
        ),
    ]


def plan_contain(clients: AwsClients, target: Target, options: ContainOptions) -> Plan:
    """The containment plan for an instance, a principal or an access key."""
    if target.kind in {TargetKind.ACCESS_KEY, TargetKind.PRINCIPAL}:
        return plan_contain_principal(clients, target, options)
    return plan_contain_instance(clients, target, options)


def _only_examiner(permission: dict[str, Any], cidr: str) -> bool:
    """Whether a group's ingress permission is exactly the examiner's: all traffic from ``cidr`` alone."""
    ranges = [r.get("CidrIp") for r in permission.get("IpRanges", [])]
    others = permission.get("Ipv6Ranges") or permission.get("UserIdGroupPairs") or permission.get("PrefixListIds")
    return permission.get("IpProtocol") == "-1" and ranges == [cidr] and not others
