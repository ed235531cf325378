"""Make the ONNX file MindSpore 2.10's exporter writes a valid model, without changing what it computes.

Measured on the Focus-DETR inference graph (2026-12-05): the exporter (1) writes some Cast nodes
of a graph input several times, byte for byte the same node with the same output name (not SSA:
onnx's checker and onnxruntime refuse the file), (2) writes nodes before the nodes that produce
their inputs (not topologically sorted), and (3) given ``output_names``, renames an inner tensor
instead of the graph output, which leaves nodes reading a name nothing produces. ``repair`` drops
the repeated copies, orders the nodes, and names the graph outputs itself; anything else that
would change the computation (two different nodes of one name, an input nothing produces, a
cycle) is an error.
"""
import heapq

import onnx


class OnnxGraphError(ValueError):
    pass


def _drop_repeated_nodes(nodes):
    kept, seen = [], {}
    for node in nodes:
        data = node.SerializeToString()
        if node.name in seen:
            if seen[node.name] != data:
                raise OnnxGraphError(f"two different nodes are both named {node.name!r}")
            continue
        seen[node.name] = data
        kept.append(node)
    return kept


def _topological_order(nodes, available):
    """Kahn's order, ties broken by the exporter's own order (so a sorted graph is unchanged)."""
    producer = {}
    for i, node in enumerate(nodes):
        for name in node.output:
            if name in producer:
                raise OnnxGraphError(f"tensor {name!r} is the output of two nodes")
            producer[name] = i
    users = [[] for _ in nodes]
    missing = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for name in set(node.input):
            if name in available:
                continue
            if name not in producer:
                raise OnnxGraphError(f"node {node.name!r} reads {name!r}, which no node, input or initializer gives")
            users[producer[name]].append(i)
            missing[i] += 1
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in users[i]:
            missing[j] -= 1
            if missing[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise OnnxGraphError("the graph has a cycle")
    return [nodes[i] for i in order]


def _rename(graph, old, new):
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


def repair(model, output_names=()):
    """``model`` (onnx.ModelProto) made valid in place, its graph outputs renamed to
    ``output_names`` (in order); returns it, checked by ``onnx.checker``."""
    graph = model.graph
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = _topological_order(_drop_repeated_nodes(graph.node), available)
    del graph.node[:]
    graph.node.extend(nodes)
    if output_names:
        if len(output_names) != len(graph.output):
            raise OnnxGraphError(f"{len(output_names)} output names for {len(graph.output)} outputs")
        taken = {name for node in graph.node for name in list(node.input) + list(node.output)} | available
        for value, name in zip(list(graph.output), output_names):
            if value.name != name:
                if name in taken:
                    raise OnnxGraphError(f"output name {name!r} is already a tensor of the graph")
                _rename(graph, value.name, name)
    onnx.checker.check_model(model, full_check=True)
    return model
