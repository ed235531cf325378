"""ResNet backbone pieces against NumPy, in GRAPH_MODE and PYNATIVE_MODE (the whole backbone
is checked against the official code by the parity tests)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from weighted_sum import WeightedSum

from src.modeling.backbone.resnet_norm import BatchNorm2d, FrozenBatchNorm2d


@pytest.mark.parametrize("impl", ["native", "kernel"])
def test_frozen_batch_norm_is_the_fixed_affine_map(mode, impl):
    rng = np.random.default_rng(0)
    channels = 6
    stats = {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 0.5, channels),
             "moving_mean": rng.normal(0, 1, channels), "moving_variance": rng.uniform(0.1, 3, channels)}
    norm = FrozenBatchNorm2d(channels, eps=1e-5, impl=impl)
    for name, value in stats.items():
        getattr(norm, name).set_data(Tensor(value.astype(np.float32)))
    norm.set_train(True)  # frozen: training mode must not switch to batch statistics
    x = rng.normal(2.0, 3.0, (2, channels, 5, 7)).astype(np.float32)
    weight = rng.normal(size=x.shape).astype(np.float32)

    scale = stats["gamma"] / np.sqrt(stats["moving_variance"] + 1e-5)
    shift = stats["beta"] - stats["moving_mean"] * scale
    ref = x * scale[:, None, None] + shift[:, None, None]  # detectron2's FrozenBatchNorm2d
    np.testing.assert_allclose(norm(Tensor(x)).asnumpy(), ref, rtol=1e-5, atol=1e-5)

    net = WeightedSum(norm)
    grad_x = ms.grad(net, grad_position=0)(Tensor(x), Tensor(weight))
    np.testing.assert_allclose(grad_x.asnumpy(), weight * scale[:, None, None], rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in norm.get_parameters())
    shortcut = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(norm(Tensor(x), relu=True).asnumpy(), np.maximum(ref, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm(Tensor(x), Tensor(shortcut), relu=True).asnumpy(),
                               np.maximum(ref + shortcut, 0), rtol=1e-5, atol=1e-5)


def test_trainable_batch_norm_applies_the_block_ending(mode):
    """The small ResNets' trainable norm is called as the frozen one: BatchNorm, shortcut, ReLU."""
    rng = np.random.default_rng(2)
    x, shortcut = (rng.normal(size=(2, 4, 3, 5)).astype(np.float32) for _ in range(2))
    norm = BatchNorm2d(4)
    norm.set_train(False)  # running statistics 0 and 1: y = x / sqrt(1 + eps)
    y = x / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(norm(Tensor(x)).asnumpy(), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm(Tensor(x), relu=True).asnumpy(), np.maximum(y, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm(Tensor(x), Tensor(shortcut), relu=True).asnumpy(), np.maximum(y + shortcut, 0),
                               rtol=1e-5, atol=1e-6)


class _WeightedPool(nn.Cell):
    def __init__(self, pool, weight):
        super().__init__()
        self.pool, self.weight = pool, Tensor(weight)

    def construct(self, x):
        return (self.pool(x) * self.weight).sum()


def test_stem_max_pool_equals_the_padded_max_pool(mode):
    """The -inf border and unpadded pool (exportable to ONNX) against MindSpore's padded
    max pool, on odd and even sizes, forward and backward (distinct values: no ties; all
    negative: a zero border would change every border window)."""
    from src.modeling.backbone.resnet import StemMaxPool

    rng = np.random.default_rng(1)
    for h, w in ((9, 12), (8, 7)):
        x = -1.0 - rng.permutation(2 * 3 * h * w).reshape(2, 3, h, w).astype(np.float32)
        padded = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        ours, theirs = StemMaxPool()(Tensor(x)).asnumpy(), padded(Tensor(x)).asnumpy()
        assert ours.shape == theirs.shape == (2, 3, (h - 1) // 2 + 1, (w - 1) // 2 + 1)
        np.testing.assert_array_equal(ours, theirs)
        weight = rng.normal(size=ours.shape).astype(np.float32)
        np.testing.assert_array_equal(ms.grad(_WeightedPool(StemMaxPool(), weight))(Tensor(x)).asnumpy(),
                                      ms.grad(_WeightedPool(padded, weight))(Tensor(x)).asnumpy())


class _BackboneLoss(nn.Cell):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def construct(self, x):
        return sum(out.astype(ms.float32).mean() for out in self.backbone(x))


@pytest.mark.parametrize("impl", ["native", "kernel"])
def test_frozen_norms_under_float16(mode, impl):
    """O2 wraps every frozen norm in a float32 cast wrapper that forwards the call's arguments: the
    shortcut and the ReLU reach the norm (native and kernel), and the backbone's outputs and the
    input's gradient match float32 to float16 accuracy."""
    from src.engine.mixed_precision import apply_mixed_precision
    from src.modeling.backbone.resnet import ResNetBackbone

    x = Tensor(np.random.default_rng(3).normal(size=(1, 3, 64, 64)).astype(np.float32))
    weights = {p.name: p.asnumpy() for p in ResNetBackbone(18, freeze_at=0).get_parameters()}
    results = []
    for level in ("O0", "O2"):
        backbone = ResNetBackbone(18, freeze_at=0, frozen_bn_impl=impl)
        for p in backbone.get_parameters():
            p.set_data(Tensor(weights[p.name]))
        backbone = apply_mixed_precision(backbone, level)
        outs = [o.astype(ms.float32).asnumpy() for o in backbone(x)]
        results.append((outs, ms.grad(_BackboneLoss(backbone))(x).asnumpy()))
    (ref_outs, ref_grad), (outs, grad) = results
    for ours, ref in zip(outs, ref_outs):
        assert (ref > 0).any() and (ref == 0).any()  # the ReLU ran: a block ends in it
        np.testing.assert_allclose(ours, ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())
    # float16 through 20 layers moves some ReLU masks: 0.04-0.05 of the gradient's norm measured
    assert np.linalg.norm(grad - ref_grad) <= 0.1 * np.linalg.norm(ref_grad)
