"""The assembled Focus-DETR detector (official ``FOCUS_DETR``): normalization, backbone, neck,
masks and position embeddings, transformer, per-layer heads."""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ..layers.position_embedding import PositionEmbeddingSine
from .neck import ChannelMapper

PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)
OUTPUT_NAMES = ("pred_logits", "pred_boxes", "dn_logits", "dn_boxes", "enc_logits", "enc_boxes", "fg_logits")


@ms.constexpr
def nearest_source_index(in_size, out_size):
    """Source rows of torch's legacy 'nearest' resize from in_size to out_size (ATen CPU rule:
    identity for equal sizes, i >> 1 for exact 2x, else min(floor(i * float32(in/out)), in-1))."""
    i = np.arange(out_size)
    if in_size == out_size:
        idx = i
    elif out_size == 2 * in_size:
        idx = i >> 1
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        idx = np.minimum(np.floor(i.astype(np.float32) * scale).astype(np.int64), in_size - 1)
    return Tensor(idx.astype(np.int32))


class FocusDETR(nn.Cell):
    """Inputs: ``images`` (B,3,H,W) raw RGB 0..255 on a zero-padded canvas, ``image_sizes`` (B,2)
    int [h,w] of each image inside it. Normalization happens here and the padded area is set
    to 0 afterwards, as the official model pads after normalizing.

    The padding mask follows the official code: real in training, all-False in eval unless
    ``eval_padding_mask`` is set (the official model treats the padded canvas as image at
    inference; at its batch size 1 there is no padding).

    ``denoising``: optional (labels (B,P) int, boxes_unact (B,P,4), slot_valid (B,P) bool,
    attn_mask (P+Q,P+Q) bool) for training. ``topk_override``: optional (B,Q) token ids that
    replace the two-stage top-k (teacher forcing for parity tests).

    Returns the tuple named by ``OUTPUT_NAMES`` -- logits/boxes of every decoder layer
    (L,B,Q,.) split into the matching and denoising queries, the two-stage outputs and the
    raw foreground logits -- and a tuple of intermediates named by ``capture_names()``
    (empty unless ``set_capture``). Graph outputs are tuples, not dicts: a dict output runs
    through MindSpore's Python fallback and makes the whole graph dynamic.
    """

    def __init__(self, backbone, transformer, num_classes=80, embed_dim=256, pos_temperature=10000,
                 pos_offset=-0.5, eval_padding_mask=False):
        super().__init__()
        self.backbone = backbone
        self.neck = ChannelMapper(backbone.out_channels, embed_dim, transformer.num_levels)
        self.position_embedding = PositionEmbeddingSine(embed_dim // 2, pos_temperature, pos_offset)
        self.transformer = transformer
        self.label_enc = nn.Embedding(num_classes, embed_dim)
        self.num_classes = num_classes
        self.eval_padding_mask = eval_padding_mask
        self.pixel_mean = Tensor(np.array(PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1))
        self.pixel_std = Tensor(np.array(PIXEL_STD, np.float32).reshape(1, 3, 1, 1))
        self.capture = False

    def set_capture(self, flag=True):
        """Also return intermediate tensors (golden-fixture names)."""
        self.capture = flag
        self.transformer.capture = flag
        self.transformer.encoder.capture = flag

    def capture_names(self):
        levels = range(self.transformer.num_levels)
        return (tuple(f"backbone_{name}" for name in self.backbone.output_names)
                + tuple(f"neck_l{i}" for i in levels) + tuple(f"mask_l{i}" for i in levels)
                + tuple(f"pos_l{i}" for i in levels)
                + ("decoder_hidden_states", "decoder_init_reference", "decoder_references")
                + self.transformer.capture_names())

    def padding_mask(self, image_sizes, height, width):
        rows = ops.arange(height, dtype=ms.int32)[None, :, None]
        cols = ops.arange(width, dtype=ms.int32)[None, None, :]
        sizes = image_sizes.astype(ms.int32)
        return ops.logical_or(rows >= sizes[:, 0, None, None], cols >= sizes[:, 1, None, None])

    def level_masks(self, pixel_mask, feats):
        """Resize the (B,H,W) mask to every level with torch's nearest rule."""
        height, width = pixel_mask.shape[1], pixel_mask.shape[2]
        masks = ()
        for f in feats:
            rows = nearest_source_index(height, f.shape[2])
            cols = nearest_source_index(width, f.shape[3])
            masks += (ops.gather(ops.gather(pixel_mask, rows, 1), cols, 2),)
        return masks

    def construct(self, images, image_sizes, denoising=None, topk_override=None):
        bsz, _, height, width = images.shape
        pixel_pad = self.padding_mask(image_sizes, height, width)
        x = ops.where(pixel_pad[:, None], 0.0, (images - self.pixel_mean) / self.pixel_std)
        backbone_feats = self.backbone(x)
        feats = self.neck(backbone_feats)
        if self.training or self.eval_padding_mask:
            masks = self.level_masks(pixel_pad, feats)
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
        (hidden, init_reference, references, enc_logits, enc_boxes, fg_logits), captured = self.transformer(
            feats, masks, pos, dn_query, dn_ref, attn_mask, topk_override)
        logits, boxes = self.transformer.decoder.predict(hidden, init_reference, references)
        outputs = (logits[:, :, num_dn:], boxes[:, :, num_dn:], logits[:, :, :num_dn], boxes[:, :, :num_dn],
                   enc_logits, enc_boxes, fg_logits)
        if self.capture:
            captured = (backbone_feats + feats + masks + pos + (hidden, init_reference, references) + captured)
        return outputs, captured


def named_outputs(model, result):
    """{name: tensor} for a ``FocusDETR`` call result (outputs and captured intermediates)."""
    outputs, captured = result
    named = dict(zip(OUTPUT_NAMES, outputs))
    named.update(zip(model.capture_names(), captured))
    return named
