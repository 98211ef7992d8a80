"""The device side: build TensorRT engines from the host's artifacts, measure them, report.

A Jetson has TensorRT, numpy, pillow and a CUDA binding, but no torch, onnx or
onnxruntime, so the route is split. ``make engine`` on any host writes
``engines/<stem>.fp32.onnx``, ``<stem>.int8-qdq.onnx`` and ``<stem>.trt-calib.cache``,
each with a ``.json`` sidecar. On the device, :func:`run`:

1. reads those artifacts and checks each against its sidecar (a copy cut short
   fails here, by name);
2. loads the data set (``calib`` split: the implicit route's calibrator, when the
   host's cache does not fit this TensorRT; ``eval`` split: every figure);
3. builds FP32, FP16 and INT8 engines with :func:`pipeline.trt_build.build_engines`
   (INT8 by the installed TensorRT's route: the calibrator on 8.2 to 10.x, the
   Q/DQ graph on 11 or with ``--route explicit``; FP16 instead where the GPU has
   no fast INT8, such as the Jetson Nano);
4. measures every engine on the same preprocessed eval images: batch-1 latency
   (wall clock around one inference; CUDA events split it into copy-in, compute
   and copy-out), throughput per batch size, accuracy, and agreement with the
   FP32 engine; it re-reads each engine's inspector JSON to prove the pinned
   layers ran in FP16 and the other convolutions in INT8;
5. applies the QA gates (FP32 engine = baseline, INT8 = candidate, or FP16 where
   there is no INT8) plus one ``pins_verified`` gate per engine;
6. writes ``report.json`` in the host benchmark's schema (results ``fp32-trt``,
   ``fp16-trt``, ``int8-trt``) and ``report.md``. ``report.html`` needs matplotlib,
   which a Jetson image may lack: ``python -m pipeline.device_route render
   REPORT.json`` on a host writes it.

A TensorRT stand-in (tests) is named as such in the report's backend, so its
figures can never pass for TensorRT's.

This module stays Python 3.6 compatible and imports neither torch, onnx,
onnxruntime nor matplotlib.
"""

import argparse
import glob
import os
import sys
import time
import types

import numpy as np

from . import __version__, timing
from . import trt_adapter as adapter
from .artifacts import atomic_write, atomic_write_json, read_json, sha256_file, sidecar_path
from .errors import JetquantError
from .log import Timer, get_logger, setup

log = get_logger("device-route")

HOST_FIX = "run `make engine` on a host first and copy engines/ here"
CLOCKS_CURE = "sudo nvpmodel -m 0 && sudo jetson_clocks"
EVAL_BATCH = 32
NAMES = {"trt-fp32": "fp32-trt", "trt-fp16": "fp16-trt", "trt-int8": "int8-trt"}
# (kind, file suffix, what the host writes it with)
HOST_ARTIFACTS = (("fp32", ".fp32.onnx", "FP32 ONNX"),
                  ("qdq", ".int8-qdq.onnx", "Q/DQ ONNX for the explicit route"),
                  ("cache", ".trt-calib.cache", "TensorRT calibration cache"))
GATE_FLAGS = ("max_top1_drop", "max_class_recall_drop", "min_speedup")


class DeviceOptions(object):
    """Everything :func:`run` needs; defaults match the command line's."""

    def __init__(self, **kwargs):
        self.engines_dir = "engines"
        self.stem = None
        self.arch = "resnet50"
        self.data = None
        self.report_dir = "reports"
        self.precision = "auto"
        self.route = "auto"
        self.iterations = 200
        self.warmup = 20
        self.batches = (1, 8, 32)
        self.throughput_seconds = 2.0
        self.recalibrate = False
        self.allow_leakage = False
        self.gates = None
        self.limits = {}
        self.verbose = False
        for name, value in kwargs.items():
            if not hasattr(self, name):
                raise TypeError("unknown option " + name)
            setattr(self, name, value)


# ---- step 1: the host's artifacts ---------------------------------------------------------


def find_stems(engines_dir):
    """Model stems with an FP32 ONNX in ``engines_dir``, sorted."""
    if not os.path.isdir(str(engines_dir)):
        raise JetquantError("engines folder {} not found; {} (or pass --engines DIR)".format(
            engines_dir, HOST_FIX))
    suffix = ".fp32.onnx"
    found = glob.glob(os.path.join(str(engines_dir), "*" + suffix))
    return sorted(os.path.basename(p)[:-len(suffix)] for p in found)


