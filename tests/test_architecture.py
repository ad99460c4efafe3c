"""docs/architecture.md, the developer's map, is checked against the code: every rule it names exists
and calls the command it names, that command's handler calls the function it names, the rule writes
through the layout functions it names, and every file it names exists. One page, read in five minutes."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path

import pytest

from arelbo.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "docs" / "architecture.md"
RULES = {path: path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk")}
ROW = re.compile(r"^\| `([\w<>/]+)` \| `([a-z0-9 -]+)` \| `([\w.]+)` \| (.+) \|$", re.M)


def _rows() -> list[tuple[str, str, str, list[str]]]:
    rows = [(rule, cmd, fn, re.findall(r"`(\w+)`", writes)) for rule, cmd, fn, writes in ROW.findall(MAP.read_text())]
    assert len(rows) >= 20
    return rows


def _rule_block(rule: str) -> str:
    """The text of a rule's definition: `rule NAME:` up to the next rule; for a template's rules
    (`name_<value>`), the anonymous `rule:` whose `name:` makes them."""
    for text in RULES.values():
        parts = re.split(r"\n(?=[ \t]*rule\b)", text)
        for i, part in enumerate(parts):
            header = re.match(r"\s*rule (\w+):", part)
            if "<" not in rule and header and header.group(1) == rule:
                return part
            if "<" in rule and re.match(r"\s*rule:", part) and "name:" in part:
                prefix = rule.split("<")[0]
                if re.search(rf"\b{prefix}|rule\((?:f\")?{prefix}", part) or _template_makes(part, prefix):
                    # with the template's set-up: the loop before it that builds its outputs
                    setup = re.split(r"\n(?=(?:for|if) )", parts[i - 1])[-1] if i else ""
                    return setup + part
    raise AssertionError(f"docs/architecture.md names rule {rule!r}, which no file of workflow/rules defines")


def _template_makes(part: str, prefix: str) -> bool:
    from arelbo.core import layout

    names = [layout.section3_group_rule(group) for group in layout.SECTION3_GROUPS]
    return "section3_group_rule" in part and all(name.startswith(prefix) for name in names)


def _handler(command: str):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command.split()[0]].get_default("func")


@pytest.mark.parametrize(("rule", "command", "function", "writes"), _rows(), ids=lambda v: str(v))
def test_each_row_of_the_map_is_the_code(rule, command, function, writes):
    block = _rule_block(rule)
    assert f"{{ARELBO}} {command}" in block, f"rule {rule} does not call `arelbo {command}`"
    module, name = function.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name)), function
    handler = inspect.getsource(_handler(command))
    assert re.search(rf"\b{name}\b", handler), f"`arelbo {command}` ({_handler(command).__name__}) does not call {name}"
    for layout_function in writes:
        assert f"layout.{layout_function}(" in block, f"rule {rule} does not write through layout.{layout_function}"


def test_every_rule_of_the_workflow_is_on_the_map():
    named = {rule for rule, *_ in _rows()}
    templates = [re.compile(re.sub(r"<\w+>", r"\\w+", r) + "$") for r in named if "<" in r]
    defined = {name for text in RULES.values() for name in re.findall(r"^\s*rule (\w+):", text, re.M)}
    unmapped = {r for r in defined - named if not any(t.match(r) for t in templates)}
    assert unmapped <= {"all", "resolved_config"}, f"rules missing from docs/architecture.md: {sorted(unmapped)}"


def test_every_file_the_map_names_exists_and_the_map_is_one_page():
    text = MAP.read_text()
    assert len(text.splitlines()) <= 150
    paths = {p for p in re.findall(r"`([\w./-]+/[\w.-]*)`", text) if not p.startswith(("http", "<"))}
    assert paths, "the map names no file"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    for name in re.findall(r"`(RULE_COSTS|PAPER_PROTOCOL_SIZES|check_model|GPU_SLOTS)`", text):
        assert any(name in path.read_text() for path in (REPO / "arelbo").rglob("*.py")) or any(
            name in t for t in RULES.values()
        ), name
