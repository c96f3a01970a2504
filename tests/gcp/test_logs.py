"""Cloud Audit Log collection: paging, raw pages as evidence, throttling, early stop and resume."""

from __future__ import annotations

import inspect
import json
import math
from types import SimpleNamespace

import pytest

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.errors import CloudirError, StepFailedError
from cloudir.plan import StepKind, run_plan
from cloudir.provider import LogPullRequest
from moto_fixtures.gcp import ATTACKER, PROJECT, WINDOW_END, WINDOW_START, GcpSandbox
from moto_fixtures.gcp_server import LogFilter
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider
from providers.gcp import logs as gcp_logs
from providers.gcp.logs import COVERAGE_FILE, audit_filter, coverage_file, scope_id

FOLDER = f"logs/gcp/audit/{PROJECT}"


def _request(**extra: object) -> LogPullRequest:
    return LogPullRequest(start=WINDOW_START, end=WINDOW_END, extra=dict(extra))


def _expected(gcp_sandbox: GcpSandbox, request: LogPullRequest) -> list[dict[str, object]]:
    predicate = LogFilter(audit_filter(PROJECT, request)).compile()
    return sorted((e for e in gcp_sandbox.fake.log_entries if predicate(e)), key=lambda e: str(e["timestamp"]))


def _pages(case: Case, folder: str = FOLDER) -> list[dict[str, object]]:
    return [json.loads(path.read_bytes()) for path in sorted((case.root / folder).glob("page-*.json"))]


def test_pages_are_stored_raw_and_in_custody(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case
) -> None:
    request = _request()
    plan = provider.plan_pull_logs(request)
    assert [(s.id, s.kind) for s in plan.steps] == [(f"logs:audit:{PROJECT}", StepKind.READ)]
    assert run_plan(plan, case).ok
    expected = _expected(gcp_sandbox, request)
    assert len(expected) > gcp_sandbox.log_page_size  # the window needs several pages
    paths = sorted((case.root / FOLDER).glob("page-*.json"))
    assert len(paths) == math.ceil(len(expected) / gcp_sandbox.log_page_size)
    size = gcp_sandbox.log_page_size
    first_raw = json.dumps({"entries": expected[:size], "nextPageToken": str(size)}).encode()
    assert paths[0].read_bytes() == first_raw  # the exact HTTP response body
    assert [e for page in _pages(case) for e in page["entries"]] == expected
    stored = {a["path"]: a for r in read_records(case.root / "custody.jsonl") for a in r["artifacts"]}
    assert all(f"{FOLDER}/{p.name}" in stored for p in paths)
    assert verify_case(case.root).ok
    coverage = json.loads((case.root / COVERAGE_FILE).read_text())
    source = coverage["sources"][0]
    assert (source["status"], source["items"], source["details"]["pages"]) == ("complete", len(expected), len(paths))
    assert coverage["window_start"] == WINDOW_START
    assert not coverage["warnings"]
    methods = {e["protoPayload"]["methodName"] for e in expected}
    assert set(incident.extra["attacker_methods"]) <= methods


def test_filter_on_principal_and_resource(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case
) -> None:
    run_plan(provider.plan_pull_logs(_request()), case)
    whole = _pages(case)
    request = LogPullRequest(start=WINDOW_START, end=WINDOW_END, principals=[ATTACKER])
    run_plan(provider.plan_pull_logs(request), case)
    assert _pages(case) == whole  # the scoped pull did not overwrite the whole-project pages
    entries = [e for page in _pages(case, f"{FOLDER}/{scope_id(request)}") for e in page["entries"]]
    assert entries == _expected(gcp_sandbox, request)
    assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in entries} == {ATTACKER}
    assert {e["protoPayload"]["methodName"] for e in entries} >= set(incident.extra["attacker_methods"])
    narrowed = _expected(gcp_sandbox, LogPullRequest(WINDOW_START, WINDOW_END, resources=["sinks/org-audit-export"]))
    assert [e["protoPayload"]["methodName"] for e in narrowed] == ["google.logging.v2.ConfigServiceV2.DeleteSink"]


