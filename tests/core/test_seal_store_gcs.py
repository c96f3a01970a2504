"""Write-once seal copies in a GCS bucket with a locked retention policy, through google-cloud-storage and the fake."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from urllib.error import HTTPError

import pytest
from google.api_core.exceptions import Forbidden, PreconditionFailed
from google.cloud import storage
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records
from cloudir.durable import canonical_json
from cloudir.errors import CloudirError
from cloudir.seal import make_seal, parse_seal
from cloudir.signing import load_signer
from moto_fixtures.gcp_contract import expecting_refusals
from moto_fixtures.gcs_server import FakeGcs
from providers.gcp.seal_store import GcsSealStore

runner = CliRunner()
BUCKET = "forensic-seals"
YEAR = 365 * 86400


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def gcs() -> Iterator[FakeGcs]:
    """One fake Cloud Storage: a bucket locked for a year (the default retain_days), one locked for a day, one
    unlocked, one bare."""
    with FakeGcs() as fake:
        fake.add_bucket(BUCKET, retention_seconds=YEAR, locked=True)
        fake.add_bucket("short-seals", retention_seconds=86400, locked=True)
        fake.add_bucket("unlocked-seals", retention_seconds=YEAR, locked=False)
        fake.add_bucket("plain-seals", retention_seconds=None, locked=False)
        yield fake


@pytest.fixture
def gcs_env(gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> FakeGcs:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.host)
    return gcs


def test_every_command_stores_its_seal_under_locked_retention_and_verify_remote_compares(
    gcs_env, tmp_path, monkeypatch
):
    url = f"gs://{BUCKET}/cases"
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", url)
    root = tmp_path / "case"
    with Case.create(root, case_id="cir-gcs-anchored") as case:
        case.write_json("artifacts/gcp/instance.json", {"name": "web-1"})
    code, output = _cli("report", str(root))
    assert code == 0, output
    assert f"stored write-once in {url}" in output
    stored = [r for r in read_records(root / "custody.jsonl") if r["action"] == "seal.store"]
    assert [r["outcome"] for r in stored] == ["ok", "ok"]
    assert [c["operation"] for c in stored[-1]["api_calls"]] == ["buckets.get", "objects.insert"]
    assert all(c["request_id"] for c in stored[-1]["api_calls"])
    bucket = storage.Client().bucket(BUCKET)
    blobs = list(bucket.list_blobs(prefix="cases/cir-gcs-anchored/", versions=True))
    assert len(blobs) == 2
    last = stored[-1]["details"]
    assert last["version"] == str(next(b.generation for b in blobs if b.name == "cases/" + last["object"]))
    local = (root / "seals.jsonl").read_bytes().splitlines()
    assert bucket.blob("cases/" + last["object"]).download_as_bytes() == local[last["seal_records"] - 1]
    for blob in blobs:  # the service refuses to delete or replace a seal copy under the retention period
        with pytest.raises(Forbidden, match="is subject to bucket's retention policy"):
            blob.delete()
        with pytest.raises(Forbidden, match="is subject to bucket's retention policy"):
            bucket.blob(blob.name).upload_from_string(b"{}")
        with pytest.raises(PreconditionFailed):
            bucket.blob(blob.name).upload_from_string(b"{}", if_generation_match=0)
    code, output = _cli("verify", str(root), "--remote")
    assert code == 0, output
    assert f"2 stored seal(s) in {url} compared" in output

    # The key holder re-signs the stored seal's head with another time: valid locally, not the stored copy.
    seals = root.joinpath("seals.jsonl").read_bytes().splitlines()
    index = last["seal_records"] - 1
    seal = parse_seal(seals[index])
    resealed = make_seal(load_signer(), case_id=seal.case_id, records=seal.records, head=seal.head, time="2020")
    seals[index] = canonical_json(asdict(resealed))
    root.joinpath("seals.jsonl").write_bytes(b"".join(line + b"\n" for line in seals))
    assert _cli("verify", str(root))[0] == 0  # offline, the re-signed seal is valid
    code, output = _cli("verify", str(root), "--remote")
    assert code == 1, output
    assert f"local seal of record {seal.records} differs from its stored copy" in output


@pytest.mark.parametrize("bucket", ["unlocked-seals", "plain-seals"])
def test_bucket_without_a_locked_retention_policy_is_refused_in_one_line(gcs_env, tmp_path, monkeypatch, bucket):
    with Case.create(tmp_path / "case"):
        pass
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", f"gs://{bucket}")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert lines[1].startswith(f"error: gs://{bucket} has no locked retention policy: a seal stored there could be")
    assert len(lines) == 2, output
    failed = read_records(tmp_path / "case" / "custody.jsonl")[-1]
    assert (failed["action"], failed["outcome"]) == ("seal.store", "failed")
    assert [c["operation"] for c in failed["api_calls"]] == ["buckets.get"]
    assert not gcs_env.buckets[bucket].objects


def test_bucket_locked_for_less_than_retain_days_is_refused(gcs_env, tmp_path, monkeypatch):
    with Case.create(tmp_path / "case"):
        pass
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", "gs://short-seals")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    assert "gs://short-seals holds objects for 1 day(s) (86400 s), less than the 365 days seals must be kept" in output
    assert not gcs_env.buckets["short-seals"].objects
    monkeypatch.setenv("CLOUDIR_SEAL_RETAIN_DAYS", "1")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 0, output
    assert len(gcs_env.buckets["short-seals"].objects) == 1


def test_without_credentials_the_store_fails_at_once_without_probing(tmp_path, monkeypatch):
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "K_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    with socket.create_server(("127.0.0.1", 0)) as metadata:  # a metadata server that never answers
        metadata.setblocking(False)
        monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{metadata.getsockname()[1]}")
        with Case.create(tmp_path / "case"):
            pass
        monkeypatch.setenv("CLOUDIR_SEAL_STORE", f"gs://{BUCKET}")
        code, output = _cli("report", str(tmp_path / "case"))
        with pytest.raises(BlockingIOError):  # google-auth's metadata probe never connected
            metadata.accept()
    assert code == 2, output
    assert f"error: no Google credentials for gs://{BUCKET}" in output


def test_the_fake_takes_one_write_a_second_per_object_name_as_cloud_storage_does(
    gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch
):
    second = [1000.0]
    monkeypatch.setattr(gcs, "clock", lambda: second[0])
    headers = {"content-type": "text/plain"}

    def write(name: str) -> int:
        return gcs.handle("POST", f"/upload/storage/v1/b/plain-seals/o?uploadType=media&name={name}", headers, b"x")[0]

    assert write("rapid") == 200
    assert write("other") == 200  # another name has its own rate
    status, _, body = gcs.handle(
        "POST", "/upload/storage/v1/b/plain-seals/o?uploadType=media&name=rapid", headers, b"y"
    )
    assert status == 429
    assert json.loads(body)["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    second[0] += 1.0
    assert write("rapid") == 200  # a second later


def test_the_fake_refuses_what_cloud_storage_refuses(gcs: FakeGcs):
    with expecting_refusals(gcs):  # every request here is sent to be refused

        def post(query: str, body: bytes, content_type: str) -> int:
            request = urllib.request.Request(
                f"{gcs.host}/upload/storage/v1/b/{BUCKET}/o?{query}", body, {"Content-Type": content_type}
            )
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status
            except HTTPError as exc:
                return exc.code

        assert post("uploadType=resumable&name=x", b"x", "text/plain") == 400
        assert post("uploadType=media", b"x", "text/plain") == 400  # no object name
        assert post("uploadType=multipart", b"not multipart", "text/plain") == 400
        assert post("uploadType=media&name=probe&ifGenerationMatch=zero", b"x", "text/plain") == 400
        assert post("uploadType=media&name=probe&ifGenerationMatch=0", b"x", "text/plain") == 200
        assert post("uploadType=media&name=probe&ifGenerationMatch=0", b"y", "text/plain") == 412
        assert post("uploadType=media&name=probe", b"y", "text/plain") == 403


def test_a_seal_whose_create_answer_was_lost_is_taken_as_stored_and_another_seal_under_its_name_refused(gcs_env):
    """The library resends an upload whose answer was lost; create-once then answers 412 for the tool's own write."""
    store = GcsSealStore(f"gs://{BUCKET}/lost", retain_days=365)
    seal = b'{"records": 3}'
    first = storage.Client().bucket(BUCKET).blob("lost/cir-lost/seal-3.json")
    first.upload_from_string(seal, if_generation_match=0)  # the write whose answer never came back
    stored = store.put("cir-lost/seal-3.json", seal)
    assert stored["version"] == str(first.generation)
    assert stored["retain_until"]
    with pytest.raises(CloudirError, match="already holds a different seal"):
        store.put("cir-lost/seal-3.json", b'{"records": 4}')
