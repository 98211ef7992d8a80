"""pipeline.trt_adapter without TensorRT: version codes, feature tests, both IO APIs.

TensorRT objects are replaced by small stand-ins defined here (FakeTrt, FakeConfig,
FakeEngine...). They answer the adapter's feature tests and record calls; they are
not TensorRT, and nothing here counts as TensorRT having run.
"""

import types

import numpy as np
import pytest

from pipeline import trt_adapter as adapter
from pipeline import trt_runtime
from pipeline.errors import JetquantError


class Flag(object):
    """An enum member stand-in: ``int()`` gives its bit position."""

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


def fake_trt(version, **groups):
    """A stand-in tensorrt module: ``groups`` maps class name -> {member: value}."""
    module = types.SimpleNamespace(__version__=version, float16="float16")
    for owner, members in groups.items():
        setattr(module, owner, type(owner, (object,), dict(members)))
    return module


NET_FLAGS_8 = {"EXPLICIT_BATCH": Flag(0)}
NET_FLAGS_10 = {"EXPLICIT_BATCH": Flag(0), "STRONGLY_TYPED": Flag(5)}


class FakeBuilder(object):
    def __init__(self):
        self.flags = None

    def create_network(self, flags):
        self.flags = flags
        return "network"


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
    builder = FakeBuilder()
    adapter.create_network(fake_trt("8.2.1", NetworkDefinitionCreationFlag=NET_FLAGS_8), builder)
    assert builder.flags == 1
    adapter.create_network(fake_trt("10.3.0", NetworkDefinitionCreationFlag=NET_FLAGS_10),
                           builder)
    assert builder.flags == 0
    adapter.create_network(fake_trt("10.3.0", NetworkDefinitionCreationFlag=NET_FLAGS_10),
                           builder, strongly_typed=True)
    assert builder.flags == 1 << 5


def test_strongly_typed_refused_where_absent():
    with pytest.raises(JetquantError, match="TensorRT 8.6.1 has no NetworkDefinitionCreationFlag"
                                            ".STRONGLY_TYPED; it appeared in TensorRT 10.0"):
        adapter.create_network(fake_trt("8.6.1", NetworkDefinitionCreationFlag=NET_FLAGS_8),
                               FakeBuilder(), strongly_typed=True)


class FakeConfig(object):
    def __init__(self):
        self.calls = []
        self.max_workspace_size = None

    def set_memory_pool_limit(self, pool, nbytes):
        self.calls.append(("pool", pool, nbytes))

    def set_flag(self, flag):
        self.calls.append(("flag", flag))


def test_workspace_pool_or_attribute():
    config = FakeConfig()
    pool = fake_trt("10.3.0", MemoryPoolType={"WORKSPACE": "ws"},
                    IBuilderConfig={"set_memory_pool_limit": 1})
    adapter.set_workspace(pool, config, 1 << 30)
    assert config.calls == [("pool", "ws", 1 << 30)] and config.max_workspace_size is None
    config = FakeConfig()
    adapter.set_workspace(fake_trt("8.2.1", IBuilderConfig={"max_workspace_size": 1}), config,
                          1 << 28)
    assert config.max_workspace_size == 1 << 28 and config.calls == []


def test_pins_obey_or_fall_back_to_strict_types():
    config = FakeConfig()
    adapter.obey_precision_pins(fake_trt("8.2.1", BuilderFlag={
        "OBEY_PRECISION_CONSTRAINTS": "obey", "STRICT_TYPES": "strict"}), config)
    adapter.obey_precision_pins(fake_trt("8.0.1", BuilderFlag={"STRICT_TYPES": "strict"}),
                                config)
    assert config.calls == [("flag", "obey"), ("flag", "strict")]


class FakeLayer(object):
    def __init__(self, name):
        self.name = name
        self.precision = None
        self.output_types = {}

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


def test_pin_sets_precision_and_output_type_or_is_refused():
    layer = FakeLayer("/conv1/Conv")
    adapter.pin_layer_fp16(fake_trt("8.6.1", ILayer={"precision": 0, "set_output_type": 0}),
                           layer)
    assert (layer.precision, layer.output_types) == ("float16", {0: "float16"})
    with pytest.raises(JetquantError, match="strongly typed only.*/conv1/Conv.*route explicit"):
        adapter.pin_layer_fp16(fake_trt("11.4.0", ILayer={}), FakeLayer("/conv1/Conv"))


