"""Build the Lambda package: the cloudir wheel and the runtime dependencies the handler needs, zipped.

    python deploy/aws/build_package.py            # writes deploy/aws/.build/cloudir-lambda.zip (template CodeUri)

Only the built wheel and what it needs go in (never the repository, .venv or the sandboxes): ``uv build --wheel``,
then ``uv pip install --target --link-mode copy`` (copies, never links into uv's cache) of ``cloudir[aws]`` for the
Lambda runtime's platform (python3.12, manylinux_2_28 x86_64, binary wheels only). Then what the handler never loads
is taken out: the AWS SDK (boto3, botocore and their dependencies: the Lambda Python runtime provides them), the
CLI's own distributions (typer and pydantic: the handler runs no command), rich's syntax highlighting and Markdown
(pygments, markdown-it-py), type stubs, ``*.pyi`` files and the install RECORDs; and the native libraries' symbol
tables are stripped (``strip --strip-unneeded``, binutils; without it they stay and the package is bigger, as
printed). Prints the unzipped and zipped sizes.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().with_name(".build")
LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORM = "x86_64-manylinux_2_28"  # Amazon Linux 2023, the python3.12 runtime's OS
MB = 1_000_000
# The Lambda Python runtime's own copy of the AWS SDK (see deploy/aws/README.md for the version cloudir needs).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six"})
# Imported by cloudir/cli only (typer and what only typer needs): the handler runs no command.
CLI_ONLY = frozenset(
    {"typer", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "shellingham", "annotated-doc"}
)
# rich's syntax highlighting and Markdown (rich.syntax, rich.traceback, rich.markdown): cloudir renders neither.
RICH_HIGHLIGHTING = frozenset({"pygments", "markdown-it-py", "mdurl"})
TYPE_STUBS = frozenset({"types-pyyaml", "diskcache-stubs"})
LEFT_OUT = RUNTIME_PROVIDED | CLI_ONLY | RICH_HIGHLIGHTING | TYPE_STUBS


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        sys.exit("uv is needed to build the package (https://docs.astral.sh/uv/)")
    return uv


def _distribution(dist_info: Path) -> str:
    """The normalized distribution name of a ``name-version.dist-info`` folder."""
    return re.sub(r"[-_.]+", "-", dist_info.name.split("-", 1)[0]).lower()


def _record_paths(package: Path, dist_info: Path) -> list[Path]:
    """The files a distribution installed under ``package``, as its RECORD lists them."""
    rows = csv.reader((dist_info / "RECORD").read_text(encoding="utf-8").splitlines())
    return [package / row[0] for row in rows if row]


def _leave_out(package: Path) -> None:
    """Remove the distributions in LEFT_OUT, every ``*.pyi`` and the remaining RECORDs (used only to uninstall)."""
    for dist_info in sorted(package.glob("*.dist-info")):
        if _distribution(dist_info) in LEFT_OUT:
            for path in _record_paths(package, dist_info):
                path.unlink(missing_ok=True)
            shutil.rmtree(dist_info)
    for path in [*package.rglob("*.pyi"), *package.glob("*.dist-info/RECORD")]:
        path.unlink()
    for folder in sorted((p for p in package.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _strip(package: Path) -> str:
    """Strip the native libraries' symbol tables; a note when ``strip`` is not installed.

    ``strip`` rewrites a file in place, through every hard link to it: the package holds copies (``--link-mode
    copy``), never links into uv's cache, which every environment on the machine shares.
    """
    strip = shutil.which("strip")
    if not strip:
        return " (strip not found: native libraries keep their symbol tables)"
    libraries = sorted(str(path) for path in package.rglob("*.so*") if path.is_file())
    subprocess.run([strip, "--strip-unneeded", *libraries], check=True, capture_output=True)
    return ""


def build(out: Path, python_version: str = LAMBDA_PYTHON) -> tuple[Path, int, int, str]:
    """Build the wheel and the package zip under ``out``; return the zip, unzipped and zipped sizes in bytes, and a
    note on what could not be done."""
    uv = _uv()
    dist, package, archive = out / "dist", out / "package", out / "cloudir-lambda.zip"
    for stale in (dist, package):
        shutil.rmtree(stale, ignore_errors=True)
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True)
    (wheel,) = dist.glob("cloudir-*.whl")
    install = [uv, "pip", "install", "--quiet", "--no-build", "--link-mode", "copy", "--target", str(package)]
    platform = ["--python-platform", LAMBDA_PLATFORM, "--python-version", python_version]
    subprocess.run([*install, *platform, f"{wheel}[aws]"], check=True, capture_output=True)
    _leave_out(package)
    note = _strip(package)
    files = sorted(path for path in package.rglob("*") if path.is_file())
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            bundle.write(path, path.relative_to(package).as_posix())
    return archive, sum(path.stat().st_size for path in files), archive.stat().st_size, note


def main() -> None:
    """Build and print the package sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="build folder (default: deploy/aws/.build)")
    parser.add_argument(
        "--python-version", default=LAMBDA_PYTHON, help=f"the runtime's Python (default: {LAMBDA_PYTHON})"
    )
    args = parser.parse_args()
    archive, unzipped, zipped, note = build(args.out, args.python_version)
    print(f"{archive}: {unzipped / MB:.1f} MB unzipped, {zipped / MB:.1f} MB zipped{note}")


if __name__ == "__main__":
    main()
