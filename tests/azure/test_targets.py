"""Finding the VM: by name, resource id, private IP, public IP; clear one-line errors otherwise."""

import pytest

from cloudir.errors import CapabilityNotSupportedError, CloudirError, TargetNotFoundError
from cloudir.provider import Provider, TargetKind, TargetQuery, get_provider
from moto_fixtures.azure import PRIVATE_IP, PUBLIC_IP, SUBSCRIPTION, VM_NAME, AzureSandbox
from moto_fixtures.sandbox import PlantedIncident
from tests.azure.conftest import Cli


def test_name_id_and_both_ips_resolve_to_the_same_vm(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    provider = azure_sandbox.provider()
    assert isinstance(provider, Provider)
    expected = provider.find_target(azure_incident.target)
    assert expected.id == azure_incident.extra["vm_id"]
    assert expected.ref == f"azure:{SUBSCRIPTION}:eastus:{expected.id}"
    assert [d["role"] for d in expected.details["disks"]] == ["os", "data-lun0", "data-lun1"]
    assert expected.details["vmss_id"].endswith("/virtualMachineScaleSets/vmss-web")
    assert expected.details["tags"] == {"env": "prod", "app": "storefront"}  # what playbook tag conditions check
    assert {q.value for q in azure_incident.alternate_targets} == {expected.id, PRIVATE_IP, PUBLIC_IP}
    for query in azure_incident.alternate_targets:
        assert provider.find_target(query).ref == expected.ref, query.value


def test_name_lookup_can_be_narrowed_to_a_resource_group(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    provider = azure_sandbox.provider()
    assert provider.find_target(TargetQuery(TargetKind.INSTANCE, VM_NAME, "rg-prod-web")).name == VM_NAME
    with pytest.raises(TargetNotFoundError, match="in rg-prod-db"):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, VM_NAME, "rg-prod-db"))


def test_unknown_targets_fail_with_one_line_naming_them(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    provider = azure_sandbox.provider()
    with pytest.raises(TargetNotFoundError, match="no VM named 'ghost-vm'") as by_name:
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "ghost-vm"))
    with pytest.raises(TargetNotFoundError, match=r"10\.9\.9\.9"):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "10.9.9.9"))
    ghost_id = azure_incident.extra["vm_id"].replace(VM_NAME, "ghost-vm")
    with pytest.raises(TargetNotFoundError, match="ResourceNotFound") as by_id:
        provider.find_target(TargetQuery(TargetKind.INSTANCE, ghost_id))
    for error in (by_name.value, by_id.value):
        assert "\n" not in str(error)
    with pytest.raises(CapabilityNotSupportedError, match="cannot handle targets of kind 'access-key'"):
        provider.find_target(TargetQuery(TargetKind.ACCESS_KEY, "AKIAEXAMPLE"))


def test_denied_read_names_the_missing_permission(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    provider = azure_sandbox.provider()
    with (
        azure_sandbox.fail_next("Microsoft.Compute/virtualMachines/read", "AuthorizationFailed"),
        pytest.raises(CloudirError, match=r"access denied .*\(grant Microsoft\.Compute/virtualMachines/read to"),
    ):
        provider.find_target(azure_incident.target)


def test_cli_not_found_is_one_line_and_exit_2(cli: Cli, azure_incident: PlantedIncident):
    result = cli("acquire", "azure", "ghost-vm", "--dry-run")
    assert result.exit_code == 2
    assert "error: no VM named 'ghost-vm'" in result.output
    assert "Traceback" not in result.output


def test_get_provider_builds_the_azure_adapter(azure_sandbox: AzureSandbox):
    provider = get_provider("azure", **azure_sandbox.provider_config())
    assert provider.cloud == "azure"
    assert "responder@contoso.example" in provider.identity()


def test_unmanaged_disks_are_refused_clearly(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident):
    vm = azure_sandbox.fake.get(azure_incident.extra["vm_id"])
    assert vm is not None
    vm["properties"]["storageProfile"]["dataDisks"][1].pop("managedDisk")
    vm["properties"]["storageProfile"]["dataDisks"][1]["vhd"] = {
        "uri": "https://legacy.blob.core.windows.net/vhds/d.vhd"
    }
    azure_sandbox.fake.put(vm)
    with pytest.raises(CapabilityNotSupportedError, match=r"unmanaged .*data-lun1"):
        azure_sandbox.provider().find_target(azure_incident.target)
