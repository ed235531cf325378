"""export.py: the exported MINDIR, reloaded with ``mindspore.load`` + ``nn.GraphCell``, and the
exported ONNX file, run by onnxruntime, give the Python model's detections on real (synthetic,
padded) images. The Python model runs in PyNative: the export compiles the graph once, and
graph mode gives PyNative's results (tests/test_parity.py)."""
from pathlib import Path

import mindspore as ms
import numpy as np
import onnxruntime
import pytest
from mindspore import Tensor, nn

import export
from src.config import load_config
from src.data.synthetic import generate_image
from src.inference import build_inference_net, preprocess
from src.runtime import mode_scope

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
    with mode_scope("pynative"):
        expected = [t.asnumpy() for t in net(*inputs)]
    got = [t.asnumpy() for t in graph(*inputs)]
    assert len(got) == len(expected) == 4
    for name, e, g in zip(("scores", "labels", "boxes", "keep"), expected, got):
        assert g.shape == e.shape and g.dtype == e.dtype, name
        assert np.abs(g.astype(np.float64) - e.astype(np.float64)).max() <= 1e-5, name
    assert expected[2].shape == (2, cfg.model.num_select, 4)


def test_onnx_refuses_custom_kernels():
    with pytest.raises(SystemExit) as exc:
        export.main(["--config", CONFIG, "--random-init", "--file_format", "ONNX", "--custom-kernels",
                     "--height", "128", "--width", "128"])
    assert exc.value.code == 2


@pytest.mark.parametrize("backbone", [[], ["model.backbone.name=swin", "model.backbone.variant=swin_tiny_224"]],
                         ids=["resnet50", "swin_tiny"])
def test_onnx_in_onnxruntime_equals_the_mindspore_model(tmp_path, backbone):
    """The ONNX file against the MindSpore model with the export's implementations
    (``export.ONNX_KERNELS``) and against the default one (the config's kernels, MindSpore's
    erf): the same labels and kept boxes, scores and boxes (normalized by the original image
    size, the model's own scale) within 1e-4."""
    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = load_config(CONFIG, TINY + backbone)
    ms.set_seed(0)
    default_net = build_inference_net(cfg)
    ckpt = str(tmp_path / "tiny.ckpt")
    ms.save_checkpoint(default_net.model, ckpt)
    export_net = build_inference_net(load_config(CONFIG, TINY + backbone + export.ONNX_KERNELS), ckpt)
    rng = np.random.default_rng(1)
    images = [generate_image(rng, cfg.model.num_classes, (80, 128))[0] for _ in range(2)]
    inputs = [Tensor(x) for x in preprocess(images, cfg.data, cfg.data.eval_canvases)]

    name = str(tmp_path / "tiny")
    assert export.main(["--config", CONFIG, "--ckpt", ckpt, "--file_format", "ONNX", "--batch", "2",
                        "--height", "128", "--width", "128", "--output", name] + TINY + backbone) == 0
    session = onnxruntime.InferenceSession(name + ".onnx", providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "image_sizes", "orig_sizes"]
    assert [o.name for o in session.get_outputs()] == list(export.OUTPUT_NAMES)
    got = session.run(None, {i.name: t.asnumpy() for i, t in zip(session.get_inputs(), inputs)})
    scale = np.tile(inputs[2].asnumpy()[:, None, ::-1], (1, 1, 2)).astype(np.float64)  # (B,1,4) w,h,w,h
    for reference in (export_net, default_net):
        with mode_scope("pynative"):
            expected = [t.asnumpy() for t in reference(*inputs)]
        for output, e, g in zip(export.OUTPUT_NAMES, expected, got):
            assert g.shape == e.shape and g.dtype == e.dtype, output
            if output in ("labels", "keep"):
                np.testing.assert_array_equal(g, e, err_msg=output)
            else:
                diff = np.abs(g.astype(np.float64) - e.astype(np.float64)) / (scale if output == "boxes" else 1.0)
                assert diff.max() <= 1e-4, (output, diff.max())


def test_inference_net_releases_freed_memory_after_each_first_compile(monkeypatch):
    """The first graph-mode call per input shape gives the compiler's freed memory back
    (``src.runtime.release_freed_memory``, glibc here); later calls of that shape do not; the
    detections are those of PyNative."""
    import src.inference
    from src.runtime import release_freed_memory

    assert release_freed_memory()  # glibc has malloc_trim
    released = []
    monkeypatch.setattr(src.inference, "release_freed_memory", lambda: released.append(1))
    cfg = load_config(CONFIG, TINY)
    ms.set_seed(0)
    net = build_inference_net(cfg)
    rng = np.random.default_rng(0)
    images = [generate_image(rng, cfg.model.num_classes, (90, 128))[0] for _ in range(2)]
    one, two = ([Tensor(x) for x in preprocess(images[:n], cfg.data, cfg.data.eval_canvases)] for n in (1, 2))
    with mode_scope("graph"):
        first = [t.asnumpy() for t in net(*one)]
        net(*one)
        assert len(released) == 1
        net(*two)
        assert len(released) == 2
    with mode_scope("pynative"):
        expected = [t.asnumpy() for t in net(*one)]
    assert len(released) == 2  # PyNative compiles nothing
    for got, want in zip(first, expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
