"""Settings every test shares."""

from pathlib import Path

import pytest

from cloudir.signing import load_signer

# The sandboxes' fixtures and network guard: registered here, not by the wheel, so other projects' runs never load them.
pytest_plugins = ["moto_fixtures.plugin"]


@pytest.fixture(autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test seals with its own key in a temporary folder, never the user's (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("signing") / "signing-key.pem"
    monkeypatch.setenv("CLOUDIR_SIGNING_KEY", str(path))
    load_signer(path)  # exists before the test, as on a responder's machine after first use
    return path
