"""Stand-ins for TensorRT and CUDA shared by the TensorRT tests; none of this is TensorRT or CUDA.

The stand-ins parse no ONNX, build nothing, run no kernel and keep "device
memory" in host arrays. They carry the names and the behaviour that
``pipeline.trt_adapter``, ``trt_build``, ``trt_runtime`` and ``device_route``
rely on (builder flags, per-layer precision, the entropy calibrator's callbacks,
the DETAILED inspector JSON, both IO APIs), and they record what was asked of
them so tests can check the wiring. Every stand-in TensorRT module is a
namespace, not a module, and carries :data:`LABEL` as ``JETQUANT_STAND_IN``, so
``device_route.stand_in_of`` names it and no report counts it as TensorRT.

What a stand-in TensorRT does is one :func:`make_setup` namespace (version,
fast INT8, whether pins are honoured, the parsed graph, IO shapes, the logits
its engines compute); the test files pass what differs as parameters.

The inspector formats follow the engine inspector's documented kDETAILED layout
(TensorRT Developer Guide, "Engine Inspector"): a "Layers" list whose records
have "Name", "LayerType" and "Inputs"/"Outputs" with "Format/Datatype" strings.
"""

import json
import time
import types

import numpy as np

from pipeline import trt_adapter

LABEL = "tests/standins.py stand-in for TensorRT; not TensorRT"
FLOAT16 = "float16"
STRONGLY_TYPED_BIT = 5
FORMATS = {
    "INT8": "Thirty-two wide channel vectorized row major Int8 format.",
    "FP16": "Row major linear FP16 format",
    "FP32": "Row major linear FP32 format",
}
LAYER_TYPES = types.SimpleNamespace(
    CONVOLUTION="conv",
    IDENTITY="identity",
    QUANTIZE="quantize",
    DEQUANTIZE="dequantize",
    CAST="cast",
    ACTIVATION="act",
    MATMUL="mm",
    CONSTANT="const",
    ELEMENTWISE="add",
)


# ---- CUDA ----------------------------------------------------------------------------------------


class StandInCuda(object):
    """Stand-in CUDA wrapper, not CUDA: device memory is host arrays, events read ``clock_ms``.

    Args:
        device: what ``device_name()`` answers.
        clock_ms: callable giving the time in ms an event records (the host clock by default).
    """

    name = "stand-in CUDA (host memory)"

    def __init__(self, device="Stand-in GPU (not a GPU)", clock_ms=None):
        self.memory, self.next_ptr, self.device = {}, 4096, device
        self.clock_ms = clock_ms or (lambda: time.perf_counter() * 1000.0)

    def malloc(self, nbytes):
        self.next_ptr += nbytes + 256
        self.memory[self.next_ptr] = np.zeros(nbytes, dtype=np.uint8)
        return self.next_ptr

    def free(self, ptr):
        del self.memory[ptr]

    def to_device(self, ptr, array, stream):
        raw = np.ascontiguousarray(array).view(np.uint8).ravel()
        self.memory[ptr][: raw.size] = raw

    def to_host(self, array, ptr, stream):
        array.view(np.uint8).reshape(-1)[:] = self.memory[ptr][: array.nbytes]

    def stream(self):
        return "stream"

    def handle(self, stream):
        return 0

    def sync(self, stream):
        pass

    def event(self):
        return {}

    def record(self, event, stream):
        event["t"] = self.clock_ms()

    def elapsed_ms(self, start, end):
        return end["t"] - start["t"]

    def device_name(self):
        return self.device


class TickingClock(object):
    """Stand-in event clock (not CUDA's): reads 1, 3, 6, 10 ... ms, so gaps are 2, 3, 4 ... ms."""

    def __init__(self):
        self.ticks = 0

    def __call__(self):
        self.ticks += 1
        return self.ticks * (self.ticks + 1) / 2.0


# ---- the network definition --------------------------------------------------------------------


class StandInFlag(object):
    """Stand-in for a TensorRT enum member (not TensorRT): ``int()`` gives its bit position."""

    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


