"""Seals signed by an Azure Key Vault EC key (azure-keyvault-keys against the fake vault), verified offline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.keyvault_server import FakeKeyVault

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def vault() -> Iterator[FakeKeyVault]:
    with FakeKeyVault() as fake:
        yield fake


@pytest.fixture
def vault_env(vault: FakeKeyVault, monkeypatch: pytest.MonkeyPatch) -> FakeKeyVault:
    monkeypatch.setenv("AZURE_KEYVAULT_ACCESS_TOKEN", "sandbox-vault-token")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", vault.ca_file)
    return vault


def test_key_vault_key_seals_every_record_and_verifies_offline(vault_env: FakeKeyVault, tmp_path: Path, monkeypatch):
    kid = vault_env.create_ec_key("seal")
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", kid.rsplit("/", 1)[0])  # no version: the current one is pinned
    with Case.create(tmp_path / "case") as case:
        case.write_json("artifacts/azure/vm.json", {"name": "web-vm-01"})
    meta = json.loads((tmp_path / "case" / "case.json").read_text())
    assert (meta["signing_algorithm"], meta["signing_key_id"]) == ("ecdsa-p256-sha256", kid)
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 0, output
    assert f"sealed by key {meta['signing_key']}" in output
    calls = [c for r in read_records(tmp_path / "case" / "custody.jsonl") for c in r["api_calls"]]
    operations = [c["operation"] for c in calls if c["service"] == "Microsoft.KeyVault"]
    assert "keys/read" in operations
    assert "keys/sign/action" in operations  # each seal's Sign call is listed in the record after it
    assert all(c["request_id"] for c in calls if c["service"] == "Microsoft.KeyVault")
    code, output = _cli("key", "show", "--public-out", str(tmp_path / "vault.pem"))
    assert code == 0, output
    assert f"Azure Key Vault {kid}" in output
    vault_env.disable("seal")
    monkeypatch.delenv("CLOUDIR_SIGNING_KMS")
    before = len(vault_env.requests)
    code, output = _cli("verify", str(tmp_path / "case"), "--public-key", str(tmp_path / "vault.pem"))
    assert code == 0, output
    assert f"key {meta['signing_key']}" in output
    assert len(vault_env.requests) == before  # verification never calls the vault
    other = vault_env.create_ec_key("other")
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", other)
    assert _cli("key", "show", "--public-out", str(tmp_path / "other.pem"))[0] == 0
    code, output = _cli("verify", str(tmp_path / "case"), "--public-key", str(tmp_path / "other.pem"))
    assert code == 1
    assert "WRONG KEY" in output


def test_an_unreachable_vault_fails_the_command_before_anything_is_appended(vault_env, tmp_path, monkeypatch):
    with FakeKeyVault() as short_lived:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", short_lived.ca_file)
        monkeypatch.setenv("CLOUDIR_SIGNING_KMS", short_lived.create_ec_key("seal"))
        with Case.create(tmp_path / "case"):
            pass
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", vault_env.ca_file)  # a readable CA: the vault itself is gone
    custody = (tmp_path / "case" / "custody.jsonl").read_bytes()
    seals = (tmp_path / "case" / "seals.jsonl").read_bytes()
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: cannot read the public key of https://127.0.0.1:")
    assert "ServiceRequestError" in lines[0]
    assert (tmp_path / "case" / "custody.jsonl").read_bytes() == custody  # nothing appended, nothing unsealed
    assert (tmp_path / "case" / "seals.jsonl").read_bytes() == seals
    assert not (tmp_path / "case" / "reports").exists()


def test_a_key_that_cannot_sign_is_refused(vault_env: FakeKeyVault, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", vault_env.create_ec_key("verify-only", operations=("verify",)))
    code, output = _cli("key", "show")
    assert code == 2
    assert "with operations ['verify']" in output
    monkeypatch.setenv("CLOUDIR_SIGNING_KMS", f"{vault_env.base_url}/keys/missing")
    code, output = _cli("key", "show")
    assert code == 2
    assert "KeyNotFound" in output


def test_the_fake_vault_refuses_what_key_vault_refuses(vault: FakeKeyVault):
    kid = vault.create_ec_key("probe")
    path = kid.removeprefix(vault.base_url)
    auth = {"authorization": "Bearer t"}
    assert vault.handle("GET", path, auth, b"")[0] == 400  # no api-version
    status, headers, _ = vault.handle("GET", path + "?api-version=7.4", {}, b"")
    assert status == 401
    assert 'resource="https://vault.azure.net"' in headers["WWW-Authenticate"]
    sign = path + "/sign?api-version=7.4"
    assert vault.handle("POST", sign, auth, json.dumps({"alg": "RS256", "value": "AAAA"}).encode())[0] == 400
    assert vault.handle("POST", sign, auth, json.dumps({"alg": "ES256", "value": "AAAA"}).encode())[0] == 400
    digest = "A" * 43  # 32 bytes, base64url
    assert vault.handle("POST", sign, auth, json.dumps({"alg": "ES256", "value": digest}).encode())[0] == 200
    vault.disable("probe")
    assert vault.handle("POST", sign, auth, json.dumps({"alg": "ES256", "value": digest}).encode())[0] == 403
