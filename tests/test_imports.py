"""The package's import structure: no cycle between modules of ``src`` (lazy imports inside
functions included: a cycle hidden in a function still couples the two modules), the model
code never reaches checkpoint code, and each checkpoint module imports on its own."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def module_name(path, root):
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root):
    """{module: set of src modules it imports anywhere in its text} for every module under src/."""
    paths = {module_name(p, root): p for p in (root / "src").rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

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
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(import_graph(REPO)) == []


def test_cycle_detector_finds_a_lazy_cycle(tmp_path):
    """The detector sees a cycle through an import inside a function (the kind the checkpoint
    code once had)."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "pkg" / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "src" / "pkg" / "b.py").write_text("from ..pkg.a import f\n")
    assert cycles(import_graph(tmp_path)) == [["src.pkg.a", "src.pkg.b"]]


def test_model_code_does_not_import_checkpoint_code():
    graph = import_graph(REPO)
    offenders = {m: sorted(t for t in deps if t.startswith("src.checkpoint"))
                 for m, deps in graph.items() if m.startswith("src.modeling")}
    assert {m: t for m, t in offenders.items() if t} == {}


@pytest.mark.parametrize("module", sorted(m for m in import_graph(REPO) if m.startswith("src.checkpoint")))
def test_checkpoint_module_imports_alone(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, check=True, timeout=120)
