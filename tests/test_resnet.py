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
