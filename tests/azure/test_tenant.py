"""Tenant-wide and multi-subscription Activity Log pulls: ARM GET /subscriptions, each subscription's pages kept
apart with its own coverage, configuration-file defaults, clear refusals, resume after one subscription failed."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.errors import StepFailedError
from cloudir.plan import run_plan
from cloudir.provider import LogPullRequest
from cloudir.timeline.ingest import build_case_timeline
from moto_fixtures.azure import MEMBER_SUBSCRIPTION, SOC_SUBSCRIPTION, SUBSCRIPTION, AzureSandbox, sandbox_token
from moto_fixtures.azure_server import _error
from moto_fixtures.sandbox import PlantedIncident

WIDE = ["--start", "2026-01-01T00:00:00Z", "--end", "2099-01-01T00:00:00Z"]
ALL = sorted([SUBSCRIPTION, MEMBER_SUBSCRIPTION, SOC_SUBSCRIPTION])


def _cli(sandbox: AzureSandbox, *args: str, env: dict[str, str] | None = None):
    connect = ["--endpoint", sandbox.fake.base_url, "--ca-bundle", sandbox.fake.ca_file, "--token", sandbox_token()]
    result = CliRunner().invoke(app, ["logs", "pull", "azure", *args, *connect], env={"COLUMNS": "300", **(env or {})})
    return result.exit_code, result.output


def _coverage(case: Path) -> dict[str, dict]:
    sources = json.loads((case / "logs/azure/coverage.json").read_text())["sources"]
    return {s["location"]: s for s in sources if s["source"] == "azure:activity"}


def test_all_subscriptions_lists_the_tenant_and_pulls_each_apart(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = tmp_path / "tenant"
    code, out = _cli(azure_sandbox, "--case", str(case), *WIDE, "--all-subscriptions", "--dry-run")
    assert code == 0, out
    assert "subscriptions/read" in out
    assert "eventtypes/values/read" in out
    assert not case.exists()
    azure_sandbox.fake.page_size = 2  # the subscription list comes in two pages
    code, out = _cli(azure_sandbox, "--case", str(case), *WIDE, "--all-subscriptions")
    assert code == 0, out
    listing = sorted((case / "artifacts/azure/subscriptions").glob("list-01-*.json"))
    assert [json.loads(p.read_bytes()).get("nextLink") is not None for p in listing] == [True, False]
    coverage = _coverage(case)
    assert sorted(coverage) == ALL
    assert coverage[MEMBER_SUBSCRIPTION]["items"] == 2  # the attacker's steps into the dev subscription
    assert coverage[SOC_SUBSCRIPTION]["status"] == "empty"
    member_pages = list((case / f"logs/azure/activity/{MEMBER_SUBSCRIPTION}").glob("page-*.json"))
    assert {e["subscriptionId"] for p in member_pages for e in json.loads(p.read_bytes())["value"]} == {
        MEMBER_SUBSCRIPTION
    }
    operations = [c["operation"] for r in read_records(case / "custody.jsonl") for c in r["api_calls"]]
    assert operations[:2] == ["subscriptions/read", "subscriptions/read"]
    assert MEMBER_SUBSCRIPTION in out
    stats = build_case_timeline(Case.open(case))
    assert stats.quarantined == 0  # the subscription list is evidence, not a log to parse
    assert stats.ingested == sum(source["items"] for source in coverage.values())
    assert verify_case(case).ok


def test_one_subscription_refused_the_others_pulled_and_resume_completes_it(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    case = Case.create(tmp_path / "case")
    provider = azure_sandbox.provider()
    provider.bind(case)
    original = azure_sandbox.fake._activity_log

    def member_denied(path: str, query: dict[str, str]):
        if MEMBER_SUBSCRIPTION in path:
            return _error(403, "AuthorizationFailed", "no Microsoft.Insights/eventtypes/values/read on dev")
        return original(path, query)

    azure_sandbox.fake._activity_log = member_denied  # type: ignore[method-assign]
    request = LogPullRequest(start="2026-01-01T00:00:00Z", end="2099-01-01T00:00:00Z",
                             extra={"all_subscriptions": True})  # fmt: skip
    with pytest.raises(StepFailedError, match=f"1 of 3 subscriptions.*{MEMBER_SUBSCRIPTION}"):
        run_plan(provider.plan_pull_logs(request), case)
    coverage = _coverage(case.root)
    assert coverage[MEMBER_SUBSCRIPTION]["status"] == "stopped"
    assert coverage[SUBSCRIPTION]["status"] == "complete"  # the others were still pulled
    azure_sandbox.fake._activity_log = original  # type: ignore[method-assign]
    before = len(azure_sandbox.fake.requests)
    result = run_plan(provider.plan_pull_logs(request), case)
    assert result.ok
    pulled = [r["path"] for r in azure_sandbox.fake.requests[before:] if "eventtypes" in r["path"]]
    assert pulled == [f"/subscriptions/{MEMBER_SUBSCRIPTION}/providers/Microsoft.Insights/eventtypes/management/values"]
    assert _coverage(case.root)[MEMBER_SUBSCRIPTION]["status"] == "complete"
    assert verify_case(case.root).ok


def test_configured_subscriptions_are_the_default_and_flags_win(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path: Path
):
    config = tmp_path / "config.toml"
    config.write_text(f'[logs.azure]\nsubscriptions = ["{SUBSCRIPTION}", "{MEMBER_SUBSCRIPTION}"]\n')
    env = {"CLOUDIR_CONFIG": str(config)}
    code, out = _cli(azure_sandbox, "--case", str(tmp_path / "a"), *WIDE, env=env)
    assert code == 0, out
    assert sorted(_coverage(tmp_path / "a")) == sorted([SUBSCRIPTION, MEMBER_SUBSCRIPTION])
    code, out = _cli(azure_sandbox, "--case", str(tmp_path / "b"), *WIDE, "--subscription", SOC_SUBSCRIPTION, env=env)
    assert code == 0, out
    assert sorted(_coverage(tmp_path / "b")) == [SOC_SUBSCRIPTION]
    config.write_text("[logs.azure]\nall_subscriptions = true\n")
    code, out = _cli(azure_sandbox, "--case", str(tmp_path / "c"), *WIDE, env=env)
    assert code == 0, out
    assert sorted(_coverage(tmp_path / "c")) == ALL


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--all-subscriptions", "--subscription", SUBSCRIPTION], "", "--all-subscriptions pulls every"),
        (["--all-subscriptions", "--resource-group", "rg-prod-web"], "", "takes every subscription"),
        ([], '[logs.azure]\nsubscriptions = ["a"]\nall_subscriptions = true\n', "not both"),
        ([], '[logs.azure]\nsubscriptions = "a"\n', "must be a list"),
    ],
)
def test_what_cannot_be_done_is_refused_in_one_line(
    azure_sandbox: AzureSandbox, tmp_path: Path, args: list[str], config: str, message: str
):
    path = tmp_path / "config.toml"
    path.write_text(config)
    code, out = _cli(azure_sandbox, "--case", str(tmp_path / "x"), *WIDE, *args, env={"CLOUDIR_CONFIG": str(path)})
    assert code == 2, out
    assert message in out
    assert "Traceback" not in out
    assert not (tmp_path / "x" / "logs").exists()
