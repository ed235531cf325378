"""Runs in a subprocess of tests/test_ops_devices.py (MindSpore cannot switch a process from CPU
to another device): the fused operators of ``--device GPU|Ascend`` against the pure-MindSpore
references, forward and gradients, in GRAPH_MODE and PYNATIVE_MODE. Exit code 77: MindSpore has
no usable device of that kind here. Otherwise one line per comparison; exit 0 only if all pass.

GPU: the CUDA deformable sampling and token gather/scatter kernels and the assignment operator.
Ascend: the built-in fused deformable attention with both (x, y) orders of the locations (the
configured order must be the one that matches, ``src.ops.msda_ascend.LOCATION_ORDER``) and the
built-in assignment. The assignments must equal scipy's exactly (random and tie-heavy costs).
"""
import argparse
import os
import sys

import mindspore as ms
import numpy as np
from mindspore import Tensor

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]  # the repository (src) and tests/ (test_ops' Cells)
NO_DEVICE = 77
SHAPES = ((16, 20), (8, 10), (4, 5), (1, 1))


def token_results(gather, scatter, inputs):
    """Gather and scatter outputs and the gradients of their weighted sums (tests/test_ops.py's Cells)."""
    from test_ops import WeightedGather, WeightedScatter

    x, idx, rows, count, w_gather, w_scatter = (Tensor(a) for a in inputs)
    scatter_grads = ms.grad(WeightedScatter(scatter), grad_position=(0, 1))(x, rows, idx, count, w_scatter)
    return [gather(x, idx).asnumpy(), scatter(x, idx, rows, count).asnumpy(),
            ms.grad(WeightedGather(gather))(x, idx, w_gather).asnumpy()] + [g.asnumpy() for g in scatter_grads]


def report(name, ours, ref, tol):
    err = float(np.abs(ours - ref).max())
    print(f"{'ok  ' if err <= tol else 'FAIL'} mode={ms.get_context('mode')} {name}: max abs {err:.3g} (tol {tol:g})")
    return err <= tol


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["GPU", "Ascend"], required=True)
    device = parser.parse_args().device
    try:
        ms.set_context(device_target=device)
        (Tensor(np.ones(2, np.float32)) + 1).asnumpy()
    except Exception as e:  # noqa: BLE001 - any failure to start the backend means "no such device"
        print(f"no usable MindSpore {device}: " + (str(e).strip().splitlines() or ["?"])[0])
        return NO_DEVICE
    from src.layers.ms_deform_attn import MSDeformAttnCoreGather
    from src.layers.token_ops import RowGatherReference, RowScatterReference
    from src.losses.assignment import AssignmentBuiltin, assign_queries
    from src.ops import (
        LinearSumAssignmentKernel,
        MSDeformAttnCoreAscend,
        MSDeformAttnCoreKernel,
        RowGatherKernel,
        RowScatterKernel,
    )
    from src.ops.msda_ascend import LOCATION_ORDER
    from src.tools.parity.ops import msda_core_outputs
    from src.tools.parity.report import TOL_MSDA_GRAD, TOL_MSDA_LOC_GRAD, TOL_MSDA_OUT

    rng = np.random.default_rng(0)
    tokens = sum(h * w for h, w in SHAPES)
    msda_in = (rng.normal(size=(2, tokens, 8, 32)).astype(np.float32),
               rng.uniform(-0.3, 1.3, (2, 50, 8, 4, 4, 2)).astype(np.float32),
               rng.uniform(0, 1, (2, 50, 8, 4, 4)).astype(np.float32),
               rng.normal(size=(2, 50, 256)).astype(np.float32))
    token_in = (rng.normal(size=(2, 300, 16)).astype(np.float32),
                np.stack([rng.permutation(300)[:40] for _ in range(2)]).astype(np.int32),
                rng.normal(size=(2, 40, 16)).astype(np.float32), np.array([40, 17], np.int32),
                rng.normal(size=(2, 40, 16)).astype(np.float32), rng.normal(size=(2, 300, 16)).astype(np.float32))
    cost = rng.uniform(0, 1, (14, 900, 40)).astype(np.float32)
    cost[7:] = np.round(cost[7:] * 3) / 3  # ties: scipy's tie-breaking must be reproduced
    num_valid = rng.integers(0, 41, 14).astype(np.int32)
    names = ("out", "grad value", "grad locations", "grad weights")
    tols = (TOL_MSDA_OUT, TOL_MSDA_GRAD, TOL_MSDA_LOC_GRAD, TOL_MSDA_GRAD)
    ok = True
    for mode in (ms.GRAPH_MODE, ms.PYNATIVE_MODE):
        ms.set_context(mode=mode)
        ref = msda_core_outputs(MSDeformAttnCoreGather(), SHAPES, *msda_in)
        if device == "GPU":
            ours = msda_core_outputs(MSDeformAttnCoreKernel(), SHAPES, *msda_in)
            ok &= all([report(f"msda {n}", a, b, t) for n, a, b, t in zip(names, ours, ref, tols)])
            ours = token_results(RowGatherKernel(), RowScatterKernel(), token_in)
            ref_tokens = token_results(RowGatherReference(), RowScatterReference(), token_in)
            ok &= all([report(f"tokens {n}", a, b, t) for n, a, b, t in
                       zip(("gather", "scatter", "gather grad x", "scatter grad x", "scatter grad rows"), ours,
                           ref_tokens, (0, 0, 1e-6, 1e-6, 1e-6))])
        assignment = LinearSumAssignmentKernel() if device == "GPU" else AssignmentBuiltin()
        matched = assignment(Tensor(cost), Tensor(num_valid)).asnumpy()
        ok &= report(f"assignment ({type(assignment).__name__})", matched, assign_queries(cost, num_valid), 0)
        if device == "Ascend":
            matching = []
            for order in ("xy", "yx"):
                ours = msda_core_outputs(MSDeformAttnCoreAscend(order), SHAPES, *msda_in)
                if all([report(f"msda[{order}] {n}", a, b, t) for n, a, b, t in zip(names, ours, ref, tols)]):
                    matching.append(order)
            print(f"location order matching the reference: {matching}; configured: {LOCATION_ORDER}")
            ok &= matching == [LOCATION_ORDER]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
