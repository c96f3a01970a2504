"""The generated permissions cannot escalate: no write on a bare "*", no way to grant the responder more."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.errors import CloudirError
from cloudir.serverless.aws_policy import QUARANTINE_PROFILE, TAG_CASE, is_read
from cloudir.serverless.azure_policy import is_read as azure_is_read
from cloudir.serverless.gcp_policy import is_read as gcp_is_read
from providers.azure.calls import required_permissions as azure_permissions
from providers.azure.provider import AzureProvider
from providers.gcp.permissions import all_permissions as gcp_permissions

runner = CliRunner()
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = DEPLOY.parent / "docs"
# Permissions that would let the responder give itself (or anyone) more access, per cloud.
ESCALATION = {
    "aws": {"iam:AttachRolePolicy", "iam:AttachUserPolicy", "iam:CreatePolicyVersion", "iam:UpdateAssumeRolePolicy"},
    "azure": {"Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleDefinitions/write"},
    "gcp": {
        "resourcemanager.projects.setIamPolicy",
        "iam.serviceAccounts.actAs",
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccountKeys.create",
        "iam.roles.update",
    },
}


def _policy(cloud: str) -> dict[str, Any]:
    result = runner.invoke(app, ["iam-policy", cloud])
    assert result.exit_code == 0, result.output
    policy: dict[str, Any] = json.loads(result.output)
    return policy


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_aws_policy_scopes_every_write_and_passes_parliament() -> None:
    policy = _policy("aws")
    allowed = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    for statement in allowed:
        writes = [action for action in statement["Action"] if not is_read(action)]
        if writes:
            assert "*" not in _as_list(statement["Resource"]), statement["Sid"]
    granted = {action for s in allowed for action in s["Action"]}
    assert not granted & ESCALATION["aws"]
    [pass_role] = [s for s in allowed if "iam:PassRole" in s["Action"]]
    assert pass_role["Resource"] == "arn:aws:iam::*:role/cloudir/quarantine/*"
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    [share] = [s for s in allowed if "ec2:ModifySnapshotAttribute" in s["Action"]]
    assert share["Condition"]["Null"] == {"aws:ResourceTag/cloudir:case-id": "false"}
    assert all("kms:ViaService" in s["Condition"]["StringLike"] for s in allowed if s["Sid"].startswith("Kms"))
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert {"iam:PutRolePolicy", "iam:AttachRolePolicy"} <= set(deny["Action"])
    assert "arn:aws:iam::*:role/cloudir-*" in deny["Resource"]  # the responder role and the roles it assumes
    with warnings.catch_warnings():  # parliament imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string
    findings = analyze_policy_string(json.dumps(policy)).findings
    assert [f.issue for f in findings] == ["RESOURCE_STAR"]
    assert all(is_read(action) for action in findings[0].detail)  # only reads are on "*"


def test_the_policy_names_what_the_aws_provider_creates() -> None:
    from providers.aws.common import TAG_CASE as PROVIDER_TAG
    from providers.aws.contain import QUARANTINE_PROFILE as PROVIDER_PROFILE

    assert (TAG_CASE, QUARANTINE_PROFILE) == (PROVIDER_TAG, PROVIDER_PROFILE)


def test_sam_template_carries_the_generated_statements() -> None:
    template = yaml.safe_load((DEPLOY / "aws" / "template.yaml").read_text())
    document = template["Resources"]["ResponderPolicy"]["Properties"]["PolicyDocument"]
    assert document["Statement"] == _policy("aws")["Statement"], "stale: run python deploy/aws/render_policy.py"


def _arm_body_matches_schema(model: Any, body: dict[str, Any]) -> None:
    """``body`` is exactly an ARM request body of ``model`` (generated from Azure/azure-rest-api-specs)."""
    parsed = model.deserialize(body)
    assert parsed.serialize() == body  # an unknown, misspelt or mistyped property does not survive the round trip
    required = [name for name, rule in model._validation.items() if rule.get("required")]
    assert all(getattr(parsed, name) is not None for name in required)


def _azure_writes_by_scope(document: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(write action, assignment scope, assignment condition) for every write the role assignments grant."""
    actions = {
        f"{d['scope']}/providers/Microsoft.Authorization/roleDefinitions/{d['name']}": d["body"]["properties"][
            "permissions"
        ][0]["actions"]
        for d in document["roleDefinitions"]
    }
    return [
        (action, a["scope"], a["body"]["properties"].get("condition"))
        for a in document["roleAssignments"]
        for action in actions[a["body"]["properties"]["roleDefinitionId"]]
        if not azure_is_read(action)
    ]


