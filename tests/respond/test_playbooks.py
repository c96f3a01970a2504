"""Shipped playbooks validate and match; invalid ones fail naming file, step and field; plans call no cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.playbook import PlaybookError, load_playbook, load_playbooks, select_playbook
from cloudir.triggers import load_triggers
from tests.respond.conftest import DATA

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"


def test_shipped_playbooks_validate_and_cover_the_issue() -> None:
    books = {book.id: book for book in load_playbooks()}
    assert {
        "ec2-instance-compromise",
        "iam-credential-compromise",
        "azure-vm-compromise",
        "gce-instance-compromise",
        "preserve-and-collect",
    } <= set(books)
    assert all(book.path.parent == SHIPPED for book in books.values())
    assert not any(step.action == "contain" for step in books["preserve-and-collect"].steps)


@pytest.mark.parametrize(
    ("name", "playbook"),
    [
        ("guardduty_ec2_eventbridge.json", "ec2-instance-compromise"),
        ("securityhub_imported_eventbridge.json", "ec2-instance-compromise"),
        ("guardduty_iam_access_key.json", "iam-credential-compromise"),
        ("securityhub_custom_action.json", "iam-credential-compromise"),
        ("defender_eventgrid.json", "azure-vm-compromise"),
        ("defender_workflow_automation.json", "azure-vm-compromise"),
        ("scc_pubsub_push.json", "gce-instance-compromise"),
    ],
)
def test_each_source_selects_its_playbook(name: str, playbook: str) -> None:
    [trigger] = load_triggers(DATA / name)
    assert select_playbook(trigger, load_playbooks()).id == playbook


def test_unmatched_finding_falls_back_to_preserve_and_collect() -> None:
    notification = load_triggers(DATA / "scc_notification.json")[0].raw
    notification["finding"]["resourceName"] = "//cloudresourcemanager.googleapis.com/projects/p"
    notification["finding"]["access"] = {"principalEmail": "x@example.com"}
    from cloudir.provider import TargetKind
    from cloudir.triggers import manual_trigger, parse_triggers

    [trigger] = parse_triggers(notification)
    assert select_playbook(trigger, load_playbooks()).id == "principal-compromise"  # a finding on a principal
    unmatched = manual_trigger("azure", TargetKind.ACCESS_KEY, "key-1", account="6f1c2a9e")
    assert select_playbook(unmatched, load_playbooks()).id == "preserve-and-collect"


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


BASE = {"id": "t", "title": "T", "steps": [{"id": "snap", "action": "snapshot"}]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"title": "T", "steps": []}, r"bad\.yaml: field id: required"),
        ({**BASE, "steps": []}, r"bad\.yaml: field steps: expected a non-empty list"),
        ({**BASE, "colour": "red"}, r"field \(top level\)\.colour: unknown field"),
        ({**BASE, "steps": [{"id": "x", "action": "explode"}]}, r"step 'x': field action: 'explode' is not one of"),
        ({**BASE, "steps": [{"action": "snapshot"}]}, r"step '#1': field id: required"),
        (
            {**BASE, "steps": [{"id": "c", "action": "contain", "when": {"min_severity": "urgent"}}]},
            r"step 'c': field when\.min_severity: 'urgent' is not one of",
        ),
        (
            {**BASE, "steps": [{"id": "c", "action": "contain", "when": {"unless_tag": {"env": "prod"}}}]},
            r"step 'c': field when\.unless_tag: unknown field",
        ),
        (
            {**BASE, "steps": [{"id": "n", "action": "notify", "params": {"format": "pdf"}}]},
            r"step 'n': field params\.format: expected 'md' or 'json'",
        ),
        ({**BASE, "steps": [{"id": "c", "action": "copy"}]}, r"step 'c': field action: copy needs a snapshot step"),
        (
            {**BASE, "steps": [{"id": "a", "action": "snapshot"}, {"id": "a", "action": "report"}]},
            r"step 'a': field id: duplicate step id",
        ),
        ({**BASE, "parameters": {"raw_image": "yes"}}, r"field parameters\.raw_image: expected bool, got 'yes'"),
        ({**BASE, "match": {"clouds": ["oracle"]}}, r"field match\.clouds: 'oracle' is not one of"),
        ({**BASE, "containment": {"require_approval": "maybe"}}, r"field containment\.require_approval"),
    ],
)
def test_invalid_playbooks_name_file_step_and_field(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(PlaybookError, match=message):
        load_playbook(_write(tmp_path, doc))


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nsteps: [\n  - a\n")
    with pytest.raises(PlaybookError, match=r"broken\.yaml: not valid YAML \(line \d+\)"):
        load_playbook(path)


def test_validate_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["playbook", "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.count("valid") == 6
    bad = _write(tmp_path, {**BASE, "steps": [{"id": "x", "action": "explode"}]})
    result = runner.invoke(app, ["playbook", "validate", str(bad)])
    assert result.exit_code == 2
    assert "step 'x': field action" in result.output
    assert "Traceback" not in result.output
    listed = runner.invoke(app, ["playbook", "list"])
    assert listed.exit_code == 0
    assert "gce-instance-compromise" in listed.output


def test_dry_run_respond_and_unknown_param() -> None:
    result = runner.invoke(
        app, ["respond", "--trigger", str(DATA / "scc_pubsub_push.json"), "--dry-run"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "gce-instance-compromise" in result.output
    assert "dry run" in result.output
    result = runner.invoke(app, ["respond", "--trigger", str(DATA / "scc_pubsub_push.json"), "--param", "colour=1"])
    assert result.exit_code == 2
    assert "--param colour: unknown parameter" in result.output


def test_malformed_trigger_runs_nothing(tmp_path: Path) -> None:
    case = tmp_path / "case"
    result = runner.invoke(
        app, ["respond", "--trigger", str(DATA / "malformed_guardduty_no_instance.json"), "--case", str(case)]
    )
    assert result.exit_code == 2
    assert "missing field resource.instanceDetails.instanceId" in result.output
    assert not case.exists()


def test_manual_triggers_plan_offline() -> None:
    result = runner.invoke(
        app,
        ["playbook", "plan", "--cloud", "aws", "--access-key", "AKIAEXAMPLEKEY000001", "--location", "eu-west-1"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "playbook iam-credential-compromise" in result.output
    assert "manual finding manual-" in result.output
    missing = runner.invoke(app, ["playbook", "plan", "--instance", "i-1"])
    assert missing.exit_code == 2
    assert "needs --cloud" in missing.output
    both = runner.invoke(app, ["playbook", "plan", "--cloud", "aws", "--instance", "i-1", "--access-key", "AKIAX"])
    assert both.exit_code == 2
    assert "name what to respond to" in both.output
