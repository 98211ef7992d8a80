"""Every TensorRT version difference, in one module.

jetquant claims TensorRT 8.2 (JetPack 4.6, Jetson Nano), 8.5 / 8.6 (JetPack 5),
10.x (JetPack 6 ships 10.3) and 11.x (strongly typed only). The other TensorRT
modules (``trt_build``, ``trt_runtime``, ``trt_calibrator``) never branch on a
version: they call the functions here, which feature-test the bindings.

Two declarations keep this honest, and ``tests/test_trt_api_names.py`` checks
both against the compiled bindings of each claimed version:

* :data:`VERSIONED` lists every TensorRT name this code touches that is absent
  from some claimed version, with the versions that have it. Code reaches such
  a name only through :func:`has` / :func:`member` with the same key.
* :data:`RECEIVERS` is the naming rule for TensorRT objects (a builder config
  is always called ``config``, an engine ``engine``, ...), so the test can tell
  which class an attribute such as ``config.set_flag`` belongs to.

This module stays Python 3.6 compatible and imports neither torch nor onnx.
"""

import json
import re

from packaging.version import Version

from .errors import JetquantError
from .log import get_logger

log = get_logger("trt")

# Claimed TensorRT release lines; the exact versions whose bindings CI checks are
# in .ci/install-trt-bindings.sh.
CLAIMED = ("8.2", "8.5", "8.6", "10.3", "11")

# Owner class of each variable name used for a TensorRT object in the trt_* modules.
RECEIVERS = {
    "builder": "Builder",
    "config": "IBuilderConfig",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "error": "ParserError",
    "profile": "IOptimizationProfile",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "runtime": "Runtime",
    "inspector": "EngineInspector",
    "layer": "ILayer",
    "tensor": "ITensor",
}

# Names missing from some claimed version: key -> (first version with it, first
# version without it); None means "all claimed versions on that side". Sources:
# the compiled bindings of 8.6.1, 10.3.0 and 11.4.0.106, and for 8.2 the
# TensorRT 8.2.3 headers (NvInfer.h: no memory pools, no tensor-name IO API).
VERSIONED = {
    "IBuilderConfig.max_workspace_size": (None, "10.0"),
    "IBuilderConfig.set_memory_pool_limit": ("8.4", None),
    "MemoryPoolType.WORKSPACE": ("8.4", None),
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": (None, "11.0"),
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": ("10.0", None),
    "Builder.platform_has_fast_int8": (None, "11.0"),
    "BuilderFlag.FP16": (None, "11.0"),
    "BuilderFlag.INT8": (None, "11.0"),
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS": ("8.2", "11.0"),
    "BuilderFlag.STRICT_TYPES": (None, "10.0"),
    "IBuilderConfig.int8_calibrator": (None, "11.0"),
    "IBuilderConfig.set_calibration_profile": (None, "11.0"),
    "IInt8EntropyCalibrator2": (None, "11.0"),
    "ILayer.precision": (None, "11.0"),
    "ILayer.set_output_type": (None, "11.0"),
    "LayerType.CAST": ("8.5", None),
    "ICudaEngine.num_io_tensors": ("8.5", None),
    "ICudaEngine.get_tensor_name": ("8.5", None),
    "ICudaEngine.get_tensor_mode": ("8.5", None),
    "ICudaEngine.get_tensor_shape": ("8.5", None),
    "ICudaEngine.get_tensor_dtype": ("8.5", None),
    "TensorIOMode.INPUT": ("8.5", None),
    "IExecutionContext.set_input_shape": ("8.5", None),
    "IExecutionContext.set_tensor_address": ("8.5", None),
    "IExecutionContext.execute_async_v3": ("8.5", None),
    "ICudaEngine.num_bindings": (None, "10.0"),
    "ICudaEngine.get_binding_name": (None, "10.0"),
    "ICudaEngine.binding_is_input": (None, "10.0"),
    "ICudaEngine.get_binding_shape": (None, "10.0"),
    "ICudaEngine.get_binding_dtype": (None, "10.0"),
    "IExecutionContext.set_binding_shape": (None, "10.0"),
    "IExecutionContext.execute_async_v2": (None, "10.0"),
}

ENTROPY2 = "EntropyCalibration2"


def declared_in(key, version, table=None):
    """True when the version table says TensorRT ``version`` has ``key``.

    A member of a versioned class (``IInt8EntropyCalibrator2.get_batch``) shares
    the class's range; names in neither are claimed by every supported version.
    """
    table = VERSIONED if table is None else table
    owner = key.split(".", 1)[0]
    entry = table.get(key) or table.get(owner)
    if entry is None:
        return True
    since, until = entry
    version = Version(str(version))
    if since is not None and version < Version(since):
        return False
    return until is None or version < Version(until)


