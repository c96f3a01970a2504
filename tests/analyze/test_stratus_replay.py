"""Replay the 35 Stratus Red Team detonations (real CloudTrail) after a month of routine activity."""

import json
from datetime import datetime, timedelta

import pytest

from tests.analyze.builder import cloudtrail_rows, routine
from tests.analyze.conftest import SHARED, Analyze

STRATUS = SHARED / "datasets" / "stratus-red-team-detonations-aws" / "logs"

pytestmark = pytest.mark.skipif(not STRATUS.is_dir(), reason="../shared/datasets is not beside the repository")


def test_rule_based_analyzers_detect_most_stratus_techniques(analyze: Analyze) -> None:
    attack_start = datetime(2026, 1, 25)
    rows = routine(["ListBuckets", "DescribeInstances", "GetObject"], days=24)
    technique_of: dict[str, str] = {}
    for offset, path in enumerate(sorted(STRATUS.glob("*.json"))):
        records = json.loads(path.read_text())
        first = min(datetime.fromisoformat(r["eventTime"].rstrip("Z")) for r in records)
        for record in records:
            moved = datetime.fromisoformat(record["eventTime"].rstrip("Z")) - first + attack_start
            record["eventTime"] = (moved + timedelta(hours=offset)).isoformat() + "Z"
            technique_of[record["eventID"]] = path.stem
        rows += cloudtrail_rows(records)
    _, findings = analyze(rows, baseline_until=attack_start)
    detected: dict[str, set[str]] = {}
    for finding in findings:
        for event_id in finding["event_ids"]:
            if event_id in technique_of:
                detected.setdefault(finding["analyzer"], set()).add(technique_of[event_id])
    rule_based = detected.get("sensitive_actions", set()) | detected.get("recon_burst", set())
    assert len(rule_based) >= 25, sorted(set(technique_of.values()) - rule_based)
    assert len(set().union(*detected.values())) == 35
