"""The Google Cloud sandbox holds every request to Google's discovery documents and answers in Google's error format.

Each refusal is shown twice through the real clients: refused by the strict fake, and let through (or answered
otherwise) by the same fake with its contract check off, so the test could fail against a lenient fake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import compute_v1

from moto_fixtures.gcp import FORENSIC_PROJECT, INSTANCE, PROJECT, ZONE, GcpSandbox
from moto_fixtures.gcp_contract import contract
from moto_fixtures.gcp_server import COMPUTE_PREFIX, IAM_PREFIX
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp.session import RESOURCE_MANAGER_ENDPOINT, GcpApi

INSTANCE_PATH = f"{COMPUTE_PREFIX}{PROJECT}/zones/{ZONE}/instances/{INSTANCE}"


@pytest.fixture
def api(gcp_sandbox: GcpSandbox, incident: PlantedIncident) -> GcpApi:
    """The adapter's own clients on the sandbox; the tests send what the contract refuses on purpose."""
    assert gcp_sandbox.server is not None
    gcp_sandbox.refusals_expected = True
    return GcpApi(
        project=PROJECT, credentials=AnonymousCredentials(), api_endpoint=gcp_sandbox.server.endpoint.split("//")[1],
        url_scheme="http",
    )  # fmt: skip


def _session() -> AuthorizedSession:
    return AuthorizedSession(AnonymousCredentials())


def _strict_then_lenient(gcp_sandbox: GcpSandbox, call: Callable[[], Any]) -> tuple[Exception, Any]:
    """The error the strict fake answers ``call`` with, and what the same fake answers without its contract check."""
    with pytest.raises(gexc.GoogleAPICallError) as refused:
        call()
    gcp_sandbox.fake.contract = None
    try:
        lenient: Any = call()
    except gexc.GoogleAPICallError as exc:
        lenient = exc
    return refused.value, lenient


def _violation(exc: Exception) -> str:
    assert isinstance(exc, gexc.GoogleAPICallError)
    return str(exc.message)


def test_every_route_of_the_fake_is_a_documented_method(gcp_sandbox: GcpSandbox) -> None:
    fake = gcp_sandbox.fake
    routes = [(COMPUTE_PREFIX, r) for r in fake._routes()] + [(IAM_PREFIX, r) for r in fake._iam_routes()]
    assert len(routes) > 25
    for prefix, (verb, pattern, _, operation) in routes:
        path = prefix + "/".join("x-1" + part[1:] if part.startswith("*") else part for part in pattern)
        method, _ = contract().resolve(verb, path)
        assert method.id.endswith(f".{operation}"), (path, method.id, operation)
    assert contract().resolve("POST", "/v2/entries:list")[0].id == "logging.entries.list"
    reports = "/admin/reports/v1/activity/users/all/applications/login"
    assert contract().resolve("GET", reports)[0].id == "reports.activities.list"


