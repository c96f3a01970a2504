"""The built wheel: a lean core, one extra per cloud, no pytest plugin; the Lambda package stays small.

Builds the wheel and the Lambda package with deploy/aws/build_package.py (as a user does), then installs the bare
wheel, with no extra, into a fresh virtual environment and runs its ``cloudir`` command there. Each extra is held
to the code it serves: every distribution that code imports is declared by the extra (or the core) itself.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import duckdb
import pytest

from cloudir.custody import verify_case

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


def test_lambda_package_is_the_wheel_and_what_the_handler_loads(built: tuple[Path, str]) -> None:
    out, printed = built
    match = re.search(r"([\d.]+) MB unzipped, ([\d.]+) MB zipped$", printed.strip())
    assert match, printed  # and no note: the native libraries were stripped
    unzipped, zipped = float(match[1]), float(match[2])
    assert unzipped < 100
    assert zipped < 50  # Lambda's limit for a direct upload
    with zipfile.ZipFile(out / "cloudir-lambda.zip") as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {"cloudir", "providers", "duckdb", "sigma", "cryptography", "rich"} <= tops
    left_out = {"boto3", "botocore", "s3transfer", "typer", "pydantic", "pygments", "moto", "pytest", "azure"}
    assert not tops & (left_out | {"google", ".venv", "tests", "pyproject.toml"})
    assert not [name for name in names if name.endswith((".pyi", "/RECORD"))]
    assert any(name.endswith(".dist-info/entry_points.txt") and name.startswith("cloudir-") for name in names)
    # Stripping rewrites a file through every link to it: no package file may be a link into uv's cache.
    assert not [path for path in (out / "package").rglob("*") if path.is_file() and path.stat().st_nlink > 1]


LEFT_OUT_MODULES = re.compile(r"^(typer|pydantic|pygments|markdown_it|rich\.(syntax|traceback|markdown|logging))\b")


def test_the_code_the_handler_runs_imports_nothing_the_package_leaves_out() -> None:
    """Only cloudir/cli imports typer; nothing imports rich's highlighting (left out of the Lambda package)."""
    for path in sorted([*(ROOT / "cloudir").rglob("*.py"), *(ROOT / "providers").rglob("*.py")]):
        if (ROOT / "cloudir" / "cli") in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        assert not [name for name in names if LEFT_OUT_MODULES.match(name)], path


@pytest.fixture(scope="module")
def runnable(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package folder built for this interpreter's Python (the default build when it is the runtime's)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version == "3.12":
        return built[0] / "package"
    out = tmp_path_factory.mktemp("runnable")
    script = ROOT / "deploy" / "aws" / "build_package.py"
    command = [sys.executable, str(script), "--out", str(out), "--python-version", version]
    subprocess.run(command, capture_output=True, check=True, timeout=600)
    return out / "package"


# What the Lambda Python runtime adds to the package (the AWS SDK), and the sandbox: this environment's copies.
RUNTIME_AND_SANDBOX = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "moto", "werkzeug",
                       "xmltodict", "responses")  # fmt: skip
# Plant an instance and its CloudTrail history in moto, then hand a GuardDuty finding on it to the handler.
HANDLER_RUN = """
import json, sys
sys.path[:0] = sys.argv[1:3]
from datetime import UTC, datetime, timedelta
import boto3
from moto import mock_aws
from moto_fixtures.cloudtrail import fake_cloudtrail, plant_attacker_trail
from cloudir.serverless.aws_lambda import handler
with mock_aws(), fake_cloudtrail():
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    account = boto3.client("sts").get_caller_identity()["Account"]
    now = datetime.now(UTC).replace(microsecond=0)
    role = f"arn:aws:iam::{account}:role/web-app-role"
    plant_attacker_trail(account_id=account, region="us-east-1", instance_id=instance, role_arn=role,
                         attacker_ip="203.0.113.66", start=now - timedelta(minutes=40), baseline_days=3)
    event = json.loads(open(sys.argv[3], encoding="utf-8").read())
    event["account"] = account
    detail = event["detail"]
    detail.update(accountId=account, updatedAt=now.isoformat().replace("+00:00", "Z"))
    detail["service"]["eventLastSeen"] = detail["updatedAt"]
    detail["resource"]["instanceDetails"]["instanceId"] = instance
    print(json.dumps(handler(event)))
"""


def _lambda_runtime(folder: Path) -> Path:
    """A folder holding only the distributions in RUNTIME_AND_SANDBOX (links to their files and metadata)."""
    folder.mkdir()
    for name in RUNTIME_AND_SANDBOX:
        dist = importlib.metadata.distribution(name)
        for top in sorted({file.parts[0] for file in dist.files or []} - {"..", "__pycache__"}):
            if not top.endswith(".pth") and not (folder / top).exists():
                (folder / top).symlink_to(Path(str(dist.locate_file(top))))
    return folder


def test_lambda_handler_responds_to_a_finding_from_the_package_and_the_runtime_sdk_alone(
    runnable: Path, tmp_path: Path
) -> None:
    """The shipped EC2 playbook end to end (containment pre-approved) on moto, imported from the package only."""
    runtime = _lambda_runtime(tmp_path / "runtime")
    event = ROOT / "tests" / "respond" / "data" / "guardduty_ec2_eventbridge.json"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CLOUDIR_CASE_ROOT": str(tmp_path / "cases"),
        "CLOUDIR_APPROVE_CONTAINMENT": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [sys.executable, "-I", "-S", "-c", HANDLER_RUN, str(runnable), str(runtime), str(event)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    [outcome] = answer["outcomes"]
    assert (answer["status"], outcome["status"], outcome["playbook"]) == ("ok", "completed", "ec2-instance-compromise")
    case = Path(outcome["case_dir"])
    assert (case / "reports" / "report.html").is_file()
    with duckdb.connect(str(case / "timeline.duckdb"), read_only=True) as timeline:
        assert timeline.execute("SELECT count(*) FROM findings").fetchall() > [(0,)]
    assert verify_case(case).ok


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
