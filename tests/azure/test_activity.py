"""Activity Log: nextLink paging, 429 + Retry-After, raw pages stored as served and in custody, coverage."""

import json
import time

import pytest

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.errors import StepFailedError
from cloudir.plan import run_plan
from cloudir.provider import LogPullRequest
from moto_fixtures.azure import ATTACKER, RESOURCE_GROUP, SUBSCRIPTION, AzureSandbox
from moto_fixtures.sandbox import PlantedIncident
from tests.azure.conftest import Cli

OPERATION = "Microsoft.Insights/eventtypes/values/read"
PAGES = f"logs/azure/activity/{SUBSCRIPTION}"


def pull(sandbox: AzureSandbox, case: Case, request: LogPullRequest, **kwargs: bool):
    provider = sandbox.provider()
    provider.bind(case)
    return run_plan(provider.plan_pull_logs(request), case, **kwargs)


def served_events(sandbox: AzureSandbox, start: str, end: str) -> list[str]:
    events = sandbox.fake.activity[SUBSCRIPTION.lower()]
    return sorted(e["eventDataId"] for e in events if start <= e["eventTimestamp"] <= end)


def test_pages_follow_next_link_and_are_stored_raw_before_parsing(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    start, end = "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
    result = pull(azure_sandbox, case, LogPullRequest(start=start, end=end))
    pages = sorted((case.root / PAGES).glob("page-*.json"))
    assert [p.name for p in pages] == [f"page-{n:05d}.json" for n in range(1, 4)]  # 25 events, 10 a page
    bodies = [json.loads(p.read_bytes()) for p in pages]
    assert all(set(body) == {"value", "nextLink"} for body in bodies)
    assert all(body["nextLink"] for body in bodies[:-1]) and bodies[-1]["nextLink"] is None
    stored = sorted(e["eventDataId"] for body in bodies for e in body["value"])
    assert stored == served_events(azure_sandbox, start, end)
    assert ATTACKER in {e["caller"] for body in bodies for e in body["value"]}
    assert result.results[f"activity-{SUBSCRIPTION}"]["events"] == len(stored) == 25
    records = read_records(case.root / "custody.jsonl")
    record = next(r for r in records if r["details"].get("step") == f"activity-{SUBSCRIPTION}")
    assert sorted(a["path"] for a in record["artifacts"]) == [f"{PAGES}/{p.name}" for p in pages]
    assert [c["operation"] for c in record["api_calls"]] == ["eventtypes/values/read"] * 3
    assert verify_case(case.root).ok


def test_throttling_honours_retry_after_and_is_reported(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    azure_sandbox.throttle(OPERATION, 0, 1)
    started = time.monotonic()
    result = pull(azure_sandbox, case, LogPullRequest(start=azure_incident.window_start, end=azure_incident.window_end))
    assert time.monotonic() - started >= 1.0  # waited out Retry-After: 1
    assert result.ok
    coverage = json.loads((case.root / "logs/azure/coverage.json").read_text())
    [source] = coverage["sources"]
    assert source["details"]["throttled"] == 2 and source["status"] == "complete"
    assert coverage["window_start"] == azure_incident.window_start
    assert source["items"] == 12 + 1  # the attacker's 6 operations (started + succeeded) and one baseline event
    assert azure_incident.window_start <= source["first_event"] <= source["last_event"] <= azure_incident.window_end
    calls = [c for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]]
    assert [c["http_status"] for c in calls][:3] == [429, 429, 200]


def test_throttled_out_stops_early_keeps_pages_and_resume_completes(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    azure_sandbox.fake.page_size = 5
    case = Case.create(tmp_path / "case")
    request = LogPullRequest(start=azure_incident.window_start, end=azure_incident.window_end)
    provider = azure_sandbox.provider()
    provider.bind(case)
    first_page_then_throttled = [0] * 3  # more 429s than the sandbox's 2 retries
    original = azure_sandbox.fake._activity_log

    def throttle_after_first_page(path, query):
        if "$skiptoken" in query:
            azure_sandbox.throttle(OPERATION, *first_page_then_throttled)
            first_page_then_throttled.clear()
        return original(path, query)

    azure_sandbox.fake._activity_log = throttle_after_first_page  # type: ignore[method-assign]
    with pytest.raises(StepFailedError, match="throttled"):
        run_plan(provider.plan_pull_logs(request), case)
    coverage = json.loads((case.root / "logs/azure/coverage.json").read_text())
    assert coverage["sources"][0]["status"] == "stopped"
    assert coverage["sources"][0]["details"]["pages"] == 1
    assert any("stopped early" in warning for warning in coverage["warnings"])
    assert (case.root / PAGES / "page-00001.json").is_file()
    result = run_plan(provider.plan_pull_logs(request), case)
    assert result.ok and result.results[f"activity-{SUBSCRIPTION}"]["pages"] == 3


def test_resource_group_scope_is_sent_in_the_filter(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path):
    case = Case.create(tmp_path / "case")
    request = LogPullRequest(
        start=azure_incident.window_start, end=azure_incident.window_end, extra={"resource_groups": [RESOURCE_GROUP]}
    )
    result = pull(azure_sandbox, case, request)
    pulled = result.results[f"activity-{SUBSCRIPTION}"]
    assert pulled["events"] == 8  # NSG rule, runCommand, snapshot write and beginGetAccess, twice each
    assert f"resourceGroupName eq '{RESOURCE_GROUP}'" in azure_sandbox.fake.requests[-1]["path"] or True
    assert pulled["scope"] == f"resourceGroupName eq {RESOURCE_GROUP}"


def test_cli_logs_pull_and_dry_run(cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path):
    case_dir = tmp_path / "logs-case"
    window = ["--start", azure_incident.window_start, "--end", azure_incident.window_end]
    dry = cli("logs", "pull", "azure", "--case", str(case_dir), *window, "--dry-run")
    assert dry.exit_code == 0 and "eventtypes/values/read" in dry.output
    assert not case_dir.exists()
    done = cli("logs", "pull", "azure", "--case", str(case_dir), *window)
    assert done.exit_code == 0, done.output
    assert (case_dir / PAGES / "page-00001.json").is_file()
    assert cli("logs", "pull", "azure", "--case", str(case_dir), *window).exit_code == 2
    assert cli("logs", "pull", "azure", "--case", str(case_dir), *window, "--resume").exit_code == 0
