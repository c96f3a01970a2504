"""Seals signed by a Cloud KMS key version (google-cloud-kms REST against the fake), verified offline."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.cloudkms_server import FakeCloudKms
from moto_fixtures.gcp_contract import expecting_refusals
from providers.gcp import session as gcp_session

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def cloudkms() -> Iterator[FakeCloudKms]:
    with FakeCloudKms() as fake:
        yield fake


@pytest.fixture
def kms_env(cloudkms: FakeCloudKms, monkeypatch: pytest.MonkeyPatch) -> FakeCloudKms:
    monkeypatch.setenv("CLOUDIR_GCP_KMS_EMULATOR_HOST", cloudkms.host)
    return cloudkms


def test_cloud_kms_key_seals_every_record_and_verifies_offline(kms_env: FakeCloudKms, tmp_path: Path, monkeypatch):
    name = kms_env.create_ec_key("forensics-vault", "cloudir", "seal")
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", name)
    with Case.create(tmp_path / "case") as case:
        case.write_json("artifacts/gcp/instance.json", {"name": "web-1"})
    meta = json.loads((tmp_path / "case" / "case.json").read_text())
    assert (meta["signing_algorithm"], meta["signing_key_id"]) == ("ecdsa-p256-sha256", name)
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 0, output
    assert f"sealed by key {meta['signing_key']}" in output
    calls = [c for r in read_records(tmp_path / "case" / "custody.jsonl") for c in r["api_calls"]]
    operations = {c["operation"] for c in calls if c["service"] == "cloudkms"}
    assert operations == {"cryptoKeyVersions.getPublicKey", "cryptoKeyVersions.asymmetricSign"}
    code, output = _cli("key", "show", "--public-out", str(tmp_path / "cloudkms.pem"))
    assert code == 0, output
    assert f"Cloud KMS {name}" in output
    kms_env.versions[name].state = "DISABLED"
    monkeypatch.delenv("CLOUDIR_SIGNING_KMS")
    before = len(kms_env.requests)
    code, output = _cli("verify", str(tmp_path / "case"), "--public-key", str(tmp_path / "cloudkms.pem"))
    assert code == 0, output
    assert len(kms_env.requests) == before  # verification never calls Cloud KMS
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", name)  # a disabled version: the next command fails before appending
    custody = (tmp_path / "case" / "custody.jsonl").read_bytes()
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    assert "is not enabled" in output
    assert len(output.strip().splitlines()) == 1, output
    assert (tmp_path / "case" / "custody.jsonl").read_bytes() == custody


def test_an_unreachable_cloud_kms_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeCloudKms() as short_lived:
        monkeypatch.setenv("CLOUDIR_GCP_KMS_EMULATOR_HOST", short_lived.host)
        monkeypatch.setenv("CLOUDIR_SIGNING_KMS", short_lived.create_ec_key("p", "r", "seal"))
        with Case.create(tmp_path / "case"):
            pass
    custody = (tmp_path / "case" / "custody.jsonl").read_bytes()
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    assert output.startswith("error: cannot read the public key of projects/p/")
    assert len(output.strip().splitlines()) == 1, output
    assert (tmp_path / "case" / "custody.jsonl").read_bytes() == custody


def test_the_fake_refuses_what_cloud_kms_refuses(cloudkms: FakeCloudKms):
    with expecting_refusals(cloudkms):  # every request here is sent to be refused
        name = cloudkms.create_ec_key("p", "r", "probe")
        assert cloudkms.answer("GET", "/v1/projects/p/keyRings/r/publicKey", b"")[0] == 400  # not a key version
        assert cloudkms.answer("GET", f"/v1/{name.rsplit('/', 1)[0]}/x/publicKey", b"")[0] == 400
        assert cloudkms.answer("GET", f"/v1/{name.rsplit('/', 1)[0]}/99/publicKey", b"")[0] == 404
        assert cloudkms.answer("GET", f"/v1/{name}/publicKey", b"")[0] == 200
        sign = f"/v1/{name}:asymmetricSign"
        short = {"digest": {"sha256": base64.b64encode(b"x" * 31).decode()}}
        assert cloudkms.answer("POST", sign, json.dumps(short).encode())[0] == 400
        wrong_crc = {"digest": {"sha256": base64.b64encode(b"x" * 32).decode()}, "digestCrc32c": "1"}
        assert cloudkms.answer("POST", sign, json.dumps(wrong_crc).encode())[0] == 400
        sha384 = {"digest": {"sha384": base64.b64encode(b"x" * 48).decode()}}
        assert cloudkms.answer("POST", sign, json.dumps(sha384).encode())[0] == 400
        assert (
            cloudkms.answer("POST", sign, json.dumps({"digest": {"sha256": short["digest"]["sha256"][:-4]}}).encode())[
                0
            ]
            == 400
        )


def test_seals_refused_by_the_cryptographic_quota_are_signed_once_it_refills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Cloud KMS answers 429 RESOURCE_EXHAUSTED over its per-minute cryptographic quota: the signer waits (here on
    a clock that its sleeps advance) and sends the call again; every refusal is in custody."""
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(gcp_session, "time", SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    with FakeCloudKms() as limited:
        limited.crypto_quota, limited.clock = 2, lambda: now[0]  # the public key and one signature a minute
        monkeypatch.setenv("CLOUDIR_GCP_KMS_EMULATOR_HOST", limited.host)
        monkeypatch.setenv("CLOUDIR_SIGNING_KMS", limited.create_ec_key("p", "r", "seal"))
        with Case.create(tmp_path / "case") as case:
            case.write_json("artifacts/gcp/instance.json", {"name": "web-1"})
            case.write_json("artifacts/gcp/disk.json", {"name": "web-1"})
    calls = [c for r in read_records(tmp_path / "case" / "custody.jsonl") for c in r["api_calls"]]
    signs = [c["outcome"] for c in calls if c["operation"] == "cryptoKeyVersions.asymmetricSign"]
    assert "HTTP 429" in signs  # the refusals are in custody
    assert 0 < max(slept) <= 60
    code, output = _cli("verify", str(tmp_path / "case"))
    assert code == 0, output
