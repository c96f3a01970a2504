"""Raw images through the EBS direct APIs, dry runs, injected failures and --resume."""

import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cloudir.case import Case
from cloudir.custody import each_call, read_records, verify_case
from cloudir.errors import PreconditionError
from cloudir.plan import require_completed
from cloudir.provider import AcquireOptions, ContainOptions
from moto_fixtures.aws import BLOCK, FORENSIC_ACCOUNT, FORENSIC_REGION, AwsSandbox, launch_instance
from moto_fixtures.sandbox import PlantedIncident
from providers.aws import AwsProvider
from providers.aws import acquire as acquire_module
from providers.aws import raw_image as raw_image_module
from providers.aws.raw_image import (
    READ_CONCURRENCY,
    READ_PROCESSES,
    READ_TOTAL,
    UNANSWERED,
    BlockChecksumError,
    RawImager,
    ReaderProcessError,
    write_raw_image,
    write_raw_images,
)
from tests.aws.conftest import Acquire

GIB = 1024**3


def test_raw_image_is_sparse_and_hashes_like_the_disk(aws_sandbox: AwsSandbox, tmp_path):
    blocks = {0: b"A" * BLOCK, 5: b"B" * BLOCK}
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    case = Case.create(tmp_path / "c")
    result = write_raw_image(
        aws_sandbox.provider().clients, snapshot_id, case, f"images/aws/{snapshot_id}.raw", Console(quiet=True)
    )
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
    with pytest.raises(BlockChecksumError, match=f"block 3 of {snapshot_id}: checksum mismatch"):
        write_raw_image(aws_sandbox.provider().clients, snapshot_id, case, "images/aws/x.raw", Console(quiet=True))
    assert not list((case.root / "images").rglob("*.raw*"))


def test_a_connection_broken_mid_block_fails_the_image_instead_of_waiting_forever(aws_sandbox: AwsSandbox, tmp_path):
    snapshot_id = aws_sandbox.direct_snapshot({0: b"A" * BLOCK, 3: b"C" * BLOCK})
    aws_sandbox.break_block_read(snapshot_id, 3)
    case = Case.create(tmp_path / "c")
    outcome: list[BaseException] = []

    def image() -> None:
        try:
            write_raw_image(aws_sandbox.provider().clients, snapshot_id, case, "images/aws/x.raw", Console(quiet=True))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=image, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the image waited forever for a block whose read broke off"
    assert [type(exc).__name__ for exc in outcome] == ["CloudAccessError"], outcome
    assert "IncompleteRead" in str(outcome[0])
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


def test_each_image_starts_when_its_own_snapshot_completes_with_a_connection_per_read(
    aws_sandbox: AwsSandbox, multi_volume_instance: str, acquire: Acquire, monkeypatch: pytest.MonkeyPatch
):
    """One snapshot stays pending until the other volumes were read: imaging only after all snapshots would time out.

    Every volume is imaged at once, READ_CONCURRENCY reads each: a smaller pool would drop and reopen connections.
    """
    pools: list[tuple[int, int]] = []

    class Imager(RawImager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append((self.readers.threads, self.readers.spec.connections))

    monkeypatch.setattr(acquire_module, "RawImager", Imager)
    attached = [{"Name": "attachment.instance-id", "Values": [multi_volume_instance]}]
    volumes = [v["VolumeId"] for v in aws_sandbox.client("ec2").describe_volumes(Filters=attached)["Volumes"]]
    for volume in volumes:
        aws_sandbox.seed_disk(volume, {1: volume.encode().ljust(BLOCK, b"\0")})
    aws_sandbox.hold_snapshots(volumes[0], until=lambda: len(aws_sandbox.blocks_read) >= len(volumes) - 1)
    session = aws_sandbox.session
    monkeypatch.setattr(
        aws_sandbox, "provider", lambda: AwsProvider(session=session, poll_seconds=0.01, timeout_seconds=60)
    )
    case, result = acquire(multi_volume_instance, raw_image=True)
    held = result.results["snapshot.create"]["snapshots"][volumes[0]]
    assert held not in aws_sandbox.blocks_read[: len(volumes) - 1]  # the others were read while it was pending
    assert aws_sandbox.blocks_read[-1] == held
    with (case.root / result.results["image.raw"]["images"][held]["path"]).open("rb") as handle:
        assert handle.read(2 * BLOCK)[BLOCK:].startswith(volumes[0].encode())
    ids = [step.id for step in result.plan.steps]
    assert ids[ids.index("snapshot.create") + 1] == "image.raw"
    assert "snapshot.wait" not in ids  # the image step waits for each snapshot itself
    assert len(volumes) == len(result.results["image.raw"]["images"]) == 4
    ((threads, connections),) = pools  # each reader process: a connection for each of its reads in flight
    assert threads == connections >= min(READ_TOTAL, READ_CONCURRENCY * len(volumes)) / READ_PROCESSES


def test_the_sandbox_refuses_a_wrong_block_token_and_a_missing_block(aws_sandbox: AwsSandbox):
    snapshot_id = aws_sandbox.direct_snapshot({0: b"A" * BLOCK})
    ebs = aws_sandbox.client("ebs")
    (block,) = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]
    with pytest.raises(ebs.exceptions.ValidationException, match="block token"):
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken=block["BlockToken"] + "x")
    with pytest.raises(ebs.exceptions.ResourceNotFoundException):
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=1, BlockToken=block["BlockToken"])
    data = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken=block["BlockToken"])
    assert data["BlockData"].read() == b"A" * BLOCK


