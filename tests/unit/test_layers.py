"""Dependencies between drpo's packages point one way, with no cycles.

state ← data, prompts ← backends ← checkpoints, nodes ← graph ← evals, serve ← cli; a package
may import only from layers below its own, so no two packages can import each other, and
nothing imports the CLI. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[set[str]] = [
    {"state"},
    {"data", "prompts"},
    {"backends"},
    {"checkpoints", "nodes"},
    {"graph"},
    {"evals", "serve", "langchain"},
    {"cli"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def package_folders() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {name.removeprefix("drpo."): ROOT / folder for name, folder in mapping.items()}


def imported_packages(path: Path) -> set[str]:
    """The drpo packages one source file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("drpo.") and n.count(".") >= 1}
    return found


def package_imports() -> dict[str, dict[str, set[str]]]:
    """package → imported package → the files that import it."""
    edges: dict[str, dict[str, set[str]]] = {}
    for package, folder in package_folders().items():
        for path in sorted(folder.rglob("*.py")):
            for other in imported_packages(path) - {package}:
                edges.setdefault(package, {}).setdefault(other, set()).add(
                    str(path.relative_to(ROOT))
                )
    return edges


def test_every_package_has_a_layer() -> None:
    assert set(package_folders()) == set(RANK)


def test_imports_point_down_the_layers_only() -> None:
    upward = [
        f"{package} imports {other} in {sorted(files)}"
        for package, targets in package_imports().items()
        for other, files in targets.items()
        if RANK[other] >= RANK[package]
    ]
    assert not upward, upward


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from drpo.cli.app import main\n", encoding="utf-8")
    assert imported_packages(module) == {"cli"}


def _readme_architecture() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Architecture") :]


def test_the_readme_diagram_lists_these_layers() -> None:
    section = _readme_architecture()
    diagram = section[section.index("```") + 3 :]
    drawn: dict[int, set[str]] = {}
    for line in diagram[: diagram.index("```")].splitlines():
        if found := re.match(r"layer (\d+)\s+(.+?)(\s{2,}|$)", line):
            drawn[int(found[1])] = {name.strip() for name in found[2].split("·")}
    assert drawn == dict(enumerate(LAYERS))


def test_the_readme_import_table_is_what_the_code_imports() -> None:
    section = _readme_architecture()
    table = section[section.index("What each imports today") :].split("\n\n")[1]
    stated: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        packages, imports = (cell.strip() for cell in row.strip("|").split("|"))
        for package in packages.replace("`", "").split(","):
            stated[package.strip()] = {name.strip() for name in imports.split(",")}
    actual = {package: set(targets) for package, targets in package_imports().items()}
    assert stated == actual
