"""Custody chain, evidence hashing and offline verification."""

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from cloudir.case import Case
from cloudir.custody import ApiCall, CallBatch, each_call, genesis_hash, line_hash, read_records, verify_case
from cloudir.errors import CloudirError


@pytest.fixture
def case(tmp_path: Path) -> Case:
    case = Case.create(tmp_path / "case", case_id="cir-test")
    with case.action("acquire.read", target="i-1") as act:
        case.write_json("artifacts/instance.json", {"InstanceId": "i-1"})
        case.write_bytes("artifacts/blob.bin", [b"a" * 10, b"b" * 5])
        case.record_api_call(ApiCall("ec2", "DescribeInstances", "us-east-1", "req-1", "ok"))
        act.details["note"] = "x"
    case.custody.append("note", target="i-1", details={"text": "second"})
    case.custody.append("note", target="i-1", details={"text": "third"})
    return case


def test_records_are_chained_and_carry_calls_and_hashes(case: Case) -> None:
    records = read_records(case.root / "custody.jsonl")
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    lines = (case.root / "custody.jsonl").read_bytes().splitlines()
    assert records[0]["prev_hash"] == genesis_hash("cir-test", case.meta["created"])
    for (prev, _), (_, rec) in itertools.pairwise(zip(lines, records, strict=True)):
        assert rec["prev_hash"] == line_hash(prev)  # the hash of the stored bytes, as written
    assert case.custody.head == line_hash(lines[-1])
    acquire = records[1]
    assert acquire["api_calls"][0]["operation"] == "DescribeInstances"
    assert acquire["api_calls"][0]["request_id"] == "req-1"
    blob = next(a for a in acquire["artifacts"] if a["path"] == "artifacts/blob.bin")
    assert blob["sha256"] == hashlib.sha256(b"a" * 10 + b"b" * 5).hexdigest()
    assert blob["size"] == 15
    assert acquire["caller"]["operator"]
    assert acquire["tool_version"]


def test_intact_case_verifies(case: Case) -> None:
    result = verify_case(case.root)
    assert result.ok, result.problems
    assert result.records == 4
    assert result.artifacts_checked == 3
    assert result.head == case.custody.head


