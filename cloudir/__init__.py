"""cloudir: cloud forensic evidence acquisition and investigation."""

__version__ = "0.1.0"  # the package version (pyproject reads it from here)

TOOL_NAME = "cloudir"
