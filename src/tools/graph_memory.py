"""Which nodes of a compiled CPU graph hold memory for as long as the graph lives.

    python -m src.tools.graph_memory GRAPH.ir [--min-elements 1000000] [--top 25]

MindSpore 2.10's CPU kernels of some operators build index tables the size of their output in
the kernel object, which the compiled graph keeps until it is freed (found with an allocation
tracer: the memory pool's peak stayed flat while the resident set grew by these tables): an
element-wise op whose operands differ in shape (two 8-byte indices per output element, four
float32 tensors' worth), ``Div`` (the same), ``Transpose`` (8-24 bytes per element). Graph mode
therefore keeps them per node, not per moment (README, "Graph-mode memory on CPU").

A graph's IR (``mindspore.set_context(save_graphs=1, save_graphs_path=DIR)``, file
``graph_build_*.ir``) gives every kernel node with its input and output shapes and the source
lines it came from; ``held_nodes`` lists the nodes of those kinds at or above a size, and the
command prints them grouped by source line, largest first. A node the compiler merged with
equal ones (``equiv_`` in its name) or made for the backward carries the source lines of one
origin only: read the shapes too.
"""
import argparse
import collections
import itertools
import math
import os
import re

# element-wise primitives that broadcast their operands inside the kernel (Div: held always, below)
BROADCASTING = frozenset({
    "Add", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "Pow", "FloorDiv", "Less", "LessEqual",
    "Greater", "GreaterEqual", "Equal", "NotEqual", "LogicalAnd", "LogicalOr", "Select"})
ALWAYS_HELD = frozenset({"Div", "Transpose"})

_NODE = re.compile(r"^\s+%\d+\(\S+\) = (?:PrimFunc_)?(\w+)\(")
_TENSOR = re.compile(r"<Tensor\[\w+\], \(([0-9, ]*)\)>")
_SOURCE = "# In file "

Node = collections.namedtuple("Node", "primitive kind inputs output source")


def _shapes(text):
    return [tuple(int(d) for d in dims.split(",") if d.strip()) for dims in _TENSOR.findall(text)]


def held_nodes(ir_text, min_elements=1, source_root=None):
    """The nodes of a ``graph_build`` IR whose kernels keep output-sized tables: implicit
    broadcasts (an operand of another shape than the output's, of more than one element except
    for ``Select``), ``Div`` and ``Transpose``; each with at least ``min_elements`` output elements. ``source``
    is the innermost source line under ``source_root`` (every line when None)."""
    lines = ir_text.split("\n")
    found = []
    for i, line in enumerate(lines):
        match = _NODE.match(line)
        if not match or i + 1 >= len(lines) or "->" not in lines[i + 1]:
            continue
        primitive = match.group(1)
        inputs, output = (_shapes(part) for part in lines[i + 1].split("->", 1))
        if not output or math.prod(output[0]) < min_elements:
            continue
        if primitive in ALWAYS_HELD:
            kind = primitive
        elif primitive in BROADCASTING and any(s != output[0] and (math.prod(s) > 1 or primitive == "Select")
                                               for s in inputs):
            kind = "broadcast"  # a scalar operand costs no table, except Select's (probe_graph_memory: 6.0)
        else:
            continue
        source = ""
        for following in itertools.islice(lines, i + 2, None):
            if _NODE.match(following):
                break
            if _SOURCE in following and (source_root is None or source_root in following):
                source = following.split(_SOURCE, 1)[1].strip()
        found.append(Node(primitive, kind, inputs, output[0], source))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ir", help="a graph_build_*.ir file")
    parser.add_argument("--min-elements", type=int, default=1_000_000)
    parser.add_argument("--source-root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="attribute each node to the innermost source line under this path (default: src/)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with open(args.ir) as f:
        nodes = held_nodes(f.read(), args.min_elements, args.source_root)
    groups = collections.defaultdict(list)
    for node in nodes:
        groups[(node.primitive, node.kind, node.source)].append(node)
    total = sum(math.prod(n.output) for n in nodes)
    print(f"{len(nodes)} nodes, {total / 1e6:.1f} M output elements, of the kinds that keep output-sized tables")
    ranked = sorted(groups.items(), key=lambda kv: -sum(math.prod(n.output) for n in kv[1]))
    for (primitive, kind, source), members in ranked[:args.top]:
        elements = sum(math.prod(n.output) for n in members)
        print(f"{elements / 1e6:9.1f} M  {len(members):4d} x {primitive} ({kind}) {members[0].inputs} -> "
              f"{members[0].output}\n            {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
