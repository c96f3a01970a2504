"""The README, docs/*.md and each command's --help agree: every command is in the README, and every command line in
the README and the docs runs the option names --help shows."""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from cloudir.cli import app

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
_INLINE = re.compile(r"(?<!`)`((?:uv run )?cloudir [^`]+)`(?!`)")
_COMMAND_LINE = re.compile(r"^(?:\$ )?((?:uv run )?cloudir .*)$", re.M)


def _alternatives(line: str) -> list[str]:
    """Each command an inline span stands for: ``acquire aws|azure`` is ``acquire aws`` and ``acquire azure``."""
    choices = [word.split("|") for word in line.split()]
    return [" ".join(words) for words in itertools.product(*choices)]


def _readme_commands(text: str) -> list[list[str]]:
    """Every ``cloudir …`` line of the code blocks (continuations joined, comments and ``$ `` prompts dropped) and
    every inline ``cloudir …`` code span, each ``a|b`` alternative on its own (``…`` stands for a value)."""
    lines: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines += _COMMAND_LINE.findall(block.replace("\\\n", " "))
    for span in _INLINE.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
        lines += _alternatives(span)
    commands: list[list[str]] = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:2] == ["uv", "run"]:
            words = words[2:]
        if words[:1] == ["cloudir"]:
            commands.append(words[1:])
    return commands


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    command: Any = typer.main.get_command(app)
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def _shown_options(command: Any) -> set[str]:
    return {opt for param in command.params if not getattr(param, "hidden", False) for opt in param.opts}


def _leaf_commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The name path of every command --help lists (hidden ones left out)."""
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _leaf_commands(sub, (*path, name)) if hasattr(sub, "commands") else [(*path, name)]


def _missing_from(commands: list[list[str]]) -> list[str]:
    shown = {tuple(words[: len(words) - len(_resolve(words)[1])]) for words in commands}
    return [" ".join(leaf) for leaf in _leaf_commands(typer.main.get_command(app)) if leaf not in shown]


COMMANDS = _readme_commands(README.read_text(encoding="utf-8"))
DOC_COMMANDS = [(doc.name, words) for doc in DOCS for words in _readme_commands(doc.read_text(encoding="utf-8"))]


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 15


def test_every_command_is_in_the_readme() -> None:
    assert not _missing_from(COMMANDS), f"commands --help lists that the README never shows: {_missing_from(COMMANDS)}"


def test_the_docs_show_commands() -> None:
    assert {name for name, _words in DOC_COMMANDS} >= {"analyzers.md", "azure.md", "flows.md", "timeline.md"}


def test_the_check_catches_a_command_the_readme_leaves_out() -> None:
    text = "```sh\ncloudir verify case\n```\nThen `cloudir key show` and `cloudir acquire|contain aws --dry-run`."
    commands = _readme_commands(text)
    assert commands == [
        ["verify", "case"],
        ["key", "show"],
        ["acquire", "aws", "--dry-run"],
        ["contain", "aws", "--dry-run"],
    ]
    missing = _missing_from(commands)
    assert "timeline query" in missing
    assert "verify" not in missing
    assert "key show" not in missing


def test_the_check_reads_console_blocks_and_each_alternative() -> None:
    text = "```console\n$ cloudir analyze db \\\n  --min-score 40\n```\nor `cloudir contain\nazure|gcp --principal …`."
    assert _readme_commands(text) == [
        ["analyze", "db", "--min-score", "40"],
        ["contain", "azure", "--principal", "…"],
        ["contain", "gcp", "--principal", "…"],
    ]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words[:3]))
def test_readme_command_uses_what_its_help_shows(words: list[str]) -> None:
    _assert_help_shows(words)


@pytest.mark.parametrize(
    "words", [pytest.param(words, id=f"{doc}: {' '.join(words[:3])}") for doc, words in DOC_COMMANDS]
)
def test_docs_command_uses_what_its_help_shows(words: list[str]) -> None:
    _assert_help_shows(words)


def _assert_help_shows(words: list[str]) -> None:
    command, rest = _resolve(words)
    if hasattr(command, "commands"):  # only a group's own options, e.g. ``cloudir --version``
        assert rest[:1], f"no command {' '.join(words[:2])!r}"
        assert rest[0].startswith("--"), f"no command {' '.join(words[:2])!r}"
    used = {word.split("=")[0] for word in rest if word.startswith("--")}
    shown = _shown_options(command) | {"--help"}
    assert used <= shown, f"not in --help of {command.name}: {used - shown}"


def test_the_check_catches_an_option_the_help_does_not_show() -> None:
    command, _rest = _resolve(["acquire", "aws", "--forensic-account", "1"])
    assert "--forensic-account" not in _shown_options(command)
    assert "--forensic" in _shown_options(command)
