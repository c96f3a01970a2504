"""Entra ID logs through Microsoft Graph: paged, throttle-safe, filtered by window and principal, kept raw."""

import json
from pathlib import Path

import duckdb
import pytest

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.errors import StepFailedError
from cloudir.plan import run_plan
from cloudir.provider import LogPullRequest
from moto_fixtures.azure import ATTACKER, ATTACKER_IP, SUBSCRIPTION, TENANT, AzureSandbox, sandbox_token
from moto_fixtures.graph_server import FakeGraph
from moto_fixtures.sandbox import PlantedIncident
from providers.azure.entra import LOGS, graph_filter, odata_literal
from tests.azure.conftest import Cli

SIGNINS = f"logs/azure/entra/{TENANT}/signins"
AUDITS = f"logs/azure/entra/{TENANT}/audits"
WIDE = ("2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z")


def pull(sandbox: AzureSandbox, case: Case, request: LogPullRequest, **kwargs: bool):
    provider = sandbox.provider()
    provider.bind(case)
    return run_plan(provider.plan_pull_logs(request), case, **kwargs)


def entra(start: str, end: str, *principals: str) -> LogPullRequest:
    return LogPullRequest(start=start, end=end, principals=list(principals), extra={"entra": True})


def stored(case: Case, folder: str) -> list[dict]:
    return [json.loads(p.read_bytes()) for p in sorted((case.root / folder).glob("page-*.json"))]


def test_sign_ins_and_audits_are_paged_and_stored_as_served(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    result = pull(azure_sandbox, case, entra(*WIDE))
    pages = stored(case, SIGNINS)
    assert len(pages) == 3  # 22 sign-ins, 10 a page
    assert all(page["@odata.nextLink"] for page in pages[:-1])
    assert "@odata.nextLink" not in pages[-1]
    served = sorted(r["id"] for r in azure_sandbox.graph.records["signIns"])
    assert sorted(r["id"] for page in pages for r in page["value"]) == served
    assert [r["activityDisplayName"] for page in stored(case, AUDITS) for r in page["value"]] == [
        "Add service principal credentials",
        "Add member to role",
    ]  # newest first, as Graph serves them
    assert result.results["entra-signins"]["events"] == len(served)
    calls = [c for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]]
    graph = [c for c in calls if c["service"] == "Microsoft.Graph"]
    assert [c["operation"] for c in graph] == ["auditLogs/signIns/read"] * 3 + ["auditLogs/directoryAudits/read"]
    assert all(c["request_id"] and c["client_request_id"] for c in graph)
    coverage = json.loads((case.root / "logs/azure/coverage.json").read_text())
    by_source = {s["source"]: s for s in coverage["sources"]}
    assert by_source["entra:signins"]["status"] == "complete"
    assert by_source["entra:directory-audits"]["items"] == 2
    assert {r["source"] for r in coverage["retention"]} >= {"entra:signins", "entra:directory-audits"}
    assert verify_case(case.root).ok


