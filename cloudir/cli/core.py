"""Core commands: verify, key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudir.cli.apps import app
from cloudir.cli.common import console, err_console, progress_bar
from cloudir.cli.consoles import say
from cloudir.cli.rows import FormatOpt, RowFormat, print_rows
from cloudir.config import load_config
from cloudir.custody import VerifyResult
from cloudir.ops import investigate
from cloudir.signing import KEY_ENV, load_public_key, load_seal_signer
from cloudir.textsafe import esc

key_app = typer.Typer(
    help="The Ed25519 key that seals custody chains (kept outside every case).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(key_app, name="key")


@app.command()
def verify(  # noqa: PLR0917 - one parameter per CLI option
    case_dir: Annotated[Path, typer.Argument(help="Case folder holding custody.jsonl.")],
    expect_head: Annotated[
        str | None,
        typer.Option(help="A chain head printed earlier (full, or at least 16 hex digits): it must be in the chain."),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="PEM public key the seals must be signed with (default: the key recorded at creation)."),
    ] = None,
    tsa_cert: Annotated[
        Path | None,
        typer.Option(help="Certificate of the time-stamp authority the seal timestamps must be signed by."),
    ] = None,
    remote: Annotated[
        bool,
        typer.Option(help="Also compare the seal copies in the write-once seal store the chain names (needs access)."),
    ] = False,
    output: FormatOpt = RowFormat.table,
) -> None:
    """Check a case offline: every stored custody record and its link, the seals, and every artifact's SHA-256.

    Exit 0 only when the chain is intact, the newest seal covers all of it and is signed by the expected key,
    every recorded timestamp token matches its seal, and every recorded artifact matches (with --remote: and
    every stored seal copy agrees with the chain); else exit 1 with one line per problem.
    """
    trusted = load_public_key(public_key) if public_key is not None else None
    pinned_path = tsa_cert or load_config().tsa_cert
    pinned = None
    if pinned_path is not None:
        from cloudir.timestamp import load_certificate  # asn1crypto only when timestamps are checked

        pinned = load_certificate(pinned_path)
    request = investigate.VerifyRequest(case_dir, expect_head, trusted, remote, pinned)
    with progress_bar("verify: hashing artifacts") as on_progress:
        result = investigate.verify(
            request, on_wait=lambda message: err_console.print(esc(message), style="dim"), on_progress=on_progress
        )
    if output is not RowFormat.table:
        _verify_rows(result, output, case_dir)
        return
    for note in result.notes:
        err_console.print(f"[cyan]note:[/] {esc(note)}", soft_wrap=True)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {esc(warning)}", soft_wrap=True)
    if not result.ok:
        err_console.print(f"[bold red]BROKEN:[/] {esc(result.first_problem)}", soft_wrap=True)
        for problem in result.problems[1:]:
            err_console.print(f"  also: {esc(problem)}", soft_wrap=True)
        raise typer.Exit(1)
    say(console, f"[green]OK[/] {esc(_verified(result))}")


def _verified(result: VerifyResult) -> str:
    return (
        f"{result.records} custody records chained and sealed, {result.artifacts_checked} artifacts match; "
        f"head {result.head}; key {result.key}"
    )


def _verify_rows(result: VerifyResult, output: RowFormat, case_dir: Path) -> None:
    """The verdict as rows (level, message): every note, warning and problem, then ``ok`` or ``broken``; exit 1 when
    broken."""
    rows = [("note", note) for note in result.notes] + [("warning", warning) for warning in result.warnings]
    rows += [("problem", problem) for problem in result.problems]
    rows.append(("ok", _verified(result)) if result.ok else ("broken", result.first_problem or "not verified"))
    print_rows(["level", "message"], rows, output, title=f"verify {case_dir}")
    if not result.ok:
        raise typer.Exit(1)


@key_app.command("show")
def key_show(
    public_out: Annotated[
        Path | None, typer.Option(help="Also write the public key (PEM) here, for `verify --public-key`.")
    ] = None,
) -> None:
    """Print where the signing key is (a key file, or the KMS key configured), its fingerprint and public key.

    A key file is created on first use.
    """
    signer = load_seal_signer()
    console.print(
        f"signing key {esc(signer.location)}\nalgorithm {signer.algorithm}\nfingerprint {signer.fingerprint}",
        soft_wrap=True,
    )
    typer.echo(signer.public_pem(), nl=False)
    if public_out is not None:
        public_out.write_text(signer.public_pem(), encoding="utf-8")
        err_console.print(f"public key written to {esc(public_out)}")
    if signer.created:
        err_console.print(f"created now; set {KEY_ENV} to keep it elsewhere")
