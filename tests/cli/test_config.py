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


ROUTING = """
[forensic]
aws = "111122223333"

[forensic.azure]
"6f1c2a9e-3b7d-4c1e-9a55-1d2b3c4d5e6f" = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
default = "00000000-0000-0000-0000-00000000050c"

[forensic.gcp]
victim-prod = "forensics-vault"

[roles.aws]
"444455556666" = { role = "cloudir-responder", external_id = "IR-4444" }
"111122223333" = { role = "arn:aws:iam::111122223333:role/cloudir-forensic", external_id = "IR-vault" }
default = "cloudir-responder"
"""


def test_accounts_map_to_roles_external_ids_and_forensic_destinations(tmp_path: Path) -> None:
    from providers import aws, azure, gcp

    config = load_config(_write(tmp_path, ROUTING))
    assert config.role_for("aws", "444455556666") == "cloudir-responder"
    assert config.external_id_for("aws", "444455556666") == "IR-4444"
    assert config.external_id_for("aws", "999999999999") is None  # the default entry has none
    assert aws.trigger_config("444455556666", "eu-west-1", config) == {
        "region": "eu-west-1",
        "role_arn": "arn:aws:iam::444455556666:role/cloudir-responder",
        "external_id": "IR-4444",
        "forensic_role_arn": "arn:aws:iam::111122223333:role/cloudir-forensic",
        "forensic_external_id": "IR-vault",
    }
    subscription = "6f1c2a9e-3b7d-4c1e-9a55-1d2b3c4d5e6f"
    assert azure.trigger_config(subscription, None, config)["soc_subscription"].startswith("9a8b7c6d")
    assert azure.trigger_config("other", None, config)["soc_subscription"].endswith("050c")  # the default
    assert gcp.trigger_config("victim-prod", None, config) == {"forensic_project": "forensics-vault"}
    assert gcp.trigger_config("elsewhere", None, config) == {}  # the tool's own project, never the finding's


def test_a_finding_picks_the_subscription_or_project_to_act_in_only_from_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers import azure, gcp

    own, listed = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    config = load_config(_write(tmp_path, f'[accounts]\nazure = ["{own}", "{listed}"]\ngcp = ["prod-2"]\n'))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", own)
    assert azure.trigger_config(listed, None, config) == {"subscription_id": listed}
    assert azure.trigger_config("33333333-3333-4333-8333-333333333333", None, config) == {"subscription_id": own}
    assert gcp.trigger_config("prod-2", None, config) == {"project": "prod-2"}
    assert gcp.trigger_config("attacker-project", None, config) == {}
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID")
    assert azure.trigger_config("33333333-3333-4333-8333-333333333333", None, load_config({})) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[roles.aws]\n"1" = { role = "r", externalid = "x" }\n', "unknown key 'externalid'"),
        ('[roles.aws]\n"1" = { external_id = "x" }\n', "must be a role"),
        ("[forensic.azure]\ndefault = 5\n", "must be a non-empty string"),
    ],
)
def test_bad_routing_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CloudirError, match=message):
        load_config(_write(tmp_path, text))
