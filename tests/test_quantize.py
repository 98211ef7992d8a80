"""INT8 artifacts: the Q/DQ contract TensorRT needs, the CPU model, the TensorRT cache."""

import struct

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.calibrate import calibrate
from pipeline.evaluate import ort_runner
from pipeline.quantize import parse_trt_cache, quantize, trt_cache_text

PIN = "/conv1/Conv"


@pytest.fixture(scope="module")
def artifacts(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant")
    calib = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(out / "c.json"))
    qdq, cpu = str(out / "qdq.onnx"), str(out / "cpu.onnx")
    quantize(tiny["onnx"], qdq, calib["ranges"], "entropy", [PIN], "tensorrt")
    quantize(tiny["onnx"], cpu, calib["ranges"], "entropy", [PIN], "cpu")
    return {"calib": calib, "qdq": qdq, "cpu": cpu}


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_qdq_graph_is_symmetric_per_channel(artifacts):
    model = onnx.load(artifacts["qdq"])
    inits = _inits(model)
    quant = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequant = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quant and dequant
    for node in quant + dequant:
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()  # signed, zero point 0: no int32 bias
    weight_dq = [n for n in dequant if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weight_dq, "conv weights must be stored as int8 with their own DequantizeLinear"
    for node in weight_dq:
        axis = [a.i for a in node.attribute if a.name == "axis"]
        assert axis in ([], [0]) and inits[node.input[1]].ndim == 1  # per output channel
    activation_q = [n for n in quant if n.input[0] not in inits]
    assert all(inits[n.input[1]].ndim == 0 for n in activation_q)  # per tensor


def test_pinned_layer_has_no_qdq_and_computes_in_fp16(artifacts):
    model = onnx.load(artifacts["qdq"])
    inits = _inits(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == PIN)
    assert producers[conv.input[0]].op_type == "Cast"
    assert inits[conv.input[1]].dtype == np.float16
    consumers = [n for n in model.graph.node if conv.output[0] in n.input]
    assert [c.op_type for c in consumers] == ["Cast"]
    assert not any(
        producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
        for i in conv.input
    )


def test_cpu_model_uses_unsigned_activations_and_keeps_pin_fp32(artifacts):
    model = onnx.load(artifacts["cpu"])
    inits = _inits(model)
    zero_types = {
        inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"
    }
    assert np.dtype(np.uint8) in zero_types
    conv = next(n for n in model.graph.node if n.name == PIN)
    assert inits[conv.input[1]].dtype == np.float32


def test_both_int8_models_run_and_track_fp32(tiny, artifacts):
    from pipeline.evaluate import eval_arrays, logits_of

    images, _ = eval_arrays(tiny["dataset"], tiny["spec"])
    ref = logits_of(ort_runner(tiny["onnx"]), images)
    for kind in ("qdq", "cpu"):
        got = logits_of(ort_runner(artifacts[kind]), images)
        cosine = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        assert cosine.mean() > 0.9, kind  # a one-epoch model; NEU figures come from benchmark


def test_trt_cache_format(artifacts):
    ranges = artifacts["calib"]["ranges"]
    text = trt_cache_text(ranges, "8.2.1")
    header, parsed = parse_trt_cache(text)
    assert header == "TRT-8201-EntropyCalibration2"
    name = artifacts["calib"]["input"]["name"]
    line = next(x for x in text.splitlines() if x.startswith(name + ": "))
    assert len(line.split(": ")[1]) == 8
    scale = struct.unpack(">f", bytes.fromhex(line.split(": ")[1]))[0]
    assert scale == pytest.approx(ranges[name]["amax"] / 127, rel=1e-6)
    assert parsed[name] == pytest.approx(ranges[name]["amax"], rel=1e-6)
    assert trt_cache_text(ranges, "10.3.0").startswith("TRT-100300-EntropyCalibration2\n")


def test_cpu_session_keeps_the_stem_pool_fp32_with_identical_logits(tiny, artifacts, tmp_path):
    import onnxruntime as ort

    from pipeline.evaluate import DISABLED_OPTIMIZERS, ort_session

    def optimized_pool_input_type(**kwargs):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_path / "opt.onnx")
        session = ort.InferenceSession(
            artifacts["cpu"], options, providers=["CPUExecutionProvider"], **kwargs
        )
        graph = onnx.load(str(tmp_path / "opt.onnx")).graph
        producer = {o: n for n in graph.node for o in n.output}
        pool = next(n for n in graph.node if n.op_type == "MaxPool")
        return session, producer[pool.input[0]].op_type

    default, feeds_pool = optimized_pool_input_type()
    assert feeds_pool == "QuantizeLinear"  # ONNX Runtime's default: a uint8 pool
    _, feeds_pool = optimized_pool_input_type(disabled_optimizers=DISABLED_OPTIMIZERS)
    assert feeds_pool != "QuantizeLinear"  # ours: the pool stays in the FP32 stem
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    ours = ort_session(artifacts["cpu"]).run(None, {"input": images})[0]
    theirs = default.run(None, {"input": images})[0]
    assert np.array_equal(ours, theirs)
