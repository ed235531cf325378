"""The fused CPU kernels' OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``, set by
``import src``) instead of spinning against MindSpore's operators; libgomp reads the variable
when ``import mindspore`` loads it, so every entry point imports ``src`` first."""
import ast

import pytest
from process_probe import REPO, run_python

POLICY = ("from src.runtime import openmp_wait_policy_late; "
          "print(os.environ['OMP_WAIT_POLICY'], openmp_wait_policy_late())")
# the scripts whose timings or work depend on the policy
ENTRY_POINTS = ("train.py", "eval.py", "infer.py", "export.py", "scripts/benchmark.py", "scripts/bench_ops.py",
                "scripts/bench_vs_official.py", "scripts/bench_train.py", "scripts/bench_matcher.py",
                "scripts/profile_ops.py", "scripts/profile_swin.py", "src/tools/parity/__main__.py")
LOADS_LIBGOMP = ("mindspore", "mindcv")


def run_probe(code, policy=None):
    return run_python(code, "OMP_WAIT_POLICY", policy)


def test_passive_policy_is_set_before_mindspore_loads_libgomp():
    assert run_probe(f"import os, src, mindspore; {POLICY}").stdout.split() == ["PASSIVE", "False"]


def test_user_policy_is_kept():
    assert run_probe(f"import os, src; {POLICY}", policy="ACTIVE").stdout.split() == ["ACTIVE", "False"]


def test_policy_set_too_late_warns_once_when_the_kernels_load():
    code = ("import os, mindspore, src, logging; logging.basicConfig(); from src.ops.build import library_path; "
            f"library_path(); library_path(); {POLICY}")
    out = run_probe(code)
    assert out.stdout.split()[-2:] == ["PASSIVE", "True"]
    assert out.stderr.count("was imported before src") == 1, out.stderr[-2000:]


def _import_roots_in_order(path):
    """(line, top-level module) of every import statement of the file, functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
    return sorted(found)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_points_import_src_before_mindspore(entry):
    roots = [root for _, root in _import_roots_in_order(REPO / entry)]
    first_mindspore = next(i for i, root in enumerate(roots) if root in LOADS_LIBGOMP) if any(
        root in LOADS_LIBGOMP for root in roots) else len(roots)
    assert "src" in roots[:first_mindspore], f"{entry} imports {roots[first_mindspore]} before src"
