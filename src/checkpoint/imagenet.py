"""ImageNet-pretrained backbone weights for training: ResNet (detectron2, torchvision or mindcv
names) and Swin (the original Swin release layout) -> the detector's backbone parameters.

ResNet: the official ``r50_v1.pkl`` (detectron2 names), torchvision or mindcv files; the
classifier is dropped.

Swin: the official recipes start from the classification checkpoints of the Swin Transformer
release (``swin_tiny_patch4_window7_224.pth``, ``..._22kto1k_finetune.pth``,
``swin_{base,large}_patch4_window12_384_22k.pth``). Those files hold, under ``model``:

* the backbone weights under the names ``SwinBackbone`` uses (``patch_embed.*``,
  ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``), LayerNorms as ``weight``/``bias``;
* structure buffers: ``...attn.relative_position_index`` in every block and ``...attn_mask`` in
  the shifted blocks (its shape depends on the pretraining resolution). The port recomputes
  both; the index is checked against ours, the masks are consumed unread;
* the classifier: the final ``norm.weight``/``norm.bias`` and ``head.weight``/``head.bias``
  (1000 or 21841 classes), which a detector does not use.

The detection output norms ``norm1..norm3`` are not in ImageNet weights and keep their
initialisation. A relative position bias table of another window size (for example window-7 224
weights into a window-12 384 model) is reported as such; the official recipes never need a
resize (each loads weights of its own window size), so none is attempted.

Anything else (an unknown key, a backbone parameter the file lacks, a shape that differs) raises
``CheckpointMismatch`` with the full lists, and nothing is loaded.
"""
import logging
import os
import re

import numpy as np

from .files import read_backbone_state_dict, read_official_state_dict
from .matching import match_weights, parameter_shapes, shape_mismatch
from .official import port_name

__all__ = ["load_backbone_checkpoint", "load_swin_imagenet", "resnet_backbone_weights", "swin_imagenet_to_port"]

log = logging.getLogger("focus_detr.checkpoint")

_RESNET_CLASSIFIER = re.compile(r"^fc\.|^head\.|^classifier\.|num_batches_tracked$")

_INDEX = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$")
_MASK = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn_mask$")
_SWIN_CLASSIFIER = re.compile(r"^(norm|head)\.(weight|bias)$")
_OUT_NORM = re.compile(r"^norm\d+\.(gamma|beta)$")
_BIAS_TABLE = ".attn.relative_position_bias_table"


def _table_window(rows):
    """Window size w of a ((2w-1)^2, heads) bias table, or None."""
    side = int(round(np.sqrt(rows)))
    return (side + 1) // 2 if side * side == rows and side % 2 == 1 else None


def _describe_mismatch(key, value_shape, name, port_shape):
    text = shape_mismatch(key, value_shape, name, port_shape)
    if key.endswith(_BIAS_TABLE) and len(value_shape) == 2 and len(port_shape) == 2:
        file_w, port_w = _table_window(value_shape[0]), _table_window(port_shape[0])
        if file_w and port_w and file_w != port_w:
            text += (f" (the file was pretrained with window {file_w}, the model uses window {port_w}: "
                     f"use weights of window {port_w}, e.g. *_window{port_w}_*.pth, or the variant of window {file_w})")
        elif value_shape[1] != port_shape[1]:
            text += f" ({value_shape[1]} heads in the file, {port_shape[1]} in the model: another Swin size)"
    return text


def resnet_backbone_weights(state_dict, port_shapes):
    """ImageNet ResNet weights (detectron2, torchvision or mindcv names) -> {port name: array}
    for the detector's ``backbone.*`` parameters. The classifier is dropped; anything else
    unmatched, a missing backbone parameter or a shape mismatch raises ``CheckpointMismatch``."""
    backbone_shapes = {k: v for k, v in port_shapes.items() if k.startswith("backbone.")}
    weights = {k: v for k, v in state_dict.items() if not _RESNET_CLASSIFIER.search(k)}

    def name_of(key):  # torchvision's ``downsample`` is mindcv's ``down_sample``
        return port_name("backbone." + key.replace(".downsample.", ".down_sample."), backbone_shapes)

    weights, problems = match_weights(weights, backbone_shapes, name_of)
    if problems:
        raise problems
    return {name: value.astype(np.float32) for name, value in weights.items()}


