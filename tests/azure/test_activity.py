"""Activity Log: nextLink paging, 429 + Retry-After, raw pages stored as served and in custody, coverage."""

import json
import time

import duckdb
import pytest

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.errors import StepFailedError
from cloudir.plan import run_plan
from cloudir.provider import LogPullRequest
from cloudir.timeline.ingest import build_case_timeline
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
    assert [p.name for p in pages] == [f"page-{n:05d}.json" for n in range(1, 4)]  # 27 events, 10 a page
    bodies = [json.loads(p.read_bytes()) for p in pages]
    assert all(set(body) == {"value", "nextLink"} for body in bodies)
    assert all(body["nextLink"] for body in bodies[:-1])
    assert bodies[-1]["nextLink"] is None
    stored = sorted(e["eventDataId"] for body in bodies for e in body["value"])
    assert stored == served_events(azure_sandbox, start, end)
    assert ATTACKER in {e["caller"] for body in bodies for e in body["value"]}
    assert result.results[f"activity-{SUBSCRIPTION}"]["events"] == len(stored) == 27
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
    assert source["details"]["throttled"] == 2
    assert source["status"] == "complete"
    assert coverage["window_start"] == azure_incident.window_start
    assert source["items"] == 12 + 2 + 1  # the attacker's 6 operations (started + succeeded), the implant's 2 calls
    # with the VM's managed identity and one baseline event
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
    first_page_then_throttled = [0] * 3  # more 429s than the sandbox's 2 retries, from page 3 on
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
    assert coverage["sources"][0]["details"]["pages"] == 2  # page 3 was throttled out
    assert any("stopped early" in warning for warning in coverage["warnings"])
    kept = {p.name: p.read_bytes() for p in (case.root / PAGES).glob("page-*.json")}
    assert sorted(kept) == ["page-00001.json", "page-00002.json"]
    requests = len(azure_sandbox.fake.requests)
    result = run_plan(provider.plan_pull_logs(request), case)
    assert result.ok
    assert result.results[f"activity-{SUBSCRIPTION}"]["pages"] == 3
    assert result.results[f"activity-{SUBSCRIPTION}"]["events"] == 15
    assert len(azure_sandbox.fake.requests) - requests == 1  # continued from page 2's nextLink
    assert "$skiptoken=10" in azure_sandbox.fake.requests[-1]["query"]
    assert all((case.root / PAGES / name).read_bytes() == body for name, body in kept.items())  # not overwritten
    assert verify_case(case.root).ok


def test_a_second_window_never_overwrites_the_first(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    pull(azure_sandbox, case, LogPullRequest(start=azure_incident.window_start, end=azure_incident.window_end))
    first = {p.name: p.read_bytes() for p in (case.root / PAGES).glob("page-*.json")}
    second = pull(azure_sandbox, case, LogPullRequest(start="2026-01-01T00:00:00Z", end=azure_incident.window_start))
    assert second.results[f"activity-{SUBSCRIPTION}"]["files"][0] == f"{PAGES}/page-00003.json"
    assert all((case.root / PAGES / name).read_bytes() == body for name, body in first.items())
    assert verify_case(case.root).ok


def test_resource_group_scope_is_sent_in_the_filter(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    request = LogPullRequest(
        start=azure_incident.window_start, end=azure_incident.window_end, extra={"resource_groups": [RESOURCE_GROUP]}
    )
    result = pull(azure_sandbox, case, request)
    pulled = result.results[f"activity-{SUBSCRIPTION}"]
    assert pulled["events"] == 11  # NSG rule, runCommand, snapshot write, beginGetAccess (x2 each), one deployment,
    # the implant's 2 calls on the VM and its group's storage account
    assert pulled["scope"] == f"resourceGroupName eq {RESOURCE_GROUP}"


def test_cli_logs_pull_and_dry_run(cli: Cli, azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path):
    case_dir = tmp_path / "logs-case"
    window = ["--start", azure_incident.window_start, "--end", azure_incident.window_end]
    dry = cli("logs", "pull", "azure", "--case", str(case_dir), *window, "--dry-run")
    assert dry.exit_code == 0
    assert "eventtypes/values/read" in dry.output
    assert not case_dir.exists()
    done = cli("logs", "pull", "azure", "--case", str(case_dir), *window)
    assert done.exit_code == 0, done.output
    assert (case_dir / PAGES / "page-00001.json").is_file()
    assert "complete" in done.output
    assert SUBSCRIPTION in done.output
    assert cli("logs", "pull", "azure", "--case", str(case_dir), *window).exit_code == 2
    assert cli("logs", "pull", "azure", "--case", str(case_dir), *window, "--resume").exit_code == 0


def test_pulled_pages_ingest_into_the_timeline(azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path):
    case = Case.create(tmp_path / "case")
    pull(azure_sandbox, case, LogPullRequest(start=azure_incident.window_start, end=azure_incident.window_end))
    stats = build_case_timeline(case)
    assert (stats.ingested, stats.quarantined) == (15, 0)
    with duckdb.connect(str(case.root / "timeline.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT operation, operation_original, source_ip FROM events WHERE actor = ? AND status = 'success' "
            "ORDER BY time",
            [ATTACKER],
        ).fetchall()
    # one case for Azure operation names, the spelling as logged kept beside it
    write = ("microsoft.authorization/roleassignments/write", "Microsoft.Authorization/roleAssignments/write")
    assert (*write, "203.0.113.66") in rows
    assert len(rows) == 12
