"""export.py: the exported MINDIR, reloaded with ``mindspore.load`` + ``nn.GraphCell``, gives the
Python model's detections on real (synthetic, padded) images."""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import export
from src.config import load_config
from src.data.synthetic import generate_image
from src.inference import build_inference_net, preprocess

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "config/quickstart.yaml")
TINY = ["model.num_encoder_layers=1", "model.cascade=[1.0]", "model.num_decoder_layers=2", "model.embed_dim=32",
        "model.num_heads=2", "model.ffn_dim=64", "model.num_queries=20", "model.num_select=20", "model.topk_sa=30",
        "data.test_short_side=96", "data.test_max_size=128", "data.eval_canvases=[[128, 128]]"]


def test_export_requires_weights_or_random_init():
    with pytest.raises(SystemExit) as exc:
        export.main(["--config", CONFIG, "--height", "128", "--width", "128"])
    assert exc.value.code == 2


@pytest.mark.parametrize("custom_kernels", [False, True], ids=["portable", "custom_kernels"])
def test_mindir_round_trip_equals_python_model(tmp_path, custom_kernels):
    ms.set_context(mode=ms.GRAPH_MODE)
    # the Python model uses the implementations that export.py puts into the graph
    cfg = load_config(CONFIG, TINY + ([] if custom_kernels else export.PORTABLE_KERNELS))
    ms.set_seed(0)
    net = build_inference_net(cfg)
    ckpt = str(tmp_path / "tiny.ckpt")
    ms.save_checkpoint(net.model, ckpt)
    rng = np.random.default_rng(0)
    images = [generate_image(rng, cfg.model.num_classes, (90, 128))[0] for _ in range(2)]
    inputs = [Tensor(x) for x in preprocess(images, cfg.data, cfg.data.eval_canvases)]
    assert (inputs[1].asnumpy() < 128).any()  # real padding inside the canvas

    name = str(tmp_path / "tiny")
    assert export.main(["--config", CONFIG, "--ckpt", ckpt, "--file_format", "MINDIR", "--batch", "2",
                        "--height", "128", "--width", "128", "--output", name]
                       + (["--custom-kernels"] if custom_kernels else []) + TINY) == 0
    graph = nn.GraphCell(ms.load(name + ".mindir"))
    expected = [t.asnumpy() for t in net(*inputs)]
    got = [t.asnumpy() for t in graph(*inputs)]
    assert len(got) == len(expected) == 4
    for name, e, g in zip(("scores", "labels", "boxes", "keep"), expected, got):
        assert g.shape == e.shape and g.dtype == e.dtype, name
        assert np.abs(g.astype(np.float64) - e.astype(np.float64)).max() <= 1e-5, name
    assert expected[2].shape == (2, cfg.model.num_select, 4)
