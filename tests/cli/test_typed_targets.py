"""A disk, bucket or cluster named on the command line is typed as what it is and refused by name by the providers
that do not handle that kind (never looked up as an instance), offline and before anything is created."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.provider import TargetKind, resource_kind

SUB = "6f1c2a9e-3b7d-4c1e-9a55-1d2b3c4d5e6f"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-prod/providers"


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["acquire", "aws", "--target", "arn:aws:s3:::victim-bucket", "--region", "us-east-1"], "bucket"),
        (["acquire", "aws", "--target", "vol-0123456789abcdef0", "--region", "us-east-1"], "disk"),
        (["contain", "aws", "--target", "arn:aws:eks:us-east-1:123456789012:cluster/prod"], "cluster"),
        (["acquire", "azure", "--target", f"{RG}/Microsoft.Compute/disks/d1", "--subscription", SUB], "disk"),
        (["contain", "azure", "--target", f"{RG}/Microsoft.ContainerService/managedClusters/aks1",
          "--subscription", SUB], "cluster"),
        (["acquire", "gcp", "--target", "gs://victim-logs", "--project", "p1"], "bucket"),
        (["acquire", "gcp", "--target", "projects/p1/zones/us-central1-a/disks/pd-1", "--project", "p1"], "disk"),
    ],
)  # fmt: skip
def test_a_kind_the_provider_does_not_handle_is_refused_by_name(
    args: list[str], kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AZURE_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure"))
    result = CliRunner().invoke(app, [*args, "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"cannot handle targets of kind '{kind}'" in result.output
    assert "it targets: instance" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "value",
    [
        "web-vm-01", "i-0abc1234def567890", "10.0.1.4", f"{RG}/Microsoft.Compute/virtualMachines/web-vm-01",
        "arn:aws:iam::123456789012:role/x", "vol-xyz; rm -rf /", "gs://a/../../etc", "s3://bucket/key/../x",
    ],
)  # fmt: skip
def test_only_an_unmistakable_resource_name_is_typed_other_than_instance(value: str) -> None:
    assert resource_kind(value) is None


def test_each_cloud_names_its_disks_buckets_and_clusters() -> None:
    assert resource_kind("arn:aws:ec2:us-east-1:123456789012:volume/vol-0abc") is TargetKind.DISK
    assert resource_kind(f"{RG}/Microsoft.Storage/storageAccounts/stlogs") is TargetKind.BUCKET
    assert resource_kind("s3://victim-bucket") is TargetKind.BUCKET
    assert resource_kind("//container.googleapis.com/projects/p/locations/us-central1/clusters/c") is TargetKind.CLUSTER
