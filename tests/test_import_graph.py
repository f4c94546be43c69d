"""The project's import graph: no cycles, the runtime never imports what needs TensorFlow,
and the runtime's parts import each other only along the edges the design allows.

Everything installs as one package, ``edge_seg``; the repository keeps a folder per part
(``edge/`` is ``edge_seg`` itself, ``train/`` is ``edge_seg.train``, and so on). Every import
statement counts, at module level or inside a function; relative imports are resolved;
importing ``pkg.mod`` does not count as importing ``pkg``. Run as a script to print the
graph between the parts:

    python tests/test_import_graph.py
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# folder -> the import name it installs as (pyproject.toml's package-dir)
FOLDERS = {"edge": "edge_seg", "train": "edge_seg.train", "converters": "edge_seg.converters",
           "calibration": "edge_seg.calibration", "benchmarks": "benchmarks", "tools": "tools"}
# the names the project used to install at the top of site-packages: gone for good
OLD_TOP_LEVEL = {"edge", "train", "converters", "calibration", "scenes"}

# The runtime's parts. A module of edge/ outside a subpackage is "core" (the label table,
# preprocessing, IoU maths, errors, ...), except the four that sit on top of the rest.
CORE_EXCEPTIONS = {"edge_seg.segmenter": "segmenter", "edge_seg.runner": "runner",
                   "edge_seg.cli": "cli", "edge_seg.device_profile": "device_profile"}
# part -> the parts it may import. Anything not listed here is forbidden; the training side
# (train, converters, calibration) may import every runtime part, never the other way round.
RUNTIME_ALLOWED = {
    "core": {"core"},
    "scenes": {"core"},
    "io": {"core", "scenes"},
    "backends": {"core", "io"},
    "segmenter": {"core", "backends"},
    # any model file opened to be scored or timed, built on the Segmenter; its .keras
    # runner is found through entry points, never imported
    "runner": {"core", "segmenter"},
    "device_profile": {"core", "backends"},
    "serve": {"core"},
    "run": {"core", "backends", "io", "segmenter", "serve", "device_profile"},
    "tune": {"core", "backends", "io", "segmenter", "runner", "device_profile"},
    "cli": {"core", "run", "tune"},
    "models": set(),
}
TRAINING = {"train", "converters", "calibration"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = FOLDERS[rel.parts[0]].split(".") + list(rel.with_suffix("").parts[1:])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> dict[str, Path]:
    return {_module_name(p): p for folder in FOLDERS if (REPO / folder).is_dir()
            for p in (REPO / folder).rglob("*.py")}


def _imports(path: Path, mod: str) -> list[str]:
    """Every module name an import statement in ``path`` names, relative ones resolved."""
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names += [f"{base}.{a.name}" for a in node.names] + [base]
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}."""
    files = project_files()
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for target in _imports(path, mod):
            while target and target not in files:  # an attribute or an outside module
                target = target.rpartition(".")[0]
            if target and target != mod and not mod.startswith(target + "."):
                graph[mod].add(target)
    return graph


def old_top_level_imports() -> list[str]:
    """Imports of the names the project no longer installs (``import train`` and the like)."""
    return sorted(f"{mod} -> {name}" for mod, path in project_files().items()
                  for name in _imports(path, mod) if name.split(".")[0] in OLD_TOP_LEVEL)


def part(module: str) -> str | None:
    """The runtime part (or training package) a module belongs to; None outside edge_seg."""
    parts = module.split(".")
    if parts[0] != "edge_seg":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] in TRAINING or parts[1] in RUNTIME_ALLOWED:
        return parts[1]
    return CORE_EXCEPTIONS.get(module, "core")


def part_graph(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """{(part, part it imports): the module edges behind it}."""
    edges: dict[tuple[str, str], list[str]] = {}
    for mod, targets in graph.items():
        for target in targets:
            a, b = part(mod), part(target)
            if a and b and a != b:
                edges.setdefault((a, b), []).append(f"{mod} -> {target}")
    return edges


def forbidden(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for (a, b), why in sorted(part_graph(graph).items()):
        if a in TRAINING:
            continue  # the training side may use anything of the runtime
        if b in TRAINING or b not in RUNTIME_ALLOWED.get(a, set()):
            bad += why
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_runtime_parts_import_only_what_the_design_allows():
    assert forbidden(import_graph()) == []


def test_no_import_of_the_old_top_level_names():
    assert old_top_level_imports() == []


def test_every_runtime_folder_is_a_declared_part():
    """A new subpackage of edge/ needs its row in RUNTIME_ALLOWED before it can be imported."""
    subpackages = {p.parent.name for p in (REPO / "edge").glob("*/__init__.py")}
    assert subpackages <= set(RUNTIME_ALLOWED), subpackages - set(RUNTIME_ALLOWED)


def test_a_forbidden_edge_is_found():
    """The checker itself: serve importing run, and the runtime importing training code."""
    graph = {"edge_seg.serve.server": {"edge_seg.run.loop"}, "edge_seg.run.loop": set(),
             "edge_seg.iou": {"edge_seg.train.models"}, "edge_seg.train.models": {"edge_seg.iou"}}
    assert forbidden(graph) == ["edge_seg.iou -> edge_seg.train.models",
                                "edge_seg.serve.server -> edge_seg.run.loop"]


def test_a_cycle_is_found():
    """The checker itself: a two-module loop and a three-module loop, next to a chain."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "f"}, "f": set()}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


if __name__ == "__main__":
    g = import_graph()
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges among them")
    print("part -> parts it imports (modules behind each edge):")
    for (a, b), why in sorted(part_graph(g).items()):
        print(f"  {a:<12} -> {b:<12} {len(why)}")
    print("forbidden:", ", ".join(forbidden(g)) or "none")
    print("old top-level names imported:", ", ".join(old_top_level_imports()) or "none")
    print(f"{len(cycles(g))} import cycle(s)")
    for component in cycles(g):
        print("  cycle:", " <-> ".join(component))
