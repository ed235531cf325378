"""The pieces that make a larger static canvas give the official numbers (``src.layers.extent``),
each against the same computation on a map cut to the extent, in both modes."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from src.layers.extent import downsampled, nearest_source
from src.modeling.backbone.resnet import ResNetBackbone
from src.modeling.mask_predictor import MaskPredictor
from src.modeling.neck import GroupNorm
from src.modeling.token_selector import resize_aligned


class Nearest(nn.Cell):
    def construct(self, extent, cells):
        return nearest_source(extent, cells, 200)


class Resize(nn.Cell):
    def construct(self, x, in_cells, out_cells):
        return resize_aligned(x, in_cells, out_cells, (14, 18))


def aten_nearest(in_len, out_len):
    scale = np.float32(in_len) / np.float32(out_len)
    return np.minimum(np.floor(np.arange(out_len, dtype=np.float32) * scale).astype(np.int64), in_len - 1)


def test_nearest_source_is_atens_rule(mode):
    pairs = [(384, 48), (368, 46), (352, 22), (1333, 167), (800, 100), (7, 14), (5, 5), (423, 53)]
    extent = Tensor(np.array([p[0] for p in pairs], np.int32))
    cells = Tensor(np.array([p[1] for p in pairs], np.int32))
    got = Nearest()(extent, cells).asnumpy()
    for row, (in_len, out_len) in zip(got, pairs):
        np.testing.assert_array_equal(row[:out_len], aten_nearest(in_len, out_len))


def test_resize_aligned_is_interpolate_on_the_extent(mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 9)).astype(np.float32)
    in_cells = np.array([[7, 9], [4, 6]], np.int32)
    out_cells = np.array([[13, 17], [7, 11]], np.int32)
    got = Resize()(Tensor(x), Tensor(in_cells), Tensor(out_cells)).asnumpy().reshape(2, 14, 18)
    for b in range(2):
        (ih, iw), (oh, ow) = in_cells[b], out_cells[b]
        ref = ops.interpolate(Tensor(x[b:b + 1, None, :ih, :iw]), size=(int(oh), int(ow)), mode="bilinear",
                              align_corners=True).asnumpy()[0, 0]
        np.testing.assert_allclose(got[b, :oh, :ow], ref, rtol=1e-6, atol=1e-6)


def test_group_norm_statistics_cover_the_extent(mode):
    rng = np.random.default_rng(1)
    norm = GroupNorm(4, 8)
    norm.gamma.set_data(Tensor(rng.uniform(0.5, 2, 8).astype(np.float32)))
    norm.beta.set_data(Tensor(rng.standard_normal(8).astype(np.float32)))
    x = rng.standard_normal((2, 8, 9, 11)).astype(np.float32) * 3 + 1
    extent = np.array([[9, 11], [5, 7]], np.int32)
    got = norm(Tensor(x), Tensor(extent)).asnumpy()
    for b, (h, w) in enumerate(extent):
        ref = nn.GroupNorm(4, 8, gamma_init=Tensor(norm.gamma.asnumpy()), beta_init=Tensor(norm.beta.asnumpy()))(
            Tensor(x[b:b + 1, :, :h, :w])).asnumpy()
        np.testing.assert_allclose(got[b:b + 1, :, :h, :w], ref, rtol=1e-5, atol=1e-5)


def test_mask_predictor_mean_over_the_extent(mode):
    rng = np.random.default_rng(2)
    head = MaskPredictor(16, 16)
    x = rng.standard_normal((2, 30, 16)).astype(np.float32)
    inside = np.zeros((2, 30, 1), np.float32)
    inside[0, :30] = 1
    inside[1, :12] = 1
    got = head(Tensor(x), Tensor(inside)).asnumpy()
    np.testing.assert_allclose(got[1, :12], head(Tensor(x[1:2, :12])).asnumpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0], head(Tensor(x[:1])).asnumpy()[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_maps_inside_the_extent_are_the_cut_images(mode, depth):
    """On a canvas larger than the (zero-padded) image, the maps inside the extent are those of
    the image alone (convolution zero padding at the extent's border, not the canvas's)."""
    ms.set_seed(0)
    net = ResNetBackbone(depth, freeze_at=0, norm="frozen_bn")
    net.set_train(False)
    rng = np.random.default_rng(3)
    for p in net.get_parameters():  # shifts make the canvas outside the image non-zero after every norm
        if p.name.endswith(("beta", "moving_mean")):
            p.set_data(Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
    extent = np.array([[45, 61], [37, 50]], np.int32)  # odd sizes: every stride-2 layer rounds up
    canvas = np.zeros((2, 3, 80, 96), np.float32)
    for b, (h, w) in enumerate(extent):
        canvas[b, :, :h, :w] = rng.standard_normal((3, h, w))
    got = net(Tensor(canvas), Tensor(extent))
    for b, (h, w) in enumerate(extent):
        alone = net(Tensor(canvas[b:b + 1, :, :h, :w]))
        for stride, ours, ref in zip(net.out_strides, got, alone):
            cells = downsampled(Tensor(extent[b:b + 1]), stride).asnumpy()[0]
            assert ref.shape[2:] == tuple(cells)
            np.testing.assert_allclose(ours.asnumpy()[b, :, :cells[0], :cells[1]], ref.asnumpy()[0],
                                       rtol=1e-4, atol=1e-4 * float(np.abs(ref.asnumpy()).max()))
