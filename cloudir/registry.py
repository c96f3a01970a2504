"""The registry: the one way cloudir reaches provider adapters and demo sandboxes, through entry points.

Group ``cloudir.providers``: one entry per cloud naming a module with ``create_provider(**config)``,
``OFFLINE_CONFIG``, ``credentials_found(**config)``, and ``trigger_config`` / ``offline_trigger_config`` (a
finding's adapter settings, live and offline). Group ``cloudir.sandboxes``: the entry ``demo`` names a
:class:`~cloudir.sandbox.SandboxHook` (fake credentials, then one sandboxed cloud at a time). Group
``cloudir.seal_stores``: one entry per URL scheme (``s3``) naming a :class:`~cloudir.sealstore.SealStore` class.
Group ``cloudir.notifiers``: ``aws`` names the class cloudir.notify publishes to SNS and reads secrets with.
Group ``cloudir.seal_signers``: one entry per key service (``aws-kms``) naming a class built from a key id.
cloudir's own entries are declared in its ``pyproject.toml``; an installed package can declare its own the same way.
Each cloud's SDKs come with an extra (``cloudir[aws]``, ``cloudir[azure]``, ``cloudir[gcp]``, the sandboxes with
``cloudir[demo]``): an entry whose packages are missing is a one-line error naming the extra to install.
Nothing under ``cloudir/`` imports ``providers`` or ``moto_fixtures`` (tests/core/test_boundaries.py checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from cloudir.errors import CloudirError

if TYPE_CHECKING:
    from cloudir.sandbox import SandboxHook

PROVIDERS = "cloudir.providers"
SANDBOXES = "cloudir.sandboxes"
SEAL_STORES = "cloudir.seal_stores"
NOTIFIERS = "cloudir.notifiers"
SEAL_SIGNERS = "cloudir.seal_signers"
_PROJECT_PACKAGES = frozenset({"cloudir", "providers", "moto_fixtures"})


def _extra_of(module: str) -> str | None:
    """The cloudir extra that installs what the entry module ``module`` imports (None: not one of cloudir's)."""
    package, _, rest = module.partition(".")
    if package == "moto_fixtures":
        return "demo"
    return rest.partition(".")[0] if package == "providers" else None


def _load(group: str, name: str) -> Any:
    from importlib.metadata import entry_points

    for entry in entry_points(group=group, name=name):
        try:
            return entry.load()
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] in _PROJECT_PACKAGES:
                raise  # a module of cloudir itself: a broken install or a bug, not a missing extra
            extra = _extra_of(entry.module)
            raise CloudirError(
                f"{name!r} ({group}) needs the Python package {exc.name!r}, which is not installed",
                hint=f"install cloudir[{extra}]" if extra else f"install the package that provides {entry.value}",
            ) from None
    raise CloudirError(
        f"nothing is registered as {name!r} in the entry-point group {group}",
        hint="reinstall cloudir (uv sync) or the package that provides it",
    )


def registered(group: str) -> list[str]:
    """The names registered in ``group``, sorted."""
    from importlib.metadata import entry_points

    return sorted({entry.name for entry in entry_points(group=group)})


def provider_module(cloud: str) -> Any:
    """The adapter module registered for ``cloud``."""
    return _load(PROVIDERS, cloud)


def demo_sandboxes() -> SandboxHook:
    """The sandboxes the demo runs on."""
    return cast("SandboxHook", _load(SANDBOXES, "demo"))


def seal_store_class(scheme: str) -> Any:
    """The seal store class registered for URLs ``scheme://...``."""
    return _load(SEAL_STORES, scheme)


def notifier_class(cloud: str) -> Any:
    """The class that publishes notifications and reads secrets on ``cloud`` (cloudir.notify)."""
    return _load(NOTIFIERS, cloud)


def seal_signer_class(service: str) -> Any:
    """The class that signs seals with a key held by ``service`` (``aws-kms``)."""
    return _load(SEAL_SIGNERS, service)
