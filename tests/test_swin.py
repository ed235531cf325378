"""Swin backbone: parity with the official detectron2 SwinTransformer (golden fixture
``model_eval_swin_t``), the official parameter names/shapes of every variant, padding to the
window size in graph mode, drop path only in training; the config of every official Swin recipe
(schedule, position embedding, the backbone it builds) and ImageNet weights in the original Swin
release layout (``load_swin_imagenet``)."""
import json
import logging
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops
from mindspore.nn.utils import no_init_parameters

from src.checkpoint import is_structure_key, parameter_shapes, port_name
from src.config import load_config
from src.modeling.backbone.swin import (
    SWIN_VARIANTS,
    PatchMerging,
    SwinBackbone,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    swin_backbone,
)
from src.tools.parity.golden import golden_state_dict

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32).reshape(3, 1, 1)
ATOL = 1e-4


def _swin_t_entries(golden_dir):
    return json.load(open(golden_dir / "state_dict_swin_t_4scale.json"))["entries"]


def _bare(name):
    return name[len("backbone."):]


def _load_official_backbone(model, official):
    """Load official ``backbone.*`` arrays into a bare SwinBackbone through the converter's names."""
    names = {"backbone." + p.name for p in model.get_parameters()}
    params = {}
    for key, value in official.items():
        if not is_structure_key(key):
            name = port_name(key, names)
            params[_bare(name)] = Parameter(Tensor(value), name=_bare(name))
    not_loaded, unused = ms.load_param_into_net(model, params, strict_load=True)
    assert not not_loaded and not unused, (not_loaded, unused)


@pytest.fixture(scope="module", params=["native", "kernel"])
def golden_swin_t(golden_dir, request):
    """(Swin-T backbone with the fixture's golden weights, fixture arrays, normalized canvas);
    its window attention core MindSpore's operators or the CPU kernel (``kernels.window_attention``)."""
    meta = json.load(open(golden_dir / "model_eval_swin_t.json"))
    g = dict(np.load(golden_dir / "model_eval_swin_t.npz"))
    entries = _swin_t_entries(golden_dir)
    weights = golden_state_dict(str(golden_dir), entries, meta["weight_seed"])
    official = {k: v for k, v in weights.items() if k.startswith("backbone.")}
    model = swin_backbone("swin_tiny_224", attention_impl=request.param)
    _load_official_backbone(model, official)
    model.set_train(False)
    # normalize each image, then zero-pad bottom/right to the batch canvas (as the detector does)
    height, width = (int(v) for v in g["padded_size"])
    sizes = g["image_sizes"].astype(int)
    images = np.zeros((len(sizes), 3, height, width), np.float32)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = (g[f"image_{i}"] - PIXEL_MEAN) / PIXEL_STD
    return model, g, images


def test_swin_t_backbone_parity(golden_swin_t, mode):
    model, g, images = golden_swin_t
    outs = model(Tensor(images))
    assert isinstance(outs, tuple) and len(outs) == 3
    report = []
    for level, out in zip((1, 2, 3), outs):
        out = out.asnumpy()
        ref = g[f"backbone_p{level}"]
        channels = g[f"backbone_p{level}_channels"]
        assert out.shape[:1] + out.shape[2:] == ref.shape[:1] + ref.shape[2:]
        assert out.shape[1] == model.out_channels[level - 1] == g[f"backbone_p{level}_chmean"].shape[1]
        err = np.abs(out[:, channels] - ref).max()
        err_mean = np.abs(out.mean(axis=(2, 3)) - g[f"backbone_p{level}_chmean"]).max()
        report.append(f"p{level}: max|d|={err:.2e} chmean max|d|={err_mean:.2e}")
        assert err < ATOL and err_mean < ATOL, report
    print(f"[{mode}] " + "; ".join(report))


