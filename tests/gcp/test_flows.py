"""`cloudir logs pull gcp --flows`: VPC Flow Logs from Cloud Logging into the case, through the CLI and the sandbox."""

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
from moto_fixtures.gcp import ATTACKER_IP, INSTANCE, INTERNAL_IP, NETWORK, PROJECT, SERVICE_ACCOUNT, ZONE, GcpSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp import GcpProvider
from providers.gcp.flows import FLOWS_COVERAGE

runner = CliRunner()
WINDOW = ["--start", "2026-11-20T08:00:00Z", "--end", "2026-11-21T00:00:00Z"]
PLANTED_FLOWS = 73  # the implant's 72 check-ins and one package download


def _pull(gcp_sandbox: GcpSandbox, case: Path, *args: str) -> tuple[int, str]:
    assert gcp_sandbox.server is not None
    endpoint = ["--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"]
    command = ["logs", "pull", "gcp", "--project", PROJECT, *WINDOW, "--case", str(case), "--flows", *args, *endpoint]
    result = runner.invoke(app, command)
    return result.exit_code, result.output


def _pages(case: Path) -> list[Path]:
    return sorted(case.glob("logs/gcp/flows/**/page-*.json"))


def _flows(case: Path) -> list[tuple[str, str, int]]:
    with duckdb.connect(str(case / "timeline.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT instance, dst_addr, dst_port FROM flows ORDER BY time").fetchall()
    return [(str(i), str(a), int(p)) for i, a, p in rows]


def test_flows_of_an_instance_are_pulled_kept_raw_and_normalized(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "IR-flows"
    code, out = _pull(gcp_sandbox, case, "--instance", INSTANCE)
    assert code == 0, out
    pages = _pages(case)
    assert pages, "raw entries:list bodies are kept"
    entries = [e for page in pages for e in json.loads(page.read_text())["entries"]]
    assert len(entries) == PLANTED_FLOWS
    assert all(e["logName"].endswith("compute.googleapis.com%2Fvpc_flows") for e in entries)
    coverage = json.loads(next(case.glob("logs/gcp/flows/**/coverage.json")).read_text())
    source = coverage["sources"][0]
    assert (source["source"], source["status"], source["items"]) == ("gcp:vpc-flow-logs", "complete", PLANTED_FLOWS)
    subnets = coverage["locations"]  # which subnets had flow logging on (subnetworks.aggregatedList)
    assert subnets[f"{PROJECT}/us-central1/default"]["flow_logs"] is True
    assert subnets[f"{PROJECT}/us-central1/default"]["aggregation_interval"] == "INTERVAL_5_SEC"
    assert subnets[f"{PROJECT}/europe-west1/default"]["flow_logs"] is False
    assert [w for w in coverage["warnings"] if "VPC Flow Logs are off" in w] == [
        f"{PROJECT}/europe-west1/default: VPC Flow Logs are off on this subnet (nothing of its traffic was recorded)"
    ]
    calls = [c for r in read_records(case / "custody.jsonl") for c in r["api_calls"]]
    assert "subnetworks.aggregatedList" in [c["operation"] for c in calls]
    assert [c["operation"] for c in calls].count("entries.list") == len(pages), "every page's call is in custody"
    query = json.loads(next(case.glob("logs/gcp/flows/**/request.json")).read_text())
    assert "compute.googleapis.com%2Fvpc_flows" in query["filter"]
    assert f'jsonPayload.src_instance.vm_name="{INSTANCE}"' in query["filter"]

    assert runner.invoke(app, ["timeline", "build", str(case)]).exit_code == 0
    flows = _flows(case)
    assert len(flows) == PLANTED_FLOWS
    assert flows.count((INSTANCE, ATTACKER_IP, 443)) == 72
    assert verify_case(case).ok


def test_a_beacon_names_the_api_calls_of_the_instance_service_account_shared_by_two_instances(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    """The implant's instance shares its service account with another: the calls are the account's, not proof."""
    twin = {  # a second member of the web tier, attached to the same service account
        "kind": "compute#instance",
        "id": "4242424242424242424",
        "name": "web-frontend-9q4m",
        "zone": f"projects/{PROJECT}/zones/{ZONE}",
        "status": "RUNNING",
        "networkInterfaces": [{"name": "nic0", "network": NETWORK, "networkIP": "10.128.0.18", "accessConfigs": []}],
        "serviceAccounts": [{"email": SERVICE_ACCOUNT, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
    }
    gcp_sandbox.fake.project(PROJECT).instances[ZONE][twin["name"]] = twin
    case = tmp_path / "IR-sa"
    assert gcp_sandbox.server is not None
    endpoint = ["--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"]
    audit = runner.invoke(app, ["logs", "pull", "gcp", "--project", PROJECT, *WINDOW, "--case", str(case), *endpoint])
    assert audit.exit_code == 0, audit.output
    code, out = _pull(gcp_sandbox, case)
    assert code == 0, out
    inventory = json.loads(next(case.glob("logs/gcp/flows/*/instances.json")).read_text())
    assert {i["name"] for i in inventory["instances"]} >= {INSTANCE, twin["name"]}  # kept raw, REST field names
    assert runner.invoke(app, ["timeline", "build", str(case)]).exit_code == 0
    db = case / "timeline.duckdb"
    analyzed = runner.invoke(app, ["analyze", str(db)])
    assert analyzed.exit_code == 0, analyzed.output
    with duckdb.connect(str(db), read_only=True) as con:
        owner = con.execute(
            "SELECT group_name, template, identities, addresses FROM instances WHERE instance = ?", [INSTANCE]
        ).fetchone()
        beacon = con.execute(
            "SELECT f.identity, f.profile ->> 'explanation', i.analyzers FROM findings f JOIN incidents i "
            "USING (incident_id) "
            "WHERE f.rule = 'flow-beacon' AND f.title LIKE ?",
            [f"%{INSTANCE} -> {ATTACKER_IP}:443"],
        ).fetchone()
    assert owner is not None
    assert owner[0].endswith("/instanceGroupManagers/web-frontend-mig")  # the MIG, from created-by
    assert owner[1].endswith("/instanceTemplates/web-frontend-v3")
    assert owner[2] == [SERVICE_ACCOUNT]
    assert INTERNAL_IP in owner[3]
    assert beacon is not None
    assert beacon[0] == SERVICE_ACCOUNT
    words = beacon[1]
    assert (
        f"API activity made by the instance's service account ({SERVICE_ACCOUNT}, shared by 2 instances: not proof "
        "that this one made the calls)"
    ) in words, words
    assert "storage.objects.get" in words
    assert "of them from this instance's known addresses" in words
    assert "sensitive_actions" in beacon[2], beacon[2]  # the account's IAM changes are in the beacon's incident


def test_an_instance_id_is_resolved_to_its_name_with_a_recorded_call(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, tmp_path: Path
) -> None:
    target = provider.find_target(incident.target)
    assert target.id.isdigit()
    with Case.create(tmp_path / "IR-id") as case:
        provider.bind(case)
        plan = provider.plan_pull_logs(
            LogPullRequest("2026-11-20T08:00:00Z", "2026-11-21T00:00:00Z", resources=[target.id], extra={"flows": True})
        )
        assert any("resolved to instance names" in note for note in plan.notes)
        assert [c.operation for c in plan.steps[0].calls] == [
            "instances.aggregatedList",  # ids to names, then the inventory
            "entries.list",
            "subnetworks.aggregatedList",
        ]
        result = run_plan(plan, case)
    assert result.ok
    assert result.results[f"logs:flows:{PROJECT}"]["instances"] == [INSTANCE]
    entries = [e for page in _pages(case.root) for e in json.loads(page.read_text())["entries"]]
    assert len(entries) == PLANTED_FLOWS


def test_a_hostile_instance_name_is_a_value_in_the_filter_not_an_expression(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "IR-hostile"
    hostile = f'{INSTANCE}" OR logName:"vpc_flows'
    code, out = _pull(gcp_sandbox, case, "--instance", hostile)
    assert code == 0, out
    entries = [e for page in _pages(case) for e in json.loads(page.read_text()).get("entries", [])]
    assert entries == [], "the quote is escaped: no instance has that name, so nothing matches"


def test_flows_refuse_audit_log_scopes_and_instance_needs_flows(gcp_sandbox: GcpSandbox, tmp_path: Path) -> None:
    code, out = _pull(gcp_sandbox, tmp_path / "c1", "--principal", "a@b.example")
    assert code == 2
    assert "--flows takes --instance only" in out
    assert gcp_sandbox.server is not None
    result = runner.invoke(
        app, ["logs", "pull", "gcp", "--project", PROJECT, *WINDOW, "--case", str(tmp_path / "c2"), "--instance", "x"]
    )
    assert result.exit_code == 2
    assert "--instance scopes a --flows pull" in result.output
    assert not (tmp_path / "c1").exists()
    assert not (tmp_path / "c2").exists()


def test_flow_pull_dry_run_needs_no_credentials(tmp_path: Path) -> None:
    command = ["logs", "pull", "gcp", "--project", PROJECT, *WINDOW, "--case", str(tmp_path / "c"), "--flows"]
    result = runner.invoke(app, [*command, "--instance", INSTANCE, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "entries.list" in result.output
    assert "vpc_flows" in result.output
    assert not (tmp_path / "c").exists()


def test_throttled_flow_pull_stops_early_and_resumes(
    gcp_sandbox: GcpSandbox, provider: GcpProvider, incident: PlantedIncident, tmp_path: Path
) -> None:
    request = LogPullRequest(
        "2026-11-20T08:00:00Z", "2026-11-21T00:00:00Z", resources=[INSTANCE], extra={"flows": True}
    )
    gcp_sandbox.throttle("pull_logs", 4, after=1)  # page 1 passes, then the first try and all 3 retries fail
    with Case.create(tmp_path / "IR-throttle") as case:
        provider.bind(case)
        with pytest.raises(StepFailedError, match="stopped early"):
            run_plan(provider.plan_pull_logs(request), case)
        coverage = json.loads(next(case.root.glob("logs/gcp/flows/**/coverage.json")).read_text())
        assert coverage["sources"][0]["status"] == "stopped"
        assert run_plan(provider.plan_pull_logs(request), case).ok
        entries = [e for page in _pages(case.root) for e in json.loads(page.read_text())["entries"]]
        assert len(entries) == PLANTED_FLOWS
        assert not (case.root / FLOWS_COVERAGE).exists(), "a scoped pull reports in its own scope folder"
