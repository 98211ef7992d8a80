"""The stage chain behind ``make engine``: train if needed, export, calibrate, build.

Each stage reuses its output when the inputs are unchanged (content hashes),
so a rerun costs seconds. The CLI and the Makefile only fill :class:`Options`.
"""

import os

import onnx

from .artifacts import atomic_write_json, describe, read_json, sha256_file
from .build import DEFAULT_TRT_TARGET, build_int8_artifacts, tensorrt_available
from .calibrate import calibrate
from .data import load_dataset
from .errors import JetquantError
from .log import get_logger
from .pins import resolve
from .preprocess import Preprocess

log = get_logger("engine")


class Options(object):
    """Everything the stage chain needs; defaults match the Makefile's."""

    def __init__(self, **kwargs):
        self.data = None
        self.arch = None  # None: resnet50, or the checkpoint's own architecture
        self.checkpoint = None
        self.init = None
        self.retrain = False
        self.epochs = 12
        self.device = "auto"
        self.checkpoints_dir = "checkpoints"
        self.engines_dir = "engines"
        self.calibration_dir = "calibration"
        self.calib_algo = "entropy"
        self.calib_batch = 8
        self.calib_cache = None
        self.recalibrate = False
        self.pins = []
        self.trt_target = DEFAULT_TRT_TARGET
        self.allow_leakage = False
        self.precision = "auto"
        self.route = "auto"
        for name, value in kwargs.items():
            if not hasattr(self, name):
                raise TypeError("unknown option " + name)
            setattr(self, name, value)


def stem(dataset, arch, checkpoint=None):
    """Model stem used in every file name: the checkpoint's name, else ``<data set>-<arch>``."""
    if checkpoint:
        base = os.path.basename(str(checkpoint))
        return base[: -len(".safetensors")] if base.endswith(".safetensors") else base
    return "{}-{}".format(dataset.name, arch)


def _check_given_checkpoint(opts):
    """Refuse options that contradict a given checkpoint instead of ignoring them."""
    from .model import read_meta

    arch = read_meta(opts.checkpoint).get("arch")
    if opts.arch and opts.arch != arch:
        raise JetquantError("--arch {} contradicts --checkpoint {}, which is a {}; drop --arch or "
                            "pass a {} checkpoint".format(opts.arch, opts.checkpoint, arch,
                                                          opts.arch))
    if opts.init or opts.retrain:
        raise JetquantError("--init/--retrain train a baseline, but --checkpoint {} is used as "
                            "it is; drop one of them".format(opts.checkpoint))


def check_requests(opts):
    """Refuse contradictory engine requests before any work is done."""
    from packaging.version import Version

    if opts.route in ("implicit", "explicit") and opts.precision in ("fp16", "fp32"):
        raise JetquantError("--route {} chooses how INT8 is built, but --precision is {}; drop "
                            "--route or ask for int8/auto".format(opts.route, opts.precision))
    if opts.route == "implicit" and Version(str(opts.trt_target)).major >= 11:
        raise JetquantError("--route implicit needs a calibrator, which TensorRT {} no longer "
                            "has; use --route explicit (the Q/DQ graph)".format(opts.trt_target))


DEFAULT_ARCH = "resnet50"


def checkpoint_for(opts, dataset):
    """Return the baseline checkpoint path, training it first if there is none."""
    from .model import read_meta
    from .train import Recipe, train

    if opts.checkpoint:
        _check_given_checkpoint(opts)
        return opts.checkpoint
    path = os.path.join(opts.checkpoints_dir, stem(dataset, opts.arch or DEFAULT_ARCH)
                        + ".safetensors")
    if os.path.isfile(path) and not opts.retrain:
        meta = read_meta(path)
        if meta.get("data", {}).get("sha256") != dataset.digest():
            raise JetquantError(
                "checkpoint {} was trained on other data than {} (content hash "
                "differs); retrain with --retrain (RETRAIN=1 with make) or pass "
                "--checkpoint".format(path, dataset.name)
            )
        log.info(
            "FP32 baseline %s: eval top-1 %.2f %% at training (bf16 autocast)",
            path,
            100 * meta.get("eval_top1", float("nan")),
        )
        return path
    log.info("no FP32 baseline at %s: training one (first run only)", path)
    train(
        dataset,
        path,
        arch=opts.arch or DEFAULT_ARCH,
        recipe=Recipe(epochs=opts.epochs, device=opts.device),
        init=opts.init,
        spec=Preprocess(),
    )
    return path