def test_one_pool_bounds_the_reads_in_flight_across_every_volume(aws_sandbox: AwsSandbox, tmp_path):
    snapshots = [aws_sandbox.direct_snapshot({i: bytes([v + 1]) * BLOCK for i in range(4)}) for v in range(3)]
    aws_sandbox.barrier_block_reads(6)  # reads go through in sixes
    case = Case.create(tmp_path / "c")
    paths = {snapshot_id: f"images/aws/{snapshot_id}.raw" for snapshot_id in snapshots}
    results = write_raw_images(aws_sandbox.provider().clients, paths, case, Console(quiet=True), concurrency=4, total=6)
    assert aws_sandbox.block_reads_peak == 6  # 3 volumes x 4 queued, never more than the 6 of the pool in flight
    assert sorted(r["blocks"] for r in results.values()) == [4, 4, 4]


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
    aws_sandbox.barrier_block_reads(8)  # the reads go through in eights: concurrent, or the barrier times out
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):
        result = write_raw_image(
            provider.clients, snapshot_id, case, "images/aws/c.raw", Console(quiet=True), concurrency=8
        )
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
    calls = [c for r in read_records(case.root / "custody.jsonl") for e in r.get("api_calls", []) for c in each_call(e)]
    assert sum(1 for c in calls if c.get("operation") == "GetSnapshotBlock") == len(blocks)  # every read recorded
    assert aws_sandbox.block_reads_sent_here == 0  # read by reader processes: their CPU is not this process's


def test_consecutive_blocks_are_written_in_chunks_between_the_holes(
    aws_sandbox: AwsSandbox, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(raw_image_module, "WRITE_CHUNK", 3 * BLOCK)  # a run of 10 blocks is written in 4 chunks
    blocks = {index: bytes([index + 1]) * BLOCK for index in [*range(10), *range(20, 25), 31]}
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):
        result = write_raw_image(provider.clients, snapshot_id, case, "images/aws/w.raw", Console(quiet=True))
    expected = bytearray(32 * BLOCK)
    for index, data in blocks.items():
        expected[index * BLOCK : (index + 1) * BLOCK] = data
    whole = hashlib.sha256(bytes(expected))
    whole.update(bytes(GIB - len(expected)))
    assert result["sha256"] == whole.hexdigest()
    with (case.root / result["path"]).open("rb") as handle:
        assert handle.read(len(expected)) == expected


def test_every_volume_is_imaged_at_once_each_hashed_in_order(aws_sandbox: AwsSandbox, tmp_path):
    snapshots = {
        aws_sandbox.direct_snapshot({index: bytes([volume + 1]) * BLOCK for index in range(4)}): volume
        for volume in range(3)
    }
    aws_sandbox.barrier_block_reads(12)  # every read waits until all 12 are in flight
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target="three volumes"):
        paths = {snapshot_id: f"images/aws/{snapshot_id}.raw" for snapshot_id in snapshots}
        results = write_raw_images(provider.clients, paths, case, Console(quiet=True), concurrency=4)
    assert aws_sandbox.block_reads_peak == 12  # 3 volumes x 4 reads in flight: no volume waited for another
    for snapshot_id, volume in snapshots.items():
        whole = hashlib.sha256(bytes([volume + 1]) * (4 * BLOCK))
        whole.update(bytes(GIB - 4 * BLOCK))
        assert results[snapshot_id]["sha256"] == whole.hexdigest()
        assert (case.root / results[snapshot_id]["path"]).stat().st_size == GIB


