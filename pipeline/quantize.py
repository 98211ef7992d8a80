"""INT8 artifacts from one calibration: the Q/DQ ONNX, the CPU INT8 ONNX, the TensorRT cache.

All three come from the same per-tensor ranges (:mod:`pipeline.calibrate`):

* Q/DQ ONNX for TensorRT's explicit route: symmetric signed INT8, zero point
  0, per-channel weights on axis 0, per-tensor activations, float biases (the
  form TensorRT accepts; its DequantizeLinear reads INT8 only). Pinned layers
  get no Q/DQ; they compute in FP16 (FP16 weights between Cast nodes), so a
  strongly typed build runs them in FP16.
* CPU INT8 ONNX for ONNX Runtime: unsigned 8-bit activations with signed
  8-bit per-channel weights, which ONNX Runtime's CPU kernels fuse into
  integer convolutions (the symmetric s8/s8 graph runs slower than FP32
  there). Pinned layers stay FP32: the CPU has no fast FP16.
* TensorRT calibration cache for the implicit route: a
  ``TRT-<code>-EntropyCalibration2`` header, then ``tensor: hex`` lines,
  the hex being the float32 bits of ``amax / 127``.

ONNX Runtime's ``quantize_static`` does the graph rewriting; it is handed the
ranges through its own calibration-cache file, so no second calibration runs.
"""

import os
import struct
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import (
    CalibrationMethod,
    TensorData,
    TensorsData,
    save_tensors_data,
)

from .artifacts import atomic_write
from .errors import JetquantError
from .log import Quiet, get_logger
from .trt_adapter import calibration_cache_header

log = get_logger("quantize")

METHOD = {
    "entropy": CalibrationMethod.Entropy,
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
}


def _tensors_data(ranges, algorithm, symmetric):
    data = {}
    for name, r in ranges.items():
        if symmetric:
            lo, hi = -r["amax"], r["amax"]
        else:
            lo, hi = max(r["min"], -r["amax"]), min(r["max"], r["amax"])
        data[name] = TensorData(
            lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32)
        )
    return TensorsData(METHOD[algorithm], data)


def quantize(fp32_path, out_path, ranges, algorithm, pinned, target):
    """Write an INT8 ONNX model from calibrated ranges.

    Args:
        fp32_path: the FP32 ONNX model.
        out_path: where to write the quantized model (atomically).
        ranges: ``{tensor: {min, max, amax}}`` from calibration.
        algorithm: the calibration algorithm the ranges came from.
        pinned: ONNX node names to keep out of INT8.
        target: ``"tensorrt"`` (symmetric s8/s8 Q/DQ, FP16 pins) or ``"cpu"`` (u8/s8).
    """
    symmetric = target == "tensorrt"
    # TensorRT's DequantizeLinear takes INT8 only: biases stay float on the TensorRT route.
    options = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        "QuantizeBias": not symmetric,
    }
    with tempfile.TemporaryDirectory(prefix="jetquant-quant-") as tmp:
        cache = os.path.join(tmp, "ranges.json")
        save_tensors_data(_tensors_data(ranges, algorithm, symmetric), cache)
        model_out = os.path.join(tmp, "model.onnx")
        with Quiet():
            quantize_static(
                str(fp32_path),
                model_out,
                calibration_data_reader=None,
                calibration_cache_path=cache,
                calibrate_method=METHOD[algorithm],
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(pinned),
                extra_options=options,
            )
        model = onnx.load(model_out)
    _check_pins_unquantized(model, pinned)
    if target == "tensorrt":
        pin_fp16(model, pinned)
    onnx.checker.check_model(model)
    atomic_write(out_path, model.SerializeToString())
    return model


def _check_pins_unquantized(model, pinned):
    """A pinned node's weights must stay float (its activation input may come from a DQ)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name not in pinned:
            continue
        for name in node.input[1:]:
            producer = producers.get(name)
            if producer is not None and producer.op_type == "DequantizeLinear" \
                    and producer.input[0] in inits:
                raise JetquantError("pinned layer {} still has INT8 weights ({}); report this "
                                    "with the model".format(node.name, name))


def pin_fp16(model, pinned):
    """Make pinned nodes compute in FP16: FP16 weights, Cast to FP16 before, to FP32 after."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        if node.name not in pinned:
            graph.node.append(node)
            continue
        for slot, name in enumerate(list(node.input)):
            if not name:
                continue
            if name in inits:
                half = name + "_fp16"
                if half not in inits:
                    arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                    inits[half] = numpy_helper.from_array(arr, half)
                    graph.initializer.append(inits[half])
                node.input[slot] = half
            else:
                cast = name + "_to_fp16_" + _slug(node.name)
                graph.node.append(
                    helper.make_node(
                        "Cast",
                        [name],
                        [cast],
                        to=TensorProto.FLOAT16,
                        name=node.name + "/cast_in_" + str(slot),
                    )
                )
                node.input[slot] = cast
        outputs = list(node.output)
        for slot, name in enumerate(outputs):
            node.output[slot] = name + "_fp16"
        graph.node.append(node)
        for slot, name in enumerate(outputs):
            graph.node.append(
                helper.make_node(
                    "Cast",
                    [name + "_fp16"],
                    [name],
                    to=TensorProto.FLOAT,
                    name=node.name + "/cast_out_" + str(slot),
                )
            )
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def trt_cache_text(ranges, trt_version, algorithm="entropy"):
    """Render ranges as a TensorRT calibration cache for ``trt_version``."""
    if algorithm != "entropy":
        log.warning(
            "TensorRT's cache header names EntropyCalibration2, but these ranges came from "
            "%s calibration",
            algorithm,
        )
    lines = [calibration_cache_header(trt_version)]
    for name in sorted(ranges):
        scale = max(ranges[name]["amax"], 1e-12) / 127.0
        lines.append("{}: {}".format(name, struct.pack(">f", scale).hex()))
    return "\n".join(lines) + "\n"


def parse_trt_cache(text):
    """Parse a TensorRT calibration cache into (header, {tensor: amax})."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise JetquantError("not a TensorRT calibration cache (no TRT-... header)")
    out = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        out[name] = struct.unpack(">f", bytes.fromhex(value.strip()))[0] * 127.0
    return lines[0], out
