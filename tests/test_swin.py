"""Swin backbone: parity with the official detectron2 SwinTransformer (golden fixture
``model_eval_swin_t``), the official parameter names/shapes of every variant, padding to the
window size in graph mode, and drop path only in training."""
import importlib.util
import json

import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor

from src.modeling.backbone.swin import (SWIN_VARIANTS, SwinBackbone, relative_position_index,
                                        shifted_window_mask, swin_backbone)
from src.modeling.backbone.swin_names import is_swin_structure_key, swin_port_name

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32).reshape(3, 1, 1)
ATOL = 1e-4


def _load_golden_weights_module(golden_dir):
    spec = importlib.util.spec_from_file_location("golden_weights", golden_dir / "golden_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _swin_t_entries(golden_dir):
    return json.load(open(golden_dir / "state_dict_swin_t_4scale.json"))["entries"]


def _bare(name):
    return name[len("backbone."):]


def _load_official_backbone(model, official):
    """Load official ``backbone.*`` arrays into a bare SwinBackbone through ``swin_port_name``."""
    params = {}
    for key, value in official.items():
        name = swin_port_name(key)
        if name is not None:
            params[_bare(name)] = Parameter(Tensor(value), name=_bare(name))
    not_loaded, unused = ms.load_param_into_net(model, params, strict_load=True)
    assert not not_loaded and not unused, (not_loaded, unused)


@pytest.fixture(scope="module")
def golden_swin_t(golden_dir):
    """(Swin-T backbone with the fixture's golden weights, fixture arrays, normalized canvas)."""
    meta = json.load(open(golden_dir / "model_eval_swin_t.json"))
    g = dict(np.load(golden_dir / "model_eval_swin_t.npz"))
    entries = _swin_t_entries(golden_dir)
    gw = _load_golden_weights_module(golden_dir)
    weights = gw.golden_weights({e["name"]: tuple(e["shape"]) for e in entries if e["dtype"].startswith("float")},
                                meta["weight_seed"],
                                {e["name"]: e["alias_of"] for e in entries if "alias_of" in e})
    official = {k: v for k, v in weights.items() if k.startswith("backbone.")}
    model = swin_backbone("swin_tiny_224")
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
    ours = {p.name: tuple(p.shape) for p in model.get_parameters()}
    structure = [e for e in entries if is_swin_structure_key(e["name"])]
    assert len(structure) == sum(SWIN_VARIANTS["swin_tiny_224"]["depths"]) == 12
    assert all(e["dtype"] == "int64" and e["kind"] == "buffer" for e in structure)
    mapped = {}
    for e in entries:
        name = swin_port_name(e["name"])
        if e in structure:
            assert name is None
            continue
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


@pytest.mark.parametrize("variant", ["swin_tiny_224", "swin_small_224", "swin_base_384", "swin_large_224",
                                     "swin_large_384"])
def test_variant_param_counts(variant):
    """Spec section 2 table: each official model config builds with the official parameter count."""
    table = {  # embed_dim, depths, heads, window, neck input channels (spec table)
        "swin_tiny_224": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, (192, 384, 768)),
        "swin_small_224": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, (192, 384, 768)),
        "swin_base_384": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, (256, 512, 1024)),
        "swin_large_224": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7, (384, 768, 1536)),
        "swin_large_384": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, (384, 768, 1536)),
    }
    embed_dim, depths, heads, window, channels = table[variant]
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
