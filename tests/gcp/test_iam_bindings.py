"""The project IAM bindings an attacker added for or by a service account: found in the audit log, removed with
getIamPolicy -> setIamPolicy (version 3, etag), the whole policy saved first, through the CLI and the provider."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from typer.testing import CliRunner

import cloudir.cli.gcp  # noqa: F401 - registers the gcp commands
from cloudir.case import Case
from cloudir.cli.apps import app
from cloudir.custody import read_records, verify_case
from cloudir.plan import run_plan
from cloudir.provider import AcquireOptions, ContainOptions, TargetKind, TargetQuery
from moto_fixtures.gcp import (
    ADMIN,
    BACKDOOR_CONDITION,
    BACKDOOR_MEMBER,
    PROJECT,
    SERVICE_ACCOUNT,
    WINDOW_START,
    GcpSandbox,
)
from moto_fixtures.sandbox import PlantedIncident
from providers.gcp.session import RESOURCE_MANAGER_ENDPOINT

runner = CliRunner()
FOLDER = f"artifacts/gcp/service-accounts/{SERVICE_ACCOUNT}/containment"
SA = f"serviceAccount:{SERVICE_ACCOUNT}"


def _run(gcp_sandbox: GcpSandbox, *args: str) -> tuple[int, str]:
    assert gcp_sandbox.server is not None
    result = runner.invoke(
        app, [*args, "--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"], env={"COLUMNS": "300"}
    )
    return result.exit_code, result.output


def _roles(gcp_sandbox: GcpSandbox) -> dict[str, dict[str, Any]]:
    return {b["role"]: b for b in gcp_sandbox.fake.iam_policies[PROJECT]["bindings"]}


def test_bindings_added_by_or_for_the_account_are_removed_and_the_rest_kept(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "sa"
    planted = copy.deepcopy(gcp_sandbox.fake.iam_policies[PROJECT])
    target = ["--target", SERVICE_ACCOUNT, "--project", PROJECT, "--case", str(case)]
    since = ["--remove-bindings-since", WINDOW_START]
    assert _run(gcp_sandbox, "acquire", "gcp", *target)[0] == 0
    code, out = _run(gcp_sandbox, "contain", "gcp", *target, *since, "--dry-run")
    assert code == 0, out
    for operation in ("entries.list", "projects.getIamPolicy", "projects.setIamPolicy"):
        assert operation in out
    assert 'protoPayload.methodName="SetIamPolicy"' in out
    assert gcp_sandbox.fake.iam_policies[PROJECT] == planted  # a dry run

    code, out = _run(gcp_sandbox, "contain", "gcp", *target, *since)
    assert code == 0, out
    roles = _roles(gcp_sandbox)
    assert roles["roles/owner"]["members"] == [f"user:{ADMIN}"]  # the backdoor user added by the account: gone
    assert "roles/secretmanager.secretAccessor" not in roles  # the conditional grant made for the account: gone
    assert roles["roles/editor"]["members"] == [SA, f"user:{ADMIN}"]  # held before the window: kept
    assert roles["roles/storage.objectViewer"]["condition"]["title"] == "business-hours"  # kept with its condition
    assert gcp_sandbox.fake.iam_policies[PROJECT]["version"] == 3
    assert json.loads((case / FOLDER / "project-iam-policy-before-01.json").read_bytes()) == planted
    changes = json.loads((case / FOLDER / "iam-changes-00001.json").read_bytes())
    assert [e["protoPayload"]["methodName"] for e in changes["entries"]] == ["SetIamPolicy"]
    results = [r["details"]["result"] for r in read_records(case / "custody.jsonl") if r["action"] == "contain.contain"]
    undo = [u for result in results for u in result["undo"]]
    assert (f"gcloud projects add-iam-policy-binding {PROJECT} --member={BACKDOOR_MEMBER} --role=roles/owner "
            "--condition=None") in undo  # fmt: skip
    assert any("--role=roles/secretmanager.secretAccessor" in u and "title=until-2027" in u for u in undo)
    assert gcp_sandbox.fake.service_accounts[SERVICE_ACCOUNT]["account"]["disabled"] is True
    assert verify_case(case).ok


def _contained(gcp_sandbox: GcpSandbox, tmp_path: Path, options: ContainOptions):
    provider = gcp_sandbox.gcp_provider()
    case = Case.create(tmp_path / "case")
    provider.bind(case)
    target = provider.find_target(TargetQuery(TargetKind.PRINCIPAL, SERVICE_ACCOUNT))
    run_plan(provider.plan_acquire(target, AcquireOptions()), case)
    return case, run_plan(provider.plan_contain(target, options), case, raise_on_failure=False)


def test_a_concurrent_policy_change_is_refused_by_etag_then_kept_on_the_retry(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    fake = gcp_sandbox.fake
    original = fake.project_iam_policy
    reads: list[int] = []

    def read_then_someone_writes(project: str, **kwargs: Any) -> dict[str, Any]:
        policy = original(project, **kwargs)
        reads.append(1)
        if len(reads) == 2:  # after cloudir's first containment read (the first is the acquisition)
            fake.iam_policies[project]["bindings"].append({"role": "roles/viewer", "members": ["user:new@x.example"]})
            fake.iam_policies[project]["etag"] = "BwNEWNEWNEW="
        return policy

    fake.project_iam_policy = read_then_someone_writes  # type: ignore[method-assign]
    options = ContainOptions(extra={"iam_bindings": [f"roles/owner={BACKDOOR_MEMBER}"]})
    case, result = _contained(gcp_sandbox, tmp_path, options)
    assert result.ok, result.failed
    roles = _roles(gcp_sandbox)
    assert roles["roles/viewer"]["members"] == ["user:new@x.example"]  # the concurrent change survives
    assert roles["roles/owner"]["members"] == [f"user:{ADMIN}"]
    assert roles["roles/secretmanager.secretAccessor"]["condition"] == BACKDOOR_CONDITION  # not named: kept
    statuses = [c["http_status"] for r in read_records(case.root / "custody.jsonl") for c in r["api_calls"]
                if c["operation"] == "projects.setIamPolicy"]  # fmt: skip
    assert statuses == [409, 200]
    saved = result.results["contain.remove-iam-bindings"]["saved"]
    assert [Path(p).name for p in saved] == ["project-iam-policy-before-01.json", "project-iam-policy-before-02.json"]


def test_resource_manager_refuses_policy_writes_over_its_documented_600_a_minute(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident
) -> None:
    fake = gcp_sandbox.fake
    minute = [0.0]
    fake.clock = lambda: minute[0]
    path = f"/v1/projects/{PROJECT}:setIamPolicy"

    def write() -> tuple[int, dict[str, Any]]:
        return fake.handle("POST", path, {"policy": fake.iam_policies[PROJECT]}, "test")

    assert {write()[0] for _ in range(600)} == {200}
    status, body = write()
    assert (status, body["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert "Write requests" in body["error"]["message"]
    minute[0] = 60.0  # the next minute's quota
    assert write()[0] == 200


def test_a_policy_write_over_resource_managers_write_quota_is_resent_when_the_minute_passes(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, slept: list[float]
) -> None:
    """Resource Manager refuses writes over its per-minute write quota (429 RESOURCE_EXHAUSTED): the tool's
    setIamPolicy waits and is sent again, each refusal in custody, and the binding is removed."""
    case = tmp_path / "sa"
    target = ["--target", SERVICE_ACCOUNT, "--project", PROJECT, "--case", str(case)]
    assert _run(gcp_sandbox, "acquire", "gcp", *target)[0] == 0
    gcp_sandbox.fake.api_rate_quotas["cloudresourcemanager"]["Write requests"] = 1
    api = gcp_sandbox.gcp_provider().api
    current = gcp_sandbox.fake.iam_policies[PROJECT]  # another writer in the project uses this minute's one write
    api.rest("POST", f"projects/{PROJECT}:setIamPolicy", {"policy": current}, endpoint=RESOURCE_MANAGER_ENDPOINT)
    code, out = _run(gcp_sandbox, "contain", "gcp", *target, "--remove-bindings-since", WINDOW_START)
    assert code == 0, out
    assert _roles(gcp_sandbox)["roles/owner"]["members"] == [f"user:{ADMIN}"]
    statuses = [c["http_status"] for r in read_records(case / "custody.jsonl") for c in r["api_calls"]
                if c["operation"] == "projects.setIamPolicy"]  # fmt: skip
    assert statuses[0] == 429, statuses  # refused over the quota, in custody ...
    assert statuses[-1] == 200, statuses  # ... and sent again once the minute passed
    assert max(slept) <= 60
    assert sum(slept) >= 60


@pytest.mark.parametrize("named", ["roles/owner", "owner=user:x@example.com", "roles/owner=nobody"])
def test_a_binding_that_is_not_role_equals_member_is_refused(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, named: str
) -> None:
    code, out = _run(gcp_sandbox, "contain", "gcp", "--target", SERVICE_ACCOUNT, "--project", PROJECT,
                     "--remove-binding", named, "--dry-run")  # fmt: skip
    assert code == 2, out
    assert "ROLE=MEMBER" in out
    assert "Traceback" not in out


def test_the_fake_holds_set_iam_policy_to_version_3_and_renames_conditions_for_older_reads(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident
) -> None:
    api = gcp_sandbox.gcp_provider().api
    old = json.loads(api.rest("POST", f"projects/{PROJECT}:getIamPolicy", {}, endpoint=RESOURCE_MANAGER_ENDPOINT))
    assert old["version"] == 1
    assert any("_withcond_" in b["role"] for b in old["bindings"])
    with pytest.raises(gexc.BadRequest, match="not supported"):  # writing back what a version-1 read saw
        api.rest("POST", f"projects/{PROJECT}:setIamPolicy", {"policy": old}, endpoint=RESOURCE_MANAGER_ENDPOINT)
    current = gcp_sandbox.fake.iam_policies[PROJECT]
    with pytest.raises(gexc.BadRequest, match="version 3"):
        api.rest("POST", f"projects/{PROJECT}:setIamPolicy", {"policy": {**current, "version": 1}},
                 endpoint=RESOURCE_MANAGER_ENDPOINT)  # fmt: skip
    with pytest.raises(gexc.Conflict, match="concurrent"):
        api.rest("POST", f"projects/{PROJECT}:setIamPolicy", {"policy": {**current, "etag": "BwOLDAAAAAA="}},
                 endpoint=RESOURCE_MANAGER_ENDPOINT)  # fmt: skip
