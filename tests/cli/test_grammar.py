"""One grammar on every cloud: the same option names, hidden old spellings, dry runs that need no credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app

runner = CliRunner()
CLOUDS = ("aws", "azure", "gcp")
SCOPE = {"aws": ["--region", "eu-west-1"], "azure": ["--subscription", "6f1c2a9e"], "gcp": ["--project", "prod-1"]}
OLD_SPELLINGS = {
    ("acquire", "aws"): ["--instance", "--ip", "--eni", "--access-key", "--forensic-account"],
    ("contain", "aws"): ["--instance", "--ip", "--access-key"],
    ("acquire", "azure"): ["--soc-subscription"],
    ("acquire", "gcp"): ["--instance", "--ip", "--forensic-project"],
    ("contain", "gcp"): ["--instance", "--ip"],
}


@pytest.mark.parametrize("verb", ["acquire", "contain"])
@pytest.mark.parametrize("cloud", CLOUDS)
def test_same_options_on_every_cloud(verb: str, cloud: str) -> None:
    result = runner.invoke(app, [verb, cloud, "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--target", "--case", "--dry-run", "--resume"):
        assert option in result.output
    if verb == "acquire":
        assert "--forensic " in result.output
    for old in OLD_SPELLINGS.get((verb, cloud), []):
        assert f"{old} " not in result.output, f"{old} should be a hidden alias"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_log_pulls_take_the_same_window_options(cloud: str) -> None:
    result = runner.invoke(app, ["logs", "pull", cloud, "--help"])
    for option in ("--case", "--start", "--end", "--around", "--before", "--after", "--dry-run", "--resume"):
        assert option in result.output


@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize("verb", ["acquire", "contain"])
@pytest.mark.parametrize("cloud", CLOUDS)
def test_dry_run_needs_no_credentials(verb: str, cloud: str, tmp_path: Path) -> None:
    case = tmp_path / "case"
    result = runner.invoke(app, [verb, cloud, "--target", "web-1", *SCOPE[cloud], "--case", str(case), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"no {cloud} credentials found" in result.output
    assert "web-1" in result.output
    if cloud != "aws":  # the subscription or project as given (AWS's account comes from sts, not called offline)
        assert SCOPE[cloud][1] in result.output
        assert "<account>" not in result.output
    assert "dry run: nothing was changed" in result.output
    assert not case.exists()


@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize("cloud", CLOUDS)
def test_log_pull_dry_run_needs_no_credentials(cloud: str, tmp_path: Path) -> None:
    args = ["logs", "pull", cloud, *SCOPE[cloud], "--case", str(tmp_path / "c"), "--around", "2026-11-20T10:00Z"]
    result = runner.invoke(app, [*args, "--before", "2h", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"no {cloud} credentials found" in result.output


@pytest.mark.usefixtures("no_credentials")
def test_old_spelling_still_works_and_forensic_comes_from_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLOUDIR_FORENSIC_AWS", "111122223333")
    result = runner.invoke(app, ["acquire", "aws", "--instance", "i-0abc", "--region", "eu-west-1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "111122223333" in result.output


def test_two_targets_are_refused() -> None:
    result = runner.invoke(app, ["acquire", "gcp", "--target", "a", "--instance", "b", "--project", "p", "--dry-run"])
    assert result.exit_code == 2
    assert "name exactly one target" in result.output


GRAMMAR = {  # the options every cloud's command of a verb shares, declared once in cloudir/cli/common.py
    "acquire": ("--target", "--case", "--forensic", "--dry-run", "--resume", "--format"),
    "contain": ("--target", "--case", "--dry-run", "--resume", "--format", "--force", "--examiner-cidr"),
    "logs pull": ("--target", "--case", "--dry-run", "--resume", "--format", "--start", "--end", "--around"),
}
GRAMMAR["logs pull"] += ("--before", "--after")


def _options(verb: str, cloud: str) -> dict[str, tuple[str | None, object, bool]]:
    """Each option of ``cloudir <verb> <cloud>``: its help, default and whether it is hidden."""
    import typer.main

    group = typer.main.get_command(app)
    ctx = group.make_context("cloudir", [verb.split(maxsplit=1)[0], "--help"], resilient_parsing=True)
    command: object = group
    for name in [*verb.split(), cloud]:
        command = command.get_command(ctx, name)  # type: ignore[attr-defined]
    params = command.params  # type: ignore[attr-defined]
    return {opt: (p.help, p.default, p.hidden) for p in params for opt in p.opts if opt.startswith("--")}


@pytest.mark.parametrize("verb", sorted(GRAMMAR))
def test_every_cloud_declares_the_grammar_options_alike(verb: str) -> None:
    declared = {cloud: _options(verb, cloud) for cloud in CLOUDS}
    for option in GRAMMAR[verb]:
        seen = {cloud: declared[cloud].get(option) for cloud in CLOUDS}
        assert None not in seen.values(), f"{verb}: {option} missing on {[c for c, v in seen.items() if v is None]}"
        assert len({repr(value) for value in seen.values()}) == 1, f"{verb} {option} drifted: {seen}"
        assert not seen["aws"][2], f"{verb} {option} is hidden"  # type: ignore[index]


def test_the_drift_check_sees_a_different_help_text() -> None:
    # --principal is a per-cloud extra: its help differs between clouds, which the comparison above would catch
    helps = {cloud: _options("acquire", cloud).get("--principal", (None,))[0] for cloud in ("aws", "azure")}
    assert helps["aws"] != helps["azure"]


@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize(
    ("cloud", "target", "shown"),
    [
        ("aws", "i-0abc123", "LookupAttributes=Username=i-0abc123"),  # the instance-role sessions
        ("azure", "web-vm-01", "resourceUri eq 'web-vm-01'"),
        ("gcp", "web-1", 'principalEmail="<service account of web-1>"'),
    ],
)
def test_log_pull_narrowed_to_a_target_offline(cloud: str, target: str, shown: str, tmp_path: Path) -> None:
    args = ["logs", "pull", cloud, "--target", target, *SCOPE[cloud], "--around", "2026-11-20T10:00Z", "--dry-run"]
    result = runner.invoke(app, [*args, "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert any(shown in json.loads(line)["api_call"] for line in result.stdout.splitlines())
    assert f"narrowed to {cloud}:" in result.stderr
    assert f"no {cloud} credentials found" in result.stderr


def test_log_pull_needs_a_case_or_a_target(tmp_path: Path) -> None:
    result = runner.invoke(app, ["logs", "pull", "gcp", "--project", "p", "--around", "2026-11-20T10:00Z"])
    assert result.exit_code == 2
    assert "no case folder" in result.output
