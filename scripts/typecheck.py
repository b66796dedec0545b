"""Run mypy (strict, configured in pyproject.toml) over the drpo package.

    .venv/bin/python scripts/typecheck.py [mypy options]

setuptools' package-dir maps each top-level folder into `drpo.*` (`graph/` is `drpo.graph`),
which mypy cannot follow: given the folders it would name their modules `graph.cli`, and every
`from drpo... import` would resolve to nothing. So a tree of links named the way the package is
installed stands in for the project, and mypy checks `-p drpo` there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def link_tree() -> Path:
    """A folder holding `drpo/<name>` links to this checkout's package folders."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    # One tree per checkout, so that worktrees never share a tree or a mypy cache.
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    tree = Path(tempfile.gettempdir()) / f"drpo-typecheck-{os.getuid()}-{digest}"
    for package, folder in mapping.items():
        link = tree.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() == (ROOT / folder).resolve():
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(ROOT / folder, target_is_directory=True)
    return tree


def main(argv: list[str]) -> int:
    tree = link_tree()
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tree / ".mypy_cache"),
        "-p",
        "drpo",
        *argv,
    ]
    return subprocess.run(command, cwd=tree, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