def swin_imagenet_to_port(state_dict, port_shapes):
    """Map an ImageNet Swin state_dict {key: array} onto ``SwinBackbone`` {name: shape}.

    ``port_shapes`` uses the backbone's own parameter names (``patch_embed.proj.weight``,
    ``norm1.gamma`` ...). Returns ``(weights, report)``: ``weights`` {name: float32 array} for
    every parameter but the output norms, ``report`` a dict with the consumed ``structure`` and
    ``classifier`` keys and the ``kept_init`` parameter names. Raises ``CheckpointMismatch``
    listing every unknown key, unfilled parameter and shape mismatch.
    """
    from ..modeling.backbone.swin import relative_position_index

    weights, structure, classifier, bad_index = {}, [], [], []
    for key, value in state_dict.items():
        value = np.asarray(value)
        if _INDEX.match(key):
            n = value.shape[0] if value.ndim == 2 else -1
            w = int(round(np.sqrt(n))) if n > 0 else 0
            if value.ndim != 2 or value.shape[1] != n or w * w != n or not np.array_equal(
                    value, relative_position_index(w)):
                bad_index.append(f"{key}: {tuple(value.shape)} does not hold the relative position index "
                                 "of a square window (a different Swin layout?)")
            structure.append(key)
        elif _MASK.match(key):
            structure.append(key)
        elif _SWIN_CLASSIFIER.match(key):
            classifier.append(key)
        else:
            weights[key] = value
    kept_init = [n for n in port_shapes if _OUT_NORM.match(n)]
    loaded_shapes = {n: s for n, s in port_shapes.items() if n not in kept_init}
    weights, problems = match_weights(weights, loaded_shapes, lambda key: port_name(key, loaded_shapes),
                                      describe=_describe_mismatch, mismatched=bad_index)
    if problems:
        raise problems
    weights = {name: value.astype(np.float32) for name, value in weights.items()}
    return weights, {"structure": structure, "classifier": classifier, "kept_init": kept_init}


def load_swin_imagenet(backbone, path_or_state_dict):
    """Load ImageNet Swin weights (original release layout) into ``backbone`` (a ``SwinBackbone``,
    bare or inside the detector, e.g. ``model.backbone``).

    ``path_or_state_dict``: a ``.pth`` (needs torch; the weights under ``model``), ``.npz`` or
    ``.safetensors`` file, or a {key: array} dict. Everything is checked before any parameter
    changes. Returns the report of ``swin_imagenet_to_port`` plus ``loaded`` (the count).
    """
    from mindspore import Tensor

    from ..modeling.backbone.swin import SwinBackbone

    if not isinstance(backbone, SwinBackbone):
        raise TypeError(f"load_swin_imagenet needs a SwinBackbone, got {type(backbone).__name__}")
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        state_dict = read_official_state_dict(source)
    else:
        source, state_dict = "state_dict", path_or_state_dict
    params = dict(backbone.parameters_and_names())
    weights, report = swin_imagenet_to_port(state_dict, {n: tuple(p.shape) for n, p in params.items()})
    for name, value in weights.items():
        params[name].set_data(Tensor(value))
    report["loaded"] = len(weights)
    log.info(f"{source}: loaded {len(weights)} Swin ImageNet tensors; consumed {len(report['structure'])} "
             f"structure buffers (relative_position_index, attn_mask) and {len(report['classifier'])} "
             f"classifier tensors ({', '.join(report['classifier']) or 'none'}); kept the initialisation of "
             f"{len(report['kept_init'])} detection output-norm parameters ({', '.join(report['kept_init'])})")
    return report


def load_backbone_checkpoint(model, path, backbone_name):
    """Load ImageNet weights from ``path`` into ``model.backbone``; returns the tensor count."""
    import mindspore as ms
    from mindspore import Parameter, Tensor

    if backbone_name == "swin":
        return load_swin_imagenet(model.backbone, read_backbone_state_dict(path))["loaded"]
    weights = resnet_backbone_weights(read_backbone_state_dict(path), parameter_shapes(model))
    ms.load_param_into_net(model, {k: Parameter(Tensor(v), name=k) for k, v in weights.items()})
    return len(weights)
