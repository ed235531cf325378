"""Shared fixtures: the golden fixture directory and the execution mode.

Tests that need the golden fixtures fail (not skip) when the directory is missing: a suite
that silently skips its parity checks would pass while proving nothing.
"""
import gc
import os
import resource
import time
from pathlib import Path

import pytest

from src.runtime import COMPILE_CACHE_ENV, mode_scope

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("FOCUS_DETR_GOLDEN", REPO.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir():
    if not (GOLDEN_DIR / "README.md").is_file():
        pytest.fail(f"golden fixtures not found in {GOLDEN_DIR} (set FOCUS_DETR_GOLDEN)")
    return GOLDEN_DIR


@pytest.fixture(scope="session", autouse=True)
def compile_cache_root(tmp_path_factory):
    """train.py / eval.py / infer.py started by the tests keep their compile caches in this
    session's temporary folder, not in ~/.cache: a relaunch within the session loads its graphs
    as a user's second start does, and no run sees a cache from outside the session."""
    os.environ[COMPILE_CACHE_ENV] = str(tmp_path_factory.mktemp("compile_cache"))


@pytest.fixture(autouse=True)
def restore_compile_cache_variables():
    """An entry's main() called in the test process (infer.main) turns MindSpore's compile cache
    on by environment variables, which MindSpore reads at every compile; they are set back after
    each test, so that the process's later graphs are neither saved nor loaded."""
    names = ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# a test that ran this long may have compiled a graph (the others are not worth a collection: ~0.1 s each)
GRAPH_TEST_SECONDS = 1.0
_peak_seen_kb = [0]


@pytest.fixture(autouse=True)
def release_graphs(request):
    """Collect the garbage after a test that may have compiled graphs, and after each module; and
    note on the test (junit property ``peak_rss_kb``, read by scripts/run_suite.py) the peak
    resident memory of this process and the ones it waited for, when this test raised it (its
    fixtures' setup included).

    A Cell's compiled graphs hold their memory (GBs for the full-size model) until the Cell is
    freed, and Cells sit in reference cycles that Python's collector, blind to that memory, reaches
    late or never: without a collection a process holds the graphs of every test it ran. MindSpore's
    memory pool reuses what a collection frees (README, "Tests")."""
    began = time.perf_counter()
    yield
    # the processes a test starts and waits for count, as in the job's peak (/usr/bin/time)
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    if peak > _peak_seen_kb[0]:
        _peak_seen_kb[0] = peak
        request.node.user_properties.append(("peak_rss_kb", peak))
    if time.perf_counter() - began > GRAPH_TEST_SECONDS:
        gc.collect()


@pytest.fixture(scope="module", autouse=True)
def release_module_graphs():
    """The module-scoped fixtures' models, once the module is done (see ``release_graphs``)."""
    yield
    gc.collect()


@pytest.fixture(params=["graph", "pynative"])
def mode(request):
    """Run the test once in GRAPH_MODE and once in PYNATIVE_MODE."""
    with mode_scope(request.param):
        yield request.param


@pytest.fixture
def fresh_build_state(monkeypatch):
    """Forget built kernel libraries and issued fallback warnings for the duration of a test."""
    from src import ops as kops
    from src.ops import build

    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(kops, "_warned", set())


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Six training images (3 iterations per epoch at batch 2) for the tiny-model training tests."""
    from src.data.synthetic import generate_synthetic_coco

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_coco(str(root), num_train=6, num_val=2, size_range=(96, 128), num_classes=3, seed=1,
                            max_objects=2, min_object_size=24)
    return root


@pytest.fixture(scope="session")
def whole_batch(tmp_path_factory):
    """(data root, folder of the one-process gradients): tests/whole_batch.py, once per session."""
    from whole_batch import run_whole_batch

    return run_whole_batch(tmp_path_factory)
