"""README and docs/ stay true to the repository: every path they name exists, every `cifar10cnn …` command they
show parses with today's flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cifar10cnn.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# placeholders the pages use in commands, and a value of the right type for each
PLACEHOLDERS = {"s": "0", "S": "0", "$s": "0", "M": "5", "N": "1", "E": "5", "R": "64", "LR": "0.001", "PIXELS": "1",
                "MINUTES": "5", "PATH": "x.png", "URL": "http://127.0.0.1:8000"}
PATH_PREFIXES = ("src/", "benchmarks/", "docs/", "tests/", ".ci/")


def _links(page: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", page.read_text()) if "://" not in t]


def _named_paths(page: Path) -> list[str]:
    """Repository paths in backticks, e.g. `src/cifar10cnn/recipes.py`, `benchmarks/refactor_check.py`."""
    spans = re.findall(r"`([^`\n]+)`", page.read_text())
    return [s for s in spans if s.startswith(PATH_PREFIXES) and " " not in s and not any(c in s for c in "*<>…{")]


def _commands(page: Path) -> list[str]:
    """`cifar10cnn …` commands in code blocks and inline code (lines with an ellipsis are examples, skipped)."""
    text = page.read_text()
    found = re.findall(r"`(cifar10cnn [^`\n]+)`", text)
    in_block = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        line = re.sub(r"^\$ ", "", line.strip()).split("  #")[0].strip()
        if in_block and line.startswith("cifar10cnn "):
            found.append(line)
    # "…", "[--flag]" and "a | b" are prose; a bare `cifar10cnn report` names the command rather than runs it
    return [c for c in found if not any(m in c for m in ("…", "...", "|", "["))
            and len(c.split()) > 2]


def test_the_pages_are_found():
    assert len(PAGES) >= 6 and len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_linked_or_named_path_exists(page):
    missing = [t for t in _links(page) if not (page.parent / t).exists()]
    missing += [t for t in _named_paths(page) if not (ROOT / t.rstrip("/")).exists()]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_parses(page):
    parser = build_parser()
    bad = []
    for command in _commands(page):
        argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(command)[1:]]
        try:
            parser.parse_args(argv)
        except SystemExit:
            bad.append(command)
    assert not bad, f"{page.name} shows commands that do not parse: {bad}"


def test_the_command_reference_and_the_help_name_every_recipe(capsys, monkeypatch):
    from cifar10cnn.recipes import RECIPES

    listed = re.search(r"`--recipe ([a-z0-9|-]+)`", (ROOT / "docs" / "commands.md").read_text()).group(1)
    assert sorted(listed.split("|")) == sorted(RECIPES)
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: argparse wraps at hyphens ("fast-" / "muon")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    recipe_help = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("--recipe"))
    missing = [name for name in RECIPES if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", recipe_help)]
    assert not missing, f"`train --help` does not name {missing} under --recipe: {recipe_help}"


def test_the_command_check_catches_a_wrong_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--no-such-flag"])


def test_hardening_tables_are_generated_from_the_kept_file():
    """docs/hardening.md's before/after tables are exactly what the kept result file gives."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hostile_inputs", ROOT / "benchmarks" / "hostile_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kept = ROOT / "benchmarks" / "results" / "hardening" / "hostile_inputs.json"
    doc = (ROOT / "docs" / "hardening.md").read_text()
    block = doc.split(module.BEGIN, 1)[1].split(module.END, 1)[0]
    assert block.strip() == module.doc_tables(kept).strip()
