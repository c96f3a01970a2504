"""The EC2 acquisition plan: preserve, capture metadata, snapshot, copy/re-encrypt, share, raw image."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cloudir.errors import CloudAccessError, CloudirError
from cloudir.plan import Plan, PlannedCall, Step, StepContext, StepKind, offline_plan
from cloudir.provider import AcquireOptions, Target
from cloudir.safepath import path_part
from providers.aws.calls import planned
from providers.aws.common import (
    AWS_MANAGED,
    CALLS_AT_ONCE,
    CONSISTENCY_DELAYS,
    TAG_CASE,
    TAG_INSTANCE,
    TAG_REQUEST,
    TAG_SNAPSHOT,
    TAG_VOLUME,
    at_once,
    clean,
    completed_snapshots,
    create_delays,
    is_transient,
    may_have_run,
    tag_filters,
    tag_list,
    until_visible,
    wait_for_snapshots,
)
from providers.aws.raw_image import RawImager
from providers.aws.session import AwsClients, aws_errors, describe_error

ASG_MODES = ("protect", "standby", "detach")
KMS_COPY_HINT = (
    "the caller needs kms:DescribeKey, kms:CreateGrant, kms:Decrypt, kms:ReEncryptFrom, kms:ReEncryptTo and "
    "kms:GenerateDataKeyWithoutPlaintext on the source key {source} and the target key {target}"
)


@dataclass
class InstanceFacts:
    """What a plan needs to know about the instance, read once at planning time."""

    instance: dict[str, Any]
    volumes: list[dict[str, Any]]
    asg_name: str | None
    volume_key_managers: dict[str, str]  # KMS key id -> "AWS" | "CUSTOMER"

    @property
    def instance_id(self) -> str:
        """The instance id."""
        return str(self.instance["InstanceId"])

    @property
    def profile_arn(self) -> str | None:
        """ARN of the attached instance profile, if any."""
        profile = self.instance.get("IamInstanceProfile") or {}
        return profile.get("Arn")


def key_manager(clients: AwsClients, region: str, key_id: str) -> str:
    """Who manages a KMS key ("AWS" for aws/ebs and other AWS-managed keys, else "CUSTOMER")."""
    try:
        meta = clients.client("kms", region).describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CloudAccessError(
            f"KMS DescribeKey on {key_id} in {region} failed: {error.get('Code')}: {error.get('Message', '')}",
            hint=f"check that the key exists in {region} and the caller has kms:DescribeKey on it",
        ) from None
    if meta.get("KeyState") not in {None, "Enabled"}:
        raise CloudAccessError(
            f"KMS key {key_id} is {meta.get('KeyState')}", hint="enable it or pass another --kms-key"
        )
    return str(meta.get("KeyManager", "CUSTOMER"))


def gather_facts(clients: AwsClients, target: Target) -> InstanceFacts:
    """Describe the instance, its volumes, keys and Auto Scaling membership (read-only)."""
    ec2 = clients.client("ec2", target.location)
    with aws_errors(f"describe instance {target.id}"):
        instance = ec2.describe_instances(InstanceIds=[target.id])["Reservations"][0]["Instances"][0]
        volume_ids = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
        volumes = ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"] if volume_ids else []
        members = clients.client("autoscaling", target.location).describe_auto_scaling_instances(
            InstanceIds=[target.id]
        )["AutoScalingInstances"]
    keys = {v["KmsKeyId"] for v in volumes if v.get("Encrypted") and v.get("KmsKeyId")}
    managers = {key: key_manager(clients, target.location, key) for key in sorted(keys)}
    return InstanceFacts(instance, volumes, members[0]["AutoScalingGroupName"] if members else None, managers)


def symbolic_instance(target: Target) -> dict[str, Any]:
    """An instance description whose unknown parts are placeholders (offline plans of an unresolved target)."""
    iid = target.id
    return {
        "InstanceId": iid,
        "State": {"Name": "<state>"},
        "VpcId": f"<VPC of {iid}>",
        "BlockDeviceMappings": [
            {"DeviceName": f"<each EBS device of {iid}>", "Ebs": {"VolumeId": f"<each volume of {iid}>"}}
        ],
        "NetworkInterfaces": [
            {"NetworkInterfaceId": f"<each interface of {iid}>", "Groups": [{"GroupId": f"<security groups of {iid}>"}]}
        ],
        "IamInstanceProfile": {"Arn": f"arn:aws:iam::{target.account}:instance-profile/<instance profile of {iid}>"},
    }


def symbolic_facts(target: Target) -> InstanceFacts:
    """Facts of an unresolved instance: one placeholder volume, assumed encrypted with aws/ebs, and a group.

    Steps that exist only for some instances (Auto Scaling, instance profile, re-encrypting copies) are thus
    all listed; :meth:`AcquirePlanner.plan` marks them conditional.
    """
    instance = symbolic_instance(target)
    key = f"<KMS key of each volume of {target.id}>"
    volume = {"VolumeId": f"<each volume of {target.id}>", "Encrypted": True, "KmsKeyId": key}
    return InstanceFacts(instance, [volume], f"<Auto Scaling group of {target.id}>", {key: AWS_MANAGED})


class AcquirePlanner:
    """Builds the acquisition plan of one EC2 instance."""

    def __init__(
        self,
        clients: AwsClients,
        target: Target,
        options: AcquireOptions,
        *,
        forensic: AwsClients | None = None,
        poll_seconds: float,
        timeout_seconds: float,
    ) -> None:
        if options.group_mode not in ASG_MODES:
            raise CloudirError(f"unknown Auto Scaling mode {options.group_mode!r}", hint=f"use one of {ASG_MODES}")
        self.clients = clients
        self.forensic = forensic if options.forensic_account else None  # the forensic account's own clients
        self.forensic_key = options.extra.get("forensic_kms_key")
        self.target = target
        self.options = options
        self.region = target.location
        self.dest_region = options.forensic_location or target.location
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.facts = symbolic_facts(target) if target.symbolic else gather_facts(clients, target)
        state = self.facts.instance["State"]["Name"]
        if state in {"shutting-down", "terminated"}:
            raise CloudirError(
                f"instance {target.id} is {state}: it can no longer be preserved",
                hint="look for its volumes and snapshots (DeleteOnTermination=false volumes survive)",
            )
        self.case_label = clients.case_tag or "<case id>"
        self.base = f"artifacts/aws/{path_part(target.id)}"

    # -- plan ---------------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The ordered steps: preserve first, then captures, snapshots, copies, sharing and images."""
        if self.forensic is not None and not self.forensic_key:
            raise CloudirError(
                "the forensic account copies the snapshots under its own key",
                hint="pass --forensic-kms-key with the ARN of a customer-managed key in the forensic account",
            )
        if not self.target.symbolic:
            self._check_encryption()
        steps = [*self._preserve_steps(), *self._capture_steps(), *self._snapshot_steps()]
        notes = []
        if self.facts.asg_name and self.options.group_mode == "protect":
            member = (
                f"if {self.target.id} is in an Auto Scaling group"
                if self.target.symbolic
                else f"{self.target.id} is in Auto Scaling group {self.facts.asg_name}"
            )
            notes.append(
                f"{member}: scale-in protection does not stop health-check replacement; use --asg-mode standby to "
                "take it out of service"
            )
        notes += self._ownership_notes()
        plan = Plan(name="acquire", cloud="aws", target=self.target.ref, steps=steps, notes=notes)
        return offline_plan(plan, self._conditions()) if self.target.symbolic else plan

    def _conditions(self) -> dict[str, str]:
        """When the state-dependent steps of an offline plan exist."""
        group = "if the instance is in an Auto Scaling group"
        conditions = {
            "preserve.delete-on-termination": "if the instance has EBS volumes",
            "preserve.autoscaling": group,
            "capture.instance-profile": "if the instance has an instance profile",
            "capture.autoscaling": group,
        }
        if self.dest_region == self.region:
            conditions["copy.snapshots"] = (
                "for each volume encrypted with aws/ebs (cannot be shared)"
                if self.options.forensic_account
                else "for each volume not encrypted with --kms-key"
            )
        return conditions

    def _needs_reencryption(self, volume: dict[str, Any]) -> bool:
        key = volume.get("KmsKeyId")
        return bool(volume.get("Encrypted") and key and self.facts.volume_key_managers.get(key) == AWS_MANAGED)

    def _needs_copy(self, volume: dict[str, Any]) -> bool:
        if self.dest_region != self.region:
            return True
        if self.options.forensic_account and self._needs_reencryption(volume):
            return True
        key = self.options.encryption_key
        return bool(key and volume.get("Encrypted") and volume.get("KmsKeyId") != key)

    def _check_encryption(self) -> None:
        key = self.options.encryption_key
        for volume in self.facts.volumes:
            if not self._needs_copy(volume) or not volume.get("Encrypted") or key:
                continue
            if self._needs_reencryption(volume):
                raise CloudirError(
                    f"volume {volume['VolumeId']} is encrypted with the AWS-managed key {volume['KmsKeyId']} "
                    "(aws/ebs), which cannot be shared",
                    hint="pass --kms-key with a customer-managed key ARN to re-encrypt the copy",
                )
            raise CloudirError(
                f"volume {volume['VolumeId']} is encrypted and its copy goes to {self.dest_region}",
                hint=f"pass --kms-key with a customer-managed key in {self.dest_region}",
            )
        needs_key = any(self._needs_copy(v) for v in self.facts.volumes)
        if key and needs_key and key_manager(self.clients, self.dest_region, key) == AWS_MANAGED:
            raise CloudirError(
                f"--kms-key {key} is an AWS-managed key and cannot be shared",
                hint="create a customer-managed key and pass its ARN",
            )

    # -- preserve -----------------------------------------------------------------------------------------
    def _preserve_steps(self) -> list[Step]:
        iid, region = self.target.id, self.region
        devices = [m["DeviceName"] for m in self.facts.instance.get("BlockDeviceMappings", []) if "Ebs" in m]
        mappings = [{"DeviceName": d, "Ebs": {"DeleteOnTermination": False}} for d in devices]
        ec2 = self.clients.client("ec2", region)

        def modify(attribute: str, before_attr: str, **change: Any) -> Any:
            def run(ctx: StepContext) -> dict[str, Any]:
                with aws_errors(f"preserve {iid} ({attribute})"):
                    before = ec2.describe_instance_attribute(InstanceId=iid, Attribute=before_attr)
                    ec2.modify_instance_attribute(InstanceId=iid, **change)
                return {"before": clean(before), "set": change}

            return run

        def describe(attr: str) -> PlannedCall:
            return planned("ec2", "DescribeInstanceAttribute", region, InstanceId=iid, Attribute=attr)

        steps = [
            Step(
                "preserve.termination-protection",
                "Enable termination protection",
                StepKind.PRESERVE,
                [
                    describe("disableApiTermination"),
                    planned("ec2", "ModifyInstanceAttribute", region, InstanceId=iid, DisableApiTermination=True),
                ],
                modify("termination protection", "disableApiTermination", DisableApiTermination={"Value": True}),
            ),
            Step(
                "preserve.delete-on-termination",
                "Keep every volume when the instance terminates (DeleteOnTermination=false)",
                StepKind.PRESERVE,
                [
                    describe("blockDeviceMapping"),
                    planned("ec2", "ModifyInstanceAttribute", region, InstanceId=iid, BlockDeviceMappings=devices),
                ],
                modify("delete on termination", "blockDeviceMapping", BlockDeviceMappings=mappings),
            ),
            Step(
                "preserve.shutdown-behavior",
                "Make an OS shutdown stop the instance instead of terminating it",
                StepKind.PRESERVE,
                [
                    describe("instanceInitiatedShutdownBehavior"),
                    planned(
                        "ec2",
                        "ModifyInstanceAttribute",
                        region,
                        InstanceId=iid,
                        InstanceInitiatedShutdownBehavior="stop",
                    ),
                ],
                modify(
                    "shutdown behaviour",
                    "instanceInitiatedShutdownBehavior",
                    InstanceInitiatedShutdownBehavior={"Value": "stop"},
                ),
            ),
        ]
        if not devices:  # instance-store only: nothing to keep
            steps = [step for step in steps if step.id != "preserve.delete-on-termination"]
        if self.facts.asg_name:
            steps.append(self._asg_step(self.facts.asg_name))
        return steps

    def _asg_step(self, group: str) -> Step:
        iid, mode = self.target.id, self.options.group_mode
        asg = self.clients.client("autoscaling", self.region)
        call: dict[str, tuple[str, dict[str, Any]]] = {
            "protect": ("SetInstanceProtection", {"ProtectedFromScaleIn": True}),
            "standby": ("EnterStandby", {"ShouldDecrementDesiredCapacity": False}),
            "detach": ("DetachInstances", {"ShouldDecrementDesiredCapacity": False}),
        }
        operation, params = call[mode]
        titles = {
            "protect": f"Protect from scale-in in Auto Scaling group {group}",
            "standby": f"Move to Standby in Auto Scaling group {group}",
            "detach": f"Detach from Auto Scaling group {group}",
        }

        def run(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"protect {iid} from Auto Scaling ({mode})"):
                members = asg.describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"]
                if not members:
                    return {"mode": mode, "skipped": "no longer in an Auto Scaling group"}
                state = members[0]["LifecycleState"]
                if mode == "standby" and state.startswith("Standby"):
                    return {"mode": mode, "skipped": f"already {state}"}
                kwargs = {"InstanceIds": [iid], "AutoScalingGroupName": group, **params}
                getattr(asg, _snake(operation))(**kwargs)
            return {"mode": mode, "group": group, "lifecycle_before": state}

        return Step(
            "preserve.autoscaling",
            titles[mode],
            StepKind.PRESERVE,
            [
                planned("autoscaling", "DescribeAutoScalingInstances", self.region, InstanceIds=[iid]),
                planned("autoscaling", operation, self.region, InstanceIds=[iid], AutoScalingGroupName=group, **params),
            ],
            run,
        )

    # -- capture ------------------------------------------------------------------------------------------
    def _capture_steps(self) -> list[Step]:
        iid, region, base = self.target.id, self.region, self.base
        ec2 = self.clients.client("ec2", region)
        volume_ids = [v["VolumeId"] for v in self.facts.volumes]
        eni_ids = [e["NetworkInterfaceId"] for e in self.facts.instance.get("NetworkInterfaces", [])]
        interfaces = self.facts.instance.get("NetworkInterfaces", [])
        groups = [*self.facts.instance.get("SecurityGroups", []), *[g for e in interfaces for g in e.get("Groups", [])]]
        group_ids = sorted({g["GroupId"] for g in groups})

        def instance(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"capture instance {iid}"):
                described = ec2.describe_instances(InstanceIds=[iid])
                user_data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
            ctx.case.write_json(f"{base}/instance.json", clean(described))
            tags = described["Reservations"][0]["Instances"][0].get("Tags", [])
            ctx.case.write_json(f"{base}/tags.json", {t["Key"]: t["Value"] for t in tags})
            ctx.case.write_json(f"{base}/user-data.json", clean(user_data))
            encoded = user_data.get("UserData", {}).get("Value")
            if encoded:
                ctx.case.write_bytes(f"{base}/user-data.bin", base64.b64decode(encoded))
            return {"user_data": bool(encoded), "tags": len(tags)}

        def volumes(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"capture volumes of {iid}"):
                described = ec2.describe_volumes(VolumeIds=volume_ids) if volume_ids else {"Volumes": []}
            ctx.case.write_json(f"{base}/volumes.json", clean(described))
            return {"volumes": [v["VolumeId"] for v in described["Volumes"]]}

        def network(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"capture network interfaces and security groups of {iid}"):
                enis = ec2.describe_network_interfaces(NetworkInterfaceIds=eni_ids) if eni_ids else {}
                # a group the instance is in exists: EC2 may not list one made a moment ago yet
                groups = until_visible(lambda: ec2.describe_security_groups(GroupIds=group_ids)) if group_ids else {}
            ctx.case.write_json(f"{base}/network-interfaces.json", clean(enis))
            ctx.case.write_json(f"{base}/security-groups.json", clean(groups))
            return {"network_interfaces": eni_ids, "security_groups": group_ids}

        def console(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"capture the console output of {iid}"):
                output = ec2.get_console_output(InstanceId=iid)
            ctx.case.write_json(f"{base}/console-output.json", clean(output))
            if output.get("Output"):
                ctx.case.write_bytes(f"{base}/console-output.txt", _decode_console(output["Output"]))
            return {"console_output": bool(output.get("Output"))}

        steps = [
            Step(
                "capture.instance",
                "Capture instance description, tags and user data",
                StepKind.READ,
                [
                    planned("ec2", "DescribeInstances", region, InstanceIds=[iid]),
                    planned("ec2", "DescribeInstanceAttribute", region, InstanceId=iid, Attribute="userData"),
                ],
                instance,
            ),
            Step(
                "capture.volumes",
                "Capture volume descriptions",
                StepKind.READ,
                [planned("ec2", "DescribeVolumes", region, VolumeIds=volume_ids)],
                volumes,
            ),
            Step(
                "capture.network",
                "Capture network interfaces and security groups",
                StepKind.READ,
                [
                    planned("ec2", "DescribeNetworkInterfaces", region, NetworkInterfaceIds=eni_ids),
                    planned("ec2", "DescribeSecurityGroups", region, GroupIds=group_ids),
                ],
                network,
            ),
            Step(
                "capture.console-output",
                "Capture the console output",
                StepKind.READ,
                [planned("ec2", "GetConsoleOutput", region, InstanceId=iid)],
                console,
            ),
        ]
        if self.facts.profile_arn:
            steps.append(self._iam_capture_step(self.facts.profile_arn))
        if self.facts.asg_name:
            steps.append(self._asg_capture_step(self.facts.asg_name))
        return steps

    def _iam_capture_step(self, profile_arn: str) -> Step:
        iid, region, base = self.target.id, self.region, self.base
        profile_name = profile_arn.rsplit("/", 1)[-1]
        iam = self.clients.client("iam")
        ec2 = self.clients.client("ec2", region)

        def run(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"capture the instance profile {profile_name}"):
                associations = ec2.describe_iam_instance_profile_associations(
                    Filters=[{"Name": "instance-id", "Values": [iid]}]
                )["IamInstanceProfileAssociations"]
                profile = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
                roles = [_role_policies(iam, role["RoleName"]) | {"Role": role} for role in profile.get("Roles", [])]
            ctx.case.write_json(
                f"{base}/instance-profile.json",
                {"Associations": associations, "InstanceProfile": profile, "Roles": roles},
            )
            return {"profile": profile_name, "roles": [r["Role"]["RoleName"] for r in roles]}

        return Step(
            "capture.instance-profile",
            f"Capture instance profile {profile_name} and its role policies",
            StepKind.READ,
            [
                planned("ec2", "DescribeIamInstanceProfileAssociations", region, InstanceId=iid),
                planned("iam", "GetInstanceProfile", None, InstanceProfileName=profile_name),
                planned("iam", "ListRolePolicies", None, RoleName="<each role>"),
                planned("iam", "GetRolePolicy", None, RoleName="<each role>", PolicyName="<each inline policy>"),
                planned("iam", "ListAttachedRolePolicies", None, RoleName="<each role>"),
                planned("iam", "GetPolicy", None, PolicyArn="<each attached policy>"),
                planned("iam", "GetPolicyVersion", None, PolicyArn="<each attached policy>", VersionId="<default>"),
            ],
            run,
        )

    def _asg_capture_step(self, group: str) -> Step:
        iid, region, base = self.target.id, self.region, self.base
        asg = self.clients.client("autoscaling", region)

        def run(ctx: StepContext) -> dict[str, Any]:
            with aws_errors(f"capture Auto Scaling group {group}"):
                members = asg.describe_auto_scaling_instances(InstanceIds=[iid])
                groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
            ctx.case.write_json(f"{base}/autoscaling.json", {"Instances": clean(members), "Groups": clean(groups)})
            return {"group": group}

        return Step(
            "capture.autoscaling",
            f"Capture Auto Scaling group {group}",
            StepKind.READ,
            [
                planned("autoscaling", "DescribeAutoScalingInstances", region, InstanceIds=[iid]),
                planned("autoscaling", "DescribeAutoScalingGroups", region, AutoScalingGroupNames=[group]),
            ],
            run,
        )

    # -- snapshots, copies, sharing, images ---------------------------------------------------------------
    def _snapshot_steps(self) -> list[Step]:
        iid, region = self.target.id, self.region
        volume_ids = [v["VolumeId"] for v in self.facts.volumes]
        ec2 = self.clients.client("ec2", region, connections=CALLS_AT_ONCE)
        case_tags = {TAG_CASE: self.case_label, TAG_INSTANCE: iid}

        def create(ctx: StepContext) -> dict[str, Any]:
            tags = {TAG_CASE: ctx.case.case_id, TAG_INSTANCE: iid}
            with aws_errors(f"snapshot the volumes of {iid}"):
                existing = {
                    snap["VolumeId"]: snap
                    for snap in ec2.describe_snapshots(OwnerIds=["self"], Filters=tag_filters(tags))["Snapshots"]
                    if snap["State"] != "error"
                }
                attached = _attached_volume_ids(ec2, iid)
                missing = [vol for vol in attached if vol not in existing]
                created = self._create_snapshots(
                    missing,
                    whole_instance=len(missing) == len(attached),
                    tags={**tags, TAG_REQUEST: uuid.uuid4().hex},
                    description=f"cloudir case {ctx.case.case_id}: {iid}",
                )
                snapshots = {**{v: s["SnapshotId"] for v, s in existing.items()}}
                snapshots |= {snap["VolumeId"]: snap["SnapshotId"] for snap in created}
                # each snapshot names its own volume (one value each, so one CreateTags each), all sent at once,
                # each while EC2 may not know its new snapshot yet (eventual consistency)
                at_once(
                    lambda item: until_visible(
                        lambda: ec2.create_tags(Resources=[item[1]], Tags=tag_list({TAG_VOLUME: item[0]}))
                    ),
                    snapshots.items(),
                )
            return {
                "snapshots": snapshots,
                "created": [s["SnapshotId"] for s in created],
                "reused": sorted(s["SnapshotId"] for s in existing.values()),
            }

        def wait(ctx: StepContext) -> dict[str, Any]:
            snapshots: dict[str, str] = ctx.results["snapshot.create"]["snapshots"]
            done = wait_for_snapshots(
                ec2,
                sorted(snapshots.values()),
                console=ctx.console,
                poll_seconds=self.poll_seconds,
                timeout_seconds=self.timeout_seconds,
                label="snapshot",
            )
            return {"completed": sorted(done)}

        steps = [
            Step(
                "snapshot.create",
                f"Snapshot all {'' if self.target.symbolic else f'{len(volume_ids)} '}attached volumes at once "
                "(crash-consistent)",
                StepKind.ACQUIRE,
                [
                    planned("ec2", "DescribeSnapshots", region, OwnerIds=["self"], Filters=case_tags),
                    planned("ec2", "DescribeInstances", region, InstanceIds=[iid]),
                    planned(
                        "ec2",
                        "CreateSnapshots",
                        region,
                        InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": False},
                        Tags={**case_tags, TAG_REQUEST: "<request id>"},
                    ),
                    planned("ec2", "DescribeSnapshots", region, Filters={TAG_REQUEST: "<request id>"}),
                    *[
                        planned("ec2", "CreateTags", region, Resources=[_snapshot_of(v)], Tags={TAG_VOLUME: v})
                        for v in volume_ids
                    ],
                ],
                create,
            ),
        ]
        wait_step = Step(
            "snapshot.wait",
            "Wait for the snapshots to complete",
            StepKind.ACQUIRE,
            [planned("ec2", "DescribeSnapshots", region, SnapshotIds="<new snapshots>")],
            wait,
        )
        copies: list[Step] = []
        if any(self._needs_copy(v) for v in self.facts.volumes):
            copies.append(self._copy_step())
        if self.options.forensic_account:
            copies.append(self._share_step(self.options.forensic_account))
            if self.forensic is not None:
                copies += [self._own_copy_step(self.forensic, self.options.forensic_account), self._unshare_step()]
        if not self.options.raw_image:
            return [*steps, wait_step, *copies]
        if not copies:
            return [*steps, self._raw_image_step()]
        # each raw image starts as soon as its own snapshot completes, while the copies and shares go on in their lane
        image_lane = [replace(self._raw_image_step(), lane="image")]
        return [*steps, *image_lane, *(replace(step, lane="copies") for step in [wait_step, *copies])]

    def _create_snapshots(
        self, volumes: list[str], *, whole_instance: bool, tags: dict[str, str], description: str
    ) -> list[dict[str, Any]]:
        """One snapshot of each of ``volumes``, made once although sends are throttled or their answers lost.

        CreateSnapshot(s) take no client token, so every send carries the request tag and the SDK never resends it;
        after a failed send the tool looks up the snapshots with that tag (after a send that may have run, again
        while EC2 may not list them yet), and sends again only for volumes still without one (CreateSnapshots for
        the whole instance while it has none, else CreateSnapshot per volume).
        """
        ec2 = self.clients.client("ec2", self.region)
        ec2_once = self.clients.client("ec2", self.region, resend=False)
        spec = [{"ResourceType": "snapshot", "Tags": tag_list(tags)}]
        made: dict[str, dict[str, Any]] = {}
        delays = iter(create_delays(self.poll_seconds / 10))
        while True:
            try:
                if whole_instance and not made:
                    made = {
                        snap["VolumeId"]: snap
                        for snap in ec2_once.create_snapshots(
                            InstanceSpecification={"InstanceId": self.target.id, "ExcludeBootVolume": False},
                            Description=description,
                            TagSpecifications=spec,
                            CopyTagsFromSource="volume",
                        )["Snapshots"]
                    }
                for volume in [vol for vol in volumes if vol not in made]:
                    made[volume] = ec2_once.create_snapshot(
                        VolumeId=volume, Description=description, TagSpecifications=spec
                    )
                return [made[vol] for vol in volumes if vol in made]
            except (ClientError, BotoCoreError) as exc:
                delay = next(delays, None)
                if delay is None or not is_transient(exc):
                    raise
                ran = may_have_run(exc)
            time.sleep(delay)
            made |= self._made_by_request(ec2, tags[TAG_REQUEST], volumes, made, ran)

    @staticmethod
    def _made_by_request(
        ec2: Any, request: str, volumes: list[str], made: dict[str, dict[str, Any]], ran: bool
    ) -> dict[str, dict[str, Any]]:
        """The snapshots tagged with ``request``, by volume; after a send that may have run, looked up again while
        volumes are still missing, for as long as EC2 may take to list a new snapshot (a resend would duplicate)."""
        filters = tag_filters({TAG_REQUEST: request})
        waits = iter(CONSISTENCY_DELAYS if ran else ())
        while True:
            found = ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]
            by_volume = {snap["VolumeId"]: snap for snap in found if snap["State"] != "error"}
            wait = next(waits, None)
            if wait is None or all(v in made or v in by_volume for v in volumes):
                return by_volume
            time.sleep(wait)

    def _copy_step(self) -> Step:
        region, dest = self.region, self.dest_region
        key = self.options.encryption_key
        by_volume = {v["VolumeId"]: v for v in self.facts.volumes}
        to_copy = [vid for vid, v in by_volume.items() if self._needs_copy(v)]
        dest_ec2 = self.clients.client("ec2", dest, connections=CALLS_AT_ONCE)
        source_ec2 = self.clients.client("ec2", region)

        def run(ctx: StepContext) -> dict[str, Any]:
            snapshots: dict[str, str] = ctx.results["snapshot.create"]["snapshots"]
            wanted = {snapshot_id: vid for vid, snapshot_id in sorted(snapshots.items()) if vid in to_copy}
            with aws_errors("look for earlier copies of the snapshots"):  # one call per region for every volume
                case_copies = dest_ec2.describe_snapshots(
                    OwnerIds=["self"], Filters=tag_filters({TAG_CASE: ctx.case.case_id})
                )["Snapshots"]
                sources = source_ec2.describe_snapshots(SnapshotIds=sorted(wanted))["Snapshots"] if wanted else []
            earlier = _copies_by_source(case_copies)
            encrypted = {snap["SnapshotId"]: bool(snap.get("Encrypted")) for snap in sources}
            source_keys = {snap["SnapshotId"]: snap.get("KmsKeyId") for snap in sources}

            def copy(snapshot_id: str) -> str:
                if snapshot_id in earlier:
                    return earlier[snapshot_id]
                volume_id = wanted[snapshot_id]
                tags = {TAG_CASE: ctx.case.case_id, TAG_SNAPSHOT: snapshot_id, TAG_VOLUME: volume_id}
                params: dict[str, Any] = {
                    "SourceSnapshotId": snapshot_id,
                    "SourceRegion": region,
                    "Description": f"cloudir case {ctx.case.case_id}: copy of {snapshot_id} ({volume_id})",
                    "TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
                }
                if encrypted[snapshot_id]:
                    params |= {"Encrypted": True, "KmsKeyId": key}
                try:
                    # a snapshot completed a moment ago may be unknown to CopySnapshot for a while
                    return str(until_visible(lambda: dest_ec2.copy_snapshot(**params))["SnapshotId"])
                except ClientError as exc:
                    raise _copy_error(exc, snapshot_id, source_keys[snapshot_id], key) from None

            # every volume's copy is sent at once (within EC2's 20 concurrent copies to one region)
            copies = dict(zip(wanted, at_once(copy, wanted), strict=True))
            done = wait_for_snapshots(
                dest_ec2,
                sorted(copies.values()),
                console=ctx.console,
                poll_seconds=self.poll_seconds,
                timeout_seconds=self.timeout_seconds,
                label="copy",
            )
            return {
                "region": dest,
                "copies": copies,
                "kms_keys": sorted({s.get("KmsKeyId", "") for s in done.values()} - {""}),
            }

        reencrypt = [v for v in to_copy if by_volume[v].get("Encrypted")]
        calls = [
            planned("ec2", "DescribeSnapshots", dest, Filters={TAG_CASE: self.case_label}),
            planned("ec2", "DescribeSnapshots", region, SnapshotIds="<snapshots to copy>"),
        ]
        for vid in to_copy:
            params: dict[str, Any] = {"SourceSnapshotId": _snapshot_of(vid), "SourceRegion": region}
            if vid in reencrypt:
                params |= {"Encrypted": True, "KmsKeyId": key}
            calls.append(planned("ec2", "CopySnapshot", dest, **params))
        calls.append(planned("ec2", "DescribeSnapshots", dest, SnapshotIds="<copies>"))
        what = "Re-encrypt and copy" if reencrypt else "Copy"
        count = "the" if self.target.symbolic else str(len(to_copy))
        return Step("copy.snapshots", f"{what} {count} snapshot(s) to {dest}", StepKind.ACQUIRE, calls, run)

    def _share_step(self, account: str) -> Step:
        region = self.dest_region
        ec2 = self.clients.client("ec2", region, connections=CALLS_AT_ONCE)
        kms = self.clients.client("kms", region)

        def run(ctx: StepContext) -> dict[str, Any]:
            snapshots: dict[str, str] = ctx.results["snapshot.create"]["snapshots"]
            copied = ctx.results.get("copy.snapshots", {}).get("copies", {})
            final = sorted(copied.get(s, s) for s in snapshots.values())
            with aws_errors(f"share snapshots with account {account}"):
                described = ec2.describe_snapshots(SnapshotIds=final)["Snapshots"]
            keys = sorted({s["KmsKeyId"] for s in described if s.get("Encrypted") and s.get("KmsKeyId")})
            grants = {}
            for key in keys:
                try:
                    grants[key] = kms.create_grant(
                        KeyId=key,
                        GranteePrincipal=f"arn:aws:iam::{account}:root",
                        Operations=[
                            "Decrypt",
                            "DescribeKey",
                            "CreateGrant",
                            "ReEncryptFrom",
                            "GenerateDataKeyWithoutPlaintext",
                        ],
                        Name=f"cloudir-{ctx.case.case_id}",
                    )["GrantId"]
                except ClientError as exc:
                    error = exc.response.get("Error", {})
                    raise CloudAccessError(
                        f"KMS CreateGrant on {key} for account {account} failed: {error.get('Code')}: "
                        f"{error.get('Message', '')}",
                        hint=f"the caller needs kms:CreateGrant on {key}, or add {account} to its key policy",
                    ) from None
            with aws_errors(f"share snapshots with account {account}"):  # every snapshot's share sent at once
                at_once(
                    lambda snapshot_id: until_visible(  # a snapshot or copy completed a moment ago: see until_visible
                        lambda: ec2.modify_snapshot_attribute(
                            SnapshotId=snapshot_id,
                            Attribute="createVolumePermission",
                            OperationType="add",
                            UserIds=[account],
                        )
                    ),
                    final,
                )
            return {"account": account, "region": region, "shared": final, "kms_grants": grants}

        return Step(
            "share.snapshots",
            f"Share the snapshots with forensic account {account}",
            StepKind.ACQUIRE,
            [
                planned("ec2", "DescribeSnapshots", region, SnapshotIds="<final snapshots>"),
                planned("kms", "CreateGrant", region, KeyId="<each snapshot key>", GranteePrincipal=account),
                planned(
                    "ec2",
                    "ModifySnapshotAttribute",
                    region,
                    SnapshotId="<each final snapshot>",
                    Attribute="createVolumePermission",
                    OperationType="add",
                    UserIds=[account],
                ),
            ],
            run,
        )

    def _ownership_notes(self) -> list[str]:
        """Where the snapshots end and who can delete them."""
        victim, forensic = self.target.account, self.options.forensic_account
        if not forensic:
            return [f"snapshots stay in account {victim}: anyone there with ec2:DeleteSnapshot can delete them"]
        if self.forensic is None:
            return [
                (
                    f"snapshots are shared with {forensic} but owned by {victim}, which can still delete them: "
                    "pass --forensic-role-arn so that the forensic account copies them into itself"
                )
            ]
        return [
            (
                f"snapshot copies end in account {forensic} ({self.dest_region}) under its key {self.forensic_key}, "
                f"owned by {forensic}: account {victim} cannot delete them; the share and key grant are then removed"
            )
        ]

    def _own_copy_step(self, forensic: AwsClients, account: str) -> Step:
        """The forensic account copies each shared snapshot into itself, under its own key."""
        region, key = self.dest_region, self.forensic_key
        ec2 = forensic.client("ec2", region, connections=CALLS_AT_ONCE)

        def run(ctx: StepContext) -> dict[str, Any]:
            shared: list[str] = ctx.results["share.snapshots"]["shared"]
            with aws_errors(f"look for earlier forensic copies in account {account}"):  # one call for every volume
                found = ec2.describe_snapshots(OwnerIds=["self"], Filters=tag_filters({TAG_CASE: ctx.case.case_id}))
            earlier = _copies_by_source(found["Snapshots"])

            def copy(snapshot_id: str) -> str:
                if snapshot_id in earlier:
                    return earlier[snapshot_id]
                tags = {TAG_CASE: ctx.case.case_id, TAG_SNAPSHOT: snapshot_id}
                with aws_errors(f"copy shared snapshot {snapshot_id} into forensic account {account}"):
                    # a share made a moment ago may not reach this account yet: InvalidSnapshot.NotFound for a while
                    return str(
                        until_visible(
                            lambda: ec2.copy_snapshot(
                                SourceSnapshotId=snapshot_id,
                                SourceRegion=region,
                                Encrypted=True,
                                KmsKeyId=key,
                                Description=f"cloudir case {ctx.case.case_id}: forensic copy of {snapshot_id}",
                                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
                            )
                        )["SnapshotId"]
                    )

            owned = dict(zip(shared, at_once(copy, shared), strict=True))  # every copy sent at once
            wait_for_snapshots(
                ec2,
                sorted(owned.values()),
                console=ctx.console,
                poll_seconds=self.poll_seconds,
                timeout_seconds=self.timeout_seconds,
                label="forensic copy",
            )
            return {"account": account, "region": region, "kms_key": key, "owned": owned}

        return Step(
            "own.copy",
            f"Forensic account {account} copies each shared snapshot into itself under its key {key}",
            StepKind.ACQUIRE,
            [
                planned("ec2", "DescribeSnapshots", region, OwnerIds=["self"], Filters={TAG_CASE: self.case_label}),
                planned(
                    "ec2",
                    "CopySnapshot",
                    region,
                    SourceSnapshotId="<each shared snapshot>",
                    Encrypted=True,
                    KmsKeyId=key,
                    account=account,
                ),
                planned("ec2", "DescribeSnapshots", region, SnapshotIds="<forensic copies>", account=account),
            ],
            run,
        )

    def _unshare_step(self) -> Step:
        """Once the forensic account owns its copies: remove the victim-side share and the temporary key grant."""
        region = self.dest_region
        ec2, kms = self.clients.client("ec2", region, connections=CALLS_AT_ONCE), self.clients.client("kms", region)

        def run(ctx: StepContext) -> dict[str, Any]:
            share = ctx.results["share.snapshots"]
            with aws_errors(f"remove the share with {share['account']}"):  # every snapshot's share removed at once
                at_once(
                    lambda snapshot_id: ec2.modify_snapshot_attribute(
                        SnapshotId=snapshot_id,
                        Attribute="createVolumePermission",
                        OperationType="remove",
                        UserIds=[share["account"]],
                    ),
                    share["shared"],
                )
                for key, grant in sorted(share["kms_grants"].items()):
                    kms.revoke_grant(KeyId=key, GrantId=grant)
            return {"unshared": share["shared"], "revoked_grants": share["kms_grants"]}

        return Step(
            "own.unshare",
            "Remove the victim-side share and the temporary key grant (the forensic copies no longer need them)",
            StepKind.ACQUIRE,
            [
                planned(
                    "ec2",
                    "ModifySnapshotAttribute",
                    region,
                    SnapshotId="<each shared snapshot>",
                    Attribute="createVolumePermission",
                    OperationType="remove",
                    UserIds=[self.options.forensic_account],
                ),
                planned("kms", "RevokeGrant", region, KeyId="<each snapshot key>", GrantId="<grant made to share>"),
            ],
            run,
        )

    def _raw_image_step(self) -> Step:
        region = self.region
        ec2 = self.clients.client("ec2", region)

        def run(ctx: StepContext) -> dict[str, Any]:
            snapshots: dict[str, str] = ctx.results["snapshot.create"]["snapshots"]
            paths = {snapshot_id: f"images/aws/{snapshot_id}.raw" for snapshot_id in sorted(snapshots.values())}
            with RawImager(self.clients, region, ctx.case, ctx.console, volumes=len(paths)) as imager:
                for snapshot in completed_snapshots(
                    ec2, sorted(paths), poll_seconds=self.poll_seconds, timeout_seconds=self.timeout_seconds
                ):
                    imager.start(snapshot["SnapshotId"], paths[snapshot["SnapshotId"]])
                images = imager.results()
            return {"completed": sorted(paths), "images": images}

        return Step(
            "image.raw",
            "Read each snapshot through the EBS direct APIs into a raw image as soon as it completes, every volume "
            "at once (block checksums verified)",
            StepKind.ACQUIRE,
            [
                planned("ec2", "DescribeSnapshots", region, SnapshotIds="<new snapshots>"),
                planned("ebs", "ListSnapshotBlocks", region, SnapshotId="<each completed snapshot>"),
                planned("ebs", "GetSnapshotBlock", region, SnapshotId="<each snapshot>", BlockIndex="<each block>"),
            ],
            run,
        )


