"""Test-time inference shared by export.py, infer.py and scripts/benchmark.py.

Preprocessing (what the exported MINDIR expects as well): read RGB, resize the shortest edge
to ``data.test_short_side`` with the longest edge at most ``data.test_max_size`` (detectron2
``ResizeShortestEdge``), keep raw 0..255 values (the model normalizes inside), and pad with
zeros at the bottom/right to a static canvas. ``InferenceNet`` runs the detector and the
post-processing in one graph; it is the Cell that export.py writes to MINDIR.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from mindspore.ops import functional as F

from .checkpoint import load_port_checkpoint
from .data.coco import decode_image
from .data.loader import choose_canvas, pad_to_canvas
from .data.transforms import resize_image, resize_shortest_edge_size
from .modeling.build import build_model
from .modeling.postprocess import PostProcess
from .runtime import release_freed_memory


def read_image(path):
    """RGB uint8 (H, W, 3), decoded as the dataset reader does."""
    image = decode_image(path)
    if image is None:
        raise ValueError(f"{path}: cannot decode image")
    return image


def preprocess(images, data_cfg, canvases=None):
    """RGB uint8 images -> (images (B,3,Hc,Wc) float32 raw 0..255 zero-padded bottom/right,
    image_sizes (B,2) int32 [h, w] after the resize, orig_sizes (B,2) int32 [h, w] before it).

    ``canvases``: list of (Hc, Wc); the smallest that holds the batch is used (ValueError if
    none does). None pads to the batch maximum (no padding for a single image, as the
    official batch-1 inference).
    """
    resized = [resize_image(img, *resize_shortest_edge_size(*img.shape[:2], data_cfg.test_short_side,
                                                            data_cfg.test_max_size), data_cfg.interpolation)
               for img in images]
    batch = pad_to_canvas(resized, choose_canvas([r.shape[:2] for r in resized], canvases))
    image_sizes = np.array([r.shape[:2] for r in resized], np.int32)
    orig_sizes = np.array([img.shape[:2] for img in images], np.int32)
    return batch, image_sizes, orig_sizes


def focus_capture_names(model):
    """Intermediates the foreground-token picture needs: the token ranking each encoder layer
    takes its rows from, the per-layer counts k_l, each image's own budget, and the per-level
    masks (only their shapes are used: the token grid of every level)."""
    layers = len(model.transformer.encoder.layers)
    return (tuple(f"foreground_inds_l{lid}" for lid in range(layers))
            + ("encoder_foreground_topk", "focus_token_nums")
            + tuple(f"mask_l{i}" for i in range(model.transformer.num_levels)))


class InferenceNet(nn.Cell):
    """Detector + ``PostProcess`` on the last decoder layer, in eval mode.

    Inputs: images (B,3,H,W) float32 raw RGB 0..255 zero-padded, image_sizes (B,2) int32 [h, w]
    of each resized image in the canvas, orig_sizes (B,2) int32 [h, w] of the original image.
    Outputs: scores (B,K) float32, labels (B,K) int32, boxes (B,K,4) float32 xyxy in original
    pixels, keep (B,K) bool (non-empty boxes); K = num_select. With ``with_focus`` the tensors
    named by ``focus_names`` follow.

    ``auto_prefix=False`` keeps the model's parameter names, so the exported graph carries
    the checkpoint's names.
    """

    def __init__(self, model, num_select, with_focus=False):
        super().__init__(auto_prefix=False)
        self.model = model
        self.postprocess = PostProcess(num_select)
        model.set_capture(with_focus)
        self.focus_names = focus_capture_names(model) if with_focus else ()
        self.focus_index = tuple(model.capture_names().index(n) for n in self.focus_names)
        self.compiled_inputs = set()
        self.set_train(False)

    def compile(self, *args, **kwargs):
        """MindSpore compiles (or finds compiled) before every graph-mode call; after the first
        compile for an input shape, the memory the compiler freed goes back to the system before
        the graph runs, instead of sitting beside the memory pool it then allocates (figures in
        the README, "Graph-mode memory on CPU")."""
        super().compile(*args, **kwargs)
        signature = tuple((tuple(a.shape), str(a.dtype)) for a in args if isinstance(a, Tensor))
        if signature not in self.compiled_inputs:
            self.compiled_inputs.add(signature)
            release_freed_memory()

    def construct(self, images, image_sizes, orig_sizes):
        outputs, captured = self.model(images, image_sizes)
        # a model set to float16 (training with amp_level O1/O2) post-processes in float32
        outputs = F.mixed_precision_cast(ms.float32, outputs)
        # the last decoder layer by its positive index: MindSpore 2.10's ONNX exporter turns x[-1] into an empty slice
        last = outputs[0].shape[0] - 1
        detections = self.postprocess(outputs[0][last], outputs[1][last], image_sizes, orig_sizes)[:4]
        for i in self.focus_index:
            detections += (captured[i],)
        return detections


def build_inference_net(cfg, ckpt=None, with_focus=False):
    """``InferenceNet`` for ``cfg`` with the weights of ``ckpt`` (None keeps the initialization;
    a checkpoint of another model raises ``CheckpointMismatch``)."""
    model = build_model(cfg.model, cfg.kernels)
    if ckpt is not None:
        load_port_checkpoint(model, ckpt)
    return InferenceNet(model, cfg.model.num_select, with_focus)
