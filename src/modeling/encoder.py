"""The Focus-DETR encoder: a cascade of dual-attention layers over shrinking token sets."""
from mindspore import nn, ops

from ..layers.token_ops import build_token_ops, gather_rows
from .encoder_layer import FocusEncoderLayer
from .token_selector import FOCUS_TOKENS, FOREGROUND_INDS, LAYER_K, LAYER_ROWS, SELECTION_SCORES


class FocusEncoder(nn.Cell):
    """Runs layer l on the first R_l tokens of the foreground ranking and writes back, per
    image b, the first min(k_l, focus_token_nums[b]) updated rows. Tokens never selected
    keep their neck features; the deformable value is always the neck features ``src``.

    ``selection`` is the token selector's result (``token_selector.RAW_SCORES`` ..). Returns the
    memory and, when ``capture`` is set, the per-layer intermediates named by ``capture_names``
    (a tuple: graph outputs must not be dicts, see README).
    """

    # what each layer captures, in the order construct appends it
    LAYER_CAPTURE = ("foreground_inds", "oesm_score_max", "foreground_pre_layer", "oesm_mc_score",
                     "oesm_topk_local", "oesm_topk_global", "enc_layer_out")

    def __init__(self, num_layers=6, embed_dim=256, num_heads=8, ffn_dim=2048, num_levels=4,
                 num_points=4, topk_sa=300, msda_impl="reference", token_ops_impl="reference",
                 layer_norm_impl="native"):
        super().__init__()
        self.layers = nn.CellList([
            FocusEncoderLayer(embed_dim, num_heads, ffn_dim, num_levels, num_points, topk_sa,
                              msda_impl, token_ops_impl, layer_norm_impl)
            for _ in range(num_layers)])
        self.row_gather, self.row_scatter = build_token_ops(token_ops_impl)
        self.capture = False

    def recompute_blocks(self):
        return list(self.layers)

    def construct(self, src, pos, value_mask, reference_points, spatial_shapes, selection, class_head):
        layer_rows, layer_k = selection[LAYER_ROWS], selection[LAYER_K]
        foreground_inds, focus_token_nums = selection[FOREGROUND_INDS], selection[FOCUS_TOKENS]
        bsz, num_tokens, _ = src.shape
        levels = reference_points.shape[2]
        ref_flat = reference_points.reshape(bsz, num_tokens, levels * 2)
        output = src
        captured = ()
        for lid, layer in enumerate(self.layers):
            rows = layer_rows[lid]
            idx = foreground_inds[:, :rows]
            query = self.row_gather(output, idx)
            query_pos = self.row_gather(pos, idx)
            ref = self.row_gather(ref_flat, idx).reshape(bsz, rows, levels, 2)
            fg = gather_rows(selection[SELECTION_SCORES], idx)
            # multi-category score: raw max class logit of the shared two-stage head (class_embed[6])
            class_max = ops.amax(class_head(query), -1)
            updated, mc_score, sel = layer(query, query_pos, fg, class_max, layer_k[:, lid], src,
                                           value_mask, ref, spatial_shapes)
            count = ops.minimum(focus_token_nums, layer_k[:, lid])
            output = self.row_scatter(output, idx, updated, count)
            if self.capture:  # LAYER_CAPTURE
                captured += (idx, class_max, fg, mc_score, sel, gather_rows(idx, sel), updated)
        return output, captured

    def capture_names(self):
        return tuple(f"{name}_l{lid}" for lid in range(len(self.layers)) for name in self.LAYER_CAPTURE)
