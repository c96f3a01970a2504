"""A compromised service account: captured (account, keys, project roles), then its keys and itself disabled."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cloudir.cli.gcp  # noqa: F401 - registers the gcp commands
from cloudir.cli.apps import app
from cloudir.custody import read_records, verify_case
from moto_fixtures.gcp import ADMIN, ATTACKER_KEY_ID, PROJECT, SERVICE_ACCOUNT, WINDOW_START, GcpSandbox
from moto_fixtures.sandbox import PlantedIncident

runner = CliRunner()


def _run(gcp_sandbox: GcpSandbox, *args: str) -> tuple[int, str]:
    assert gcp_sandbox.server is not None
    result = runner.invoke(
        app, [*args, "--api-endpoint", gcp_sandbox.server.endpoint, "--anonymous"], env={"COLUMNS": "250"}
    )
    return result.exit_code, result.output


def _keys(gcp_sandbox: GcpSandbox) -> dict[str, bool]:
    keys = gcp_sandbox.fake.service_accounts[SERVICE_ACCOUNT]["keys"]
    return {k["name"].rsplit("/", 1)[-1]: bool(k.get("disabled")) for k in keys}


def test_service_account_is_captured_then_its_keys_and_itself_disabled(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path
) -> None:
    case = tmp_path / "sa"
    target = ["--target", SERVICE_ACCOUNT, "--project", PROJECT]
    code, out = _run(gcp_sandbox, "contain", "gcp", *target, "--dry-run")
    assert code == 0, out
    for operation in ("serviceAccounts.keys.list", "serviceAccounts.keys.disable", "serviceAccounts.disable"):
        assert operation in out
    code, out = _run(gcp_sandbox, "contain", "gcp", *target, "--case", str(case))
    assert code == 2  # no case with its captured state yet
    assert not any(_keys(gcp_sandbox).values())

    code, out = _run(gcp_sandbox, "acquire", "gcp", *target, "--case", str(case))
    assert code == 0, out
    folder = case / "artifacts/gcp/service-accounts" / SERVICE_ACCOUNT
    assert json.loads((folder / "account.json").read_bytes())["email"] == SERVICE_ACCOUNT
    assert len(json.loads((folder / "keys.json").read_bytes())["keys"]) == 2
    policy = json.loads((folder / "project-iam-policy.json").read_bytes())
    assert any(f"serviceAccount:{SERVICE_ACCOUNT}" in b["members"] for b in policy["bindings"])

    code, out = _run(gcp_sandbox, "contain", "gcp", *target, "--case", str(case))
    assert code == 0, out
    keys = _keys(gcp_sandbox)
    assert keys[ATTACKER_KEY_ID] is True
    assert [k for k, disabled in keys.items() if not disabled] != []  # the Google-managed key cannot be disabled
    assert gcp_sandbox.fake.service_accounts[SERVICE_ACCOUNT]["account"]["disabled"] is True
    results = [r["details"]["result"] for r in read_records(case / "custody.jsonl") if r["action"] == "contain.contain"]
    undo = [u for r in results for u in r["undo"]]
    assert f"gcloud iam service-accounts keys enable {ATTACKER_KEY_ID} --iam-account={SERVICE_ACCOUNT}" in undo
    assert f"gcloud iam service-accounts enable {SERVICE_ACCOUNT}" in undo
    operations = {c["operation"] for r in read_records(case / "custody.jsonl") for c in r["api_calls"]}
    assert {"projects.getIamPolicy", "serviceAccounts.keys.disable", "serviceAccounts.disable"} <= operations
    assert verify_case(case).ok


@pytest.mark.parametrize("value", ["user:alice@example.com", "alice@example.com", "../../etc/passwd", "x;rm -rf"])
def test_what_is_not_a_service_account_is_refused_in_one_line(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, value: str
) -> None:
    code, out = _run(gcp_sandbox, "acquire", "gcp", "--target", value, "--project", PROJECT, "--dry-run")
    assert code == 2
    assert "Traceback" not in out


def test_playbook_captures_pulls_identity_logs_and_disables_the_service_account(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gcp_sandbox.server is not None
    config = {"api_endpoint": gcp_sandbox.server.endpoint, "anonymous": True, "log_backoff": 0.01}
    config["project"] = PROJECT  # the project the tool runs in: a finding's --account never chooses it
    monkeypatch.setenv("CLOUDIR_PROVIDER_CONFIG", json.dumps({"gcp": config}))
    case = tmp_path / "pb"
    since = datetime.now(UTC) - datetime.fromisoformat(WINDOW_START.replace("Z", "+00:00"))
    args = ["respond", "--cloud", "gcp", "--principal", SERVICE_ACCOUNT, "--account", PROJECT, "--case", str(case),
            "--param", f"log_window_before_hours={since.total_seconds() // 3600 + 1}"]  # fmt: skip
    first = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert first.exit_code == 0, first.output
    assert "principal-compromise" in first.output
    assert (case / "artifacts/gcp/service-accounts" / SERVICE_ACCOUNT / "keys.json").is_file()
    assert gcp_sandbox.fake.service_accounts[SERVICE_ACCOUNT]["account"].get("disabled") is not True  # approval
    assert list(case.glob("logs/gcp/workspace/login/*/page-*.json"))  # the identity logs of the principal
    approved = runner.invoke(app, [*args, "--approve-containment"], env={"COLUMNS": "250"})
    assert approved.exit_code == 0, approved.output
    assert gcp_sandbox.fake.service_accounts[SERVICE_ACCOUNT]["account"]["disabled"] is True
    assert _keys(gcp_sandbox)[ATTACKER_KEY_ID] is True
    owners = [b for b in gcp_sandbox.fake.iam_policies[PROJECT]["bindings"] if b["role"] == "roles/owner"]
    assert owners[0]["members"] == [f"user:{ADMIN}"]  # the backdoor it granted since the log window's start: gone
    assert (case / "artifacts/gcp/service-accounts" / SERVICE_ACCOUNT / "containment/project-iam-policy-before-01.json"
            ).is_file()  # fmt: skip
    assert verify_case(case).ok


def test_playbook_plan_for_a_service_account_names_every_call_offline() -> None:
    args = ["playbook", "plan", "--cloud", "gcp", "--principal", SERVICE_ACCOUNT, "--account", PROJECT]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for operation in (
        "serviceAccounts.keys.list",
        "projects.getIamPolicy",
        "serviceAccounts.keys.disable",
        "serviceAccounts.disable",
        "SetIamPolicy",  # the audit-log query for the bindings added since the log window's start
        "projects.setIamPolicy",
    ):
        assert operation in result.output, operation


def _outcomes(case: Path, prefix: str) -> list[tuple[str, int | None]]:
    calls = [c for r in read_records(case / "custody.jsonl") for c in r["api_calls"]]
    return [(c["outcome"], c["http_status"]) for c in calls if str(c["operation"]).startswith(prefix)]


def test_iam_rate_quota_refusals_are_resent_with_backoff_and_kept_in_custody(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, slept: list[float]
) -> None:
    """IAM answers 429 RESOURCE_EXHAUSTED over its per-minute read quota: the tool waits and sends the call again."""
    gcp_sandbox.fake.api_rate_quotas["iam"]["Read requests"] = 1  # one IAM read a minute
    case = tmp_path / "sa"
    code, out = _run(
        gcp_sandbox, "acquire", "gcp", "--target", SERVICE_ACCOUNT, "--project", PROJECT, "--case", str(case)
    )
    assert code == 0, out
    outcomes = _outcomes(case, "serviceAccounts.")
    assert ("RESOURCE_EXHAUSTED", 429) in outcomes  # each refusal is in custody ...
    assert outcomes[-1] == ("ok", 200)  # ... and the call was answered once the minute passed
    assert 0 < max(slept) <= 60  # waited for the quota's minute, never longer
    assert (
        len(json.loads((case / "artifacts/gcp/service-accounts" / SERVICE_ACCOUNT / "keys.json").read_bytes())["keys"])
        == 2
    )


def test_an_iam_quota_that_never_refills_names_iam_in_the_error(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, slept: list[float]
) -> None:
    case = tmp_path / "sa"
    target = ["--target", SERVICE_ACCOUNT, "--project", PROJECT, "--case", str(case)]
    assert _run(gcp_sandbox, "acquire", "gcp", *target)[0] == 0
    gcp_sandbox.fake.api_rate_quotas["iam"]["Write requests"] = 0  # every IAM change refused
    code, out = _run(gcp_sandbox, "contain", "gcp", *target)
    assert code != 0
    assert "IAM's rate quota still refused the call after 8 tries" in " ".join(out.split()), out
    assert "Compute" not in out
    assert [o for o, _ in _outcomes(case, "serviceAccounts.keys.disable")] == ["RESOURCE_EXHAUSTED"] * 8
    assert not any(_keys(gcp_sandbox).values())  # nothing was disabled


def test_a_resource_manager_quota_that_never_refills_names_resource_manager(
    gcp_sandbox: GcpSandbox, incident: PlantedIncident, tmp_path: Path, slept: list[float]
) -> None:
    gcp_sandbox.fake.api_rate_quotas["cloudresourcemanager"]["Read requests"] = 0  # the project's policy unreadable
    case = tmp_path / "sa"
    code, out = _run(
        gcp_sandbox, "acquire", "gcp", "--target", SERVICE_ACCOUNT, "--project", PROJECT, "--case", str(case)
    )
    assert code != 0
    assert "Resource Manager's rate quota still refused the call after 8 tries" in " ".join(out.split()), out
    assert [o for o, _ in _outcomes(case, "projects.getIamPolicy")] == ["RESOURCE_EXHAUSTED"] * 8
    assert slept == [1, 2, 4, 8, 16, 32, 60]
