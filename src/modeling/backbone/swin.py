"""Swin Transformer backbone with the semantics of detectron2's ``SwinTransformer``.

This is the backbone of the official Swin Focus-DETR configs (``focus_detr_swin_*.py``):
4x4 patch embedding (+ LayerNorm), four stages of (shifted) window attention with a
relative position bias, patch merging between stages, and one LayerNorm per returned stage
(``norm1..norm3``). ``construct`` returns the NCHW maps of ``out_indices`` as a tuple; for the
official ``out_indices=(1, 2, 3)`` these are ``p1, p2, p3`` at strides 8/16/32 with channels
2C/4C/8C.

Behaviour that the detector's numerics depend on, all as in the reference:

* the image is zero-padded at the bottom/right to a multiple of the patch size;
* every block pads its (LayerNorm-ed) input with zeros to a multiple of the window size and
  crops back afterwards; the padded tokens take part in the attention of their window;
* shifted blocks roll the padded map by -window//2, and the attention mask (0 / -100) is the
  one of the shifted layout of the *padded* map. The shift is applied even when a map is
  smaller than one window (the classification Swin would switch it off; detectron2 does not);
* patch merging pads odd maps with one zero row/column and concatenates the 2x2 neighbours
  in the order (0,0), (1,0), (0,1), (1,1) (row, column) before LayerNorm and the reduction;
* stochastic depth (drop path) rates grow linearly from 0 to ``drop_path_rate`` over all
  blocks; drop path is only active in training, an identity in eval.

Every size follows from the input shape, so graph mode compiles one graph per canvas; the
relative position index and the shift masks are numpy constants of those sizes.

Parameter names mirror the official state_dict (``patch_embed.proj.weight``,
``layers.{i}.blocks.{j}.attn.relative_position_bias_table``, ``layers.{i}.downsample.reduction
.weight``, ``norm{i}.gamma`` ...); ``src/checkpoint/official.py`` maps them.
"""
from functools import lru_cache

import mindspore as ms
import numpy as np
from mindcv.models.layers.drop_path import DropPath
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ...layers.attention import build_window_attention
from ...layers.dense import Dense
from ...layers.layer_norm import build_layer_norm
from ...layers.portable_backward import build_gelu, concat

__all__ = ["SwinBackbone", "SWIN_VARIANTS", "swin_backbone", "relative_position_index",
           "shifted_window_mask"]

# Official detectron2 SwinTransformer arguments of the Focus-DETR model configs
# (configs/models/focus_detr_swin_*.py); unnamed arguments keep the class defaults
# (patch 4, mlp_ratio 4, qkv_bias, no ape, patch_norm, drop_path_rate 0.2).
SWIN_VARIANTS = {
    "swin_tiny_224": dict(pretrain_img_size=224, embed_dim=96, depths=(2, 2, 6, 2),
                          num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.1),
    "swin_small_224": dict(pretrain_img_size=224, embed_dim=96, depths=(2, 2, 18, 2),
                           num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2),
    "swin_base_384": dict(pretrain_img_size=384, embed_dim=128, depths=(2, 2, 18, 2),
                          num_heads=(4, 8, 16, 32), window_size=12, drop_path_rate=0.2),
    "swin_large_224": dict(pretrain_img_size=224, embed_dim=192, depths=(2, 2, 18, 2),
                           num_heads=(6, 12, 24, 48), window_size=7, drop_path_rate=0.2),
    "swin_large_384": dict(pretrain_img_size=384, embed_dim=192, depths=(2, 2, 18, 2),
                           num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.2),
}