def _copy_error(exc: ClientError, snapshot_id: str, source_key: str | None, target_key: str | None) -> CloudirError:
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if "kms" in code.lower() or "kms" in message.lower() or code in {"InvalidKeyId", "KeyUnavailable"}:
        return CloudAccessError(
            f"KMS error copying {snapshot_id} (CopySnapshot): {code}: {message}",
            hint=KMS_COPY_HINT.format(source=source_key or "-", target=target_key or "-"),
        )
    return describe_error(exc, f"copy snapshot {snapshot_id}")


def _copies_by_source(snapshots: list[dict[str, Any]]) -> dict[str, str]:
    """Earlier copies of a case (not failed), by the source snapshot their tag names."""
    return {
        tag["Value"]: snap["SnapshotId"]
        for snap in snapshots
        if snap["State"] != "error"
        for tag in snap.get("Tags", [])
        if tag["Key"] == TAG_SNAPSHOT
    }


def _snapshot_of(volume_id: str) -> str:
    """How a plan names the snapshot of a volume (``<each snapshot of i-…>`` for a placeholder volume)."""
    if volume_id.startswith("<each volume of "):
        return volume_id.replace("<each volume of ", "<each snapshot of ", 1)
    return f"<snapshot of {volume_id}>"


def _attached_volume_ids(ec2: Any, instance_id: str) -> list[str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]


def _role_policies(iam: Any, role: str) -> dict[str, Any]:
    inline = {
        name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    }
    attached = []
    for policy in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        meta = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]
        version = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=meta["DefaultVersionId"])
        attached.append({"Policy": meta, "Document": version["PolicyVersion"]["Document"]})
    return {"InlinePolicies": inline, "AttachedPolicies": attached}


def _decode_console(output: str) -> bytes:
    try:
        return base64.b64decode(output, validate=True)
    except ValueError:
        return output.encode()


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