def _lookup(trt, key):
    obj = trt
    for part in key.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def has(trt, key):
    """Feature test: does this TensorRT expose ``key`` (``"Owner.name"`` or a module name)?"""
    return _lookup(trt, key) is not None


def member(trt, key):
    """Return the TensorRT object named ``key``, or raise naming the version that lacks it."""
    obj = _lookup(trt, key)
    if obj is None:
        raise JetquantError("TensorRT {} has no {}; {}".format(
            version_of(trt), key, _absent_hint(key)))
    return obj


def _absent_hint(key):
    if key in VERSIONED and VERSIONED[key][1] is not None:
        return "it was removed in TensorRT {}".format(VERSIONED[key][1])
    if key in VERSIONED and VERSIONED[key][0] is not None:
        return "it appeared in TensorRT {}".format(VERSIONED[key][0])
    return "this TensorRT install looks incomplete; reinstall its Python bindings"


def import_tensorrt():
    """Import the TensorRT Python bindings, or explain where they come from."""
    try:
        import tensorrt
    except ImportError as exc:
        raise JetquantError(
            "TensorRT's Python bindings are not importable ({}); on a Jetson they come with "
            "JetPack (apt install python3-libnvinfer), on a PC with pip install tensorrt; "
            "on a machine without an NVIDIA GPU use the onnxruntime backend".format(exc)) from exc
    return tensorrt


def version_of(trt):
    """Return the TensorRT version as a :class:`packaging.version.Version`."""
    return Version(str(getattr(trt, "__version__", "0")))


def calibration_cache_code(version):
    """Version code TensorRT writes in its calibration cache header.

    TensorRT writes ``NV_TENSORRT_VERSION``: ``major*1000 + minor*100 + patch``
    up to 8.x (8.2.1 -> 8201, 8.6.1 -> 8601) and ``major*10000 + minor*100 +
    patch`` from 10.0 on (10.3.0 -> 100300).
    """
    release = (tuple(Version(str(version)).release) + (0, 0, 0))[:3]
    major, minor, patch = release
    scale = 10000 if major >= 10 else 1000
    return major * scale + minor * 100 + patch


def calibration_cache_header(version, algorithm=ENTROPY2):
    """First line of a TensorRT calibration cache, e.g. ``TRT-8201-EntropyCalibration2``."""
    return "TRT-{}-{}".format(calibration_cache_code(version), algorithm)


def parse_cache_header(text):
    """Return (version code, algorithm) from a cache's first line, or None if it has none."""
    match = re.match(r"TRT-(\d+)-(\w+)", text.split("\n", 1)[0].strip())
    if not match:
        return None
    return int(match.group(1)), match.group(2)


class Capabilities(object):
    """What one TensorRT install can do, found by feature tests.

    Attributes:
        version: the TensorRT version.
        routes: quantization routes, preferred first: ``implicit`` (calibrator)
            and/or ``explicit`` (Q/DQ ONNX).
        weak_typing: builder precision flags and per-layer precision exist.
        strongly_typed: networks can be created strongly typed.
        io_api: ``tensor`` (names, ``execute_async_v3``) or ``binding`` (indices, v2).
        workspace_api: ``pool`` (memory pool limit) or ``attribute`` (max_workspace_size).
        constraint_flag: BuilderFlag that makes precision pins binding (OBEY_PRECISION_CONSTRAINTS;
            STRICT_TYPES on a TensorRT 8 without it), or None (strongly typed only).
    """

    def __init__(self, trt):
        self.version = version_of(trt)
        self.weak_typing = has(trt, "BuilderFlag.INT8") and has(trt, "ILayer.precision")
        implicit = self.weak_typing and has(trt, "IInt8EntropyCalibrator2") and has(
            trt, "IBuilderConfig.int8_calibrator")
        self.routes = ("implicit", "explicit") if implicit else ("explicit",)
        self.strongly_typed = has(trt, "NetworkDefinitionCreationFlag.STRONGLY_TYPED")
        self.io_api = "tensor" if has(trt, "ICudaEngine.num_io_tensors") else "binding"
        pool = has(trt, "IBuilderConfig.set_memory_pool_limit")
        self.workspace_api = "pool" if pool else "attribute"
        self.constraint_flag = None
        if has(trt, "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"):
            self.constraint_flag = "OBEY_PRECISION_CONSTRAINTS"
        elif has(trt, "BuilderFlag.STRICT_TYPES"):
            self.constraint_flag = "STRICT_TYPES"

    def describe(self):
        """One log line: version and the features the build will use."""
        return ("TensorRT {}: routes {}, {} typing, {} IO API, workspace via {}".format(
            self.version, "/".join(self.routes), "weak" if self.weak_typing else "strong",
            self.io_api, self.workspace_api))


