"""DINO decoder with look-forward-twice box refinement, and the per-layer prediction heads."""
import math

import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import MultiheadAttention
from ..layers.box_ops import inverse_sigmoid
from ..layers.dense import Dense
from ..layers.layer_norm import build_layer_norm
from ..layers.mlp import FFN, MLP
from ..layers.ms_deform_attn import MultiScaleDeformableAttention
from ..layers.portable_backward import concat
from ..layers.position_embedding import BoxSineEmbedding


class DecoderLayer(nn.Cell):
    """Post-norm layer: self-attention (+ attn_mask) -> norm -> deformable cross-attention on
    the memory -> norm -> FFN -> norm."""

    def __init__(self, embed_dim=256, num_heads=8, ffn_dim=2048, num_levels=4, num_points=4,
                 msda_impl="reference", layer_norm_impl="native"):
        super().__init__()
        self.attentions = nn.CellList([
            MultiheadAttention(embed_dim, num_heads),
            MultiScaleDeformableAttention(embed_dim, num_heads, num_levels, num_points, msda_impl),
        ])
        self.ffns = nn.CellList([FFN(embed_dim, ffn_dim)])
        self.norms = nn.CellList([build_layer_norm(embed_dim, layer_norm_impl) for _ in range(3)])

    def construct(self, query, query_pos, attn_mask, memory, memory_mask, reference_points, spatial_shapes):
        q = query + query_pos
        query = self.norms[0](query + self.attentions[0](q, q, query, attn_mask=attn_mask))
        query = self.norms[1](self.attentions[1](query, query_pos, memory, memory_mask,
                                                 reference_points, spatial_shapes))
        return self.norms[2](self.ffns[0](query))


def _class_head(embed_dim, num_classes):
    head = Dense(embed_dim, num_classes)
    # prior probability 0.01 for every class (focal-loss init)
    head.bias.set_data(Tensor(np.full(num_classes, -math.log(99.0), np.float32)))
    return head


def _box_head(embed_dim):
    head = MLP(embed_dim, embed_dim, 4, 3)
    last = head.layers[-1]
    last.weight.set_data(Tensor(np.zeros(last.weight.shape, np.float32)))
    last.bias.set_data(Tensor(np.zeros(last.bias.shape, np.float32)))
    return head


class DINODecoder(nn.Cell):
    """Six decoder layers; ``class_embed``/``bbox_embed`` hold num_layers + 1 heads, the last
    one being the encoder (two-stage) head, shared with the encoder's multi-category scores.

    Returns hidden states ``norm(out_k)`` (K,B,Q,C) and the refined references of every
    layer (K,B,Q,4), not detached (look forward twice); the reference passed on to the next
    layer is detached.
    """

    def __init__(self, num_layers=6, embed_dim=256, num_heads=8, ffn_dim=2048, num_levels=4,
                 num_points=4, num_classes=80, msda_impl="reference", layer_norm_impl="native"):
        super().__init__()
        self.num_layers = num_layers
        self.layers = nn.CellList([
            DecoderLayer(embed_dim, num_heads, ffn_dim, num_levels, num_points, msda_impl, layer_norm_impl)
            for _ in range(num_layers)])
        self.ref_point_head = MLP(2 * embed_dim, embed_dim, embed_dim, 2)
        self.norm = build_layer_norm(embed_dim, layer_norm_impl)
        self.class_embed = nn.CellList([_class_head(embed_dim, num_classes) for _ in range(num_layers + 1)])
        self.bbox_embed = nn.CellList([_box_head(embed_dim) for _ in range(num_layers + 1)])
        self.box_sine = BoxSineEmbedding(embed_dim // 2)

    def construct(self, query, reference, memory, memory_mask, valid_ratios, extent_ratios, spatial_shapes,
                  attn_mask):
        """``valid_ratios`` (B,L,2) over the memory's maps place the references for sampling;
        ``extent_ratios`` over the official extent (the same tensor unless the canvas is larger)
        feed the query positions, as the official model sees them."""
        ratios = concat([valid_ratios, valid_ratios], -1)[:, None]  # (B,1,L,4)
        pos_ratios = concat([extent_ratios[:, 0], extent_ratios[:, 0]], -1)[:, None]  # (B,1,4), level 0
        hidden = ()
        references = ()
        for lid, layer in enumerate(self.layers):
            ref_input = reference[:, :, None] * ratios  # (B,Q,L,4)
            query_pos = self.ref_point_head(self.box_sine(reference * pos_ratios))
            query = layer(query, query_pos, attn_mask, memory, memory_mask, ref_input, spatial_shapes)
            new_reference = ops.sigmoid(self.bbox_embed[lid](query) + inverse_sigmoid(reference))
            reference = ops.stop_gradient(new_reference)
            hidden += (self.norm(query),)
            references += (new_reference,)
        return ops.stack(hidden), ops.stack(references)

    def recompute_blocks(self):
        return list(self.layers)

    def class_sized_parameters(self):
        """Names of the parameters whose shape is set by the class count: every class head."""
        return [p.name for head in self.class_embed for p in head.get_parameters()]

    def predict(self, hidden, init_reference, references):
        """Per-layer heads: logits_k = class_embed[k](h_k), boxes_k = sigmoid(bbox_embed[k](h_k) +
        inverse_sigmoid(ref_{k-1})) with ref_{-1} the (detached) initial reference."""
        logits = ()
        boxes = ()
        for lid in range(self.num_layers):
            prev = init_reference if lid == 0 else references[lid - 1]
            logits += (self.class_embed[lid](hidden[lid]),)
            boxes += (ops.sigmoid(self.bbox_embed[lid](hidden[lid]) + inverse_sigmoid(prev)),)
        return ops.stack(logits), ops.stack(boxes)
