"""Dependencies point one way: core, then connectors, then streams, then the development
tooling, then the benchmarks. Every import statement of the tree is read with `ast` (lazy
imports inside functions and TYPE_CHECKING blocks included) and checked against that order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Folder of the tree -> the import package it is installed as (pyproject's package-dir).
FOLDERS = {
    "mailstream": "mailstream",
    "connectors": "mailstream.connectors",
    "streams": "mailstream.streams",
    "schemas": "mailstream.schemas",
    "bench": "bench",
}

# Lower ranks may be imported by higher ones, never the reverse.
LAYERS = (
    ("mailstream.schemas", 0),
    ("mailstream.connectors", 2),
    ("mailstream.streams", 3),
    ("mailstream.dev", 4),
    ("bench", 5),
    ("mailstream", 1),  # the core: everything of mailstream not named above
)

# The command line names the modules of every layer (as strings, imported on use).
COMPOSITION_ROOTS = {"mailstream.cli", "mailstream.__main__"}


def rank(module: str) -> int | None:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    parts[0] = FOLDERS[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")
                if path.name != "__init__.py":
                    package.pop()
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def source_files() -> list[Path]:
    return sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))


def test_the_tree_has_the_layers_it_claims() -> None:
    modules = {module_name(path) for path in source_files()}
    for prefix, _ in LAYERS:
        assert any(m == prefix or m.startswith(prefix + ".") for m in modules), prefix


@pytest.mark.parametrize("path", source_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_point_down_the_layers(path: Path) -> None:
    module = module_name(path)
    if module in COMPOSITION_ROOTS:
        return
    own = rank(module)
    assert own is not None
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for line, target in imported_modules(path, module)
        if (target_rank := rank(target)) is not None and target_rank > own
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", source_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_imports_the_folders_as_top_level_packages(path: Path) -> None:
    module = module_name(path)
    stray = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for line, target in imported_modules(path, module)
        if target.split(".")[0] in {"connectors", "streams", "schemas"}
    ]
    assert not stray, "\n".join(stray)


def test_the_downstream_client_does_not_pull_in_faust() -> None:
    probe = "import sys, mailstream.streams.suppression_list; print('faust' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
