"""YAML configs with inheritance and command-line overrides.

A config file may name parent files under ``__base__`` (a path or a list, relative to the
file). The root file (``config/base.yaml``) defines every key that exists; a child, or a
``key.sub=value`` override, that names a key its bases do not have is an error, so typos
cannot silently fall back to defaults.
"""
import copy
import os

import yaml


class ConfigError(ValueError):
    pass


class Config(dict):
    """A dict whose keys are also attributes (``cfg.model.num_queries``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}


def _wrap(value):
    if isinstance(value, dict):
        return Config({k: _wrap(v) for k, v in value.items()})
    return value


def _merge(base, child, where, source):
    for key, value in child.items():
        path = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown config key '{path}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{path}' must be a mapping, got {value!r}")
            _merge(base[key], value, path + ".", source)
        else:
            base[key] = copy.deepcopy(value)


def _load_file(path):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    bases = data.pop("__base__", [])
    if isinstance(bases, str):
        bases = [bases]
    if not bases:
        return data
    merged = None
    for base in bases:
        loaded = _load_file(os.path.join(os.path.dirname(path), base))
        if merged is None:
            merged = loaded
        else:
            _merge(merged, loaded, "", path)
    _merge(merged, data, "", path)
    return merged


def apply_override(cfg, text):
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to a plain nested dict."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    dotted, raw = text.split("=", 1)
    keys = dotted.strip().split(".")
    node = cfg
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"override: unknown config key '{'.'.join(keys[:i + 1])}'")
        if i < len(keys) - 1:
            node = node[key]
    value = yaml.safe_load(raw) if raw.strip() else ""
    current = node[keys[-1]]
    if isinstance(current, dict):
        raise ConfigError(f"override: '{dotted}' is a section; set its keys one by one")
    if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        # YAML 1.1 reads '1e-3' (no dot) as a string; a float key takes any float literal
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"override: '{dotted}' must be a number, got {raw!r}") from None
    node[keys[-1]] = value


def load_config(path, overrides=()):
    cfg = _load_file(path)
    for text in overrides:
        apply_override(cfg, text)
    return _wrap(cfg)
