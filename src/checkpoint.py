"""Official (detrex/detectron2) state_dict <-> port parameter names.

The official model exposes some tensors under several keys (80 aliases in the R50 model):
``transformer.decoder.class_embed.i`` / ``bbox_embed.i`` are the top-level heads, and
``enhance_MCSP_layerlist.k`` / ``transformer.encoder.enhance_MCSP.k`` are ``class_embed.6``.
The port keeps one parameter per tensor; ``official_to_port`` consumes every key, loads one
tensor per alias group and checks that the aliases hold the same values.
"""
import re

import numpy as np

from .modeling.backbone.swin_names import SWIN_IGNORED_KEYS

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


class CheckpointMismatch(ValueError):
    """Raised with the full lists of unmapped, missing and mismatched names."""

    def __init__(self, unmapped=(), missing=(), mismatched=(), alias_conflicts=()):
        self.unmapped, self.missing = list(unmapped), list(missing)
        self.mismatched, self.alias_conflicts = list(mismatched), list(alias_conflicts)
        parts = []
        for title, items in (("official keys with no port parameter", self.unmapped),
                             ("port parameters not filled", self.missing),
                             ("shape mismatches (name: official -> port)", self.mismatched),
                             ("aliases whose values differ from their canonical key", self.alias_conflicts)):
            if items:
                parts.append(f"{title} ({len(items)}):\n  " + "\n  ".join(map(str, items)))
        super().__init__("checkpoint does not match the model:\n" + "\n".join(parts))


def official_to_port(state_dict, port_shapes, ignore=SWIN_IGNORED_KEYS, num_decoder_layers=6):
    """Map an official state_dict {key: array} onto the port's {name: shape}.

    ``ignore``: regexes of official keys that are structure rather than weights (by default
    Swin's integer ``relative_position_index``, which the port recomputes); they are consumed
    without loading. Returns {port name:
    float32 array}; raises ``CheckpointMismatch`` unless every official key is consumed,
    every port parameter filled, shapes agree and aliases equal their canonical tensors.
    """
    out, unmapped, mismatched, conflicts, wrong_shape = {}, [], [], [], set()
    for key, value in state_dict.items():
        if any(re.search(p, key) for p in ignore) or key.endswith("num_batches_tracked"):
            continue
        canonical = alias_canonical(key, num_decoder_layers)
        if canonical is not None:
            if canonical not in state_dict:
                unmapped.append(f"{key} (alias of missing {canonical})")
            elif not np.array_equal(np.asarray(value), np.asarray(state_dict[canonical])):
                conflicts.append(f"{key} != {canonical}")
            continue
        name = port_name(key, port_shapes)
        if name is None:
            unmapped.append(key)
            continue
        value = np.asarray(value)
        if tuple(value.shape) != tuple(port_shapes[name]):
            mismatched.append(f"{key}: {tuple(value.shape)} -> {name}: {tuple(port_shapes[name])}")
            wrong_shape.add(name)
            continue
        out[name] = value.astype(np.float32)
    missing = [n for n in port_shapes if n not in out and n not in wrong_shape]
    if unmapped or missing or mismatched or conflicts:
        raise CheckpointMismatch(unmapped, missing, mismatched, conflicts)
    return out