def test_azure_roles_write_only_in_resource_groups_and_match_the_arm_schema() -> None:
    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters, RoleDefinition

    document = _policy("azure")
    for definition in document["roleDefinitions"]:
        _arm_body_matches_schema(RoleDefinition, definition["body"])
        properties = definition["body"]["properties"]
        assert "/" not in properties["assignableScopes"]  # never every subscription of the tenant
        assert definition["scope"] == properties["assignableScopes"][0]
        granted = properties["permissions"][0]["actions"]
        removal = "Microsoft.Authorization/roleAssignments/delete"  # conditioned (next test), its own role
        assert not [a for a in granted if "*" in a or (a.endswith("/delete") and a != removal)]
        assert not set(granted) & ESCALATION["azure"]
    for assignment in document["roleAssignments"]:
        _arm_body_matches_schema(RoleAssignmentCreateParameters, assignment["body"])
    writes = _azure_writes_by_scope(document)
    assert {action for action, _, _ in writes} == {a for a in azure_permissions() if not azure_is_read(a)}
    unscoped = [(a, c) for a, scope, c in writes if "/resourceGroups/" not in scope]
    assert [a for a, condition in unscoped if condition is None] == []  # no unconditioned subscription-wide write
    assert [a for a, _ in unscoped] == [removal]


def test_azure_role_assignment_removal_is_conditioned_and_assignment_writes_are_refused() -> None:
    from cloudir.serverless.azure_policy import RESPONDER, document

    declared = [*azure_permissions()]
    removal = document([*declared, "Microsoft.Authorization/roleAssignments/delete"])
    [(_, scope, condition)] = [w for w in _azure_writes_by_scope(removal) if "roleAssignments" in w[0]]
    assert "/resourceGroups/" not in scope  # the attacker's assignment may be anywhere in the subscription...
    assert condition is not None
    assert f"PrincipalId] GuidNotEquals {RESPONDER}" in condition  # ...but never the responder's own
    for escalation in sorted(ESCALATION["azure"]):
        with pytest.raises(CloudirError, match="no scoped grant"):
            document([*declared, escalation])


def test_azure_evidence_group_is_the_providers_default() -> None:
    from cloudir.serverless.azure_policy import EVIDENCE_GROUP

    assert inspect.signature(AzureProvider).parameters["soc_resource_group"].default == EVIDENCE_GROUP


