"""pipeline.trt_adapter without TensorRT: version codes, feature tests, both IO APIs.

TensorRT objects are replaced by the stand-ins of ``tests/standins.py``
(:func:`stand_in_module`, :class:`StandInBuilderConfig`, :class:`StandInEngine`...).
They answer the adapter's feature tests and record calls; they are not TensorRT,
and nothing here counts as TensorRT having run.
"""

import numpy as np
import pytest
from standins import (
    StandInBindingEngine,
    StandInBuilder,
    StandInBuilderConfig,
    StandInContext,
    StandInCuda,
    StandInEngine,
    StandInFlag,
    StandInLayer,
    StandInLogger,
    StandInOnnxParser,
    StandInParserError,
    TickingClock,
    bound,
    make_setup,
    stand_in_module,
    stand_in_runtime,
)

from pipeline import trt_adapter as adapter
from pipeline import trt_runtime
from pipeline.errors import JetquantError

NET_FLAGS_8 = {"EXPLICIT_BATCH": StandInFlag(0)}
NET_FLAGS_10 = {"EXPLICIT_BATCH": StandInFlag(0), "STRONGLY_TYPED": StandInFlag(5)}


@pytest.mark.parametrize("version,code", [
    ("8.2.1", 8201), ("8.2.1.8", 8201), ("8.5.2.2", 8502), ("8.6.1", 8601),
    ("10.3.0", 100300), ("10.3.0.30", 100300), ("10.13.3.9", 101303), ("11.4.0.106", 110400),
])
def test_calibration_cache_code_matches_tensorrt_headers(version, code):
    assert adapter.calibration_cache_code(version) == code
    assert adapter.calibration_cache_header(version) == "TRT-{}-EntropyCalibration2".format(code)


def test_cache_header_is_parsed_and_absent_header_is_none():
    assert adapter.parse_cache_header("TRT-8201-EntropyCalibration2\ninput: 3c010a14\n") == (
        8201, "EntropyCalibration2")
    assert adapter.parse_cache_header("input 2.64\n") is None


@pytest.mark.parametrize("key,version,expected", [
    ("ICudaEngine.num_io_tensors", "8.2.1", False),
    ("ICudaEngine.num_io_tensors", "8.5.2", True),
    ("IBuilderConfig.max_workspace_size", "8.6.1", True),
    ("IBuilderConfig.max_workspace_size", "10.3.0", False),
    ("IInt8EntropyCalibrator2", "10.3.0", True),
    ("IInt8EntropyCalibrator2", "11.0.0", False),
    ("IInt8EntropyCalibrator2.get_batch", "11.4.0", False),
    ("Builder.build_serialized_network", "8.2.1", True),
])
def test_declared_versions(key, version, expected):
    assert adapter.declared_in(key, version) is expected


def test_explicit_batch_flag_on_8x_only():
    builder = StandInBuilder()
    trt_8 = stand_in_module("8.2.1", NetworkDefinitionCreationFlag=NET_FLAGS_8)
    trt_10 = stand_in_module("10.3.0", NetworkDefinitionCreationFlag=NET_FLAGS_10)
    adapter.create_network(trt_8, builder)
    assert builder.flags == 1
    adapter.create_network(trt_10, builder)
    assert builder.flags == 0
    adapter.create_network(trt_10, builder, strongly_typed=True)
    assert builder.flags == 1 << 5


def test_strongly_typed_refused_where_absent():
    with pytest.raises(JetquantError, match="TensorRT 8.6.1 has no NetworkDefinitionCreationFlag"
                                            ".STRONGLY_TYPED; it appeared in TensorRT 10.0"):
        adapter.create_network(stand_in_module("8.6.1",
                                               NetworkDefinitionCreationFlag=NET_FLAGS_8),
                               StandInBuilder(), strongly_typed=True)


def test_workspace_pool_or_attribute():
    config = StandInBuilderConfig()
    pool = stand_in_module("10.3.0", MemoryPoolType={"WORKSPACE": "ws"},
                           IBuilderConfig={"set_memory_pool_limit": 1})
    adapter.set_workspace(pool, config, 1 << 30)
    assert config.calls == [("pool", "ws", 1 << 30)] and config.max_workspace_size is None
    config = StandInBuilderConfig()
    adapter.set_workspace(stand_in_module("8.2.1", IBuilderConfig={"max_workspace_size": 1}),
                          config, 1 << 28)
    assert config.max_workspace_size == 1 << 28 and config.calls == []


