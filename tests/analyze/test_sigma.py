import re
from datetime import timedelta
from pathlib import Path

import pytest

from cloudir.analyze.sigma_sql import JSON_FIELD_PATHS, field_sql, load_rules
from tests.analyze.builder import T0, event, routine
from tests.analyze.conftest import SHARED, Analyze

SIGMA = SHARED / "sigma-rules"
TRAIL_RULE = "4db60cc0-36fb-42b7-9b58-a5b53019fb74"  # AWS CloudTrail Important Change

pytestmark = pytest.mark.skipif(not SIGMA.is_dir(), reason="../shared/sigma-rules is not beside the repository")


def test_sigmahq_cloud_rules_convert_and_unconvertible_ones_are_listed() -> None:
    loaded = load_rules(SIGMA)
    assert len(loaded.converted) >= 150
    reasons = dict(loaded.failed)
    assert any("log source azure/riskdetection not in the timeline" in r for r in reasons.values())
    assert any(name.startswith("aws_update_login_profile.yml") for name in reasons)
    assert len(loaded.converted) + len(loaded.failed) == len(list(SIGMA.rglob("*.yml")))


def test_field_mapping() -> None:
    assert field_sql("eventName") == "operation"
    assert JSON_FIELD_PATHS[field_sql("requestParameters.userName")] == ['$."requestParameters"."userName"']
    assert field_sql("gcp.audit.method_name") == "operation"
    assert '$."protoPayload"."methodName"' in JSON_FIELD_PATHS[field_sql("data.protoPayload.methodName")]
    assert JSON_FIELD_PATHS[field_sql("Properties.message")] == ['$."Properties"."message"', '$."properties"."message"']


def test_every_rule_reads_one_parse_of_each_record() -> None:
    """The raw-record fields of all rules are columns of sigma_events: no rule parses the JSON again."""
    loaded = load_rules(SIGMA)
    wheres = " ".join(where for _, where in loaded.converted)
    assert "json_extract" not in wheres
    assert len(set(re.findall(r"sf_[0-9a-f]{12}", wheres))) >= 20


def test_trail_deletion_matches_the_sigmahq_rule(analyze: Analyze) -> None:
    rows = routine(["ListBuckets", "DescribeInstances"], days=22)
    hit = event("DeleteTrail", service="cloudtrail", time=T0 + timedelta(days=21, hours=4), source_ip="192.0.2.9")
    summary, findings = analyze([*rows, hit], sigma_rules=SIGMA)
    sigma = [f for f in findings if f["analyzer"] == "sigma"]
    assert [f["rule"] for f in sigma] == [TRAIL_RULE]
    assert sigma[0]["event_ids"] == [hit["event_id"]]
    assert "author vitaliy0x1" in sigma[0]["explanation"]
    assert summary.sigma_rules_converted >= 150


def test_broken_and_unsupported_rules_are_reported_not_fatal(tmp_path: Path, analyze: Analyze) -> None:
    (tmp_path / "broken.yml").write_text("title: broken\ndetection: [unclosed\n")
    (tmp_path / "windows.yml").write_text(
        "title: a windows rule\nlogsource:\n  product: windows\n  service: security\n"
        "detection:\n  sel:\n    EventID: 4624\n  condition: sel\n"
    )
    summary, _ = analyze(routine(["ListBuckets"], days=22), sigma_rules=tmp_path)
    assert summary.sigma_rules_converted == 0
    reasons = [reason for _, reason in summary.sigma_rules_failed]
    assert any(reason.startswith("parse error") for reason in reasons)
    assert "log source windows/security not in the timeline" in reasons