@lru_cache(maxsize=None)
def relative_position_index(window_size):
    """(N, N) int index into the (2w-1)^2 bias table for the N = w*w tokens of a window."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
    return (rel[:, :, 0] * (2 * window_size - 1) + rel[:, :, 1]).astype(np.int32)


@lru_cache(maxsize=None)
def shifted_window_mask(height, width, window_size, shift):
    """(nW, N, N) float32 additive mask (0 or -100) of the shifted-window layout.

    ``height``/``width`` are the padded map sizes (multiples of ``window_size``). Rows and
    columns are split into the regions [0, size-w), [size-w, size-shift), [size-shift, size),
    as the reference's slices do; two tokens of a window may attend to each other only when
    they come from the same region pair.
    """
    def regions(size):
        idx = np.arange(size)
        return (idx >= size - window_size).astype(np.int64) + (idx >= size - shift)

    ids = regions(height)[:, None] * 3 + regions(width)[None, :]
    ids = ids.reshape(height // window_size, window_size, width // window_size, window_size)
    ids = ids.transpose(0, 2, 1, 3).reshape(-1, window_size * window_size)
    diff = ids[:, None, :] - ids[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def _with_zero_row(rows, source_rows):
    """``rows`` (int, -1 for "zero") as int32 indices into the source rows plus one zero row
    appended after them."""
    return np.where(rows >= 0, rows, source_rows).astype(np.int32)


@lru_cache(maxsize=None)
def window_rows(batch, height, width, window_size, shift):
    """Row indices that move the tokens of a (batch, height, width) map into its window layout
    and back, as the reference's pad, roll, partition (and reverse, roll back, crop) do.

    Returns (to_windows, from_windows): row r of the (batch*nW*ws*ws, C) windows is row
    ``to_windows[r]`` of the (batch*height*width + 1, C) map with a zero row last (padding);
    map token t is row ``from_windows[t]`` of the windows. The map is zero-padded at the
    bottom/right to whole windows, rolled by -shift (torch.roll: out[i] = in[i + shift]),
    split into windows row-major, and the windows of one image follow each other."""
    hp, wp = height + (-height) % window_size, width + (-width) % window_size
    src_r, src_c = (np.arange(hp) + shift) % hp, (np.arange(wp) + shift) % wp
    inside = (src_r[:, None] < height) & (src_c[None, :] < width)
    src = np.where(inside, src_r[:, None] * width + src_c[None, :], -1)
    src = src.reshape(hp // window_size, window_size, wp // window_size, window_size).transpose(0, 2, 1, 3).ravel()
    tokens = height * width
    rows = np.concatenate([np.where(src >= 0, src + b * tokens, -1) for b in range(batch)])
    inverse = np.empty(batch * tokens, np.int32)
    inverse[rows[rows >= 0]] = np.flatnonzero(rows >= 0)
    return _with_zero_row(rows, batch * tokens), inverse


@lru_cache(maxsize=None)
def head_window_rows(batch, height, width, window_size, shift, num_heads):
    """``window_rows`` for head-sized rows: the window layout and the head split in one gather.

    Returns (to_heads, from_heads), int32 rows of shape (3, batch*nW, num_heads, ws*ws) and
    (batch*height*width, num_heads). Row r of ``to_heads`` reads the (map token, q/k/v part,
    head) row of the map's qkv projection viewed as (tokens*3*num_heads, head_dim) rows, a
    padding token reading rows 3*num_heads past the last token: the projection of a zero token,
    the qkv bias. Row (t, head) of ``from_heads`` reads map token t's head from the attention
    output viewed as (batch*nW*num_heads*ws*ws, head_dim) rows."""
    to_windows, from_windows = window_rows(batch, height, width, window_size, shift)
    n, rows_per_token = window_size * window_size, 3 * num_heads
    tokens = to_windows.astype(np.int64).reshape(1, -1, 1, n)      # a padding token is batch*h*w
    parts = np.arange(3).reshape(3, 1, 1, 1) * num_heads + np.arange(num_heads).reshape(1, 1, -1, 1)
    to_heads = tokens * rows_per_token + parts
    inverse = from_windows.astype(np.int64)[:, None]
    from_heads = ((inverse // n) * num_heads + np.arange(num_heads)[None]) * n + inverse % n
    return to_heads.astype(np.int32), from_heads.astype(np.int32)


@lru_cache(maxsize=None)
def merge_rows(batch, height, width):
    """Row indices of patch merging: row (b, i, j, k) of the (batch*h2*w2*4, C) result is row
    ``merge_rows[...]`` of the (batch*height*width + 1, C) map with a zero row last, the 2x2
    neighbour k = (row, column) offset (0,0), (1,0), (0,1), (1,1) of (2i, 2j), zero beyond an
    odd map's last row or column (the reference pads it)."""
    h2, w2 = (height + 1) // 2, (width + 1) // 2
    i, j, dw, dh = np.meshgrid(np.arange(h2), np.arange(w2), np.arange(2), np.arange(2), indexing="ij")
    r, c = 2 * i + dh, 2 * j + dw
    src = np.where((r < height) & (c < width), r * width + c, -1).ravel()
    rows = np.concatenate([np.where(src >= 0, src + b * height * width, -1) for b in range(batch)])
    return _with_zero_row(rows, batch * height * width)