def read_official_state_dict(path):
    """{key: numpy array} from an official checkpoint: a torch ``.pth`` (the weights under
    ``model`` as detrex saves them, or a bare state_dict; needs torch), ``.npz`` or
    ``.safetensors``."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return load_file(path)
    if path.endswith((".pth", ".pt", ".pkl")):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"reading {path} needs torch (pip install torch --index-url "
                              "https://download.pytorch.org/whl/cpu); or save the state_dict as .npz") from e
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob.get("model", blob) if isinstance(blob, dict) else blob
        return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    raise ValueError(f"{path}: unknown checkpoint format (expected .pth, .npz or .safetensors)")


_TORCHVISION_RESNET = [(r"\.downsample\.", ".down_sample.")]
_CLASSIFIER = re.compile(r"^(fc|head|classifier)\.")


def read_backbone_state_dict(path):
    """{key: array} of ImageNet backbone weights: a detectron2 ``.pkl`` (the official
    ``r50_v1.pkl``), a MindSpore ``.ckpt`` or what ``read_official_state_dict`` reads. Wrapper
    prefixes (``model.``, ``module.``, ``backbone.``) are removed."""
    if path.endswith(".pkl"):
        import pickle

        with open(path, "rb") as f:
            blob = pickle.load(f, encoding="latin1")
        state = blob.get("model", blob)
    elif path.endswith(".ckpt"):
        import mindspore as ms

        state = {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}
    else:
        state = read_official_state_dict(path)
    return {re.sub(r"^(model\.|module\.|backbone\.)+", "", k): np.asarray(v) for k, v in state.items()
            if hasattr(v, "shape")}


def resnet_backbone_weights(state_dict, port_shapes):
    """ImageNet ResNet weights (detectron2, torchvision or mindcv names) -> {port name: array}
    for the detector's ``backbone.*`` parameters. The classifier is dropped; anything else
    unmatched, a missing backbone parameter or a shape mismatch raises ``CheckpointMismatch``."""
    backbone_shapes = {k: v for k, v in port_shapes.items() if k.startswith("backbone.")}
    out, unmapped, mismatched, wrong_shape = {}, [], [], set()
    for key, value in state_dict.items():
        if _CLASSIFIER.match(key) or key.endswith("num_batches_tracked"):
            continue
        name = "backbone." + key
        for pattern, repl in _TORCHVISION_RESNET:
            name = re.sub(pattern, repl, name)
        target = port_name(name, backbone_shapes)
        if target is None:
            unmapped.append(key)
        elif tuple(value.shape) != tuple(backbone_shapes[target]):
            mismatched.append(f"{key}: {tuple(value.shape)} -> {target}: {tuple(backbone_shapes[target])}")
            wrong_shape.add(target)
        else:
            out[target] = value.astype(np.float32)
    missing = [n for n in backbone_shapes if n not in out and n not in wrong_shape]
    if unmapped or missing or mismatched:
        raise CheckpointMismatch(unmapped, missing, mismatched)
    return out


def load_backbone_checkpoint(model, path, backbone_name):
    """Load ImageNet weights from ``path`` into ``model.backbone``; returns the tensor count."""
    import mindspore as ms
    from mindspore import Parameter, Tensor

    if backbone_name == "swin":
        from .modeling.backbone.pretrained import load_swin_imagenet

        return load_swin_imagenet(model.backbone, read_backbone_state_dict(path))["loaded"]
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    weights = resnet_backbone_weights(read_backbone_state_dict(path), shapes)
    ms.load_param_into_net(model, {k: Parameter(Tensor(v), name=k) for k, v in weights.items()})
    return len(weights)


def save_checkpoint_atomic(items, path, append_dict=None):
    """``mindspore.save_checkpoint`` to a temporary name in the same folder, then rename: a
    crash while writing never leaves a truncated file under ``path``. (MindSpore appends
    '.ckpt' to names without it, so the temporary name ends in '.ckpt' too.)"""
    import os

    import mindspore as ms

    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp.ckpt")
    ms.save_checkpoint(items, tmp, append_dict=append_dict)
    os.replace(tmp, path)


def load_port_checkpoint(model, path, strict=True, use_ema=False):
    """Load a MindSpore ``.ckpt`` written by this project into ``model``.

    A checkpoint for another model (other depth, class count, ...) raises
    ``CheckpointMismatch`` naming every missing, unexpected and mismatched parameter,
    instead of MindSpore's partial load. Optimizer and training state entries are ignored.
    """
    import mindspore as ms

    params = ms.load_checkpoint(path)
    if use_ema:  # trainable weights from their moving averages, buffers as saved
        averages = {k[len("ema."):]: v for k, v in params.items() if k.startswith("ema.")}
        if not averages:
            raise ValueError(f"{path}: no EMA weights (train with train.ema_decay > 0)")
        params = dict(params, **averages)
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    weights = {k: v for k, v in params.items() if k in shapes}
    mismatched = [f"{k}: {tuple(v.shape)} -> {shapes[k]}" for k, v in weights.items() if tuple(v.shape) != shapes[k]]
    missing = [k for k in shapes if k not in weights]
    if mismatched or (strict and missing):
        unexpected = [k for k in params if k not in shapes and not _is_training_state(k)]
        raise CheckpointMismatch(unexpected, missing, mismatched)
    ms.load_param_into_net(model, weights, strict_load=True)
    return params


def _is_training_state(name):
    return name.startswith(("optimizer.", "train_state.", "ema.")) or name in ("iteration", "skipped_steps")
