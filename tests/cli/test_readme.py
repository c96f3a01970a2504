"""The README and each command's --help agree: every command is in the README, and every command line in the README
runs the option names --help shows."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from cloudir.cli import app

README = Path(__file__).parents[2] / "README.md"
_INLINE = re.compile(r"(?<!`)`((?:uv run )?cloudir [^`|…]+)`(?!`)")


def _readme_commands(text: str) -> list[list[str]]:
    """Every ``cloudir …`` line of the README's shell blocks (continuations joined, comments dropped) and every
    inline ``cloudir …`` code span that names one command (no ``a|b`` alternatives, no ``…``)."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += _INLINE.findall(re.sub(r"```.*?```", "", text, flags=re.S))
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


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 15


def test_every_command_is_in_the_readme() -> None:
    assert not _missing_from(COMMANDS), f"commands --help lists that the README never shows: {_missing_from(COMMANDS)}"


def test_the_check_catches_a_command_the_readme_leaves_out() -> None:
    text = "```sh\ncloudir verify case\n```\nThen `cloudir key show` and `cloudir acquire|contain aws`."
    commands = _readme_commands(text)
    assert commands == [["verify", "case"], ["key", "show"]]
    missing = _missing_from(commands)
    assert "timeline query" in missing
    assert "verify" not in missing
    assert "key show" not in missing


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words[:3]))
def test_readme_command_uses_what_its_help_shows(words: list[str]) -> None:
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