def choose_stem(stems, engines_dir, wanted=None):
    """The stem to use: the only one, else ``wanted`` (``<data set>-<arch>``) among several.

    Returns None when several exist and ``wanted`` is not yet known.
    """
    if not stems:
        raise JetquantError("{} holds no *.fp32.onnx; {}".format(engines_dir, HOST_FIX))
    if len(stems) == 1:
        return stems[0]
    if wanted is None:
        return None
    if wanted in stems:
        return wanted
    raise JetquantError("{} holds models {} and none is named {} after the data set; pick one "
                        "with --stem".format(engines_dir, ", ".join(stems), wanted))


def read_host_artifacts(engines_dir, stem):
    """Read the three host artifacts of ``stem`` and their sidecars, checking each file.

    Returns:
        {kind: {"path": str, "sidecar": dict}} for kinds ``fp32``, ``qdq``, ``cache``.

    Raises:
        JetquantError: a file or sidecar is missing, a file does not match its
            sidecar's hash, or the artifacts come from different exports.
    """
    paths = {kind: os.path.join(str(engines_dir), stem + suffix)
             for kind, suffix, _ in HOST_ARTIFACTS}
    missing = []
    for kind, _, what in HOST_ARTIFACTS:
        for path in (paths[kind], sidecar_path(paths[kind])):
            if not os.path.isfile(path):
                missing.append("{} ({})".format(path, what if path == paths[kind] else "sidecar"))
    if missing:
        raise JetquantError("missing host artifact(s): {}; {}".format("; ".join(missing),
                                                                        HOST_FIX))
    host = {}
    for kind, _, _ in HOST_ARTIFACTS:
        side = read_json(sidecar_path(paths[kind]), "sidecar of " + paths[kind])
        _check_intact(paths[kind], side)
        host[kind] = {"path": paths[kind], "sidecar": side}
    _check_same_model(host)
    _check_fields(host)
    return host


def _check_intact(path, side):
    if side.get("sha256") != sha256_file(path):
        raise JetquantError("{} does not match its sidecar (sha256 differs: copied incompletely "
                            "or rebuilt without its .json?); copy engines/ from the host again"
                            .format(path))


def _check_same_model(host):
    model = host["fp32"]["sidecar"]["sha256"]
    for kind in ("qdq", "cache"):
        made_from = (host[kind]["sidecar"].get("key") or {}).get("model_sha256")
        if made_from is not None and made_from != model:
            raise JetquantError("{} was made from another FP32 export (model sha256 {}..., {} is "
                                "{}...); {}".format(host[kind]["path"], made_from[:12],
                                                    host["fp32"]["path"], model[:12], HOST_FIX))


def _check_fields(host):
    needs = (("fp32", ("classes", "preprocess")), ("qdq", ("pinned_layers",)))
    for kind, fields in needs:
        side = host[kind]["sidecar"]
        absent = [f for f in fields if f not in side]
        if absent:
            raise JetquantError("sidecar of {} lacks {}; it was written by an older jetquant: {}"
                                .format(host[kind]["path"], ", ".join(absent), HOST_FIX))
    key = host["cache"]["sidecar"].get("key") or {}
    absent = [f for f in ("calib_set_sha256", "batch_size", "algorithm") if f not in key]
    if absent:
        raise JetquantError("sidecar of {} lacks key field(s) {}; {}".format(
            host["cache"]["path"], ", ".join(absent), HOST_FIX))


# ---- step 2/3: data and engines -----------------------------------------------------------


def load_data(options):
    """Load the data set the engines are measured on (and calibrated with, if need be)."""
    from .data import load_dataset

    return load_dataset(options.data, check_images=False, allow_leakage=options.allow_leakage)


def check_data(dataset, host):
    """Refuse a data set whose classes differ from the model's, or with no eval split."""
    from .data import check_classes

    check_classes(dataset, host["fp32"]["sidecar"]["classes"], host["fp32"]["path"])
    if not dataset.split("eval"):
        raise JetquantError("data set {} has no eval split; every figure is measured on it "
                            "(give the data the host used, with --data)".format(dataset.name))


def _int8_downgraded(trt, options):
    """True where precision auto will give FP16: the GPU reports no fast INT8 (Jetson Nano)."""
    if options.precision != "auto":
        return False
    builder = trt.Builder(adapter.make_logger(trt, options.verbose))
    return adapter.platform_has_fast_int8(trt, builder) is False