def test_principal_filter_is_sent_to_graph_and_only_their_records_come_back(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    pull(azure_sandbox, case, entra(azure_incident.window_start, azure_incident.window_end, ATTACKER))
    sign_ins = [r for page in stored(case, SIGNINS) for r in page["value"]]
    assert {r["userPrincipalName"] for r in sign_ins} == {ATTACKER}
    assert [r["status"]["errorCode"] for r in sorted(sign_ins, key=lambda r: r["createdDateTime"])] == [50126] * 4 + [
        0
    ]  # the password guesses, then the sign-in from the attacker's address
    assert {r["ipAddress"] for r in sign_ins} == {ATTACKER_IP}
    queries = [r["query"] for r in azure_sandbox.graph.requests]
    assert any("userPrincipalName%20eq%20%27jdoe%40contoso.example%27" in q for q in queries)


@pytest.mark.parametrize(
    "hostile",
    [
        "x' or createdDateTime ge 2000-01-01T00:00:00Z or userPrincipalName eq 'x",  # unescaped: every sign-in
        "o'brien@contoso.example",
        "a) or (1 eq 1",
    ],
)
def test_a_principal_is_a_quoted_literal_never_filter_syntax(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path, hostile: str
):
    case = Case.create(tmp_path / "case")
    pull(azure_sandbox, case, entra(*WIDE, hostile))
    assert [r for page in stored(case, SIGNINS) for r in page["value"]] == []  # no such user: nothing matches
    assert graph_filter(LOGS[0], *WIDE, [hostile]).endswith(f"userPrincipalName eq {odata_literal(hostile)}")


def test_throttling_waits_out_retry_after_and_is_counted(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    azure_sandbox.graph.throttle("signIns", 0, 0)
    result = pull(azure_sandbox, case, entra(*WIDE))
    assert result.ok
    assert result.results["entra-signins"]["throttled"] == 2
    statuses = [
        c["http_status"]
        for r in read_records(case.root / "custody.jsonl")
        for c in r["api_calls"]
        if c["operation"] == "auditLogs/signIns/read"
    ]
    assert statuses[:3] == [429, 429, 200]


def test_throttled_out_keeps_pages_and_resume_continues_from_the_next_link(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    case = Case.create(tmp_path / "case")
    served = len(azure_sandbox.graph.records["signIns"])
    original = azure_sandbox.graph.handle
    answered: list[int] = []

    def second_page_throttled(method: str, target: str, headers: dict[str, str], body: bytes = b""):
        answered.append(1)
        if "skiptoken" in target and len(answered) < 10:
            azure_sandbox.graph.throttle("signIns", 0)
        return original(method, target, headers, body)

    azure_sandbox.graph.handle = second_page_throttled  # type: ignore[method-assign]
    with pytest.raises(StepFailedError, match="throttled"):
        pull(azure_sandbox, case, entra(*WIDE))
    assert len(stored(case, SIGNINS)) == 1
    azure_sandbox.graph.handle = original  # type: ignore[method-assign]
    before = len(azure_sandbox.graph.requests)
    pull(azure_sandbox, case, entra(*WIDE))
    assert "skiptoken" in azure_sandbox.graph.requests[before]["query"]  # went on from page 1's nextLink
    ids = [r["id"] for page in stored(case, SIGNINS) for r in page["value"]]
    assert len(ids) == len(set(ids)) == served  # every sign-in once: the resumed pull did not start over
    assert verify_case(case.root).ok


def test_a_next_link_to_another_host_is_refused_and_never_sent_the_token(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, tmp_path
):
    elsewhere = FakeGraph()  # another host (port) on this machine, serving the same certificate
    ca_file = Path(azure_sandbox.fake.ca_file)
    elsewhere.start(ca_file, ca_file.with_name("fake-key.pem"))
    try:
        azure_sandbox.graph.next_link_base = elsewhere.base_url
        case = Case.create(tmp_path / "case")
        with pytest.raises(StepFailedError, match="not followed"):
            pull(azure_sandbox, case, entra(*WIDE))
    finally:
        elsewhere.stop()
    assert elsewhere.requests == []
    assert len(stored(case, SIGNINS)) == 1


def test_the_fake_refuses_what_graph_refuses(azure_sandbox: AzureSandbox) -> None:
    graph = azure_sandbox.graph
    token = {"authorization": f"Bearer {sandbox_token()}"}
    base = "/v1.0/auditLogs/signIns"
    assert graph.handle("GET", base, {})[0] == 401
    assert graph.handle("GET", base, {"authorization": "Bearer x"})[0] == 403  # no AuditLog.Read.All in its roles
    assert graph.handle("GET", f"{base}?$top=1001", token)[0] == 400
    assert graph.handle("GET", f"{base}?$filter=createdDateTime%20ge%20%272026-01-01T00:00:00Z%27", token)[0] == 400
    assert graph.handle("GET", f"{base}?$filter=riskState%20eq%20%27none%27", token)[0] == 400
    assert graph.handle("GET", f"{base}?$count=true", token)[0] == 400
    assert graph.handle("GET", f"{base}?$skiptoken=bogus", token)[0] == 400
    assert graph.handle("GET", "/v1.0/auditLogs/provisioning", token)[0] == 400
    status, _, body = graph.handle("GET", f"{base}?$filter=userPrincipalName%20eq%20%27a%27%20or", token)
    assert status == 400
    assert json.loads(body)["error"]["innerError"]["request-id"]


def test_cli_pull_with_entra_builds_a_timeline_with_the_sign_ins(
    azure_sandbox: AzureSandbox, azure_incident: PlantedIncident, cli: Cli, tmp_path
):
    case = tmp_path / "case"
    window = ["--start", azure_incident.window_start, "--end", azure_incident.window_end]
    result = cli(
        "logs",
        "pull",
        "azure",
        "--case",
        str(case),
        *window,
        "--entra",
        "--graph-endpoint",
        azure_sandbox.graph.base_url,
    )
    assert result.exit_code == 0, result.output
    assert "entra:signins" in result.output
    assert "entra:directory-audits" in result.output
    built = cli("timeline", "build", str(case), connect=False)
    assert built.exit_code == 0, built.output
    rows = duckdb.connect(str(case / "timeline.duckdb"), read_only=True).execute(
        "SELECT operation, actor, source_ip FROM events WHERE service = 'Microsoft.aadiam' OR operation LIKE 'Add %'"
    )
    found = rows.fetchall()
    assert ("Add member to role", ATTACKER, ATTACKER_IP) in found
    assert any(actor == ATTACKER and ip == ATTACKER_IP for _, actor, ip in found)


def test_cli_dry_run_lists_the_graph_calls_with_the_filter(cli: Cli, tmp_path) -> None:
    result = cli(
        "logs", "pull", "azure", "--case", str(tmp_path / "c"), "--around", "2026-11-20T10:00:00Z",
        "--subscription", SUBSCRIPTION, "--entra", "--principal", "jdoe@contoso.example", "--dry-run", connect=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Microsoft.Graph:auditLogs/signIns/read" in result.output
    assert "userPrincipalName eq 'jdoe@contoso.example'" in result.output
    assert "AuditLog.Read.All" in result.output


def test_cli_principal_without_entra_is_refused(cli: Cli, tmp_path) -> None:
    result = cli("logs", "pull", "azure", "--case", str(tmp_path / "c"), "--around", "2026-11-20T10:00:00Z",
                 "--subscription", SUBSCRIPTION, "--principal", "a@b.example", "--dry-run", connect=False)  # fmt: skip
    assert result.exit_code == 2
    assert "--entra" in result.output


def test_a_principal_given_as_an_object_id_filters_on_the_id_properties():
    object_id = "7e1f3a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
    signins, audits = (graph_filter(log, *WIDE, [object_id, ATTACKER]) for log in LOGS)
    assert f"(userId eq '{object_id}' or userPrincipalName eq '{ATTACKER}')" in signins
    assert f"initiatedBy/user/id eq '{object_id}'" in audits
