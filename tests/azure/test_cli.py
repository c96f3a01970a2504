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
