"""What one delivery of a finding did: the result every front end reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPLETED_WITH_SKIPS = "completed with skipped steps"


@dataclass
class Outcome:
    """What one delivery of a finding did."""

    finding_id: str
    case_dir: Path
    status: str  # completed | completed with skipped steps | awaiting-approval | failed | duplicate | in-progress
    message: str
    playbook: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form returned by the serverless handlers."""
        return {
            "finding_id": self.finding_id,
            "case_dir": str(self.case_dir),
            "status": self.status,
            "message": self.message,
            "playbook": self.playbook,
        }
