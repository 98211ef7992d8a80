"""Pinned layers: the ONNX nodes kept out of INT8 (and run in FP16 on TensorRT).

The default pin is the first convolution, found as the first Conv node fed by
the network input (through shape-preserving nodes such as Identity or Cast),
and named as the ONNX graph names it (``/conv1/Conv`` from current exporters).
More pins are given by exact node name or by an fnmatch pattern, in the spirit
of trtexec's ``--layerPrecisions``.
"""

import fnmatch

from .errors import JetquantError

PASS_THROUGH = ("Identity", "Cast")


def first_conv(graph):
    """Return the name of the first Conv node fed by the graph's (non-initializer) input."""
    initializers = {t.name for t in graph.initializer}
    frontier = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if not frontier.intersection(node.input):
            continue
        if node.op_type == "Conv":
            return node.name
        if node.op_type in PASS_THROUGH:
            frontier.update(node.output)
    raise JetquantError("no Conv node is fed by the network input; name the layers to pin "
                        "with --pin")


def resolve(graph, patterns=(), first=True):
    """Return the sorted node names to pin.

    Args:
        graph: an ``onnx.GraphProto``.
        patterns: exact node names or fnmatch patterns (e.g. ``/layer4/*``).
        first: include the first conv (the default pin).

    Raises:
        JetquantError: a pattern matches no node.
    """
    names = [n.name for n in graph.node]
    pinned = {first_conv(graph)} if first else set()
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise JetquantError("--pin {!r} matches no node of the ONNX graph (names look like "
                                "{})".format(pattern, ", ".join(names[:3])))
        pinned.update(hits)
    convs = {n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    if convs and convs <= pinned:
        raise JetquantError("--pin {} pins every Conv/Gemm layer: nothing would be INT8; pin "
                            "fewer layers or build FP16 instead".format(" ".join(patterns)))
    return sorted(pinned)
