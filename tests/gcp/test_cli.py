"""The gcp CLI commands end to end against the sandbox: exit codes, dry run, resume, help."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cloudir.cli.gcp  # noqa: F401 - registers the gcp commands
from cloudir.cli.apps import app
from cloudir.custody import verify_case
from moto_fixtures.gcp import (
    EXTERNAL_IP,
    FORENSIC_PROJECT,
    INSTANCE,
    PROJECT,
    SERVICE_ACCOUNT,
    WINDOW_END,
    WINDOW_START,
    ZONE,
    GcpSandbox,
)
from moto_fixtures.sandbox import PlantedIncident

runner = CliRunner()


PULL = ["logs", "pull", "gcp", "--project", PROJECT, "--start", WINDOW_START, "--end", WINDOW_END]


def _run(gcp_sandbox: GcpSandbox, *args: str) -> tuple[int, str]:
    assert gcp_sandbox.server is not None
    result = runner.invoke(app, [*args, "--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"])
    return result.exit_code, result.output


def test_acquire_dry_run_then_real_then_contain(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "IR-1"
    before = gcp_sandbox.state()
    code, out = _run(gcp_sandbox, "acquire", "gcp", "--ip", EXTERNAL_IP, "--project", PROJECT, "--dry-run")
    assert code == 0
    assert "dry run" in out
    assert "disks.createSnapshot" in out
    assert gcp_sandbox.state() == before
    assert not case.exists()

    code, out = _run(gcp_sandbox, "contain", "gcp", "--instance", INSTANCE, "--project", PROJECT, "--case", str(case))
    assert code == 2
    assert "no case at" in out

    args = ["acquire", "gcp", "--instance", INSTANCE, "--project", PROJECT, "--zone", ZONE, "--case", str(case)]
    code, out = _run(gcp_sandbox, *args, "--forensic-project", FORENSIC_PROJECT)
    assert code == 0, out
    assert gcp_sandbox.is_preserved(incident)
    case_id = json.loads((case / "case.json").read_text())["case_id"]
    assert len(gcp_sandbox.snapshots_for_case(case_id)) == 4

    assert verify_case(case).ok

    contain = ["contain", "gcp", "--instance", INSTANCE, "--project", PROJECT, "--case", str(case)]
    code, out = _run(gcp_sandbox, *contain, "--examiner-cidr", "198.51.100.7/32")
    assert code == 0, out
    assert gcp_sandbox.is_isolated(incident)


def test_contain_without_acquisition_needs_force(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "IR-2"
    code, _ = _run(gcp_sandbox, *PULL, "--case", str(case))
    assert code == 0
    contain = ["contain", "gcp", "--instance", INSTANCE, "--project", PROJECT, "--case", str(case)]
    code, out = _run(gcp_sandbox, *contain)
    assert code == 2
    assert "no completed acquire" in out
    assert "--force" in out
    assert not gcp_sandbox.is_isolated(incident)
    with gcp_sandbox.fail_next("isolate"):
        code, out = _run(gcp_sandbox, *contain, "--force")
    assert code == 3
    code, out = _run(gcp_sandbox, *contain, "--force")
    assert code == 2
    assert "add --resume" in out
    assert not gcp_sandbox.is_isolated(incident)
    code, out = _run(gcp_sandbox, *contain, "--force", "--resume")
    assert code == 0, out
    assert gcp_sandbox.is_isolated(incident)


def test_failure_exit_3_then_resume(gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path) -> None:
    args = ["acquire", "gcp", "--instance", INSTANCE, "--project", PROJECT, "--case", str(tmp_path / "IR-3")]
    with gcp_sandbox.fail_next("snapshot", "FAILED_PRECONDITION"):  # not transient: not sent again
        code, out = _run(gcp_sandbox, *args)
    assert code == 3
    assert "--resume" in out
    assert "Traceback" not in out
    code, out = _run(gcp_sandbox, *args)
    assert code == 2
    assert "already ran" in out
    assert "(failed)" in out
    code, out = _run(gcp_sandbox, *args, "--resume")
    assert code == 0, out


def test_logs_pull_stores_pages(gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path) -> None:
    case = tmp_path / "IR-4"
    args = PULL
    code, out = _run(gcp_sandbox, *args, "--case", str(case), "--dry-run")
    assert code == 0
    assert "entries.list" in out
    assert not case.exists()
    code, out = _run(gcp_sandbox, *args, "--principal", incident.attacker_principal, "--case", str(case))
    assert code == 0, out
    pages = sorted((case / f"logs/gcp/audit/{PROJECT}").glob("*/page-*.json"))
    entries = json.loads(pages[0].read_text())["entries"]
    assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in entries} == {incident.attacker_principal}
    assert set(incident.extra["attacker_methods"]) <= {e["protoPayload"]["methodName"] for e in entries}


def test_logs_pull_narrowed_to_a_target_takes_its_service_account(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "IR-6"
    pull = [*PULL, "--target", EXTERNAL_IP]  # the instance by its IP: resolved, then its service account's entries
    code, out = _run(gcp_sandbox, *pull, "--dry-run")
    assert code == 0, out
    assert f"principals {SERVICE_ACCOUNT}" in out
    code, out = _run(gcp_sandbox, *pull, "--case", str(case))
    assert code == 0, out
    records = map(json.loads, (case / "custody.jsonl").read_text().splitlines())
    resolved = [r for r in records if r["action"] == "target.resolve"]
    assert resolved[0]["details"]["name"] == INSTANCE
    pages = sorted((case / f"logs/gcp/audit/{PROJECT}").glob("*/page-*.json"))
    entries = [entry for page in pages for entry in json.loads(page.read_text())["entries"]]
    assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in entries} == {SERVICE_ACCOUNT}
    assert set(incident.extra["attacker_methods"]) <= {e["protoPayload"]["methodName"] for e in entries}


def test_snapshots_and_image_copies_show_progress_on_a_terminal_only(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    assert gcp_sandbox.server is not None
    connect = ["--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous", "--forensic", FORENSIC_PROJECT]
    for terminal in (True, False):
        args = ["acquire", "gcp", "--target", INSTANCE, "--project", PROJECT, "--case", str(tmp_path / f"{terminal}")]
        env = {"TTY_COMPATIBLE": "1" if terminal else "0", "COLUMNS": "200"}
        done = runner.invoke(app, [*args, *connect], env=env)
        assert done.exit_code == 0, done.output
        shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stderr)
        assert ("snapshot of disk" in shown) is terminal, shown
        assert ("image copy of snapshot" in shown) is terminal, shown
        assert "100%" in shown or not terminal


def test_logs_pull_joins_an_acquisition_case_but_refuses_a_repeat(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "IR-5"
    code, out = _run(
        gcp_sandbox, "acquire", "gcp", "--instance", incident.target.value, "--project", PROJECT, "--case", str(case)
    )
    assert code == 0, out
    pull = [*PULL, "--case", str(case)]
    code, out = _run(gcp_sandbox, *pull)
    assert code == 0, out
    assert sorted((case / f"logs/gcp/audit/{PROJECT}").glob("page-*.json"))
    code, out = _run(gcp_sandbox, *pull)
    assert code == 2
    assert "--resume" in out


@pytest.mark.parametrize(
    "args",
    [
        ["acquire", "gcp", "--instance", "ghost-vm", "--project", PROJECT],
        ["acquire", "gcp", "--project", PROJECT],
        ["logs", "pull", "gcp", "--project", PROJECT, "--start", "last tuesday", "--end", WINDOW_END, "--case", "c"],
    ],
)
def test_bad_input_is_one_line_exit_2(gcp_sandbox: GcpSandbox, incident: PlantedIncident, args: list[str]) -> None:
    code, out = _run(gcp_sandbox, *args, "--dry-run")
    assert code == 2
    assert out.strip().startswith("error:")
    assert "Traceback" not in out


@pytest.mark.parametrize("command", [["acquire", "gcp"], ["contain", "gcp"], ["logs", "pull", "gcp"]])
def test_help_has_examples(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "--dry-run" in result.output
    assert "--case" in result.output
