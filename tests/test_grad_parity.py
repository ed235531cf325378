"""The backward pass against the official one (``model_grad_r50``, the gradients of
``model_train_r50``'s total training loss): one ``ops.value_and_grad`` of model + criterion
w.r.t. every trainable parameter, mapped to the official keys by the converter's name map
(tied tensors summed), then per key the norm, both random projections, the 15 full gradients,
the global norm and the sets of parameters without gradient, at the fixture JSON's tolerances.

Runs with the fused kernels in graph mode, the training configuration, on a static canvas larger
than the fixture's batch as the data loader pads it (``tests/test_static_canvas.CANVAS``: the
canvas beyond the batch's extent must change no gradient), and in PyNative on the fixture's own
canvas with both the pure MindSpore operators and the fused kernels; the comparison's own failure
modes (a scaled or zeroed gradient, a missing or extra port gradient, a fixture key the port
cannot map) are checked on the graph run's gradients."""
import json

import numpy as np
import pytest
from test_static_canvas import CANVAS

from src.tools.parity.golden import FixtureArrays, build_golden_model, grad_fixture_inputs
from src.tools.parity.grad import REPORT_SECTIONS, compare_grad, official_grads
from src.tools.parity.report import account_arrays
from src.tools.parity.runs import run_grad_model

STEM = "model_grad_r50"


def grad_rows(golden_dir, mode, kernels, canvas=None):
    path = str(golden_dir / f"{STEM}.npz")
    meta = json.load(open(golden_dir / f"{STEM}.json"))
    train, train_g, train_meta, entries = grad_fixture_inputs(path, str(golden_dir), meta)
    assert train == "model_train_r50"
    model = build_golden_model(str(golden_dir), train_meta, num_classes=80, kernels=kernels)
    ours = run_grad_model(model, train_g, train_meta, mode, canvas=canvas)
    g = FixtureArrays(np.load(path))
    rows = compare_grad(STEM, g, meta, ours, entries, train_meta)
    return rows + account_arrays(STEM, g, meta, rows), ours, meta, entries, train_meta


def check_all_compared(rows, meta):
    failed = [r.line() for r in rows if not r.ok]
    assert not failed, "\n".join(failed)
    assert not [r for r in rows if r.agreement == "not compared"]
    keys = meta["num_parameter_tensors"]["recorded"]
    assert keys == len(meta["params"]) == 412
    count = next(r for r in rows if r.name == "gradient keys compared")
    assert count.agreement == f"{keys} keys"
    assert sum(r.name.startswith("grad_norm|") for r in rows) == keys
    assert sum(r.name.startswith("grad_proj|") for r in rows) == keys
    assert sum(r.name.startswith("grad_full|") for r in rows) == len(meta["full_grad_keys"])
    for name in ("global_grad_norm", "none/zero-gradient parameters", "total_loss", "losses_weighted (40)"):
        assert any(r.name == name for r in rows), name
    sections = {r.name for r in rows if r.name.startswith("grad ")}
    assert sections >= {f"grad {s} [{g}] max" for s in ("norm", "proj", "full") for g in REPORT_SECTIONS}
    assert {"grad norm [encoder: alpha] max", "grad proj [decoder: sampling_offsets] max"} <= sections


@pytest.fixture(scope="module")
def graph_kernel(golden_dir):
    return grad_rows(golden_dir, "graph", "kernel", CANVAS)


def test_gradients_graph_mode_fused_kernels(graph_kernel):
    check_all_compared(graph_kernel[0], graph_kernel[2])


@pytest.mark.parametrize("kernels", ["pure", "kernel"])
def test_gradients_pynative(golden_dir, kernels):
    """Pure MindSpore operators, and the fused kernels (whose PyNative backward once crashed on a
    gather of the OESM's bool row mask)."""
    rows, _, meta, _, _ = grad_rows(golden_dir, "pynative", kernels)
    check_all_compared(rows, meta)


def test_gradient_comparison_fails_on_a_wrong_missing_or_extra_gradient(golden_dir, graph_kernel):
    """The comparison itself on the graph run's gradients: each mistake gives FAIL rows."""
    _, ours, meta, entries, train_meta = graph_kernel
    g = dict(np.load(golden_dir / f"{STEM}.npz"))

    def failing(grads, fixture=g, fixture_meta=meta):
        rows = compare_grad(STEM, FixtureArrays(fixture), fixture_meta, dict(ours, grads=grads), entries, train_meta)
        return {r.name for r in rows if not r.ok}

    # one tensor off by 1% (beyond the transformer group's 5e-4 norm tolerance)
    name = "transformer.decoder.layers.3.ffns.0.layers.1.weight"
    scaled = dict(ours["grads"], **{name: ours["grads"][name] * 1.01})
    assert {f"grad_norm|{name}", "grad norm [decoder] max"} <= failing(scaled)
    # a zeroed gradient (e.g. a stop_gradient that cuts the only path) breaks norm and the zero set
    zeroed = dict(ours["grads"], **{"transformer.token_selector.alpha": np.zeros(3, np.float32)})
    assert {"grad_norm|transformer.alpha", "none/zero-gradient parameters"} <= failing(zeroed)
    # an official key whose port parameter has no gradient (frozen in the port)
    missing = {k: v for k, v in ours["grads"].items() if k != "backbone.layer4.2.conv3.weight"}
    assert "grad|backbone.res5.2.conv3.weight" in failing(missing)
    # a port trainable parameter the official model freezes (the stem) must be reported
    extra = dict(ours["grads"], **{"backbone.conv1.weight": np.ones((64, 3, 7, 7), np.float32)})
    assert "grad|backbone.stem.conv1.weight" in failing(extra)
    # a fixture key the port cannot map
    strange = dict(g, **{"grad_norm|transformer.no_such.weight": np.float64(1.0)})
    assert "grad|transformer.no_such.weight" in failing(ours["grads"], strange)


def test_tied_port_copies_are_summed(graph_kernel):
    """A port that keeps separate copies of a tied tensor (here: the decoder's class head 6 under
    the alias key enhance_MCSP.0) gets the sum of their gradients under the canonical key."""
    _, ours, _, entries, _ = graph_kernel
    grads = dict(ours["grads"])
    shapes = dict(ours["shapes"])
    copy = "transformer.encoder.enhance_MCSP.0.weight"
    half = grads["transformer.decoder.class_embed.6.weight"] / 2
    grads["transformer.decoder.class_embed.6.weight"] = half
    grads[copy], shapes[copy] = half.copy(), half.shape
    summed, reach, extra = official_grads(entries, grads, shapes)
    assert reach["class_embed.6.weight"] == {"transformer.decoder.class_embed.6.weight", copy} and not extra
    np.testing.assert_allclose(summed["class_embed.6.weight"],
                               ours["grads"]["transformer.decoder.class_embed.6.weight"], rtol=1e-6)
