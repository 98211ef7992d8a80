"""Pins: the first conv by graph structure, more by name or pattern."""

import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.errors import JetquantError
from pipeline.pins import first_conv, resolve


def _graph():
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"], name="id"),
        helper.make_node("Conv", ["w0", "b0"], ["side"], name="not_first"),
        helper.make_node("Conv", ["x1", "w"], ["c"], name="stem/conv"),
        helper.make_node("Relu", ["c"], ["r"], name="stem/relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="block/conv"),
    ]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [1], [0.0]) for n in ("w", "w0", "w2", "b0")]
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        inits,
    )


def test_first_conv_follows_the_input_not_node_order():
    assert first_conv(_graph()) == "stem/conv"


def test_patterns_add_pins_and_unknown_pattern_fails():
    assert resolve(_graph(), ["block/*"]) == ["block/conv", "stem/conv"]
    with pytest.raises(JetquantError, match="matches no node"):
        resolve(_graph(), ["nothing*"])


def test_resnet_export_names(tiny):
    assert first_conv(onnx.load(tiny["onnx"]).graph) == "/conv1/Conv"
