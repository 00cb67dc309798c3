"""The import graph of plugins/ has no circle (issue 17).

Every import of this collection's own modules counts, lazy ones inside functions included: a
circle broken only by importing late still ties the modules together. Imports under
``if TYPE_CHECKING:`` are left out; they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
PREFIX = "ansible_collections.heteromig.fleet.plugins."


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PLUGINS).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for part in node.body for inner in ast.walk(part))
    return skipped


def imports_of(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith(PREFIX):
                base = node.module[len(PREFIX) :]
                names = [base] + [base + "." + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name[len(PREFIX) :] for a in node.names if a.name.startswith(PREFIX)]
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PLUGINS.rglob("*.py") if "__pycache__" not in p.parts}
    known = set(files)
    edges = {name: imports_of(path, known) - {name} for name, path in files.items()}
    # a package's __init__ runs before its modules: an import of pkg.mod also imports pkg
    for name in list(edges):
        edges[name] |= {target.rsplit(".", 1)[0] for target in edges[name] if "." in target} & known
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle_it_is_given() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports() -> None:
    edges = graph()
    # _campaign_order imports the embedded harness's settings inside a function only
    assert "module_utils.agent._harness_settings" in edges["plugin_utils._campaign_order"]


def test_plugins_import_graph_has_no_circle() -> None:
    assert circles(graph()) == []


def test_only_the_nvml_package_imports_the_simulator() -> None:
    """One NVML door: everything else reaches the simulator through nvml._gpu_backend."""
    outside = {
        (name, target)
        for name, targets in graph().items()
        if not name.startswith("module_utils.nvml")
        for target in targets
        if target.startswith("module_utils.nvml._nvml_sim")
    }
    assert outside == set()


def test_every_package_says_what_it_is_for() -> None:
    for init in PLUGINS.glob("module_utils/*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 12, init