def _with_padding_rows(flat, rows, padding):
    """The 2-D ``flat`` with the rows of ``padding`` appended, which indices ``rows`` (numpy) past
    its last row read; unchanged when none does (the append copies all of ``flat``)."""
    if int(rows.max()) >= flat.shape[0]:
        return concat((flat, padding), 0)
    return flat


def _gather_tokens(x, rows):
    """Rows ``rows`` (numpy int32) of the (..., C) tokens of x, flattened; an index one past the
    last token reads a zero row appended for it (the padding of ``merge_rows``).
    One row gather: the pad and 6-D transpose it replaces kept their outputs allocated
    until the end of a CPU graph (README, "Graph-mode memory on CPU") and took 2-3x longer."""
    c = x.shape[-1]
    flat = _with_padding_rows(x.reshape(-1, c), rows, ops.full((1, c), 0.0, dtype=x.dtype))
    return ops.gather(flat, Tensor(rows), 0)


def _dense(in_dim, out_dim, has_bias=True):
    # reference init (``_init_weights``): trunc_normal(std=0.02) weights, zero biases
    return Dense(in_dim, out_dim, weight_init=TruncatedNormal(0.02), bias_init="zeros", has_bias=has_bias)


def _pad_bottom_right(x, pad_b, pad_r):
    """Zero rows and columns appended to a (B, C, H, W) image (sizes are Python ints).
    Concatenation, not ``ops.pad``: MindSpore 2.10's ONNX exporter has no PadV3."""
    if pad_b > 0:
        x = concat((x, ops.full(x.shape[:2] + (pad_b, x.shape[3]), 0.0, dtype=x.dtype)), 2)
    if pad_r > 0:
        x = concat((x, ops.full(x.shape[:3] + (pad_r,), 0.0, dtype=x.dtype)), 3)
    return x


class Mlp(nn.Cell):
    """fc1 -> exact (erf) GELU -> fc2 (dropout 0 in every official config)."""

    def __init__(self, dim, hidden_dim, gelu_impl="native"):
        super().__init__()
        self.fc1 = _dense(dim, hidden_dim)
        self.act = build_gelu(gelu_impl)
        self.fc2 = _dense(hidden_dim, dim)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Cell):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, attention_impl="native"):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        num_rel = (2 * window_size - 1) ** 2
        self.relative_position_bias_table = Parameter(
            initializer(TruncatedNormal(0.02), (num_rel, num_heads), ms.float32),
            name="relative_position_bias_table")
        # structure, not a weight: the official buffer ``relative_position_index`` is recomputed
        self.rel_index = Tensor(relative_position_index(window_size).reshape(-1))
        self.qkv = _dense(dim, 3 * dim, has_bias=qkv_bias)
        self.proj = _dense(dim, dim)
        # softmax(q k^T + bias + mask) v: the reference or the CPU kernel (``kernels.window_attention``)
        self.core = build_window_attention(attention_impl, self.head_dim, window_size * window_size)

    def to_heads(self, qkv, bias, b, h, w, shift):
        """(B*H*W, 3C) projected map tokens -> q, k, v (B*nW, nH, N, d) of the padded, rolled
        window layout: one row gather of head-sized rows (``head_window_rows``), a padding token
        reading ``bias``. The reference's pad, roll, partition and q/k/v head transposes kept
        their outputs allocated until the end of a CPU graph (README, "Graph-mode memory on
        CPU"); a transpose's kernel keeps two indices per element."""
        rows, _ = head_window_rows(b, h, w, self.window_size, shift, self.num_heads)
        flat = _with_padding_rows(qkv.reshape(-1, self.head_dim), rows, bias.reshape(-1, self.head_dim))
        return tuple(ops.gather(flat, Tensor(rows[i].ravel()), 0).reshape(rows.shape[1:] + (self.head_dim,))
                     for i in range(3))

    def from_heads(self, out, b, h, w, shift):
        """``to_heads`` undone for the attention output: (B*nW, nH, N, d) -> (B*H*W, C)."""
        _, rows = head_window_rows(b, h, w, self.window_size, shift, self.num_heads)
        return ops.gather(out.reshape(-1, self.head_dim), Tensor(rows.ravel()), 0).reshape(-1, self.dim)

    def attend(self, q, k, v, mask=None):
        """Attention of q, k, v (B_, nH, N, d) inside each window -> (B_, nH, N, d); mask: None or
        (num_windows, N, N) additive."""
        n = q.shape[2]
        bias = ops.gather(self.relative_position_bias_table, self.rel_index, 0)
        bias = bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)
        return self.core(q * self.scale, k, v, bias, mask)

    def construct(self, x, shift, mask=None):
        """x: (B, H, W, C) map -> (B, H, W, C) window attention output after ``proj``, windows
        of the map zero-padded to whole windows and rolled by -shift; mask: None or
        (num_windows, N, N) additive."""
        b, h, w, c = x.shape
        qkv = self.qkv(x.reshape(-1, c))  # the projection is per token: on the map, before the layout
        bias = ops.cast(self.qkv.bias, qkv.dtype) if self.qkv.has_bias else ops.zeros((3 * c,), qkv.dtype)
        q, k, v = self.to_heads(qkv, bias, b, h, w, shift)
        return self.proj(self.from_heads(self.attend(q, k, v, mask), b, h, w, shift)).reshape(b, h, w, c)


