"""Every shell command the user-facing documents show still works, in a cheap form.

The commands are the lines of the fenced blocks marked as shell (```bash, ```sh, ```shell,
```console) in README.md, CONTRIBUTING.md and docs/*.md. Each is run in a form that checks it without
doing its work: Snakemake as a dry run (`-n`, which writes nothing), `make` as `make -n`, `arelbo`
through its own argument parser (and the files it names must exist), pytest as `--collect-only`, a
script by its syntax. A command whose program is none of these fails the test until it is given a
cheap form here: no document gains a command nobody checks.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.M | re.S)


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line of the documents' shell blocks: continuation lines
    joined, comments and blank lines left out."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for block in SHELL_BLOCK.finditer(text):
            first_line = text[: block.start()].count("\n") + 2
            for offset, line in enumerate(block.group(1).replace("\\\n", " ").splitlines()):
                command = line.split(" #")[0].strip()  # a trailing comment
                if command and not command.startswith("#"):
                    found.append((f"{document.relative_to(REPO)}:{first_line + offset}", command))
    return found


def _split(command: str) -> tuple[dict[str, str], list[str]]:
    """Leading VAR=value assignments (the command's environment) and the argument vector."""
    words = shlex.split(command)
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _program(word: str) -> str:
    return word.removeprefix(".venv/bin/")


# The documents' stand-in for the user's own overlay: checked as an empty one.
USER_OVERLAY = re.compile(r"^my[\w-]*\.yaml$")


def _with_user_overlays(args: list[str], folder: Path) -> list[str]:
    empty = folder / "empty-overlay.yaml"
    empty.write_text("{}\n")
    return [str(empty) if USER_OVERLAY.match(a) and not (REPO / a).exists() else a for a in args]


def check_snakemake(env, args, tmp_path):
    args = _with_user_overlays(args, tmp_path)
    dry = ["-n", *args] if "-n" not in args and "--dry-run" not in args else list(args)
    result = _run([sys.executable, "-m", "snakemake", *dry], env)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-1500:]


def check_make(env, args, tmp_path):
    assignments = [f"{k}={v}" for k, v in env.items()]
    result = _run(["make", "-n", *args, *assignments])
    assert result.returncode == 0, result.stderr[-2000:]


def check_arelbo(env, args, tmp_path):
    from arelbo import cli

    parser = cli.build_parser()
    try:
        parsed = parser.parse_args(_with_user_overlays(args, tmp_path))
    except SystemExit as exit_:  # argparse's usage error
        pytest.fail(f"arelbo {' '.join(args)}: the parser refuses it (exit {exit_.code})")
    for path in parsed.config or []:
        assert (REPO / path).is_file(), f"the config file {path} does not exist"


def check_python(env, args, tmp_path):
    if args[:2] == ["-m", "pytest"]:
        result = _run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", *args[2:]], env)
        assert result.returncode == 0, result.stdout[-2000:]
        assert re.search(r"\d+ tests? collected|\d+/\d+ tests collected", result.stdout), result.stdout[-500:]
    else:
        script = REPO / args[0]
        assert script.is_file(), f"no script {args[0]}"
        compile(script.read_text(), str(script), "exec")


def check_pip(env, args, tmp_path):
    # `pip install -e PATH`: an installable project is there (installing it is the command's work)
    assert args[:2] == ["install", "-e"], args
    assert (REPO / args[2] / "pyproject.toml").is_file(), f"{args[2]} has no pyproject.toml"


def check_script(env, args, tmp_path):
    # `sudo .ci/slurm/start.sh`: root work; its syntax is what a document can break
    script = REPO / args[0]
    assert script.is_file(), f"no script {args[0]}"
    result = _run(["bash", "-n", str(script)])
    assert result.returncode == 0, result.stderr


def check_bash(env, args, tmp_path):
    # `bash gpu/check.sh rehearse`: the script parses and takes that step (its case of the dispatch)
    check_script(env, args[:1], tmp_path)
    if len(args) > 1:
        assert re.search(rf"^\s*{re.escape(args[1])}\)", (REPO / args[0]).read_text(), re.M), (
            f"{args[0]} has no step {args[1]!r}"
        )


CHECKS = {
    "snakemake": check_snakemake,
    "make": check_make,
    "arelbo": check_arelbo,
    "python": check_python,
    "pip": check_pip,
    "sudo": check_script,
    "bash": check_bash,
}


@pytest.mark.parametrize(("where", "command"), documented_commands(), ids=lambda value: value)
def test_every_documented_command_still_works(where, command, tmp_path):
    env, words = _split(command)
    program = _program(words[0])
    assert program in CHECKS, f"{where}: no cheap form for `{program}` in tests/test_docs_commands.py: add one"
    CHECKS[program](env, words[1:], tmp_path)


def test_the_documents_show_commands_and_the_collector_finds_them():
    commands = [command for _, command in documented_commands()]
    assert any(c.startswith("make quick") for c in commands) and any(c.startswith("make test") for c in commands)
    assert sum("snakemake" in c for c in commands) >= 10
