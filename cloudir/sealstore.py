"""Write-once copies of seals in the forensic account: what a rewrite of the whole case folder cannot undo.

With a seal store configured (``[seals] store`` in the configuration file or ``CLOUDIR_SEAL_STORE``), every
command that appended to a case ends by copying its newest seal, byte for byte, to
``<store>/<case id>/seals/<records>-<head>.json`` under a retention no one can shorten: S3 Object Lock in
COMPLIANCE mode (``s3://``), an Azure blob version under a Locked immutability policy (``azblob://``) or
an object in a GCS bucket whose retention policy is locked (``gs://``). The upload is a cloud call, so it is
recorded too, in a ``seal.store`` record that the local seal after it covers and that the next command's stored
seal covers in turn.

``cloudir verify --remote`` reads every stored copy back and checks each against the local chain: a
stored seal the local chain does not hold means local records were removed or rewritten after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cloudir.config import load_config
from cloudir.errors import CloudirError
from cloudir.registry import SEAL_STORES, registered, seal_store_class
from cloudir.seal import SEALS_FILE, Seal, parse_seal
from cloudir.textsafe import visible

if TYPE_CHECKING:
    from pathlib import Path

    from cloudir.case import Case
    from cloudir.custody import VerifyResult

STORE_ACTION = "seal.store"
TIMESTAMP_ACTION = "seal.timestamp"  # cloudir.timestamp: the RFC 3161 token of a seal
SUPPORTED = (
    "s3://BUCKET[/PREFIX] (S3 Object Lock, COMPLIANCE mode), azblob://ACCOUNT/CONTAINER[/PREFIX] (version-level "
    "immutability, Locked), gs://BUCKET[/PREFIX] (locked retention policy)"
)
WRITE_ONCE_MODE = "COMPLIANCE"  # the S3 Object Lock mode no one can shorten


@dataclass(frozen=True)
class StoredCopy:
    """One stored seal object (one version of it) as the store returns it."""

    name: str
    version: str | None
    data: bytes
    mode: str | None  # retention mode the store reports for this version
    retain_until: datetime | None


class SealStore(Protocol):
    """A write-once place for seal copies (one implementation per cloud)."""

    url: str
    write_once_mode: str  # the retention mode a stored copy must report (``StoredCopy.mode``)

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store ``data`` once under ``name`` with a retention that cannot be shortened; the details to record."""

    def copies(self, prefix: str) -> Iterator[StoredCopy]:
        """Every stored version of every object under ``prefix``."""


def open_store(url: str, *, retain_days: int, case: Case | None = None) -> SealStore:
    """The store a URL names; its calls are recorded into ``case`` when given."""
    scheme = url.partition("://")[0]
    if "://" in url and scheme in registered(SEAL_STORES):
        store: SealStore = seal_store_class(scheme)(url, retain_days=retain_days, case=case)
        return store
    raise CloudirError(
        f"seal store {visible(url)} is not supported",
        hint=f"supported: {SUPPORTED}",
    )


def seal_prefix(case_id: str) -> str:
    """Where a case's seal copies live inside a store (relative to the store's own prefix)."""
    from cloudir.case import safe_name

    return f"{safe_name(case_id)}/seals/"


def store_latest_seal(case: Case) -> str | None:
    """Copy the case's newest seal to the configured store and record it; the store URL, or None when none."""
    config = load_config()
    if config.seal_store is None:
        return None
    lines = (case.root / SEALS_FILE).read_bytes().splitlines()
    line = lines[-1]
    seal = parse_seal(line)
    name = f"{seal_prefix(case.case_id)}{seal.records:08d}-{seal.head}.json"
    with case.action(STORE_ACTION, target=config.seal_store) as act:
        act.details |= {
            "store": config.seal_store,
            "object": name,
            "seal_records": seal.records,
            "seal_head": seal.head,
            "seal_sha256": hashlib.sha256(line).hexdigest(),
        }
        store = open_store(config.seal_store, retain_days=config.seal_retain_days, case=case)
        act.details |= store.put(name, line)
    return config.seal_store