def test_throttling_is_retried_and_reported(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case
) -> None:
    gcp_sandbox.throttle("pull_logs", 2)
    assert run_plan(provider.plan_pull_logs(_request()), case).ok
    statuses = [r["status"] for r in gcp_sandbox.fake.requests if r["operation"] == "entries.list"]
    assert statuses[:3] == [429, 429, 200]
    source = json.loads((case.root / COVERAGE_FILE).read_text())["sources"][0]
    assert (source["status"], source["details"]["throttled_responses"]) == ("complete", 2)
    outcomes = [c["outcome"] for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]]
    assert outcomes.count("RESOURCE_EXHAUSTED") == 2


def test_early_stop_is_reported_and_resume_continues(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case
) -> None:
    request = _request()
    expected = _expected(gcp_sandbox, request)
    gcp_sandbox.throttle("pull_logs", 4, after=1)  # page 1 passes, then 4 attempts (1 + 3 retries) fail
    with pytest.raises(StepFailedError, match="stopped early"):
        run_plan(provider.plan_pull_logs(request), case)
    coverage = json.loads((case.root / COVERAGE_FILE).read_text())
    source = coverage["sources"][0]
    assert source["status"] == "stopped"
    assert "RESOURCE_EXHAUSTED" in source["stopped_reason"]
    assert source["details"]["pages"] == 1
    assert source["items"] == gcp_sandbox.log_page_size
    assert any("stopped early" in w for w in coverage["warnings"])

    resumed = run_plan(provider.plan_pull_logs(request), case)
    assert resumed.ok
    assert [e for page in _pages(case) for e in page["entries"]] == expected
    source = json.loads((case.root / COVERAGE_FILE).read_text())["sources"][0]
    assert (source["status"], source["items"]) == ("complete", len(expected))
    assert verify_case(case.root).ok


def test_bad_window_and_log_kind_are_refused(provider: GcpProvider) -> None:
    with pytest.raises(CloudirError, match="not an ISO 8601 time"):
        provider.plan_pull_logs(LogPullRequest(start="yesterday", end=WINDOW_END))
    with pytest.raises(CloudirError, match="unknown audit log kind"):
        provider.plan_pull_logs(_request(log_kinds=["firewall"]))


def test_unreachable_logging_endpoint_stops_early_and_says_so(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, case: Case
) -> None:
    provider = gcp_sandbox.gcp_provider(api_endpoint="http://127.0.0.1:9")
    provider.bind(case)
    with pytest.raises(StepFailedError, match="cannot reach the Google Cloud endpoint") as caught:
        run_plan(provider.plan_pull_logs(_request()), case)
    assert "\n" not in str(caught.value)
    source = json.loads((case.root / COVERAGE_FILE).read_text())["sources"][0]
    assert source["status"] == "stopped"
    assert source["stopped_reason"] == "entries.list failed: ConnectionError"


def test_a_different_window_never_overwrites_pages(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case
) -> None:
    run_plan(provider.plan_pull_logs(_request()), case)
    pages = {p.name: p.read_bytes() for p in (case.root / FOLDER).glob("page-*.json")}
    later = LogPullRequest(start="2026-11-20T09:00:00Z", end=WINDOW_END)
    with pytest.raises(StepFailedError, match="different window or scope"):
        run_plan(provider.plan_pull_logs(later), case)
    assert {p.name: p.read_bytes() for p in (case.root / FOLDER).glob("page-*.json")} == pages
    scoped = LogPullRequest(start=WINDOW_START, end=WINDOW_END, resources=["sinks/"])
    assert run_plan(provider.plan_pull_logs(scoped), case).ok
    assert (case.root / coverage_file(scope_id(scoped))).is_file()
    assert json.loads((case.root / COVERAGE_FILE).read_text())["sources"][0]["items"] == sum(
        len(page["entries"])
        for page in _pages(case)  # type: ignore[arg-type]
    )