def test_official_key_list_maps_one_to_one(golden_dir):
    """Every official backbone key (but the recomputed index buffers) fills exactly one port
    parameter of the same shape, and no port parameter is left over."""
    entries = [e for e in _swin_t_entries(golden_dir) if e["name"].startswith("backbone.")]
    model = swin_backbone("swin_tiny_224")
    ours = parameter_shapes(model)
    structure = [e for e in entries if is_structure_key(e["name"])]
    assert len(structure) == sum(SWIN_VARIANTS["swin_tiny_224"]["depths"]) == 12
    assert all(e["dtype"] == "int64" and e["kind"] == "buffer" for e in structure)
    mapped = {}
    for e in entries:
        if e in structure:
            continue
        name = port_name(e["name"], {"backbone." + n for n in ours})
        assert name is not None and name.startswith("backbone."), e["name"]
        name = _bare(name)
        assert name in ours, f"{e['name']} -> {name}: no such parameter"
        assert name not in mapped, f"{e['name']} and {mapped.get(name)} both map to {name}"
        assert ours[name] == tuple(e["shape"]), (e["name"], ours[name], e["shape"])
        mapped[name] = e["name"]
    assert sorted(set(ours) - set(mapped)) == []
    assert len(mapped) == len(ours) == len(entries) - len(structure)


def _official_param_count(embed_dim, depths, num_heads, window_size, patch_size=4, mlp_ratio=4,
                          out_indices=(1, 2, 3), in_chans=3):
    """Parameter count of detectron2's SwinTransformer from its architecture (no model built)."""
    total = in_chans * embed_dim * patch_size ** 2 + embed_dim + 2 * embed_dim  # conv + bias, LN
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        d = embed_dim * 2 ** i
        hidden = int(d * mlp_ratio)
        block = (2 * d                                   # norm1
                 + (2 * window_size - 1) ** 2 * heads    # relative_position_bias_table
                 + 3 * d * d + 3 * d                     # qkv
                 + d * d + d                             # proj
                 + 2 * d                                 # norm2
                 + d * hidden + hidden + hidden * d + d)  # mlp fc1, fc2
        total += depth * block
        if i < len(depths) - 1:
            total += 2 * 4 * d + 4 * d * 2 * d          # downsample norm, reduction (no bias)
    total += sum(2 * embed_dim * 2 ** i for i in out_indices)  # norm{i}
    return total


def test_param_count_formula_matches_swin_t_key_list(golden_dir):
    """The formula agrees with the official Swin-T state_dict (the contract of the formula)."""
    entries = [e for e in _swin_t_entries(golden_dir)
               if e["name"].startswith("backbone.") and e["kind"] == "parameter"]
    from_keys = sum(int(np.prod(e["shape"])) for e in entries)
    cfg = SWIN_VARIANTS["swin_tiny_224"]
    assert _official_param_count(cfg["embed_dim"], cfg["depths"], cfg["num_heads"], cfg["window_size"]) == from_keys


# spec section 2 table: embed_dim, depths, heads, window, neck input channels, drop_path_rate
SPEC_SWIN_TABLE = {
    "swin_tiny_224": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, (192, 384, 768), 0.1),
    "swin_small_224": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, (192, 384, 768), 0.2),
    "swin_base_384": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, (256, 512, 1024), 0.2),
    "swin_large_224": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7, (384, 768, 1536), 0.2),
    "swin_large_384": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, (384, 768, 1536), 0.2),
}


@pytest.mark.parametrize("variant", ["swin_tiny_224", "swin_small_224", "swin_base_384", "swin_large_224",
                                     "swin_large_384"])
def test_variant_param_counts(variant):
    """Spec section 2 table: each official model config builds with the official parameter count."""
    embed_dim, depths, heads, window, channels, _ = SPEC_SWIN_TABLE[variant]
    with no_init_parameters():  # shapes only: Swin-L's 195M random values took 13 s
        model = swin_backbone(variant)
    count = sum(int(np.prod(p.shape)) for p in model.get_parameters())
    assert count == _official_param_count(embed_dim, depths, heads, window)
    assert model.out_channels == channels and model.out_strides == (8, 16, 32)
    del model


