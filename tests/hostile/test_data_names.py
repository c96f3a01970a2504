"""Names from data that become local folders (Azure resource scopes): distinct names never share a folder."""

from __future__ import annotations

import json
from pathlib import Path

from moto_fixtures.azure import RESOURCE_GROUP, SUBSCRIPTION, VM_NAME, AzureSandbox
from moto_fixtures.sandbox import PlantedIncident
from tests.azure.conftest import Cli, cli  # noqa: F401 - the fixture that points the CLI at the fake


def test_activity_scopes_of_same_named_vms_keep_their_pages_apart(
    cli: Cli,  # noqa: F811
    azure_sandbox: AzureSandbox,
    azure_incident: PlantedIncident,
    tmp_path: Path,
) -> None:
    vms = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{{}}/providers/Microsoft.Compute/virtualMachines/{VM_NAME}"
    genuine, planted = vms.format(RESOURCE_GROUP), vms.format("rg-attacker")  # the attacker's VM, named alike
    events = azure_sandbox.fake.activity[SUBSCRIPTION.lower()]
    in_window = [e for e in events if azure_incident.window_start <= e["eventTimestamp"] <= azure_incident.window_end]
    [first, *_] = [e for e in in_window if e["resourceId"].lower().startswith(genuine.lower())]
    events.append(first | {"eventDataId": "forged-1", "resourceId": planted, "resourceGroupName": "rg-attacker"})
    case = tmp_path / "case"
    window = ["--start", azure_incident.window_start, "--end", azure_incident.window_end]
    pulled = cli("logs", "pull", "azure", "--case", str(case), *window, "--resource", genuine, "--resource", planted)
    assert pulled.exit_code == 0, pulled.output
    folders = [p for p in (case / "logs/azure/activity" / SUBSCRIPTION).iterdir() if p.is_dir()]
    stored = [
        {
            (e["resourceId"], e["eventDataId"])
            for page in f.glob("page-*.json")
            for e in json.loads(page.read_bytes())["value"]
        }
        for f in folders
    ]
    assert len(stored) == 2  # one folder per scope, each holding only its own resource's events
    assert sorted(({resource for resource, _ in events} for events in stored), key=sorted) == [{planted}, {genuine}]
