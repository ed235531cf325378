"""YAML configs: inheritance, strict keys, command-line overrides, every shipped recipe loads."""
from pathlib import Path

import pytest

from src.config import ConfigError, load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def write(path, text):
    path.write_text(text)
    return str(path)


def test_inheritance_and_override(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  depth: 50\n  pos:\n    t: 10000\n    offset: -0.5\nname: a\n")
    write(tmp_path / "mid.yaml", "__base__: base.yaml\nmodel:\n  pos:\n    t: 20\n")
    child = write(tmp_path / "child.yaml", "__base__: mid.yaml\nname: c\n")
    cfg = load_config(child, ["model.depth=101", "model.pos.offset=1e-3"])
    assert cfg.model.depth == 101
    assert cfg.model.pos.t == 20
    assert cfg.model.pos.offset == 1e-3  # YAML 1.1 alone would read '1e-3' as a string
    assert cfg.name == "c"


@pytest.mark.parametrize("text, override, message", [
    ("__base__: base.yaml\nmodel:\n  detph: 101\n", None, "unknown config key 'model.detph'"),
    ("__base__: base.yaml\nmodel: 3\n", None, "'model' must be a mapping"),
    ("__base__: base.yaml\n", "model.nope=1", "unknown config key 'model.nope'"),
    ("__base__: base.yaml\n", "model=1", "is a section"),
    ("__base__: base.yaml\n", "model.depth", "must look like key.sub=value"),
    ("__base__: base.yaml\n", "model.lr=fast", "must be a number"),
    ("__base__: missing.yaml\n", None, "config file not found"),
    ("__base__: base.yaml\nmodel: [\n", None, "invalid YAML"),
])
def test_errors_name_the_key_and_file(tmp_path, text, override, message):
    write(tmp_path / "base.yaml", "model:\n  depth: 50\n  lr: 1.0e-4\n")
    child = write(tmp_path / "child.yaml", text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as err:
        load_config(child, [override] if override else [])
    if "override" not in str(err.value) and "not found" not in message:
        assert "child.yaml" in str(err.value)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(path):
    cfg = load_config(str(path))
    if path.name.startswith("focus_detr_"):
        assert cfg.model.num_queries == 900 and cfg.model.num_classes == 80
    if "r101" in path.name:
        assert cfg.model.backbone.depth == 101
    if path.name.startswith("focus_detr_r") and ("24ep" in path.name or "36ep" in path.name):
        assert (cfg.model.position_embedding.temperature, cfg.model.position_embedding.offset) == (20, 0.0)
    if "12ep" in path.name:
        assert (cfg.model.position_embedding.temperature, cfg.model.position_embedding.offset) == (10000, -0.5)