def test_relative_position_index_and_shift_mask():
    """Numpy constants against a direct transcription of the reference's definitions."""
    for ws in (7, 12):
        idx = relative_position_index(ws)
        tokens = [(h, w) for h in range(ws) for w in range(ws)]
        ref = np.array([[(hi - hj + ws - 1) * (2 * ws - 1) + (wi - wj + ws - 1) for hj, wj in tokens]
                        for hi, wi in tokens])
        np.testing.assert_array_equal(idx, ref)
    for hp, wp, ws in ((14, 21, 7), (7, 7, 7), (24, 36, 12)):
        shift = ws // 2
        img = np.zeros((hp, wp))
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img[hs, wsl] = cnt
                cnt += 1
        win = img.reshape(hp // ws, ws, wp // ws, ws).transpose(0, 2, 1, 3).reshape(-1, ws * ws)
        diff = win[:, None, :] - win[:, :, None]
        np.testing.assert_array_equal(shifted_window_mask(hp, wp, ws, shift), np.where(diff != 0, -100.0, 0.0))


def _small_swin(drop_path_rate=0.0):
    return SwinBackbone(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7,
                        drop_path_rate=drop_path_rate)


def test_non_window_multiple_input_graph_mode():
    """75x93 is a multiple of neither the patch (4) nor the window (7) at any stage, and maps
    become smaller than one window: graph mode compiles and agrees with PyNative."""
    previous = ms.get_context("mode")
    ms.set_seed(0)
    model = _small_swin()
    model.set_train(False)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 75, 93)).astype(np.float32))
    try:
        ms.set_context(mode=ms.GRAPH_MODE)
        graph = [o.asnumpy() for o in model(x)]
        ms.set_context(mode=ms.PYNATIVE_MODE)
        pynative = [o.asnumpy() for o in model(x)]
    finally:
        ms.set_context(mode=previous)
    # ceil(75/4)=19 -> 10 -> 5 -> 3 ; ceil(93/4)=24 -> 12 -> 6 -> 3
    assert [o.shape for o in graph] == [(1, 32, 10, 12), (1, 64, 5, 6), (1, 128, 3, 3)]
    for a, b in zip(graph, pynative):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def _roll(x, shift):
    """torch.roll(x, (shift, shift), (1, 2)) (MindSpore's Roll has no CPU kernel)."""
    h, w = x.shape[1], x.shape[2]
    x = ops.concat((x[:, (h - shift) % h:], x[:, :(h - shift) % h]), 1)
    return ops.concat((x[:, :, (w - shift) % w:], x[:, :, :(w - shift) % w]), 2)


