"""The README and each command's --help agree: every command line in the README runs the option names --help shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from cloudir.cli import app

README = Path(__file__).parents[2] / "README.md"


def _readme_commands() -> list[list[str]]:
    """Every ``cloudir …`` line of the README's shell blocks, continuations joined, comments dropped."""
    commands: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
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


COMMANDS = _readme_commands()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words[:3]))
def test_readme_command_uses_what_its_help_shows(words: list[str]) -> None:
    command, rest = _resolve(words)
    assert not hasattr(command, "commands"), f"no command {' '.join(words[:2])!r}"
    used = {word.split("=")[0] for word in rest if word.startswith("--")}
    assert used <= _shown_options(command), f"not in --help of {command.name}: {used - _shown_options(command)}"


def test_the_check_catches_an_option_the_help_does_not_show() -> None:
    command, _rest = _resolve(["acquire", "aws", "--forensic-account", "1"])
    assert "--forensic-account" not in _shown_options(command)
    assert "--forensic" in _shown_options(command)