def test_pins_obey_or_fall_back_to_strict_types():
    config = StandInBuilderConfig()
    adapter.obey_precision_pins(stand_in_module("8.2.1", BuilderFlag={
        "OBEY_PRECISION_CONSTRAINTS": "obey", "STRICT_TYPES": "strict"}), config)
    adapter.obey_precision_pins(stand_in_module("8.0.1", BuilderFlag={
        "STRICT_TYPES": "strict"}), config)
    assert config.calls == [("flag", "obey"), ("flag", "strict")]


def test_pin_sets_precision_and_output_type_or_is_refused():
    layer = StandInLayer("/conv1/Conv")
    adapter.pin_layer_fp16(stand_in_module("8.6.1", ILayer={"precision": 0,
                                                            "set_output_type": 0}), layer)
    assert (layer.precision, layer.output_types) == ("float16", {0: "float16"})
    with pytest.raises(JetquantError, match="strongly typed only.*/conv1/Conv.*route explicit"):
        adapter.pin_layer_fp16(stand_in_module("11.4.0", ILayer={}), StandInLayer("/conv1/Conv"))


PARSER_ERRORS = (StandInParserError(3, "Unsupported ONNX data type: UINT8"),
                 StandInParserError(17, "Assertion failed: axis 1 out of range"))


def test_parser_errors_are_listed_one_per_line(tmp_path):
    model = tmp_path / "m.fp32.onnx"
    model.write_bytes(b"not really onnx")
    trt = stand_in_module("8.2.1")
    trt.OnnxParser = bound(StandInOnnxParser, make_setup(errors=PARSER_ERRORS))
    with pytest.raises(JetquantError) as info:
        adapter.parse_onnx(trt, "network", "logger", str(model))
    lines = str(info.value).splitlines()
    assert lines[0] == "TensorRT 8.2.1 could not parse {}:".format(model)
    assert lines[1:3] == ["  node 3: Unsupported ONNX data type: UINT8",
                          "  node 17: Assertion failed: axis 1 out of range"]
    assert "opset 13" in lines[3]


def bad_magic(data):
    raise RuntimeError("bad magic")


@pytest.mark.parametrize("runtime", [
    stand_in_runtime(lambda data: None, "StandInNoneRuntime"),
    stand_in_runtime(bad_magic, "StandInRaisingRuntime")], ids=["NoneRuntime", "RaisingRuntime"])
def test_corrupt_engine_is_one_clear_error(tmp_path, runtime):
    path = tmp_path / "m.int8.trt10.3.0.orin.abcd1234.engine"
    path.write_bytes(b"\x00" * 100)
    trt = stand_in_module("10.3.0")
    trt.Runtime = runtime
    with pytest.raises(JetquantError) as info:
        adapter.deserialize(trt, "logger", trt_runtime.read_engine_bytes(path), str(path))
    message = str(info.value)
    assert str(path) in message and "100 bytes" in message and "rebuild" in message


def test_empty_or_missing_engine_file_is_refused(tmp_path):
    empty = tmp_path / "e.engine"
    empty.write_bytes(b"")
    with pytest.raises(JetquantError, match="is empty.*rebuild"):
        trt_runtime.read_engine_bytes(empty)
    with pytest.raises(JetquantError, match="engine not found"):
        trt_runtime.read_engine_bytes(tmp_path / "missing.engine")


def io_trt(version, tensor_api):
    groups = {"ICudaEngine": {"num_io_tensors": 1}, "TensorIOMode": {"INPUT": "in"},
              "IExecutionContext": {"execute_async_v3": 1, "set_input_shape": 1}} \
        if tensor_api else {"ICudaEngine": {"num_bindings": 1}}
    trt = stand_in_module(version, **groups)
    trt.nptype = lambda dtype: np.float32
    return trt


@pytest.mark.parametrize("tensor_api,engine", [
    (True, StandInEngine((-1, 3, 224, 224), 6)),
    (False, StandInBindingEngine((-1, 3, 224, 224), 6))])
