"""AWS raw image read at the speed of the API: concurrent GetSnapshotBlock against one call at a time, 1 vs N volumes.

    uv run python benchmarks/raw_image_bench.py [--blocks 128] [--latency 0.1] [--volumes 16]

What the sandbox models: every GetSnapshotBlock waits ``--latency`` seconds while counted in flight (AWS's EBS direct
guide uses 100 ms as its example) and is answered, over HTTP on 127.0.0.1, by a process of its own from the block,
checksum and token stored beforehand (moto_fixtures.ebs_direct), so what is timed is the latency and the client
(reader processes: validation, signing, parsing, checksums; this process: custody records, hashing and writing).
Blocks are moto's 512 bytes (real EBS: 512 KiB), volumes 1 GiB, so each image also hashes about 1 GiB of holes after
its last block (CPU, the same for any read design): the CPU a read is printed per process (this one, its reader
processes, the sandbox's server) from their CPU clocks over the N volumes' reads, less what the same processes spent
on N volumes with no written block, and less the CPU this process's threads spent hashing holes (each thread's own
clock around each ``write_zeros``): CPU clocks, so these figures depend little on the machine's load. The block read
time is what the sandbox saw: from the first GetSnapshotBlock's start to the last one's end.

1. One snapshot of ``--blocks`` written blocks is imaged with ``concurrency=1`` (the baseline: one read at a time)
   and with the defaults (READ_CONCURRENCY per volume); both images must hash alike. Target: 16x the serial rate.
2. ``--volumes`` snapshots of the same content are imaged at once (write_raw_images, what an acquisition runs: one
   pool of at most READ_TOTAL reads shared by every volume) and compared with one volume imaged the same way, both
   as wall times and as block read times. Target: within 2x.
3. The calls around the images: an instance with 1 and with ``--volumes`` volumes is acquired (no raw image) with a
   cross-region copy, a share with the forensic account, the forensic account's own copies and the unshare, every
   API call taking ``--latency`` seconds. Printed per step: the calls made (custody) and the step's time in units of
   one call's latency, the calls on its critical path; the per-volume calls are sent at once, so that figure should
   not grow with the volume count.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from cloudir.case import ArtifactWriter, Case
from moto_fixtures.aws import BLOCK, AwsSandbox, calls_of_forensic_acquisition
from providers.aws.raw_image import READ_CONCURRENCY, write_raw_images


@dataclass
class Run:
    """One imaging run: wall seconds, CPU seconds of this process (and of its threads hashing holes), of its reader
    processes and of the sandbox's EBS direct server, block read seconds, most reads in flight, the first image's
    SHA-256."""

    wall: float
    cpu: float
    holes_cpu: float
    readers_cpu: float
    sandbox_cpu: float
    reads: float
    peak: int
    sha256: str


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of its children that ended (the reader processes, not the sandbox's)."""
    times = os.times()
    return times.user + times.system, times.children_user + times.children_system


@contextmanager
def _hole_cpu() -> Iterator[list[float]]:
    """The CPU seconds this process's threads spend in ``ArtifactWriter.write_zeros`` meanwhile (each thread's own
    clock), in the list yielded."""
    spent, lock, write_zeros = [0.0], threading.Lock(), ArtifactWriter.write_zeros

    def timed(writer: ArtifactWriter, count: int) -> None:
        start = time.thread_time()
        write_zeros(writer, count)
        with lock:
            spent[0] += time.thread_time() - start

    ArtifactWriter.write_zeros = timed  # type: ignore[method-assign,assignment]
    try:
        yield spent
    finally:
        ArtifactWriter.write_zeros = write_zeros  # type: ignore[method-assign]


def _run(sandbox: AwsSandbox, snapshot_ids: list[str], folder: Path, concurrency: int) -> Run:
    """Image every snapshot of ``snapshot_ids`` at once, as an acquisition does."""
    clients = sandbox.provider().clients
    case = Case.create(folder)
    sandbox.clear_block_stats()
    start, (cpu, readers_cpu), sandbox_cpu = time.perf_counter(), _cpu(), sandbox.ebs_direct_cpu
    paths = {s: f"images/{s}.raw" for s in snapshot_ids}
    with _hole_cpu() as holes_cpu:
        results = write_raw_images(clients, paths, case, Console(quiet=True), concurrency=concurrency)
    wall, (cpu_after, readers_after) = time.perf_counter() - start, _cpu()
    sandbox_after = sandbox.ebs_direct_cpu
    case.close()
    window = sandbox.block_reads_window
    reads = window[-1] - window[0] if window else 0.0
    first = results[snapshot_ids[0]]["sha256"]
    peak = sandbox.block_reads_peak
    return Run(
        wall,
        cpu_after - cpu,
        holes_cpu[0],
        readers_after - readers_cpu,
        sandbox_after - sandbox_cpu,
        reads,
        peak,
        first,
    )


