"""The ``build`` stage: INT8 artifacts and, where TensorRT is installed, engines.

Without TensorRT (any host): the Q/DQ ONNX for TensorRT's explicit route, the
ONNX Runtime CPU INT8 model and the TensorRT calibration cache, each with a
sidecar naming what it was made from. With TensorRT (a Jetson or a GPU
machine): additionally the engines, through :mod:`pipeline.trt_build`.
A rerun reuses an artifact whose key (content hashes of every input and
option) is unchanged.
"""

import os

import onnx
import onnxruntime as ort

from . import __version__
from .artifacts import atomic_write, describe, is_fresh, sha256_json, write_sidecar
from .log import Timer, get_logger
from .quantize import quantize, trt_cache_text

log = get_logger("build")

DEFAULT_TRT_TARGET = "10.3.0"


def artifact_paths(engines_dir, stem):
    """The files this stage writes for a model stem."""
    return {
        "qdq": os.path.join(engines_dir, stem + ".int8-qdq.onnx"),
        "cpu": os.path.join(engines_dir, stem + ".int8-cpu.onnx"),
        "cache": os.path.join(engines_dir, stem + ".trt-calib.cache"),
    }


def build_int8_artifacts(
    fp32_path, calib, pinned, engines_dir, stem, export_record, trt_target=DEFAULT_TRT_TARGET
):
    """Write (or reuse) the three INT8 artifacts from one calibration.

    Args:
        fp32_path: the FP32 ONNX model.
        calib: the calibration record (:func:`pipeline.calibrate.calibrate`).
        pinned: node names kept out of INT8.
        engines_dir: output folder.
        stem: model stem for file names.
        export_record: the FP32 export sidecar (classes, preprocessing).
        trt_target: TensorRT version the calibration cache is written for.

    Returns:
        {kind: path} of the artifacts.
    """
    paths = artifact_paths(engines_dir, stem)
    common = {
        "calibration": sha256_json(calib["ranges"]),
        "model_sha256": calib["key"]["model_sha256"],
        "preprocess": calib["key"]["preprocess"],
        "calib_set_sha256": calib["key"]["calib_set_sha256"],
        "algorithm": calib["key"]["algorithm"],
        "batch_size": calib["key"]["batch_size"],
        "pinned_layers": list(pinned),
        "versions": {
            "jetquant": __version__,
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
        },
    }
    extra = {
        "classes": export_record["classes"],
        "preprocess": export_record["preprocess"],
        "pinned_layers": list(pinned),
        "input": calib["input"],
    }
    for kind, target in (("qdq", "tensorrt"), ("cpu", "cpu")):
        key = dict(common, target=target)
        if is_fresh(paths[kind], key):
            log.info("reusing %s (key unchanged)", describe(paths[kind]))
            continue
        with Timer() as timer:
            quantize(
                fp32_path, paths[kind], calib["ranges"], calib["key"]["algorithm"], pinned, target
            )
        write_sidecar(paths[kind], key, dict(extra, target=target))
        log.info(
            "wrote %s in %.1f s (%s INT8, pinned: %s)",
            describe(paths[kind]),
            timer.elapsed,
            "symmetric s8/s8 Q/DQ for TensorRT"
            if target == "tensorrt"
            else "u8/s8 for ONNX Runtime CPU",
            ", ".join(pinned),
        )
    key = dict(common, target="tensorrt-cache", trt_version=trt_target)
    if not is_fresh(paths["cache"], key):
        atomic_write(
            paths["cache"], trt_cache_text(calib["ranges"], trt_target, calib["key"]["algorithm"])
        )
        write_sidecar(paths["cache"], key, dict(extra, trt_version=trt_target))
    log.info("TensorRT calibration cache for TensorRT %s: %s", trt_target, describe(paths["cache"]))
    return paths


def tensorrt_available():
    """Return the installed TensorRT version string, or None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)