def test_engine_io_through_either_api(tensor_api, engine):
    ios = adapter.engine_io(io_trt("10.3.0" if tensor_api else "8.2.1", tensor_api), engine)
    assert [(t.name, t.is_input, t.shape, t.index) for t in ios] == [
        ("input", True, (-1, 3, 224, 224), 0), ("logits", False, (-1, 6), 1)]
    assert all(t.dtype is np.float32 for t in ios)


def test_execute_v3_sets_addresses_by_name_and_v2_orders_bindings_by_index():
    ios = [adapter.IoTensor("logits", False, (-1, 6), np.float32, 1),
           adapter.IoTensor("input", True, (-1, 3, 8, 8), np.float32, 0)]
    pointers = {"input": 4096, "logits": 8192}
    context = StandInContext()
    adapter.execute(io_trt("10.3.0", True), context, ios, pointers, 7)
    assert context.calls == [("address", "logits", 8192), ("address", "input", 4096), ("v3", 7)]
    context = StandInContext()
    adapter.execute(io_trt("8.2.1", False), context, ios, pointers, 7)
    assert context.calls == [("v2", [4096, 8192], 7)]


def test_input_shape_outside_the_profile_is_refused():
    io = adapter.IoTensor("input", True, (-1, 3, 8, 8), np.float32, 0)
    context = StandInContext()
    adapter.set_input_shape(io_trt("10.3.0", True), context, io, (4, 3, 8, 8))
    assert context.calls == [("shape", "input", (4, 3, 8, 8))]
    with pytest.raises(JetquantError, match="cannot take shape .*larger max batch"):
        adapter.set_input_shape(io_trt("8.2.1", False), context, io, (64, 3, 8, 8))


def test_missing_bindings_explain_where_tensorrt_comes_from(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(JetquantError, match="python3-libnvinfer.*onnxruntime backend"):
        adapter.import_tensorrt()


@pytest.mark.gpu
def test_installed_tensorrt_matches_the_version_table():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    version = adapter.version_of(trt)
    wrong = [key for key in adapter.VERSIONED
             if adapter.has(trt, key) != adapter.declared_in(key, version)]
    assert not wrong, "TensorRT {} disagrees with VERSIONED on {}".format(version, wrong)


# --- EngineRunner over a stand-in CUDA and engine (StandInCuda is host memory, not a GPU) -------


def pixel_sums(images, classes):
    """Per image, the sum of its pixels, in every one of ``classes`` logits."""
    sums = images.reshape(images.shape[0], -1).sum(axis=1, keepdims=True)
    return np.repeat(sums, classes, axis=1).astype(np.float32)


def runner_trt(tensor_api, cuda):
    trt = io_trt("10.3.0" if tensor_api else "8.2.1", tensor_api)
    engine_class = StandInEngine if tensor_api else StandInBindingEngine

    def context():
        return StandInContext(cuda, lambda images: pixel_sums(images, 6))

    trt.Runtime = stand_in_runtime(lambda data: engine_class((-1, 3, 8, 8), 6, context))
    trt.Logger = StandInLogger
    return trt


@pytest.mark.parametrize("tensor_api", [True, False])
def test_runner_returns_logits_and_split_latency(tmp_path, tensor_api):
    path = tmp_path / "m.engine"
    path.write_bytes(b"plan")
    cuda = StandInCuda(clock_ms=TickingClock())
    runner = trt_runtime.EngineRunner(path, max_batch=4, trt=runner_trt(tensor_api, cuda),
                                      cuda=cuda)
    batch = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8) / 100.0
    logits, times = runner.run(batch)
    assert logits.shape == (2, 6) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[:, 0], batch.reshape(2, -1).sum(axis=1), rtol=1e-6)
    assert (times.copy_in_ms, times.compute_ms, times.copy_out_ms) == (2.0, 3.0, 4.0)
    assert times.to_dict()["total_ms"] == 9.0
    with pytest.raises(JetquantError, match="batch of 5 images.*1..4"):
        runner.run(np.zeros((5, 3, 8, 8), dtype=np.float32))
    runner.close()
    assert cuda.memory == {}