class SwinTransformerBlock(nn.Cell):
    """LN -> (shifted) window attention -> residual; LN -> MLP -> residual, on (B, H, W, C)."""

    def __init__(self, dim, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0,
                 qkv_bias=True, drop_path=0.0, gelu_impl="native", attention_impl="native",
                 layer_norm_impl="native"):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError("shift_size must be in [0, window_size)")
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = build_layer_norm(dim, layer_norm_impl)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attention_impl)
        self.drop_path = DropPath(drop_path)
        self.norm2 = build_layer_norm(dim, layer_norm_impl)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu_impl)

    def padded_size(self, h, w):
        """The map size rounded up to whole windows."""
        ws = self.window_size
        return h + (ws - h % ws) % ws, w + (ws - w % ws) % ws

    def window_mask(self, h, w):
        """The shifted-window mask of an H x W map (None in a regular block)."""
        if self.shift_size == 0:
            return None
        return Tensor(shifted_window_mask(*self.padded_size(h, w), self.window_size, self.shift_size))

    def construct(self, x):
        _, h, w, _ = x.shape
        x = x + self.drop_path(self.attn(self.norm1(x), self.shift_size, self.window_mask(h, w)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Cell):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): 2x2 neighbours concatenated, LN, Linear."""

    def __init__(self, dim, layer_norm_impl="native"):
        super().__init__()
        self.dim = dim
        self.reduction = _dense(4 * dim, 2 * dim, has_bias=False)
        self.norm = build_layer_norm(4 * dim, layer_norm_impl)

    def construct(self, x):
        b, h, w, c = x.shape
        merged = _gather_tokens(x, merge_rows(b, h, w))
        return self.reduction(self.norm(merged.reshape(b, (h + 1) // 2, (w + 1) // 2, 4 * c)))


class BasicLayer(nn.Cell):
    """One stage: ``depth`` blocks alternating regular and shifted windows, then the optional
    patch merging. Returns (stage output, input of the next stage)."""

    def __init__(self, dim, depth, num_heads, window_size=7, mlp_ratio=4.0, qkv_bias=True,
                 drop_path=(), downsample=True, gelu_impl="native", attention_impl="native",
                 layer_norm_impl="native"):
        super().__init__()
        self.blocks = nn.CellList([
            SwinTransformerBlock(dim, num_heads, window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path[i],
                                 gelu_impl=gelu_impl, attention_impl=attention_impl,
                                 layer_norm_impl=layer_norm_impl)
            for i in range(depth)])
        self.has_downsample = downsample
        if downsample:
            self.downsample = PatchMerging(dim, layer_norm_impl)

    def construct(self, x):
        for blk in self.blocks:
            x = blk(x)
        if self.has_downsample:
            return x, self.downsample(x)
        return x, x


class PatchEmbed(nn.Cell):
    """Zero-pad to a multiple of the patch, conv patch x patch / patch, optional LayerNorm.
    Returns (B, H/p, W/p, C)."""

    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, patch_norm=True, layer_norm_impl="native"):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, pad_mode="valid",
                              has_bias=True)
        self.has_norm = patch_norm
        if patch_norm:
            self.norm = build_layer_norm(embed_dim, layer_norm_impl)

    def construct(self, x):
        h, w = x.shape[2], x.shape[3]
        p = self.patch_size
        pad_b, pad_r = (p - h % p) % p, (p - w % p) % p
        x = self.proj(_pad_bottom_right(x, pad_b, pad_r)).transpose(0, 2, 3, 1)
        if self.has_norm:
            x = self.norm(x)
        return x


class SwinBackbone(nn.Cell):
    """detectron2 ``SwinTransformer`` as a MindSpore Cell.

    ``construct(x)``: x (B, 3, H, W) normalized images; returns a tuple with one NCHW map per
    entry of ``out_indices`` (stage i has stride 2**(i+2) and ``embed_dim * 2**i`` channels and
    size ceil(H / 2**(i+2)) x ceil(W / 2**(i+2))). ``out_channels`` / ``out_strides`` list them.

    Only the options the official configs use are implemented: absolute position embedding
    (``ape``), dropout and attention dropout other than 0 and frozen stages are rejected.
    ``pretrain_img_size`` only matters for ``ape`` and is recorded.
    """

    def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                 mlp_ratio=4.0, drop_path_rate=0.2, out_indices=(1, 2, 3), patch_size=4,
                 pretrain_img_size=224, in_chans=3, qkv_bias=True, patch_norm=True, ape=False,
                 drop_rate=0.0, attn_drop_rate=0.0, frozen_stages=-1, gelu_impl="native",
                 attention_impl="native", layer_norm_impl="native"):
        super().__init__()
        if ape:
            raise NotImplementedError("absolute position embedding (ape=True) is not used by any "
                                      "official Focus-DETR config and is not implemented")
        if drop_rate or attn_drop_rate:
            raise NotImplementedError("dropout / attention dropout are 0 in every official config")
        if frozen_stages != -1:
            raise NotImplementedError("frozen_stages is -1 in every official config")
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        num_layers = len(depths)
        if not out_indices or any(i < 0 or i >= num_layers for i in out_indices):
            raise ValueError(f"out_indices must be within 0..{num_layers - 1}")
        self.pretrain_img_size = pretrain_img_size
        self.embed_dim = embed_dim
        self.depths = tuple(depths)
        self.num_heads = tuple(num_heads)
        self.window_size = window_size
        self.num_layers = num_layers
        self.out_indices = tuple(out_indices)
        self.num_features = tuple(int(embed_dim * 2 ** i) for i in range(num_layers))
        self.out_channels = tuple(self.num_features[i] for i in self.out_indices)
        self.out_strides = tuple(patch_size * 2 ** i for i in self.out_indices)
        self.output_names = tuple(f"p{i}" for i in self.out_indices)  # detectron2 output keys
        self._last = max(self.out_indices)

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm, layer_norm_impl)
        # stochastic depth decay rule: float32 linspace, as torch.linspace(0, rate, sum(depths))
        dpr = [float(v) for v in np.linspace(0.0, drop_path_rate, sum(depths), dtype=np.float32)]
        layers = []
        for i in range(num_layers):
            start = sum(depths[:i])
            layers.append(BasicLayer(
                self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias,
                drop_path=dpr[start:start + depths[i]], downsample=i < num_layers - 1, gelu_impl=gelu_impl,
                attention_impl=attention_impl, layer_norm_impl=layer_norm_impl))
        self.layers = nn.CellList(layers)
        for i in self.out_indices:
            setattr(self, f"norm{i}", build_layer_norm(self.num_features[i], layer_norm_impl))
        # plain tuple for construct (the Cells are registered under norm{i} above)
        self._out_norms = tuple(getattr(self, f"norm{i}") for i in self.out_indices)

    def recompute_blocks(self):
        """The stages ``train.recompute`` recomputes (``FocusDETR.recompute_blocks``)."""
        return list(self.layers)

    def construct(self, x, extent=None):
        """``extent`` is not used: the windows, their padding and the shifted-window masks follow
        the canvas, so on a canvas larger than the official extent the maps near its border
        differ (README, "Static canvases")."""
        x = self.patch_embed(x)
        outs = ()
        k = 0
        for i in range(self.num_layers):
            if i <= self._last:
                x_out, x = self.layers[i](x)
                if i in self.out_indices:
                    outs = outs + (self._out_norms[k](x_out).transpose(0, 3, 1, 2),)
                    k = k + 1
        return outs


def swin_backbone(variant, **overrides):
    """A ``SwinBackbone`` of one of the official configs (``SWIN_VARIANTS``), e.g. 'swin_tiny_224'."""
    if variant not in SWIN_VARIANTS:
        raise ValueError(f"unknown Swin variant {variant!r}; known: {sorted(SWIN_VARIANTS)}")
    kwargs = dict(SWIN_VARIANTS[variant])
    kwargs.update(overrides)
    return SwinBackbone(**kwargs)