def make_logger(trt, verbose=False):
    """TensorRT's own logger: warnings by default, everything with ``verbose`` (-v)."""
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def create_network(trt, builder, strongly_typed=False):
    """Create an explicit-batch network definition.

    EXPLICIT_BATCH is required on 8.x and implied from 10.0 (where the flag is
    deprecated, then removed in 11). STRONGLY_TYPED exists from 10.0 and is what
    11 always does.
    """
    flags = 0
    if has(trt, "NetworkDefinitionCreationFlag.EXPLICIT_BATCH") and \
            version_of(trt) < Version("10.0"):
        flags |= 1 << int(member(trt, "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"))
    if strongly_typed:
        flags |= 1 << int(member(trt, "NetworkDefinitionCreationFlag.STRONGLY_TYPED"))
    return builder.create_network(flags)


def parse_onnx(trt, network, logger, path):
    """Parse an ONNX file into ``network``; every parser error is listed, one per line."""
    parser = trt.OnnxParser(network, logger)
    with open(str(path), "rb") as handle:
        ok = parser.parse(handle.read())
    if not ok:
        lines = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            lines.append("  node {}: {}".format(error.node(), error.desc()))
        raise JetquantError("TensorRT {} could not parse {}:\n{}\nre-export the model with "
                            "opset 13 (make export)".format(version_of(trt), path,
                                                            "\n".join(lines)))
    return parser


def set_workspace(trt, config, nbytes):
    """Limit the builder's scratch memory (memory pool on 8.4+, attribute before)."""
    if has(trt, "IBuilderConfig.set_memory_pool_limit"):
        config.set_memory_pool_limit(member(trt, "MemoryPoolType.WORKSPACE"), int(nbytes))
    else:
        config.max_workspace_size = int(nbytes)


def set_detailed_profiling(trt, config):
    """Keep layer details in the engine so the inspector can report precisions."""
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED


def set_precision_flags(trt, config, fp16=False, int8=False):
    """Allow FP16 and/or INT8 kernels (weak typing; refused on strongly typed-only TensorRT)."""
    if fp16:
        flag = member(trt, "BuilderFlag.FP16")
        config.set_flag(flag)
    if int8:
        flag = member(trt, "BuilderFlag.INT8")
        config.set_flag(flag)


def obey_precision_pins(trt, config):
    """Make per-layer precisions binding: the build fails rather than ignore a pin."""
    if has(trt, "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"):
        flag = member(trt, "BuilderFlag.OBEY_PRECISION_CONSTRAINTS")
    elif has(trt, "BuilderFlag.STRICT_TYPES"):
        flag = member(trt, "BuilderFlag.STRICT_TYPES")
    else:
        raise JetquantError("TensorRT {} has no precision-constraint flag; pins need weak "
                            "typing (TensorRT 8.2 to 10.x)".format(version_of(trt)))
    config.set_flag(flag)


def pin_layer_fp16(trt, layer):
    """Pin one network layer to FP16 compute and FP16 output (weak typing only)."""
    if not has(trt, "ILayer.precision") or not has(trt, "ILayer.set_output_type"):
        raise JetquantError("TensorRT {} has no per-layer precision (strongly typed only); pin "
                            "{} in the graph instead (route explicit)".format(version_of(trt),
                                                                               layer.name))
    layer.precision = trt.float16
    layer.set_output_type(0, trt.float16)


def add_batch_profile(trt, builder, input_name, shape, batches):
    """Optimization profile for the batch axis: ``batches`` = (min, opt, max)."""
    profile = builder.create_optimization_profile()
    rest = [int(d) for d in list(shape)[1:]]  # Dims on 8.2 index but do not slice
    dims = [tuple([int(b)] + rest) for b in batches]
    profile.set_shape(input_name, dims[0], dims[1], dims[2])
    return profile


def attach_calibrator(trt, config, calibrator, profile):
    """Hand the calibrator to the builder, with its fixed-shape calibration profile."""
    if "implicit" not in Capabilities(trt).routes:
        raise JetquantError("TensorRT {} has no calibrators (implicit quantization was removed "
                            "in 11.0); use route explicit with the Q/DQ ONNX"
                            .format(version_of(trt)))
    config.int8_calibrator = calibrator
    if has(trt, "IBuilderConfig.set_calibration_profile"):
        config.set_calibration_profile(profile)


def platform_has_fast_int8(trt, builder):
    """True/False where TensorRT can tell (8.2 to 10.x), None where it cannot (11)."""
    if not has(trt, "Builder.platform_has_fast_int8"):
        return None
    return bool(builder.platform_has_fast_int8)


