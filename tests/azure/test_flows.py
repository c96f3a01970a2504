"""NSG flow logs: Network Watcher configuration, PT1H.json blobs through azure-storage-blob, coverage, the beacon."""

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.plan import StepOutcome, run_plan
from cloudir.playbook import build_response_plan, load_playbook
from cloudir.provider import LogPullRequest
from cloudir.triggers import load_triggers
from moto_fixtures.azure import (
    ATTACKER_IP,
    AZURE_DNS,
    FLOW_LOG_ACCOUNT,
    LOCATION,
    MAC,
    MANAGED_IDENTITY_ID,
    PRIVATE_IP,
    PUBLIC_IP,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    USER_ASSIGNED_SP_ID,
    VM_NAME,
    AzureSandbox,
    managed_identity_event,
    rid,
)
from moto_fixtures.azure_flows import NSG_CONTAINER, VNET_CONTAINER, Flow, Nic, flow_log_resource, vnet_blob
from moto_fixtures.sandbox import PlantedIncident
from providers.azure import create_provider
from tests.azure.conftest import Cli
from tests.respond.conftest import DATA

BLOBS = f"logs/azure/flows/blobs/{FLOW_LOG_ACCOUNT}/{NSG_CONTAINER}"


def _pull(
    sandbox: AzureSandbox, incident: PlantedIncident, root: Path, *, end: str | None = None, **settings: object
) -> tuple[Case, dict[str, StepOutcome], dict[str, dict[str, Any]]]:
    """Run the flow-log pull of the window into the case at ``root``: (case, outcomes and results by step)."""
    case = Case.open(root) if (root / "case.json").exists() else Case.create(root)
    provider = create_provider(**{**sandbox.provider_config(), **settings})  # type: ignore[arg-type]
    provider.bind(case)
    request = LogPullRequest(start=incident.window_start, end=end or incident.window_end, extra={"flows": True})
    result = run_plan(provider.plan_pull_logs(request), case, raise_on_failure=False)
    return case, {outcome.step_id: outcome for outcome in result.outcomes}, result.results


def _stored(sandbox: AzureSandbox) -> dict[str, bytes]:
    container = sandbox.blob.accounts[FLOW_LOG_ACCOUNT][NSG_CONTAINER]
    return {name: versions[-1].data for name, versions in container.blobs.items()}


