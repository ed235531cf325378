"""Focus-DETR transformer: flattening, foreground token selection, the cascade encoder,
two-stage query selection and the DINO decoder (official ``FOCUS_DETRTransformer``)."""
import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, XavierUniform, initializer

from ..layers.dense import Dense
from ..layers.elementwise import divide
from ..layers.extent import inside, rank_last_outside
from ..layers.layer_norm import build_layer_norm
from ..layers.levels import flatten_levels, level_starts
from ..layers.masking import logical_not, zero_masked_rows
from ..layers.portable_backward import concat
from ..layers.token_ops import gather_rows
from .decoder import DINODecoder
from .encoder import FocusEncoder
from .token_selector import FOCUS_TOKENS, LAYER_K, RAW_SCORES, SELECTION_SCORES, VALID_TOKENS, ForegroundTokenSelector


def valid_ratios_of(masks, extents=None):
    """(B,L,2) [valid_w/w, valid_h/h] per level from row 0 and column 0 of each mask, over the
    level's map size (h, w), or over its official extent ``extents[l]`` (B,2) when given."""
    ratios = ()
    for lvl, m in enumerate(masks):
        not_m = logical_not(m).astype(ms.float32)
        if extents is None:
            height, width = m.shape[1], m.shape[2]
        else:
            height, width = extents[lvl][:, 0].astype(ms.float32), extents[lvl][:, 1].astype(ms.float32)
        ratios += (ops.stack((not_m[:, 0, :].sum(1) / width, not_m[:, :, 0].sum(1) / height), -1),)
    return ops.stack(ratios, 1)


