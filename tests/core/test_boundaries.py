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


OUTSIDE = ("providers", "moto_fixtures")  # reached from cloudir/ only through the registry's entry points


def _outside_references(path: Path) -> list[str]:
    """Imports of ``providers``/``moto_fixtures`` and module names spelled as strings (``f"providers.{x}"``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] in OUTSIDE]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] if node.module.split(".")[0] in OUTSIDE else []
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [node.value] if node.value.startswith(tuple(f"{name}." for name in OUTSIDE)) else []
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "cloudir").rglob("*.py")), ids=lambda p: p.name)
def test_core_reaches_providers_and_sandboxes_only_through_the_registry(path: Path) -> None:
    assert not _outside_references(path), f"{path} names {_outside_references(path)}; use cloudir.registry"


def test_registry_check_would_catch_a_direct_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import importlib\nfrom moto_fixtures.sandbox import open_sandbox\n"
        "if False:\n    import providers.aws\nimportlib.import_module(f'providers.{1}')\n"
    )
    assert _outside_references(bad) == ["moto_fixtures.sandbox", "providers.aws", "providers."]


def test_registry_names_every_cloud_and_the_demo_sandboxes() -> None:
    from cloudir.provider import CLOUDS, EvidenceMirroring, get_provider, offline_provider
    from cloudir.registry import PROVIDERS, SANDBOXES, SEAL_STORES, demo_sandboxes, registered

    assert registered(PROVIDERS) == sorted(CLOUDS)
    assert registered(SANDBOXES) == ["demo"]
    assert registered(SEAL_STORES) == ["azblob", "gs", "s3"]
    assert callable(demo_sandboxes().open_sandbox)
    aws = get_provider("aws", region="us-east-1")
    assert isinstance(aws, EvidenceMirroring)
    assert not isinstance(offline_provider("gcp"), EvidenceMirroring)
