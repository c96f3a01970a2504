"""Raw images through the EBS direct APIs, dry runs, injected failures and --resume."""

import hashlib
import threading

import pytest
from rich.console import Console

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.errors import PreconditionError
from cloudir.plan import require_completed
from cloudir.provider import AcquireOptions, ContainOptions
from moto_fixtures.aws import BLOCK, FORENSIC_ACCOUNT, AwsSandbox, launch_instance
from moto_fixtures.sandbox import PlantedIncident
from providers.aws import acquire as acquire_module
from providers.aws.raw_image import READ_CONCURRENCY, BlockChecksumError, write_raw_image, write_raw_images
from tests.aws.conftest import Acquire

GIB = 1024**3


def test_raw_image_is_sparse_and_hashes_like_the_disk(aws_sandbox: AwsSandbox, tmp_path):
    blocks = {0: b"A" * BLOCK, 5: b"B" * BLOCK}
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    case = Case.create(tmp_path / "c")
    ebs = aws_sandbox.provider().clients.client("ebs")
    result = write_raw_image(ebs, snapshot_id, case, f"images/aws/{snapshot_id}.raw", Console(quiet=True))
    image = case.root / result["path"]
    assert image.stat().st_size == GIB
    assert result["size"] == GIB
    assert image.stat().st_blocks * 512 < 1024 * 1024  # holes were not written
    with image.open("rb") as handle:
        assert handle.read(6 * BLOCK) == blocks[0] + bytes(4 * BLOCK) + blocks[5]
    # verify re-hashes the file as written (holes read back as zeros): the streamed SHA-256 must match it
    assert verify_case(case.root).ok


def test_checksum_mismatch_discards_the_image(aws_sandbox: AwsSandbox, tmp_path):
    snapshot_id = aws_sandbox.direct_snapshot({0: b"A" * BLOCK, 3: b"C" * BLOCK})
    aws_sandbox.corrupt_block(snapshot_id, 3)
    case = Case.create(tmp_path / "c")
    ebs = aws_sandbox.provider().clients.client("ebs")
    with pytest.raises(BlockChecksumError, match=f"block 3 of {snapshot_id}: checksum mismatch"):
        write_raw_image(ebs, snapshot_id, case, "images/aws/x.raw", Console(quiet=True))
    assert not list((case.root / "images").rglob("*.raw*"))


def test_acquire_with_raw_image_reads_the_new_snapshot(aws_sandbox: AwsSandbox, acquire: Acquire):
    instance_id = launch_instance(aws_sandbox)
    volume = aws_sandbox.client("ec2").describe_volumes()["Volumes"][-1]["VolumeId"]
    aws_sandbox.seed_disk(volume, {2048: b"stolen-customer-data".ljust(BLOCK, b"\0")})
    case, result = acquire(instance_id, raw_image=True)
    ((snapshot_id, image),) = result.results["image.raw"]["images"].items()
    assert image["path"] == f"images/aws/{snapshot_id}.raw"
    assert image["blocks"] == 1
    with (case.root / image["path"]).open("rb") as handle:
        handle.seek(2048 * BLOCK)
        assert handle.read(BLOCK).startswith(b"stolen-customer-data")
    assert (case.root / image["path"]).stat().st_size == GIB


