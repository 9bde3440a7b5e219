"""The import graph of wrapperkernel/: no cycle, and the rooms depend inward only.

Every module of the package is parsed with ``ast`` (nothing is imported, so a cycle that
would only bite at run time is found too). All its imports count: at the top, inside
functions, and under ``if TYPE_CHECKING:``, since a type-only cycle is still two modules
that each need the other (STYLE.md: shared types live in a leaf module).

How an import becomes an edge:

- ``import wrapperkernel.a.b`` and ``from wrapperkernel.a.b import name`` lead to the
  module ``wrapperkernel.a.b``. ``from wrapperkernel.a import b`` leads to
  ``wrapperkernel.a.b`` when ``b`` is a submodule, else to ``wrapperkernel.a`` (a name
  defined in the package's ``__init__``).
- A package is the module of its ``__init__.py``, named after the package; relative
  imports inside an ``__init__`` start from the package itself.
- No edge goes to the parent packages of the module imported. Python runs them first,
  but a package ``__init__`` that re-exports its submodules would then close a "cycle"
  with every submodule that imports a sibling, and such a cycle never fails: the
  parent is already in ``sys.modules`` when the submodule runs.

Imports by string (``importlib.import_module``) and ``python -m`` subprocesses are not
imports of the package's code here; none of them names a wrapperkernel module.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "wrapperkernel"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Rooms that must never depend on another room (directly or through other modules).
FORBIDDEN = [
    (f"{PACKAGE}.kernel", f"{PACKAGE}.worker"),
    (f"{PACKAGE}.worker", f"{PACKAGE}.kernel"),
    *[(room, side)
      for room in (f"{PACKAGE}.address", f"{PACKAGE}.workerlink", f"{PACKAGE}.wire",
                   f"{PACKAGE}.comms", f"{PACKAGE}.comms_base")
      for side in (f"{PACKAGE}.kernel", f"{PACKAGE}.worker")],
]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}) imports {self.target}"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root``, by dotted name; a package is its ``__init__``."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    # The base of "." is the package that holds the module; for an __init__, the
    # package itself.
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = _resolve_relative(module, is_package, node.level, node.module)
    else:
        base = node.module or ""
    out = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        out.append(submodule if alias.name != "*" and submodule in known else base)
    return out


def import_edges(root: Path = ROOT, package: str = PACKAGE) -> tuple[set[str], list[Edge]]:
    """The package's modules, and one edge per import of one of them by another."""
    names = module_names(root, package)
    known = set(names)
    edges: list[Edge] = []
    for module, path in names.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # every import, at any depth
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, module, is_package, known):
                if (target == package or target.startswith(package + ".")) and target != module:
                    edges.append(Edge(module, target, node.lineno))
    return known, edges


def unresolved(known: set[str], edges: list[Edge]) -> list[Edge]:
    """Edges to a wrapperkernel name that is no module of the tree (a wrong resolution
    here, or an import that fails at run time): either way the graph would be wrong."""
    return [edge for edge in edges if edge.target not in known]


