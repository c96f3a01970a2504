"""Attacks on a case's custody, each refused or failing `cloudir verify` with one clear line."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir import durable
from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import line_hash, verify_case
from cloudir.durable import canonical_json
from cloudir.errors import CloudirError
from cloudir.seal import make_seal
from cloudir.signing import Signer, load_signer

runner = CliRunner()


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """A closed, sealed case with two artifacts and three records."""
    with Case.create(tmp_path / "case", case_id="cir-attack") as case:
        with case.action("acquire.read", target="i-1"):
            case.write_json("artifacts/aws/instance.json", {"InstanceId": "i-1"})
        case.custody.append("note", details={"text": "later"})
    return tmp_path / "case"


def _verify(case_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", str(case_dir), *args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def _lines(case_dir: Path, name: str = "custody.jsonl") -> list[bytes]:
    return (case_dir / name).read_bytes().splitlines()


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_intact_case_verifies_and_prints_full_head_and_key(case_dir: Path, signing_key: Path) -> None:
    code, output = _verify(case_dir)
    assert code == 0, output
    head = line_hash(_lines(case_dir)[-1])
    assert f"head {head}" in output
    assert f"key {load_signer(signing_key).fingerprint}" in output


def test_empty_chain_is_never_ok(case_dir: Path) -> None:
    (case_dir / "custody.jsonl").write_bytes(b"")
    code, output = _verify(case_dir)
    assert code == 1
    assert "holds no record: an empty chain proves nothing" in output


def test_re_spaced_record_is_caught(case_dir: Path) -> None:
    lines = _lines(case_dir)
    lines[-1] = json.dumps(json.loads(lines[-1])).encode()  # same JSON, different bytes
    _write_lines(case_dir / "custody.jsonl", lines)
    code, output = _verify(case_dir)
    assert code == 1
    assert "custody record 3: the line is not stored the way cloudir writes records" in output


def test_duplicated_key_is_caught(case_dir: Path) -> None:
    lines = _lines(case_dir)
    lines[-1] = lines[-1][:-1] + b',"outcome":"ok"}'
    _write_lines(case_dir / "custody.jsonl", lines)
    code, output = _verify(case_dir)
    assert code == 1
    assert "custody record 3: the line holds a duplicated key" in output


def test_replaced_artifact_with_its_recorded_hash_breaks_the_seals(case_dir: Path) -> None:
    forged = b'{"InstanceId": "i-other"}\n'
    (case_dir / "artifacts/aws/instance.json").write_bytes(forged)
    lines = _lines(case_dir)
    records = [json.loads(line) for line in lines]
    for artifact in records[1]["artifacts"]:
        artifact.update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged))
    rebuilt: list[bytes] = []
    for record in records:
        if rebuilt:
            record["prev_hash"] = line_hash(rebuilt[-1])
        rebuilt.append(canonical_json(record))
    _write_lines(case_dir / "custody.jsonl", rebuilt)
    code, output = _verify(case_dir)
    assert code == 1
    assert "seal 2: it seals record 2" in output


def test_unsealed_chain_fails(case_dir: Path) -> None:
    (case_dir / "seals.jsonl").unlink()
    code, output = _verify(case_dir)
    assert code == 1
    assert "UNSEALED: the chain of 3 records carries no seal" in output


def test_record_appended_without_a_seal_is_a_stale_seal(case_dir: Path) -> None:
    lines = _lines(case_dir)
    extra = json.loads(lines[-1]) | {"seq": 4, "prev_hash": line_hash(lines[-1]), "action": "note"}
    _write_lines(case_dir / "custody.jsonl", [*lines, canonical_json(extra)])
    code, output = _verify(case_dir)
    assert code == 1
    assert "STALE SEAL: the newest seal covers 3 of 4 records" in output


def test_reseal_with_another_key_is_the_wrong_key(case_dir: Path, tmp_path: Path) -> None:
    other: Signer = load_signer(tmp_path / "attacker.pem")
    lines = _lines(case_dir)
    seal = make_seal(other, case_id="cir-attack", records=3, head=line_hash(lines[-1]), time="2026-12-01T00:00:00Z")
    (case_dir / "seals.jsonl").write_bytes(canonical_json(seal.__dict__) + b"\n")
    code, output = _verify(case_dir)
    assert code == 1
    assert f"WRONG KEY: seal 1 is signed by {other.fingerprint}" in output


def test_public_key_option_pins_the_key(case_dir: Path, tmp_path: Path, signing_key: Path) -> None:
    mine = tmp_path / "mine.pub"
    mine.write_text(load_signer(signing_key).public_pem())
    assert _verify(case_dir, "--public-key", str(mine))[0] == 0
    theirs = tmp_path / "theirs.pub"
    theirs.write_text(load_signer(tmp_path / "other.pem").public_pem())
    code, output = _verify(case_dir, "--public-key", str(theirs))
    assert code == 1
    assert "WRONG KEY" in output


def test_expect_head_takes_the_full_head_or_a_prefix_in_any_case(case_dir: Path) -> None:
    first_head = line_hash(_lines(case_dir)[0])
    with Case.open(case_dir) as case:
        case.custody.append("note", details={"text": "after acquisition"})
    for given in (first_head, first_head[:16].upper()):
        code, output = _verify(case_dir, "--expect-head", given)
        assert code == 0, output
        assert "is record 1 of 4" in output
    for given in (first_head[:15], "not-a-head", "f" * 64):
        assert _verify(case_dir, "--expect-head", given)[0] == 1


def test_re_registered_artifact_is_reported_as_replaced(case_dir: Path) -> None:
    with Case.open(case_dir) as case, case.action("analyze", target="artifacts/aws/instance.json"):
        case.write_json("artifacts/aws/instance.json", {"InstanceId": "i-1", "more": True})
    code, output = _verify(case_dir)
    assert code == 0, output
    assert "artifact artifacts/aws/instance.json: content recorded in record 2 was replaced in record" in output
    assert "by analyze" in output


def test_symlink_escape_missing_file_and_markup_names_each_give_one_line(case_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not evidence")
    name = "[bold red]x[/]<img src=x>\x1b[2J.json"
    with Case.open(case_dir) as case, case.action("acquire.read"):
        case.write_bytes(f"artifacts/{name}", b"a")
        case.write_bytes("artifacts/link.json", b"b")
        case.write_bytes("artifacts/gone.json", b"c")
    (case_dir / "artifacts/link.json").unlink()
    (case_dir / "artifacts/link.json").symlink_to(outside)
    (case_dir / "artifacts/gone.json").unlink()
    (case_dir / f"artifacts/{name}").write_bytes(b"changed")
    (case_dir / "artifacts/planted[red].txt").write_text("x")
    code, output = _verify(case_dir)
    assert code == 1
    assert "artifacts/link.json (record 4) goes through a symbolic link (artifacts/link.json); not read" in output
    assert "artifact artifacts/gone.json (recorded in record 4) is missing" in output
    assert "artifact artifacts/[bold red]x[/]<img src=x>\\x1b[2J.json: SHA-256" in output  # printed, not rendered
    assert "\x1b" not in output
    assert "artifacts/planted[red].txt: present in the case folder but not recorded" in output


def test_artifact_path_leaving_the_case_is_one_line(case_dir: Path) -> None:
    lines = _lines(case_dir)
    records = [json.loads(line) for line in lines]
    records[1]["artifacts"][0]["path"] = "../../etc/passwd"
    lines[1] = canonical_json(records[1])
    _write_lines(case_dir / "custody.jsonl", lines)
    result = verify_case(case_dir)
    assert not result.ok
    assert "record 3: prev_hash does not match record 2" in str(result.first_problem)  # the edit breaks the chain


def test_out_onto_evidence_is_refused(case_dir: Path) -> None:
    before = {p: p.read_bytes() for p in case_dir.rglob("*") if p.is_file()}
    for target in ("artifacts/aws/instance.json", "custody.jsonl", "case.json", "seals.jsonl", "logs/x.html", "r.html"):
        result = runner.invoke(app, ["report", str(case_dir), "--out", str(case_dir / target)])
        assert result.exit_code == 2, result.output
        assert "refusing to write" in result.output
    (case_dir / "reports").symlink_to(case_dir / "artifacts")
    result = runner.invoke(app, ["report", str(case_dir), "--out", str(case_dir / "reports/aws/instance.json")])
    assert result.exit_code == 2
    assert {p: p.read_bytes() for p in before} == before


def test_report_goes_to_reports_and_is_recorded(case_dir: Path) -> None:
    result = runner.invoke(app, ["report", str(case_dir)])
    assert result.exit_code == 0, result.output
    assert (case_dir / "reports/report.html").is_file()
    assert "custody head" in result.output
    assert _verify(case_dir)[0] == 0


def test_full_disk_during_an_append_leaves_the_case_unchanged(case_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (case_dir / "custody.jsonl").read_bytes()
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with Case.open(case_dir) as case, monkeypatch.context() as patch:
        patch.setattr(durable.os, "write", full_disk)
        with pytest.raises(CloudirError, match="No space left on device"):
            case.custody.append("note")
    assert (case_dir / "custody.jsonl").read_bytes() == before
    assert _verify(case_dir)[0] == 0


def test_torn_last_line_is_moved_aside_and_recorded(case_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def torn(fd: int, data: bytes) -> int:
        real_write(fd, data[:40])
        raise OSError(errno.EIO, "I/O error")

    def no_truncate(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    with Case.open(case_dir) as case, monkeypatch.context() as patch:
        patch.setattr(durable.os, "write", torn)
        patch.setattr(durable.os, "ftruncate", no_truncate)
        with pytest.raises(CloudirError):
            case.custody.append("note")
    code, output = _verify(case_dir)
    assert code == 1
    assert "ends in a torn record (40 bytes without a newline)" in output
    result = runner.invoke(app, ["report", str(case_dir)])  # any command recovers
    assert result.exit_code == 0, result.output
    torn_bytes = (case_dir / "custody.torn").read_bytes()
    assert len(torn_bytes) == 40
    assert torn_bytes.startswith(b'{"action":"note"')
    code, output = _verify(case_dir)
    assert code == 0, output
    assert "a torn record of 40 bytes left by an interrupted write was moved to custody.torn" in output


def test_full_disk_during_a_command_fails_with_one_line_and_the_next_command_recovers(
    case_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write, real_ftruncate = os.write, os.ftruncate

    def on_custody(fd: int) -> bool:
        return Path(f"/proc/self/fd/{fd}").readlink().name == "custody.jsonl"

    def disk_full_on_custody(fd: int, data: bytes) -> int:
        if not on_custody(fd):
            return real_write(fd, data)
        real_write(fd, data[:25])  # the device took part of the line, then ran out of space
        raise OSError(errno.ENOSPC, "No space left on device")

    def cannot_cut_back(fd: int, size: int) -> None:
        if not on_custody(fd):
            real_ftruncate(fd, size)
            return
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(durable.os, "write", disk_full_on_custody)
        patch.setattr(durable.os, "ftruncate", cannot_cut_back)
        result = runner.invoke(app, ["report", str(case_dir)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "No space left on device" in errors[0]
    assert "record was not written" in errors[0]
    assert "Traceback" not in result.output
    code, output = _verify(case_dir)
    assert code == 1
    assert "ends in a torn record (25 bytes without a newline)" in output
    result = runner.invoke(app, ["report", str(case_dir)])  # space is back: the next command recovers
    assert result.exit_code == 0, result.output
    code, output = _verify(case_dir)
    assert code == 0, output
    assert "a torn record of 25 bytes left by an interrupted write was moved to custody.torn" in output


def test_rechained_edit_without_the_key_fails_verify(case_dir: Path) -> None:
    records = [json.loads(line) for line in _lines(case_dir)]
    records[1]["target"] = "i-someone-else"
    lines: list[bytes] = []
    for record in records:  # every link recomputed, as someone without the signing key would
        if lines:
            record["prev_hash"] = line_hash(lines[-1])
        lines.append(canonical_json(record))
    _write_lines(case_dir / "custody.jsonl", lines)
    code, output = _verify(case_dir)
    assert code == 1
    assert "BROKEN: seal 2: it seals record 2 with head" in output
    assert "which this chain does not hold" in output


def test_truncated_chain_fails_verify(case_dir: Path) -> None:
    _write_lines(case_dir / "custody.jsonl", _lines(case_dir)[:-1])
    code, output = _verify(case_dir)
    assert code == 1
    assert "BROKEN: seal 3: it seals record 3" in output
