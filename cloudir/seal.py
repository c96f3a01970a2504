"""Seals: signed statements "this case's custody chain had N records ending in head H at time T".

One seal is appended to ``CASE/seals.jsonl`` after every custody record, signed with the key
kept outside the case (:mod:`cloudir.signing`). Each seal carries its public key, so verification is
offline; which key to trust comes from ``--public-key`` or the fingerprint recorded at case creation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudir.durable import append_line, canonical_json
from cloudir.signing import ALGORITHM, ALGORITHMS, SealSigner, fingerprint, signature_valid

SEALS_FILE = "seals.jsonl"


@dataclass(frozen=True)
class Seal:
    """One signed seal of a chain head."""

    case_id: str
    records: int
    head: str
    time: str
    key: str  # fingerprint of public_key
    public_key: str  # hex: raw Ed25519 public key, or DER SubjectPublicKeyInfo (KMS keys)
    signature: str  # hex, over the canonical JSON of every other field
    algorithm: str = ALGORITHM

    def payload(self) -> bytes:
        """The bytes the signature covers."""
        body = {name: value for name, value in asdict(self).items() if name != "signature"}
        return canonical_json(body)

    def problem(self) -> str | None:
        """Why the seal is not a valid signature by the key it names, or None."""
        try:
            public_raw = bytes.fromhex(self.public_key)
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return "its key or signature is not hex"
        if self.algorithm not in ALGORITHMS:
            return f"its algorithm is not one cloudir signs with ({', '.join(ALGORITHMS)})"
        if fingerprint(public_raw) != self.key:
            return "its key does not match the fingerprint it names"
        if not signature_valid(self.algorithm, public_raw, signature, self.payload()):
            return "its signature does not match its content (the seal was altered or forged)"
        return None


def make_seal(signer: SealSigner, *, case_id: str, records: int, head: str, time: str) -> Seal:
    """Sign the chain head."""
    unsigned = Seal(
        case_id, records, head, time, signer.fingerprint, signer.public_raw.hex(), "", algorithm=signer.algorithm
    )
    return Seal(**{**asdict(unsigned), "signature": signer.sign(unsigned.payload()).hex()})


def append_seal(case_root: Path, seal: Seal) -> None:
    """Append a seal to the case durably."""
    append_line(case_root / SEALS_FILE, canonical_json(asdict(seal)) + b"\n")


def parse_seal(line: bytes) -> Seal:
    """A seal from its stored line; ``ValueError`` when it is not one."""
    try:
        data: Any = json.loads(line)
        seal = Seal(**data)
    except (TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    text_fields = (seal.case_id, seal.head, seal.time, seal.key, seal.public_key, seal.signature, seal.algorithm)
    if not all(isinstance(value, str) for value in text_fields) or type(seal.records) is not int:
        raise ValueError("a field has the wrong type")
    return seal
