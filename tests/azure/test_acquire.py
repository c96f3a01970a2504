"""Acquisition of an Azure VM against the fake ARM server: preserve, capture, snapshot, copy, image, custody."""

import base64
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.compute import models

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.errors import CapabilityNotSupportedError, CloudAccessError
from cloudir.plan import StepKind
from cloudir.provider import AcquireOptions, TargetKind, TargetQuery
from moto_fixtures.azure import LOCATION, RESOURCE_GROUP, SOC_SUBSCRIPTION, VM_NAME, AzureSandbox, sandbox_token
from moto_fixtures.sandbox import PlantedIncident
from providers.azure import CASE_TAG, create_provider
from providers.azure.provider import snapshot_name
from providers.azure.session import StaticTokenCredential
from tests.azure.conftest import Acquire


def test_preserves_with_locks_and_scale_in_protection(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    assert not azure_sandbox.is_preserved(azure_incident)
    case, result = acquire()
    assert result.ok
    assert azure_sandbox.is_preserved(azure_incident)
    for resource_id in [azure_incident.extra["vm_id"], *azure_incident.extra["disk_ids"]]:
        [lock] = azure_sandbox.fake.locks_on(resource_id)
        assert lock["name"] == f"cloudir-{case.case_id}"
        assert lock["properties"]["level"] == "CanNotDelete"
    member = azure_sandbox.fake.get(azure_incident.extra["vmss_vm_id"])
    assert member is not None
    assert member["properties"]["protectionPolicy"]["protectFromScaleIn"] is True
    # the lock is real: the unmodified SDK cannot delete the VM any more
    compute = azure_sandbox.provider().session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    with pytest.raises(HttpResponseError, match="ScopeLocked"):
        compute.virtual_machines.begin_delete(RESOURCE_GROUP, VM_NAME).result()
    assert azure_sandbox.fake.get(azure_incident.extra["vm_id"]) is not None


def test_snapshots_every_disk_tagged_and_copies_to_the_soc(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, result = acquire()
    snapshots = azure_sandbox.snapshots_for_case(case.case_id)
    assert len(snapshots) == 6  # 3 disks, each snapshotted and copied
    sources = {azure_sandbox.fake.get(s)["properties"]["creationData"]["sourceResourceId"] for s in snapshots}  # type: ignore[index]
    points = result.results["restore-point"]["disk_restore_points"]
    assert set(points) == set(azure_incident.extra["disk_ids"])
    assert set(points.values()) <= sources  # each disk's snapshot is restored from its disk restore point
    copies = [s for s in snapshots if f"/subscriptions/{SOC_SUBSCRIPTION}/" in s]
    assert len(copies) == 3
    assert all("/resourceGroups/rg-cloudir-evidence/" in c for c in copies)
    for snapshot_id in snapshots:
        snapshot = azure_sandbox.fake.get(snapshot_id)
        assert snapshot is not None
        expected = "Copy" if snapshot_id in copies else "Restore"
        assert snapshot["properties"]["creationData"]["createOption"] == expected
        assert snapshot["tags"][CASE_TAG] == case.case_id
        assert snapshot["tags"]["cloudir-tool"].startswith("cloudir/")
        assert azure_sandbox.fake.blobs[snapshot_id.lower()]  # the copy holds the disk's bytes
    # the CMK-encrypted data disk's snapshot keeps its disk encryption set
    cmk = azure_sandbox.fake.get(result.results["snapshot-data-lun1"]["snapshot_id"])
    assert cmk is not None
    assert cmk["properties"]["encryption"]["type"] == "EncryptionAtRestWithCustomerKey"


def test_rerun_after_lost_state_reuses_the_snapshots(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire()
    first = azure_sandbox.snapshots_for_case(case.case_id)
    created = azure_sandbox.fake.created["microsoft.compute/snapshots"]
    (case.root / "state.json").unlink()  # forget the run: only the deterministic names prevent duplicates now
    _, again = acquire()
    assert azure_sandbox.snapshots_for_case(case.case_id) == first
    assert azure_sandbox.fake.created["microsoft.compute/snapshots"] == created
    assert again.results["snapshot-os"]["reused"] is True
    assert again.results["copy-os"]["reused"] is True


def test_metadata_artifacts_and_encryption_settings(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire()
    base = case.root / "artifacts" / "azure" / RESOURCE_GROUP / VM_NAME / "metadata"
    for name in ("vm", "disks", "nics", "nsgs", "public_ips", "vmss", "tags", "encryption"):
        assert (base / f"{name}.json").is_file(), name
    snapshots = sorted(p.name for p in (base.parent / "snapshots").glob("*.json"))
    assert len(snapshots) == 6  # each snapshot and each SOC copy as ARM returned it (timeCreated, source)
    vm = json.loads((base / "vm.json").read_text())
    assert vm["id"] == azure_incident.extra["vm_id"]
    assert vm["tags"]["env"] == "prod"
    nsgs = json.loads((base / "nsgs.json").read_text())
    assert "allow-ssh-any" in [rule["name"] for rule in nsgs[0]["properties"]["securityRules"]]
    assert json.loads((base / "public_ips.json").read_text())[0]["properties"]["ipAddress"] == "20.62.10.45"
    encryption = json.loads((base / "encryption.json").read_text())["disks"]
    types = sorted(entry["encryption"]["type"] for entry in encryption.values())
    assert types == ["EncryptionAtRestWithCustomerKey", *["EncryptionAtRestWithPlatformKey"] * 2]


def test_raw_image_hashes_match_the_served_bytes_and_access_is_revoked(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, result = acquire(raw_image=True)
    for role, disk_id in zip(("os", "data-lun0", "data-lun1"), azure_incident.extra["disk_ids"], strict=True):
        image = result.results[f"image-{role}"]
        served = azure_sandbox.fake.blobs[disk_id.lower()]
        assert image["sha256"] == hashlib.sha256(served).hexdigest()
        assert image["size"] == len(served)
        assert image["ranges"] == 5  # 1 MiB + footer in 256 KiB ranges
        assert image["sparse_bytes"] == 256 * 1024  # the zero hole is left sparse
        assert (case.root / image["path"]).read_bytes() == served
        assert image["access_revoked"] is True
    assert azure_sandbox.fake.grants == {}
    assert all(
        azure_sandbox.fake.get(s)["properties"]["diskState"] != "ActiveSAS"  # type: ignore[index]
        for s in azure_sandbox.snapshots_for_case(case.case_id)
    )
    records = read_records(case.root / "custody.jsonl")
    image_record = next(r for r in records if r["details"].get("step") == "image-os")
    operations = [(c["service"], c["operation"]) for c in image_record["api_calls"]]
    assert operations.count(("Storage.Blob", "GetBlob")) == 5
    assert ("Microsoft.Compute", "snapshots/beginGetAccess/action") in operations
    assert ("Microsoft.Compute", "snapshots/endGetAccess/action") in operations
    assert all("sig=" not in json.dumps(r) for r in records)  # the SAS never lands in custody
    assert verify_case(case.root).ok


def test_every_arm_call_is_in_custody_with_request_id_and_user_agent(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    before = len(azure_sandbox.fake.requests)
    case, _ = acquire(raw_image=True)
    served = azure_sandbox.fake.requests[before:]
    recorded = [call for record in read_records(case.root / "custody.jsonl") for call in record["api_calls"]]
    assert len(recorded) == len(served) > 40
    assert all(r["user_agent"].startswith("cloudir/") for r in served)
    assert all(f"case/{case.case_id}" in r["user_agent"] for r in served)
    assert all(call["request_id"] for call in recorded)
    failed = {(c["operation"], c["outcome"], c["http_status"]) for c in recorded if c["outcome"] != "ok"}
    assert failed == {  # the "does it exist yet" checks
        ("snapshots/read", "ResourceNotFound", 404),
        ("restorePointCollections/restorePoints/read", "ResourceNotFound", 404),
    }
    assert {f"{c['service']}/{c['operation']}" for c in recorded} == {r["operation"] for r in served}
    assert case.custody.caller["azure"].startswith("responder@contoso.example")


def test_plan_lists_every_call_and_permissions_cover_what_ran(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    provider = azure_sandbox.provider()
    target = provider.find_target(azure_incident.target)
    plan = provider.plan_acquire(target, AcquireOptions(raw_image=True))
    ids = [step.id for step in plan.steps]
    assert ids == [step.id for step in provider.plan_acquire(target, AcquireOptions(raw_image=True)).steps]
    assert ids[:3] == ["metadata", "preserve-locks", "preserve-scale-in"]
    assert {step.kind for step in plan.steps} == {StepKind.READ, StepKind.PRESERVE, StepKind.ACQUIRE}
    planned = {(call.service, call.operation) for step in plan.steps for call in step.calls}
    case, _ = acquire(raw_image=True)
    recorded = {
        (c["service"], c["operation"]) for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]
    }
    assert recorded <= planned, recorded - planned
    permissions = set(provider.required_permissions())
    assert {"Microsoft.Compute/snapshots/write", "Microsoft.Authorization/locks/write"} <= permissions
    assert {f"{s}/{o}" for s, o in recorded if s != "Storage.Blob"} <= permissions


def test_dry_run_plan_changes_nothing(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    before = azure_sandbox.state()
    provider = azure_sandbox.provider()
    provider.bind(None)
    plan = provider.plan_acquire(provider.find_target(azure_incident.target), AcquireOptions(raw_image=True))
    assert len(plan.steps) == 13  # metadata, locks, scale-in, restore point, 3 x (snapshot, copy, image)
    assert azure_sandbox.state() == before


def test_injected_failure_blocks_later_changes_and_resume_completes(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    with azure_sandbox.fail_next("Microsoft.Compute/snapshots/write"):
        case, failed = acquire(raise_on_failure=False)
    statuses = {o.step_id: o.status for o in failed.outcomes}
    assert statuses["metadata"] == statuses["preserve-locks"] == "done"
    assert statuses["snapshot-os"] == "failed"
    assert all(statuses[s] == "blocked" for s in statuses if s.startswith(("snapshot-data", "copy-")))
    assert "InternalError" in (failed.failed.error if failed.failed else "")
    assert azure_sandbox.snapshots_for_case(case.case_id) == []
    _, resumed = acquire()
    assert resumed.ok
    assert {o.step_id: o.status for o in resumed.outcomes}["preserve-locks"] == "resumed"
    assert len(azure_sandbox.snapshots_for_case(case.case_id)) == 6


def test_cross_region_copy_uses_copy_start_from_incremental_snapshots_and_waits_for_it(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    azure_sandbox.fake.copy_seconds = 0.3
    case, result = acquire(forensic_location="westus")
    assert result.ok
    source = azure_sandbox.fake.get(result.results["snapshot-os"]["snapshot_id"])
    assert source is not None
    assert source["properties"]["incremental"] is True
    copy = azure_sandbox.fake.get(result.results["copy-os"]["copy_id"])
    assert copy is not None
    assert copy["location"] == "westus"
    assert copy["properties"]["creationData"]["createOption"] == "CopyStart"
    assert copy["properties"]["incremental"] is True
    # the step ended only once Azure reported the background copy complete, and that is what it recorded
    saved = [
        p for p in (case.root / "artifacts").rglob("*.json") if copy["name"] in p.name and SOC_SUBSCRIPTION in p.name
    ]
    assert [json.loads(p.read_text())["properties"]["completionPercent"] for p in saved] == [100.0]
    copy_id = copy["id"].lower()
    gets = [r for r in azure_sandbox.fake.requests if r["method"] == "GET" and r["path"].lower() == copy_id]
    assert len(gets) >= 2  # polled while the copy progressed
    assert copy["properties"]["creationData"]["sourceResourceId"] == result.results["snapshot-os"]["snapshot_id"]
    records = read_records(case.root / "custody.jsonl")
    copy_calls = next(r for r in records if r["details"].get("step") == "copy-os")["api_calls"]
    assert {c["region"] for c in copy_calls if c["operation"] == "snapshots/write"} == {"westus"}


def test_unsupported_group_mode_is_refused(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    provider = azure_sandbox.provider()
    target = provider.find_target(azure_incident.target)
    with pytest.raises(CapabilityNotSupportedError, match="standby"):
        provider.plan_acquire(target, AcquireOptions(group_mode="standby"))


def test_failed_image_read_still_revokes_access_and_leaves_no_partial_file(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    with azure_sandbox.fail_next("Storage.Blob/GetBlob", "ServerBusy"):
        case, failed = acquire(raw_image=True, raise_on_failure=False)
    assert failed.failed is not None
    assert failed.failed.step_id == "image-os"
    assert "HTTP 500" in (failed.failed.error or "")
    assert azure_sandbox.fake.grants == {}  # the SAS was revoked despite the failure
    assert not [p for p in (case.root / "images").rglob("*") if p.is_file()]
    _, resumed = acquire(raw_image=True)
    assert resumed.ok
    assert (case.root / resumed.results["image-os"]["path"]).is_file()


def test_fake_refuses_copy_start_from_a_full_snapshot_and_a_cross_region_copy(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident
):
    compute = azure_sandbox.provider().session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    disk_id = azure_incident.extra["disk_ids"][0]

    def snapshot(name: str, location: str, option: str, source: str, *, incremental: bool) -> object:
        body = models.Snapshot(
            location=location,
            properties=models.SnapshotProperties(
                creation_data=models.CreationData(create_option=option, source_resource_id=source),
                incremental=incremental,
            ),
        )
        return compute.snapshots.begin_create_or_update(RESOURCE_GROUP, name, body).result()

    full = snapshot("full", "eastus", "Copy", disk_id, incremental=False)
    with pytest.raises(HttpResponseError, match="only supported for incremental snapshots"):
        snapshot("copy-of-full", "westus", "CopyStart", full.id, incremental=True)  # type: ignore[attr-defined]
    with pytest.raises(HttpResponseError, match="needs CopyStart"):
        snapshot("plain-copy", "westus", "Copy", full.id, incremental=False)  # type: ignore[attr-defined]


def test_fake_refuses_a_request_without_api_version(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    error = _refused_raw_request(azure_sandbox, azure_incident.extra["vm_id"])
    assert error["code"] == "MissingApiVersionParameter"


def _sandbox_token_with(**claims: object) -> str:
    header, payload, signature = sandbox_token().split(".")
    changed = json.loads(base64.urlsafe_b64decode(payload + "==")) | claims
    return ".".join([header, base64.urlsafe_b64encode(json.dumps(changed).encode()).decode().rstrip("="), signature])


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("not-a-jwt", "InvalidAuthenticationToken"),
        (_sandbox_token_with(exp=int(time.time()) - 60), "ExpiredAuthenticationToken"),
        (_sandbox_token_with(aud="https://graph.microsoft.com"), "InvalidAuthenticationTokenAudience"),
    ],
)
def test_fake_refuses_a_token_arm_would_not_accept_and_the_adapter_says_so(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, token: str, code: str
):
    config = azure_sandbox.provider_config() | {"credential": StaticTokenCredential(token)}
    compute = create_provider(**config).session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    with pytest.raises(ClientAuthenticationError) as refused:
        compute.virtual_machines.get(RESOURCE_GROUP, VM_NAME)
    assert (refused.value.status_code, refused.value.error.code) == (401, code)  # type: ignore[union-attr]
    assert 'error="invalid_token"' in refused.value.response.headers["WWW-Authenticate"]  # type: ignore[union-attr]
    with pytest.raises(CloudAccessError, match="Azure authentication failed"):
        create_provider(**config).find_target(TargetQuery(TargetKind.INSTANCE, VM_NAME))
    assert azure_sandbox.fake.get(azure_incident.extra["vm_id"]) is not None


def test_fake_refuses_a_request_without_a_token(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    request = urllib.request.Request(
        f"{azure_sandbox.fake.base_url}{azure_incident.extra['vm_id']}?api-version=2024-07-01"
    )
    context = ssl.create_default_context(cafile=azure_sandbox.fake.ca_file)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=context)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["code"] == "AuthenticationFailed"


@pytest.mark.parametrize(
    ("type_path", "body", "reason"),
    [
        ("locks", {"properties": {"level": "Bogus"}}, "lock level"),
        (
            "networkSecurityGroups",
            {"properties": {"securityRules": [{"name": "r", "properties": {"priority": "banana"}}]}},
            "priority",
        ),
        (
            "networkSecurityGroups",
            {
                "properties": {
                    "securityRules": [
                        {
                            "name": "r",
                            "properties": {"priority": 100, "access": "Maybe", "direction": "Inbound", "protocol": "*"},
                        }
                    ]
                }
            },
            "access",
        ),
    ],
)
def test_fake_refuses_invalid_enums_and_ranges(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, type_path: str, body: dict, reason: str
):
    provider = "Microsoft.Authorization" if type_path == "locks" else "Microsoft.Network"
    path = (
        f"/subscriptions/{azure_incident.extra['subscription_id']}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"{provider}/{type_path}/bad?api-version=2024-05-01"
    )
    assert reason in _refused_raw_request(azure_sandbox, path, body)["message"]


def _refused_raw_request(sandbox: AzureSandbox, path: str, body: dict | None = None) -> dict:
    """The ARM error of a hand-made request (a GET, or a PUT of ``body``) that the fake must answer with 400."""
    token = sandbox.provider().session.access_token()  # type: ignore[attr-defined]
    request = urllib.request.Request(
        f"{sandbox.fake.base_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=sandbox.fake.ca_file)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=context)
    assert refused.value.code == 400
    return json.loads(refused.value.read())["error"]


def test_a_multi_disk_vm_is_captured_by_one_crash_consistent_restore_point(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, result = acquire()
    point = result.results["restore-point"]
    assert point["consistent"] is True
    assert point["consistency_mode"] == "CrashConsistent"
    assert set(point["disk_restore_points"]) == set(azure_incident.extra["disk_ids"])  # all 3 disks, one instant
    created = {azure_sandbox.fake.get(p)["properties"]["timeCreated"] for p in point["disk_restore_points"].values()}  # type: ignore[index]
    assert created == {point["time_created"]}
    stored = azure_sandbox.fake.get(point["restore_point_id"])
    assert stored is not None
    assert stored["properties"]["provisioningState"] == "Succeeded"  # the operation was waited for, not assumed
    assert "restore point" in result.plan.notes[0]
    assert "not guaranteed" not in result.plan.notes[0]
    assert (case.root / "artifacts/azure" / RESOURCE_GROUP / VM_NAME / "restore-points").is_dir()
    made = [c["operation"] for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]]
    assert "restorePointCollections/restorePoints/write" in made


def test_a_restore_point_azure_refuses_at_run_time_is_recorded_and_the_snapshots_still_run(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    azure_sandbox.fake.resources[azure_incident.extra["disk_ids"][1].lower()]["properties"]["maxShares"] = 2
    case, result = acquire()
    assert result.ok
    assert result.results["restore-point"]["consistent"] is False
    assert "shared disks" in result.results["restore-point"]["refused"]
    assert len(azure_sandbox.snapshots_for_case(case.case_id)) == 6


def test_a_vm_without_restore_point_support_is_snapshotted_disk_by_disk_and_the_plan_says_so(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    vm = azure_sandbox.fake.resources[azure_incident.extra["vm_id"].lower()]
    vm["properties"]["storageProfile"]["osDisk"]["diffDiskSettings"] = {"option": "Local"}
    _, result = acquire()
    assert result.ok
    assert "restore-point" not in result.results
    assert "consistency across disks is not guaranteed" in result.plan.notes[0]
    assert "ephemeral OS disks" in result.plan.notes[0]


def test_restore_point_refusals_of_the_fake(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    compute = azure_sandbox.provider().session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    source = models.RestorePointCollectionSourceProperties(id=azure_incident.extra["vm_id"])
    elsewhere = models.RestorePointCollection(
        location="westeurope", properties=models.RestorePointCollectionProperties(source=source)
    )
    with pytest.raises(HttpResponseError, match="location"):
        compute.restore_point_collections.create_or_update(RESOURCE_GROUP, "rpc", elsewhere)
    here = models.RestorePointCollection(
        location=LOCATION, properties=models.RestorePointCollectionProperties(source=source)
    )
    compute.restore_point_collections.create_or_update(RESOURCE_GROUP, "rpc", here)
    bogus = models.RestorePoint(properties=models.RestorePointProperties(consistency_mode="Bogus"))
    with pytest.raises(HttpResponseError, match="consistencyMode"):
        compute.restore_points.begin_create(RESOURCE_GROUP, "rpc", "rp", bogus).result()
    shared = azure_sandbox.fake.resources[azure_incident.extra["disk_ids"][1].lower()]
    shared["properties"]["maxShares"] = 2
    crash = models.RestorePoint(properties=models.RestorePointProperties(consistency_mode="CrashConsistent"))
    with pytest.raises(HttpResponseError, match="shared disks"):
        compute.restore_points.begin_create(RESOURCE_GROUP, "rpc", "rp", crash).result()
    del shared["properties"]["maxShares"]
    compute.restore_points.begin_create(RESOURCE_GROUP, "rpc", "rp", crash).result()
    with pytest.raises(HttpResponseError, match="existing restore point"):
        compute.restore_points.begin_create(RESOURCE_GROUP, "rpc", "rp", crash).result()


def test_snapshots_copies_and_images_are_the_restore_points_consistent_set(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    """The VM keeps writing after its restore point: evidence made from the live disks would differ from it."""
    fake, disk_ids = azure_sandbox.fake, azure_incident.extra["disk_ids"]
    at_restore_point: dict[str, bytes] = {}
    log_write = fake.on_write

    def attacker_writes_after_the_restore_point(operation: str, path: str, headers: dict[str, str]) -> None:
        if log_write is not None:
            log_write(operation, path, headers)
        if operation.endswith("restorePoints/write"):
            for disk_id in disk_ids:
                at_restore_point[disk_id] = fake.blobs[disk_id.lower()]
                fake.blobs[disk_id.lower()] = b"written after the restore point".ljust(len(at_restore_point[disk_id]))

    fake.on_write = attacker_writes_after_the_restore_point
    case, result = acquire(forensic_location="westus", raw_image=True)
    points = result.results["restore-point"]["disk_restore_points"]
    for role, disk_id in zip(("os", "data-lun0", "data-lun1"), disk_ids, strict=True):
        snapshot = result.results[f"snapshot-{role}"]
        assert snapshot["from_restore_point"] is True
        assert snapshot["source"] == points[disk_id]
        stored = fake.get(snapshot["snapshot_id"])
        assert stored is not None
        assert stored["properties"]["creationData"]["createOption"] == "Restore"
        assert fake.blobs[snapshot["snapshot_id"].lower()] == at_restore_point[disk_id]
        assert fake.blobs[result.results[f"copy-{role}"]["copy_id"].lower()] == at_restore_point[disk_id]
        assert result.results[f"image-{role}"]["sha256"] == hashlib.sha256(at_restore_point[disk_id]).hexdigest()
    assert "from its disk restore point" in next(s.title for s in result.plan.steps if s.id == "snapshot-os")
    assert "snapshots, copies and images are consistent" in result.plan.notes[0]
    assert verify_case(case.root).ok


def test_the_fake_restores_only_disk_restore_points_and_copies_only_disks_and_snapshots(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    _, result = acquire()
    point = next(iter(result.results["restore-point"]["disk_restore_points"].values()))
    disk = azure_incident.extra["disk_ids"][0]
    compute = azure_sandbox.provider().session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    for option, source in (("Copy", point), ("CopyStart", point), ("Restore", disk)):
        body = models.Snapshot(
            location=LOCATION,
            properties=models.SnapshotProperties(
                creation_data=models.CreationData(create_option=option, source_resource_id=source), incremental=True
            ),
        )
        with pytest.raises(HttpResponseError, match=f"createOption '{option}' cannot take the source"):
            compute.snapshots.begin_create_or_update(RESOURCE_GROUP, f"bad-{option}", body).result()


def test_copies_and_images_run_at_once_and_every_poll_is_in_its_own_steps_record(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    """The cross-region copies and the raw images of every disk run in lanes at once; azure-core polls each
    long-running operation in a thread of its own, and those polls still land in the record of their step."""
    azure_sandbox.fake.copy_seconds = 0.5
    before = len(azure_sandbox.fake.requests)
    case, result = acquire(forensic_location="westus", raw_image=True)
    roles = [step.id.removeprefix("copy-") for step in result.plan.steps if step.id.startswith("copy-")]
    assert len(roles) == 3
    alongside = result.plan.alongside()
    assert set(alongside["copy-os"]) == {f"{kind}-{role}" for kind in ("copy", "image") for role in roles} - {"copy-os"}
    served = azure_sandbox.fake.requests[before:]
    blob_reads = [i for i, r in enumerate(served) if r["operation"] == "Storage.Blob/GetBlob"]
    copy_reads = [i for i, r in enumerate(served) if r["method"] == "GET" and SOC_SUBSCRIPTION in r["path"]]
    assert blob_reads[0] < copy_reads[-1]  # the images streamed while the copies still progressed
    records = read_records(case.root / "custody.jsonl")
    records = records[next(i for i, r in enumerate(records) if r["action"] == "acquire.start") :]
    assert not [r for r in records if r["action"] == "api.call"]  # no call of the plan outside a step
    steps = {r["details"]["step"]: r for r in records if "step" in r["details"]}
    for role in roles:
        copy_calls = {(c["operation"], c["region"]) for c in steps[f"copy-{role}"]["api_calls"]}
        assert {("snapshots/write", "westus"), ("locations/operations/read", "westus")} <= copy_calls
        image_calls = {(c["operation"], c["region"]) for c in steps[f"image-{role}"]["api_calls"]}
        assert {("locations/operations/read", LOCATION), ("GetBlob", LOCATION)} <= image_calls
    everything = read_records(case.root / "custody.jsonl")
    assert len([call for record in everything for call in record["api_calls"]]) == len(azure_sandbox.fake.requests)


def _os_disk_snapshot(azure_incident: PlantedIncident) -> models.Snapshot:
    return models.Snapshot(
        location=LOCATION,
        properties=models.SnapshotProperties(
            creation_data=models.CreationData(
                create_option="Copy", source_resource_id=azure_incident.extra["disk_ids"][0]
            ),
            incremental=True,
        ),
    )


def test_fake_makes_a_snapshot_as_a_long_running_operation(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident
):
    azure_sandbox.fake.snapshot_seconds = 0.3
    compute = azure_sandbox.provider().session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    body = _os_disk_snapshot(azure_incident)
    poller = compute.snapshots.begin_create_or_update(RESOURCE_GROUP, "lro", body, polling=False)
    assert poller.result().provisioning_state == "Creating"
    assert compute.snapshots.get(RESOURCE_GROUP, "lro").provisioning_state == "Creating"
    assert compute.snapshots.begin_create_or_update(RESOURCE_GROUP, "lro2", body).result().provisioning_state == (
        "Succeeded"
    )
    time.sleep(0.3)
    assert compute.snapshots.get(RESOURCE_GROUP, "lro").provisioning_state == "Succeeded"  # unpolled, it finished
    with azure_sandbox.fail_provisioning("snapshots/write"):
        failing = compute.snapshots.begin_create_or_update(RESOURCE_GROUP, "doomed", body)
        with pytest.raises(HttpResponseError):
            failing.result()
    assert compute.snapshots.get(RESOURCE_GROUP, "doomed").provisioning_state == "Failed"


def _half_made_snapshot(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, name: str) -> None:
    """A PUT of the case's OS disk snapshot that the run making it did not wait for (Ctrl-C, a lost state)."""
    compute = azure_sandbox.provider().session.client("compute", azure_incident.extra["subscription_id"])  # type: ignore[attr-defined]
    compute.snapshots.begin_create_or_update(RESOURCE_GROUP, name, _os_disk_snapshot(azure_incident), polling=False)


def test_a_snapshot_found_creating_is_waited_for_before_it_is_evidence(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire, tmp_path: Path
):
    azure_sandbox.fake.snapshot_seconds = 2.0  # longer than the steps before the snapshot's
    case = Case.create(tmp_path / "case")
    disk_name = azure_incident.extra["disk_ids"][0].rsplit("/", 1)[1]
    name = snapshot_name(case.case_id, disk_name)
    _half_made_snapshot(azure_sandbox, azure_incident, name)
    _, result = acquire()
    assert result.ok
    assert result.results["snapshot-os"]["reused"] is True
    saved = json.loads((case.root / "artifacts").rglob(f"{name}.json").__next__().read_text())
    assert saved["properties"]["provisioningState"] == "Succeeded"
    gets = [r for r in azure_sandbox.fake.requests if r["method"] == "GET" and r["path"].lower().endswith(name.lower())]
    assert len(gets) >= 2  # polled until Azure finished it


def test_a_failed_snapshot_fails_the_step_and_resume_makes_it_again_under_a_new_name(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    with azure_sandbox.fail_provisioning("Microsoft.Compute/snapshots/write"):
        case, failed = acquire(raise_on_failure=False)
    statuses = {o.step_id: o.status for o in failed.outcomes}
    assert statuses["snapshot-os"] == "failed"
    assert all(statuses[s] == "blocked" for s in statuses if s.startswith(("snapshot-data", "copy-")))
    [kept] = azure_sandbox.snapshots_for_case(case.case_id)
    _, resumed = acquire()
    assert resumed.ok
    made = resumed.results["snapshot-os"]
    assert made["failed_snapshots"] == [azure_sandbox.fake.get(kept)["id"]]  # type: ignore[index]
    assert made["snapshot_id"].endswith("-r1")
    assert azure_sandbox.fake.get(made["snapshot_id"])["properties"]["provisioningState"] == "Succeeded"  # type: ignore[index]
    assert azure_sandbox.fake.get(kept)["properties"]["provisioningState"] == "Failed"  # type: ignore[index]
    records = read_records(case.root / "custody.jsonl")
    done = next(r for r in records if r["details"].get("step") == "snapshot-os" and r["outcome"] == "ok")
    assert kept.lower() in json.dumps(done).lower()
    assert verify_case(case.root).ok
