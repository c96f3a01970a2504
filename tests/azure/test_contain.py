"""Containment: an isolation NSG (deny all both ways, examiner allowed) on every NIC, only after acquisition."""

import json

from cloudir.custody import verify_case
from cloudir.provider import Capability, ContainOptions, TargetKind
from moto_fixtures.azure import RESOURCE_GROUP, VM_NAME, AzureSandbox
from moto_fixtures.sandbox import PlantedIncident
from tests.azure.conftest import Acquire, Cli, contain


def test_isolation_nsg_denies_everything_but_the_examiner(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire()
    assert not azure_sandbox.is_isolated(azure_incident)
    result = contain(azure_sandbox.provider(), azure_incident, case, examiner_cidr="198.51.100.7/32")
    assert result.ok
    assert azure_sandbox.is_isolated(azure_incident)
    nsg = azure_sandbox.fake.get(result.results["isolate-nsg"]["nsg_id"])
    assert nsg is not None
    assert nsg["name"] == f"cloudir-isolate-{VM_NAME}"
    rules = {rule["name"]: rule["properties"] for rule in nsg["properties"]["securityRules"]}
    assert set(rules) == {
        "cloudir-allow-examiner-inbound",
        "cloudir-allow-examiner-outbound",
        "cloudir-deny-all-inbound",
        "cloudir-deny-all-outbound",
    }
    assert rules["cloudir-allow-examiner-inbound"]["sourceAddressPrefix"] == "198.51.100.7/32"
    assert rules["cloudir-allow-examiner-outbound"]["destinationAddressPrefix"] == "198.51.100.7/32"
    for direction in ("inbound", "outbound"):
        deny = rules[f"cloudir-deny-all-{direction}"]
        assert (deny["access"], deny["protocol"], deny["priority"]) == ("Deny", "*", 4096)
        assert rules[f"cloudir-allow-examiner-{direction}"]["priority"] < deny["priority"]
    nic_result = result.results["isolate-nic-0"]
    assert nic_result["previous_nsg"].endswith("/networkSecurityGroups/nsg-web")
    before = case.root / "artifacts" / "azure" / RESOURCE_GROUP / VM_NAME / "containment" / f"{VM_NAME}-nic-before.json"
    assert json.loads(before.read_text())["properties"]["networkSecurityGroup"]["id"] == nic_result["previous_nsg"]
    assert verify_case(case.root).ok


def test_without_examiner_there_are_only_deny_rules(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire()
    result = contain(azure_sandbox.provider(), azure_incident, case)
    nsg = azure_sandbox.fake.get(result.results["isolate-nsg"]["nsg_id"])
    assert nsg is not None
    assert {rule["properties"]["access"] for rule in nsg["properties"]["securityRules"]} == {"Deny"}


def test_a_vm_is_isolated_and_credential_revocation_belongs_to_its_principal(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident
):
    provider = azure_sandbox.provider()
    assert Capability.REVOKE not in provider.targets[TargetKind.INSTANCE]
    assert Capability.REVOKE in provider.targets[TargetKind.PRINCIPAL]
    plan = provider.plan_contain(provider.find_target(azure_incident.target), ContainOptions(revoke_credentials=True))
    assert any("cloudir contain azure --principal" in note for note in plan.notes)
    assert [step.id for step in plan.steps] == ["isolate-nsg", "isolate-nic-0"]


def test_cli_contain_refuses_without_acquisition_then_works_after_it(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case_dir = str(tmp_path / "ir")
    refused = cli("contain", "azure", VM_NAME, "--case", case_dir, "--examiner-cidr", "198.51.100.7/32")
    assert refused.exit_code == 2
    assert "no case at" in refused.output
    assert cli("acquire", "azure", VM_NAME, "--case", case_dir).exit_code == 0
    before = azure_sandbox.state()
    dry = cli("contain", "azure", VM_NAME, "--case", case_dir, "--dry-run")
    assert dry.exit_code == 0
    assert "networkSecurityGroups/write" in dry.output
    assert "dry run" in dry.output
    assert azure_sandbox.state() == before
    done = cli("contain", "azure", VM_NAME, "--case", case_dir, "--examiner-cidr", "198.51.100.7/32")
    assert done.exit_code == 0, done.output
    assert "cloudir contain azure --principal" in done.output
    assert azure_sandbox.is_isolated(azure_incident)
    again = cli("contain", "azure", VM_NAME, "--case", case_dir)
    assert again.exit_code == 2
    assert "--resume" in again.output


def test_cli_contain_in_a_case_without_completed_acquisition_is_refused(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case_dir = str(tmp_path / "ir")
    with azure_sandbox.fail_next(
        "Microsoft.Compute/snapshots/write", "OperationNotAllowed"
    ):  # a 409: not retried by the SDK
        assert cli("acquire", "azure", VM_NAME, "--case", case_dir).exit_code == 3
    refused = cli("contain", "azure", VM_NAME, "--case", case_dir)
    assert refused.exit_code == 2
    assert "no completed acquire" in refused.output
    assert not azure_sandbox.is_isolated(azure_incident)
    forced = cli("contain", "azure", VM_NAME, "--case", case_dir, "--force")
    assert forced.exit_code == 0
    assert azure_sandbox.is_isolated(azure_incident)


def test_rerun_keeps_the_nic_state_saved_before_the_first_change(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, acquire: Acquire
):
    case, _ = acquire()
    provider = azure_sandbox.provider()
    contain(provider, azure_incident, case)
    (case.root / "state.json").unlink()  # forget the run: the NIC is already isolated when it runs again
    again = contain(provider, azure_incident, case)
    assert again.results["isolate-nic-0"]["previous_nsg"].endswith("/networkSecurityGroups/nsg-web")
    saved = json.loads((case.root / again.results["isolate-nic-0"]["saved"]).read_text())
    assert saved["properties"]["networkSecurityGroup"]["id"].endswith("/networkSecurityGroups/nsg-web")
    assert azure_sandbox.is_isolated(azure_incident)
    assert verify_case(case.root).ok
