"""cloudir: cloud forensic evidence acquisition and investigation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cloudir")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+src"

TOOL_NAME = "cloudir"