def test_blobs_of_the_window_are_copied_hashed_listed_in_pages_and_read_in_ranges(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    azure_sandbox.blob.page_size = 2  # the service returns 2 blobs per List Blobs page, then a NextMarker
    case, steps, _ = _pull(azure_sandbox, azure_incident, tmp_path / "ir", image_chunk_size=4096)
    assert steps["blobs"].status == "done", steps["blobs"].error
    stored = _stored(azure_sandbox)
    copied = sorted(p for p in (case.root / BLOBS).rglob("PT1H.json"))
    hours = sorted(int(p.parts[-4].removeprefix("h=")) for p in copied)
    assert hours == [9, 10, 11]  # the 08:00 blob ends before the window starts; nothing after its end exists
    records = read_records(case.root / "custody.jsonl")
    artifacts = {a["path"]: a["sha256"] for r in records for a in r.get("artifacts", [])}
    for path in copied:
        name = str(path.relative_to(case.root / BLOBS))
        assert path.read_bytes() == stored[name]
        assert artifacts[str(path.relative_to(case.root))] == hashlib.sha256(stored[name]).hexdigest()
    calls = [c for r in records for c in r.get("api_calls", []) if c["service"] == "Storage.Blob"]
    assert sum(c["operation"] == "ListBlobs" for c in calls) >= 2  # paged by NextMarker
    gets = [c for c in calls if c["operation"] == "GetBlob"]
    assert len(gets) > len(copied)  # larger than 4 KiB: read in ranges
    assert {c["outcome"] for c in calls} == {"ok"}
    coverage = json.loads((case.root / "logs/azure/flows/coverage.json").read_text())
    (source,) = coverage["sources"]
    assert source["source"] == "azure:flow-logs:nsg"
    assert source["location"].endswith("/networkSecurityGroups/nsg-web")
    assert (source["status"], source["items"], source["details"]["version"]) == ("complete", 3, 2)
    assert source["details"]["since"] == source["first_event"] == azure_incident.window_start[:13] + ":00:00Z"
    assert verify_case(case.root).ok


def test_a_later_pull_copies_only_what_is_new_and_keeps_a_grown_blob_beside_the_first_copy(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    _pull(azure_sandbox, azure_incident, tmp_path / "ir")
    latest = max(_stored(azure_sandbox))  # the current hour's blob is appended to while the hour lasts
    first = _stored(azure_sandbox)[latest]
    azure_sandbox.blob.add_blob(FLOW_LOG_ACCOUNT, NSG_CONTAINER, latest, first + b" ")
    later = azure_incident.window_end.replace(":55:", ":59:")
    case, steps, results = _pull(azure_sandbox, azure_incident, tmp_path / "ir", end=later)
    assert steps["blobs"].status == "done", steps["blobs"].error
    assert (results["blobs"]["downloaded"], results["blobs"]["already_present"]) == (1, 2)
    copies = {p.name: p.read_bytes() for p in (case.root / BLOBS / latest).parent.iterdir()}
    assert copies.pop("PT1H.json") == first  # the first copy is never rewritten
    assert list(copies.values()) == [first + b" "]
    assert verify_case(case.root).ok


def test_without_a_data_reader_role_the_pull_stops_with_the_role_to_grant(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    roles = azure_sandbox.blob.roles[FLOW_LOG_ACCOUNT]
    azure_sandbox.blob.roles[FLOW_LOG_ACCOUNT] = {}
    case, steps, _ = _pull(azure_sandbox, azure_incident, tmp_path / "ir")
    assert steps["blobs"].status == "failed"
    assert "AuthorizationPermissionMismatch" in str(steps["blobs"].error)
    assert "Storage Blob Data Reader" in str(steps["blobs"].error)
    assert not (case.root / BLOBS).exists()
    calls = [c for r in read_records(case.root / "custody.jsonl") for c in r.get("api_calls", [])]
    assert any(c["operation"] == "ListBlobs" and c["http_status"] == 403 for c in calls)
    azure_sandbox.blob.roles[FLOW_LOG_ACCOUNT] = roles  # granted: the same pull resumes after its configuration step
    case, steps, results = _pull(azure_sandbox, azure_incident, tmp_path / "ir")
    assert [steps[s].status for s in ("flow-logs", "blobs", "coverage")] == ["resumed", "done", "done"]
    assert results["blobs"]["downloaded"] == 3


def test_blob_names_written_by_an_attacker_are_refused_and_the_others_copied(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    genuine = min(n for n in _stored(azure_sandbox) if "/h=10/" in n)
    hour = genuine.split("/macAddress=")[0]
    for name in (f"{hour}/../../../../../../../../escaped/PT1H.json", f"{hour}/macAddress=AA//PT1H.json"):
        azure_sandbox.blob.add_blob(FLOW_LOG_ACCOUNT, NSG_CONTAINER, name, b'{"records": []}')
    case, steps, results = _pull(azure_sandbox, azure_incident, tmp_path / "ir")
    assert steps["blobs"].status == "done", steps["blobs"].error
    assert results["blobs"]["refused_count"] == 2
    assert len(list((case.root / BLOBS).rglob("PT1H.json"))) == 3
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*"))
    coverage = json.loads((case.root / "logs/azure/flows/coverage.json").read_text())
    assert coverage["sources"][0]["status"] == "partial"
    assert any("refused" in warning for warning in coverage["warnings"])


def test_cli_pull_ingest_and_analyze_find_the_implant_not_the_platform_dns(
    cli: Cli,
    azure_sandbox: AzureSandbox,
    azure_incident: PlantedIncident,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("CLOUDIR_AZURE_BLOB_ENDPOINT", azure_sandbox.blob.base_url + "/{account}")
    vm_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Compute/virtualMachines", VM_NAME)
    grant = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments/{'1' * 32}"
    start = datetime.fromisoformat(azure_incident.window_start.replace("Z", "+00:00"))
    azure_sandbox.fake.activity[SUBSCRIPTION.lower()] += [  # the implant uses the VM's managed identity token
        managed_identity_event(
            start + timedelta(minutes=m), MANAGED_IDENTITY_ID, vm_id, operation, resource, client_ip=address
        )
        for m, operation, resource, address in (
            (30, "Microsoft.Authorization/roleAssignments/write", grant, PRIVATE_IP),
            (31, "Microsoft.Compute/virtualMachines/read", vm_id, PRIVATE_IP),
            (32, "Microsoft.Compute/virtualMachines/read", vm_id, PUBLIC_IP),  # out through the VM's public IP
        )
    ]
    case = tmp_path / "ir"
    window = ["--start", azure_incident.window_start, "--end", azure_incident.window_end]
    assert cli("logs", "pull", "azure", "--case", str(case), *window).exit_code == 0  # the Activity Log
    pulled = cli("logs", "pull", "azure", "--case", str(case), *window, "--flows")
    assert pulled.exit_code == 0, pulled.output
    assert "Azure flow logs" in pulled.output
    assert "nsg-web-flowlog" in pulled.output
    refused = cli("logs", "pull", "azure", "--case", str(case), *window, "--flows", "--entra")
    assert refused.exit_code == 2
    assert "--flows takes --subscription only" in refused.output
    db = case / "timeline.duckdb"
    runner = CliRunner()
    built = runner.invoke(app, ["timeline", "build", str(case)])
    assert built.exit_code == 0, built.output
    assert "0 quarantined" in built.output  # the configuration, inventory and listing are not taken for events
    analyzed = runner.invoke(app, ["analyze", str(db)])
    assert analyzed.exit_code == 0, analyzed.output
    with duckdb.connect(str(db), read_only=True) as con:
        titles = [t for (t,) in con.execute("SELECT title FROM findings WHERE rule = 'flow-beacon'").fetchall()]
        dns = con.execute("SELECT count(*) FROM flows WHERE dst_addr = ?", [AZURE_DNS]).fetchone()
        vm = con.execute(
            "SELECT instance, group_name, identities, addresses FROM instances WHERE list_contains(interfaces, ?)",
            [MAC],
        )
        owner = vm.fetchone()
        beacon = con.execute(
            "SELECT f.identity, f.profile ->> 'explanation', i.analyzers FROM findings f JOIN incidents i "
            "USING (incident_id) "
            "WHERE f.rule = 'flow-beacon' AND f.title LIKE ?",
            [f"%{ATTACKER_IP}:443"],
        ).fetchone()
    assert dns is not None
    assert dns[0] > 100  # the platform's DNS is asked every minute, as regular as any beacon ...
    assert [t for t in titles if AZURE_DNS in t] == []  # ... and is no external destination
    assert owner is not None
    assert owner[0].endswith("/virtualMachines/web-vm-01")
    assert owner[1].endswith("/virtualMachineScaleSets/vmss-web")
    assert any(t.endswith(f"web-vm-01 -> {ATTACKER_IP}:443") for t in titles), titles  # the VM, not its MAC
    # its system-assigned identity, the user-assigned one (principal and client id) and their resource ids
    assert {MANAGED_IDENTITY_ID, vm_id.lower(), USER_ASSIGNED_SP_ID} <= set(owner[2])
    assert sorted(owner[3]) == sorted([PRIVATE_IP, PUBLIC_IP])  # the NIC's public IP read from its own resource
    assert beacon is not None
    assert beacon[0] == MANAGED_IDENTITY_ID  # the Activity Log's caller: the identity's principal id
    assert (
        f"API activity made by the instance's managed identity ({MANAGED_IDENTITY_ID}, attached to no other "
        "instance): 5 calls, e.g. microsoft.compute/virtualmachines/read 3, "
        "microsoft.authorization/roleassignments/write 1, microsoft.storage/storageaccounts/listkeys/action 1; "
        "5 of them from this instance's known addresses"  # 3 from its public IP (the incident's 2 and one here)
    ) in beacon[1], beacon[1]
    assert "beaconing" in beacon[2]
    assert len(beacon[2]) > 1, beacon[2]  # the role assignment made with the same identity is in its incident


def test_a_vnet_flow_log_is_read_from_its_own_container_and_normalized(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    vnet_id = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Network/virtualNetworks", "vnet-prod")
    storage = rid(SUBSCRIPTION, RESOURCE_GROUP, "Microsoft.Storage/storageAccounts", FLOW_LOG_ACCOUNT)
    resource = flow_log_resource(SUBSCRIPTION, LOCATION, vnet_id, storage, version=4)
    azure_sandbox.fake.put(resource)
    start = datetime.fromisoformat(azure_incident.window_start.replace("Z", "+00:00")) + timedelta(minutes=20)
    flows = [Flow(start + timedelta(minutes=m), "192.0.2.77", 8443, 41000 + m) for m in range(3)]
    name, body = vnet_blob(resource["id"], vnet_id, Nic(MAC, PRIVATE_IP), flows)
    azure_sandbox.blob.add_blob(FLOW_LOG_ACCOUNT, VNET_CONTAINER, name, body)
    # the portal page's spelling of the same path: <subscription>_NETWORKWATCHERRG/NETWORKWATCHER_<region>_<name>
    later = [Flow(start + timedelta(hours=1, minutes=m), "192.0.2.77", 8443, 42000 + m) for m in range(2)]
    portal, portal_body = vnet_blob(resource["id"], vnet_id, Nic(MAC, PRIVATE_IP), later)
    portal = portal.replace(
        resource["id"].upper(), f"/{SUBSCRIPTION.upper()}_NETWORKWATCHERRG/NETWORKWATCHER_{LOCATION.upper()}_VNET-PROD"
    )
    azure_sandbox.blob.add_blob(FLOW_LOG_ACCOUNT, VNET_CONTAINER, portal, portal_body)
    case, steps, _ = _pull(azure_sandbox, azure_incident, tmp_path / "ir")
    assert steps["blobs"].status == "done", steps["blobs"].error
    copied = case.root / f"logs/azure/flows/blobs/{FLOW_LOG_ACCOUNT}/{VNET_CONTAINER}/{name}"
    assert copied.read_bytes() == body
    portal_copy = case.root / f"logs/azure/flows/blobs/{FLOW_LOG_ACCOUNT}/{VNET_CONTAINER}/{portal}"
    assert portal_copy.read_bytes() == portal_body
    coverage = json.loads((case.root / "logs/azure/flows/coverage.json").read_text())
    vnet = next(s for s in coverage["sources"] if s["source"] == "azure:flow-logs:vnet")
    assert (vnet["location"], vnet["status"], vnet["items"], vnet["details"]["version"]) == (vnet_id, "complete", 2, 4)
    built = CliRunner().invoke(app, ["timeline", "build", str(case.root)])
    assert built.exit_code == 0, built.output
    with duckdb.connect(str(case.root / "timeline.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT source_format, interface, dst_addr, direction FROM flows WHERE dst_addr = '192.0.2.77'"
        ).fetchall()
    assert rows == [("azure_vnet_flow", MAC, "192.0.2.77", "egress")] * 5


def test_a_playbook_collect_flows_step_plans_the_azure_flow_log_pull(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    steps = [{"id": "logs", "action": "pull_logs"}, {"id": "net", "action": "collect_flows"}]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"id": "t", "title": "T", "steps": steps}))
    provider = azure_sandbox.provider()
    target = provider.find_target(azure_incident.target)
    trigger = load_triggers(DATA / "defender_eventgrid.json")[0]
    response = build_response_plan(load_playbook(tmp_path / "t.yaml"), trigger, provider, target, approved=False)
    ids = [step.id for step in response.plan.steps]
    assert {"net.flow-logs", "net.blobs", "net.coverage"} <= set(ids)  # planned, not skipped as before
