"""Only providers/ (and the sandboxes) may import cloud SDKs."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOUD_SDKS = ("boto3", "botocore", "azure", "google", "moto")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "cloudir").rglob("*.py")), ids=lambda p: p.name)
def test_core_does_not_import_cloud_sdks(path: Path) -> None:
    assert not _imports(path) & set(CLOUD_SDKS), f"{path} imports a cloud SDK; move that code to providers/"


def test_boundary_check_would_catch_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import boto3\nfrom google.cloud import compute_v1\n")
    assert _imports(bad) & set(CLOUD_SDKS) == {"boto3", "google"}
