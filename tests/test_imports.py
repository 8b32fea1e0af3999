"""No import cycles between vlmbench's modules.

The graph is built from the source with `ast`, not by importing: an edge is an import that runs when
the module is imported (module level, including the bodies of ``if``/``try``/``with``/``class``), not
one inside a function and not one under ``if TYPE_CHECKING:``. ``from pkg import name`` imports the
submodule ``pkg.name`` when there is one, else ``pkg`` itself; importing a package is importing its
``__init__``. Parent packages that Python initialises on the way are not edges: a package's
``__init__`` that re-exports its submodules is not a cycle with them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import vlmbench

PACKAGE_ROOT = Path(vlmbench.__file__).resolve().parent


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module below ``root`` (the directory of ``package``) by dotted name; packages by their name."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path
    return modules


_TRY_NODES: tuple[type[ast.stmt], ...] = (ast.Try, *([ast.TryStar] if hasattr(ast, "TryStar") else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` that run when the module is imported (function bodies do not)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, _TRY_NODES):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_statements(block)
        elif isinstance(node, ast.With | ast.For | ast.While | ast.ClassDef):
            yield from _import_time_statements(node.body)
            yield from _import_time_statements(getattr(node, "orelse", []))


def _base_of(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if level == 0:
        return target or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, target] if target else anchor)


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is a module of ours, else its longest prefix that is (``import a.b.c`` binds ``a``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that importing ``module`` imports directly."""
    path = modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base_of(module, is_package, node.level, node.module)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            plain = len(submodules) < len(node.names)  # some names are attributes of `base` itself
            targets = submodules + ([base] if plain else [])
        else:
            continue
        for target in targets:
            owner = _owning_module(target, modules)
            if owner is not None and owner != module:
                found.add(owner)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_files(root, package)
    return {name: imports_of(name, modules) for name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None; depth-first, in sorted order so the answer is stable."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_vlmbench_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE_ROOT, "vlmbench")
    assert "vlmbench.cli" in graph and graph["vlmbench.cli"], "the walker found no imports in vlmbench.cli"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_walker_sees_each_kind_of_import(tmp_path: Path) -> None:
    _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from pkg.sub import thing\n",
            "a.py": "from . import b\nfrom .sub import deep\n",
            "b.py": "import pkg.sub.deep as d\nfrom pkg import c, VERSION\n",
            "c.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg import a\n"
                "def later():\n    from pkg import a\n"
                "try:\n    import json\nexcept ImportError:\n    from pkg import d\n"
            ),
            "d.py": "",
            "sub/__init__.py": "",
            "sub/deep.py": "from .. import d\n",
        },
    )
    graph = import_graph(tmp_path / "pkg", "pkg")
    assert graph["pkg"] == {"pkg.sub"}
    assert graph["pkg.a"] == {"pkg.b", "pkg.sub.deep"}
    assert graph["pkg.b"] == {"pkg.sub.deep", "pkg.c", "pkg"}
    assert graph["pkg.c"] == {"pkg.d"}  # not the TYPE_CHECKING or in-function imports
    assert graph["pkg.sub.deep"] == {"pkg.d"}
    assert find_cycle(graph) is None


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "from pkg.c import helper\n",
            "c.py": "import pkg.a\n",
        },
    )
    assert find_cycle(import_graph(tmp_path / "pkg", "pkg")) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