def build_serialized(trt, builder, network, config):
    """Build and serialize an engine; return its bytes."""
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise JetquantError("TensorRT {} failed to build the engine; rerun with -v to see "
                            "TensorRT's log (a pin that cannot run in FP16 fails here)"
                            .format(version_of(trt)))
    return bytes(memoryview(plan))


def deserialize(trt, logger, data, path):
    """Deserialize engine bytes read from ``path``; a corrupt file is one clear error."""
    runtime = trt.Runtime(logger)
    try:
        engine = runtime.deserialize_cuda_engine(data) if data else None
    except (RuntimeError, TypeError, ValueError):
        engine = None
    if engine is None:
        raise JetquantError("engine {} is truncated, corrupt or built by another TensorRT "
                            "(TensorRT {} could not deserialize its {} bytes); delete it and "
                            "rebuild (make engine)".format(path, version_of(trt), len(data or b"")))
    return runtime, engine


def network_layers(network):
    """Return the network's layers in order."""
    return [network.get_layer(index) for index in range(network.num_layers)]


def network_input_names(network):
    """Return the names of the network's input tensors."""
    names = []
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        names.append(tensor.name)
    return names


def layer_io_names(layer):
    """Return (input tensor names, output tensor names) of one layer."""
    inputs = []
    for index in range(layer.num_inputs):
        tensor = layer.get_input(index)
        if tensor is not None:
            inputs.append(tensor.name)
    outputs = []
    for index in range(layer.num_outputs):
        tensor = layer.get_output(index)
        outputs.append(tensor.name)
    return inputs, outputs


def layer_kind(trt, layer):
    """Classify a layer: ``conv``, ``pass`` (cast, identity, Q/DQ) or ``other``."""
    if layer.type == trt.LayerType.CONVOLUTION:
        return "conv"
    passing = [trt.LayerType.IDENTITY, trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE]
    if has(trt, "LayerType.CAST"):
        passing.append(member(trt, "LayerType.CAST"))
    return "pass" if layer.type in passing else "other"


def inspector_json(trt, engine, context=None):
    """What actually ran: the engine inspector's JSON (needs DETAILED profiling verbosity).

    With a dynamic batch axis the inspector reports tensor formats only when it
    is given an execution context whose input shapes are set.
    """
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise JetquantError("TensorRT {}'s engine inspector returned no JSON ({}); build with "
                            "DETAILED profiling verbosity".format(version_of(trt), exc)) from exc


class IoTensor(object):
    """One engine input or output: name, direction, shape (-1 = dynamic), numpy dtype."""

    def __init__(self, name, is_input, shape, dtype, index):
        self.name = name
        self.is_input = is_input
        self.shape = tuple(shape)
        self.dtype = dtype
        self.index = index

    def __repr__(self):
        return "IoTensor({!r}, input={}, shape={}, dtype={})".format(
            self.name, self.is_input, self.shape, self.dtype)


def engine_io(trt, engine):
    """List the engine's IO tensors through whichever IO API this TensorRT has."""
    if has(trt, "ICudaEngine.num_io_tensors"):
        mode_input = member(trt, "TensorIOMode.INPUT")
        out = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            out.append(IoTensor(name, engine.get_tensor_mode(name) == mode_input,
                                engine.get_tensor_shape(name),
                                trt.nptype(engine.get_tensor_dtype(name)), index))
        return out
    out = []
    for index in range(engine.num_bindings):
        out.append(IoTensor(engine.get_binding_name(index), engine.binding_is_input(index),
                            engine.get_binding_shape(index),
                            trt.nptype(engine.get_binding_dtype(index)), index))
    return out


def set_input_shape(trt, context, io, shape):
    """Fix a dynamic input's shape (``io``: an :class:`IoTensor`) for the next execution."""
    if has(trt, "IExecutionContext.set_input_shape"):
        ok = context.set_input_shape(io.name, tuple(shape))
    else:
        ok = context.set_binding_shape(io.index, tuple(shape))
    if ok is False:
        raise JetquantError("input {} cannot take shape {}: outside the engine's optimization "
                            "profile; rebuild with a larger max batch".format(io.name, shape))


def execute(trt, context, ios, pointers, stream_handle):
    """Enqueue one inference. ``pointers`` maps IO tensor name -> device address (int)."""
    if has(trt, "IExecutionContext.execute_async_v3"):
        for io in ios:
            context.set_tensor_address(io.name, int(pointers[io.name]))
        ok = context.execute_async_v3(stream_handle)
    else:
        bindings = [0] * len(ios)
        for io in ios:
            bindings[io.index] = int(pointers[io.name])
        ok = context.execute_async_v2(bindings, stream_handle)
    if not ok:
        raise JetquantError("TensorRT {} failed to enqueue the inference; rerun with -v to see "
                            "TensorRT's log".format(version_of(trt)))
