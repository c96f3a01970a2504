"""Entra principals as targets: captured (Graph + role assignments), then revoked, disabled and stripped of the
role assignments made in the window, through the CLI and through a playbook, against strict Graph/ARM fakes."""

import base64
import json
from pathlib import Path

import pytest
from azure.core.rest import HttpRequest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.plan import run_plan
from cloudir.provider import AcquireOptions, ContainOptions, TargetKind, TargetQuery
from moto_fixtures.azure import (
    ATTACKER,
    ATTACKER_USER_ID,
    BACKDOOR_APP_ID,
    BACKDOOR_ASSIGNMENT,
    BACKDOOR_SP_ID,
    DB_IDENTITY_ID,
    MANAGED_IDENTITY_ID,
    OLD_ASSIGNMENT,
    SUBSCRIPTION,
    TENANT,
    USER_ASSIGNED_ID,
    USER_ASSIGNED_SP_ID,
    AzureSandbox,
    sandbox_token,
)
from moto_fixtures.sandbox import PlantedIncident
from providers.azure import create_provider
from providers.azure.session import StaticTokenCredential
from tests.azure.conftest import Cli

FOLDER = f"artifacts/azure/principals/{ATTACKER_USER_ID}"
ASSIGNMENTS = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments"


def _assignment(sandbox: AzureSandbox, name: str) -> dict | None:
    return sandbox.fake.get(f"{ASSIGNMENTS}/{name}")


def _api_calls(case_dir: Path) -> list[dict]:
    return [call for record in read_records(case_dir / "custody.jsonl") for call in record["api_calls"]]