def _matches_discovery(value: Any, schema: dict[str, Any], schemas: dict[str, Any], where: str) -> None:
    """``value`` conforms to a schema of a Google discovery document: known properties, right types and enums."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema["type"]
    python_type = {"object": dict, "array": list, "string": str, "boolean": bool}[kind]
    assert isinstance(value, python_type), where
    if kind == "object":
        unknown = set(value) - set(schema["properties"])
        assert not unknown, f"{where}: {unknown}"
        for name, item in value.items():
            _matches_discovery(item, schema["properties"][name], schemas, f"{where}.{name}")
    elif kind == "array":
        for index, item in enumerate(value):
            _matches_discovery(item, schema["items"], schemas, f"{where}[{index}]")
    elif "enum" in schema:
        assert value in schema["enum"], where


def test_gcp_writes_are_all_conditioned_and_match_the_iam_discovery_doc() -> None:
    import googleapiclient

    discovery = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "iam.v1.json"
    schemas = json.loads(discovery.read_text())["schemas"]
    document = _policy("gcp")
    permissions = {}
    for entry in document["roles"]:
        _matches_discovery(entry["request"], {"$ref": "CreateRoleRequest"}, schemas, "CreateRoleRequest")
        assert "name" not in entry["request"]["role"]  # must not be set in CreateRole
        permissions[f"{entry['parent']}/roles/{entry['request']['roleId']}"] = entry["request"]["role"][
            "includedPermissions"
        ]
    for entry in document["bindings"]:
        binding = entry["binding"]
        _matches_discovery(binding, {"$ref": "Binding"}, schemas, "Binding")
        granted = permissions[binding["role"]]
        assert not [p for p in granted if "*" in p or p.endswith((".setIamPolicy", ".delete"))]
        assert not set(granted) & ESCALATION["gcp"]
        if not all(gcp_is_read(p) for p in granted):
            assert binding["condition"]["expression"].startswith(("resource.type", "(resource.type")), binding
    declared = gcp_permissions()
    apart = [entry["permission"] for entry in document["breakGlass"]]
    assert apart == ["resourcemanager.projects.setIamPolicy"]  # declared, escalating: never in a role
    assert sorted(p for ps in permissions.values() for p in ps) == sorted(set(declared) - set(apart))


def test_gcp_conditions_name_what_the_gcp_provider_creates() -> None:
    from cloudir.serverless.gcp_policy import EVIDENCE_PREFIX, FIREWALL_PREFIX
    from providers.gcp.provider import evidence_prefix, resource_name

    assert evidence_prefix("cir-20261201-0badf00d", "prod-1").startswith(EVIDENCE_PREFIX)
    assert resource_name("cloudir-1234567890123-n0", "deny", "INGRESS").startswith(FIREWALL_PREFIX)


def _documented_unscoped_writes() -> dict[str, set[str]]:
    """The per-cloud list under "Writes without resource-level scope" in docs/permissions.md."""
    text = (DOCS / "permissions.md").read_text()
    section = text.split("## Writes without resource-level scope", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for line in section.splitlines():
        if line.startswith("* **"):
            cloud, _, rest = line[4:].partition("**: ")
            listed[cloud.lower()] = set() if rest.startswith("none") else {a.strip("` ") for a in rest.split(",")}
    return listed


def test_the_only_writes_on_a_whole_account_are_the_documented_ones() -> None:
    aws = {
        action
        for s in _policy("aws")["Statement"]
        if s["Effect"] == "Allow" and "*" in _as_list(s["Resource"])
        for action in s["Action"]
        if not is_read(action)
    }
    azure = {
        a
        for a, scope, condition in _azure_writes_by_scope(_policy("azure"))
        if "/resourceGroups/" not in scope and condition is None  # as the section defines them
    }
    gcp_document = _policy("gcp")
    roles = {f"{r['parent']}/roles/{r['request']['roleId']}": r["request"]["role"] for r in gcp_document["roles"]}
    gcp = {
        p
        for b in gcp_document["bindings"]
        if "condition" not in b["binding"]
        for p in roles[b["binding"]["role"]]["includedPermissions"]
        if not gcp_is_read(p)
    }
    assert _documented_unscoped_writes() == {"aws": aws, "azure": azure, "gcp": gcp}


def test_iam_policy_explain_names_each_statement_role_and_grant_and_its_scope() -> None:
    wide = {"COLUMNS": "400"}
    aws = runner.invoke(app, ["iam-policy", "aws", "--explain"], env=wide)
    assert aws.exit_code == 0, aws.output
    for statement in _policy("aws")["Statement"]:
        assert statement["Sid"] in aws.output
    assert "ec2.amazonaws.com" in aws.output  # the PassRole condition, shown
    azure = runner.invoke(app, ["iam-policy", "azure", "--explain"], env=wide)
    assert azure.exit_code == 0, azure.output
    for definition in _policy("azure")["roleDefinitions"]:
        assert definition["body"]["properties"]["roleName"] in azure.output
    assert "/resourceGroups/<workload-resource-group>" in azure.output
    gcp = runner.invoke(app, ["iam-policy", "gcp", "--explain"], env=wide)
    assert gcp.exit_code == 0, gcp.output
    for binding in _policy("gcp")["bindings"]:
        assert binding["binding"]["role"].rsplit("/", 1)[1] in gcp.output
        assert binding["binding"].get("condition", {}).get("expression", "") in gcp.output
