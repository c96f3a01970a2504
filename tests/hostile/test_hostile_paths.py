"""Planted trail-bucket keys that try to leave their folder or overwrite a genuine log file are refused, not fatal."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.cloudtrail import STORE, CloudTrailStore, activity_records, write_trail_files
from tests.logs.conftest import ACCOUNT, BUCKET, REGION, T0, make_bucket

runner = CliRunner()
FORGED = gzip.compress(json.dumps({"Records": [{"eventName": "ForgedEvent"}]}).encode(), mtime=0)


def _planted_keys(genuine: str) -> dict[str, str]:
    """Each attack key, built from a genuine log file's key, with the reason it must be refused for."""
    folder, name = genuine.rsplit("/", 1)
    return {
        f"{folder}/./{name}": "unsafe name: '.' segment",  # normalises onto the genuine file
        f"{folder}//{name}": "unsafe name: empty segment ('//' or a trailing '/')",
        f"{folder}/../../../../../../../../../../../../{name}": "unsafe name: '..' segment",  # out of the case
        f"{folder}/x\\..\\{name}": "unsafe name: backslash",
        f"{genuine}/{name}": f"collides with {genuine!r}",  # needs the genuine file to be a folder
    }


def test_planted_keys_are_refused_and_the_genuine_files_kept(cloudtrail_store: CloudTrailStore, tmp_path: Path) -> None:
    s3 = make_bucket()
    records = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=3)
    keys = write_trail_files(s3, BUCKET, ACCOUNT, REGION, records, STORE.signer)
    genuine = next(k for k in keys if "/CloudTrail/" in k)
    planted = _planted_keys(genuine)
    for key in planted:
        s3.put_object(Bucket=BUCKET, Key=key, Body=FORGED)
    case = tmp_path / "case"
    window = ["--start", T0.isoformat(), "--end", (T0 + timedelta(hours=3)).isoformat(), "--region", REGION]
    pulled = runner.invoke(app, ["logs", "pull", "aws", "--case", str(case), *window, "--trail-bucket", BUCKET])
    assert pulled.exit_code == 0, pulled.output
    local = case / "logs/aws/s3" / BUCKET / genuine
    assert local.read_bytes() == s3.get_object(Bucket=BUCKET, Key=genuine)["Body"].read()  # not overwritten
    assert not list(tmp_path.glob("*.json.gz"))  # nothing escaped the case
    listing = json.loads((case / "logs/aws/s3-listing.json").read_text(encoding="utf-8"))
    assert {item["key"]: item["reason"] for item in listing["refused"]} == planted
    downloaded = {o["key"] for o in listing["objects"] if o["in_window"] and o["kind"] == "log"}
    assert downloaded == {k for k in keys if "/CloudTrail/" in k}  # the rest of the download went on
    [listed] = [r for r in read_records(case / "custody.jsonl") if r["details"].get("step") == "s3-list"]
    assert {item["key"] for item in listed["details"]["result"]["refused_objects"]} == set(planted)
    coverage = json.loads((case / "logs/aws/coverage.json").read_text(encoding="utf-8"))
    [trail_files] = [s for s in coverage["sources"] if s["source"] == "cloudtrail:s3"]
    assert trail_files["status"] == "partial"
    assert {item["key"] for item in trail_files["details"]["refused"]} == set(planted)
    assert any("5 objects refused" in warning for warning in coverage["warnings"])
    built = runner.invoke(app, ["timeline", "build", str(case)])
    assert built.exit_code == 0, built.output
    query = runner.invoke(
        app,
        [
            "timeline",
            "query",
            str(case / "timeline.duckdb"),
            "SELECT count(*) AS n FROM events WHERE operation = 'ForgedEvent'",
            "--format",
            "json",
        ],
    )
    assert query.exit_code == 0, query.output
    assert json.loads(query.output) == [{"n": 0}]
