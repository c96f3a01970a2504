"""RFC 3161 timestamps of seals from a time-stamp authority started on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.tsa import LocalTsa

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


@pytest.fixture
def tsa(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTsa]:
    with LocalTsa() as local:
        monkeypatch.setenv("CLOUDIR_TSA_URL", local.url)
        yield local


@pytest.fixture
def stamped(tsa: LocalTsa, tmp_path: Path) -> Path:
    """A case created, then reported on: two commands, two timestamped seals."""
    with Case.create(tmp_path / "case") as case:
        case.write_json("artifacts/aws/instance.json", {"InstanceId": "i-1"})
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 0, output
    (tmp_path / "tsa.pem").write_bytes(tsa.cert_pem)
    return tmp_path / "case"


def test_every_command_timestamps_its_seal_and_verify_checks_the_tokens(stamped: Path, tsa: LocalTsa) -> None:
    assert tsa.requests == 2
    records = [r for r in read_records(stamped / "custody.jsonl") if r["action"] == "seal.timestamp"]
    assert [r["outcome"] for r in records] == ["ok", "ok"]
    assert records[-1]["api_calls"][-1]["operation"] == "TimeStampReq"
    assert len(list((stamped / "timestamps").glob("*.tsr"))) == 2
    code, output = _cli("verify", str(stamped), "--tsa-cert", str(stamped.parent / "tsa.pem"))
    assert code == 0, output
    assert output.count("timestamped at") == 2
    assert "by CN=cloudir test TSA (its certificate pinned)" in output


def test_a_token_from_another_tsa_fails_the_pinned_check(stamped: Path) -> None:
    with LocalTsa("impostor TSA") as other:
        (stamped.parent / "other.pem").write_bytes(other.cert_pem)
    code, output = _cli("verify", str(stamped), "--tsa-cert", str(stamped.parent / "other.pem"))
    assert code == 1
    assert "its signature is not valid for the TSA certificate" in output


def test_a_rewritten_seal_no_longer_matches_its_timestamp(stamped: Path) -> None:
    record = next(r for r in read_records(stamped / "custody.jsonl") if r["action"] == "seal.timestamp")
    token = stamped / record["details"]["token"]
    later = sorted((stamped / "timestamps").glob("*.tsr"))[-1]
    token.write_bytes(later.read_bytes())  # a token over another seal, put in its place
    code, output = _cli("verify", str(stamped))
    assert code == 1
    assert f"timestamp {record['details']['token']} (record {record['seq']}): it" in output
    assert "its message imprint is not the SHA-256 of the seal it names" in output


def test_an_unreachable_tsa_fails_the_command_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Case.create(tmp_path / "case"):
        pass
    monkeypatch.setenv("CLOUDIR_TSA_URL", "http://127.0.0.1:9/tsa")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "did not answer" in errors[0]
    assert read_records(tmp_path / "case" / "custody.jsonl")[-1]["outcome"] == "failed"
    assert _cli("verify", str(tmp_path / "case"))[0] == 0
