"""The product's modules import each other without cycles.

The graph is read from the source (``ast``), not from ``sys.modules``: an import inside a
function, or under ``TYPE_CHECKING``, is an edge too, because a cycle hidden behind a late
import is still two modules that cannot be understood, moved or tested one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "adapters")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Each product module and the product modules it imports anywhere in its source."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # ``from pkg import mod`` names a module; ``from mod import name`` names the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                found = owner(target)
                if found is not None and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_reader_sees_late_and_type_only_imports() -> None:
    graph = import_graph()
    assert "gateway.relay" in graph["gateway.service"]              # at the top
    assert "gateway.demo" in graph["gateway.cli"]                   # inside a function
    assert "gateway.ledger.engine" in graph["gateway.ledger.api"]   # under TYPE_CHECKING
    assert "adapters._xml" in graph["adapters.icbc.codec"]          # ``from package import module``


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_product_modules_import_each_other_without_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_product_never_imports_the_tests() -> None:
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert not offenders


def test_only_gateway_tls_touches_pyopenssl() -> None:
    """README.md: one module touches pyOpenSSL, so its deprecations are one module's change."""
    users = sorted({name for name, path in _modules().items()
                   for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, (ast.Import, ast.ImportFrom))
                   and any(n.split(".")[0] == "OpenSSL"
                           for n in ([a.name for a in node.names] if isinstance(node, ast.Import)
                                     else [node.module or ""]))})
    assert users == ["gateway.tls"]


def test_test_files_import_the_kit_not_each_other() -> None:
    """What more than one test file needs lives in tests/kit/ (or a suite's own support module)."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.startswith("tests.") and n.rpartition(".")[2].startswith(("test_", "conftest"))]
    assert not offenders


def test_no_bank_edge_imports_another_to_reach_a_helper() -> None:
    """What two edges share sits below both (``gateway.refusals``), not in one of them."""
    edges = {"gateway.links", "gateway.exchange", "gateway.sftp_link"}
    graph = import_graph()
    offenders = sorted(f"{edge} -> {other}" for edge in edges for other in graph[edge] & edges)
    assert not offenders