class StandInTensor(object):
    """Stand-in for ``trt.ITensor`` (not TensorRT): a name and, for inputs, a shape."""

    def __init__(self, name, shape=None):
        self.name, self.shape = name, shape


class StandInLayer(object):
    """Stand-in for ``trt.ILayer`` (not TensorRT): name, type, tensor wiring and FP16 pins."""

    def __init__(self, name, kind=None, inputs=(), outputs=()):
        self.name, self.type, self.precision, self.output_types = name, kind, None, {}
        self._in = [StandInTensor(n) for n in inputs]
        self._out = [StandInTensor(n) for n in outputs]
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)

    def get_input(self, index):
        return self._in[index]

    def get_output(self, index):
        return self._out[index]

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


class StandInNetwork(object):
    """Stand-in for ``trt.INetworkDefinition`` (not TensorRT): layers in order, input tensors.

    ``qdq`` is set by the stand-in parser when the parsed bytes contain ``qdq``.
    """

    def __init__(self, layers=(), inputs=(), strongly_typed=False):
        self.layers, self.inputs = list(layers), list(inputs)
        self.strongly_typed, self.qdq = strongly_typed, False

    @property
    def num_layers(self):
        return len(self.layers)

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_layer(self, index):
        return self.layers[index]

    def get_input(self, index):
        return self.inputs[index]


def stem_graph(data):
    """Default stand-in parse: stem conv, ReLU, one block conv, FC (a Cast first for Q/DQ)."""
    kinds = LAYER_TYPES
    qdq = b"qdq" in data
    first = "/conv1/Cast_out" if qdq else "input"
    layers = [StandInLayer("/conv1/Cast", kinds.CAST, ["input"], [first])] if qdq else []
    return layers + [
        StandInLayer("/conv1/Conv", kinds.CONVOLUTION, [first], ["c1"]),
        StandInLayer("/relu/Relu", kinds.ACTIVATION, ["c1"], ["r1"]),
        StandInLayer("/layer1/layer1.0/conv1/Conv", kinds.CONVOLUTION, ["r1"], ["l1"]),
        StandInLayer("/fc/Gemm", kinds.MATMUL, ["l1"], ["logits"]),
    ]


def channel_mean_logits(images, classes):
    """Default stand-in engine maths: per image, channel means in reverse order (B, G, R ...)."""
    means = images.mean(axis=(2, 3))
    return np.ascontiguousarray(means[:, ::-1][:, :classes], dtype=np.float32)


def make_setup(**changes):
    """What one stand-in TensorRT does (not TensorRT); ``changes`` override these defaults.

    version: its ``__version__``. fast_int8: ``platform_has_fast_int8``.
    honour_pins: FP16 pins and graph casts run in FP16 (False: they are ignored).
    graph: ``graph(onnx bytes)`` -> the parsed layers. errors: parser errors (parse fails).
    input_shape / classes: engine IO shapes. cuda: the :class:`StandInCuda` engines read.
    logits: ``logits(images NCHW, classes)``. max_batch: largest batch a context takes.
    served: list the builder appends each calibration batch size to.
    """
    setup = dict(
        version="10.3.0.30",
        fast_int8=True,
        honour_pins=True,
        graph=stem_graph,
        errors=(),
        input_shape=(-1, 3, 16, 16),
        classes=3,
        cuda=None,
        logits=channel_mean_logits,
        max_batch=32,
        served=None,
    )
    unknown = set(changes) - set(setup)
    if unknown:
        raise TypeError("stand-in setup has no {}".format(sorted(unknown)))
    setup.update(changes)
    if setup["served"] is None:
        setup["served"] = []
    return types.SimpleNamespace(**setup)


def bound(cls, setup):
    """A subclass of stand-in class ``cls`` that reads ``setup`` (TensorRT makes it, not us)."""
    return type(cls.__name__, (cls,), {"setup": setup})


# ---- builder, parser, config -------------------------------------------------------------------


