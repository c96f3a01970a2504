"""Flow-log normalizer: AWS VPC (text, CloudWatch pages, Parquet), Azure NSG / VNet, GCP vpc_flows."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.timeline.ingest import ingest_paths

FLOW_DATA = Path(__file__).parent / "flow_data"
S3_FILE = "aws/111122223333_vpcflowlogs_eu-west-1_fl-0123_20251201T1200Z_hash.log.gz"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "t.duckdb"
    stats = ingest_paths(path, [FLOW_DATA], source_root=FLOW_DATA)
    flows = stats.flows
    assert (flows.files, flows.ingested, flows.duplicates, flows.quarantined) == (6, 15, 1, 4)
    assert flows.per_format == {"aws_vpc_flow": 7, "azure_nsg_flow": 4, "azure_vnet_flow": 2, "gcp_vpc_flow": 2}
    assert stats.ingested == stats.quarantined == 0  # no flow record is taken for an event, none quarantined there
    return path


def flow(db: Path, where: str) -> dict[str, object]:
    with duckdb.connect(str(db), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM flows WHERE {where}")
        found = cursor.fetchall()
        assert len(found) == 1, found
        return dict(zip([d[0] for d in cursor.description], found[0], strict=True))


def test_aws_version_5_custom_format_from_s3(db: Path) -> None:
    out = flow(db, f"source_file = '{S3_FILE}' AND source_position = 0")
    assert out["time"] == datetime(2025, 12, 1, 12, 0)
    assert out["end_time"] == datetime(2025, 12, 1, 12, 1)
    assert (out["cloud"], out["source_format"], out["account"], out["region"]) == (
        "aws",
        "aws_vpc_flow",
        "111122223333",
        "eu-west-1",
    )
    assert (out["network"], out["subnet"], out["interface"], out["instance"]) == (
        "vpc-0abc",
        "subnet-0def",
        "eni-0a1b2c3d",
        "i-0aaa1111",
    )
    assert (out["src_addr"], out["dst_addr"], out["src_port"], out["dst_port"], out["protocol"]) == (
        "10.0.1.5",
        "203.0.113.9",
        49152,
        443,
        6,
    )
    assert (out["packets"], out["bytes"], out["action"], out["direction"], out["log_status"]) == (
        10,
        840,
        "ACCEPT",
        "egress",
        "OK",
    )
    nodata = flow(db, f"source_file = '{S3_FILE}' AND log_status = 'NODATA'")
    assert (nodata["source_position"], nodata["src_addr"], nodata["action"]) == (3, None, None)


def test_default_format_and_cloudwatch_pages_use_the_recorded_format(db: Path) -> None:
    default = flow(db, "source_file = 'aws/default-format.log' AND source_position = 1")
    assert (default["src_addr"], default["dst_port"], default["action"], default["bytes"]) == (
        "192.0.2.44",
        40000,
        "REJECT",
        120,
    )
    page = flow(db, "source_file = 'aws/cloudwatch/page-000001.json' AND source_position = 1")
    assert (page["instance"], page["interface"], page["dst_addr"], page["dst_port"], page["protocol"]) == (
        "i-0ccc3333",
        "eni-0c3d4e5f",
        "198.51.100.77",
        53,
        17,
    )
    assert (page["bytes"], page["packets"], page["time"]) == (75, None, datetime(2025, 12, 1, 14, 1))


def test_azure_nsg_version_1_and_2_and_vnet_tuples(db: Path) -> None:
    end = flow(db, "source_format = 'azure_nsg_flow' AND flow_state = 'E'")
    assert (end["account"], end["interface"], end["direction"], end["action"]) == (
        "00000000-1111-2222-3333-444444444444",
        "000D3A1B2C3D",
        "egress",
        "ACCEPT",
    )
    assert (end["packets"], end["bytes"], end["reply_packets"], end["reply_bytes"]) == (12, 1500, 10, 9000)
    assert str(end["network"]).endswith("/NETWORKSECURITYGROUPS/WEB-NSG")
    denied = flow(db, "source_format = 'azure_nsg_flow' AND action = 'REJECT'")
    assert (denied["src_addr"], denied["dst_port"], denied["direction"], denied["source_position"]) == (
        "198.51.100.3",
        22,
        "ingress",
        3,
    )
    version_1 = flow(db, "interface = '000D3A1B2C3E'")
    assert (version_1["flow_state"], version_1["bytes"], version_1["time"]) == (
        None,
        None,
        datetime(2025, 12, 1, 12, 1, 40),
    )
    vnet = flow(db, "source_format = 'azure_vnet_flow' AND flow_state = 'E'")
    assert vnet["time"] == datetime(2025, 12, 1, 12, 1, 0, 456000)
    assert (vnet["protocol"], vnet["bytes"], vnet["reply_bytes"]) == (6, 1200, 3300)
    assert str(vnet["network"]).endswith("/virtualNetworks/app-vnet")


def test_gcp_vpc_flows_take_the_reporting_side(db: Path) -> None:
    out = flow(db, "source_format = 'gcp_vpc_flow' AND direction = 'egress'")
    assert (out["account"], out["instance"], out["network"], out["subnet"]) == (
        "victim-prod",
        "web-1",
        "default",
        "default",
    )
    assert (out["dst_addr"], out["dst_port"], out["bytes"], out["packets"]) == ("203.0.113.70", 443, 1024, 4)
    assert out["end_time"] == datetime(2025, 12, 1, 12, 0, 5)
    inbound = flow(db, "source_format = 'gcp_vpc_flow' AND direction = 'ingress'")
    assert (inbound["instance"], inbound["src_addr"]) == ("web-1", "35.191.0.1")


def test_bad_records_are_quarantined_with_file_position_and_reason(db: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute("SELECT source_file, source_position, reason FROM quarantine ORDER BY ALL").fetchall()
    assert found == [
        (S3_FILE, 4, "expected 29 fields, found 5 (aws_vpc_flow)"),
        (S3_FILE, 5, "no parsable start time (aws_vpc_flow)"),
        ("azure/nsg-PT1H.json", 2, "NSG flow tuple with 3 fields (azure_nsg_flow)"),
        ("gcp/vpc_flows-page-000001.json", 2, "log entry without a VPC flow connection (gcp_vpc_flow)"),
    ]


def test_parquet_delivery_and_hostile_values(tmp_path: Path) -> None:
    """Parquet columns use ``_``; attacker-chosen values, column names and file names stay data."""
    folder = tmp_path / "it's here"
    folder.mkdir()
    target = folder / "flows.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT * FROM (VALUES "
            "(5, '111122223333', 'eni-1''); DROP TABLE flows; --', '10.0.0.1', '192.0.2.1', 1, 443, 6, 2, 100, "
            "1764590400, 1764590460, 'ACCEPT', 'OK', 'egress'), "
            "(5, '111122223333', 'eni-2', '10.0.0.2', NULL, 1, 443, 6, 2, 100, 1764590400, 1764590460, 'ACCEPT', "
            "'OK', 'egress')) t(version, account_id, interface_id, srcaddr, dstaddr, srcport, dstport, protocol, "
            'packets, bytes, start, "end", action, log_status, "x"") AS VARCHAR), 1 AS flow_direction, (""")) '
            "TO $target (FORMAT parquet)",
            {"target": str(target)},
        )
    shutil.copy(FLOW_DATA / "azure/nsg-PT1H.json", folder / "x'.json")
    stats = ingest_paths(tmp_path / "t.duckdb", [folder])
    assert (stats.flows.files, stats.flows.quarantined) == (2, 2)
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        interface, position = con.execute(
            "SELECT interface, source_position FROM flows WHERE source_format = 'aws_vpc_flow'"
        ).fetchone() or ("", -1)
        assert interface == "eni-1'); DROP TABLE flows; --"
        assert position == 0
        assert con.execute(
            "SELECT source_position, reason FROM quarantine WHERE source_file LIKE '%.parquet'"
        ).fetchall() == [(1, "no source or destination address (aws_vpc_flow)")]


def test_reingest_counts_duplicates_and_the_cli_reports_flows(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "t.duckdb"
    shutil.copy(db, copy)
    again = ingest_paths(copy, [FLOW_DATA], source_root=FLOW_DATA)
    assert (again.flows.ingested, again.flows.duplicates) == (0, 16)
    result = CliRunner().invoke(
        app, ["timeline", "ingest", str(FLOW_DATA / "azure"), "--db", str(tmp_path / "c.duckdb")]
    )
    assert result.exit_code == 0, result.output
    assert "6 flow records, 0 duplicate, 1 quarantined from 2 flow-log files" in result.output