def test_unknown_body_field_is_refused_as_google_does(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    url = f"{gcp_sandbox.server.endpoint}{INSTANCE_PATH.replace('instances', 'disks')}-data/createSnapshot"  # type: ignore[union-attr]

    def snapshot() -> Any:
        response = _session().post(url, json={"name": "evidence-1", "sourceDisk": "x", "encrypted": True})
        if not response.ok:
            raise gexc.from_http_response(response)
        return response.json()

    refused, lenient = _strict_then_lenient(gcp_sandbox, snapshot)
    assert isinstance(refused, gexc.BadRequest)
    assert 'Unknown name "encrypted"' in _violation(refused)
    assert refused.errors == [{"message": refused.errors[0]["message"], "domain": "global", "reason": "invalid"}]
    assert lenient["kind"] == "compute#operation"  # a lenient fake made the snapshot


def test_bad_enum_value_through_the_compute_client(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    firewalls = api.compute(compute_v1.FirewallsClient)
    rule = compute_v1.Firewall(name="cloudir-deny-all", direction="SIDEWAYS", network="global/networks/default")
    refused, lenient = _strict_then_lenient(
        gcp_sandbox, lambda: firewalls.insert(project=PROJECT, firewall_resource=rule)
    )
    assert isinstance(refused, gexc.BadRequest)
    assert "'direction': 'SIDEWAYS'. Must be one of ['EGRESS', 'INGRESS']" in _violation(refused)
    assert not isinstance(lenient, Exception)


def test_path_parameter_outside_its_documented_pattern(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    disks = api.compute(compute_v1.DisksClient)
    snapshot = compute_v1.Snapshot(name="evidence-2")
    refused, lenient = _strict_then_lenient(
        gcp_sandbox,
        lambda: disks.create_snapshot(project=PROJECT, zone=ZONE, disk="Boot_Disk", snapshot_resource=snapshot),
    )
    assert isinstance(refused, gexc.BadRequest)
    assert "Invalid value for field 'disk': 'Boot_Disk'. Must be a match of regex" in _violation(refused)
    assert isinstance(lenient, gexc.NotFound)


def test_missing_required_body_field_is_400_not_a_dropped_connection(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    images = api.compute(compute_v1.ImagesClient)
    source = f"projects/{PROJECT}/global/snapshots/none"
    image = compute_v1.Image(source_snapshot=source)  # no name: images.insert requires one
    refused, lenient = _strict_then_lenient(
        gcp_sandbox, lambda: images.insert(project=FORENSIC_PROJECT, image_resource=image)
    )
    assert isinstance(refused, gexc.BadRequest)
    assert refused.errors[0]["reason"] == "required"
    assert "Required field 'name' not specified" in _violation(refused)
    assert isinstance(lenient, gexc.NotFound)  # the lenient fake went on to look the snapshot up


def test_missing_required_query_parameter_and_unknown_query_parameter(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    endpoint = gcp_sandbox.server.endpoint  # type: ignore[union-attr]

    def auto_delete() -> Any:  # compute.instances.setDiskAutoDelete requires autoDelete and deviceName
        response = _session().post(f"{endpoint}{INSTANCE_PATH}/setDiskAutoDelete?deviceName=boot")
        if not response.ok:
            raise gexc.from_http_response(response)
        return response.json()

    refused, lenient = _strict_then_lenient(gcp_sandbox, auto_delete)
    assert isinstance(refused, gexc.BadRequest)
    assert "Required parameter 'autoDelete' not specified" in _violation(refused)
    assert isinstance(lenient, gexc.NotFound)  # a method the fake does not serve: it can only say "no route"

    gcp_sandbox.fake.contract = contract()
    listing = f"{endpoint}{COMPUTE_PREFIX}{PROJECT}/zones/{ZONE}/instances"
    response = _session().get(f"{listing}?maxResults=5&verbose=true")
    assert response.status_code == 400
    assert 'Unknown name "verbose": Cannot bind query parameter' in response.json()["error"]["message"]
    assert _session().get(f"{listing}?maxResults=5").ok  # documented for instances.list
    assert _session().get(f"{listing}?max_results=5").ok  # and so is its proto field name


def test_wrong_type_in_a_logging_body_answers_bad_request_details(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    logging_api = api.logging().logging_api
    body = {"resourceNames": [f"projects/{PROJECT}"], "pageSize": "fifty"}
    refused, lenient = _strict_then_lenient(
        gcp_sandbox, lambda: logging_api.api_request(method="POST", path="/entries:list", data=body)
    )
    assert isinstance(refused, gexc.BadRequest)
    assert refused.details == [
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "pageSize", "description": _violation(refused).split(": ", 1)[1]}]}
    ]  # fmt: skip
    assert isinstance(lenient, gexc.InternalServerError)  # the lenient fake broke on it (and no longer drops the line)
    assert logging_api.api_request(method="POST", path="/entries:list", data={**body, "pageSize": "50"})  # int32 text


def test_required_logging_field_and_int64_as_string_or_number(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    logging_api = api.logging().logging_api
    with pytest.raises(gexc.BadRequest, match="Required field 'resourceNames' not specified"):
        logging_api.api_request(method="POST", path="/entries:list", data={"filter": ""})
    serial = f"{gcp_sandbox.server.endpoint}{INSTANCE_PATH}/serialPort"  # type: ignore[union-attr]
    assert _session().get(f"{serial}?start=0").ok  # int64 as decimal text
    assert _session().get(f"{serial}?start=zero").status_code == 400


def test_unknown_method_path_is_404_in_googles_format(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    response = _session().post(f"{gcp_sandbox.server.endpoint}{INSTANCE_PATH}/exfiltrate")  # type: ignore[union-attr]
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["errors"][0]["reason"] == "notFound"
    assert "was not found on this server" in error["message"]
    with pytest.raises(gexc.NotFound):
        compute_v1.InstancesClient(
            transport=compute_v1.InstancesClient.get_transport_class("rest")(
                host=gcp_sandbox.server.endpoint.split("//")[1],
                credentials=AnonymousCredentials(),
                url_scheme="http",  # type: ignore[union-attr]
            )
        ).get(project=PROJECT, zone=ZONE, instance="no-such-instance")


def test_malformed_json_is_400_and_the_connection_stays_up(gcp_sandbox: GcpSandbox) -> None:
    gcp_sandbox.refusals_expected = True
    url = f"{gcp_sandbox.server.endpoint}/v2/entries:list"  # type: ignore[union-attr]
    response = requests.post(url, data=b'{"resourceNames": [', headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "Invalid JSON payload received" in response.json()["error"]["message"]


def test_an_answer_of_the_fake_outside_the_response_schema_is_its_bug(gcp_sandbox: GcpSandbox, api: GcpApi) -> None:
    instance = gcp_sandbox.fake.project(PROJECT).instances[ZONE][INSTANCE]
    response = _session().get(f"{gcp_sandbox.server.endpoint}{INSTANCE_PATH}")  # type: ignore[union-attr]
    assert response.ok
    assert "_serial" in instance  # the fake's bookkeeping never reaches the answer
    assert "_serial" not in response.json()
    instance["cpuPlatformFamily"] = "Skylake"  # a field Compute does not document for an Instance
    response = _session().get(f"{gcp_sandbox.server.endpoint}{INSTANCE_PATH}")  # type: ignore[union-attr]
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "not a documented compute.instances.get response" in message
    assert 'Unknown name "cpuPlatformFamily"' in message


def test_resource_manager_reads_over_the_documented_600_a_minute_are_refused(
    gcp_sandbox: GcpSandbox, api: GcpApi
) -> None:
    """Resource Manager documents up to 600 read operations a minute per project (10 a second); the 601st read
    within one minute is refused with 429 RESOURCE_EXHAUSTED, and a read in the next minute is answered."""
    now = [0.0]
    gcp_sandbox.fake.clock = lambda: now[0]

    def read_policy() -> bytes:
        return api.rest("POST", f"projects/{PROJECT}:getIamPolicy", {}, endpoint=RESOURCE_MANAGER_ENDPOINT)

    # the minute's first 599 reads counted as sent (sending them takes minutes on a loaded machine)
    gcp_sandbox.fake._rate_counts[("cloudresourcemanager", 0, "Read requests", 0)] = 599
    read_policy()  # the 600th
    with pytest.raises(gexc.TooManyRequests, match=r"RESOURCE_EXHAUSTED|Quota exceeded"):
        read_policy()
    now[0] += 60
    assert read_policy()