class FakeError(object):
    def __init__(self, node, desc):
        self._node, self._desc = node, desc

    def node(self):
        return self._node

    def desc(self):
        return self._desc


class FakeParser(object):
    errors = [FakeError(3, "Unsupported ONNX data type: UINT8"),
              FakeError(17, "Assertion failed: axis 1 out of range")]

    def __init__(self, network, logger):
        self.num_errors = len(self.errors)

    def parse(self, data):
        return False

    def get_error(self, index):
        return self.errors[index]


def test_parser_errors_are_listed_one_per_line(tmp_path):
    model = tmp_path / "m.fp32.onnx"
    model.write_bytes(b"not really onnx")
    trt = fake_trt("8.2.1")
    trt.OnnxParser = FakeParser
    with pytest.raises(JetquantError) as info:
        adapter.parse_onnx(trt, "network", "logger", str(model))
    lines = str(info.value).splitlines()
    assert lines[0] == "TensorRT 8.2.1 could not parse {}:".format(model)
    assert lines[1:3] == ["  node 3: Unsupported ONNX data type: UINT8",
                          "  node 17: Assertion failed: axis 1 out of range"]
    assert "opset 13" in lines[3]


class NoneRuntime(object):
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        return None


class RaisingRuntime(NoneRuntime):
    def deserialize_cuda_engine(self, data):
        raise RuntimeError("bad magic")


@pytest.mark.parametrize("runtime", [NoneRuntime, RaisingRuntime])
def test_corrupt_engine_is_one_clear_error(tmp_path, runtime):
    path = tmp_path / "m.int8.trt10.3.0.orin.abcd1234.engine"
    path.write_bytes(b"\x00" * 100)
    trt = fake_trt("10.3.0")
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


class TensorApiEngine(object):
    names = ["input", "logits"]
    num_io_tensors = 2

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return "in" if name == "input" else "out"

    def get_tensor_shape(self, name):
        return (-1, 3, 224, 224) if name == "input" else (-1, 6)

    def get_tensor_dtype(self, name):
        return "f32"


class BindingApiEngine(object):
    num_bindings = 2

    def get_binding_name(self, index):
        return ["input", "logits"][index]

    def binding_is_input(self, index):
        return index == 0

    def get_binding_shape(self, index):
        return [(-1, 3, 224, 224), (-1, 6)][index]

    def get_binding_dtype(self, index):
        return "f32"


def io_trt(version, tensor_api):
    groups = {"ICudaEngine": {"num_io_tensors": 1}, "TensorIOMode": {"INPUT": "in"},
              "IExecutionContext": {"execute_async_v3": 1, "set_input_shape": 1}} \
        if tensor_api else {"ICudaEngine": {"num_bindings": 1}}
    trt = fake_trt(version, **groups)
    trt.nptype = lambda dtype: np.float32
    return trt


@pytest.mark.parametrize("tensor_api,engine", [(True, TensorApiEngine()),
                                               (False, BindingApiEngine())])
def test_engine_io_through_either_api(tensor_api, engine):
    ios = adapter.engine_io(io_trt("10.3.0" if tensor_api else "8.2.1", tensor_api), engine)
    assert [(t.name, t.is_input, t.shape, t.index) for t in ios] == [
        ("input", True, (-1, 3, 224, 224), 0), ("logits", False, (-1, 6), 1)]
    assert all(t.dtype is np.float32 for t in ios)


class RecordingContext(object):
    def __init__(self):
        self.calls = []

    def set_tensor_address(self, name, ptr):
        self.calls.append(("address", name, ptr))

    def execute_async_v3(self, stream):
        self.calls.append(("v3", stream))
        return True

    def execute_async_v2(self, bindings, stream):
        self.calls.append(("v2", list(bindings), stream))
        return True

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, shape))
        return True

    def set_binding_shape(self, index, shape):
        self.calls.append(("binding shape", index, shape))
        return False


