"""A symlink planted in an ingested folder, pointing at a credentials file, is skipped and never read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app

runner = CliRunner()
DATA = Path(__file__).parents[1] / "timeline" / "data"
TOKEN = "1//0gFAKE-refresh-token-do-not-store"


def _plant_credentials_link(folder: Path, outside: Path) -> Path:
    outside.mkdir()
    secret = outside / "application_default_credentials.json"
    secret.write_text(json.dumps({"type": "authorized_user", "client_id": "x", "refresh_token": TOKEN}))
    link = folder / "trail" / "credentials.json"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    return link


def _database_text(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return "".join(str(con.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables)


def _assert_skipped_not_read(output: str, db: Path, link: Path) -> None:
    assert "skipped:" in output
    assert "credentials.json" in output
    assert "outside" in output
    assert TOKEN not in _database_text(db)  # not in quarantine.raw, ingest_files or anywhere else
    assert TOKEN.encode() not in db.read_bytes()
    assert link.is_symlink()


def test_timeline_ingest_does_not_follow_a_link_out_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    shutil.copy(DATA / "cloudtrail_array.json", folder / "genuine.json")
    link = _plant_credentials_link(folder, tmp_path / "home")
    db = tmp_path / "t.duckdb"
    result = runner.invoke(app, ["timeline", "ingest", str(folder), "--db", str(db)])
    assert result.exit_code == 0, result.output
    _assert_skipped_not_read(result.output, db, link)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (2,)  # the genuine file's events


def test_timeline_build_does_not_follow_a_link_out_of_the_case(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    case.write_bytes("logs/aws/genuine.json", (DATA / "cloudtrail_array.json").read_bytes())
    case.close()
    link = _plant_credentials_link(case.root / "logs", tmp_path / "home")
    result = runner.invoke(app, ["timeline", "build", str(case.root)])
    assert result.exit_code == 0, result.output
    _assert_skipped_not_read(result.output, case.root / "timeline.duckdb", link)
