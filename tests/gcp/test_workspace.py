"""Google Workspace reports (Admin SDK Reports API): paged, throttle-safe, by principal, kept raw, in the timeline."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

import cloudir.cli.gcp  # noqa: F401 - registers the gcp commands
from cloudir.case import Case
from cloudir.cli.apps import app
from cloudir.custody import read_records, verify_case
from cloudir.errors import StepFailedError
from cloudir.plan import run_plan
from cloudir.provider import LogPullRequest
from moto_fixtures.gcp import ATTACKER_IP, PROJECT, WINDOW_END, WINDOW_START, WORKSPACE_PHISHED, GcpSandbox
from moto_fixtures.sandbox import PlantedIncident

runner = CliRunner()
WINDOW = ["--start", WINDOW_START, "--end", WINDOW_END]


def _run(gcp_sandbox: GcpSandbox, *args: str) -> tuple[int, str]:
    assert gcp_sandbox.server is not None
    result = runner.invoke(
        app, [*args, "--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"], env={"COLUMNS": "250"}
    )
    return result.exit_code, result.output


def _pages(case: Path, application: str, user: str = "all") -> list[dict]:
    folder = case / "logs/gcp/workspace" / application / user
    return [json.loads(p.read_bytes()) for p in sorted(folder.glob("page-*.json"))]


def test_reports_are_paged_stored_raw_and_reach_the_timeline(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    gcp_sandbox.fake.reports_page_size = 2
    case = tmp_path / "case"
    code, out = _run(gcp_sandbox, "logs", "pull", "gcp", "--case", str(case), "--project", PROJECT, *WINDOW,
                     "--workspace")  # fmt: skip
    assert code == 0, out
    logins = _pages(case, "login")
    assert len(logins) == 3  # 5 sign-ins, 2 a page
    assert all(page["kind"] == "admin#reports#activities" for page in logins)
    assert sum(len(page.get("items", [])) for page in logins) == 5
    assert [item["events"][0]["name"] for item in _pages(case, "admin")[0]["items"]] == ["ASSIGN_ROLE"]
    calls = [c for r in read_records(case / "custody.jsonl") for c in r["api_calls"] if c["service"] == "admin"]
    assert [c["operation"] for c in calls] == ["activities.list"] * 5  # 3 login pages, admin, token
    coverage = json.loads((case / "logs/gcp/workspace/coverage.json").read_text())
    assert {s["source"]: s["items"] for s in coverage["sources"]} == {
        "workspace:admin": 1,
        "workspace:login": 5,
        "workspace:token": 1,
    }
    assert {r["source"] for r in coverage["retention"]} == {"workspace:admin", "workspace:login", "workspace:token"}
    built = runner.invoke(app, ["timeline", "build", str(case)])
    assert built.exit_code == 0, built.output
    rows = duckdb.connect(str(case / "timeline.duckdb"), read_only=True).execute(
        "SELECT service, operation, actor, source_ip, status, resources FROM events "
        "WHERE service LIKE 'workspace:%' ORDER BY time"
    )
    events = rows.fetchall()
    assert len(events) == 7
    assert events[5][:5] == ("workspace:admin", "ASSIGN_ROLE", WORKSPACE_PHISHED, ATTACKER_IP, "success")
    assert "backdoor.ops@victim.example" in events[5][5]
    assert [e[4] for e in events if e[1] == "login_failure"] == ["failure"] * 3
    assert verify_case(case).ok


def test_principal_becomes_the_user_key_path_segment(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    code, out = _run(gcp_sandbox, "logs", "pull", "gcp", "--case", str(case), "--project", PROJECT, *WINDOW,
                     "--workspace", "--principal", WORKSPACE_PHISHED)  # fmt: skip
    assert code == 0, out
    items = [item for page in _pages(case, "login", WORKSPACE_PHISHED) for item in page.get("items", [])]
    assert {item["actor"]["email"] for item in items} == {WORKSPACE_PHISHED}
    paths = [r["path"] for r in gcp_sandbox.fake.requests if r["operation"] == "activities.list"]
    assert f"/admin/reports/v1/activity/users/{WORKSPACE_PHISHED}/applications/login" in paths


@pytest.mark.parametrize("hostile", ["all/applications/admin?x=", "../../v2/entries:list", "a b@victim.example"])
def test_a_principal_never_changes_the_path(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, hostile: str
) -> None:
    case = tmp_path / "case"
    code, out = _run(gcp_sandbox, "logs", "pull", "gcp", "--case", str(case), "--project", PROJECT, *WINDOW,
                     "--workspace", "--principal", hostile)  # fmt: skip
    assert code == 0, out
    reports = [r for r in gcp_sandbox.fake.requests if r["operation"] == "activities.list"]
    assert len(reports) == 3  # one per application, each for the whole (escaped) user key
    assert all(r["status"] == 200 for r in reports)
    # unescaped, the first key would read every user's admin activity ("users/all/applications/admin")
    assert not any(
        item for app in ("login", "admin", "token") for page in _pages_any(case, app) for item in page.get("items", [])
    )


def _pages_any(case: Path, application: str) -> list[dict]:
    return [
        json.loads(p.read_bytes()) for p in sorted((case / "logs/gcp/workspace" / application).glob("*/page-*.json"))
    ]


def test_throttling_is_retried_then_resume_continues_after_the_stored_pages(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    gcp_sandbox.fake.reports_page_size = 2
    request = LogPullRequest(start=WINDOW_START, end=WINDOW_END, extra={"workspace": True})
    case = Case.create(tmp_path / "case")
    provider = gcp_sandbox.provider()
    provider.bind(case)
    gcp_sandbox.fake.inject("activities.list", "RESOURCE_EXHAUSTED", times=1, after=1)  # retried: no harm
    gcp_sandbox.fake.inject("activities.list", "RESOURCE_EXHAUSTED", times=20, after=1)  # then throttled out
    with pytest.raises(StepFailedError, match="throttled"):
        run_plan(provider.plan_pull_logs(request), case)
    assert len(_pages(case.root, "admin")) == 1
    assert len(_pages(case.root, "login")) == 1  # page 1 of 3 kept
    gcp_sandbox.fake.clear_injections("activities.list")
    run_plan(provider.plan_pull_logs(request), case)
    items = [item["id"]["uniqueQualifier"] for page in _pages(case.root, "login") for item in page.get("items", [])]
    assert len(items) == len(set(items)) == 5  # every sign-in once: the resumed pull went on from page 1's token
    assert verify_case(case.root).ok


def test_the_fake_refuses_what_the_reports_api_refuses(gcp_sandbox: GcpSandbox) -> None:
    fake = gcp_sandbox.fake
    gcp_sandbox.refusals_expected = True
    base = "/admin/reports/v1/activity/users/all/applications"
    assert fake.handle("GET", f"{base}/bogus", {}, "t")[0] == 400
    assert fake.handle("GET", f"{base}/login?maxResults=1001", {}, "t")[0] == 400
    assert fake.handle("GET", f"{base}/login?startTime=2026-11-20T08:00:00", {}, "t")[0] == 400  # no zone
    assert (
        fake.handle("GET", f"{base}/login?startTime=2026-11-21T00:00:00Z&endTime=2026-11-20T00:00:00Z", {}, "t")[0]
        == 400
    )
    assert fake.handle("GET", f"{base}/login?pageToken=zz", {}, "t")[0] == 400
    assert fake.handle("GET", f"{base}/login?limit=5", {}, "t")[0] == 400
    status, body = fake.handle("GET", f"{base}/login?startTime=2026-11-20T00:00:00Z", {}, "t")
    assert status == 200
    assert body["kind"] == "admin#reports#activities"


def test_dry_run_names_the_calls_and_the_scope_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "K_SERVICE", "FUNCTION_TARGET", "GAE_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    result = runner.invoke(
        app,
        ["logs", "pull", "gcp", "--case", str(tmp_path / "c"), "--project", PROJECT, *WINDOW, "--workspace",
         "--workspace-admin", "admin@victim.example", "--dry-run"],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "admin:activities.list" in result.output
    assert "applications/token" in result.output
    assert "admin.reports.audit.readonly" in result.output
