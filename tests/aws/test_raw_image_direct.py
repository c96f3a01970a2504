"""The readers' direct GetSnapshotBlock path: botocore's signature, botocore on every answer that is not clean, the
same image as botocore's, hostile ids and tokens, and the sandbox's SigV4 strictness."""

import asyncio
import hashlib
import http.client
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from rich.console import Console

from cloudir.case import Case
from cloudir.custody import each_call, read_records, verify_case
from moto_fixtures.aws import BLOCK, AwsSandbox
from providers.aws import raw_image as raw_image_module
from providers.aws.raw_image import BlockChecksumError, write_raw_image
from providers.ebs_reader import BLOCK_BYTES, OK, Answer, DirectReads, Reader

ENDPOINT = "https://ebs.eu-west-1.amazonaws.com"
PATH, QUERY = "/snapshots/snap-0123abcd/blocks/7", "blockToken=AAUBAb%2Bx%2F%3D"
MODEL = botocore.session.get_session().get_service_model("ebs").operation_model("GetSnapshotBlock")


def _botocore_authorization(credentials: Credentials, amz_date: str, endpoint: str = ENDPOINT) -> str:
    """The Authorization botocore's SigV4Auth computes for the direct path's request (same headers and time)."""
    request = AWSRequest(method="GET", url=f"{endpoint}{PATH}?{QUERY}", headers={"X-Amz-Date": amz_date})
    if credentials.token:
        request.headers["X-Amz-Security-Token"] = credentials.token
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(credentials, "ebs", "eu-west-1")
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    return f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={signed}, Signature={signature}"


def _direct(credentials: tuple[str, str, str | None], endpoint: str = ENDPOINT) -> DirectReads:
    return DirectReads(endpoint, "eu-west-1", credentials, MODEL)


@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjEKL//////////wEaCXVzLWVhc3QtMSJH+session/token="])
@pytest.mark.parametrize("endpoint", [ENDPOINT, "http://127.0.0.1:40123"])
def test_the_direct_signature_is_botocores_sigv4(token: str | None, endpoint: str):
    direct = _direct(("AKIAEXAMPLEKEY12345", "secret/key+example", token), endpoint)
    for amz_date in ("20261203T235959Z", "20261204T000001Z"):  # the day's signing key is cached, then a new day's
        expected = _botocore_authorization(Credentials("AKIAEXAMPLEKEY12345", "secret/key+example", token), amz_date)
        expected_here = _botocore_authorization(
            Credentials("AKIAEXAMPLEKEY12345", "secret/key+example", token), amz_date, endpoint
        )
        assert direct.sign(PATH, QUERY, amz_date)["authorization"] == expected_here
        if endpoint == ENDPOINT:
            assert expected_here == expected


def test_refreshed_credentials_sign_as_botocore_signs_with_them():
    """Expired credentials are refreshed before they are frozen and sent to the readers; the direct path signs with
    the refreshed ones exactly as botocore does, and not as with the expired ones."""
    issued = iter([("first", "2000-01-01T00:00:00Z"), ("second", "2999-01-01T00:00:00Z")])

    def refresh() -> dict[str, str]:
        name, expiry = next(issued)
        return {
            "access_key": f"AKIA{name.upper()}KEY0000",
            "secret_key": f"{name}-secret",
            "token": f"{name}-token",
            "expiry_time": expiry,
        }

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    frozen = credentials.get_frozen_credentials()  # the first ones expired: refreshed
    assert frozen.token == "second-token"
    amz_date = "20261203T120000Z"
    direct = _direct((frozen.access_key, frozen.secret_key, frozen.token))
    signed = direct.sign(PATH, QUERY, amz_date)["authorization"]
    assert signed == _botocore_authorization(Credentials(frozen.access_key, frozen.secret_key, frozen.token), amz_date)
    expired = Credentials("AKIAFIRSTKEY0000", "first-secret", "first-token")
    assert signed != _botocore_authorization(expired, amz_date)


