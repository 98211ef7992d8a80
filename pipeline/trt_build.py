"""Build TensorRT engines (FP32, FP16, INT8) and prove what ran in each layer.

Routes to INT8:

* ``implicit`` (default on TensorRT 8.2 to 10.x): ``engines/<stem>.fp32.onnx``
  plus the entropy calibrator over the calibration set.
* ``explicit`` (the only route on 11): ``engines/<stem>.int8-qdq.onnx``, whose
  Q/DQ nodes carry the scales; strongly typed where TensorRT has it (10+).

Pinned layers: TensorRT layer names are the ONNX node names. The default pin is
the first convolution fed by the network input (through casts, identities and
Q/DQ), found in the TensorRT network itself. More pins are given by name or
``fnmatch`` pattern (like ``trtexec --layerPrecisions``); a pattern that matches
no layer is an error. Under weak typing a pin sets the layer's precision and
output type to FP16 and turns on the FP16 flag and OBEY_PRECISION_CONSTRAINTS.

After every build the engine inspector's JSON is checked: each pinned layer
must have run in FP16 and each other convolution of an INT8 engine in INT8,
else the build fails listing which layer ran in what. A device without fast
INT8 (Jetson Nano) gets FP16 for precision ``auto`` and a refusal for ``int8``.

This module stays Python 3.6 compatible and imports neither torch nor onnx.
"""

import fnmatch
import os
import re
from typing import NamedTuple, Tuple

from . import trt_adapter as adapter
from .artifacts import atomic_write, describe, is_fresh, sha256_file, write_sidecar
from .errors import JetquantError
from .log import Timer, get_logger

log = get_logger("build")

PRECISIONS = ("fp32", "fp16", "int8", "auto")
ROUTES = ("implicit", "explicit")
DEFAULT_MAX_BATCH = 32
_GLOB = re.compile(r"[*?\[]")
_NAME_CHARS = r"A-Za-z0-9_./:\-"


class BuildRequest(NamedTuple):
    """What to build.

    Attributes:
        stem: model stem (``resnet50``): sources are ``engines/<stem>.fp32.onnx``
            and ``engines/<stem>.int8-qdq.onnx``.
        precision: ``fp32``, ``fp16``, ``int8`` or ``auto`` (INT8 where the GPU has
            fast INT8, else FP16).
        route: ``implicit``, ``explicit`` or None (the TensorRT's preferred route).
        engines_dir: folder of sources and engines.
        pins: extra layers to pin to FP16 (names or fnmatch patterns).
        pin_first_conv: also pin the first convolution fed by the input.
        calib_paths: calibration image files (implicit route).
        preprocess: the model's Preprocess (implicit route).
        calib_set_sha256: content hash of the calibration set (cache key).
        calib_batch: calibration batch size.
        calib_algo: calibration algorithm of the cache; on-device calibration is entropy.
        opt_batch: batch size TensorRT tunes for.
        max_batch: largest batch the engine accepts (the profile's max; min is 1).
        workspace_bytes: builder scratch memory limit.
        recalibrate: ignore an existing calibration cache.
        verbose: TensorRT's log at VERBOSE.
        device: device name for the engine file name (detected when None).
        classes: class names, recorded in the engine's sidecar.
    """

    stem: str
    precision: str = "auto"
    route: str = None
    engines_dir: str = "engines"
    pins: Tuple[str, ...] = ()
    pin_first_conv: bool = True
    calib_paths: Tuple[str, ...] = ()
    preprocess: object = None
    calib_set_sha256: str = None
    calib_batch: int = 8
    calib_algo: str = "entropy"
    opt_batch: int = 1
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_bytes: int = 1 << 30
    recalibrate: bool = False
    verbose: bool = False
    device: str = None
    classes: Tuple[str, ...] = ()