def _pad_roll_partition(x, ws, shift):
    """The reference's window layout in plain operators: zero-pad to whole windows, torch.roll
    by -shift, partition."""
    b, h, w, c = x.shape
    hp, wp = h + (-h) % ws, w + (-w) % ws
    x = ops.concat((x, ops.zeros((b, hp - h, w, c), x.dtype)), 1) if hp > h else x
    x = ops.concat((x, ops.zeros((b, hp, wp - w, c), x.dtype)), 2) if wp > w else x
    if shift:
        x = _roll(x, -shift)
    x = x.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _reverse_roll_crop(windows, b, h, w, ws, shift):
    c = windows.shape[-1]
    hp, wp = h + (-h) % ws, w + (-w) % ws
    x = windows.reshape(b, hp // ws, wp // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if shift:
        x = _roll(x, shift)
    return x[:, :h, :w]


def _pad_merge(x):
    b, h, w, c = x.shape
    x = ops.concat((x, ops.zeros((b, h % 2, w, c), x.dtype)), 1) if h % 2 else x
    x = ops.concat((x, ops.zeros((b, x.shape[1], w % 2, c), x.dtype)), 2) if w % 2 else x
    h2, w2 = x.shape[1] // 2, x.shape[2] // 2
    return x.reshape(b, h2, 2, w2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h2, w2, 4 * c)


def _reference_heads(qkv, bias, ws, shift, heads):
    """The reference's q, k, v of a projected (B, H, W, 3C) map, stacked: a zero-padded token
    projects to the bias; roll, partition, then the 5-D head permute."""
    windows = _pad_roll_partition(qkv - bias, ws, shift) + bias
    b_, n, c3 = windows.shape
    return windows.reshape(b_, n, 3, heads, c3 // 3 // heads).transpose(2, 0, 3, 1, 4)


def _reference_from_heads(out, b, h, w, ws, shift):
    b_, heads, n, d = out.shape
    return _reverse_roll_crop(out.transpose(0, 2, 1, 3).reshape(b_, n, heads * d), b, h, w, ws, shift)


class _Weighted(nn.Cell):
    """sum(weight * layout(x, bias)) for one of the layouts of ``attn`` / ``merge``: ours (the row
    gathers) or the reference's operations."""

    def __init__(self, weight, layout, attn, shift, merge):
        super().__init__()
        self.weight, self.layout, self.attn, self.shift, self.merge = Tensor(weight), layout, attn, shift, merge

    def construct(self, x, bias):
        b, h, w, c = x.shape
        if self.layout == "heads":
            out = ops.stack(self.attn.to_heads(x.reshape(-1, c), bias, b, h, w, self.shift))
        elif self.layout == "reference heads":
            out = _reference_heads(x, bias, self.attn.window_size, self.shift, self.attn.num_heads)
        elif self.layout == "merge":
            out = self.merge(x) + bias.sum()
        else:
            out = self.merge.reduction(self.merge.norm(_pad_merge(x))) + bias.sum()
        return (out * self.weight).sum()


@pytest.mark.parametrize("size", [(9, 11), (14, 7)], ids=["padded", "whole_windows"])
@pytest.mark.parametrize("shift", [0, 3])
def test_window_layout_and_patch_merging_equal_the_reference_operations(mode, size, shift):
    """The head-row gathers of ``WindowAttention.to_heads`` / ``from_heads`` and the row gather
    of ``PatchMerging`` against the reference's pad / roll / 6-D transpose / head permute, batch
    2, forward and backward. The forward is a permutation with bias rows: equal bit for bit
    (integer-valued inputs, so the reference's bias padding is exact); the gradients sum the same
    terms in another order."""
    rng = np.random.default_rng(shift)
    (h, w), heads, d = size, 2, 4
    qkv = Tensor(rng.integers(-8, 8, size=(2, h, w, 3 * heads * d)).astype(np.float32))
    bias = Tensor(rng.integers(-8, 8, size=(3 * heads * d,)).astype(np.float32))
    attn = WindowAttention(heads * d, 7, heads)
    ours = ops.stack(attn.to_heads(qkv.reshape(-1, 3 * heads * d), bias, 2, h, w, shift))
    theirs = _reference_heads(qkv, bias, 7, shift, heads)
    np.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())
    for part in range(3):  # back to the map: each of q, k, v is that slice of the projection
        np.testing.assert_array_equal(attn.from_heads(ours[part] * 2.0, 2, h, w, shift).asnumpy(),
                                      _reference_from_heads(theirs[part] * 2.0, 2, h, w, 7, shift).reshape(
                                          2 * h * w, heads * d).asnumpy())
    x = qkv[..., :8]
    merge = PatchMerging(8)
    np.testing.assert_array_equal(merge(x).asnumpy(), merge.reduction(merge.norm(_pad_merge(x))).asnumpy())
    for ours_name, inputs, shape in (("heads", (qkv, bias), ours.shape), ("merge", (x, bias), merge(x).shape)):
        weight = rng.normal(size=shape).astype(np.float32)
        grads = [ms.grad(_Weighted(weight, name, attn, shift, merge), grad_position=(0, 1))(*inputs)
                 for name in (ours_name, "reference " + ours_name)]
        for ours_grad, their_grad in zip(*grads):
            np.testing.assert_allclose(ours_grad.asnumpy(), their_grad.asnumpy(), rtol=1e-6, atol=1e-5,
                                       err_msg=ours_name)


def test_drop_path_only_in_training():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        ms.set_seed(1)
        model = _small_swin(drop_path_rate=0.5)
        plain = _small_swin(drop_path_rate=0.0)
        ms.load_param_into_net(plain, {p.name: Parameter(p.data.copy(), name=p.name)
                                       for p in model.get_parameters()}, strict_load=True)
        x = Tensor(np.random.default_rng(1).standard_normal((4, 3, 32, 40)).astype(np.float32))
        model.set_train(False)
        plain.set_train(False)
        eval_a = [o.asnumpy() for o in model(x)]
        eval_b = [o.asnumpy() for o in model(x)]
        ref = [o.asnumpy() for o in plain(x)]
        for a, b, r in zip(eval_a, eval_b, ref):
            np.testing.assert_array_equal(a, b)                 # deterministic in eval
            np.testing.assert_allclose(a, r, atol=1e-6, rtol=0)  # and identical to no drop path
        model.set_train(True)
        train = [o.asnumpy() for o in model(x)]
        assert max(np.abs(t - r).max() for t, r in zip(train, ref)) > 1e-2
        # a drop-path cell keeps or drops whole samples and rescales kept ones by 1/keep
        block = model.layers[3].blocks[1]
        assert abs(block.drop_path.keep_prob - 0.5) < 1e-6
        ones = Tensor(np.ones((64, 2, 3, 5), np.float32))
        dropped = block.drop_path(ones).asnumpy()
        per_sample = dropped.reshape(64, -1)
        assert np.all(per_sample == per_sample[:, :1])
        assert set(np.unique(per_sample)) <= {0.0, 2.0} and 0 < (per_sample[:, 0] == 0).sum() < 64
        # the first block has rate 0 (linspace from 0)
        assert model.layers[0].blocks[0].drop_path.keep_prob == 1.0
    finally:
        ms.set_context(mode=previous)


# ---------------------------------------------------------------------------------------------
# Recipes: every official Swin config file, its schedule, and the backbone it builds
# ---------------------------------------------------------------------------------------------
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# official file name -> (variant, max_iter, LR x0.1 milestone) from the spec section 11 table
SWIN_RECIPES = {
    "focus_detr_swin_tiny_224_4scale_12ep": ("swin_tiny_224", 90000, [82500]),
    "focus_detr_swin_tiny_224_4scale_24ep": ("swin_tiny_224", 180000, [150000]),
    "focus_detr_swin_tiny_224_4scale_36ep": ("swin_tiny_224", 270000, [225000]),
    "focus_detr_swin_tiny_224_4scale_22k_12ep": ("swin_tiny_224", 90000, [82500]),
    "focus_detr_swin_tiny_224_4scale_22k_36ep": ("swin_tiny_224", 270000, [225000]),
    "focus_detr_swin_base_384_4scale_36ep": ("swin_base_384", 270000, [225000]),
    "focus_detr_swin_large_384_4scale_36ep": ("swin_large_384", 270000, [225000]),
    # "Swin-B-224": the official file builds the B-384 model with the 12ep schedule (drop at 11/12)
    "focus_detr_swin_base_224_4scale_36ep": ("swin_base_384", 270000, [247500]),
}


def test_every_official_swin_recipe_has_a_config():
    assert sorted(p.stem for p in CONFIG_DIR.glob("focus_detr_swin_*.yaml")) == sorted(SWIN_RECIPES)


@pytest.mark.parametrize("name", sorted(SWIN_RECIPES))
def test_swin_recipe_config(name):
    variant, max_iter, milestones = SWIN_RECIPES[name]
    path = CONFIG_DIR / f"{name}.yaml"
    assert path.read_text().startswith(f"# Official {name} (")
    cfg = load_config(str(path))
    bb = cfg.model.backbone
    assert (bb.name, bb.variant, bb.drop_path_rate) == ("swin", variant, None)
    assert (cfg.train.max_iter, cfg.train.lr_milestones, cfg.train.lr_gammas) == (max_iter, milestones, [0.1])
    assert cfg.train.warmup_iters == 0
    pe = cfg.model.position_embedding
    assert (pe.temperature, pe.offset) == (10000, -0.5)


@pytest.mark.parametrize("variant", sorted({v for v, _, _ in SWIN_RECIPES.values()}))
def test_swin_recipes_build_their_backbone(variant):
    """The backbone every Swin recipe names (one build per variant: the recipes that share a variant
    have identical backbone sections) has the official parameter count, channels and drop path."""
    from src.modeling.build import build_backbone

    sections = [load_config(str(CONFIG_DIR / f"{name}.yaml")).model.backbone.to_dict()
                for name, (v, _, _) in SWIN_RECIPES.items() if v == variant]
    assert all(s == sections[0] for s in sections)
    cfg = load_config(str(CONFIG_DIR / f"{next(n for n, r in SWIN_RECIPES.items() if r[0] == variant)}.yaml"))
    with no_init_parameters():
        model = build_backbone(cfg.model.backbone)
    embed_dim, depths, heads, window, channels, drop_path_rate = SPEC_SWIN_TABLE[variant]
    assert isinstance(model, SwinBackbone) and model.window_size == window
    assert sum(int(np.prod(p.shape)) for p in model.get_parameters()) == _official_param_count(
        embed_dim, depths, heads, window)
    assert model.out_channels == channels
    assert abs(model.layers[3].blocks[-1].drop_path.keep_prob - (1.0 - drop_path_rate)) < 1e-6
    del model


# ---------------------------------------------------------------------------------------------
# ImageNet-pretrained weights in the original Swin release layout
# ---------------------------------------------------------------------------------------------
SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def _imagenet_release_state_dict(embed_dim, depths, num_heads, window_size, img_size=224, num_classes=10,
                                 patch_size=4, mlp_ratio=4, seed=0):
    """A classification checkpoint as the Swin release writes it (``model`` of the .pth), from the
    architecture alone: random float weights, the integer index buffers, ``attn_mask`` buffers in
    the shifted blocks of maps larger than one window, the final ``norm`` and the ``head``."""
    rng = np.random.default_rng(seed)
    sd = {}

    def put(key, *shape):
        sd[key] = rng.standard_normal(shape).astype(np.float32)

    put("patch_embed.proj.weight", embed_dim, 3, patch_size, patch_size)
    put("patch_embed.proj.bias", embed_dim)
    put("patch_embed.norm.weight", embed_dim)
    put("patch_embed.norm.bias", embed_dim)
    res = img_size // patch_size
    n = window_size * window_size
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        d = embed_dim * 2 ** i
        hidden = d * mlp_ratio
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            put(b + "norm1.weight", d)
            put(b + "norm1.bias", d)
            put(b + "attn.relative_position_bias_table", (2 * window_size - 1) ** 2, heads)
            sd[b + "attn.relative_position_index"] = relative_position_index(window_size).astype(np.int64)
            put(b + "attn.qkv.weight", 3 * d, d)
            put(b + "attn.qkv.bias", 3 * d)
            put(b + "attn.proj.weight", d, d)
            put(b + "attn.proj.bias", d)
            put(b + "norm2.weight", d)
            put(b + "norm2.bias", d)
            put(b + "mlp.fc1.weight", hidden, d)
            put(b + "mlp.fc1.bias", hidden)
            put(b + "mlp.fc2.weight", d, hidden)
            put(b + "mlp.fc2.bias", d)
            if j % 2 == 1 and res > window_size:
                sd[b + "attn_mask"] = np.zeros(((res // window_size) ** 2, n, n), np.float32)
        if i < len(depths) - 1:
            put(f"layers.{i}.downsample.reduction.weight", 2 * d, 4 * d)
            put(f"layers.{i}.downsample.norm.weight", 4 * d)
            put(f"layers.{i}.downsample.norm.bias", 4 * d)
            res //= 2
    final = embed_dim * 2 ** (len(depths) - 1)
    put("norm.weight", final)
    put("norm.bias", final)
    put("head.weight", num_classes, final)
    put("head.bias", num_classes)
    return sd


def _release_key(port_name):
    """Release key expected for a port parameter (LayerNorm gamma/beta are weight/bias there)."""
    stem, _, leaf = port_name.rpartition(".")
    return f"{stem}.{dict(gamma='weight', beta='bias').get(leaf, leaf)}"


def _values(model):
    return {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}


def test_load_swin_imagenet_release_layout(tmp_path, caplog):
    from mindspore import nn

    from src.checkpoint import load_swin_imagenet

    class Holder(nn.Cell):  # the backbone inside a detector: its parameter names get a prefix
        def __init__(self):
            super().__init__()
            self.backbone = SwinBackbone(window_size=7, **SMALL)

    ms.set_seed(0)
    holder = Holder()
    model = holder.backbone
    sd = _imagenet_release_state_dict(window_size=7, **SMALL)
    path = tmp_path / "swin_small_test_window7_224.npz"
    np.savez(path, **sd)
    before = _values(model)
    logger = logging.getLogger("focus_detr.checkpoint")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="focus_detr.checkpoint"):
            report = load_swin_imagenet(model, path)
    finally:
        logger.removeHandler(caplog.handler)
    out_norms = [f"norm{i}.{leaf}" for i in (1, 2, 3) for leaf in ("gamma", "beta")]
    after = _values(model)
    for name, value in after.items():
        if name in out_norms:
            np.testing.assert_array_equal(value, before[name])       # not in ImageNet weights
        else:
            np.testing.assert_array_equal(value, sd[_release_key(name)])
    assert report["loaded"] == len(after) - 6
    assert sorted(report["kept_init"]) == sorted(out_norms)
    assert sorted(report["classifier"]) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    # 8 index buffers, and masks in the shifted block of the stages larger than one window (56, 28, 14)
    assert len(report["structure"]) == 8 + 3
    assert f"loaded {len(after) - 6} Swin ImageNet tensors" in caplog.text and "norm3.beta" in caplog.text
    assert {p.name for p in model.get_parameters()} == {f"backbone.{n}" for n in after}


def test_load_swin_imagenet_lists_every_mismatch():
    from src.checkpoint import CheckpointMismatch, load_swin_imagenet

    model = SwinBackbone(window_size=7, **SMALL)
    before = _values(model)
    sd = _imagenet_release_state_dict(window_size=7, **SMALL)
    sd["layers.1.blocks.0.attn.qkv.weight"] = sd["layers.1.blocks.0.attn.qkv.weight"].T.copy()  # wrong shape
    sd["layers.0.blocks.0.attn.unknown"] = np.zeros(3, np.float32)                             # unknown key
    del sd["layers.2.downsample.reduction.weight"]                                               # missing
    with pytest.raises(CheckpointMismatch) as err:
        load_swin_imagenet(model, sd)
    e = err.value
    assert e.unmapped == ["layers.0.blocks.0.attn.unknown"]
    assert e.missing == ["layers.2.downsample.reduction.weight"]
    assert len(e.mismatched) == 1 and e.mismatched[0].startswith("layers.1.blocks.0.attn.qkv.weight: (32, 96)")
    for text in ("attn.unknown", "downsample.reduction.weight", "qkv.weight"):
        assert text in str(e)
    # nothing was loaded
    assert all(np.array_equal(v, before[n]) for n, v in _values(model).items())
    with pytest.raises(TypeError, match="SwinBackbone"):
        load_swin_imagenet(object(), sd)


def test_load_swin_imagenet_other_window_or_size():
    from src.checkpoint import CheckpointMismatch, swin_imagenet_to_port

    def shapes(**kw):
        return {n: tuple(p.shape) for n, p in SwinBackbone(**kw).parameters_and_names()}

    # window-7 224 weights into a window-12 model: every bias table, with the reason
    window7 = _imagenet_release_state_dict(window_size=7, **SMALL)
    with pytest.raises(CheckpointMismatch) as err:
        swin_imagenet_to_port(window7, shapes(window_size=12, **SMALL))
    assert len(err.value.mismatched) == 8 and not err.value.unmapped and not err.value.missing
    assert "pretrained with window 7, the model uses window 12" in err.value.mismatched[0]
    # a deeper file (more blocks in stage 2) into a shallower model: the extra blocks are listed
    deeper = _imagenet_release_state_dict(window_size=7, embed_dim=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4))
    with pytest.raises(CheckpointMismatch) as err:
        swin_imagenet_to_port(deeper, shapes(window_size=7, **SMALL))
    assert err.value.unmapped and all(k.startswith(("layers.2.blocks.2.", "layers.2.blocks.3."))
                                      for k in err.value.unmapped)
    # an index buffer that is not the relative position index of its window
    bad = _imagenet_release_state_dict(window_size=7, **SMALL)
    bad["layers.0.blocks.0.attn.relative_position_index"] = bad["layers.0.blocks.0.attn.relative_position_index"][::-1]
    with pytest.raises(CheckpointMismatch, match="relative_position_index"):
        swin_imagenet_to_port(bad, shapes(window_size=7, **SMALL))