def test_execute_v3_sets_addresses_by_name_and_v2_orders_bindings_by_index():
    ios = [adapter.IoTensor("logits", False, (-1, 6), np.float32, 1),
           adapter.IoTensor("input", True, (-1, 3, 8, 8), np.float32, 0)]
    pointers = {"input": 4096, "logits": 8192}
    context = RecordingContext()
    adapter.execute(io_trt("10.3.0", True), context, ios, pointers, 7)
    assert context.calls == [("address", "logits", 8192), ("address", "input", 4096), ("v3", 7)]
    context = RecordingContext()
    adapter.execute(io_trt("8.2.1", False), context, ios, pointers, 7)
    assert context.calls == [("v2", [4096, 8192], 7)]


def test_input_shape_outside_the_profile_is_refused():
    io = adapter.IoTensor("input", True, (-1, 3, 8, 8), np.float32, 0)
    context = RecordingContext()
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


# --- EngineRunner over a stand-in CUDA and engine (FakeCuda is host memory, not a GPU) -----------

class FakeCuda(object):
    """Stand-in CUDA wrapper: device memory is a dict of host arrays; events tick 1, 2, 3 ms."""

    def __init__(self):
        self.memory, self.next_ptr, self.clock = {}, 4096, 0.0

    def malloc(self, nbytes):
        self.next_ptr += nbytes
        self.memory[self.next_ptr] = np.zeros(nbytes, dtype=np.uint8)
        return self.next_ptr

    def free(self, ptr):
        del self.memory[ptr]

    def to_device(self, ptr, array, stream):
        raw = np.ascontiguousarray(array).view(np.uint8).ravel()
        self.memory[ptr][:raw.size] = raw

    def to_host(self, array, ptr, stream):
        array.view(np.uint8).ravel()[:] = self.memory[ptr][:array.nbytes]

    def stream(self):
        return "stream"

    def handle(self, stream):
        return 7

    def sync(self, stream):
        pass

    def event(self):
        return {}

    def record(self, event, stream):
        self.clock += 1.0
        event["t"] = self.clock * (self.clock + 1) / 2

    def elapsed_ms(self, start, end):
        return end["t"] - start["t"]


class SumContext(RecordingContext):
    """Writes, per image, the sum of its pixels into all six logits."""

    def __init__(self, cuda, binding_api):
        RecordingContext.__init__(self)
        self.cuda, self.binding_api, self.addresses, self.batch = cuda, binding_api, {}, 0

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return True

    def set_binding_shape(self, index, shape):
        self.batch = shape[0]
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def _run(self, pin, pout):
        count = self.batch * 3 * 8 * 8
        images = self.cuda.memory[pin][:count * 4].view(np.float32).reshape(self.batch, -1)
        logits = np.repeat(images.sum(axis=1, keepdims=True), 6, axis=1).astype(np.float32)
        self.cuda.memory[pout][:logits.nbytes] = logits.view(np.uint8).ravel()
        return True

    def execute_async_v3(self, stream):
        return self._run(self.addresses["input"], self.addresses["logits"])

    def execute_async_v2(self, bindings, stream):
        return self._run(bindings[0], bindings[1])


def runner_trt(tensor_api, cuda):
    trt = io_trt("10.3.0" if tensor_api else "8.2.1", tensor_api)
    engine_class = TensorApiEngine if tensor_api else BindingApiEngine

    class SmallEngine(engine_class):
        def get_tensor_shape(self, name):
            return (-1, 3, 8, 8) if name == "input" else (-1, 6)

        def get_binding_shape(self, index):
            return [(-1, 3, 8, 8), (-1, 6)][index]

        def create_execution_context(self):
            return SumContext(cuda, not tensor_api)

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return SmallEngine()

    trt.Runtime = Runtime
    trt.Logger = type("Logger", (object,), {"VERBOSE": 0, "WARNING": 2,
                                            "__init__": lambda self, severity: None})
    return trt


@pytest.mark.parametrize("tensor_api", [True, False])
def test_runner_returns_logits_and_split_latency(tmp_path, tensor_api):
    path = tmp_path / "m.engine"
    path.write_bytes(b"plan")
    cuda = FakeCuda()
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