@ms.constexpr
def pixel_grid(h, w):
    """(1, h*w) column and row indices (float32) of a row-major h x w map."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return Tensor(xs.reshape(1, -1)), Tensor(ys.reshape(1, -1))


def encoder_reference_points(spatial_shapes, valid_ratios):
    """(B,S,L,2) normalized (x,y) of every token's centre, rescaled to each level's valid area."""
    refs = ()
    for lvl, (h, w) in enumerate(spatial_shapes):
        xs, ys = pixel_grid(h, w)
        ref_y = (ys + 0.5) / (valid_ratios[:, None, lvl, 1] * h)
        ref_x = (xs + 0.5) / (valid_ratios[:, None, lvl, 0] * w)
        refs += (ops.stack((ref_x, ref_y), -1),)
    refs = concat(refs, 1)[:, :, None]
    shape = (refs.shape[0], refs.shape[1], valid_ratios.shape[1], 2)  # broadcast explicitly (elementwise.py)
    return ops.broadcast_to(refs, shape) * ops.broadcast_to(valid_ratios[:, None], shape)


class FocusDETRTransformer(nn.Cell):
    """Returns ``(logits, boxes, enc_logits, enc_boxes, fg_logits, in_extent)`` -- logits and
    boxes of every decoder layer (L,B,P+Q,.), the denoising queries first -- and the
    intermediates named by ``capture_names`` (empty unless ``set_capture``)."""

    # what construct captures after the decoder's and the encoder's, in its order
    CAPTURE = ("valid_ratios", "encoder_reference_points", "lvl_pos_embed", "temp_backbone_mask_prediction",
               "backbone_mask_prediction", "valid_token_nums", "focus_token_nums", "encoder_foreground_topk",
               "memory", "output_proposals", "enc_outputs_class", "enc_outputs_coord_unact", "two_stage_topk_inds")
    DECODER_CAPTURE = ("decoder_hidden_states", "decoder_init_reference", "decoder_references")

    def __init__(self, embed_dim=256, num_heads=8, ffn_dim=2048, num_levels=4, num_points=4,
                 num_encoder_layers=6, num_decoder_layers=6, num_queries=900, num_classes=80,
                 focus_rho=0.5, cascade=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2), topk_sa=300,
                 msda_impl="reference", token_ops_impl="reference", gelu_impl="native",
                 layer_norm_impl="native"):
        super().__init__()
        if len(cascade) != num_encoder_layers:
            raise ValueError(f"the cascade has {len(cascade)} ratios for {num_encoder_layers} encoder layers: "
                             "give one keep ratio per encoder layer (model.cascade, model.num_encoder_layers)")
        self.num_levels = num_levels
        self.num_queries = num_queries
        self.token_selector = ForegroundTokenSelector(embed_dim, num_levels, focus_rho, cascade, gelu_impl,
                                                      layer_norm_impl)
        self.encoder = FocusEncoder(num_encoder_layers, embed_dim, num_heads, ffn_dim, num_levels,
                                    num_points, topk_sa, msda_impl, token_ops_impl, layer_norm_impl)
        self.decoder = DINODecoder(num_decoder_layers, embed_dim, num_heads, ffn_dim, num_levels,
                                   num_points, num_classes, msda_impl, layer_norm_impl)
        self.level_embeds = Parameter(initializer(Normal(1.0), (num_levels, embed_dim), ms.float32))
        self.tgt_embed = nn.Embedding(num_queries, embed_dim,
                                      embedding_table=initializer(XavierUniform(), (num_queries, embed_dim)))
        self.enc_output = Dense(embed_dim, embed_dim)
        self.enc_output_norm = build_layer_norm(embed_dim, layer_norm_impl)
        self.capture = False

    def set_capture(self, flag=True):
        self.capture = flag
        self.encoder.capture = flag

    def proposals(self, mask_flatten, spatial_shapes):
        """Per-token anchor ((j+.5)/W_valid, (i+.5)/H_valid, .05*2^l, .05*2^l) in logit space, +inf
        where padded or where any coordinate is outside (0.01, 0.99); and that invalid mask."""
        bsz = mask_flatten.shape[0]
        props = ()
        starts = level_starts(spatial_shapes)
        for lvl, (h, w) in enumerate(spatial_shapes):
            not_m = logical_not(mask_flatten[:, starts[lvl]:starts[lvl + 1]].reshape(bsz, h, w)).astype(ms.float32)
            valid_h = not_m[:, :, 0].sum(1).reshape(bsz, 1)
            valid_w = not_m[:, 0, :].sum(1).reshape(bsz, 1)
            xs, ys = pixel_grid(h, w)
            cx = (xs + 0.5) / valid_w
            cy = (ys + 0.5) / valid_h
            wh = ops.ones_like(cx) * 0.05 * (2.0 ** lvl)
            props += (ops.stack((cx, cy, wh, wh), -1),)
        props = concat(props, 1)
        # a coordinate outside (0.01, 0.99) as a max of 0/1 values, not .all(-1): MindSpore 2.10's ONNX
        # exporter dies on ReduceAll (a segmentation fault)
        outside = logical_not(ops.logical_and(props > 0.01, props < 0.99)).astype(ms.float32)
        invalid = ops.logical_or(mask_flatten, ops.amax(outside, -1) > 0.5)
        unact = ops.where(invalid[..., None], float("inf"), ops.log(divide(props, 1 - props)))
        return unact, invalid

    def encode_tokens(self, tokens, invalid):
        """``enc_output_norm(enc_output(x))`` with invalid rows zeroed first (they become LN(bias))."""
        return self.enc_output_norm(self.enc_output(zero_masked_rows(tokens, invalid)))

    def construct(self, feats, masks, pos_embeds, dn_query=None, dn_reference_unact=None,
                  attn_mask=None, topk_override=None, level_extents=None, per_image_budget=False):
        """``feats`` (B,C,h,w) and ``pos_embeds`` (B,h,w,C) per level; ``masks`` mark padding
        and, with ``level_extents`` (the official extent of every level, see
        ``src.layers.extent``), everything outside the extent; ``per_image_budget``: each image's
        token budget is its own (official inference at batch 1)."""
        spatial_shapes = tuple((f.shape[2], f.shape[3]) for f in feats)
        bsz = feats[0].shape[0]
        in_extent = None
        if level_extents is not None:
            in_extent = concat([inside(e, h, w).reshape(bsz, -1) for e, (h, w) in zip(level_extents, spatial_shapes)],
                               1)
        src = flatten_levels(feats)
        mask_flatten = concat([m.reshape(m.shape[0], -1) for m in masks], 1)
        lvl_pos = ()
        for lvl, p in enumerate(pos_embeds):  # channels last: a level's tokens are its rows already
            p = p.reshape(bsz, -1, p.shape[-1])
            lvl_pos += (p + ops.broadcast_to(self.level_embeds[lvl], p.shape),)
        lvl_pos = concat(lvl_pos, 1)
        valid_ratios = valid_ratios_of(masks)
        extent_ratios = valid_ratios if level_extents is None else valid_ratios_of(masks, level_extents)
        enc_ref = encoder_reference_points(spatial_shapes, valid_ratios)
        proposals, invalid = self.proposals(mask_flatten, spatial_shapes)

        # foreground scoring and the token budget of every encoder layer
        fg_tokens = self.encode_tokens(src + lvl_pos, invalid)
        selection = self.token_selector(fg_tokens, mask_flatten, spatial_shapes, level_extents, in_extent,
                                        per_image_budget)

        head = self.decoder.class_embed[self.decoder.num_layers]
        memory, enc_captured = self.encoder(src, lvl_pos, mask_flatten, enc_ref, spatial_shapes, selection, head)

        # two-stage: top-k tokens by max class logit become the decoder's reference boxes
        output_memory = self.encode_tokens(memory, invalid)
        enc_class = head(output_memory)
        enc_coord_unact = self.decoder.bbox_embed[self.decoder.num_layers](output_memory) + proposals
        class_score = ops.amax(enc_class, -1)
        if level_extents is not None:
            class_score = rank_last_outside(class_score, in_extent)
        _, own_topk = ops.topk(class_score, self.num_queries, dim=1)
        topk_inds = own_topk if topk_override is None else topk_override.astype(own_topk.dtype)
        topk_coords_unact = gather_rows(enc_coord_unact, topk_inds)
        reference = ops.sigmoid(ops.stop_gradient(topk_coords_unact))
        target_unact = gather_rows(output_memory, topk_inds)
        query = ops.broadcast_to(self.tgt_embed.embedding_table[None], (bsz,) + self.tgt_embed.embedding_table.shape)
        if dn_query is not None:
            query = concat([dn_query, query], 1)
            reference = concat([ops.sigmoid(dn_reference_unact), reference], 1)
        hidden, references = self.decoder(query, reference, memory, mask_flatten, valid_ratios, extent_ratios,
                                          spatial_shapes, attn_mask)
        logits, boxes = self.decoder.predict(hidden, reference, references)
        if in_extent is None:
            in_extent = ops.ones(mask_flatten.shape, ms.bool_)
        outputs = (logits, boxes, head(target_unact), ops.sigmoid(topk_coords_unact), selection[RAW_SCORES],
                   in_extent)
        captured = ()
        if self.capture:  # DECODER_CAPTURE, the encoder's, CAPTURE
            captured = (hidden, reference, references) + enc_captured + (
                valid_ratios, enc_ref, lvl_pos, selection[RAW_SCORES], selection[SELECTION_SCORES],
                selection[VALID_TOKENS], selection[FOCUS_TOKENS], selection[LAYER_K], memory, proposals, enc_class,
                enc_coord_unact, own_topk)
        return outputs, captured

    def recompute_blocks(self):
        return self.encoder.recompute_blocks() + self.decoder.recompute_blocks()

    def class_sized_parameters(self):
        """Names of the parameters whose shape is set by the class count (the decoder's heads,
        whose last one is also the encoder's two-stage and multi-category score head)."""
        return self.decoder.class_sized_parameters()

    def capture_names(self):
        return self.DECODER_CAPTURE + self.encoder.capture_names() + self.CAPTURE
