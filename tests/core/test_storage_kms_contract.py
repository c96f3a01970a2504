"""The Cloud Storage and Cloud KMS fakes hold every request to Google's discovery documents (storage v1, cloudkms v1).

Each malformed request is sent twice: refused with the documented 400 in Google's error format by the strict fake,
and let through by the same fake with its contract check off, so each test could fail against a lenient fake.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import storage

from moto_fixtures.cloudkms_server import FakeCloudKms
from moto_fixtures.gcp_contract import ContractRefusalError, contract, expecting_refusals
from moto_fixtures.gcs_server import FakeGcs

BUCKET = "forensic-seals"
BOUNDARY = "cloudir-test-boundary"


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcs]:
    """The fake, where every test sends refused requests on purpose (each asserts on them)."""
    with FakeGcs() as fake, expecting_refusals(fake):
        fake.add_bucket(BUCKET, retention_seconds=86400, locked=True)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.host)
        yield fake


@pytest.fixture
def kms() -> Iterator[FakeCloudKms]:
    """The fake, where every test sends refused requests on purpose (each asserts on them)."""
    with FakeCloudKms() as fake, expecting_refusals(fake):
        yield fake


def _strict_then_lenient(fake: FakeGcs | FakeCloudKms, send: Any) -> tuple[requests.Response, requests.Response]:
    refused = send()
    fake.contract = None
    return refused, send()


def _multipart(metadata: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    body = (
        (
            f"--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(metadata)}\r\n"
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, {"Content-Type": f'multipart/related; boundary="{BOUNDARY}"'}


def test_unknown_object_metadata_in_an_upload_is_refused_in_the_json_api_format(gcs: FakeGcs) -> None:
    body, headers = _multipart({"name": "seal.json", "holdForever": True}, b"{}")
    url = f"{gcs.host}/upload/storage/v1/b/{BUCKET}/o?uploadType=multipart&ifGenerationMatch=0"
    refused, lenient = _strict_then_lenient(gcs, lambda: requests.post(url, data=body, headers=headers, timeout=10))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == 400
    assert 'Unknown name "holdForever"' in error["message"]
    assert error["errors"] == [{"message": error["message"], "domain": "global", "reason": "invalid"}]
    assert gcs.refusals == [f"POST /upload/storage/v1/b/{BUCKET}/o: {error['message']}"]
    assert lenient.status_code == 200  # a lenient fake stored it


def test_parameters_outside_their_documented_types_through_google_cloud_storage(gcs: FakeGcs) -> None:
    client = storage.Client()
    bucket = client.bucket(BUCKET)
    with pytest.raises(gexc.BadRequest) as refused:
        bucket.reload(projection="everything")  # projection is one of full, noAcl
    assert "Invalid value at 'projection', \"everything\": not one of the enum values" in str(refused.value.message)
    assert refused.value.errors[0]["reason"] == "invalid"
    listing = f"{gcs.host}/storage/v1/b/{BUCKET}/o?maxResults=-1"  # uint32
    refused_list, lenient_list = _strict_then_lenient(gcs, lambda: requests.get(listing, timeout=10))
    assert refused_list.status_code == 400
    assert "(uint32): -1 is out of range" in refused_list.json()["error"]["message"]
    assert lenient_list.status_code == 200
    bucket.reload(projection="everything")  # the lenient fake answers it


def test_the_tools_own_calls_pass_and_unknown_paths_are_404(gcs: FakeGcs) -> None:
    blob = storage.Client().bucket(BUCKET).blob("cases/c-1/seal.json")
    blob.upload_from_string(b"{}", content_type="application/json", if_generation_match=0, checksum="crc32c")
    assert blob.download_as_bytes() == b"{}"
    assert gcs.refusals == []
    response = requests.post(f"{gcs.host}/storage/v1/b/{BUCKET}/o/x/exfiltrate", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["errors"][0]["reason"] == "notFound"


def test_a_malformed_sign_request_is_400_with_bad_request_details(kms: FakeCloudKms) -> None:
    name = kms.create_ec_key("p", "r", "seal")
    url = f"{kms.base_url}/v1/{name}:asymmetricSign"
    digest = base64.b64encode(b"x" * 32).decode()

    def sign(body: dict[str, Any]) -> Any:
        return lambda: requests.post(url, json=body, timeout=10)

    refused, lenient = _strict_then_lenient(kms, sign({"digest": {"sha256": digest}, "hashAlgorithm": "SHA256"}))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "hashAlgorithm", "description": error["message"]}]}
    ]  # fmt: skip
    assert lenient.status_code == 200  # the fake's own handler ignores a field it does not read
    kms.contract = contract(("cloudkms",))
    bad_crc = requests.post(url, json={"digest": {"sha256": digest}, "digestCrc32c": "crc"}, timeout=10)
    assert bad_crc.status_code == 400
    assert "Invalid value at 'digestCrc32c' (INT64), 'crc'" in bad_crc.json()["error"]["message"]
    bad_key_format = requests.get(f"{kms.base_url}/v1/{name}/publicKey?publicKeyFormat=PEMX", timeout=10)
    assert bad_key_format.status_code == 400
    assert requests.get(f"{kms.base_url}/v1/{name}/publicKey?publicKeyFormat=PEM", timeout=10).ok
    assert len(kms.refusals) == 3


def _list_with_a_negative_page_size() -> None:
    with FakeGcs() as fake:
        fake.add_bucket(BUCKET, retention_seconds=None, locked=False)
        assert requests.get(f"{fake.host}/storage/v1/b/{BUCKET}/o?maxResults=-1", timeout=10).status_code == 400


def _ask_for_an_undocumented_key_format(expected: bool) -> None:
    with FakeCloudKms() as signer, expecting_refusals(signer) if expected else nullcontext():
        name = signer.create_ec_key("p", "r", "seal")
        assert (
            requests.get(f"{signer.base_url}/v1/{name}/publicKey?publicKeyFormat=PEMX", timeout=10).status_code == 400
        )


def test_a_refused_request_fails_the_code_that_opened_the_fake_unless_expected() -> None:
    """A test (or the demo) whose requests the contract refuses fails when the fake closes, although the answer was a
    400 it may have tolerated."""
    with pytest.raises(ContractRefusalError, match="maxResults"):
        _list_with_a_negative_page_size()
    with pytest.raises(ContractRefusalError, match="publicKeyFormat"):
        _ask_for_an_undocumented_key_format(expected=False)
    _ask_for_an_undocumented_key_format(expected=True)
