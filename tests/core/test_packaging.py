"""The built wheel: a lean core, one extra per cloud, no pytest plugin; the Lambda package stays small.

Builds the wheel and the Lambda package with deploy/aws/build_package.py (as a user does), then installs the bare
wheel, with no extra, into a fresh virtual environment and runs its ``cloudir`` command there. Each extra is held
to the code it serves: every distribution that code imports is declared by the extra (or the core) itself.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = os.environ.get("UV") or shutil.which("uv") or "uv"
SDKS = re.compile(r"^(boto3|botocore|moto|azure-|google-|pytest)", re.IGNORECASE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The build folder and what the build script printed."""
    out = tmp_path_factory.mktemp("build")
    script = ROOT / "deploy" / "aws" / "build_package.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(out)], capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    return out, result.stdout


def _metadata(wheel: Path) -> tuple[list[str], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    return meta.splitlines(), entry_points


def test_wheel_core_has_no_cloud_sdk_and_registers_no_pytest_plugin(built: tuple[Path, str]) -> None:
    (wheel,) = (built[0] / "dist").glob("cloudir-*.whl")
    meta, entry_points = _metadata(wheel)
    requires = [line.removeprefix("Requires-Dist: ") for line in meta if line.startswith("Requires-Dist: ")]
    core = [r for r in requires if "extra ==" not in r]
    assert {re.split(r"[<>=\[; ]", r)[0] for r in core} == {
        "typer", "rich", "duckdb", "pyyaml", "cryptography", "pysigma", "asn1crypto", "jinja2",
    }  # fmt: skip
    assert not [r for r in core if SDKS.match(r)]
    extras = {line.removeprefix("Provides-Extra: ") for line in meta if line.startswith("Provides-Extra: ")}
    assert extras == {"aws", "azure", "gcp", "demo"}
    assert any(r.startswith("boto3") and "extra == 'aws'" in r for r in requires)
    assert any(r.startswith("azure-mgmt-compute") and "extra == 'azure'" in r for r in requires)
    assert any(r.startswith("google-cloud-compute") and "extra == 'gcp'" in r for r in requires)
    assert any(r.startswith("moto") and "extra == 'demo'" in r for r in requires)
    assert "pytest11" not in entry_points
    assert "[cloudir.providers]" in entry_points
    assert "demo = moto_fixtures.sandbox" in entry_points


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=\[; !~]", requirement, maxsplit=1)[0]).lower()


@cache
def _file_owners() -> dict[Path, str]:
    """Every installed file and the distribution that installed it."""
    owners: dict[Path, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            owners[Path(str(dist.locate_file(file))).resolve()] = _name(dist.metadata["Name"])
    return owners


def _imported_distributions(folder: Path) -> dict[str, str]:
    """The distributions the modules under ``folder`` import (name -> one importing file), the standard library and
    the project's own packages aside; pytest fixture modules (test-only) aside too."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | {
            f"{node.module}.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
            for alias in node.names
        }
        if "pytest" in modules:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in {"cloudir", "providers", "moto_fixtures"}:
                continue
            owner = _owner(module)
            assert owner, f"{path}: {module} comes from no installed distribution"
            found.setdefault(owner, f"{path.name}: {module}")
    return found


def _owner(module: str) -> str | None:
    """The distribution installing ``module`` (an ``import a.b`` or a ``from a import b`` name: b may be a name)."""
    while module:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, AttributeError, ValueError):  # a name inside a module, not a module
            spec = None
        origin = spec.origin if spec is not None and spec.has_location else None
        if origin:
            return _file_owners().get(Path(origin).resolve())
        module = module.rpartition(".")[0]
    return None


def test_each_extra_declares_every_distribution_its_code_imports(built: tuple[Path, str]) -> None:
    (wheel,) = (built[0] / "dist").glob("cloudir-*.whl")
    meta = _metadata(wheel)[0]
    requires = [line.removeprefix("Requires-Dist: ") for line in meta if line.startswith("Requires-Dist: ")]
    declared: dict[str, set[str]] = {}
    for requirement in requires:
        extra = re.search(r"extra == '([^']+)'", requirement)
        declared.setdefault(extra[1] if extra else "", set()).add(_name(requirement))
    clouds = declared["aws"] | declared["azure"] | declared["gcp"]
    assert declared["demo"] >= clouds | {"moto", "google-api-python-client"}  # the three clouds' SDKs and the fakes'
    assert "google-api-python-client" not in declared["gcp"]  # only the sandbox reads its discovery documents
    assert {"google-auth", "google-api-core", "requests"} <= declared["gcp"]
    core = declared[""]
    sandboxes = core | declared["demo"]
    for folder, allowed in [
        ("cloudir", core),
        ("providers/aws", core | declared["aws"]),
        ("providers/azure", core | declared["azure"]),
        ("providers/gcp", core | declared["gcp"]),
        ("moto_fixtures", sandboxes),
    ]:
        imported = _imported_distributions(ROOT / folder)
        undeclared = {dist: where for dist, where in imported.items() if dist not in allowed}
        assert not undeclared, f"{folder} imports distributions its extra does not declare: {undeclared}"


def test_lambda_package_is_the_wheel_and_its_aws_dependencies(built: tuple[Path, str]) -> None:
    out, printed = built
    match = re.search(r"([\d.]+) MB unzipped, ([\d.]+) MB zipped", printed)
    assert match, printed
    unzipped, zipped = float(match[1]), float(match[2])
    assert zipped < 100
    assert unzipped < 250  # Lambda's limit for a package uploaded through S3
    with zipfile.ZipFile(out / "cloudir-lambda.zip") as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {"cloudir", "providers", "boto3", "duckdb"} <= tops
    assert not tops & {"moto", "pytest", "azure", "google", ".venv", "tests", "pyproject.toml"}


def test_missing_extra_is_one_line_naming_it(built: tuple[Path, str], tmp_path: Path) -> None:
    (wheel,) = (built[0] / "dist").glob("cloudir-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([UV, "pip", "install", "--quiet", "--python", str(python), str(wheel)], check=True, timeout=300)
    cloudir = venv / "bin" / "cloudir"
    commands = {
        "aws": ["acquire", "aws", "--target", "i-0abc1234", "--region", "eu-west-1", "--dry-run"],
        "azure": ["acquire", "azure", "--target", "web-vm-01", "--subscription", "s-1", "--dry-run"],
        "gcp": ["acquire", "gcp", "--target", "web-1", "--project", "p-1", "--zone", "europe-west1-b", "--dry-run"],
        "demo": ["demo", "--out", str(tmp_path / "demo-case")],
    }
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    for extra, args in commands.items():
        result = subprocess.run([cloudir, *args], capture_output=True, text=True, check=False, env=env, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (extra, result.stdout, result.stderr)
        assert len(lines) == 1, (extra, result.stderr)
        assert f"install cloudir[{extra}]" in lines[0], lines
    assert not (tmp_path / "demo-case").exists()  # refused before the case is created
