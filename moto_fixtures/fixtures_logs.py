"""pytest fixtures for CloudTrail log collection: moto plus the fake LookupEvents/ListPublicKeys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from cloudir.case import Case
from moto_fixtures.cloudtrail import CloudTrailStore, fake_cloudtrail


@pytest.fixture
def cloudtrail_store() -> Iterator[CloudTrailStore]:
    """moto running, with an empty fake LookupEvents/ListPublicKeys store."""
    with mock_aws(), fake_cloudtrail() as store:
        yield store


@pytest.fixture
def logs_case(tmp_path: Path) -> Case:
    """A fresh case folder."""
    return Case.create(tmp_path / "case", case_id="cir-test-logs")
