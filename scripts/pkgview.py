"""Build .pkgview/facegrid: the `facegrid` package as one folder tree, made of symlinks.

The package is mapped onto several top-level folders (pyproject's package-dir). Python's import
system follows that mapping through the editable install, but mypy and import-linter walk the
file system from one package root; this view gives them that root without moving any code.

    python scripts/pkgview.py    # prints the folder to put on MYPYPATH / PYTHONPATH
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEW = ROOT / ".pkgview"


def build() -> Path:
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]["package-dir"]
    shutil.rmtree(VIEW, ignore_errors=True)
    for package, folder in sorted(mapping.items()):
        target = VIEW.joinpath(*package.split("."))
        source = ROOT / folder
        if package == "facegrid" or not (source / "__init__.py").exists():
            # A real folder: the root, so that the other mappings can nest inside it, and
            # namespace packages (operator/), which import-linter only walks with an __init__.
            target.mkdir(parents=True, exist_ok=True)
            for entry in source.iterdir():
                if entry.name != "__pycache__" and not (target / entry.name).exists():
                    (target / entry.name).symlink_to(entry)
            if not (target / "__init__.py").exists():
                (target / "__init__.py").write_text('"""Namespace package (see pyproject)."""\n')
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source, target_is_directory=True)
    return VIEW


if __name__ == "__main__":
    print(build())
    sys.exit(0)