def test_timeline_reads_every_page_and_skips_the_bookkeeping(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, case: Case
) -> None:
    from cloudir.timeline.ingest import build_case_timeline

    run_plan(provider.plan_pull_logs(_request()), case)
    run_plan(provider.plan_pull_logs(LogPullRequest(WINDOW_START, WINDOW_END, principals=[ATTACKER])), case)
    stats = build_case_timeline(case)
    assert stats.quarantined == 0
    assert stats.per_format == {"gcp_audit": len(_expected(gcp_sandbox, _request()))}


ORGANIZATION = "123456789012"


def test_an_organization_scope_pulls_its_own_audit_logs(gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path):
    from typer.testing import CliRunner

    from cloudir.cli import app

    org_log = f"organizations/{ORGANIZATION}/logs/cloudaudit.googleapis.com%2Factivity"
    entry = json.loads(json.dumps(gcp_sandbox.fake.log_entries[0]))
    entry |= {"logName": org_log, "insertId": "org-iam-change", "timestamp": "2026-11-20T09:30:00.000000Z"}
    entry["protoPayload"] |= {"methodName": "SetIamPolicy", "resourceName": f"organizations/{ORGANIZATION}"}
    gcp_sandbox.fake.log_entries.append(entry)
    assert gcp_sandbox.server is not None
    connect = ["--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"]
    window = ["--start", WINDOW_START, "--end", WINDOW_END]
    case = tmp_path / "org"
    args = ["logs", "pull", "gcp", "--case", str(case), "--project", PROJECT, "--organization", ORGANIZATION]
    result = CliRunner().invoke(app, [*args, *window, *connect], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    org_pages = sorted((case / f"logs/gcp/audit/organizations_{ORGANIZATION}").glob("page-*.json"))
    assert [e["insertId"] for p in org_pages for e in json.loads(p.read_bytes())["entries"]] == ["org-iam-change"]
    project_ids = {
        e["insertId"] for p in (case / FOLDER).glob("page-*.json") for e in json.loads(p.read_bytes())["entries"]
    }
    assert project_ids
    assert "org-iam-change" not in project_ids  # a project's pull never holds the organization's entries
    bad = CliRunner().invoke(app, [*args[:-1], "1 OR logName:x", *window, *connect, "--dry-run"])
    assert bad.exit_code == 2
    assert "not a numeric id" in bad.output


def test_the_read_quota_makes_a_long_pull_wait_not_fail(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud Logging allows 60 entries.list a minute per project: 70 pages in a row must wait for the quota.

    The adapter runs with its default backoff and retries; its sleeps advance a clock that the fake's quota
    counts by, so the minute passes at once.
    """
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(gcp_logs, "time", SimpleNamespace(sleep=sleep))
    fake = gcp_sandbox.fake
    fake.clock = lambda: now[0]
    template = _expected(gcp_sandbox, _request())[0]
    fake.log_entries.extend(
        {**template, "insertId": f"quota-{n:03d}", "timestamp": f"2026-11-20T11:{n // 60:02d}:{n % 60:02d}Z"}
        for n in range(70)
    )
    defaults = inspect.signature(GcpProvider).parameters
    provider = gcp_sandbox.gcp_provider(
        log_page_size=1,
        log_backoff=defaults["log_backoff"].default,
        log_max_retries=defaults["log_max_retries"].default,
    )
    provider.bind(case)
    assert run_plan(provider.plan_pull_logs(_request()), case).ok
    source = json.loads((case.root / COVERAGE_FILE).read_text())["sources"][0]
    assert source["status"] == "complete"
    assert source["details"]["pages"] == len(_expected(gcp_sandbox, _request())) >= 70
    refused = [r for r in fake.requests if r["operation"] == "entries.list" and r["status"] == 429]
    assert len(refused) == source["details"]["throttled_responses"] == len(slept)
    assert sum(slept) >= fake.log_read_window  # it waited the minute out instead of failing
