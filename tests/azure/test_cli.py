"""`cloudir acquire azure`: dry run, exit codes, resume, help."""

from pathlib import Path

from cloudir.custody import verify_case
from moto_fixtures.azure import PRIVATE_IP, VM_NAME, AzureSandbox
from moto_fixtures.sandbox import PlantedIncident
from tests.azure.conftest import Cli


def test_dry_run_prints_every_call_and_changes_nothing(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    before = azure_sandbox.state()
    requests = len(azure_sandbox.fake.requests)
    result = cli("acquire", "azure", VM_NAME, "--raw-image", "--case", str(tmp_path / "ir"), "--dry-run")
    assert result.exit_code == 0, result.output
    for operation in (
        "locks/write",
        "virtualMachineScaleSets/virtualMachines/write",
        "snapshots/write",
        "snapshots/beginGetAccess/action",
        "GetBlob",
        "snapshots/endGetAccess/action",
    ):
        assert operation in result.output, operation
    assert "dry run: nothing was changed." in result.output
    assert azure_sandbox.state() == before
    assert {r["method"] for r in azure_sandbox.fake.requests[requests:]} == {"GET"}
    assert not (tmp_path / "ir").exists()


def test_failure_exits_3_and_resume_completes(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case_dir = str(tmp_path / "ir")
    with azure_sandbox.fail_next("Microsoft.Compute/snapshots/write", "OperationNotAllowed"):
        failed = cli("acquire", "azure", PRIVATE_IP, "--case", case_dir)
    assert failed.exit_code == 3
    assert "step snapshot-os failed" in failed.output
    assert "--resume" in failed.output
    assert "Traceback" not in failed.output
    assert cli("acquire", "azure", PRIVATE_IP, "--case", case_dir).exit_code == 2  # exists: needs --resume
    resumed = cli("acquire", "azure", PRIVATE_IP, "--case", case_dir, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "acquire complete" in resumed.output
    assert azure_sandbox.is_preserved(azure_incident)
    assert verify_case(Path(case_dir)).ok


def test_missing_subscription_is_a_clear_error(cli: Cli, monkeypatch):
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    result = cli("acquire", "azure", VM_NAME, "--dry-run", connect=False)
    assert result.exit_code == 2
    assert "no subscription given" in result.output


def test_help_has_examples(cli: Cli):
    for command in (["acquire", "azure"], ["contain", "azure"], ["logs", "pull", "azure"]):
        result = cli(*command, "--help", connect=False)
        assert result.exit_code == 0
        assert "Examples:" in result.output
        assert "Exit codes:" in result.output


def test_snapshots_and_the_restore_point_show_progress_on_a_terminal_only(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    import re

    from typer.testing import CliRunner

    from cloudir.cli import app
    from moto_fixtures.azure import SUBSCRIPTION, sandbox_token

    fake = azure_sandbox.fake
    connect = ["--endpoint", fake.base_url, "--ca-bundle", fake.ca_file, "--token", sandbox_token()]
    connect += ["--subscription", SUBSCRIPTION, "--polling-interval", "0"]
    for terminal in (True, False):
        args = ["acquire", "azure", "--target", VM_NAME, "--case", str(tmp_path / f"ir-{terminal}"), *connect]
        done = CliRunner().invoke(app, args, env={"TTY_COMPATIBLE": "1" if terminal else "0", "COLUMNS": "200"})
        assert done.exit_code == 0, done.output
        shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stderr)
        assert ("snapshot of disk" in shown) is terminal, shown
        assert (f"restore point of {VM_NAME}" in shown) is terminal, shown
        assert "100%" in shown or not terminal


def test_log_pull_narrowed_to_a_vm_takes_its_managed_identities(
    cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    from moto_fixtures.azure import MANAGED_IDENTITY_ID, USER_ASSIGNED_SP_ID

    window = ["--around", "2026-05-01T10:00:00Z", "--before", "2h"]
    result = cli("logs", "pull", "azure", "--target", PRIVATE_IP, *window, "--entra", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"principals {MANAGED_IDENTITY_ID}, {USER_ASSIGNED_SP_ID}" in result.output  # resolved from the VM
    assert f"/virtualMachines/{VM_NAME}'" in result.output  # the Activity Log filtered on its resource id
    assert f"userId eq {MANAGED_IDENTITY_ID}" in result.output.replace("'", "")  # and the Entra logs on its identities
    assert "every event of the resources and resource groups named in the window" in result.output