def main() -> None:
    """Print the serial and concurrent read rates, then 1 against ``--volumes`` volumes imaged at once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=128, help="written blocks in each snapshot")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per GetSnapshotBlock")
    parser.add_argument("--volumes", type=int, default=16, help="volumes imaged (and acquired) at once")
    args = parser.parse_args()
    with AwsSandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        written = {i: hashlib.sha256(i.to_bytes(8, "big")).digest() * (BLOCK // 32) for i in range(args.blocks)}
        empty = [sandbox.direct_snapshot({}) for _ in range(args.volumes)]
        full = [sandbox.direct_snapshot(written) for _ in range(args.volumes)]
        sandbox.block_latency = args.latency
        folder = Path(tmp)
        holes = _run(sandbox, empty, folder / "empty", READ_CONCURRENCY)
        serial = _run(sandbox, full[:1], folder / "serial", 1)
        one = _run(sandbox, full[:1], folder / "one", READ_CONCURRENCY)
        many = _run(sandbox, full, folder / "many", READ_CONCURRENCY)
        calls = {
            n: calls_of_forensic_acquisition(sandbox, n, folder / f"acquire-{n}", args.latency)
            for n in (1, args.volumes)
        }
    assert serial.sha256 == one.sha256, "the concurrent image differs from the serial one"
    serial_rate, one_rate = args.blocks / serial.reads, args.blocks / one.reads
    reads_many = args.blocks * args.volumes
    print(f"{args.blocks} blocks a volume, {args.latency * 1000:.0f} ms per GetSnapshotBlock")
    print(
        f"holes only ({args.volumes} images of 1 GiB, no block): {holes.wall:.2f} s, CPU {holes.cpu:.2f} s here "
        f"({holes.holes_cpu:.2f} s hashing holes), {holes.readers_cpu:.2f} s in the reader processes (their start-up)"
    )
    print(f"serial (concurrency 1):   reads {serial.reads:6.2f} s  {serial_rate:7.1f} blocks/s")
    print(f"concurrent ({READ_CONCURRENCY} a volume): reads {one.reads:6.2f} s  {one_rate:7.1f} blocks/s")
    print(f"block read rate {one_rate / serial_rate:.1f}x serial (target 16x)")
    print(
        f"{args.volumes} volumes at once ({many.peak} reads in flight at most) against 1: block reads "
        f"{many.reads:.2f} s vs {one.reads:.2f} s = {many.reads / one.reads:.1f}x (target 2x); "
        f"wall {many.wall:.2f} s vs {one.wall:.2f} s = {many.wall / one.wall:.1f}x"
    )
    per_read = {
        "this process": (many.cpu - many.holes_cpu) - (holes.cpu - holes.holes_cpu),
        "reader processes": many.readers_cpu - holes.readers_cpu,
        "the sandbox's server": many.sandbox_cpu - holes.sandbox_cpu,
    }
    split = ", ".join(f"{name} {cpu / reads_many * 1000:.3f} ms" for name, cpu in per_read.items())
    print(
        f"CPU a read over the {args.volumes} volumes' {reads_many} reads: {split}; in all "
        f"{sum(per_read.values()) / reads_many * 1000:.3f} ms (16 volumes within 2x on 2 cores needs <= 0.78 ms); "
        f"hashing the holes {many.holes_cpu:.2f} s of this process's {many.cpu:.2f} s"
    )
    print(f"acquisition into the forensic account, {args.latency * 1000:.0f} ms per call: calls / sequential calls")
    for step in calls[1]:
        counts = "   ".join(f"{n} volume(s): {calls[n][step][0]:3d} / {calls[n][step][1]:5.1f}" for n in calls)
        print(f"  {step:32s} {counts}")
    totals = {n: (sum(c for c, _ in steps.values()), sum(u for _, u in steps.values())) for n, steps in calls.items()}
    print("  " + f"{'in all':32s} " + "   ".join(f"{n} volume(s): {c:3d} / {u:5.1f}" for n, (c, u) in totals.items()))


if __name__ == "__main__":
    main()