def plan_calibration(trt, caps, host, dataset, options):
    """Decide whether the implicit route calibrates here; return (recalibrate, note for the report).

    TensorRT skips a cache written for another TensorRT version and would
    quietly use default scales, so a host cache made for another version is
    replaced by entropy calibration on this device, over the same calibration
    split (checked by content hash), and the report says so.
    """
    route = caps.routes[0] if options.route in (None, "auto") else options.route
    cache = host["cache"]
    if options.precision not in ("auto", "int8") or route != "implicit" or \
            route not in caps.routes or _int8_downgraded(trt, options):
        return False, {"used": False, "route": route}
    key = cache["sidecar"].get("key") or {}
    made_for = key.get("trt_version") or cache["sidecar"].get("trt_version")
    note = {"used": True, "route": "implicit", "cache": cache["path"], "made_for": made_for,
            "written_by": cache["sidecar"].get("written_by", "host (jetquant make engine)")}
    fits = bool(made_for) and adapter.calibration_cache_code(made_for) == \
        adapter.calibration_cache_code(caps.version)
    if fits and not options.recalibrate:
        return False, dict(note, source="cache")
    if options.recalibrate:
        why = "--recalibrate"
    elif made_for:
        why = "the cache was written for TensorRT {}, this is TensorRT {}".format(made_for,
                                                                               caps.version)
    else:
        why = "the cache's sidecar does not say which TensorRT it was written for"
    _check_device_calibration(dataset, key, cache["path"], why, caps)
    log.warning("calibrating on this device (entropy, %d images of %s, batch %s): %s",
                len(dataset.split("calib")), dataset.name, key["batch_size"], why)
    return True, dict(note, source="device", reason=why)


def _check_device_calibration(dataset, key, path, why, caps):
    if key["algorithm"] != "entropy":
        raise JetquantError("{}: {}, and on the device TensorRT calibrates only with entropy, "
                            "not {}; rerun make engine on the host with ARGS='--trt-target {}', "
                            "or use --route explicit".format(path, why, key["algorithm"],
                                                             caps.version))
    if dataset.split_digest("calib") != key["calib_set_sha256"]:
        raise JetquantError("{}: {}, so the calibrator runs here, but the calib split of data set "
                            "{} differs from the calibration set the host used (content hash); "
                            "give the host's data with --data".format(path, why, dataset.name))


def build(host, dataset, options, recalibrate, trt):
    """Build (or reuse) the engines; return {"trt-<precision>": engine path}."""
    from .trt_build import build_engines

    opts = types.SimpleNamespace(engines_dir=options.engines_dir, route=options.route,
                                 precision=options.precision, recalibrate=recalibrate,
                                 verbose=options.verbose)
    calib = {"key": host["cache"]["sidecar"]["key"]}
    pinned = host["qdq"]["sidecar"]["pinned_layers"]
    return build_engines({"fp32": host["fp32"]["path"]}, host["fp32"]["sidecar"], calib, pinned,
                         dataset, opts, trt=trt)


# ---- step 4: measurement ------------------------------------------------------------------


def capped_batches(batches, max_batch):
    """Throughput batch sizes, each capped at the engine's profile maximum, without repeats."""
    return sorted(set(min(int(b), int(max_batch)) for b in batches))


def profile_max(side):
    """Largest batch an engine accepts, from its sidecar's key (``profile`` = [1, opt, max])."""
    profile = (side.get("key") or {}).get("profile") or [1, 1, EVAL_BATCH]
    return int(profile[-1])


def verify_engine(trt, runner, side):
    """Re-read what ran from the engine inspector; pins in FP16, other convolutions in INT8.

    Returns:
        dict with ``passed``, ``problems`` (one line each), ``pinned_fp16``,
        ``quantized_int8`` (count), ``engine_layers`` and ``ran_in`` (pin -> engine layers).
    """
    from .trt_build import inspector_layers, matching_layers, verify_precisions

    pinned = list(side.get("pinned_layers") or [])
    quantized = list(side.get("quantized_layers") or [])
    first = runner.inputs[0]
    adapter.set_input_shape(trt, runner.context, first, (1,) + tuple(first.shape[1:]))
    try:
        data = adapter.inspector_json(trt, runner.engine, runner.context)
        problems = verify_precisions(data, pinned, quantized)
        layers = inspector_layers(data)
    except JetquantError as exc:
        return {"passed": False, "problems": [str(exc)], "pinned_fp16": pinned,
                "quantized_int8": len(quantized), "engine_layers": None, "ran_in": {}}
    ran = {name: [r.get("Name") for r in matching_layers(name, layers)] for name in pinned}
    return {"passed": not problems, "problems": problems, "pinned_fp16": pinned,
            "quantized_int8": len(quantized), "engine_layers": len(layers), "ran_in": ran,
            "source": "engine inspector, profiling verbosity DETAILED"}