def device_slug(name):
    """File-name form of a device name (``NVIDIA Jetson Nano`` -> ``jetson-nano``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    slug = re.sub(r"^nvidia-", "", slug)
    return slug or "unknown-device"


def detect_device(cuda=None):
    """Jetson model from the device tree, else the CUDA device name."""
    model = "/proc/device-tree/model"
    if os.path.isfile(model):
        with open(model, "rb") as handle:
            return handle.read().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    from .trt_runtime import open_cuda
    return (cuda or open_cuda()).device_name()


def version_tag(version):
    """``8.2.1`` for TensorRT 8.2.1.8: major.minor.patch."""
    release = (tuple(adapter.Version(str(version)).release) + (0, 0, 0))[:3]
    return ".".join(str(part) for part in release)


def engine_path(engines_dir, stem, precision, version, device, model_sha256):
    """``<dir>/<stem>.<precision>.trt<version>.<device>.<model sha256[:8]>.engine``."""
    name = "{}.{}.trt{}.{}.{}.engine".format(stem, precision, version_tag(version),
                                            device_slug(device), model_sha256[:8])
    return os.path.join(str(engines_dir), name)


def resolve_precision(precision, fast_int8, device):
    """Turn ``auto`` into fp16/int8 and refuse INT8 where the GPU has no fast INT8.

    Args:
        precision: the requested precision.
        fast_int8: ``platform_has_fast_int8`` (None where TensorRT cannot tell).
        device: device name for messages.
    """
    if precision not in PRECISIONS:
        raise JetquantError("precision {!r} is not one of {}".format(precision, ", ".join(
            PRECISIONS)))
    reason = "{} has no fast INT8 (TensorRT reports platform_has_fast_int8 = False)".format(
        device)
    if precision == "auto":
        if fast_int8 is False:
            log.info("precision auto -> fp16: %s", reason)
            return "fp16"
        return "int8"
    if precision == "int8" and fast_int8 is False:
        raise JetquantError("precision int8 refused: {}; an INT8 engine would run slower than "
                            "FP16 there; build precision fp16 or auto".format(reason))
    return precision


def resolve_route(caps, precision, route):
    """Pick the quantization route; refuse one this TensorRT or this precision cannot take."""
    if route is not None and route not in ROUTES:
        raise JetquantError("route {!r} is not one of {}".format(route, ", ".join(ROUTES)))
    if precision != "int8":
        if route is not None:
            raise JetquantError("route {} is a way to INT8; precision {} takes no route (drop "
                                "route or ask for int8)".format(route, precision))
        if precision == "fp16" and not caps.weak_typing:
            raise JetquantError("TensorRT {} builds only the types the graph states (strongly "
                                "typed); an FP16 engine needs an FP16 ONNX, or build int8 "
                                "(explicit route)".format(caps.version))
        return None
    if route is None:
        return caps.routes[0]
    if route not in caps.routes:
        raise JetquantError("route implicit refused: TensorRT {} has no calibrators (implicit "
                            "quantization was removed in 11.0); use route explicit with {}"
                            .format(caps.version, "engines/<stem>.int8-qdq.onnx"))
    return route


def source_onnx(request, route):
    """The ONNX file a build starts from; a missing one names the step that makes it."""
    if route == "explicit":
        path, step = "{}.int8-qdq.onnx".format(request.stem), "make quantize (Q/DQ export)"
    else:
        path, step = "{}.fp32.onnx".format(request.stem), "make export"
    path = os.path.join(request.engines_dir, path)
    if not os.path.isfile(path):
        raise JetquantError("{} not found; create it first ({})".format(path, step))
    return path


def first_input_conv(trt, network):
    """Name of the first convolution fed by the network input (through casts, Q/DQ)."""
    reached = set(adapter.network_input_names(network))
    for layer in adapter.network_layers(network):
        inputs, outputs = adapter.layer_io_names(layer)
        if not reached.intersection(inputs):
            continue
        kind = adapter.layer_kind(trt, layer)
        if kind == "conv":
            return layer.name
        if kind == "pass":
            reached.update(outputs)
    raise JetquantError("no convolution is fed by the network input {}; give the layer to pin "
                        "by name".format(sorted(adapter.network_input_names(network))))


def select_pins(trt, network, patterns, pin_first_conv=True):
    """Resolve pin patterns to layer names (first conv first); unmatched patterns are errors."""
    layers = adapter.network_layers(network)
    names = [layer.name for layer in layers]
    pinned = [first_input_conv(trt, network)] if pin_first_conv else []
    for pattern in patterns:
        if _GLOB.search(pattern):
            found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        else:
            found = [n for n in names if n == pattern]
        if not found:
            convs = [layer.name for layer in layers if adapter.layer_kind(trt, layer) == "conv"]
            raise JetquantError("pin {!r} matches no layer of the network; convolution layers "
                                "are named like {}".format(pattern, ", ".join(convs[:6])))
        pinned.extend(n for n in found if n not in pinned)
    return pinned


def conv_names(trt, network):
    """Names of every convolution layer in the network."""
    return [layer.name for layer in adapter.network_layers(network)
            if adapter.layer_kind(trt, layer) == "conv"]


def tensor_precision(fmt):
    """Precision named by an inspector tensor format, e.g. ``... Int8 format.`` -> ``INT8``."""
    text = str(fmt).lower()
    for token, precision in (("int8", "INT8"), ("bf16", "BF16"), ("bfloat16", "BF16"),
                             ("fp16", "FP16"), ("half", "FP16"), ("fp32", "FP32"),
                             ("float", "FP32")):
        if token in text:
            return precision
    return "unknown ({})".format(fmt)


def _tensor_format(record):
    if not isinstance(record, dict):
        return str(record)
    if "Format/Datatype" in record:
        return record["Format/Datatype"]
    return "{} {}".format(record.get("DataType", ""), record.get("Format", "")).strip()


def inspector_layers(data):
    """Layer records of inspector JSON; refuse names-only output."""
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        raise JetquantError("engine inspector gave no layer details; the engine must be built "
                            "with profiling verbosity DETAILED")
    return layers


def matching_layers(name, layers):
    """Compute layers whose (possibly fused) name contains ``name`` as a whole token."""
    pattern = re.compile(r"(^|[^{0}]){1}($|[^{0}])".format(_NAME_CHARS, re.escape(name)))
    found = []
    for record in layers:
        lname = str(record.get("Name", ""))
        if record.get("LayerType") == "Reformat" or lname.startswith("Reformatting"):
            continue
        if pattern.search(lname):
            found.append(record)
    return found


def _precisions(record, key):
    return [tensor_precision(_tensor_format(t)) for t in record.get(key, [])]


def verify_precisions(data, pinned, quantized):
    """Check inspector JSON: pinned layers in FP16, quantized layers fed INT8.

    Returns:
        A list of problems, one line each (empty when the engine ran as asked).
    """
    layers = inspector_layers(data)
    problems = []
    for name, want in [(n, "FP16") for n in pinned] + [(n, "INT8") for n in quantized]:
        found = matching_layers(name, layers)
        if not found:
            problems.append("{} (want {}): not found in the engine's layers".format(name, want))
        for record in found:
            ins, outs = _precisions(record, "Inputs"), _precisions(record, "Outputs")
            ok = set(ins + outs) == {"FP16"} if want == "FP16" else ins[:1] == ["INT8"]
            if not ok:
                problems.append("{} (want {}) ran in engine layer {!r}: inputs {}, outputs {}"
                                .format(name, want, record.get("Name"), ins, outs))
    return problems


def engine_key(request, caps, precision, route, model_sha256, device, pinned):
    """Everything an engine depends on; a rerun with the same key reuses the engine."""
    key = {"model_sha256": model_sha256, "precision": precision, "route": route,
           "device": device_slug(device), "pins": list(pinned),
           "profile": [1, int(request.opt_batch), int(request.max_batch)],
           "versions": {"tensorrt": str(caps.version)}}
    if precision == "int8" and route == "implicit":
        key["calibration"] = {"calib_set_sha256": request.calib_set_sha256,
                              "batch_size": int(request.calib_batch),
                              "preprocess": request.preprocess.to_dict()}
    return key


def _check_request(request):
    if not 1 <= request.opt_batch <= request.max_batch:
        raise JetquantError("batch profile needs 1 <= opt_batch ({}) <= max_batch ({})".format(
            request.opt_batch, request.max_batch))


def _check_calibration_inputs(request):
    if not request.calib_paths or request.preprocess is None or not request.calib_set_sha256:
        raise JetquantError("the implicit INT8 route needs the calibration set (paths, "
                            "preprocessing and its hash); run make calibrate first or use "
                            "route explicit")


def calibration_cache_path(request):
    """``engines/<stem>.trt-calib.cache``."""
    return os.path.join(request.engines_dir, "{}.trt-calib.cache".format(request.stem))


def build_engine(request, trt=None):
    """Build one engine, or reuse it when its key is unchanged; return its path.

    Args:
        request: a :class:`BuildRequest`.
        trt: the tensorrt module (imported when None).

    Raises:
        JetquantError: an impossible request (INT8 on a Nano, implicit on 11),
            a missing source, an ONNX parse error, a stale calibration cache, a
            failed build, or an engine whose layers did not run as pinned.
    """
    _check_request(request)
    trt = trt or adapter.import_tensorrt()
    caps = adapter.Capabilities(trt)
    log.info("%s", caps.describe())
    logger = adapter.make_logger(trt, request.verbose)
    builder = trt.Builder(logger)
    device = request.device or detect_device()
    fast_int8 = adapter.platform_has_fast_int8(trt, builder)
    precision = resolve_precision(request.precision, fast_int8, device)
    downgraded = request.precision == "auto" and precision != "int8"
    route = resolve_route(caps, precision, None if downgraded else request.route)
    onnx_path = source_onnx(request, route)
    strongly = not caps.weak_typing or (route == "explicit" and caps.strongly_typed)
    network = adapter.create_network(trt, builder, strongly_typed=strongly)
    parser = adapter.parse_onnx(trt, network, logger, onnx_path)
    pinned = [] if precision == "fp32" else select_pins(trt, network, request.pins,
                                                        request.pin_first_conv)
    model_sha256 = sha256_file(onnx_path)
    path = engine_path(request.engines_dir, request.stem, precision, caps.version, device,
                       model_sha256)
    key = engine_key(request, caps, precision, route, model_sha256, device, pinned)
    if is_fresh(path, key):
        log.info("engine up to date, reused: %s", describe(path))
        return path

    log.info("building %s engine (route %s, pinned to FP16: %s) from %s", precision, route,
             ", ".join(pinned) or "none", onnx_path)
    with Timer() as timer:
        plan = _build_plan(trt, builder, network, request, (precision, route, strongly),
                           pinned, model_sha256)
    quantized = [n for n in conv_names(trt, network) if n not in pinned] \
        if precision == "int8" else []
    _verify(trt, logger, plan, request, pinned, quantized)
    del parser

    atomic_write(path, plan)
    write_sidecar(path, key, {"pinned_layers": pinned, "quantized_layers": quantized,
                              "precision": precision, "route": route, "source": onnx_path,
                              "classes": list(request.classes)})
    log.info("engine built in %.1f s, saved as %s", timer.elapsed, describe(path))
    return path


def _build_plan(trt, builder, network, request, mode, pinned, model_sha256):
    precision, route, strongly = mode
    config = builder.create_builder_config()
    adapter.set_workspace(trt, config, request.workspace_bytes)
    adapter.set_detailed_profiling(trt, config)
    tensor = network.get_input(0)
    batches = (1, request.opt_batch, request.max_batch)
    config.add_optimization_profile(
        adapter.add_batch_profile(trt, builder, tensor.name, tensor.shape, batches))
    if not strongly:
        _weak_typing(trt, config, network, precision, pinned)

    feeder = None
    if precision == "int8" and route == "implicit":
        feeder = _attach_calibration(trt, builder, config, request, tensor, model_sha256)
    try:
        plan = adapter.build_serialized(trt, builder, network, config)
    finally:
        if feeder is not None:
            feeder.close()
    _check_feeder(feeder)
    return plan


def _weak_typing(trt, config, network, precision, pinned):
    adapter.set_precision_flags(trt, config, fp16=precision in ("fp16", "int8"),
                                int8=precision == "int8")
    if not pinned:
        return
    for layer in adapter.network_layers(network):
        if layer.name in pinned:
            adapter.pin_layer_fp16(trt, layer)
    adapter.obey_precision_pins(trt, config)


def _attach_calibration(trt, builder, config, request, tensor, model_sha256):
    from .trt_calibrator import (
        BatchFeeder,
        CalibrationBatches,
        CalibrationCache,
        cache_key,
        make_calibrator,
    )

    _check_calibration_inputs(request)
    key = cache_key(adapter.version_of(trt), model_sha256, request.preprocess,
                    request.calib_set_sha256, request.calib_batch, request.calib_algo)
    cache = CalibrationCache(calibration_cache_path(request), key, request.recalibrate)
    cached = cache.load()
    if cached is None and request.calib_algo != "entropy":
        raise JetquantError("on-device calibration is entropy calibration; for {} make the "
                            "cache with make calibrate / make engine (calib algo {})".format(
                                request.calib_algo, request.calib_algo))
    batches = CalibrationBatches(request.calib_paths, request.preprocess, request.calib_batch)
    if batches.dropped:
        log.warning("calibration uses %d of %d images: the last %d do not fill a batch of %d",
                    batches.used, len(batches.paths), batches.dropped, batches.batch_size)
    feeder = BatchFeeder(batches, tensor.name, _device_allocator())
    feeder.calibrator = make_calibrator(trt, feeder, cache, cached)
    feeder.cached = cached
    shape = (request.calib_batch,) * 3
    profile = adapter.add_batch_profile(trt, builder, tensor.name, tensor.shape, shape)
    adapter.attach_calibrator(trt, config, feeder.calibrator, profile)
    log.info("calibration: %s", "cache " + cache.path if cached else "{} batches of {}".format(
        len(batches), batches.batch_size))
    return feeder


def _device_allocator():
    state = {}

    def allocate(nbytes):
        from .trt_runtime import DeviceBuffer, open_cuda
        if "cuda" not in state:
            state["cuda"] = open_cuda()
        return DeviceBuffer(state["cuda"], nbytes)

    return allocate


def _check_feeder(feeder):
    if feeder is None:
        return
    if feeder.error is not None:
        if isinstance(feeder.error, JetquantError):
            raise feeder.error
        raise JetquantError("calibration failed inside TensorRT's callback: {!r}".format(
            feeder.error))
    if feeder.cached is None and feeder.served < len(feeder.batches):
        raise JetquantError("TensorRT read {} of {} calibration batches; the INT8 scales would "
                            "rest on part of the calibration set; rerun with -v".format(
                                feeder.served, len(feeder.batches)))


def _verify(trt, logger, plan, request, pinned, quantized):
    runtime, engine = adapter.deserialize(trt, logger, plan, "(engine just built)")
    context = engine.create_execution_context()
    tensors = adapter.engine_io(trt, engine)
    first = [t for t in tensors if t.is_input][0]
    adapter.set_input_shape(trt, context, first, (request.opt_batch,) + tuple(first.shape[1:]))
    problems = verify_precisions(adapter.inspector_json(trt, engine, context), pinned, quantized)
    if problems:
        raise JetquantError("the engine was built but its layers did not run as asked, so it is "
                            "not saved:\n  {}\nrerun with -v for TensorRT's precision decisions"
                            .format("\n  ".join(problems)))
    log.info("verified: %d pinned layer(s) ran in FP16, %d convolution(s) in INT8",
             len(pinned), len(quantized))


def build_engines(artifacts, record, calib, pinned, dataset, opts, trt=None):
    """The build stage's TensorRT part: FP32, FP16 (where weak typing exists) and the request.

    Args:
        artifacts: {kind: path} from the build stage; ``fp32`` is the FP32 ONNX.
        record: the FP32 export sidecar (``preprocess``).
        calib: the calibration record (``key`` with calib_set_sha256, batch_size, algorithm).
        pinned: ONNX node names to pin (they are the TensorRT layer names).
        dataset: the :class:`pipeline.data.Dataset` (its calibration split feeds the calibrator).
        opts: :class:`pipeline.workflow.Options` (precision, route, engines_dir, recalibrate).
        trt: the tensorrt module (imported when None).

    Returns:
        {"trt-<precision>": engine path}.
    """
    from .data import paths
    from .preprocess import Preprocess

    trt = trt or adapter.import_tensorrt()
    caps = adapter.Capabilities(trt)
    stem = os.path.basename(artifacts["fp32"])[:-len(".fp32.onnx")]
    base = BuildRequest(
        stem=stem, engines_dir=opts.engines_dir, pins=tuple(pinned), pin_first_conv=False,
        calib_paths=tuple(paths(dataset.split("calib"))),
        preprocess=Preprocess.from_dict(record["preprocess"]),
        calib_set_sha256=calib["key"]["calib_set_sha256"],
        calib_batch=int(calib["key"]["batch_size"]), calib_algo=calib["key"]["algorithm"],
        recalibrate=bool(opts.recalibrate), verbose=bool(getattr(opts, "verbose", False)),
        classes=tuple(record.get("classes", ())))
    route = None if opts.route in (None, "auto") else opts.route
    wanted = ["fp32"] + (["fp16"] if caps.weak_typing else []) + [opts.precision]
    out = {}
    for precision in wanted:
        quantizing = precision in ("int8", "auto")
        request = base._replace(precision=precision, route=route if quantizing else None)
        path = build_engine(request, trt)
        out["trt-" + os.path.basename(path).split(".")[1]] = path
    return out
