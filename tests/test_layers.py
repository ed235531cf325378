"""Primitives against NumPy references, in GRAPH_MODE and PYNATIVE_MODE."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from src.layers.attention import MASK_VALUE, MultiheadAttention, head_rows, softmax_product
from src.layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid, pairwise_generalized_box_iou
from src.layers.compile_time import arange_along
from src.layers.dense import Dense
from src.layers.elementwise import divide
from src.layers.extent import smallest
from src.layers.masking import logical_not, masked_fill, zero_masked_rows
from src.layers.position_embedding import BoxSineEmbedding, PositionEmbeddingSine
from src.layers.token_ops import build_token_ops, gather_rows
from src.tools.parity.ops import compare_msda

RNG = np.random.default_rng(0)


class Fn(nn.Cell):
    """Wrap a function of tensors so it is compiled as a graph in GRAPH_MODE."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, *args):
        return self.fn(*args)


def np_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def test_multihead_attention_matches_numpy(mode):
    mha = MultiheadAttention(16, 4)
    q, k = RNG.normal(size=(2, 5, 16)).astype(np.float32), RNG.normal(size=(2, 7, 16)).astype(np.float32)
    attn_mask = RNG.random((5, 7)) < 0.3
    attn_mask[:, 0] = False  # no fully blocked row
    padding = np.zeros((2, 7), bool)
    padding[1, 5:] = True
    out = mha(Tensor(q), Tensor(k), Tensor(k), Tensor(attn_mask), Tensor(padding)).asnumpy()

    w_in, b_in = mha.in_proj_weight.asnumpy(), mha.in_proj_bias.asnumpy()
    qp, kp, vp = (x @ w_in[i * 16:(i + 1) * 16].T + b_in[i * 16:(i + 1) * 16] for i, x in enumerate((q, k, k)))
    heads = lambda x: x.reshape(2, -1, 4, 4).transpose(0, 2, 1, 3)  # noqa: E731
    logits = heads(qp) @ heads(kp).transpose(0, 1, 3, 2) / 2.0
    logits = np.where(attn_mask[None, None] | padding[:, None, None, :], -np.inf, logits)
    ref = (np_softmax(logits) @ heads(vp)).transpose(0, 2, 1, 3).reshape(2, 5, 16)
    ref = ref @ mha.out_proj.weight.asnumpy().T + mha.out_proj.bias.asnumpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_head_rows_are_the_head_transposes(mode):
    """MultiheadAttention's row gathers move heads exactly as the 4-D transposes they replace,
    forward and backward (a gather's gradient adds each row once: a copy)."""
    bsz, length, heads, dim = 2, 5, 3, 4
    x = RNG.normal(size=(bsz, length, heads * dim)).astype(np.float32)
    weights = Tensor(RNG.normal(size=(bsz * heads * length, dim)).astype(np.float32))

    def to_heads(t):
        return ops.gather(t.reshape(-1, dim), Tensor(head_rows(bsz, length, heads, True)), 0)

    def from_heads(t):
        return ops.gather(t.reshape(-1, dim), Tensor(head_rows(bsz, length, heads, False)), 0)

    def weighted(t):
        return (to_heads(t) * weights).sum()

    split = Fn(to_heads)(Tensor(x)).asnumpy().reshape(bsz, heads, length, dim)
    np.testing.assert_array_equal(split, x.reshape(bsz, length, heads, dim).transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(Fn(from_heads)(Tensor(split)).asnumpy().reshape(x.shape), x)
    grad = ms.grad(Fn(weighted))(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(grad, weights.asnumpy().reshape(bsz, heads, length, dim).transpose(0, 2, 1, 3)
                                  .reshape(x.shape))


def np_sine_embedding(mask, feats, temperature, offset, eps=1e-6):
    not_mask = (~mask).astype(np.float64)
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    y = (y + offset) / (y[:, -1:, :] + eps) * 2 * math.pi
    x = (x + offset) / (x[:, :, -1:] + eps) * 2 * math.pi
    dim_t = temperature ** (2 * (np.arange(feats) // 2) / feats)
    out = []
    for v in (y, x):
        p = v[..., None] / dim_t
        p = np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], -1).reshape(*p.shape)
        out.append(p)
    return np.concatenate(out, -1).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("impl", ["native", "kernel"])
@pytest.mark.parametrize("temperature, offset", [(10000, -0.5), (20, 0.0)])
def test_position_embedding_sine_with_padding(mode, temperature, offset, impl):
    mask = np.zeros((2, 6, 9), bool)
    mask[1, 4:, :] = True
    mask[1, :, 7:] = True
    out = PositionEmbeddingSine(16, temperature, offset, impl=impl)(Tensor(mask)).asnumpy().transpose(0, 3, 1, 2)
    # fully padded rows/columns divide offset by eps (|angle| ~ 1e6): float32 rounding there is
    # checked against the official float32 code by the golden training fixture instead
    ok = ~mask[1]
    ref = np_sine_embedding(mask, 16, temperature, offset)
    np.testing.assert_allclose(out[0], ref[0], atol=2e-5)
    np.testing.assert_allclose(out[1][:, ok], ref[1][:, ok], atol=2e-5)
    assert np.isfinite(out).all()


def test_box_sine_embedding_order(mode):
    boxes = RNG.random((2, 3, 4)).astype(np.float32)
    out = BoxSineEmbedding(8)(Tensor(boxes)).asnumpy()
    dim_t = 10000 ** (2 * (np.arange(8) // 2) / 8)
    p = boxes[..., None] * 2 * math.pi / dim_t
    p = np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], -1).reshape(2, 3, 4, 8)
    ref = np.concatenate([p[:, :, 1], p[:, :, 0], p[:, :, 2], p[:, :, 3]], -1)  # y, x, w, h
    np.testing.assert_allclose(out, ref, atol=2e-5)


def np_giou(a, b):
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = area(a)[:, None] + area(b)[None] - inter
    lt_c = np.minimum(a[:, None, :2], b[None, :, :2])
    rb_c = np.maximum(a[:, None, 2:], b[None, :, 2:])
    hull = np.clip(rb_c - lt_c, 0, None).prod(-1)
    return inter / (union + 1e-6) - (hull - union) / (hull + 1e-6)


def test_box_ops(mode):
    cxcywh = np.concatenate([RNG.random((6, 2)), RNG.random((6, 2)) * 0.5 + 0.01], -1).astype(np.float32)
    xyxy = Fn(box_cxcywh_to_xyxy)(Tensor(cxcywh)).asnumpy()
    np.testing.assert_allclose(xyxy[:, :2], cxcywh[:, :2] - cxcywh[:, 2:] / 2, atol=1e-7)
    np.testing.assert_allclose(Fn(box_xyxy_to_cxcywh)(Tensor(xyxy)).asnumpy(), cxcywh, atol=1e-6)
    giou = Fn(pairwise_generalized_box_iou)(Tensor(xyxy), Tensor(xyxy[:4])).asnumpy()
    np.testing.assert_allclose(giou, np_giou(xyxy.astype(np.float64), xyxy[:4].astype(np.float64)), atol=1e-6)
    x = np.array([0.0, 1e-4, 0.25, 0.5, 0.9999, 1.0], np.float32)
    ref = np.log(np.maximum(x, 1e-3) / np.maximum(1 - x, 1e-3))
    np.testing.assert_allclose(Fn(inverse_sigmoid)(Tensor(x)).asnumpy(), ref, rtol=1e-6)


def test_zero_masked_rows(mode):
    x = RNG.normal(size=(2, 7, 5)).astype(np.float32)
    mask = RNG.random((2, 7)) < 0.4
    out = Fn(zero_masked_rows)(Tensor(x), Tensor(mask)).asnumpy()
    np.testing.assert_array_equal(out, np.where(mask[..., None], 0.0, x))


def test_token_gather_scatter_forward_and_grad(mode):
    gather, scatter = build_token_ops("reference")
    x = RNG.normal(size=(2, 10, 3)).astype(np.float32)
    idx = np.stack([RNG.permutation(10)[:4] for _ in range(2)]).astype(np.int32)
    rows = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    count = np.array([4, 2], np.int32)

    np.testing.assert_array_equal(gather(Tensor(x), Tensor(idx)).asnumpy(), np.take_along_axis(x, idx[..., None], 1))
    ref = x.copy()
    for b in range(2):
        ref[b, idx[b, :count[b]]] = rows[b, :count[b]]
    out = scatter(Tensor(x), Tensor(idx), Tensor(rows), Tensor(count)).asnumpy()
    np.testing.assert_array_equal(out, ref)

    weight = RNG.normal(size=x.shape).astype(np.float32)

    class WeightedScatter(nn.Cell):
        def __init__(self):
            super().__init__()
            self.scatter = scatter

        def construct(self, a, r, i, c, w):
            return (self.scatter(a, i, r, c) * w).sum()

    g_x, g_rows = ms.grad(WeightedScatter(), grad_position=(0, 1))(
        Tensor(x), Tensor(rows), Tensor(idx), Tensor(count), Tensor(weight))
    ref_gx, ref_grows = weight.copy(), np.zeros_like(rows)
    for b in range(2):
        ref_gx[b, idx[b, :count[b]]] = 0.0  # overwritten rows do not reach the output
        ref_grows[b, :count[b]] = weight[b, idx[b, :count[b]]]
    np.testing.assert_allclose(g_x.asnumpy(), ref_gx, atol=1e-6)
    np.testing.assert_allclose(g_rows.asnumpy(), ref_grows, atol=1e-6)


def test_msda_core_matches_golden(mode, golden_dir):
    """The pure-MindSpore sampling cores (gather and grid_sample): forward and all three gradients
    against the official code (the fused kernels: tests/test_ops.py)."""
    g = dict(np.load(golden_dir / "msda_core.npz"))
    rows = compare_msda("msda_core", g, mode, "pure")
    for row in rows:
        assert row.ok, row.line()
    for core in ("MSDeformAttnCoreGather", "MSDeformAttnCoreReference"):
        assert sum(row.note == core for row in rows) == 4, [row.line() for row in rows]


class WeightedSum(nn.Cell):
    """sum(fn(*inputs) * weights): a loss whose gradient reaches every output element differently."""

    def __init__(self, fn, weights):
        super().__init__()
        self.fn, self.weights = fn, Tensor(weights)

    def construct(self, *args):
        return (self.fn(*args) * self.weights).sum()


@pytest.mark.parametrize("v_dtype", [np.float32, np.float16])
def test_softmax_product_equals_softmax_then_matmul_forward_and_backward(mode, v_dtype):
    """The attention core with its own backward: softmax(logits) @ v and both gradients against
    float64 NumPy (softmax's closed-form backward) and against MindSpore's differentiation of
    the same expression; blocked logits (MASK_VALUE), one row fully blocked (a uniform row), v in
    float16 as under mixed precision (the softmax stays float32)."""
    logits = RNG.normal(size=(2, 3, 5, 7)).astype(np.float32) * 3
    logits[RNG.random(logits.shape) < 0.3] = MASK_VALUE
    logits[0, 1, 2] = MASK_VALUE
    v = RNG.normal(size=(2, 3, 7, 4)).astype(v_dtype)
    weights = RNG.normal(size=(2, 3, 5, 4)).astype(np.float32)

    def theirs_fn(a, b):
        return ops.matmul(ops.cast(ops.softmax(a, -1), b.dtype), b)

    ours, theirs = WeightedSum(softmax_product, weights), WeightedSum(theirs_fn, weights)
    w = np_softmax(logits.astype(np.float64))
    w64 = w.astype(v_dtype).astype(np.float64) if v_dtype == np.float16 else w  # the product's operand
    d_w = weights.astype(np.float64) @ v.astype(np.float64).transpose(0, 1, 3, 2)
    want = (w64 @ v.astype(np.float64),
            w * (d_w - (w * d_w).sum(-1, keepdims=True)), w64.transpose(0, 1, 3, 2) @ weights.astype(np.float64))
    tol = dict(rtol=1e-5, atol=1e-5) if v_dtype == np.float32 else dict(rtol=2e-3, atol=2e-3)
    inputs = (Tensor(logits), Tensor(v))
    out = Fn(softmax_product)(*inputs)
    assert out.dtype == ms.float16 if v_dtype == np.float16 else ms.float32
    np.testing.assert_allclose(out.asnumpy().astype(np.float64), want[0], **tol)
    got = ms.grad(ours, (0, 1))(*inputs)
    autodiff = ms.grad(theirs, (0, 1))(*inputs)
    for g, a, exact in zip(got, autodiff, want[1:]):
        assert g.dtype == a.dtype
        np.testing.assert_allclose(g.asnumpy().astype(np.float64), exact, **tol)
        np.testing.assert_allclose(g.asnumpy(), a.asnumpy(), **tol)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_portable_concat_equals_ops_concat(mode, axis):
    from mindspore import ops

    from src.layers.portable_backward import concat

    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    shapes[1] = tuple(5 if i == axis % 3 else s for i, s in enumerate(shapes[1]))
    inputs = [Tensor(RNG.normal(size=s).astype(np.float32)) for s in shapes]
    out_shape = list(shapes[0])
    out_shape[axis] = sum(s[axis] for s in shapes)
    weights = RNG.normal(size=out_shape).astype(np.float32)
    def ours_fn(a, b, c):
        return concat([a, b * 2.0, c], axis)

    def theirs_fn(a, b, c):
        return ops.concat([a, b * 2.0, c], axis)

    np.testing.assert_array_equal(Fn(ours_fn)(*inputs).asnumpy(), Fn(theirs_fn)(*inputs).asnumpy())
    ours, theirs = WeightedSum(ours_fn, weights), WeightedSum(theirs_fn, weights)
    for got, want in zip(ms.grad(ours, (0, 1, 2))(*inputs), ms.grad(theirs, (0, 1, 2))(*inputs)):
        np.testing.assert_array_equal(got.asnumpy(), want.asnumpy())  # slices of the same gradient


def test_portable_gelu_equals_mindspore_gelu(mode):
    from scipy.special import erf

    from src.layers.portable_backward import GELU

    x = np.concatenate([np.linspace(-8, 8, 401), RNG.normal(size=199) * 3]).astype(np.float32).reshape(20, 30)
    weights = RNG.normal(size=x.shape).astype(np.float32)
    ours, theirs = GELU(), nn.GELU(approximate=False)
    x64 = x.astype(np.float64)
    out = ours(Tensor(x)).asnumpy()
    # torch's formula (multiplying by sqrt(1/2)); MindSpore's divides by sqrt(2): float32 rounding apart
    np.testing.assert_allclose(out, x64 * 0.5 * (1 + erf(x64 / math.sqrt(2))), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out, theirs(Tensor(x)).asnumpy(), rtol=1e-6, atol=1e-7)
    grad = ms.grad(WeightedSum(ours, weights))(Tensor(x)).asnumpy()
    exact = weights * (0.5 * (1 + erf(x64 / math.sqrt(2))) + x64 * np.exp(-x64 * x64 / 2) / math.sqrt(2 * math.pi))
    np.testing.assert_allclose(grad, exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ms.grad(WeightedSum(theirs, weights))(Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-6)


def test_rational_erf_gelu_is_within_its_bound_of_the_exact_gelu(mode):
    """The ONNX export's GELU (``kernels.gelu=rational``): erf within 4.4e-7 of float64 erf,
    GELU within 1e-6 of MindSpore's; its backward is the exact GELU's."""
    from scipy.special import erf

    from src.layers.portable_backward import GELU, rational_erf

    x = np.concatenate([np.linspace(-8, 8, 401), RNG.normal(size=199) * 3]).astype(np.float32).reshape(20, 30)
    weights = RNG.normal(size=x.shape).astype(np.float32)
    err = np.abs(Fn(rational_erf)(Tensor(x)).asnumpy() - erf(x.astype(np.float64))).max()
    assert err <= 4.5e-7, err
    rational, native = GELU("rational"), GELU()
    np.testing.assert_allclose(rational(Tensor(x)).asnumpy(), native(Tensor(x)).asnumpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ms.grad(WeightedSum(rational, weights))(Tensor(x)).asnumpy(),
                                  ms.grad(WeightedSum(native, weights))(Tensor(x)).asnumpy())
    with pytest.raises(ValueError, match="kernels.gelu"):
        GELU("tanh")


def _batched_gather(a, i):
    return ops.gather(a, i, 1, 1)


def test_gather_rows_equals_the_batched_gather_forward_and_backward(mode):
    x = RNG.normal(size=(3, 9, 2, 4)).astype(np.float32)
    idx = RNG.integers(0, 9, (3, 12)).astype(np.int32)  # repeated rows: their gradients add up
    weights = RNG.normal(size=(3, 12, 2, 4)).astype(np.float32)
    out = Fn(gather_rows)(Tensor(x), Tensor(idx)).asnumpy()
    np.testing.assert_array_equal(out, np.take_along_axis(x, idx[:, :, None, None], 1))

    ours = ms.grad(WeightedSum(Fn(gather_rows), weights))(Tensor(x), Tensor(idx)).asnumpy()
    theirs = ms.grad(WeightedSum(Fn(_batched_gather), weights))(Tensor(x), Tensor(idx)).asnumpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def _fill_ours(a, m):
    return masked_fill(a, m, -7.0)


def _fill_mindspore(a, m):
    return ops.masked_fill(a, m, -7.0)


def test_mask_operations_equal_mindspore_s(mode):
    x = RNG.normal(size=(2, 3, 5)).astype(np.float32)
    mask = RNG.random((2, 1, 5)) < 0.5  # broadcast over the middle axis
    np.testing.assert_array_equal(Fn(logical_not)(Tensor(mask)).asnumpy(), ~mask)
    got = Fn(_fill_ours)(Tensor(x), Tensor(mask)).asnumpy()
    np.testing.assert_array_equal(got, np.where(mask, np.float32(-7.0), x))
    weights = RNG.normal(size=x.shape).astype(np.float32)
    ours = ms.grad(WeightedSum(Fn(_fill_ours), weights))(Tensor(x), Tensor(mask))
    theirs = ms.grad(WeightedSum(Fn(_fill_mindspore), weights))(Tensor(x), Tensor(mask))
    np.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())


def _amin_times_two(a):
    return ops.amin(a) * 2.0


def _smallest_times_two(a):
    return smallest(a) * 2.0


def test_smallest_equals_amin_forward_and_backward(mode):
    """-max(-x) against ReduceMin, with the minimum tied twice (the gradient is shared alike)."""
    x = RNG.normal(size=(3, 7)).astype(np.float32)
    x[2, 5] = x[0, 1] = x.min() - 1.0
    assert Fn(smallest)(Tensor(x)).asnumpy() == x.min()
    ours = ms.grad(Fn(_smallest_times_two))(Tensor(x)).asnumpy()
    theirs = ms.grad(Fn(_amin_times_two))(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(ours, theirs)
    assert ours[0, 1] == ours[2, 5] == 1.0


class _DivideByConstant(nn.Cell):
    def __init__(self, divisor):
        super().__init__()
        self.divisor = divisor

    def construct(self, x):
        return divide(x, self.divisor)


def test_divide_equals_true_division_and_keeps_its_constant_small_in_mindir(mode, tmp_path):
    """divide broadcasts its constant divisor at run time: an explicit broadcast of a constant is
    folded by the compiler into a constant of the output's shape (here 8 MB), which the MINDIR stores."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 500, 8)).astype(np.float32)
    divisor = np.arange(1, 9, dtype=np.float32)
    net = _DivideByConstant(Tensor(divisor))
    np.testing.assert_array_equal(net(Tensor(x)).asnumpy(), x / divisor)
    ms.export(net, Tensor(x), file_name=str(tmp_path / "divide"), file_format="MINDIR")
    assert (tmp_path / "divide.mindir").stat().st_size < 100_000


@pytest.mark.parametrize("shape", [(5, 6), (2, 5, 6), (2, 3, 4, 6)])
@pytest.mark.parametrize("has_bias", [True, False])
def test_dense_equals_nn_dense_forward_and_backward(mode, shape, has_bias):
    """The Dense of fewer graph nodes (dense.py) computes what nn.Dense does, for inputs of any
    rank, with or without a bias: same output, input and parameter gradients, bit for bit."""
    x = RNG.normal(size=shape).astype(np.float32)
    weights = RNG.normal(size=shape[:-1] + (7,)).astype(np.float32)
    ours, theirs = Dense(6, 7, has_bias=has_bias), nn.Dense(6, 7, has_bias=has_bias)
    for mine, other in zip(ours.get_parameters(), theirs.get_parameters()):
        assert mine.name == other.name
        mine.set_data(Tensor(RNG.normal(size=other.shape).astype(np.float32)))
        other.set_data(mine.value().copy())
    np.testing.assert_array_equal(ours(Tensor(x)).asnumpy(), theirs(Tensor(x)).asnumpy())
    assert ours(Tensor(x)).shape == shape[:-1] + (7,)
    grads = [ms.grad(WeightedSum(net, weights), grad_position=0, weights=net.trainable_params())(Tensor(x))
             for net in (ours, theirs)]
    np.testing.assert_array_equal(grads[0][0].asnumpy(), grads[1][0].asnumpy())
    assert len(grads[0][1]) == len(grads[1][1]) == (2 if has_bias else 1)
    for mine, other in zip(grads[0][1], grads[1][1]):
        np.testing.assert_array_equal(mine.asnumpy(), other.asnumpy())


def test_dense_refuses_an_activation():
    """Its construct applies none: an activation argument would be dropped silently."""
    with pytest.raises(ValueError, match="no activation"):
        Dense(6, 7, activation="relu")


def _with_row_and_column_indices(x):
    return x + arange_along(x.shape[1], x.dtype, 1, 3), arange_along(x.shape[2], ms.int32, -1, 3)


def _with_indexed_aranges(x):
    return (x + ops.arange(x.shape[1], dtype=x.dtype)[None, :, None],
            ops.arange(x.shape[2], dtype=ms.int32)[None, None, :])


def test_arange_along_is_the_indexed_arange(mode):
    """The compile-time index vector (compile_time.py) equals ops.arange indexed with None on
    the other axes: values, shape and dtype."""
    x = Tensor(RNG.normal(size=(2, 3, 5)).astype(np.float32))
    for ours, theirs in zip(Fn(_with_row_and_column_indices)(x), Fn(_with_indexed_aranges)(x)):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())