def _logits(runner, images, batch_size):
    out = [runner.run(images[i:i + batch_size])[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _latency(runner, images, warmup, iterations):
    """Batch-1 wall-clock latencies (ms) and the mean CUDA-event split of the timed runs."""
    n = len(images)
    for i in range(warmup):
        runner.run(images[i % n:i % n + 1])
    samples, splits = [], []
    for i in range(iterations):
        batch = np.ascontiguousarray(images[i % n:i % n + 1])
        start = time.perf_counter()
        _, timings = runner.run(batch)
        samples.append((time.perf_counter() - start) * 1000.0)
        splits.append((timings.copy_in_ms, timings.compute_ms, timings.copy_out_ms))
    means = np.mean(np.asarray(splits, dtype=np.float64), axis=0)
    split = {"copy_in": float(means[0]), "compute": float(means[1]), "copy_out": float(means[2]),
             "basis": "CUDA events, mean of {} batch-1 runs".format(iterations)}
    return samples, split


def measure_engine(path, images, options, trt, cuda):
    """Verify one engine, then measure its accuracy logits, latency and throughput."""
    from . import stats
    from .trt_runtime import EngineRunner

    side = read_json(sidecar_path(path), "engine sidecar")
    cap = profile_max(side)
    batches = capped_batches(options.batches, cap)
    eval_batch = min(cap, EVAL_BATCH)
    runner = EngineRunner(path, max_batch=max(batches + [eval_batch]), trt=trt, cuda=cuda,
                          verbose=options.verbose)
    try:
        verification = verify_engine(trt, runner, side)
        logits = _logits(runner, images, eval_batch)
        samples, split = _latency(runner, images, options.warmup, options.iterations)
        throughput = {str(b): timing.throughput(runner.run, images, b, options.throughput_seconds)
                      for b in batches}
    finally:
        runner.close()
    return {"logits": logits, "latency_ms": dict(stats.latency_summary(samples), samples=samples),
            "latency_split_ms": split, "throughput": throughput, "verification": verification,
            "route": side.get("route"), "pinned_layers": list(side.get("pinned_layers") or []),
            "quantized_layers": len(side.get("quantized_layers") or [])}


def warn_if_noisy(results, limit=timing.NOISY_CV):
    """Log one warning per result whose batch-1 latency varied by more than ``limit`` (cv)."""
    for name, cv in timing.noisy(results, limit):
        log.warning("%s batch-1 latency is noisy (cv %.2f > %.2f): lock the clocks and rerun; "
                    "on a Jetson: %s", name, cv, limit, CLOCKS_CURE)


# ---- step 5/6: report ---------------------------------------------------------------------


def stand_in_of(trt):
    """Why ``trt`` is not TensorRT (a stand-in's own label), or None for the real module."""
    label = getattr(trt, "JETQUANT_STAND_IN", None)
    if label:
        return str(label)
    if not isinstance(trt, types.ModuleType):
        return "an object that is not the tensorrt module"
    return None


def backend_name(trt, cuda, stand_in):
    """The backend string every result carries; a stand-in says so in it."""
    if stand_in:
        return "TensorRT stand-in: {}".format(stand_in)
    return "TensorRT {} (GPU; buffers via {})".format(adapter.version_of(trt), cuda.name)


def _clocks_locked(clocks):
    if not clocks or not clocks.get("gpu_max_hz"):
        return None
    return clocks.get("gpu_cur_hz") == clocks.get("gpu_max_hz")


def environment(trt, cuda, stand_in):
    """:func:`pipeline.device.describe_host` with JetPack, L4T and power mode flattened."""
    import platform

    from .device import describe_host

    host = describe_host()
    line = host.get("l4t") or {}
    mode = host.get("power_mode")
    env = dict(host, l4t_line=host.get("l4t"), l4t=line.get("l4t"), jetpack=line.get("jetpack"),
               clocks_locked=_clocks_locked(host.get("clocks")))
    env["power_mode"] = None if not mode else "{} (nvpmodel mode {})".format(
        mode.get("name"), mode.get("id"))
    trt_version = str(adapter.version_of(trt)) + (" (stand-in)" if stand_in else "")
    env["tensorrt"] = trt_version
    env["versions"] = {"jetquant": __version__, "python": platform.python_version(),
                       "tensorrt": trt_version, "numpy": np.__version__,
                       "pillow": _pillow_version(), "cuda_binding": getattr(cuda, "name", None)}
    return env


def _pillow_version():
    import PIL

    return getattr(PIL, "__version__", None) or getattr(PIL, "PILLOW_VERSION", None)


def roles(built):
    """Result name -> role: the FP32 engine is the baseline, INT8 (else FP16) the candidate."""
    names = [NAMES[k] for k in ("trt-fp32", "trt-fp16", "trt-int8") if k in built]
    candidate = "int8-trt" if "int8-trt" in names else "fp16-trt" if "fp16-trt" in names else None
    return {n: "baseline" if n == "fp32-trt" else "candidate" if n == candidate else "reference"
            for n in names}


def precision_note(options, built, device):
    """What was asked, what the candidate is, and why they differ."""
    role = roles(built)
    candidate = [n for n, r in role.items() if r == "candidate"]
    note = {"requested": options.precision, "candidate": candidate[0] if candidate else None}
    if options.precision == "auto" and "trt-int8" not in built:
        note["reason"] = ("{} has no fast INT8 (TensorRT reports platform_has_fast_int8 = False), "
                          "so FP16 is the candidate".format(device))
    return note


def pin_gates(results):
    """One gate per engine: the inspector found every layer in the precision it was built for."""
    rows = []
    for r in results:
        check = r["verification"]
        if check["problems"]:
            detail = "; ".join(check["problems"])
        elif r["precision"] == "fp32":
            detail = "FP32 engine: nothing pinned (engine inspector read, {} layers)".format(
                check["engine_layers"])
        else:
            detail = "{} pinned layer(s) in FP16, {} convolution(s) in INT8 (engine inspector)" \
                .format(len(check["pinned_fp16"]), check["quantized_int8"])
        rows.append({"name": "pins_verified", "limit": 0, "value": len(check["problems"]),
                     "passed": bool(check["passed"]), "detail": detail, "model": r["name"]})
    return rows


def assemble_report(results, labels, dataset, env, device, pinned, extra):
    """The host benchmark's report structure (:func:`pipeline.compare.assemble`) plus extras."""
    from .compare import assemble

    report = assemble(results, labels, dataset, env, device, {"pinned": list(pinned)})
    report.update(extra)
    return report


def write_reports(report, report_dir):
    """Write report.json and report.md (no matplotlib needed); return their paths."""
    from . import report as reporting

    reporting.validate_schema(report)
    paths = {kind: os.path.join(str(report_dir), "report." + kind) for kind in ("json", "md")}
    atomic_write_json(paths["json"], report)
    atomic_write(paths["md"], reporting.markdown(report))
    for kind in ("json", "md"):
        log.info("wrote %s (%.1f kB)", paths[kind], os.path.getsize(paths[kind]) / 1e3)
    log.info("report.html needs matplotlib; render it on a host with: python -m "
             "pipeline.device_route render %s", paths["json"])
    return paths


# ---- the route ----------------------------------------------------------------------------


def _check_options(options):
    if options.iterations < 1 or options.warmup < 0:
        raise JetquantError("--iterations must be >= 1 and --warmup >= 0 (got {} and {})".format(
            options.iterations, options.warmup))
    if options.route not in (None, "auto") and options.precision not in ("auto", "int8"):
        raise JetquantError("--route {} is a way to INT8; --precision {} takes no route (drop "
                            "--route, or ask for int8 or auto)".format(options.route,
                                                                       options.precision))
    if options.recalibrate and options.route == "explicit":
        raise JetquantError("--recalibrate runs the implicit route's calibrator; --route "
                            "explicit takes its scales from the Q/DQ graph (drop one of them)")
    if not options.batches or min(int(b) for b in options.batches) < 1:
        raise JetquantError("--batches must list batch sizes >= 1, e.g. 1,8,32 (got {})".format(
            ",".join(str(b) for b in options.batches)))


def run(options, trt=None, cuda=None):
    """Run the device route end to end and write the reports.

    Args:
        options: :class:`DeviceOptions`.
        trt: the tensorrt module (imported when None; a named stand-in in tests).
        cuda: a CUDA wrapper (:func:`pipeline.trt_runtime.open_cuda` when None).

    Returns:
        The report dict (``report["passed"]`` is False when a gate failed).

    Raises:
        JetquantError: missing or inconsistent host artifacts, a data set that
            does not fit the model, or a build TensorRT refuses.
    """
    from . import gates, trt_runtime
    from .preprocess import Preprocess, load_batch
    from .trt_build import detect_device

    _check_options(options)
    limits = gates.resolve_limits(options.limits, options.gates)
    stems = find_stems(options.engines_dir)
    stem = options.stem or choose_stem(stems, options.engines_dir)
    host = read_host_artifacts(options.engines_dir, stem) if stem else None
    trt = trt or adapter.import_tensorrt()
    stand_in = stand_in_of(trt)
    if stand_in:
        log.warning("TensorRT stand-in in use (%s): its figures are not TensorRT's", stand_in)
    caps = adapter.Capabilities(trt)
    log.info("%s", caps.describe())
    dataset = load_data(options)
    if host is None:
        stem = choose_stem(stems, options.engines_dir, "{}-{}".format(dataset.name, options.arch))
        host = read_host_artifacts(options.engines_dir, stem)
    check_data(dataset, host)
    recalibrate, calibration = plan_calibration(trt, caps, host, dataset, options)
    cuda = cuda or trt_runtime.open_cuda()
    device = detect_device(cuda)

    with Timer() as timer:
        built = build(host, dataset, options, recalibrate, trt)
    log.info("engines ready in %.1f s: %s", timer.elapsed, ", ".join(
        os.path.basename(p) for p in built.values()))

    samples = dataset.split("eval")
    images = load_batch([s.path for s in samples], Preprocess.from_dict(
        host["fp32"]["sidecar"]["preprocess"]))
    labels = np.asarray(dataset.labels(samples), dtype=np.int64)
    results = _measure_all(built, images, options, trt, cuda, device, stand_in)
    warn_if_noisy(results)

    env = environment(trt, cuda, stand_in)
    int8 = [r for r in results if r["name"] == "int8-trt"]
    extra = {"route": int8[0]["route"] if int8 else None, "stand_in": stand_in,
             "precision_choice": precision_note(options, built, device),
             "calibration": calibration, "engines_dir": options.engines_dir, "stem": stem}
    report = assemble_report(results, labels, dataset, env, device,
                             host["qdq"]["sidecar"]["pinned_layers"], extra)
    report["gates"] = gates.evaluate(report, limits) + pin_gates(report["results"])
    report["passed"] = gates.all_passed(report["gates"])
    verified = [r["name"] for r in report["results"] if r["verification"]["passed"]]
    log.info("route taken: %s; pins verified by the engine inspector in: %s", report["route"] or
             "none (no INT8 engine)", ", ".join(verified) or "no engine")
    write_reports(report, options.report_dir)
    return report


def _measure_all(built, images, options, trt, cuda, device, stand_in):
    role = roles(built)
    backend = backend_name(trt, cuda, stand_in)
    results = []
    for kind in ("trt-fp32", "trt-fp16", "trt-int8"):
        if kind not in built:
            continue
        path, name = built[kind], NAMES[kind]
        log.info("measuring %s (%s) ...", name, os.path.basename(path))
        with Timer() as timer:
            measured = measure_engine(path, images, options, trt, cuda)
        log.info("%s done in %.1f s: p50 %.2f ms, pins %s", name, timer.elapsed,
                 measured["latency_ms"]["p50"],
                 "verified" if measured["verification"]["passed"] else "NOT verified")
        results.append(dict(measured, name=name, role=role[name], backend=backend,
                            device=device, model_path=path, sha256=sha256_file(path),
                            size_bytes=os.path.getsize(path), peak_rss_bytes=None,
                            precision=kind[len("trt-"):]))
    return results


def render(json_path, out_dir=None):
    """Write report.md, and report.html where matplotlib is installed, from a report.json.

    Returns:
        dict of the written paths.
    """
    from . import report as reporting

    report = read_json(json_path, "report")
    reporting.validate_schema(report)
    out_dir = out_dir or os.path.dirname(os.path.abspath(str(json_path)))
    try:
        import matplotlib  # noqa: F401  (report.html's plots)
    except ImportError:
        path = os.path.join(out_dir, "report.md")
        atomic_write(path, reporting.markdown(report))
        log.warning("matplotlib is not installed: wrote %s only; report.html needs "
                    "pip install matplotlib", path)
        return {"md": path}
    return reporting.write_reports(report, out_dir)


# ---- command line -------------------------------------------------------------------------


def _limit(text):
    if str(text).strip().lower() == "off":
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("{!r} is not a number or 'off'".format(text)) from None


def _batches(text):
    try:
        return tuple(int(b) for b in str(text).split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("{!r} is not a comma-separated list of batch sizes"
                                         .format(text)) from None


def get_parser():
    """Parser of ``python3 -m pipeline.device_route``."""
    parser = argparse.ArgumentParser(
        prog="python3 -m pipeline.device_route",
        description="Build TensorRT engines from the host's artifacts (make engine) on this "
                    "device, benchmark them and write report.json / report.md. "
                    "`python3 -m pipeline.device_route render REPORT.json` renders a report.")
    parser.add_argument("--engines", dest="engines_dir", default="engines", metavar="DIR",
                        help="folder with the host's artifacts; engines are written here too "
                             "(default engines)")
    parser.add_argument("--stem", help="model stem, e.g. neu-det-resnet50 (default: the only "
                                       "*.fp32.onnx in --engines, else <data set>-<arch>)")
    parser.add_argument("--arch", default="resnet50", help="architecture part of the default "
                                                           "stem (default resnet50)")
    parser.add_argument("--data", help="the data set the host used: folder, CSV manifest or "
                                       "'elpv' (default: ../shared/data/neu-det if present, else "
                                       "elpv)")
    parser.add_argument("--report-dir", default="reports", help="output folder (default reports)")
    parser.add_argument("--precision", default="auto", choices=["auto", "int8", "fp16", "fp32"],
                        help="candidate engine precision (auto: INT8, or FP16 where the GPU has "
                             "no fast INT8)")
    parser.add_argument("--route", default="auto", choices=["auto", "implicit", "explicit"],
                        help="INT8 route (auto: implicit on TensorRT 8.2 to 10.x, explicit on 11)")
    parser.add_argument("--iterations", type=int, default=200, help="timed batch-1 runs per "
                                                                    "engine (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    parser.add_argument("--batches", type=_batches, default=(1, 8, 32),
                        help="throughput batch sizes, capped at the engine's max (default 1,8,32)")
    parser.add_argument("--throughput-seconds", type=float, default=2.0,
                        help="minimum seconds per throughput measurement (default 2)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="run the entropy calibrator here even if the host's cache fits")
    parser.add_argument("--allow-leakage", action="store_true",
                        help="warn instead of failing when an image is in two splits")
    parser.add_argument("--gates", help="JSON gate limits file (TOML needs Python 3.11)")
    for name in GATE_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=_limit,
                            help="gate limit, a number or 'off'")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and "
                                                                     "TensorRT's verbose log")
    return parser


def _render_parser():
    parser = argparse.ArgumentParser(prog="python3 -m pipeline.device_route render",
                                     description="Render report.md (and report.html where "
                                                 "matplotlib is installed) from a report.json.")
    parser.add_argument("report", help="report.json written by the device route")
    parser.add_argument("--out", help="output folder (default: the report's folder)")
    return parser


def options_from(args):
    """Turn parsed arguments into :class:`DeviceOptions`."""
    names = ("engines_dir", "stem", "arch", "data", "report_dir", "precision", "route",
             "iterations", "warmup", "batches", "throughput_seconds", "recalibrate",
             "allow_leakage", "gates", "verbose")
    values = {n: getattr(args, n) for n in names}
    values["limits"] = {n: getattr(args, n) for n in GATE_FLAGS}
    return DeviceOptions(**values)


def main(argv=None):
    """Entry point; returns the exit status (0 passed, 1 a gate failed, 2 a user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rendering = argv[:1] == ["render"]
    args = (_render_parser() if rendering else get_parser()).parse_args(argv[1:] if rendering
                                                                         else argv)
    setup(getattr(args, "verbose", False))
    try:
        if rendering:
            render(args.report, args.out)
            return 0
        report = run(options_from(args))
    except JetquantError as exc:
        sys.stderr.write("jetquant: error: {}\n".format(exc))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("jetquant: interrupted\n")
        return 130
    from .report import summary_table

    sys.stdout.write(summary_table(report) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
