"""The attention cores' gradient graphs hold no output-sized kernel tables, and Swin's window
attention and the multi-head attention move their tokens without transposes, but for the
multi-head attention's keys (src/tools/graph_memory.py).

In CPU graph mode an implicitly broadcasting element-wise kernel, ``Div`` and ``Transpose`` keep
tables the size of their output for as long as the graph lives; the cores below are where the
training graph's largest tensors are made (the deformable sampling's gathered values, the
self-attention weights), so none of those kinds may reach that size there. Graph mode only: the
tables belong to compiled graphs.
"""
import glob
import math
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from src.layers.attention import MultiheadAttention, softmax_product
from src.layers.ms_deform_attn import MSDeformAttnCoreGather
from src.modeling.backbone.swin import WindowAttention
from src.runtime import mode_scope
from src.tools.graph_memory import held_nodes

RNG = np.random.default_rng(0)


class Loss(nn.Cell):
    """sum(fn(*inputs) * weights), differentiated w.r.t. every input."""

    def __init__(self, fn, weights):
        super().__init__()
        self.fn, self.weights = fn, Tensor(weights)
        self.grad = ops.GradOperation(get_all=True)

    def loss(self, *args):
        return (self.fn(*args) * self.weights).sum()

    def construct(self, *args):
        return self.grad(self.loss)(*args)


def compiled_ir(cell, inputs, folder):
    """The graph_build IR of ``cell`` compiled (and run once) in graph mode."""
    with mode_scope("graph"):
        ms.set_context(save_graphs=1, save_graphs_path=str(folder))
        try:
            cell(*inputs)
        finally:
            ms.set_context(save_graphs=0)
    paths = sorted(glob.glob(os.path.join(str(folder), "**", "graph_build_*.ir"), recursive=True), key=os.path.getmtime)
    assert paths, f"no graph_build IR under {folder}"
    with open(paths[-1]) as f:
        return f.read()


def large_held(ir, elements):
    return [(n.primitive, n.kind, n.inputs, n.output, n.source) for n in held_nodes(ir, elements)]


def test_deformable_sampling_gradient_holds_no_sample_sized_table(tmp_path):
    shapes = ((8, 8), (4, 4))
    bsz, heads, dim, nq, levels, points = 2, 2, 8, 6, 2, 3
    value = RNG.normal(size=(bsz, sum(h * w for h, w in shapes), heads, dim)).astype(np.float32)
    locations = RNG.random((bsz, nq, heads, levels, points, 2)).astype(np.float32)
    weights = RNG.random((bsz, nq, heads, levels, points)).astype(np.float32)
    core = MSDeformAttnCoreGather()

    def sample(v, loc, w):
        return core(v, shapes, loc, w)

    step = Loss(sample, RNG.normal(size=(bsz, nq, heads * dim)).astype(np.float32))
    ir = compiled_ir(step, (Tensor(value), Tensor(locations), Tensor(weights)), tmp_path)
    samples = bsz * heads * nq * levels * points * 4 * dim  # the gathered values, one row per corner
    assert large_held(ir, samples) == []
    assert held_nodes(ir, 1), "the scan found nothing at all: is the IR format still the one it reads?"


def test_attention_gradient_holds_no_weight_sized_table(tmp_path):
    logits = RNG.normal(size=(2, 4, 40, 48)).astype(np.float32)
    v = RNG.normal(size=(2, 4, 48, 8)).astype(np.float32)
    step = Loss(softmax_product, RNG.normal(size=(2, 4, 40, 8)).astype(np.float32))
    ir = compiled_ir(step, (Tensor(logits), Tensor(v)), tmp_path)
    assert large_held(ir, math.prod(logits.shape)) == []


def test_window_attention_holds_no_token_sized_transpose(tmp_path):
    """Swin's window attention moves tokens into windows and heads, and back, by row gathers
    (``WindowAttention.to_heads`` / ``from_heads``), and transposes the keys inside the product
    (``query_key_product``): no transpose as large as the map is left (the relative position
    bias's is smaller). A shifted block on a map that needs padding."""
    x = Tensor(RNG.normal(size=(1, 20, 27, 24)).astype(np.float32))
    ir = compiled_ir(WindowAttention(24, 7, 3), (x, 3), tmp_path)
    assert held_nodes(ir, 1), "the scan found nothing at all: is the IR format still the one it reads?"
    transposes = [n for n in held_nodes(ir, x.size) if n.primitive == "Transpose"]
    assert transposes == [], [(n.inputs, n.output) for n in transposes]


def test_multihead_attention_transposes_only_its_keys(tmp_path):
    """MultiheadAttention moves q, k, v into heads and the output back by row gathers
    (``head_rows``); the one transpose left is the key's for q @ k^T (kept: README,
    "Distributed training")."""
    query = Tensor(RNG.normal(size=(2, 30, 16)).astype(np.float32))
    ir = compiled_ir(MultiheadAttention(16, 4), (query, query, query), tmp_path)
    transposes = [(n.inputs, n.output) for n in held_nodes(ir, 1) if n.primitive == "Transpose"]
    assert transposes == [([(2, 4, 30, 4)], (2, 4, 4, 30))], transposes
