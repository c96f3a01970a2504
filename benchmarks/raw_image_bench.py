"""AWS raw image read at the speed of the API: concurrent GetSnapshotBlock against one call at a time.

    uv run python benchmarks/raw_image_bench.py [--blocks 128] [--latency 0.1] [--volumes 16]

The sandbox gives every GetSnapshotBlock ``--latency`` seconds (AWS's EBS direct guide uses 100 ms as its example),
then the same snapshot is imaged twice in one run: with ``concurrency=1`` (the baseline: one block at a time, as
before) and with the default (providers.aws.raw_image.READ_CONCURRENCY). A snapshot of the same size with no
written block is imaged too: its time is the fixed cost of a 1 GiB image (hashing the holes), subtracted to give each
run's block read rate. Prints the wall times, the read rates and both ratios; both images must hash alike. Then
``--volumes`` snapshots of the same content are imaged at once (write_raw_images, what an acquisition runs) and their
wall time is compared with that of one volume imaged the same way (target: within 2x).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from rich.console import Console

from cloudir.case import Case
from moto_fixtures.aws import BLOCK, AwsSandbox
from providers.aws.raw_image import READ_CONCURRENCY, write_raw_image, write_raw_images


def _image(sandbox: AwsSandbox, snapshot_id: str, folder: Path, concurrency: int) -> tuple[float, str]:
    ebs = sandbox.provider().clients.client("ebs")
    case = Case.create(folder)
    start = time.perf_counter()
    result = write_raw_image(ebs, snapshot_id, case, "images/bench.raw", Console(quiet=True), concurrency=concurrency)
    elapsed = time.perf_counter() - start
    case.close()
    return elapsed, result["sha256"]


def _volumes(sandbox: AwsSandbox, snapshot_ids: list[str], folder: Path) -> float:
    ebs = sandbox.provider().clients.client("ebs")
    case = Case.create(folder)
    start = time.perf_counter()
    write_raw_images(ebs, {s: f"images/{s}.raw" for s in snapshot_ids}, case, Console(quiet=True))
    elapsed = time.perf_counter() - start
    case.close()
    return elapsed


def main() -> None:
    """Image one snapshot serially and concurrently; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=128, help="written blocks in the snapshot")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per GetSnapshotBlock")
    parser.add_argument("--volumes", type=int, default=16, help="volumes imaged at once in the second comparison")
    args = parser.parse_args()
    with AwsSandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        written = {i: hashlib.sha256(i.to_bytes(8, "big")).digest() * (BLOCK // 32) for i in range(args.blocks)}
        empty, snapshot_id = sandbox.direct_snapshot({}), sandbox.direct_snapshot(written)
        sandbox.block_latency = args.latency
        fixed, _ = _image(sandbox, empty, Path(tmp) / "empty", READ_CONCURRENCY)
        serial, serial_hash = _image(sandbox, snapshot_id, Path(tmp) / "serial", 1)
        parallel, parallel_hash = _image(sandbox, snapshot_id, Path(tmp) / "parallel", READ_CONCURRENCY)
        sandbox.block_latency = 0.0
        many = [sandbox.direct_snapshot(written) for _ in range(args.volumes)]
        sandbox.block_latency = args.latency
        one_volume = _volumes(sandbox, many[:1], Path(tmp) / "one")
        all_volumes = _volumes(sandbox, many, Path(tmp) / "many")
    assert serial_hash == parallel_hash, "the concurrent image differs from the serial one"
    serial_rate, parallel_rate = args.blocks / (serial - fixed), args.blocks / (parallel - fixed)
    print(f"{args.blocks} blocks, {args.latency * 1000:.0f} ms per GetSnapshotBlock; empty 1 GiB image {fixed:.2f} s")
    print(f"serial (concurrency 1):    {serial:7.2f} s  {serial_rate:7.1f} blocks/s read")
    print(f"concurrent ({READ_CONCURRENCY} in flight): {parallel:7.2f} s  {parallel_rate:7.1f} blocks/s read")
    print(f"wall time {serial / parallel:.1f}x faster, block read rate {parallel_rate / serial_rate:.1f}x")
    print(
        f"1 volume {one_volume:.2f} s, {args.volumes} volumes at once {all_volumes:.2f} s: "
        f"{all_volumes / one_volume:.1f}x the wall time of one"
    )


if __name__ == "__main__":
    main()
