"""Every `lading …` command the READMEs show works as written from a fresh clone: the README says
how `lading` gets on PATH before it first uses it, that way does put it there, and every command in
a shell block parses with the real command line (argparse, without running it)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import _parser
from tests.packaging.conftest import REPO_ROOT

READMES = [REPO_ROOT / "README.md", REPO_ROOT / "k8s" / "README.md", REPO_ROOT / "deploy" / "README.md"]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
# What the README tells a new user to do before the first `lading` command.
GETS_LADING_ON_PATH = re.compile(r"^\s*(\.|source)\s+\.venv/bin/activate\b")
COMMAND_SEPARATORS = {"&&", "||", ";", "|"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


def shell_lines(readme: Path) -> list[tuple[int, str]]:
    """(line number, command) of every line in the README's shell code blocks; backslash
    continuations are joined. In a `console` block only the lines after a `$ ` prompt are
    commands (the others are their output)."""
    lines: list[tuple[int, str]] = []
    language: str | None = None
    pending = ""
    start = 0
    for number, line in enumerate(readme.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language not in SHELL_LANGUAGES:
            continue
        if language == "console" and not pending:
            prompt = re.match(r"^\s*\$\s+", line)
            if prompt is None:
                continue  # output
            line = line[prompt.end():]
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def lading_invocations(command_line: str) -> list[list[str]]:
    """The argument lists of each `lading` command on a shell line: as a command (after any
    VAR=value assignments) or after `--` (`kubectl exec … -- lading …`)."""
    tokens = shlex.split(command_line, comments=True)
    found = []
    command: list[str] = []
    for token in [*tokens, ";"]:
        if token not in COMMAND_SEPARATORS:
            command.append(token)
            continue
        words = command
        while words and ASSIGNMENT.fullmatch(words[0]):
            words = words[1:]
        if words[:1] == ["lading"]:
            found.append(words[1:])
        elif "--" in words and words[words.index("--") + 1 : words.index("--") + 2] == ["lading"]:
            found.append(words[words.index("--") + 2 :])
        command = []
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for readme in READMES:
        for number, line in shell_lines(readme):
            for args in lading_invocations(line):
                commands.append((f"{readme.relative_to(REPO_ROOT)}:{number}", args))
    return commands


def readmes_using_lading() -> list[Path]:
    return [readme for readme in READMES if any(lading_invocations(line) for _, line in shell_lines(readme))]


def test_the_readmes_show_lading_commands() -> None:
    """Guards the guard: the extraction finds the commands (a broken parser would find none)."""
    assert {"README.md", "k8s/README.md"} <= {p.relative_to(REPO_ROOT).as_posix() for p in readmes_using_lading()}


@pytest.mark.parametrize(
    ("place", "args"),
    [pytest.param(place, args, id=f"{place} lading {shlex.join(args)}") for place, args in documented_commands()],
)
def test_every_documented_lading_command_parses(place: str, args: list[str]) -> None:
    parser = _parser()
    try:
        parser.parse_args(args)
    except SystemExit as exit_:
        # --help and --version exit 0; a wrong command or option exits 2 after printing why.
        assert exit_.code == 0, f"{place}: `lading {shlex.join(args)}` does not parse"


@pytest.mark.parametrize("readme", readmes_using_lading(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_readme_says_how_lading_gets_on_path_before_using_it(readme: Path) -> None:
    first_use = next(n for n, line in shell_lines(readme) if lading_invocations(line))
    text = readme.read_text().splitlines()[: first_use - 1]
    told = [line for line in text if GETS_LADING_ON_PATH.search(line)]
    # The other READMEs may point at the top-level one, which shows it.
    pointer = readme != READMES[0] and any("README.md" in line and "PATH" in line for line in text)
    assert told or pointer, f"{readme.name}:{first_use} uses `lading` before saying how to get it on PATH"


def test_activating_the_virtual_environment_puts_lading_on_path() -> None:
    """The README's way, in this checkout's .venv (the one `make run` and `make test` create)."""
    venv = REPO_ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip(f"the tests run in {sys.prefix}, not in {venv}")
    result = subprocess.run(["bash", "-c", ". .venv/bin/activate && command -v lading && lading --version"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(venv / "bin" / "lading")