@dataclass
class _Recorded:
    """What the chain says was stored: the ``seal.store`` records that succeeded."""

    seq: int
    store: str
    name: str
    version: str | None
    seal_records: int


def stored_records(records: list[tuple[int, dict[str, Any]]]) -> list[_Recorded]:
    """The successful ``seal.store`` records among (seq, record) pairs."""
    found = []
    for seq, record in records:
        details = record.get("details")
        if record.get("action") != STORE_ACTION or record.get("outcome") != "ok" or not isinstance(details, dict):
            continue
        store, name, count = details.get("store"), details.get("object"), details.get("seal_records")
        version = details.get("version")
        if isinstance(store, str) and isinstance(name, str) and type(count) is int:
            found.append(_Recorded(seq, store, name, version if isinstance(version, str) else None, count))
    return found


def local_seal_lines(case_dir: Path) -> dict[int, bytes]:
    """The stored line of each local seal, by the record count it covers."""
    path = case_dir / SEALS_FILE
    lines = path.read_bytes().splitlines() if path.is_file() and not path.is_symlink() else []
    by_count: dict[int, bytes] = {}
    for line in lines:
        try:
            by_count[parse_seal(line).records] = line
        except ValueError:
            continue
    return by_count


def check_stored_seals(
    case_dir: Path,
    case_id: str,
    heads: list[str],
    recorded: list[_Recorded],
    *,
    trusted: str | None,
    result: VerifyResult,
) -> None:
    """Compare every stored seal copy with the local chain and seals (``cloudir verify --remote``)."""
    if not recorded:
        result.problems.append("--remote: this case records no stored seal (no seal store was configured)")
        return
    config = load_config()
    local = local_seal_lines(case_dir)
    for url in sorted({entry.store for entry in recorded}):
        try:
            store = open_store(url, retain_days=config.seal_retain_days)
            copies = {(copy.name, copy.version): copy for copy in store.copies(seal_prefix(case_id))}
        except CloudirError as exc:
            result.problems.append(f"stored seals in {visible(url)} cannot be read: {visible(str(exc))}")
            continue
        for copy in copies.values():
            problem = _copy_problem(copy, case_id, heads, trusted, store.write_once_mode)
            if problem is not None:
                result.problems.append(f"stored seal {visible(copy.name)} in {visible(url)}: {problem}")
        for entry in (entry for entry in recorded if entry.store == url):
            stored = copies.get((entry.name, entry.version))
            if stored is None:
                result.problems.append(
                    f"record {entry.seq} stored seal {entry.seal_records} as {visible(entry.name)} in {visible(url)}, "
                    "which the store does not hold"
                )
            elif local.get(entry.seal_records) != stored.data:
                result.problems.append(
                    f"local seal of record {entry.seal_records} differs from its stored copy {visible(stored.name)} "
                    "(the local seals were rewritten)"
                )
        newest = max((entry.seal_records for entry in recorded if entry.store == url), default=0)
        result.notes.append(
            f"{len(copies)} stored seal(s) in {visible(url)} compared; the newest covers record {newest} of "
            f"{len(heads)} (later records, from its own upload record on, are covered by the local seals only)"
        )


def _copy_problem(copy: StoredCopy, case_id: str, heads: list[str], trusted: str | None, mode: str) -> str | None:
    """Why one stored copy contradicts the local chain, or None."""
    try:
        seal: Seal = parse_seal(copy.data)
    except ValueError:
        return "is not a seal"
    invalid = seal.problem()
    if invalid is not None:
        return invalid
    if seal.case_id != case_id or (trusted is not None and seal.key != trusted):
        return f"is signed by {visible(seal.key)} for case {visible(seal.case_id)}, not this case's key"
    if seal.records > len(heads):
        return (
            f"covers {seal.records} records but the local chain holds {len(heads)}: "
            "records were removed from the local chain after it was stored"
        )
    if seal.records < 1 or heads[seal.records - 1] != seal.head:
        return f"names head {visible(seal.head)} for record {seal.records}: the local chain was rewritten after it"
    if copy.mode != mode:
        return f"is not under {mode} retention (mode {visible(copy.mode)}): it could be deleted"
    return None
