"""Official detectron2 ``SwinTransformer`` state_dict keys -> ``SwinBackbone`` parameter names.

``SwinBackbone`` mirrors the official module tree, so the mapping is the identity except for
the LayerNorm affine names (torch ``weight``/``bias`` -> MindSpore ``gamma``/``beta``). The
integer buffers ``...attn.relative_position_index`` are structure that the port recomputes
(``swin.relative_position_index``); they map to nothing and are not loaded.

Pure Python (no MindSpore import) so converters and tests can use it freely.
"""
import re

__all__ = ["SWIN_IGNORED_KEYS", "is_swin_structure_key", "swin_port_name"]

# official keys that are structure, not weights (regexes, for ``checkpoint.official_to_port``)
SWIN_IGNORED_KEYS = (r"(^|\.)attn\.relative_position_index$",)

# modules that are nn.LayerNorm in the official Swin: patch_embed.norm, blocks' norm1/norm2,
# downsample.norm and the per-output norm{i}
_LAYER_NORM = re.compile(r"(^|\.)(patch_embed\.norm|blocks\.\d+\.norm[12]|downsample\.norm|norm\d+)"
                         r"\.(weight|bias)$")


def is_swin_structure_key(key):
    """True for the recomputed integer buffers (``relative_position_index``)."""
    return any(re.search(p, key) for p in SWIN_IGNORED_KEYS)


def swin_port_name(key, prefix="backbone."):
    """Port parameter name of an official Swin key, or None for structure buffers.

    ``key`` starts with ``prefix`` (the official model's ``backbone.``); the returned name keeps
    that prefix, which is where the detector holds its backbone. Pass ``prefix=""`` for a bare
    backbone state_dict (e.g. ImageNet weights already stripped of their head). Raises
    ``ValueError`` for a key outside ``prefix``.
    """
    if not key.startswith(prefix):
        raise ValueError(f"{key!r} is not a Swin backbone key (expected prefix {prefix!r})")
    if is_swin_structure_key(key):
        return None
    m = _LAYER_NORM.search(key)
    if m:
        return key[: m.start(3)] + ("gamma" if m.group(3) == "weight" else "beta")
    return key
