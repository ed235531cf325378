"""Official (detrex/detectron2) state_dict keys -> port parameter names.

The official model exposes some tensors under several keys (80 aliases in the R50 model):
``transformer.decoder.class_embed.i`` / ``bbox_embed.i`` are the top-level heads, and
``enhance_MCSP_layerlist.k`` / ``transformer.encoder.enhance_MCSP.k`` are ``class_embed.6``.
The port keeps one parameter per tensor; ``official_to_port`` consumes every key, loads one
tensor per alias group and checks that the aliases hold the same values.

The Swin backbone mirrors the official module tree, so its names go through the same rules (the
torch affine suffixes ``weight``/``bias`` become ``gamma``/``beta`` where the port parameter is
a norm's). Its integer ``relative_position_index`` buffers are structure the port recomputes
(``swin.relative_position_index``): consumed, never loaded.
"""
import re

import numpy as np

from .matching import match_weights

__all__ = ["alias_canonical", "is_structure_key", "official_to_port", "port_name"]

_PREFIX_RULES = [
    (r"^class_embed\.(\d+)\.", r"transformer.decoder.class_embed.\1."),
    (r"^bbox_embed\.(\d+)\.", r"transformer.decoder.bbox_embed.\1."),
    (r"^transformer\.alpha$", "transformer.token_selector.alpha"),
    (r"^transformer\.enc_mask_predictor\.", "transformer.token_selector.mask_predictor."),
    (r"\.attentions\.0\.attn\.", ".attentions.0."),
    # detectron2 ResNet -> mindcv ResNet
    (r"^backbone\.stem\.conv1\.norm\.", "backbone.bn1."),
    (r"^backbone\.stem\.conv1\.", "backbone.conv1."),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.norm\.", lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.down_sample.1."),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.", lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.down_sample.0."),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.", lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}."),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.", lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}."),
]

# torch parameter suffix -> MindSpore suffixes tried in order (norms, BatchNorm, Embedding)
_SUFFIX_ALTERNATIVES = {
    "weight": ("weight", "gamma", "embedding_table"),
    "bias": ("bias", "beta"),
    "running_mean": ("moving_mean",),
    "running_var": ("moving_variance",),
}

# official keys that are structure, not weights: Swin's recomputed index, BatchNorm's counter
_STRUCTURE = re.compile(r"(^|\.)attn\.relative_position_index$|num_batches_tracked$")


def is_structure_key(key):
    """True for keys consumed without loading (the recomputed integer buffers)."""
    return _STRUCTURE.search(key) is not None


def alias_canonical(key, num_decoder_layers=6):
    """The canonical official key of an alias, or None if ``key`` is canonical."""
    m = re.match(r"^transformer\.decoder\.(class_embed|bbox_embed)\.(\d+)\.(.*)$", key)
    if m:
        return f"{m[1]}.{m[2]}.{m[3]}"
    m = re.match(r"^(?:enhance_MCSP_layerlist|transformer\.encoder\.enhance_MCSP)\.\d+\.(.*)$", key)
    if m:
        return f"class_embed.{num_decoder_layers}.{m[1]}"
    return None


def port_name(key, port_names):
    """Port parameter name for a canonical official key, or None when nothing matches."""
    name = key
    for pattern, repl in _PREFIX_RULES:
        name = re.sub(pattern, repl, name)
    stem, _, suffix = name.rpartition(".")
    for alt in _SUFFIX_ALTERNATIVES.get(suffix, (suffix,)):
        candidate = f"{stem}.{alt}"
        if candidate in port_names:
            return candidate
    return None


def official_to_port(state_dict, port_shapes, num_decoder_layers=6):
    """Map an official state_dict {key: array} onto the port's {name: shape}.

    Returns {port name: float32 array}; raises ``CheckpointMismatch`` unless every official key
    is consumed, every port parameter filled, shapes agree and aliases equal their canonical
    tensors.
    """
    canonical, unmapped, conflicts = {}, [], []
    for key, value in state_dict.items():
        if is_structure_key(key):
            continue
        target = alias_canonical(key, num_decoder_layers)
        if target is None:
            canonical[key] = np.asarray(value)
        elif target not in state_dict:
            unmapped.append(f"{key} (alias of missing {target})")
        elif not np.array_equal(np.asarray(value), np.asarray(state_dict[target])):
            conflicts.append(f"{key} != {target}")
    weights, problems = match_weights(canonical, port_shapes, lambda key: port_name(key, port_shapes),
                                      unmapped=unmapped, alias_conflicts=conflicts)
    if problems:
        raise problems
    return {name: value.astype(np.float32) for name, value in weights.items()}

