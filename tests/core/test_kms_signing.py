"""Seals signed by an AWS KMS asymmetric key (moto): recorded in the case, verified offline from the public key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.aws import AwsSandbox

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


def test_kms_key_seals_every_record_and_verifies_offline(
    aws_sandbox: AwsSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    algorithm = "ecdsa-p256-sha256"
    kms = aws_sandbox.client("kms")
    arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    fingerprint = "SHA256:" + hashlib.sha256(kms.get_public_key(KeyId=arn)["PublicKey"]).hexdigest()
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", arn)
    with Case.create(tmp_path / "case") as case:
        case.write_json("artifacts/aws/instance.json", {"InstanceId": "i-1"})
    meta = json.loads((tmp_path / "case" / "case.json").read_text())
    assert (meta["signing_key"], meta["signing_algorithm"], meta["signing_key_id"]) == (fingerprint, algorithm, arn)
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 0, output
    assert f"sealed by key {fingerprint}" in output
    calls = [c["operation"] for r in read_records(tmp_path / "case" / "custody.jsonl") for c in r["api_calls"]]
    assert "GetPublicKey" in calls
    assert "Sign" in calls  # each seal's Sign call is listed in the record after it
    code, output = _cli("key", "show", "--public-out", str(tmp_path / "kms.pem"))
    assert code == 0, output
    assert f"AWS KMS {arn}" in output
    assert f"algorithm {algorithm}" in output
    kms.disable_key(KeyId=arn.rsplit("/", 1)[1])  # verification never calls KMS
    monkeypatch.delenv("CLOUDIR_SIGNING_KMS")
    code, output = _cli("verify", str(tmp_path / "case"), "--public-key", str(tmp_path / "kms.pem"))
    assert code == 0, output
    assert f"key {fingerprint}" in output
    code, output = _cli("verify", str(tmp_path / "case"), "--public-key", str(tmp_path / "missing.pem"))
    assert code != 0


def test_forged_seal_by_a_file_key_is_the_wrong_key_for_a_kms_case(aws_sandbox, tmp_path, monkeypatch):
    arn = aws_sandbox.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", arn)
    with Case.create(tmp_path / "case"):
        pass
    monkeypatch.delenv("CLOUDIR_SIGNING_KMS")  # the local file key now signs: the case refuses it
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2
    assert "is sealed with key SHA256:" in output


def test_a_symmetric_or_rsa_kms_key_is_refused(aws_sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch):
    kms = aws_sandbox.client("kms")
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", kms.create_key()["KeyMetadata"]["Arn"])
    code, output = _cli("key", "show")
    assert code == 2
    assert "is not a signing key" in output
    monkeypatch.setenv(
        "CLOUDIR_SIGNING_KMS", kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    )
    code, output = _cli("key", "show")
    assert code == 2
    assert "has key spec RSA_2048" in output


def test_an_unknown_key_form_names_what_is_supported(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", "pkcs11:token=seal")
    code, output = _cli("key", "show")
    assert code == 2
    assert "is not supported" in output
    assert "AWS KMS asymmetric key ARN" in output
    assert "Azure Key Vault key" in output
    assert "Cloud KMS key version" in output
