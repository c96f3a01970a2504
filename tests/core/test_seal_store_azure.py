"""Write-once seal copies in Azure blobs (version-level immutability, Locked) through the real SDK against the fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import line_hash, read_records
from cloudir.seal import append_seal, make_seal
from cloudir.signing import load_signer
from moto_fixtures.blob_server import FakeBlobService
from providers.azure.session import StaticTokenCredential

runner = CliRunner()
ACCOUNT, CONTAINER = "forensicseals", "seals"


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def blob_service() -> Iterator[FakeBlobService]:
    """One fake Blob service for the module: a container with version-level immutability and one without."""
    with FakeBlobService() as fake:
        fake.add_container(ACCOUNT, CONTAINER, version_level_worm=True)
        fake.add_container(ACCOUNT, "plain", version_level_worm=False)
        yield fake


@pytest.fixture
def blob_env(blob_service: FakeBlobService, monkeypatch: pytest.MonkeyPatch) -> FakeBlobService:
    """The environment that points the store at the fake (endpoint, token, its CA)."""
    monkeypatch.setenv("CLOUDIR_AZURE_BLOB_ENDPOINT", blob_service.base_url + "/{account}")
    monkeypatch.setenv("AZURE_STORAGE_ACCESS_TOKEN", "sandbox-storage-token")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", blob_service.ca_file)
    return blob_service


def _container(fake: FakeBlobService) -> ContainerClient:
    return ContainerClient(f"{fake.base_url}/{ACCOUNT}", CONTAINER, credential=StaticTokenCredential("t"))


def test_every_command_stores_its_seal_in_a_locked_blob_and_verify_remote_compares(blob_env, tmp_path: Path):
    blob_env_url = f"azblob://{ACCOUNT}/{CONTAINER}/cases"
    root = tmp_path / "case"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLOUDIR_SEAL_STORE", blob_env_url)
        with Case.create(root, case_id="cir-azure-anchored") as case:
            case.write_json("artifacts/azure/vm.json", {"name": "web-vm-01"})
        keep = len(read_records(root / "custody.jsonl"))
        code, output = _cli("report", str(root))
        assert code == 0, output
        assert f"stored write-once in {blob_env_url}" in output
        stored = [r for r in read_records(root / "custody.jsonl") if r["action"] == "seal.store"]
        assert [r["outcome"] for r in stored] == ["ok", "ok"]
        calls = [c["operation"] for c in stored[-1]["api_calls"]]
        assert calls == ["GetContainerProperties", "PutBlob"]
        assert all(c["request_id"] for c in stored[-1]["api_calls"])
        container = _container(blob_env)
        blobs = list(container.list_blobs("cases/cir-azure-anchored/", include=["versions", "immutabilitypolicy"]))
        assert len(blobs) == 2
        assert {blob.immutability_policy.policy_mode for blob in blobs} == {"locked"}
        last = stored[-1]["details"]
        local = (root / "seals.jsonl").read_bytes().splitlines()
        assert container.download_blob("cases/" + last["object"]).readall() == local[last["seal_records"] - 1]
        for blob in blobs:  # the service refuses to delete or replace a seal copy
            with pytest.raises(HttpResponseError, match="BlobImmutableDueToPolicy"):
                container.delete_blob(blob.name, version_id=blob.version_id)
            with pytest.raises(HttpResponseError, match="BlobImmutableDueToPolicy"):
                container.upload_blob(blob.name, b"{}", overwrite=True)
        code, output = _cli("verify", str(root), "--remote")
        assert code == 0, output
        assert f"2 stored seal(s) in {blob_env_url} compared" in output

        # Someone holding the signing key rolls the case back to before the report and re-seals it.
        lines = root.joinpath("custody.jsonl").read_bytes().splitlines()[:keep]
        root.joinpath("custody.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
        root.joinpath("seals.jsonl").write_bytes(b"")
        seal = make_seal(load_signer(), case_id="cir-azure-anchored", records=keep, head=line_hash(lines[-1]), time="t")
        append_seal(root, seal)
        (root / "reports" / "report.html").unlink()
        code, output = _cli("verify", str(root), "--remote")
        assert code == 1, output
        assert f"but the local chain holds {keep}: records were removed from the local chain" in output


def test_container_without_version_level_immutability_is_refused_in_one_line(blob_env, tmp_path, monkeypatch):
    with Case.create(tmp_path / "case"):
        pass
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", f"azblob://{ACCOUNT}/plain")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert lines[1].startswith(
        f"error: azblob://{ACCOUNT}/plain has no version-level immutability: a seal stored there could be deleted or "
        "replaced"
    )
    assert len(lines) == 2, output
    failed = read_records(tmp_path / "case" / "custody.jsonl")[-1]
    assert (failed["action"], failed["outcome"]) == ("seal.store", "failed")
    assert [c["operation"] for c in failed["api_calls"]] == ["GetContainerProperties"]
    assert not blob_env.accounts[ACCOUNT]["plain"].blobs


def test_the_fake_refuses_what_the_blob_service_refuses(blob_service: FakeBlobService):
    headers = {"x-ms-version": "2025-01-05", "x-ms-date": "Tue, 01 Dec 2026 16:00:00 GMT", "authorization": "Bearer t"}
    path = f"/{ACCOUNT}/{CONTAINER}/probe"
    assert blob_service.handle("PUT", path, {**headers, "content-length": "0"}, b"")[0] == 400  # no x-ms-blob-type
    unknown = {**headers, "x-ms-version": "2099-01-01", "x-ms-blob-type": "BlockBlob", "content-length": "0"}
    assert blob_service.handle("PUT", path, unknown, b"")[1]["x-ms-error-code"] == "InvalidHeaderValue"
    anonymous = {key: value for key, value in headers.items() if key != "authorization"}
    assert blob_service.handle("GET", path, anonymous, b"")[0] == 401
    create = {**headers, "x-ms-blob-type": "BlockBlob", "content-length": "1", "if-none-match": "*"}
    assert blob_service.handle("PUT", path, create, b"x")[0] == 201
    assert blob_service.handle("PUT", path, create, b"y")[1]["x-ms-error-code"] == "BlobAlreadyExists"
    policy = {**create, "x-ms-immutability-policy-until-date": "Tue, 01 Dec 2099 16:00:00 GMT"}
    policy["x-ms-immutability-policy-mode"] = "Locked"
    old = {**policy, "x-ms-version": "2020-08-04"}
    assert blob_service.handle("PUT", f"/{ACCOUNT}/{CONTAINER}/old", old, b"x")[0] == 400
    plain = blob_service.handle("PUT", f"/{ACCOUNT}/plain/probe", policy, b"x")
    assert plain[1]["x-ms-error-code"] == "ContainerNotEnabledForVersionLevelWorm"