class StandInBuilderConfig(object):
    """Stand-in for ``trt.IBuilderConfig`` (not TensorRT): records flags and pool limits."""

    def __init__(self):
        self.calls, self.flags, self.profiles = [], set(), []
        self.int8_calibrator = self.calibration_profile = self.profiling_verbosity = None
        self.max_workspace_size = None

    def set_flag(self, flag):
        self.calls.append(("flag", flag))
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool, nbytes):
        self.calls.append(("pool", pool, nbytes))

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def set_calibration_profile(self, profile):
        self.calibration_profile = profile


class StandInProfile(object):
    """Stand-in for ``trt.IOptimizationProfile`` (not TensorRT): keeps (min, opt, max) shapes."""

    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (low, opt, high)


class StandInBuilder(object):
    """Stand-in for ``trt.Builder`` (not TensorRT): its "engines" are JSON plans.

    A plan names the precision of the build and, per convolution, the precision
    it ran in: FP16 where pinned (weak typing) or fed by a Cast (strong typing),
    unless ``setup.honour_pins`` is False. A calibrator without a cache is run to
    its end and a cache for ``setup.version`` written.
    """

    setup = make_setup()

    def __init__(self, logger=None):
        self.flags = None

    @property
    def platform_has_fast_int8(self):
        return self.setup.fast_int8

    def create_network(self, flags):
        self.flags = flags
        return StandInNetwork(strongly_typed=bool(flags & (1 << STRONGLY_TYPED_BIT)))

    def create_builder_config(self):
        return StandInBuilderConfig()

    def create_optimization_profile(self):
        return StandInProfile()

    def build_serialized_network(self, network, config):
        calibrator = config.int8_calibrator
        if calibrator is not None and calibrator.read_calibration_cache() is None:
            while calibrator.get_batch(["input"]) is not None:
                self.setup.served.append(calibrator.get_batch_size())
            header = trt_adapter.calibration_cache_header(self.setup.version)
            calibrator.write_calibration_cache((header + "\ninput: 3c010a14\n").encode())
        return json.dumps(self._plan(network, config)).encode()

    def _plan(self, network, config):
        if network.strongly_typed:
            precision = "INT8" if network.qdq else "FP32"
        else:
            precision = (
                "INT8" if "int8" in config.flags else "FP16" if "fp16" in config.flags else "FP32"
            )
        casts = set(x.get_output(0).name for x in network.layers if x.type == LAYER_TYPES.CAST)
        layers = []
        for x in network.layers:
            if x.type != LAYER_TYPES.CONVOLUTION:
                continue
            half = x.precision == FLOAT16 or (
                network.strongly_typed and x.get_input(0).name in casts
            )
            layers.append([x.name, "FP16" if half and self.setup.honour_pins else precision])
        return {"precision": precision, "layers": layers}


class StandInParserError(object):
    """Stand-in for ``trt.ParserError`` (not TensorRT): a node index and a description."""

    def __init__(self, node, desc):
        self._node, self._desc = node, desc

    def node(self):
        return self._node

    def desc(self):
        return self._desc


class StandInOnnxParser(object):
    """Stand-in for ``trt.OnnxParser`` (not TensorRT): reads no ONNX.

    ``parse`` gives the network ``setup.graph(data)`` and one input of
    ``setup.input_shape``, or fails with ``setup.errors`` when there are any.
    """

    setup = make_setup()

    def __init__(self, network, logger):
        self.network, self.num_errors = network, len(self.setup.errors)

    def parse(self, data):
        if self.setup.errors:
            return False
        self.network.layers = self.setup.graph(data)
        self.network.inputs = [StandInTensor("input", self.setup.input_shape)]
        self.network.qdq = b"qdq" in data
        return True

    def get_error(self, index):
        return self.setup.errors[index]


class StandInLogger(object):
    """Stand-in for ``trt.Logger`` (not TensorRT): severities only, logs nothing."""

    VERBOSE, WARNING = 0, 2

    def __init__(self, severity=None):
        self.severity = severity


class StandInCalibratorBase(object):
    """Stand-in for ``trt.IInt8EntropyCalibrator2`` (not TensorRT): a base with no behaviour."""

    def __init__(self):
        pass


