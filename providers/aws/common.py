"""Small helpers shared by the AWS plans: tags, response cleanup, waiting on snapshots with progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, HTTPClientError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cloudir.case import ActionPool
from cloudir.errors import CloudirError
from cloudir.textsafe import esc
from providers.aws.session import aws_errors

TAG_CASE = "cloudir:case-id"
TAG_VOLUME = "cloudir:source-volume"
TAG_SNAPSHOT = "cloudir:source-snapshot"
TAG_INSTANCE = "cloudir:instance-id"
TAG_REQUEST = "cloudir:request"  # one value per logical create: what the tool looks for before it sends it again
AWS_MANAGED = "AWS"
# IAM is eventually consistent: EC2 refuses a just-created instance profile with this error for several seconds.
IAM_PROPAGATION_DELAYS = (1.0, 2.0, 4.0, 8.0, 8.0, 8.0)
_T = TypeVar("_T")
_I = TypeVar("_I")
# Per-volume calls (tags, shares, copies) sent at once: within EC2's default of 20 concurrent snapshot copies to one
# region and well inside its token bucket for mutating calls, so N volumes cost about one call's time, not N.
CALLS_AT_ONCE = 20
# Sends of a non-idempotent create (each one checked for a lost success first); backoff doubles up to the cap.
CREATE_ATTEMPTS = 64
CREATE_BACKOFF_CAP = 20.0
_THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
_TRANSIENT_CODES = _THROTTLE_CODES | {"InternalError", "ServiceUnavailable", "Unavailable"}
# EC2 is eventually consistent: a resource just created may be missing from Describe* calls for a few seconds
# (answered InvalidSnapshot.NotFound when asked for by id). The waits before a lookup is believed, in seconds.
CONSISTENCY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
_NOT_FOUND_CODES = frozenset({"InvalidSnapshot.NotFound", "InvalidGroup.NotFound"})


def is_transient(exc: ClientError | BotoCoreError) -> bool:
    """Whether a failed send may be tried again: throttled, a server error, or no answer (it may have run)."""
    if isinstance(exc, ClientError):
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        return error.get("Code") in _TRANSIENT_CODES or int(meta.get("HTTPStatusCode") or 0) >= 500
    return isinstance(exc, HTTPClientError | EndpointConnectionError)


def may_have_run(exc: ClientError | BotoCoreError) -> bool:
    """Whether a failed send may still have been carried out: no answer, or a server error (not a throttle)."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") not in _THROTTLE_CODES
    return True


def not_yet_visible(exc: ClientError) -> bool:
    """Whether EC2 answered that a snapshot or security group just created does not exist (eventual consistency)."""
    return exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES


def until_visible(call: Callable[[], _T]) -> _T:
    """``call()`` on a resource just created, retried after each of ``CONSISTENCY_DELAYS`` while EC2 answers that it
    does not exist yet."""
    for delay in CONSISTENCY_DELAYS:
        try:
            return call()
        except ClientError as exc:
            if not not_yet_visible(exc):
                raise
        time.sleep(delay)
    return call()


def until_listed(call: Callable[[], list[_T]]) -> list[_T]:
    """``call()``, a Describe* by filter of a resource EC2 has said exists, retried after each of
    ``CONSISTENCY_DELAYS`` while it lists none (a resource created a moment ago is not listed yet)."""
    for delay in CONSISTENCY_DELAYS:
        found = call()
        if found:
            return found
        time.sleep(delay)
    return call()


def create_delays(base: float) -> list[float]:
    """The waits between the sends of a non-idempotent create: ``base`` doubling, capped, ``CREATE_ATTEMPTS - 1``."""
    return [min(CREATE_BACKOFF_CAP, base * 2**attempt) for attempt in range(CREATE_ATTEMPTS - 1)]


def until_iam_propagates(call: Callable[[], _T], *, delays: tuple[float, ...] = IAM_PROPAGATION_DELAYS) -> _T:
    """``call()``, retried after each delay while EC2 answers that the instance profile is invalid (not yet known)."""
    for delay in delays:
        try:
            return call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != "InvalidParameterValue" or "Instance Profile" not in str(error.get("Message")):
                raise
        time.sleep(delay)
    return call()


def at_once(call: Callable[[_I], _T], items: Iterable[_I], *, limit: int = CALLS_AT_ONCE) -> list[_T]:
    """``call`` on every item, at most ``limit`` at a time; results in the items' order.

    Every call runs to its end before the first failure (in the items' order) is raised, so none is left in flight.
    """
    work = list(items)
    with ActionPool(max_workers=max(1, min(limit, len(work))), thread_name_prefix="aws-call") as pool:
        futures = [pool.submit(call, item) for item in work]
    return [future.result() for future in futures]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """boto3 tag list from a dict."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    """DescribeX filters matching every tag in ``tags``."""
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]


def clean(response: dict[str, Any]) -> dict[str, Any]:
    """An API response without its transport metadata (what goes into an artifact)."""
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def completed_snapshots(
    ec2: Any,
    snapshot_ids: list[str],
    *,
    poll_seconds: float,
    timeout_seconds: float,
    on_progress: Callable[[str, float], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each snapshot's description once, as soon as it is completed (one DescribeSnapshots per poll for all).

    ``on_progress(snapshot id, percent)`` hears every poll; raise on an error state or on timeout.
    """
    deadline = time.monotonic() + timeout_seconds
    pending = list(snapshot_ids)
    unseen = iter(CONSISTENCY_DELAYS)
    while pending:
        with aws_errors(f"check the progress of {', '.join(pending)}"):
            try:
                snapshots = ec2.describe_snapshots(SnapshotIds=pending)["Snapshots"]
            except ClientError as exc:
                delay = next(unseen, None) if not_yet_visible(exc) else None
                if delay is None:
                    raise
                time.sleep(delay)  # a new snapshot EC2 does not list yet
                continue
        for snap in snapshots:
            sid = snap["SnapshotId"]
            if snap["State"] == "error":
                raise CloudirError(
                    f"snapshot {sid} failed: {snap.get('StateMessage') or 'state error'}",
                    hint="check the KMS key permissions and the snapshot quota, then re-run with --resume",
                )
            done = snap["State"] == "completed"
            if on_progress is not None:
                on_progress(sid, 100 if done else float(str(snap.get("Progress") or "0").rstrip("%") or 0))
            if done and sid in pending:
                pending.remove(sid)
                yield snap
        if not pending:
            return
        if time.monotonic() > deadline:
            raise CloudirError(
                f"snapshots still pending after {timeout_seconds:.0f}s: {', '.join(pending)}",
                hint="they keep going in AWS; re-run with --resume to wait again",
            )
        time.sleep(poll_seconds)


def wait_for_snapshots(
    ec2: Any, snapshot_ids: list[str], *, console: Console, poll_seconds: float, timeout_seconds: float, label: str
) -> dict[str, dict[str, Any]]:
    """Poll until every snapshot is completed, showing progress; raise on an error state or timeout."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks = {sid: progress.add_task(esc(f"{label} {sid}"), total=100) for sid in snapshot_ids}
        return {
            snap["SnapshotId"]: snap
            for snap in completed_snapshots(
                ec2,
                snapshot_ids,
                poll_seconds=poll_seconds,
                timeout_seconds=timeout_seconds,
                on_progress=lambda sid, percent: progress.update(tasks[sid], completed=percent),
            )
        }