def test_user_is_captured_then_revoked_disabled_and_the_backdoor_assignment_removed(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = tmp_path / "ir"
    graph = ["--graph-endpoint", azure_sandbox.graph.base_url, "--case", str(case)]
    since = ["--remove-assignments-since", azure_incident.window_start]
    refused = cli("contain", "azure", "--principal", ATTACKER, *graph, *since)
    assert refused.exit_code == 2  # nothing captured yet: nothing changes
    assert azure_sandbox.graph.directory.get("users", ATTACKER_USER_ID)["accountEnabled"] is True

    acquired = cli("acquire", "azure", "--target", ATTACKER, *graph)  # a UPN as --target is a principal
    assert acquired.exit_code == 0, acquired.output
    user = json.loads((case / FOLDER / "user.json").read_bytes())
    assert user["accountEnabled"] is True
    assert user["signInActivity"]["lastSignInDateTime"]
    methods = json.loads((case / FOLDER / "authentication-methods-00001.json").read_bytes())["value"]
    assert any("microsoftAuthenticator" in m["@odata.type"] for m in methods)  # the method the attacker added
    groups = json.loads((case / FOLDER / "memberOf-00001.json").read_bytes())["value"]
    assert [g["displayName"] for g in groups] == ["Cloud Ops"]
    captured = json.loads((case / FOLDER / "role-assignments-00001.json").read_bytes())["value"]
    assert {a["name"] for a in captured} == {OLD_ASSIGNMENT, BACKDOOR_ASSIGNMENT}

    dry = cli("contain", "azure", "--principal", ATTACKER, *graph, *since, "--dry-run")
    assert dry.exit_code == 0, dry.output
    for operation in (
        "revokeSignInSessions/action",
        "users/{id}/write",
        "roleAssignments/read",
        "roleAssignments/delete",
    ):
        assert operation in dry.output
    assert azure_sandbox.graph.directory.get("users", ATTACKER_USER_ID)["accountEnabled"] is True

    done = cli("contain", "azure", "--principal", ATTACKER, *graph, *since)
    assert done.exit_code == 0, done.output
    user = azure_sandbox.graph.directory.get("users", ATTACKER_USER_ID)
    assert user["accountEnabled"] is False
    assert user["signInSessionsValidFromDateTime"] > azure_incident.window_end  # sessions revoked just now
    assert _assignment(azure_sandbox, BACKDOOR_ASSIGNMENT) is None  # created by jdoe inside the window
    assert _assignment(azure_sandbox, OLD_ASSIGNMENT) is not None  # jdoe's own, from long before
    saved = json.loads((case / FOLDER / "containment/role-assignments-removed.json").read_text())
    assert [a["properties"]["principalId"] for a in saved] == [BACKDOOR_SP_ID]
    results = [r["details"]["result"] for r in read_records(case / "custody.jsonl") if r["action"] == "contain.contain"]
    undo = [u for result in results for u in result["undo"]]
    assert any(u.startswith("az rest --method PATCH") and '"accountEnabled": true' in u for u in undo)
    assert any(f"--assignee-object-id {BACKDOOR_SP_ID}" in u and "b24988ac" in u for u in undo)
    operations = {(c["service"], c["operation"]) for c in _api_calls(case)}
    assert ("Microsoft.Graph", "users/{id}/revokeSignInSessions/action") in operations
    assert ("Microsoft.Authorization", "roleAssignments/delete") in operations
    assert verify_case(case).ok


def test_offline_dry_run_names_every_call_for_either_kind_of_principal(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    for name in ("AZURE_ACCESS_TOKEN", "AZURE_CLIENT_ID", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)  # no credentials at all: the plan is built offline
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure"))
    out = cli("contain", "azure", "--principal", ATTACKER, "--subscription", SUBSCRIPTION, "--dry-run",
              "--remove-assignment", f"{ASSIGNMENTS}/{BACKDOOR_ASSIGNMENT}", connect=False)  # fmt: skip
    assert out.exit_code == 0, out.output
    for operation in (
        "users/{id}/revokeSignInSessions/action",
        "users/{id}/write",
        "servicePrincipals/{id}/write",
        "virtualMachines/write",
        "roleAssignments/delete",
    ):
        assert operation in out.output
    assert "if a managed identity" in out.output
    assert "if a user" in out.output
    assert "if a service principal" in out.output
    assert f"scope=/subscriptions/{SUBSCRIPTION}" in out.output  # the --subscription given, not a placeholder
    acquire = cli("acquire", "azure", "--principal", ATTACKER, "--subscription", SUBSCRIPTION, "--dry-run",
                  connect=False)  # fmt: skip
    assert acquire.exit_code == 0, acquire.output
    for operation in ("authentication/methods/read", "servicePrincipals/{id}/owners/read", "roleAssignments/read"):
        assert operation in acquire.output


def _run_principal(sandbox: AzureSandbox, case: Case, value: str, options: ContainOptions):
    provider = sandbox.provider()
    provider.bind(case)
    target = provider.find_target(TargetQuery(TargetKind.PRINCIPAL, value))
    run_plan(provider.plan_acquire(target, AcquireOptions()), case)
    return target, provider.plan_contain(target, options)


def test_service_principal_by_app_id_is_captured_with_its_credentials_then_disabled(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "sp")
    target, plan = _run_principal(azure_sandbox, case, BACKDOOR_APP_ID, ContainOptions())
    assert target.id == BACKDOOR_SP_ID
    assert target.details["principal_type"] == "service_principal"
    folder = case.root / f"artifacts/azure/principals/{BACKDOOR_SP_ID}"
    assert json.loads((folder / "servicePrincipal.json").read_bytes())["passwordCredentials"][0]["hint"] == "Q~x"
    owners = json.loads((folder / "owners-00001.json").read_bytes())["value"]
    assert [o["userPrincipalName"] for o in owners] == [ATTACKER]
    assert [s.id for s in plan.steps] == ["contain-disable-service-principal"]  # no assignment named: none removed
    run_plan(plan, case)
    assert azure_sandbox.graph.directory.get("servicePrincipals", BACKDOOR_SP_ID)["accountEnabled"] is False
    assert _assignment(azure_sandbox, BACKDOOR_ASSIGNMENT) is not None


def _identity(sandbox: AzureSandbox, vm: str) -> dict:
    group = "rg-prod-db" if vm == "db-vm-01" else "rg-prod-web"
    found = sandbox.fake.get(f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/"
                             f"virtualMachines/{vm}")  # fmt: skip
    assert found is not None
    return found["identity"]


def test_user_assigned_identity_is_detached_from_every_vm_carrying_it_through_the_cli(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = tmp_path / "uai"
    graph = ["--graph-endpoint", azure_sandbox.graph.base_url, "--case", str(case)]
    assert cli("acquire", "azure", "--principal", USER_ASSIGNED_SP_ID, *graph).exit_code == 0
    dry = cli("contain", "azure", "--principal", USER_ASSIGNED_SP_ID, *graph, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "virtualMachines/read" in dry.output
    assert "virtualMachines/write" in dry.output
    assert "id-storefront" in dry.output
    assert "not detached" not in dry.output
    assert USER_ASSIGNED_ID in _identity(azure_sandbox, "db-vm-01")["userAssignedIdentities"]  # a dry run

    done = cli("contain", "azure", "--principal", USER_ASSIGNED_SP_ID, *graph)
    assert done.exit_code == 0, done.output
    assert _identity(azure_sandbox, "web-vm-01") == {  # its system-assigned identity stays
        "type": "SystemAssigned", "principalId": MANAGED_IDENTITY_ID, "tenantId": TENANT,
    }  # fmt: skip
    db = _identity(azure_sandbox, "db-vm-01")
    assert db["type"] == "UserAssigned"
    assert list(db["userAssignedIdentities"]) == [DB_IDENTITY_ID]  # only the target was removed (null in a PATCH)
    folder = case / f"artifacts/azure/principals/{USER_ASSIGNED_SP_ID}/containment"
    before = json.loads((folder / "vm-db-vm-01-before.json").read_text())
    assert set(before["identity"]["userAssignedIdentities"]) == {USER_ASSIGNED_ID, DB_IDENTITY_ID}
    results = [r["details"]["result"] for r in read_records(case / "custody.jsonl") if r["action"] == "contain.contain"]
    undo = [u for result in results for u in result.get("undo", [])]
    assert f"az vm identity assign --resource-group rg-prod-db --name db-vm-01 --identities {USER_ASSIGNED_ID}" in undo
    writes = [c for c in _api_calls(case) if c["operation"] == "virtualMachines/write"]
    assert len(writes) == 2
    assert verify_case(case).ok


def test_system_assigned_identity_is_removed_from_its_vm_after_the_vm_is_saved(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "mi")
    target, plan = _run_principal(azure_sandbox, case, MANAGED_IDENTITY_ID, ContainOptions())
    assert target.details["principal_type"] == "managed_identity"
    folder = case.root / f"artifacts/azure/principals/{MANAGED_IDENTITY_ID}"
    assert (folder / "servicePrincipal.json").is_file()
    assert [s.id for s in plan.steps] == ["contain-detach-managed-identity"]
    assert any("new principal" in note for note in plan.notes)
    assert MANAGED_IDENTITY_ID in azure_sandbox.graph.directory.objects["servicePrincipals"]
    result = run_plan(plan, case)
    assert MANAGED_IDENTITY_ID not in azure_sandbox.graph.directory.objects["servicePrincipals"]  # Entra deletes it
    identity = _identity(azure_sandbox, "web-vm-01")
    assert identity == {"type": "UserAssigned", "userAssignedIdentities": identity["userAssignedIdentities"]}
    assert list(identity["userAssignedIdentities"]) == [USER_ASSIGNED_ID]  # the user-assigned one stays
    saved = json.loads((folder / "containment/vm-web-vm-01-before.json").read_text())
    assert saved["identity"]["principalId"] == MANAGED_IDENTITY_ID
    assert result.results["contain-detach-managed-identity"]["undo"] == [
        "az vm identity assign --resource-group rg-prod-web --name web-vm-01"
    ]


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        ({"type": "Disabled"}, "identity.type must be one of"),
        ({"type": "SystemAssigned", "userAssignedIdentities": {USER_ASSIGNED_ID: {}}}, "cannot be given"),
        ({"type": "UserAssigned", "userAssignedIdentities": {USER_ASSIGNED_ID: None}}, "needs at least one"),
        ({"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/x/other": {}}}, "not a user-assigned"),
        ({"type": "UserAssigned", "userAssignedIdentities": {DB_IDENTITY_ID.replace("id-db", "gone"): {}}},
         "was not found"),
    ],
)  # fmt: skip
def test_vm_identity_patch_is_held_to_the_compute_spec(azure_sandbox: AzureSandbox, identity: dict, message: str):
    azure_sandbox.plant_incident()
    client = create_provider(**azure_sandbox.provider_config()).session.arm_client()
    vm = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/"
    vm += "web-vm-01"
    request = HttpRequest("PATCH", f"{azure_sandbox.fake.base_url}{vm}?api-version=2024-07-01",
                          json={"identity": identity})  # fmt: skip
    response = client.send_request(request)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert _identity(azure_sandbox, "web-vm-01")["type"] == "SystemAssigned, UserAssigned"


def test_a_missing_graph_permission_fails_the_step_and_blocks_later_changes(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "denied")
    token = sandbox_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(token[1] + "=="))
    claims["roles"] = [r for r in claims["roles"] if r != "User.RevokeSessions.All"]
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    config = azure_sandbox.provider_config() | {"credential": StaticTokenCredential(f"{token[0]}.{payload}.x")}
    provider = create_provider(**config)
    provider.bind(case)
    target = provider.find_target(TargetQuery(TargetKind.PRINCIPAL, ATTACKER))
    run_plan(provider.plan_acquire(target, AcquireOptions()), case)
    result = run_plan(provider.plan_contain(target, ContainOptions()), case, raise_on_failure=False)
    failed = result.failed
    assert failed is not None
    assert failed.step_id == "contain-revoke-sessions"
    assert "User.RevokeSessions.All" in (failed.error or "")
    assert [o.status for o in result.outcomes] == ["failed", "blocked"]
    assert azure_sandbox.graph.directory.get("users", ATTACKER_USER_ID)["accountEnabled"] is True


