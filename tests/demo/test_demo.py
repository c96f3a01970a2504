"""`cloudir demo`: the whole flow on every sandboxed cloud, as the README runs it."""

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from moto_fixtures.sandbox import sandbox_environment, seal_store_sandbox


def test_demo_on_all_clouds_leaves_a_verified_case_with_one_timeline(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "demo-case"
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", "s3://demo-seals/cases")  # sandboxed with the demo's clouds
    result = CliRunner().invoke(app, ["demo", "--cloud", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "demo complete" in result.output
    assert "stored write-once in s3://demo-seals/cases" in result.output
    assert "seal store s3://demo-seals/cases is sandboxed for the demo" in result.output
    stored = [r for r in read_records(out / "custody.jsonl") if r["action"] == "seal.store"]
    assert [r["outcome"] for r in stored] == ["ok"]
    verdict = verify_case(out)
    assert verdict.ok
    assert f"head {verdict.head}\n" in result.output  # the full head on one line, as printed to a pipe
    assert (out / "reports" / "report.html").is_file()
    assert list((out / "images" / "aws").glob("*.raw"))
    [point] = (out / "artifacts" / "azure").glob("*/*/restore-points/*.json")  # the Azure VM's disks at one instant
    properties = json.loads(point.read_text())["properties"]
    storage = properties["sourceMetadata"]["storageProfile"]
    assert properties["consistencyMode"] == "CrashConsistent"
    points = [d["diskRestorePoint"]["id"] for d in [storage["osDisk"], *storage["dataDisks"]]]
    assert points[1:]  # two or more
    snapshots = [json.loads(p.read_text()) for p in point.parent.parent.glob("snapshots/*.json")]
    restored = sorted(s["properties"]["creationData"]["sourceResourceId"] for s in snapshots)
    assert sorted(points) == [r for r in restored if "/diskRestorePoints/" in r]  # each disk's evidence is its point's
    [gcp] = (out / "artifacts" / "gcp").glob("*/*/*/summary.json")
    assert json.loads(gcp.read_text())["managed_instance_group"]  # the GCP target is a MIG member
    assert "Abandon web-frontend-7x2k from managed instance group" in " ".join(result.output.split())
    with duckdb.connect(str(out / "timeline.duckdb"), read_only=True) as con:
        clouds = dict(con.execute("SELECT cloud, count(*) FROM events GROUP BY cloud").fetchall())
        responder_by_cloud = dict(
            con.execute("SELECT cloud, count(*) FROM events WHERE is_responder GROUP BY cloud").fetchall()
        )
        findings = con.execute("SELECT count(*) FROM findings").fetchone()
        impersonations = con.execute(
            "SELECT count(*) FROM findings WHERE analyzer = 'responder_impersonation'"
        ).fetchone()
        beacons = con.execute(
            "SELECT explanation FROM findings WHERE analyzer = 'beaconing' AND rule = 'flow-beacon'"
        ).fetchall()
        beacon_profiles = con.execute(
            "SELECT profile ->> 'explanation' FROM findings WHERE analyzer = 'beaconing' AND rule = 'flow-beacon'"
        ).fetchall()  # the full explanation (the column's is shortened)
        responder_in_findings = con.execute(
            "SELECT count(*) FROM findings f JOIN events e ON list_contains(f.event_ids, e.event_id) "
            "WHERE e.is_responder"
        ).fetchone()
    assert set(clouds) == {"aws", "azure", "gcp"}
    assert set(responder_by_cloud) == {"aws", "azure", "gcp"}  # the tool's own calls, tagged on every cloud
    assert findings is not None
    assert findings[0] > 0
    assert responder_in_findings == (0,)
    assert impersonations == (0,)  # every call the tool made is matched by its recorded request id
    assert any("203.0.113.66:443/tcp about every 599 s" in text for (text,) in beacons), beacons  # the implant
    azure_implant = "/virtualMachines/web-vm-01 opened "  # the VM whose NIC's MAC the NSG flow log names
    assert any(azure_implant in t and "203.0.113.66:443/tcp about every 30" in t for (t,) in beacons), beacons
    # ... and the calls made with its managed identity's token, out through the VM's public IP (a known address)
    assert any(
        azure_implant in t and "2 calls" in t and "2 of them from this instance's known addresses" in t
        for (t,) in beacon_profiles
    ), beacon_profiles


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("evidence")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not empty" in result.output


@pytest.mark.parametrize("url", ["s3://demo-seals/cases", "azblob://demoseals/seals/cases", "gs://demo-seals/cases"])
def test_the_demo_sandboxes_each_seal_store_write_once(tmp_path: Path, monkeypatch, url: str) -> None:
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", url)
    with sandbox_environment(), seal_store_sandbox(url):
        with Case.create(tmp_path / "case") as case:
            case.write_json("artifacts/note.json", {"n": 1})
        verdict = verify_case(tmp_path / "case", remote=True)
    assert verdict.ok, verdict.problems
    assert any(f"1 stored seal(s) in {url} compared" in note for note in verdict.notes)