# ---- engines, contexts, runtime ----------------------------------------------------------------


def inspector_layer(name, inputs, outputs, kind="CaskConvolution"):
    """One inspector layer record; ``inputs``/``outputs`` are "Format/Datatype" strings."""
    return {
        "Name": name,
        "LayerType": kind,
        "Inputs": [{"Name": "in", "Format/Datatype": f} for f in inputs],
        "Outputs": [{"Name": "out", "Format/Datatype": f} for f in outputs],
    }


def inspector_data(*layers):
    """Inspector JSON (as a dict) holding ``layers``."""
    return {"Layers": list(layers), "Bindings": ["input", "logits"]}


class StandInInspector(object):
    """Stand-in for ``trt.EngineInspector`` (not TensorRT): JSON for (name, precision) pairs."""

    def __init__(self, layers):
        self.execution_context, self.layers = None, list(layers)

    def get_engine_information(self, fmt):
        records = [
            inspector_layer(name, [FORMATS[ran]], [FORMATS[ran]]) for name, ran in self.layers
        ]
        return json.dumps(inspector_data(*records))


class StandInContext(object):
    """Stand-in for ``trt.IExecutionContext`` (not TensorRT): records every call.

    With a :class:`StandInCuda` it runs: reads the input from its host "device
    memory", writes ``logits(images)`` rounded as ``precision`` would (FP16, or
    INT8 as steps of 1/8) to the output. Batches outside 1..max_batch are refused.
    """

    def __init__(self, cuda=None, logits=None, precision="FP32", max_batch=32):
        self.cuda, self.logits, self.precision, self.max_batch = cuda, logits, precision, max_batch
        self.calls, self.addresses, self.shape = [], {}, None

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, shape))
        return self._take(shape)

    def set_binding_shape(self, index, shape):
        self.calls.append(("binding shape", index, shape))
        return self._take(shape)

    def _take(self, shape):
        self.shape = tuple(shape)
        return 1 <= shape[0] <= self.max_batch

    def set_tensor_address(self, name, ptr):
        self.calls.append(("address", name, ptr))
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.calls.append(("v3", stream))
        return self._run(self.addresses.get("input"), self.addresses.get("logits"))

    def execute_async_v2(self, bindings, stream):
        self.calls.append(("v2", list(bindings), stream))
        return self._run(bindings[0], bindings[1])

    def _run(self, pin, pout):
        if self.cuda is None:
            return True
        count = int(np.prod(self.shape))
        images = self.cuda.memory[pin][: count * 4].view(np.float32).reshape(self.shape)
        logits = np.ascontiguousarray(self.logits(images), dtype=np.float32)
        if self.precision == "FP16":
            logits = logits.astype(np.float16).astype(np.float32)
        if self.precision == "INT8":
            logits = (np.round(logits * 8.0) / 8.0).astype(np.float32)
        self.cuda.memory[pout][: logits.nbytes] = logits.view(np.uint8).ravel()
        return True


class _StandInEngineBase(object):
    """Shapes and contexts shared by the two stand-in engine APIs (not TensorRT)."""

    def __init__(self, input_shape, classes, make_context=None, layers=()):
        self.shapes = [tuple(input_shape), (-1, classes)]
        self.make_context, self.layers = make_context or StandInContext, list(layers)

    def create_execution_context(self):
        return self.make_context()


class StandInEngine(_StandInEngineBase):
    """Stand-in for ``trt.ICudaEngine`` with the tensor-name IO API of 8.5+ (not TensorRT)."""

    num_io_tensors = 2
    names = ["input", "logits"]

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return "in" if name == "input" else "out"

    def get_tensor_shape(self, name):
        return self.shapes[self.names.index(name)]

    def get_tensor_dtype(self, name):
        return "float32"

    def create_engine_inspector(self):
        return StandInInspector(self.layers)