def test_a_batch_of_calls_names_each_call_and_a_malformed_one_is_a_problem(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case", case_id="cir-batch")
    batch = CallBatch((3, 1), ("req-3", "req-1"), 1024, "2026-12-03T12:00:00.000000Z", "2026-12-03T12:00:01.000000Z")
    with case.action("acquire.image", target="snap-1"):
        case.record_api_call(ApiCall("ebs", "GetSnapshotBlock", "us-east-1", None, "ok", batch=batch))
    (entry,) = read_records(case.root / "custody.jsonl")[-1]["api_calls"]
    assert entry["batch"]["count"] == 2
    assert [(c["item"], c["request_id"], c["outcome"]) for c in each_call(entry)] == [
        (3, "req-3", "ok"),
        (1, "req-1", "ok"),
    ]
    assert verify_case(case.root).ok
    short = CallBatch((5, 6), ("req-5",), 1024, batch.first, batch.last)  # two calls counted, one request id named
    with case.action("acquire.image", target="snap-2"):
        case.record_api_call(ApiCall("ebs", "GetSnapshotBlock", "us-east-1", None, "ok", batch=short))
    result = verify_case(case.root)
    assert not result.ok
    assert any("counts 2 calls but names 2 items and 1 request ids" in problem for problem in result.problems)


def test_changed_artifact_byte_is_named(case: Case) -> None:
    path = case.root / "artifacts/blob.bin"
    data = bytearray(path.read_bytes())
    data[3] ^= 1
    path.write_bytes(bytes(data))
    result = verify_case(case.root)
    assert not result.ok
    assert result.first_problem is not None
    assert "artifacts/blob.bin" in result.first_problem


def test_changed_record_byte_is_named(case: Case) -> None:
    path = case.root / "custody.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("second", "secomd")
    path.write_text("\n".join(lines) + "\n")
    result = verify_case(case.root)
    assert not result.ok
    assert "record 3" in str(result.first_problem)


def test_deleted_record_is_detected(case: Case) -> None:
    path = case.root / "custody.jsonl"
    lines = path.read_text().splitlines()
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    result = verify_case(case.root)
    assert not result.ok
    assert "record 2" in str(result.first_problem)


def test_reordered_records_are_detected(case: Case) -> None:
    path = case.root / "custody.jsonl"
    lines = path.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("\n".join(lines) + "\n")
    result = verify_case(case.root)
    assert not result.ok
    assert "record 3" in str(result.first_problem)


def test_dropped_last_record_breaks_its_seal(case: Case) -> None:
    path = case.root / "custody.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    result = verify_case(case.root)
    assert not result.ok
    assert "seal 4: it seals record 4" in str(result.first_problem)


def test_dropped_records_and_seals_are_caught_by_the_noted_head(case: Case) -> None:
    head = case.custody.head
    for name in ("custody.jsonl", "seals.jsonl"):
        path = case.root / name
        path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    assert verify_case(case.root).ok  # a consistent, sealed shorter chain: only an anchor outside the case shows it
    result = verify_case(case.root, expect_head=head)
    assert not result.ok
    assert f"expected head {head} is not in this chain" in str(result.first_problem)


def test_rechained_forged_record_breaks_the_seals(case: Case) -> None:
    path = case.root / "custody.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["details"]["note"] = "forged"
    _rechain(path, records)
    result = verify_case(case.root)
    assert not result.ok
    assert "seal 2:" in str(result.first_problem)
    assert "does not hold" in str(result.first_problem)


def _rechain(path: Path, records: list[dict[str, object]]) -> None:
    """Rewrite the log with every link recomputed, as an attacker without the signing key would."""
    from cloudir.durable import canonical_json

    lines = []
    for record in records:
        if lines:
            record["prev_hash"] = line_hash(lines[-1])
        lines.append(canonical_json(record))
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_unrecorded_file_is_a_warning(case: Case) -> None:
    (case.root / "artifacts/planted.txt").write_text("x")
    result = verify_case(case.root)
    assert result.ok
    assert any("planted.txt" in w for w in result.warnings)


def test_sparse_writer_hashes_holes_as_zeros(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    with case.action("image"), case.open_artifact("images/disk.raw") as writer:
        writer.write(b"\x01" * 512)
        writer.write_zeros(4096)
        writer.write(b"\x02" * 512)
    data = (case.root / "images/disk.raw").read_bytes()
    assert data == b"\x01" * 512 + bytes(4096) + b"\x02" * 512
    assert writer.artifact is not None
    assert writer.artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert verify_case(case.root).ok


def test_failed_action_is_recorded_with_error(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    with pytest.raises(RuntimeError), case.action("acquire.acquire", target="i-9"):
        raise RuntimeError("boom")
    last = read_records(case.root / "custody.jsonl")[-1]
    assert last["outcome"] == "failed"
    assert "boom" in last["error"]


def test_artifact_paths_cannot_escape_the_case(tmp_path: Path) -> None:
    from cloudir.errors import CloudirError

    case = Case.create(tmp_path / "c")
    with pytest.raises(CloudirError):
        case.open_artifact("../outside.txt")


def test_a_pull_folder_is_claimed_by_one_request(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    request = {"start": "2026-11-25T00:00:00Z", "end": "2026-11-26T00:00:00Z", "scope": "../../etc"}
    case.claim_folder("logs/aws/x", request, "refused", "new folder")
    case.claim_folder("logs/aws/x", dict(request), "refused", "new folder")  # the same request resumes
    assert json.loads((case.root / "logs/aws/x/request.json").read_text()) == request
    with pytest.raises(CloudirError, match=r"^refused \(new folder\)$"):
        case.claim_folder("logs/aws/x", {**request, "end": "2026-11-27T00:00:00Z"}, "refused", "new folder")