def _adjacency(edges: list[Edge]) -> dict[str, dict[str, Edge]]:
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    return graph


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle, as its edges, for each group of modules that import each other.

    The groups are the strongly connected components (Tarjan's algorithm, iteratively, so
    depth is no limit); in each, the cycle shown is a shortest one through its first
    module in sorted order.
    """
    graph = _adjacency(edges)
    nodes = sorted(set(graph) | {e.target for e in edges})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_cycle_through(graph, c[0], set(c)) for c in sorted(components)]


def _shortest_chain(graph: dict[str, dict[str, Edge]], source: str,
                    is_goal: Callable[[str], bool],
                    may_pass: Callable[[str], bool] = lambda _module: True) -> list[Edge] | None:
    """The fewest edges from ``source`` to a module ``is_goal`` accepts (breadth first),
    through modules ``may_pass`` accepts; None when there is no such chain."""
    came_by: dict[str, Edge] = {}
    frontier, seen = [source], {source}
    while frontier:
        following = []
        for node in frontier:
            for target, edge in sorted(graph.get(node, {}).items()):
                if is_goal(target):
                    chain = [edge]
                    while chain[0].source != source:
                        chain.insert(0, came_by[chain[0].source])
                    return chain
                if target not in seen and may_pass(target):
                    seen.add(target)
                    came_by[target] = edge
                    following.append(target)
        frontier = following
    return None


def _cycle_through(graph: dict[str, dict[str, Edge]], start: str,
                   members: set[str]) -> list[Edge]:
    cycle = _shortest_chain(graph, start, lambda module: module == start, members.__contains__)
    if cycle is None:
        raise AssertionError(f"{start} is in a component without a cycle through it")
    return cycle


def describe(cycle: list[Edge]) -> str:
    path = " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
    return path + "\n    " + "\n    ".join(str(edge) for edge in cycle)


def _in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def layering_violations(edges: list[Edge]) -> list[str]:
    """For each forbidden (room, other room) pair and each module of the room, the shortest
    chain of imports that leads into the other room: a dependency through a third module
    is one too."""
    graph = _adjacency(edges)
    found = []
    for room, other in FORBIDDEN:
        for source in sorted(graph):
            if not _in_room(source, room):
                continue
            chain = _shortest_chain(graph, source, lambda module, other=other: _in_room(module, other))
            if chain is not None:
                found.append(f"{room} must not depend on {other}:\n    "
                             + "\n    ".join(str(edge) for edge in chain))
    return found


# ---------------------------------------------------------------------- the package


def test_every_import_of_the_package_resolves_to_one_of_its_modules() -> None:
    known, edges = import_edges()

    assert len(known) > 30  # the walk found the package, not an empty folder
    assert unresolved(known, edges) == []


def test_there_is_no_import_cycle_in_wrapperkernel() -> None:
    _known, edges = import_edges()

    found = cycles(edges)

    assert not found, "import cycles:\n" + "\n".join(describe(c) for c in found)


def test_rooms_depend_inward_only() -> None:
    _known, edges = import_edges()

    violations = layering_violations(edges)

    assert not violations, "\n".join(violations)


# ---------------------------------------------------------------------- the check itself


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _edges(root: Path) -> set[tuple[str, str]]:
    _known, edges = import_edges(root, "pkg")
    return {(e.source, e.target) for e in edges}


def _cycles(root: Path) -> list[list[Edge]]:
    _known, edges = import_edges(root, "pkg")
    return cycles(edges)


def _paths(found: list[list[Edge]]) -> list[str]:
    return [describe(cycle).splitlines()[0] for cycle in found]


def test_imports_resolve_to_submodules_packages_and_relative_bases(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "from pkg import a\nNAME = 1\n",
        "a.py": "from pkg import NAME\nfrom pkg.sub import b, THING\n",
        "sub/__init__.py": "from . import b\nfrom .b import f\nTHING = 2\n",
        "sub/b.py": "from .. import a\nfrom ..sub import c\nimport pkg.sub.c as cc\n",
        "sub/c.py": "from pkg.sub.b import *\n",
    })

    assert _edges(root) == {
        ("pkg", "pkg.a"),
        ("pkg.a", "pkg"), ("pkg.a", "pkg.sub.b"), ("pkg.a", "pkg.sub"),
        ("pkg.sub", "pkg.sub.b"),
        ("pkg.sub.b", "pkg.a"), ("pkg.sub.b", "pkg.sub.c"),
        ("pkg.sub.c", "pkg.sub.b"),
    }


def test_imports_in_functions_and_under_type_checking_count(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "b.py": "def f():\n    from pkg import a\n    return a\n",
    })

    found = _cycles(root)

    assert _paths(found) == ["pkg.a -> pkg.b -> pkg.a"]
    assert [(e.source, e.line) for e in found[0]] == [("pkg.a", 3), ("pkg.b", 2)]


def test_a_longer_cycle_is_reported_as_its_path(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.b\nimport pkg.leaf\n",
        "b.py": "import pkg.c\n",
        "c.py": "from pkg import a\n",
        "leaf.py": "import json\n",
    })

    assert _paths(_cycles(root)) == ["pkg.a -> pkg.b -> pkg.c -> pkg.a"]


def test_a_submodule_importing_its_reexporting_package_is_no_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "w/__init__.py": "from pkg.w._a import A\nfrom pkg.w._b import B\n",
        "w/_a.py": "from pkg.w._b import B\n",
        "w/_b.py": "import json\n",
    })

    assert _cycles(root) == []


def test_an_import_of_a_missing_module_is_unresolved(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"__init__.py": "", "a.py": "from pkg.gone import x\n"})
    known, edges = import_edges(root, "pkg")

    assert [(e.source, e.target) for e in unresolved(known, edges)] == [("pkg.a", "pkg.gone")]


def test_a_dependency_through_a_third_module_breaks_the_layering() -> None:
    edges = [Edge(f"{PACKAGE}.address.core", f"{PACKAGE}.comms_base", 3),
             Edge(f"{PACKAGE}.comms_base", f"{PACKAGE}.worker.main", 9),
             Edge(f"{PACKAGE}.kernel.app", f"{PACKAGE}.workerlink.frames", 1)]

    violations = layering_violations(edges)

    assert violations == [
        f"{PACKAGE}.address must not depend on {PACKAGE}.worker:\n"
        f"    {PACKAGE}.address.core (line 3) imports {PACKAGE}.comms_base\n"
        f"    {PACKAGE}.comms_base (line 9) imports {PACKAGE}.worker.main",
        f"{PACKAGE}.comms_base must not depend on {PACKAGE}.worker:\n"
        f"    {PACKAGE}.comms_base (line 9) imports {PACKAGE}.worker.main",
    ]
