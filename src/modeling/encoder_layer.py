"""Focus-DETR's dual-attention encoder layer (official ``Focus_DETR_BaseTransformerLayer`` with
operation order OESM -> deformable cross-attention -> norm -> FFN -> norm)."""
import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import MultiheadAttention
from ..layers.compile_time import arange_along
from ..layers.layer_norm import build_layer_norm
from ..layers.masking import logical_not
from ..layers.mlp import FFN
from ..layers.ms_deform_attn import MultiScaleDeformableAttention
from ..layers.token_ops import build_token_ops


class FocusEncoderLayer(nn.Cell):
    """Update the R gathered tokens of one encoder layer.

    OESM: the tokens with the top-``topk_sa`` multi-category scores (max class logit times
    foreground logit, both raw) attend to each other (MHA, no mask), get a residual and the
    extra LayerNorm ``norm2``, and overwrite their rows; the other rows pass unchanged.
    Then every row does deformable attention over the fixed ``value`` (the neck features),
    norm, FFN, norm.

    Only the first ``num_rows`` (k_l per image, (B,) int32) of the R rows take part; rows beyond are
    padding of the static shape. The official code needs k_l >= 300; we use
    min(300, k_l) so small images work, which is identical wherever the official runs.
    """

    def __init__(self, embed_dim=256, num_heads=8, ffn_dim=2048, num_levels=4, num_points=4,
                 topk_sa=300, msda_impl="reference", token_ops_impl="reference", layer_norm_impl="native"):
        super().__init__()
        self.topk_sa = topk_sa
        self.attentions = nn.CellList([
            MultiheadAttention(embed_dim, num_heads),
            MultiScaleDeformableAttention(embed_dim, num_heads, num_levels, num_points, msda_impl),
        ])
        self.ffns = nn.CellList([FFN(embed_dim, ffn_dim)])
        self.norms = nn.CellList([build_layer_norm(embed_dim, layer_norm_impl) for _ in range(2)])
        self.norm2 = build_layer_norm(embed_dim, layer_norm_impl)
        self.row_gather, self.row_scatter = build_token_ops(token_ops_impl)

    def construct(self, query, query_pos, fg_scores, class_max, num_rows, value, value_mask,
                  reference_points, spatial_shapes):
        bsz, rows, _ = query.shape
        row_valid = arange_along(rows, ms.int32, 1, 2) < num_rows[:, None]
        mc_score = class_max * fg_scores
        ranked = ops.where(row_valid, mc_score, float("-inf"))
        _, sel = ops.topk(ranked, min(self.topk_sa, rows), dim=1)
        # = row_valid[b, sel[b, j]], without gathering a bool tensor: with the fused kernels PyNative
        # ran that gather's backward (UnsortedSegmentSum on Bool), which has no CPU kernel
        key_valid = sel.astype(ms.int32) < num_rows[:, None]
        tgt = self.row_gather(query, sel)
        tgt_pos = tgt + self.row_gather(query_pos, sel)
        tgt = self.norm2(tgt + self.attentions[0](tgt_pos, tgt_pos, tgt,
                                                  key_padding_mask=logical_not(key_valid)))
        query = self.row_scatter(query, sel, tgt, key_valid.astype(ms.int32).sum(-1))
        query = self.attentions[1](query, query_pos, value, value_mask, reference_points, spatial_shapes)
        query = self.norms[1](self.ffns[0](self.norms[0](query)))
        return query, mc_score, sel