def test_every_block_read_has_its_own_request_id_in_custody(aws_sandbox: AwsSandbox, tmp_path):
    """CloudTrail and custody match the tool's calls by request id: a read without one looks like impersonation."""
    snapshot_id = aws_sandbox.direct_snapshot(dict.fromkeys(range(3), b"R" * BLOCK))
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):
        write_raw_image(provider.clients, snapshot_id, case, "images/aws/r.raw", Console(quiet=True))
    calls = [c for r in read_records(case.root / "custody.jsonl") for e in r.get("api_calls", []) for c in each_call(e)]
    reads = [c["request_id"] for c in calls if c["operation"] == "GetSnapshotBlock"]
    assert len(reads) == len(set(reads)) == 3
    assert all(reads)


def _reader_pids() -> list[int]:
    """This process's reader processes (children running the reader's entry function), found through /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"reader_process" in command:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def _within(seconds: float, work: Callable[[], object]) -> list[BaseException]:
    """Run ``work`` in a thread; the exceptions it raised (it must end within ``seconds``, not hang)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except Exception as exc:
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), "the image waited forever"
    return raised


def _once_reading(aws_sandbox: AwsSandbox, act: Callable[[], None]) -> threading.Thread:
    """A started thread that runs ``act`` once 8 block reads are in flight (or after 60 s)."""

    def when_reading() -> None:
        deadline = time.monotonic() + 60
        while aws_sandbox.block_reads_peak < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        act()

    thread = threading.Thread(target=when_reading, daemon=True)
    thread.start()
    return thread


def _image_while(
    aws_sandbox: AwsSandbox, tmp_path: Path, blocks: dict[int, bytes], act: Callable[[], None]
) -> tuple[Case, list[BaseException], dict[str, Any]]:
    """Image a snapshot of ``blocks`` (8 reads in flight), running ``act`` once they are: the case, what the image
    raised and the custody record of its action."""
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)

    def image() -> None:
        with case.action("acquire.image", target=snapshot_id):
            write_raw_image(provider.clients, snapshot_id, case, "images/aws/k.raw", Console(quiet=True), concurrency=8)

    actor = _once_reading(aws_sandbox, act)
    raised = _within(90, image)
    actor.join()
    (record,) = [r for r in read_records(case.root / "custody.jsonl") if r["action"] == "acquire.image"]
    return case, raised, record


def _block_outcomes(record: dict[str, Any]) -> list[str]:
    return [c["outcome"] for e in record["api_calls"] for c in each_call(e) if c["operation"] == "GetSnapshotBlock"]


