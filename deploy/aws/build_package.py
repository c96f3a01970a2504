"""Build the Lambda package: the cloudir wheel and its runtime dependencies for ``cloudir[aws]``, zipped.

    python deploy/aws/build_package.py            # writes deploy/aws/.build/cloudir-lambda.zip (template CodeUri)

Only the built wheel and what it needs go in (never the repository, .venv or the sandboxes): ``uv build --wheel``,
then ``uv pip install --target`` for the Lambda runtime's platform (python3.12, manylinux_2_28 x86_64, binary wheels
only). Prints the unzipped and zipped sizes; Lambda's limits are 250 MB unzipped and 50 MB zipped for a direct
upload (``sam deploy`` uploads through S3, where the unzipped limit applies).
"""

from __future__ import annotations

import argparse
import os
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


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        sys.exit("uv is needed to build the package (https://docs.astral.sh/uv/)")
    return uv


def build(out: Path) -> tuple[Path, int, int]:
    """Build the wheel and the package zip under ``out``; return the zip, unzipped and zipped sizes in bytes."""
    uv = _uv()
    dist, package, archive = out / "dist", out / "package", out / "cloudir-lambda.zip"
    for stale in (dist, package):
        shutil.rmtree(stale, ignore_errors=True)
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True)
    (wheel,) = dist.glob("cloudir-*.whl")
    install = [uv, "pip", "install", "--quiet", "--no-build", "--target", str(package)]
    platform = ["--python-platform", LAMBDA_PLATFORM, "--python-version", LAMBDA_PYTHON]
    subprocess.run([*install, *platform, f"{wheel}[aws]"], check=True, capture_output=True)
    files = sorted(path for path in package.rglob("*") if path.is_file())
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            bundle.write(path, path.relative_to(package).as_posix())
    return archive, sum(path.stat().st_size for path in files), archive.stat().st_size


def main() -> None:
    """Build and print the package sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="build folder (default: deploy/aws/.build)")
    archive, unzipped, zipped = build(parser.parse_args().out)
    print(f"{archive}: {unzipped / MB:.1f} MB unzipped, {zipped / MB:.1f} MB zipped")


if __name__ == "__main__":
    main()
