"""Code shape, read from the sources with `ast` (nothing is imported):

- no import cycle among the project's modules (k15_jax/ and experiments/), counting imports
  inside functions too (a lazy import hides a cycle from Python, not from the reader);
- no module over 400 lines in k15_jax/;
- no function over 80 lines in k15_jax/ or experiments/ (benchmarks excepted).
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("k15_jax", "experiments")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, pathlib.Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def imported_modules(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """Project modules `name` imports anywhere in its body, as the most specific module:
    `import a.b.c` -> a.b.c; `from a.b import c` -> a.b.c when that is a module, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component (Tarjan)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(cycle_through(v, component, graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def cycle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path start -> ... -> start inside the component (breadth-first)."""
    parent, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def long_functions(path: pathlib.Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]


def test_import_resolution_on_this_repository():
    """Relative, `from package import module` and function-local imports all resolve."""
    modules = project_modules()
    deps = imported_modules("k15_jax.model", modules["k15_jax.model"], modules)
    assert "k15_jax.model.transformer" in deps
    deps = imported_modules(
        "k15_jax.model.transformer", modules["k15_jax.model.transformer"], modules
    )
    assert "k15_jax.model.multimodal" in deps  # imported inside forward_hidden


def test_no_import_cycles():
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_400_lines():
    too_long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in sorted((ROOT / "k15_jax").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not too_long, "split these modules:\n" + "\n".join(too_long)


def test_no_function_over_80_lines():
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    too_long = [
        f"{p.relative_to(ROOT)}: {name} ({n} lines)"
        for p in paths
        if not (p.parent.name == "experiments" and p.name.startswith("bench_"))
        for name, n in long_functions(p)
    ]
    assert not too_long, "split these functions:\n" + "\n".join(too_long)