def test_every_read_in_flight_has_a_connection_of_the_ebs_pool(
    aws_sandbox: AwsSandbox, multi_volume_instance: str, acquire: Acquire, monkeypatch: pytest.MonkeyPatch
):
    """All volumes are imaged at once, READ_CONCURRENCY reads each: a smaller pool would drop and reopen connections."""
    pools: list[int] = []

    def images(ebs: object, paths: dict[str, str], *args: object) -> dict[str, dict[str, object]]:
        pools.append(ebs.meta.config.max_pool_connections)  # type: ignore[attr-defined]
        return write_raw_images(ebs, paths, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(acquire_module, "write_raw_images", images)
    attached = [{"Name": "attachment.instance-id", "Values": [multi_volume_instance]}]
    for volume in aws_sandbox.client("ec2").describe_volumes(Filters=attached)["Volumes"]:
        aws_sandbox.seed_disk(volume["VolumeId"], {0: b"data".ljust(BLOCK, b"\0")})
    _, result = acquire(multi_volume_instance, raw_image=True)
    volumes = len(result.results["image.raw"]["images"])
    assert volumes == 4
    assert pools == [READ_CONCURRENCY * volumes]


def test_dry_run_changes_nothing(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident):
    provider = aws_sandbox.provider()
    provider.bind(None)
    before = aws_sandbox.state()
    target = provider.find_target(aws_incident.target)
    acquire_plan = provider.plan_acquire(
        target,
        AcquireOptions(forensic_account=FORENSIC_ACCOUNT, encryption_key=aws_incident.encryption_key, raw_image=True),
    )
    contain_plan = provider.plan_contain(target, ContainOptions(examiner_cidr="198.51.100.7/32"))
    assert aws_sandbox.state() == before
    operations = {c.operation for plan in (acquire_plan, contain_plan) for s in plan.steps for c in s.calls}
    assert {
        "CreateSnapshots",
        "CopySnapshot",
        "ModifySnapshotAttribute",
        "GetSnapshotBlock",
        "ModifyNetworkInterfaceAttribute",
        "PutRolePolicy",
    } <= operations


def test_failure_mid_acquisition_blocks_containment_and_resume_finishes_without_duplicates(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    iid = aws_incident.extra["instance_id"]
    with aws_sandbox.fail_next("CreateTags", "RequestLimitExceeded"):  # right after CreateSnapshots succeeded
        case, result = acquire(iid, raise_on_failure=False)
    assert result.failed is not None
    assert result.failed.step_id == "snapshot.create"
    assert [o.status for o in result.outcomes if o.step_id == "snapshot.wait"] == ["blocked"]
    assert len(aws_sandbox.snapshots_for_case(case.case_id)) == 2  # made before the failure
    actions = [(r["action"], r["outcome"]) for r in read_records(case.root / "custody.jsonl")]
    assert ("acquire.acquire", "failed") in actions
    assert actions[-1] == ("acquire.failed", "failed")
    with pytest.raises(PreconditionError):
        require_completed(case, "acquire", result.plan.target, force=False)

    _, resumed = acquire(iid)
    assert resumed.ok
    assert {o.status for o in resumed.outcomes if o.step_id.startswith("preserve.")} == {"resumed"}
    assert len(aws_sandbox.snapshots_for_case(case.case_id)) == 2
    assert sorted(resumed.results["snapshot.create"]["reused"]) == aws_sandbox.snapshots_for_case(case.case_id)
    require_completed(case, "acquire", resumed.plan.target, force=False)
    assert verify_case(case.root).ok


def test_raw_image_reads_blocks_concurrently_and_writes_them_in_order(aws_sandbox: AwsSandbox, tmp_path):
    blocks = {index: bytes([index % 251 + 1]) * BLOCK for index in range(0, 240, 3)}  # 80 blocks with holes
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    aws_sandbox.block_latency = 0.02  # each read takes a while, so reads overlap only if they are concurrent
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):
        ebs = provider.clients.client("ebs")
        result = write_raw_image(ebs, snapshot_id, case, "images/aws/c.raw", Console(quiet=True), concurrency=8)
    assert aws_sandbox.block_reads_peak == 8  # bounded: never more than the limit in flight, and that many
    assert result["blocks"] == len(blocks)
    expected = bytearray(GIB // 1024)  # the first MiB holds every block written above
    for index, data in blocks.items():
        expected[index * BLOCK : (index + 1) * BLOCK] = data
    with (case.root / result["path"]).open("rb") as handle:
        assert handle.read(len(expected)) == expected
    tail = hashlib.sha256(bytes(GIB - len(expected)))
    whole = hashlib.sha256(bytes(expected))
    whole.update(bytes(GIB - len(expected)))
    assert result["sha256"] == whole.hexdigest() != tail.hexdigest()
    calls = [c for r in read_records(case.root / "custody.jsonl") for c in r.get("api_calls", [])]
    assert sum(1 for c in calls if c.get("operation") == "GetSnapshotBlock") == len(blocks)  # every read recorded


def test_every_volume_is_imaged_at_once_each_hashed_in_order(aws_sandbox: AwsSandbox, tmp_path):
    snapshots = {
        aws_sandbox.direct_snapshot({index: bytes([volume + 1]) * BLOCK for index in range(4)}): volume
        for volume in range(3)
    }
    aws_sandbox.block_barrier = threading.Barrier(12, timeout=30)  # every read waits until all 12 are in flight
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target="three volumes"):
        paths = {snapshot_id: f"images/aws/{snapshot_id}.raw" for snapshot_id in snapshots}
        results = write_raw_images(provider.clients.client("ebs"), paths, case, Console(quiet=True), concurrency=4)
    assert aws_sandbox.block_reads_peak == 12  # 3 volumes x 4 reads in flight: no volume waited for another
    for snapshot_id, volume in snapshots.items():
        whole = hashlib.sha256(bytes([volume + 1]) * (4 * BLOCK))
        whole.update(bytes(GIB - 4 * BLOCK))
        assert results[snapshot_id]["sha256"] == whole.hexdigest()
        assert (case.root / results[snapshot_id]["path"]).stat().st_size == GIB