def _image(sandbox: AwsSandbox, case: Case, snapshot_id: str, name: str) -> dict[str, Any]:
    provider = sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):
        return write_raw_image(provider.clients, snapshot_id, case, f"images/aws/{name}.raw", Console(quiet=True))


def _block_reads(case: Case) -> list[tuple[str, int | None]]:
    calls = [c for r in read_records(case.root / "custody.jsonl") for e in r.get("api_calls", []) for c in each_call(e)]
    return [(c["outcome"], c["http_status"]) for c in calls if c["operation"] == "GetSnapshotBlock"]


def test_direct_reads_image_the_snapshot_as_botocore_reads_it(aws_sandbox: AwsSandbox, tmp_path):
    blocks = {i: hashlib.sha256(bytes([i])).digest() * (BLOCK // 32) for i in range(0, 40, 3)}
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    case = Case.create(tmp_path / "c")
    aws_sandbox.clear_block_stats()
    direct = _image(aws_sandbox, case, snapshot_id, "direct")
    assert aws_sandbox.block_reads_sent_by_botocore == 0  # the first reads of each reader too
    for index in blocks:  # every direct send now closes unanswered: botocore reads each block
        aws_sandbox.fault_block_reads(snapshot_id, index, ("close",))
    aws_sandbox.clear_block_stats()
    botocore_read = _image(aws_sandbox, case, snapshot_id, "botocore")
    assert aws_sandbox.block_reads_sent_by_botocore == len(blocks)
    assert botocore_read["sha256"] == direct["sha256"]
    reads = _block_reads(case)
    assert reads.count(("ok", 200)) == 2 * len(blocks)
    assert reads.count(("ConnectionError", None)) == len(blocks)


@pytest.mark.parametrize(
    ("faults", "recorded"),
    [
        ([("status", 400, "RequestThrottledException")], ("RequestThrottledException", 400)),
        ([("status", 400, "RequestThrottledException")] * 2, ("RequestThrottledException", 400)),  # botocore retries
        ([("status", 500, "InternalServerException")], ("InternalServerException", 500)),
        ([("status", 503, "<script>x</script>: hostile")], ("UnknownError", 503)),
        ([("drop", "x-amz-Checksum")], ("MalformedResponse", 200)),
        ([("drop", "x-amz-Data-Length")], ("MalformedResponse", 200)),
        ([("drop", "x-amz-Checksum-Algorithm")], ("MalformedResponse", 200)),
        ([("close",)], ("ConnectionError", None)),
        ([("length", BLOCK_BYTES + 1, BLOCK_BYTES + 1)], ("MalformedResponse", 200)),  # longer than a block
        ([("length", 2 * BLOCK, BLOCK)], ("MalformedResponse", 200)),  # Content-Length is not x-amz-Data-Length
        ([("length", BLOCK // 2, BLOCK)], ("MalformedResponse", 200)),
    ],
)
def test_an_answer_that_is_not_clean_is_sent_again_through_botocore(
    aws_sandbox: AwsSandbox, tmp_path, faults: list[tuple[Any, ...]], recorded: tuple[str, int | None]
):
    blocks = {i: bytes([65 + i]) * BLOCK for i in range(4)}
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    aws_sandbox.fault_block_reads(snapshot_id, 3, *faults)
    case = Case.create(tmp_path / "c")
    aws_sandbox.clear_block_stats()
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):  # one read at a time, each direct
        result = write_raw_image(
            provider.clients, snapshot_id, case, "images/aws/x.raw", Console(quiet=True), concurrency=1
        )
    with (case.root / result["path"]).open("rb") as handle:
        assert handle.read(4 * BLOCK) == b"".join(blocks.values())
    # block 3 again, and once more per fault botocore met
    assert aws_sandbox.block_reads_sent_by_botocore == len(faults)
    assert Counter(_block_reads(case)) == Counter([("ok", 200)] * 4 + [recorded])  # the clean ones in one batch


def test_custody_names_every_get_snapshot_block_call_the_sandbox_answered(
    aws_sandbox: AwsSandbox, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(raw_image_module, "CUSTODY_BATCH", 5)  # the clean reads in batches of at most 5
    blocks = {i: bytes([i + 1]) * BLOCK for i in range(12)}
    snapshot_id = aws_sandbox.direct_snapshot(blocks)
    aws_sandbox.fault_block_reads(snapshot_id, 4, ("status", 500, "InternalServerException"))
    aws_sandbox.fault_block_reads(snapshot_id, 9, ("status", 400, "RequestThrottledException"))
    case = Case.create(tmp_path / "c")
    aws_sandbox.clear_block_stats()
    provider = aws_sandbox.provider()
    provider.bind(case)
    with case.action("acquire.image", target=snapshot_id):  # one read at a time, each direct
        write_raw_image(provider.clients, snapshot_id, case, "images/aws/b.raw", Console(quiet=True), concurrency=1)
    entries = [
        e
        for r in read_records(case.root / "custody.jsonl")
        for e in r["api_calls"]
        if e["operation"] == "GetSnapshotBlock"
    ]
    calls = [c for e in entries for c in each_call(e)]
    answered = len(aws_sandbox.blocks_read) + len(aws_sandbox.refused_block_requests)
    assert len(calls) == answered == len(blocks) + 2  # every block read, and the two direct sends sent again
    assert all(e["batch"]["count"] <= 5 for e in entries if "batch" in e)
    assert sum(e["batch"]["count"] for e in entries if "batch" in e) >= len(blocks) - 2
    read = [c["item"] for c in calls if c["outcome"] == "ok" and "item" in c]
    assert len(read) == len(set(read))
    request_ids = [c["request_id"] for c in calls]
    assert all(request_ids)
    assert len(set(request_ids)) == len(calls)
    assert Counter(c["outcome"] for c in calls if "item" not in c) == {
        "ok": 2,  # the two blocks sent again through botocore
        "InternalServerException": 1,
        "RequestThrottledException": 1,
    }
    assert verify_case(case.root).ok


def test_a_bad_checksum_on_the_direct_path_is_decided_by_botocore(aws_sandbox: AwsSandbox, tmp_path):
    snapshot_id = aws_sandbox.direct_snapshot({0: b"A" * BLOCK, 3: b"C" * BLOCK})
    aws_sandbox.corrupt_block(snapshot_id, 3)
    case = Case.create(tmp_path / "c")
    aws_sandbox.clear_block_stats()
    provider = aws_sandbox.provider()
    provider.bind(case)
    with pytest.raises(BlockChecksumError, match="checksum mismatch"), case.action("acquire.image", target=snapshot_id):
        write_raw_image(provider.clients, snapshot_id, case, "images/aws/x.raw", Console(quiet=True), concurrency=1)
    # block 3's mismatch re-sent through botocore, which found it too
    assert aws_sandbox.block_reads_sent_by_botocore == 1
    assert Counter(_block_reads(case)) == Counter([("ok", 200), ("ChecksumMismatch", 200), ("ok", 200)])
    assert not list((case.root / "images").rglob("*.raw*"))


def _read(reader: Reader, task: int, snapshot_id: str, index: int, token: str) -> Answer:
    """One read of ``reader`` in an event loop of its own (its connections closed with it)."""

    async def read() -> Answer:
        try:
            return await reader.read(task, snapshot_id, index, token)
        finally:
            if reader.direct is not None:
                await reader.direct.close()

    return asyncio.run(read())


def _reader(sandbox: AwsSandbox) -> tuple[Reader, str, str]:
    """A reader made as the parent makes one, which read block 0 of a new snapshot directly."""
    snapshot_id = sandbox.direct_snapshot({0: b"A" * BLOCK, 1: b"B" * BLOCK})
    clients = sandbox.provider().clients
    (token, _) = (b["BlockToken"] for b in clients.client("ebs").list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"])
    reader = Reader(
        clients.spec("ebs", clients.default_region, connections=1).client_arguments(), clients.frozen_credentials()
    )
    assert reader.direct is not None  # botocore resolved the endpoint before any read
    assert reader.direct.host == urlsplit(sandbox.ebs_direct.url).netloc
    sent_by_botocore = sandbox.block_reads_sent_by_botocore
    assert _read(reader, 0, snapshot_id, 0, token)[3] == OK
    assert sandbox.block_reads_sent_by_botocore == sent_by_botocore  # the probe was never sent
    return reader, snapshot_id, token


@pytest.mark.parametrize(
    "token_suffix", ["/../../x", "?blockToken=other", "#fragment", "%2F%00", "\r\nHost: evil\r\n\r\nGET /", " HTTP/1.1"]
)
def test_a_hostile_block_token_never_changes_the_request_line(aws_sandbox: AwsSandbox, token_suffix: str):
    reader, snapshot_id, token = _reader(aws_sandbox)
    assert reader.direct is not None
    hostile = token + token_suffix
    assert reader.direct.request(snapshot_id, 0, hostile) is None  # not the model's pattern: botocore encodes it
    aws_sandbox.clear_block_stats()
    answer = _read(reader, 1, snapshot_id, 0, hostile)
    assert answer[3] == "ValidationException"
    (line,) = aws_sandbox.refused_block_requests
    target = urlsplit(line.split(" ", 1)[1])
    assert target.path == f"/snapshots/{snapshot_id}/blocks/0"
    assert not any(c in line for c in "\r\n#")
    assert target.query.count("=") == 1
    assert not target.fragment


@pytest.mark.parametrize(
    "snapshot_id", ["snap-1/../../blocks", "snap-1?x=1", "snap-1#x", "snap-1%2F", "snap-1\r\nX: y"]
)
def test_a_hostile_snapshot_id_is_refused_without_changing_the_request_line(aws_sandbox: AwsSandbox, snapshot_id: str):
    reader, _, token = _reader(aws_sandbox)
    assert reader.direct is not None
    assert reader.direct.request(snapshot_id, 0, token) is None
    aws_sandbox.clear_block_stats()
    answer = _read(reader, 1, snapshot_id, 0, token)
    assert answer[3] in {"ResourceNotFoundException", "ValidationException"}
    (line,) = aws_sandbox.refused_block_requests
    path = urlsplit(line.split(" ", 1)[1]).path
    assert path.count("/") == 4
    assert path.startswith("/snapshots/snap-1")
    assert path.endswith("/blocks/0")


def _send(sandbox: AwsSandbox, headers: dict[str, str], path: str) -> tuple[int, str]:
    url = urlsplit(sandbox.ebs_direct.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, str(response.getheader("x-amzn-ErrorType"))


def test_the_sandbox_refuses_a_request_whose_sigv4_is_missing_or_malformed(aws_sandbox: AwsSandbox):
    reader, snapshot_id, token = _reader(aws_sandbox)
    direct = reader.direct
    assert direct is not None
    request = direct.request(snapshot_id, 0, token)
    assert request is not None
    path = f"{request[0]}?{request[1]}"
    good = direct.sign(*request, "20261203T120000Z")
    assert _send(aws_sandbox, good, path)[0] == 200
    missing = {k: v for k, v in good.items() if k != "authorization"}
    assert _send(aws_sandbox, missing, path) == (403, "MissingAuthenticationTokenException")
    malformed = [
        {**good, "authorization": good["authorization"].replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1")},
        {**good, "authorization": good["authorization"][:-1]},  # a signature of 63 hex digits
        {**good, "authorization": good["authorization"].replace("/ebs/", "/ec2/")},
        {**good, "x-amz-date": "20261204T120000Z"},  # another day than the credential scope's
        {k: v for k, v in good.items() if k != "x-amz-date"},
        {  # a session token sent but not signed
            **good,
            "x-amz-security-token": "sent",
            "authorization": good["authorization"].replace(";x-amz-security-token", ""),
        },
        {**good, "authorization": good["authorization"].replace("SignedHeaders=host;", "SignedHeaders=")},
    ]
    for headers in malformed:
        assert _send(aws_sandbox, headers, path) == (400, "IncompleteSignatureException"), headers