class StandInBindingEngine(_StandInEngineBase):
    """Stand-in for ``trt.ICudaEngine`` with only 8.2's binding-index IO API (not TensorRT)."""

    num_bindings = 2

    def get_binding_name(self, index):
        return ["input", "logits"][index]

    def binding_is_input(self, index):
        return index == 0

    def get_binding_shape(self, index):
        return self.shapes[index]

    def get_binding_dtype(self, index):
        return "float32"


class StandInRuntime(object):
    """Stand-in for ``trt.Runtime`` (not TensorRT): engine bytes go to ``load``.

    ``load(bytes)`` returns an engine, None, or raises, as the test needs; make a
    runtime with one by :func:`stand_in_runtime`.
    """

    load = None

    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        return type(self).load(bytes(data))


def stand_in_runtime(load, name="StandInRuntime"):
    """A :class:`StandInRuntime` class named ``name`` whose engines come from ``load``."""
    return type(name, (StandInRuntime,), {"load": staticmethod(load)})


def plan_loader(setup):
    """``load`` for :class:`StandInRuntime`: a stand-in JSON plan -> :class:`StandInEngine`."""

    def logits(images):
        return setup.logits(images, setup.classes)

    def load(data):
        try:
            plan = json.loads(data.decode())
        except ValueError:
            return None
        return StandInEngine(
            setup.input_shape,
            setup.classes,
            lambda: StandInContext(setup.cuda, logits, plan["precision"], setup.max_batch),
            plan["layers"],
        )

    return load


# ---- the tensorrt module ---------------------------------------------------------------------


def stand_in_module(version, **groups):
    """A stand-in tensorrt module (not TensorRT): ``groups`` maps class name -> {member: value}.

    It has ``__version__``, ``float16``, the ``JETQUANT_STAND_IN`` label and ``groups``
    only, so the adapter's feature tests see exactly the names a test gives.
    """
    module = types.SimpleNamespace(__version__=version, float16=FLOAT16, JETQUANT_STAND_IN=LABEL)
    for owner, members in groups.items():
        setattr(module, owner, type(owner, (object,), dict(members)))
    return module


TENSORRT_10_NAMES = {
    "LayerType": vars(LAYER_TYPES),
    "NetworkDefinitionCreationFlag": {
        "EXPLICIT_BATCH": StandInFlag(0),
        "STRONGLY_TYPED": StandInFlag(STRONGLY_TYPED_BIT),
    },
    "BuilderFlag": {"FP16": "fp16", "INT8": "int8", "OBEY_PRECISION_CONSTRAINTS": "obey"},
    "MemoryPoolType": {"WORKSPACE": "ws"},
    "ProfilingVerbosity": {"DETAILED": "detailed"},
    "LayerInformationFormat": {"JSON": "json"},
    "TensorIOMode": {"INPUT": "in", "OUTPUT": "out"},
    "ILayer": {"precision": 1, "set_output_type": 1},
    "IBuilderConfig": {
        "set_memory_pool_limit": 1,
        "int8_calibrator": 1,
        "set_calibration_profile": 1,
    },
    "ICudaEngine": {"num_io_tensors": 1},
    "IExecutionContext": {"set_input_shape": 1, "set_tensor_address": 1, "execute_async_v3": 1},
}


def stand_in_tensorrt(cuda=None, **changes):
    """A stand-in for a TensorRT 10.x tensorrt module (not TensorRT) whose engines run.

    Args:
        cuda: the :class:`StandInCuda` its engines read and write.
        **changes: :func:`make_setup` fields (version, fast_int8, graph, ...).

    Returns:
        The namespace; ``served`` lists the calibration batch sizes its builders read.
    """
    setup = make_setup(cuda=cuda, **changes)
    trt = stand_in_module(setup.version, **TENSORRT_10_NAMES)
    trt.served, trt.nptype = setup.served, lambda dtype: np.float32
    trt.Logger, trt.IInt8EntropyCalibrator2 = StandInLogger, StandInCalibratorBase
    trt.Builder, trt.OnnxParser = bound(StandInBuilder, setup), bound(StandInOnnxParser, setup)
    trt.Runtime = stand_in_runtime(plan_loader(setup))
    return trt
