"""The assembled Focus-DETR detector (official ``FOCUS_DETR``): normalization, backbone, neck,
masks and position embeddings, transformer, per-layer heads."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.compile_time import arange_along
from ..layers.elementwise import broadcast_constant, divide
from ..layers.extent import downsampled, extent_of, inside, nearest_source
from ..layers.masking import logical_not, masked_fill
from ..layers.position_embedding import PositionEmbeddingSine
from .neck import ChannelMapper

PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)
OUTPUT_NAMES = ("pred_logits", "pred_boxes", "dn_logits", "dn_boxes", "enc_logits", "enc_boxes", "fg_logits",
                "token_in_extent")
CANVAS_MODES = ("extent", "padded")


class FocusDETR(nn.Cell):
    """Inputs: ``images`` (B,3,H,W) raw RGB 0..255 on a zero-padded canvas, ``image_sizes`` (B,2)
    int [h,w] of each image inside it. Normalization happens here and the padded area is set
    to 0 afterwards, as the official model pads after normalizing.

    ``canvas``: how the area of a static canvas beyond the official extent is treated (see
    ``src.layers.extent``). 'extent' (default): excluded everywhere, so any canvas gives the
    official model's numbers -- in training those of the batch padded to its maximum, at
    inference those of each image alone (the official batch size 1); padding inside the extent
    is masked in training and absent at inference, as official. 'padded': the canvas is the
    padded batch -- training masks everything beyond each image, inference treats the whole
    canvas as image (the official model at an inference batch > 1); cheaper.

    ``denoising``: optional (labels (B,P) int, boxes_unact (B,P,4), slot_valid (B,P) bool,
    attn_mask (P+Q,P+Q) bool) for training. ``topk_override``: optional (B,Q) token ids that
    replace the two-stage top-k (teacher forcing for parity tests).

    Returns the tuple named by ``OUTPUT_NAMES`` -- logits/boxes of every decoder layer
    (L,B,Q,.) split into the matching and denoising queries, the two-stage outputs, the
    raw foreground logits and the (B,S) tokens inside the official extent -- and a tuple of
    intermediates named by ``capture_names()`` (empty unless ``set_capture``; ``named_outputs``
    names both). Graph outputs are tuples, not dicts: a dict output runs through MindSpore's
    Python fallback and makes the whole graph dynamic.
    """

    def __init__(self, backbone, transformer, num_classes=80, embed_dim=256, pos_temperature=10000,
                 pos_offset=-0.5, canvas="extent", position_embedding_impl="native"):
        super().__init__()
        if canvas not in CANVAS_MODES:
            raise ValueError(f"model.canvas must be one of {CANVAS_MODES}, got {canvas!r}")
        self.backbone = backbone
        self.neck = ChannelMapper(backbone.out_channels, embed_dim, transformer.num_levels)
        self.position_embedding = PositionEmbeddingSine(embed_dim // 2, pos_temperature, pos_offset,
                                                        impl=position_embedding_impl)
        self.transformer = transformer
        self.label_enc = nn.Embedding(num_classes, embed_dim)
        self.num_classes = num_classes
        self.canvas_extent = canvas == "extent"
        strides = tuple(backbone.out_strides)
        self.level_strides = strides + tuple(strides[-1] * 2 ** (i + 1) for i in range(transformer.num_levels
                                                                                       - len(strides)))
        self.pixel_mean = Tensor(np.array(PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1))
        self.pixel_std = Tensor(np.array(PIXEL_STD, np.float32).reshape(1, 3, 1, 1))
        self.capture = False

    def set_capture(self, flag=True):
        """Also return intermediate tensors (golden-fixture names)."""
        self.capture = flag
        self.transformer.set_capture(flag)

    def capture_names(self):
        """Names of the captured tensors, in construct's order: the backbone's, then per level
        the neck maps, masks and position embeddings, then the transformer's."""
        levels = range(self.transformer.num_levels)
        return (tuple(f"backbone_{name}" for name in self.backbone.output_names)
                + tuple(f"{kind}_l{i}" for kind in ("neck", "mask", "pos") for i in levels)
                + self.transformer.capture_names())

    def recompute_blocks(self):
        """The Cells ``train.recompute`` marks for recomputation (their activations are computed
        again in the backward pass instead of being kept): the backbone's stages and every
        encoder and decoder layer."""
        return self.backbone.recompute_blocks() + self.transformer.recompute_blocks()

    def class_sized_parameters(self):
        """Names of the parameters whose shape is set by ``num_classes``: the class heads and the
        denoising label embedding. Fine-tuning on another class count re-initializes these."""
        return self.transformer.class_sized_parameters() + [p.name for p in self.label_enc.get_parameters()]

    def padding_mask(self, image_sizes, height, width):
        rows = arange_along(height, ms.int32, 1, 3)
        cols = arange_along(width, ms.int32, 2, 3)
        sizes = image_sizes.astype(ms.int32)
        shape = (sizes.shape[0], height, width)  # broadcast explicitly (elementwise.py)
        return ops.logical_or(ops.broadcast_to(rows >= sizes[:, 0, None, None], shape),
                              ops.broadcast_to(cols >= sizes[:, 1, None, None], shape))

    def extent_masks(self, image_sizes, extent, level_extents, feats):
        """Every level's mask as the official model builds it on the extent -- the pixel mask
        resized from the extent to the level's extent with torch's nearest rule -- and True
        outside the level's extent."""
        sizes = image_sizes.astype(ms.int32)
        masks = ()
        for cells, f in zip(level_extents, feats):
            rows = nearest_source(extent[:, 0], cells[:, 0], f.shape[2]) >= sizes[:, 0, None]
            cols = nearest_source(extent[:, 1], cells[:, 1], f.shape[3]) >= sizes[:, 1, None]
            padded = ops.logical_or(rows[:, :, None], cols[:, None, :])
            masks += (ops.logical_or(padded, logical_not(inside(cells, f.shape[2], f.shape[3]))),)
        return masks

    def construct(self, images, image_sizes, denoising=None, topk_override=None):
        bsz, _, height, width = images.shape
        pixel_pad = self.padding_mask(image_sizes, height, width)
        x = masked_fill(divide(images - broadcast_constant(self.pixel_mean, images.shape, images), self.pixel_std),
                        pixel_pad.reshape(bsz, 1, height, width), 0.0)
        # padded: the canvas is the extent (its masks then mark only what lies beyond each image)
        extent = (extent_of(image_sizes, self.training) if self.canvas_extent
                  else ops.broadcast_to(Tensor([[height, width]], ms.int32), (bsz, 2)))
        cells = tuple(downsampled(extent, s) for s in self.level_strides)
        level_extents = cells if self.canvas_extent else None
        backbone_feats = self.backbone(x, extent if self.canvas_extent else None)
        feats = self.neck(backbone_feats, level_extents)
        if self.canvas_extent or self.training:
            masks = self.extent_masks(image_sizes, extent, cells, feats)
        else:
            masks = tuple(ops.zeros((bsz, f.shape[2], f.shape[3]), ms.bool_) for f in feats)
        pos = tuple(self.position_embedding(m) for m in masks)

        dn_query = None
        dn_ref = None
        attn_mask = None
        num_dn = 0
        if denoising is not None:
            labels, dn_ref, slot_valid, attn_mask = denoising
            num_dn = labels.shape[1]
            dn_query = ops.gather(self.label_enc.embedding_table, labels.astype(ms.int32), 0)
            dn_query = ops.where(slot_valid[..., None], dn_query, 0.0)
        (logits, boxes, enc_logits, enc_boxes, fg_logits, in_extent), captured = self.transformer(
            feats, masks, pos, dn_query, dn_ref, attn_mask, topk_override, level_extents,
            self.canvas_extent and not self.training)
        # without denoising queries the matching part is the whole output (a slice would copy it)
        matching = (logits[:, :, num_dn:], boxes[:, :, num_dn:]) if num_dn else (logits, boxes)
        outputs = matching + (logits[:, :, :num_dn], boxes[:, :, :num_dn], enc_logits, enc_boxes, fg_logits, in_extent)
        if self.capture:  # capture_names()
            captured = backbone_feats + feats + masks + tuple(p.transpose(0, 3, 1, 2) for p in pos) + captured
        return outputs, captured


def named_outputs(model, result):
    """{name: tensor} for a ``FocusDETR`` call result (outputs and captured intermediates);
    a count that differs from the names (a capture added without its name) is an error."""
    outputs, captured = result
    names = model.capture_names() if captured else ()
    if len(outputs) != len(OUTPUT_NAMES) or len(captured) != len(names):
        raise ValueError(f"the model returned {len(outputs)} outputs and {len(captured)} captured tensors for "
                         f"{len(OUTPUT_NAMES)} output and {len(names)} capture names")
    return dict(zip(OUTPUT_NAMES + names, outputs + captured))