def test_a_reader_killed_mid_image_has_its_reads_sent_again_to_a_live_one(
    aws_sandbox: AwsSandbox, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(raw_image_module, "READ_PROCESSES", 2)
    aws_sandbox.block_latency = 1.0  # the reads are still in flight when the reader dies
    blocks = {index: bytes([index + 1]) * BLOCK for index in range(24)}
    case, raised, record = _image_while(
        aws_sandbox, tmp_path, blocks, lambda: os.kill(_reader_pids()[0], signal.SIGKILL)
    )
    assert raised == []
    assert record["outcome"] == "ok"
    ((image,),) = [record["artifacts"]]
    with (case.root / image["path"]).open("rb") as handle:
        assert handle.read(24 * BLOCK) == b"".join(blocks.values())
    outcomes = _block_outcomes(record)
    assert UNANSWERED in outcomes  # the reads the dead reader held are in custody, as unanswered, and were sent again
    assert outcomes.count("ok") == 24
    assert verify_case(case.root).ok
    assert _reader_pids() == []


def test_a_reader_that_cannot_start_fails_the_image_step_with_its_reason(
    aws_sandbox: AwsSandbox, acquire: Acquire, monkeypatch: pytest.MonkeyPatch, tmp_path
):
    instance_id = launch_instance(aws_sandbox)
    volume = aws_sandbox.client("ec2").describe_volumes()["Volumes"][-1]["VolumeId"]
    aws_sandbox.seed_disk(volume, {0: b"D" * BLOCK})
    broken = tmp_path / "python"  # the readers' interpreter: its import of botocore fails
    broken.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'botocore'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    outcome: list[tuple[Case, Any]] = []
    assert _within(90, lambda: outcome.append(acquire(instance_id, raw_image=True, raise_on_failure=False))) == []
    ((case, result),) = outcome
    assert result.failed is not None
    assert result.failed.step_id == "image.raw"
    reason = "exit code 1: ModuleNotFoundError: No module named 'botocore' before it could read"
    assert reason in (result.failed.error or "")
    failed = [r for r in read_records(case.root / "custody.jsonl") if r["outcome"] == "failed"]
    assert any(reason in (r.get("error") or "") for r in failed)
    assert _reader_pids() == []


@pytest.mark.parametrize(
    ("signum", "reason"),
    [(signal.SIGKILL, "killed by signal SIGKILL"), (signal.SIGSTOP, "left a read unanswered for 2 s")],
    ids=["killed", "stopped-answering"],
)
def test_when_every_reader_dies_or_stops_answering_the_image_fails_after_its_reads_were_sent_again_once(
    aws_sandbox: AwsSandbox, tmp_path, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals, reason: str
):
    """A stopped reader (SIGSTOP: alive, its socket open, answering nothing) is killed after READ_ANSWER_SECONDS."""
    monkeypatch.setattr(raw_image_module, "READ_PROCESSES", 2)
    monkeypatch.setattr(raw_image_module, "READ_ANSWER_SECONDS", 2.0)
    aws_sandbox.block_latency = 1.0  # the reads are still in flight when the readers die

    def signal_every_reader() -> None:
        for pid in _reader_pids():
            os.kill(pid, signum)

    blocks = dict.fromkeys(range(24), b"S" * BLOCK)
    case, (raised,), record = _image_while(aws_sandbox, tmp_path, blocks, signal_every_reader)
    assert isinstance(raised, ReaderProcessError), raised
    assert reason in str(raised) or "every reader process ended" in str(raised)
    assert not list((case.root / "images").rglob("*.raw*"))
    assert record["outcome"] == "failed"
    assert UNANSWERED in _block_outcomes(record)
    assert _reader_pids() == []


def test_the_raw_image_is_read_while_the_cross_region_copy_is_still_pending(
    aws_sandbox: AwsSandbox, acquire: Acquire, monkeypatch: pytest.MonkeyPatch
):
    """The copy stays pending until the image read every block, and no block is read until the copy was made: only
    an image read alongside the copy (not before it, not after it) completes both."""
    instance_id = launch_instance(aws_sandbox)
    volume = aws_sandbox.client("ec2").describe_volumes()["Volumes"][-1]["VolumeId"]
    aws_sandbox.seed_disk(volume, {index: bytes([index + 1]) * BLOCK for index in range(3)})
    aws_sandbox.hold_block_reads(timeout=20)

    def copy_described() -> bool:  # the copy lane polls its copy: the reads may go on now
        aws_sandbox.release_block_reads()
        return len(aws_sandbox.blocks_read) == 3

    aws_sandbox.hold_copies(until=copy_described)
    session = aws_sandbox.session
    monkeypatch.setattr(
        aws_sandbox, "provider", lambda: AwsProvider(session=session, poll_seconds=0.01, timeout_seconds=60)
    )
    case, result = acquire(instance_id, raw_image=True, forensic_location=FORENSIC_REGION)
    assert [(step.id, step.lane) for step in result.plan.steps[-3:]] == [
        ("image.raw", "image"),
        ("snapshot.wait", "copies"),
        ("copy.snapshots", "copies"),
    ]
    ((image,),) = [list(result.results["image.raw"]["images"].values())]
    assert image["blocks"] == 3
    records = [r for r in read_records(case.root / "custody.jsonl") if r["action"] == "acquire.acquire"]
    calls = {r["details"]["step"]: [c["operation"] for e in r["api_calls"] for c in each_call(e)] for r in records}
    assert calls["image.raw"].count("GetSnapshotBlock") == 3  # each step's own calls in its own record
    assert "GetSnapshotBlock" not in calls["copy.snapshots"]
    assert "CopySnapshot" in calls["copy.snapshots"]
    assert "CopySnapshot" not in calls["image.raw"]