@pytest.mark.parametrize(
    "value", ["x' or 1 eq 1", "../../etc/passwd@x", "7e1f3a2b-0000-4000-8000-000000000000", "jdoe@contoso.example/../x"]
)
def test_hostile_or_unknown_principals_are_refused_in_one_line(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path, value: str
):
    out = cli("acquire", "azure", "--principal", value, "--graph-endpoint", azure_sandbox.graph.base_url,
              "--case", str(tmp_path / "h"))  # fmt: skip
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    assert not list(tmp_path.glob("h/artifacts/**/*.json"))


def test_an_assignment_outside_the_subscription_is_never_removed(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "named")
    stranger = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments/not-there"
    options = ContainOptions(extra={"role_assignments": [stranger, f"{ASSIGNMENTS}/{BACKDOOR_ASSIGNMENT}"]})
    _, plan = _run_principal(azure_sandbox, case, ATTACKER, options)
    result = run_plan(plan, case, raise_on_failure=False)
    assert result.failed is not None
    assert "not-there" in (result.failed.error or "")
    assert _assignment(azure_sandbox, BACKDOOR_ASSIGNMENT) is not None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("api-version=2022-04-01&$filter=roleName eq 'Owner'", "UnsupportedQuery"),
        ("api-version=2015-07-01", "InvalidApiVersionParameter"),
    ],
)
def test_role_assignment_fake_refuses_what_the_spec_does_not_define(azure_sandbox: AzureSandbox, query: str, code: str):
    client = create_provider(**azure_sandbox.provider_config()).session.arm_client()
    response = client.send_request(HttpRequest("GET", f"{azure_sandbox.fake.base_url}{ASSIGNMENTS}?{query}"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


# A manual trigger's time is the wall clock, and the sandbox plants at fixed offsets from its incident clock (up to
# 25 h before): a 48-hour log window holds the planted incident whatever the time of day the test runs at.
WHOLE_INCIDENT = ("--param", "log_window_before_hours=48")


def test_playbook_captures_pulls_identity_logs_and_contains_the_user(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = {k: v for k, v in azure_sandbox.provider_config().items() if k != "credential"}
    monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"azure": config | {"token": sandbox_token()}}))
    case = tmp_path / "pb"
    args = ["respond", "--cloud", "azure", "--principal", ATTACKER, "--account", SUBSCRIPTION, "--case", str(case),
            *WHOLE_INCIDENT]  # fmt: skip
    first = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert first.exit_code == 0, first.output
    assert "principal-compromise" in first.output
    assert (case / FOLDER / "user.json").is_file()
    assert azure_sandbox.graph.directory.get("users", ATTACKER_USER_ID)["accountEnabled"] is True  # awaits approval
    approved = CliRunner().invoke(app, [*args, "--approve-containment"], env={"COLUMNS": "250"})
    assert approved.exit_code == 0, approved.output
    assert azure_sandbox.graph.directory.get("users", ATTACKER_USER_ID)["accountEnabled"] is False
    assert _assignment(azure_sandbox, BACKDOOR_ASSIGNMENT) is None
    sign_ins = [
        r
        for p in sorted(case.glob("logs/azure/entra/*/signins/page-*.json"))
        for r in json.loads(p.read_bytes())["value"]
    ]
    assert sign_ins
    assert {r["userId"] for r in sign_ins} == {ATTACKER_USER_ID}  # filtered by the resolved object id
    assert verify_case(case).ok


