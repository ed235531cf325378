"""The compile-cache folder (src.runtime.enable_compile_cache): one folder per sequence of
graphs. MindSpore loads the N-th cached graph for the N-th compile after checking only the
source files, so two starts may share a folder only when they compile the same graphs in the
same order; anything else must get another folder or no cache."""
import os

import pytest

from src.config import load_config
from src.runtime import COMPILE_CACHE_ENV, enable_compile_cache, mode_scope

CONFIG = os.path.join(os.path.dirname(__file__), "..", "config", "quickstart.yaml")


@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    """A cache root in tmp_path; MindSpore's variables restored afterwards (set here, they would
    turn the cache on for every later compile of this test process)."""
    monkeypatch.setenv(COMPILE_CACHE_ENV, str(tmp_path))
    for name in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def folder(overrides=(), entry="train", world_size=1, **graph_args):
    """The folder enable_compile_cache chooses (None when it leaves the cache off) and its line."""
    cfg = load_config(CONFIG, list(overrides))
    os.environ.pop("MS_COMPILER_CACHE_PATH", None)
    with mode_scope("graph"):
        line = enable_compile_cache(entry, cfg, {"data.canvases": cfg.data.canvases}, world_size, **graph_args)
    return os.environ.get("MS_COMPILER_CACHE_PATH"), line


def test_same_work_same_folder_other_work_other_folder(cache_env):
    path, line = folder(["train.output_dir=/a"])
    assert path.startswith(str(cache_env) + os.sep + "train-") and path.endswith(os.sep)
    assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "1"
    assert line == f"compile cache: saving graphs to {path.rstrip(os.sep)}"
    assert folder(["train.output_dir=/b"])[0] == path  # where the checkpoints go changes no graph
    others = [folder(["model.num_select=10"])[0],  # same shapes, another graph: the dangerous case
              folder(["model.embed_dim=64"])[0],
              folder(entry="eval")[0],
              folder(world_size=2)[0],
              folder(resume=True)[0]]
    assert path not in others and len(set(others)) == len(others)
    os.makedirs(path)
    assert folder(["train.output_dir=/c"])[1] == f"compile cache: loading graphs from {path.rstrip(os.sep)}"


def test_off_when_the_graph_sequence_is_not_fixed(cache_env, monkeypatch):
    path, line = folder(["data.canvases=[[256, 256], [320, 320]]"])
    assert path is None and "data.canvases not a single canvas" in line
    assert folder(["data.canvases=null"])[0] is None
    cfg = load_config(CONFIG)
    with mode_scope("pynative"):
        assert "PyNative" in enable_compile_cache("train", cfg, {"data.canvases": cfg.data.canvases})
    monkeypatch.setenv(COMPILE_CACHE_ENV, "off")
    assert folder()[0] is None
    assert "MS_COMPILER_CACHE_ENABLE" not in os.environ
