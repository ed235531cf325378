"""src.tools.onnx_graph.repair on small hand-made graphs with the exporter's three faults."""
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from src.tools.onnx_graph import OnnxGraphError, repair


def _model(nodes, outputs=("y",)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3]) for name in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def _run(model):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.0
    return session, x, session.run(None, {"x": x})


def test_repair_drops_repeated_nodes_orders_the_graph_and_names_the_outputs():
    relu = helper.make_node("Relu", ["x"], ["r"], name="relu")
    nodes = [helper.make_node("Add", ["r", "r"], ["s"], name="add"),   # before its producer
             relu, relu,                                              # the same node twice
             helper.make_node("Neg", ["s"], ["y"], name="neg"),
             helper.make_node("Abs", ["x"], ["z"], name="abs")]
    model = _model(nodes, outputs=("y", "z"))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    repair(model, ("negated", "absolute"))
    assert [n.name for n in model.graph.node] == ["relu", "add", "neg", "abs"]
    session, x, (negated, absolute) = _run(model)
    assert [o.name for o in session.get_outputs()] == ["negated", "absolute"]
    np.testing.assert_array_equal(negated, -2 * np.maximum(x, 0))
    np.testing.assert_array_equal(absolute, np.abs(x))


def test_repair_leaves_a_valid_graph_as_it_is():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Neg", ["r"], ["y"], name="neg")]
    model = _model(nodes)
    before = model.SerializeToString()
    assert repair(model).SerializeToString() == before


@pytest.mark.parametrize("fault, message", [
    ("different nodes, one name", "two different nodes"),
    ("an input nothing gives", "which no node, input or initializer gives"),
    ("a cycle", "cycle"),
    ("an output name taken", "already a tensor"),
])
def test_repair_refuses_what_would_change_the_computation(fault, message):
    names = ("y",)
    if fault == "different nodes, one name":
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="n"), helper.make_node("Neg", ["r"], ["y"], name="n")]
    elif fault == "an input nothing gives":
        nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    elif fault == "a cycle":
        nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="a"), helper.make_node("Neg", ["a"], ["b"], name="b"),
                 helper.make_node("Relu", ["a"], ["y"], name="y")]
    else:
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Neg", ["r"], ["y"], name="neg")]
        names = ("r",)
    with pytest.raises(OnnxGraphError, match=message):
        repair(_model(nodes), names)