def test_playbook_plan_for_an_entra_user_names_every_call_offline():
    args = ["playbook", "plan", "--cloud", "azure", "--principal", ATTACKER, "--account", SUBSCRIPTION]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "principal-compromise" in result.output
    for operation in (
        "users/{id}/authentication/methods/read",
        "roleAssignments/read",
        "auditLogs/signIns/read",
        "users/{id}/revokeSignInSessions/action",
        "users/{id}/write",
        "virtualMachines/write",  # if the principal is a managed identity
        "roleAssignments/delete",  # the playbook removes what was granted since its log window's start
    ):
        assert operation in result.output, operation


def test_a_throttled_graph_read_is_retried_after_retry_after_and_recorded(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "throttled")
    azure_sandbox.graph.throttle("users", 0, 0)
    target, _ = _run_principal(azure_sandbox, case, ATTACKER, ContainOptions())
    assert target.id == ATTACKER_USER_ID
    outcomes = [(c["operation"], c["outcome"]) for c in _api_calls(case.root) if c["service"] == "Microsoft.Graph"]
    assert outcomes[:3] == [("users/{id}/read", "TooManyRequests")] * 2 + [("users/{id}/read", "ok")]
    assert (case.root / FOLDER / "user.json").is_file()


def test_playbook_detaches_a_user_assigned_identity_after_capturing_it(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = {k: v for k, v in azure_sandbox.provider_config().items() if k != "credential"}
    monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"azure": config | {"token": sandbox_token()}}))
    case = tmp_path / "pb-mi"
    args = ["respond", "--cloud", "azure", "--principal", USER_ASSIGNED_SP_ID, "--account", SUBSCRIPTION,
            "--case", str(case), "--approve-containment", *WHOLE_INCIDENT]  # fmt: skip
    out = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    folder = case / f"artifacts/azure/principals/{USER_ASSIGNED_SP_ID}"
    assert json.loads((folder / "servicePrincipal.json").read_bytes())["alternativeNames"][1] == USER_ASSIGNED_ID
    assert (folder / "containment/vm-web-vm-01-before.json").is_file()
    assert USER_ASSIGNED_ID not in (_identity(azure_sandbox, "web-vm-01").get("userAssignedIdentities") or {})
    assert USER_ASSIGNED_ID not in _identity(azure_sandbox, "db-vm-01")["userAssignedIdentities"]
    assert verify_case(case).ok
