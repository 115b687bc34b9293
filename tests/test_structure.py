"""The package's structure: the library stands without its CLI."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "unlearnops"
CLI = PACKAGE / "cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if CLI not in path.parents)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (top level, in functions, under TYPE_CHECKING), as absolute names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x` imports module x
    return found


def test_no_library_module_imports_the_cli():
    offenders = {
        module_name(path): sorted(name for name in imported_modules(path) if name == "unlearnops.cli" or name.startswith("unlearnops.cli."))
        for path in library_modules()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


BLOCK_TYPER = """
import importlib, sys

class NoTyper:
    def find_spec(self, name, path=None, target=None):
        if name == "typer" or name.startswith("typer."):
            raise ImportError(f"typer is blocked: {name} imported by the library")
        return None

sys.meta_path.insert(0, NoTyper())
for name in sys.argv[1:]:
    importlib.import_module(name)
cli = sorted(name for name in sys.modules if name.startswith(("unlearnops.cli", "typer")))
assert not cli, cli
print(len(sys.argv) - 1, "modules imported")
"""


def test_every_library_module_imports_with_typer_blocked():
    modules = [module_name(path) for path in library_modules()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", BLOCK_TYPER, *modules], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(modules)} modules imported" in result.stdout
