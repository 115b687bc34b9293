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


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The unlearnops modules `path` imports, from the code: every import statement, at any level
    (top level, in functions, under TYPE_CHECKING).

    As import-linter and grimp count them: `from pkg import name` depends on the module
    `pkg.name` when there is one, else on `pkg`; `import a.b` depends on `a.b`.
    """
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    found.discard(module_name(path))
    return found


def test_no_library_module_imports_the_cli():
    modules = all_modules()
    offenders = {
        module_name(path): sorted(name for name in imported_modules(path, modules) if name == "unlearnops.cli" or name.startswith("unlearnops.cli."))
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


# ---- no import cycles -----------------------------------------------------------------------------
def import_graph() -> dict[str, set[str]]:
    """module -> the unlearnops modules it imports."""
    modules = all_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_import_graph_reader_sees_every_kind_of_import():
    graph = import_graph()
    assert "unlearnops.registry" in graph["unlearnops.pipeline.steps"]  # `from .. import registry`: a module
    assert "unlearnops.metrics.spec" in graph["unlearnops.evaluate.muse"]  # `from ..metrics.spec import Outcome`
    assert "unlearnops.metrics" in graph["unlearnops.policy"] and "unlearnops.metrics" not in graph["unlearnops.metrics.muse"]
    assert "unlearnops.unlearn.trainer" in graph["unlearnops.unlearn"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_unlearnops_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (data should flow one way): " + "; ".join(" <-> ".join(cycle) for cycle in found)


def test_every_package_data_pattern_in_pyproject_names_files_that_exist():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"].get("package-data", {})
    missing = {f"{package}/{pattern}" for package, patterns in package_data.items() for pattern in patterns
               if not list((REPO / package.replace(".", "/")).glob(pattern))}
    assert not missing, f"package-data names files that do not exist: {sorted(missing)}"


def test_architecture_doc_names_only_files_and_modules_that_exist():
    import re

    text = (REPO / "docs" / "architecture.md").read_text()
    example = text.index("### Adding a metric")  # the worked example proposes new files
    text = text[:example] + text[text.index("\n## ", example):]
    plain_blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)  # diagrams (python blocks are code)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    named = set(re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.py|(?:[\w.-]+/)+)`", text))
    for block in plain_blocks:
        named.update(re.findall(r"(?<![\w/.])((?:\w+/)*\w+\.py|(?:\w+/)+)(?![\w/])", block))
    named = {name for name in named if not name.startswith("out/")}  # what a stage writes, not a repository path
    missing = [name for name in sorted(named) if not any((base / name).exists() for base in (REPO, PACKAGE, REPO / "tests"))]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
