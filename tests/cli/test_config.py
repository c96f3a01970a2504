"""The configuration file and CLOUDIR_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudir.config import config_path, load_config
from cloudir.errors import CloudirError

TOML = """
[forensic]
aws = "111122223333"
gcp = "forensics-vault"

[roles.aws]
"444455556666" = "arn:aws:iam::444455556666:role/ir"
default = "cloudir-responder"

[signing]
key = "~/keys/custody.pem"
"""


def _write(base: Path, text: str) -> dict[str, str]:
    (base / "cloudir").mkdir(parents=True)
    (base / "cloudir" / "config.toml").write_text(text, encoding="utf-8")
    return {"XDG_CONFIG_HOME": str(base)}


def test_reads_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(_write(tmp_path, TOML))
    assert config.path == tmp_path / "cloudir" / "config.toml"
    assert config.forensic_for("aws") == "111122223333"
    assert config.forensic_for("azure") is None
    assert config.role_for("aws", "444455556666") == "arn:aws:iam::444455556666:role/ir"
    assert config.role_for("aws", "999999999999") == "cloudir-responder"
    assert config.role_for("gcp", "p") is None
    assert config.signing_key == tmp_path / "home" / "keys" / "custody.pem"


def test_default_location_is_home_config(tmp_path: Path) -> None:
    assert config_path({}) == Path.home() / ".config" / "cloudir" / "config.toml"
    assert load_config({"XDG_CONFIG_HOME": str(tmp_path)}).path is None


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = _write(tmp_path, TOML) | {
        "CLOUDIR_FORENSIC_AWS": "222233334444",
        "CLOUDIR_ROLE_GCP": "ir@vault.iam.gserviceaccount.com",
        "CLOUDIR_SIGNING_KEY": str(tmp_path / "k.pem"),
    }
    config = load_config(env)
    assert config.forensic_for("aws") == "222233334444"
    assert config.forensic_for("gcp") == "forensics-vault"
    assert config.role_for("gcp", "any") == "ir@vault.iam.gserviceaccount.com"
    assert config.signing_key == tmp_path / "k.pem"


def test_cloudir_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('[forensic]\nazure = "sub-1"\n', encoding="utf-8")
    assert load_config({"CLOUDIR_CONFIG": str(path)}).forensic_for("azure") == "sub-1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[forensic\n", "cannot read"),
        ("[forensics]\naws = '1'\n", "unknown section"),
        ("[forensic]\nalibaba = '1'\n", "unknown key 'alibaba'"),
        ("[forensic]\naws = 1111\n", "must be a non-empty string"),
        ("[roles]\naws = 'x'\n", "[roles.aws]"),
        ("[roles.oci]\ndefault = 'x'\n", "[roles.aws]"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CloudirError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(_write(tmp_path, text))