def engine(opts, until="engine"):
    """Run train (first run only), export, calibrate and build; return what was written.

    Args:
        opts: :class:`Options`.
        until: stop after ``export`` or ``calibrate``; ``engine`` runs everything.
    """
    from .export import export

    check_requests(opts)
    dataset = load_dataset(opts.data, allow_leakage=opts.allow_leakage)
    checkpoint = checkpoint_for(opts, dataset)
    name = stem(dataset, opts.arch or DEFAULT_ARCH, opts.checkpoint)
    fp32 = os.path.join(opts.engines_dir, name + ".fp32.onnx")
    record = export(checkpoint, fp32, dataset)
    spec = Preprocess.from_dict(record["preprocess"])
    if until == "export":
        return {"artifacts": {"fp32": fp32}, "stem": name}
    pinned = resolve(onnx.load(fp32).graph, opts.pins)
    log.info("pinned layers (kept out of INT8, FP16 on TensorRT): %s", ", ".join(pinned))
    cache = opts.calib_cache or os.path.join(
        opts.calibration_dir, "{}.{}.json".format(name, opts.calib_algo)
    )
    calib = calibrate(fp32, dataset, spec, cache, opts.calib_algo, opts.calib_batch,
                      opts.recalibrate, explicit=bool(opts.calib_cache))
    if until == "calibrate":
        return {"artifacts": {"fp32": fp32, "calibration": cache}, "stem": name}
    trt = tensorrt_available()
    artifacts = build_int8_artifacts(
        fp32, calib, pinned, opts.engines_dir, name, record, trt or opts.trt_target
    )
    artifacts["fp32"] = fp32
    accuracy = _accuracies(artifacts, dataset, spec, record, opts.engines_dir, name)
    _log_sizes(artifacts)
    if trt is None:
        log.info(
            "TensorRT not installed here: built the ONNX Runtime CPU INT8 model and the "
            "TensorRT-bound artifacts; run `make engine` on the Jetson for the engines"
        )
    else:
        from .trt_build import build_engines

        artifacts.update(build_engines(artifacts, record, calib, pinned, dataset, opts))
    return {
        "artifacts": artifacts,
        "accuracy": accuracy,
        "pinned": pinned,
        "stem": name,
        "tensorrt": trt,
        "dataset": dataset,
        "checkpoint": checkpoint,
    }


def _accuracies(artifacts, dataset, spec, record, engines_dir, name):
    """Eval top-1 of FP32, the Q/DQ graph and the CPU INT8 model, cached by content."""
    from .evaluate import eval_arrays, logits_of, ort_runner, top1

    cache_path = os.path.join(engines_dir, name + ".accuracy.json")
    cached = read_json(cache_path, "accuracy cache") if os.path.isfile(cache_path) else {}
    eval_hash = dataset.split_digest("eval")
    out, arrays = {}, None
    for kind in ("fp32", "qdq", "cpu"):
        key = sha256_file(artifacts[kind]) + ":" + eval_hash
        if key not in cached:
            if arrays is None:
                arrays = eval_arrays(dataset, spec)
            cached[key] = top1(logits_of(ort_runner(artifacts[kind]), arrays[0]), arrays[1])
        out[kind] = cached[key]
    atomic_write_json(cache_path, cached)
    log.info(
        "eval top-1 on %d %s images, ONNX Runtime CPU: FP32 %.2f %% | Q/DQ INT8 for "
        "TensorRT %.2f %% | CPU INT8 %.2f %%",
        len(dataset.split("eval")),
        dataset.name,
        100 * out["fp32"],
        100 * out["qdq"],
        100 * out["cpu"],
    )
    return out


def _log_sizes(artifacts):
    base = os.path.getsize(artifacts["fp32"])
    for kind in ("fp32", "qdq", "cpu", "cache"):
        size = os.path.getsize(artifacts[kind])
        log.info(
            "artifact %-5s %s, %.1f %% of FP32",
            kind,
            describe(artifacts[kind]),
            100.0 * size / base,
        )
