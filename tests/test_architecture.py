"""The package's shape (docs/architecture.md): folders are layers, imports point down, no cycles.

The import graph is read with `ast` from the source, so imports inside functions count too: a
function-local import cannot hide a cycle. Imports under `if TYPE_CHECKING:` are annotations
only and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adaptive_bkg"
ROOT = "adaptive_bkg"

# Bottom to top; a module may import its own layer and the layers below it. Keep in step with
# the diagram in docs/architecture.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "user_code"),
    ("physics",),
    ("config",),
    ("formats",),
    ("interfaces", "stats"),
    ("generators", "backends", "model", "checkpoints"),
    ("stages",),
    ("pipeline",),
    ("workflows",),
    ("cli",),
)
MAX_MODULE_LINES = 450
# Ray is a detail of one module: everything else runs in one process.
RAY_MODULES = {f"{ROOT}.pipeline.orchestrate"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of this package
    line: int
    local: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name.split(".")[0] == ROOT)
        return
    if node.level:  # relative import
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base.split(".")[0] != ROOT:
        return
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def package_imports() -> list[Import]:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_nodes(tree)
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skipped:
                continue
            for target in _targets(module, node):
                if target != module and not module.startswith(target + "."):
                    found.append(Import(module, target, node.lineno, id(node) not in top_level))
    return found


IMPORTS = package_imports()


def layer_of(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if first in names:
            return rank
    if module == ROOT:
        return 0  # the package's __init__ holds only the version
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and the docs")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    """Guards the tests below against an empty graph (a parser that finds nothing passes)."""
    assert f"{ROOT}.pipeline.orchestrate" in MODULES
    assert f"{ROOT}.stats.sampling" in {
        i.target for i in IMPORTS if i.source == f"{ROOT}.stages.filter"
    }
    assert len(IMPORTS) > 200


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        edges.setdefault(i.source, set()).add(i.target)
    assert cycles(edges) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_imports_point_down() -> None:
    upward = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if layer_of(i.target) > layer_of(i.source)
    ]
    assert upward == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    n_lines = len(MODULES[module].read_text().splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{module}: {n_lines} lines; split it by concern"


def test_only_the_orchestrator_imports_ray() -> None:
    importers = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "ray" for a in node.names
            ):
                importers.add(module)
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
                importers.add(module)
    assert importers == RAY_MODULES


def _local_import_blocks() -> Iterator[tuple[str, int, list[str]]]:
    """(module, line, source lines) of each function's own imports, the 3 lines before included."""
    for module, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        skipped = _type_checking_nodes(tree)
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            imports = [
                node
                for node in ast.walk(function)
                if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped
            ]
            if imports:
                first = min(node.lineno for node in imports)
                last = max(node.end_lineno or node.lineno for node in imports)
                yield module, first, lines[max(first - 4, 0) : last]


def test_every_function_local_import_says_why() -> None:
    """Imports inside functions exist only to keep start-up light (or a worker's process
    lean); each block carries a comment saying so, so that none hides a cycle or a habit."""
    silent = [
        f"{module}:{line}"
        for module, line, block in _local_import_blocks()
        if not any("#" in text for text in block)
    ]
    assert silent == []
