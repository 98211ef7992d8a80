"""The ``calibrate`` stage: activation ranges of the FP32 ONNX graph on the calibration set.

Host-side equivalent of TensorRT's ``IInt8EntropyCalibrator2``, driven through
ONNX Runtime's calibrators: ONNX Runtime runs the graph with every
intermediate tensor exposed and accumulates the histograms; the images are
streamed one batch at a time (ONNX Runtime keeps about 100 MB of activations
per 224x224 image, so 200 at once would not fit).

Algorithms (``--calib-algo``):

* ``entropy`` (default): TensorRT's method. For each tensor, a 2048-bin
  histogram of |x| (ONNX Runtime's signed histogram of 4096 bins, folded at
  zero), then the clipping threshold that minimises the KL divergence between
  the clipped distribution and its 128-level quantization. The threshold
  search is ours, vectorised in numpy: ONNX Runtime's own search loops in
  Python over every candidate (minutes per model at 2048 bins), and with its
  default 128 bins it has only one candidate, so it degenerates to max.
* ``minmax``: the observed min and max (ONNX Runtime's MinMaxCalibrater).
* ``percentile``: the 99.999th percentile of |x| (ONNX Runtime's, 2048 bins).

The result (per tensor: observed min and max, and the chosen ``amax``) is a
JSON cache keyed by everything that produced it; a cache whose key differs is
refused, never silently used.
"""

import os
import resource
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.calibrate import (
    CalibrationDataReader,
    CalibrationMethod,
    create_calibrator,
)

from .artifacts import atomic_write_json, read_json, sha256_file
from .data import paths, samples_digest
from .errors import JetquantError
from .log import Quiet, Timer, get_logger
from .preprocess import load_batch

log = get_logger("calibrate")

ALGORITHMS = ("entropy", "minmax", "percentile")
SIGNED_BINS = 4096
QUANT_LEVELS = 128
PERCENTILE = 99.999
CALIB_SIZE = 200
KL_EPS = 1e-4


def cache_key(onnx_path, spec, samples, algorithm, batch_size):
    """The key a calibration cache is valid for: every input that changes the ranges."""
    return {
        "model_sha256": sha256_file(onnx_path),
        "preprocess": spec.to_dict(),
        "calib_set_sha256": samples_digest(samples),
        "calib_images": len(samples),
        "algorithm": algorithm,
        "batch_size": batch_size,
        "histogram": {
            "abs_bins": SIGNED_BINS // 2,
            "quant_levels": QUANT_LEVELS,
            "percentile": PERCENTILE,
        },
        "onnxruntime": ort.__version__,
    }


def calibrate(
    onnx_path, dataset, spec, cache_path, algorithm="entropy", batch_size=8, recalibrate=False
):
    """Compute (or reuse) activation ranges for every tensor of the FP32 graph.

    Args:
        onnx_path: the FP32 ONNX model.
        dataset: the data set; its ``calib`` split is the calibration set.
        spec: the model's :class:`pipeline.preprocess.Preprocess`.
        cache_path: the JSON cache to reuse or write.
        algorithm: ``entropy``, ``minmax`` or ``percentile``.
        batch_size: images per calibration batch (the last may be smaller).
        recalibrate: ignore (and overwrite) an existing cache.

    Returns:
        The cache record: ``{"key", "ranges": {tensor: {min, max, amax}}, "input", ...}``.

    Raises:
        JetquantError: a stale cache without ``recalibrate``, constant images, or
            an input range that says the preprocessing is wrong.
    """
    if algorithm not in ALGORITHMS:
        raise JetquantError(
            "--calib-algo {!r} is not one of {}".format(algorithm, ", ".join(ALGORITHMS))
        )
    samples = dataset.split("calib")
    if not samples:
        raise JetquantError(
            "data set {} has no calib split: the manifest needs rows with split=calib".format(
                dataset.name
            )
        )
    _warn_balance(dataset, samples)
    key = cache_key(onnx_path, spec, samples, algorithm, batch_size)
    if os.path.isfile(str(cache_path)) and not recalibrate:
        record = load_cache(cache_path, key)
        log.info("reusing calibration cache %s (key matches)", cache_path)
        _log_summary(record)
        return record

    with Timer() as timer:
        ranges, stats = _run(onnx_path, samples, spec, algorithm, batch_size)
    input_name = _input_name(onnx_path)
    check_input_range(ranges[input_name], spec)
    record = {
        "key": key,
        "ranges": ranges,
        "input": dict(ranges[input_name], name=input_name),
        "seconds": round(timer.elapsed, 1),
        "peak_rss_bytes": _peak_rss(),
        "images": len(samples),
        "batches": stats["batches"],
    }
    atomic_write_json(cache_path, record)
    _log_summary(record)
    return record


def load_cache(path, key):
    """Read a calibration cache, refusing it when any key field differs from ``key``."""
    record = read_json(path, "calibration cache")
    stored = record.get("key", {})
    changed = sorted(k for k in set(key) | set(stored) if stored.get(k) != key.get(k))
    if changed:
        raise JetquantError(
            "calibration cache {} is stale: it was made for other {} ({}); delete it or rerun "
            "with --recalibrate (RECALIBRATE=1 with make)".format(
                path, ", ".join(_what(k) for k in changed), _diff(stored, key, changed[0])
            )
        )
    return record


def _what(field):
    return {
        "model_sha256": "weights",
        "calib_set_sha256": "calibration images",
        "preprocess": "preprocessing",
        "batch_size": "batch size",
    }.get(field, field)


def _diff(stored, key, field):
    old, new = stored.get(field), key.get(field)
    if isinstance(old, str) and isinstance(new, str) and len(old) > 16:
        old, new = old[:12] + "...", new[:12] + "..."
    return "{}: cache has {}, now {}".format(field, old, new)


def _warn_balance(dataset, samples):
    counts = {c: 0 for c in dataset.classes}
    for s in samples:
        counts[s.label] += 1
    balance = ", ".join("{} {}".format(c, n) for c, n in counts.items())
    if len(samples) < CALIB_SIZE:
        log.warning(
            "calibration set has %d images, fewer than %d: ranges may be unrepresentative "
            "(class balance: %s)",
            len(samples),
            CALIB_SIZE,
            balance,
        )
    absent = [c for c, n in counts.items() if n == 0]
    if absent:
        log.warning(
            "calibration set has no image of class(es) %s (class balance: %s)",
            ", ".join(absent),
            balance,
        )


class _BatchReader(CalibrationDataReader):
    """Feeds one preprocessed batch to ONNX Runtime, then reports exhaustion."""

    def __init__(self, input_name, batch):
        self.items = [{input_name: batch}]

    def get_next(self):
        return self.items.pop() if self.items else None


def _run(onnx_path, samples, spec, algorithm, batch_size):
    input_name = _input_name(onnx_path)
    method = {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[algorithm]
    options = {
        "entropy": {"num_bins": SIGNED_BINS, "num_quantized_bins": QUANT_LEVELS},
        "minmax": {},
        "percentile": {"num_bins": SIGNED_BINS // 2, "percentile": PERCENTILE, "symmetric": True},
    }[algorithm]
    stds = []
    batches = (len(samples) + batch_size - 1) // batch_size
    with tempfile.TemporaryDirectory(prefix="jetquant-calib-") as tmp:
        calibrator = create_calibrator(
            str(onnx_path),
            [],
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method=method,
            extra_options=options,
        )
        calibrator.execution_providers = ["CPUExecutionProvider"]
        calibrator.create_inference_session()
        for index in range(batches):
            batch = load_batch(paths(samples[index * batch_size : (index + 1) * batch_size]), spec)
            per_channel = batch.reshape(batch.shape[0], batch.shape[1], -1).std(axis=2)
            stds.extend(float(s) for s in per_channel.max(axis=1))
            with Quiet():
                calibrator.collect_data(_BatchReader(input_name, batch))
            log.info("calibration batch %d/%d", index + 1, batches)
        if max(stds) < 1e-6:
            raise JetquantError(
                "every calibration image is constant (blank or single-colour); "
                "the calib split must hold real images"
            )
        with Quiet():
            ranges = _ranges(calibrator, algorithm)
    return ranges, {"batches": batches}


def _ranges(calibrator, algorithm):
    if algorithm == "minmax":
        data = calibrator.compute_data()
        out = {}
        for name in data:
            lo, hi = (float(np.asarray(v).min()) for v in data[name].range_value)
            out[name] = {"min": lo, "max": hi, "amax": max(abs(lo), abs(hi))}
        return out
    histograms = calibrator.collector.histogram_dict
    if algorithm == "percentile":
        data = calibrator.compute_data()
        return {
            name: {
                "min": float(histograms[name][2]),
                "max": float(histograms[name][3]),
                "amax": float(data[name].range_value[1]),
            }
            for name in data
        }
    out = {}
    for name, (hist, edges, lo, hi, _) in histograms.items():
        abs_hist, abs_edges = fold_histogram(hist, edges)
        observed = max(abs(float(lo)), abs(float(hi)))
        out[name] = {
            "min": float(lo),
            "max": float(hi),
            "amax": min(entropy_threshold(abs_hist, abs_edges), observed),
        }
    return out


def fold_histogram(hist, edges, max_bins=SIGNED_BINS // 2):
    """Fold a histogram symmetric about zero into one of |x| with at most ``max_bins`` bins.

    ONNX Runtime widens a histogram when a later batch has a larger range, so
    it can hold more bins than it started with; merging neighbours back to at
    most ``max_bins`` keeps TensorRT's resolution and bounds the search cost.
    """
    zero = len(hist) // 2
    folded, folded_edges = hist[zero:] + hist[:zero][::-1], edges[zero:]
    factor = -(-len(folded) // max_bins)
    if factor > 1:
        pad = (-len(folded)) % factor
        folded = np.concatenate([folded, np.zeros(pad, dtype=folded.dtype)])
        width = folded_edges[1] - folded_edges[0]
        folded = folded.reshape(-1, factor).sum(axis=1)
        folded_edges = folded_edges[0] + width * factor * np.arange(len(folded) + 1)
    return folded, folded_edges


def entropy_threshold(hist, edges, levels=QUANT_LEVELS):
    """TensorRT's entropy calibration: the |x| threshold with the least KL divergence.

    For every candidate ``i`` (kept bins, ``levels`` .. ``len(hist)``), the
    reference P is the first ``i`` bins with everything beyond folded into the
    last one; the candidate Q merges those ``i`` bins into ``levels`` levels and
    spreads each level back evenly over its non-empty bins. All candidates are
    evaluated at once as one sparse (candidate, bin) array.

    Args:
        hist: counts of |x| per bin.
        edges: the ``len(hist) + 1`` bin edges, starting at 0.
        levels: quantization levels of the positive range (128 for INT8).

    Returns:
        The threshold (a bin edge), as a float.
    """
    hist = np.asarray(hist, dtype=np.float64)
    bins = len(hist)
    if hist.sum() == 0 or bins <= levels:
        return float(edges[-1])
    kept = np.arange(levels, bins + 1)
    starts = np.cumsum(kept) - kept
    rows = np.repeat(np.arange(len(kept)), kept)
    cols = np.arange(int(kept.sum())) - np.repeat(starts, kept)
    counts = hist[cols]
    level = rows * levels + np.floor(cols * (float(levels) / kept[rows])).astype(np.int64)
    nonzero = counts > 0
    level_sum = np.bincount(level, weights=counts, minlength=len(kept) * levels)
    level_nz = np.bincount(level, weights=nonzero, minlength=len(kept) * levels)
    q = np.where(nonzero, level_sum[level] / np.maximum(level_nz[level], 1), 0.0)
    p = counts
    p[starts + kept - 1] += hist.sum() - np.cumsum(hist)[kept - 1]
    p /= np.bincount(rows, weights=p)[rows]
    q /= np.maximum(np.bincount(rows, weights=q), 1e-30)[rows]
    use = p > 0
    q_use = np.maximum(q[use], KL_EPS * 1e-2)
    terms = p[use] * np.log(p[use] / q_use)
    best = int(np.argmin(np.bincount(rows[use], weights=terms, minlength=len(kept))))
    return float(edges[kept[best]])


def check_input_range(observed, spec):
    """Fail when the network input's range says the preprocessing is wrong.

    With the stored preprocessing, inputs span a known interval (about -2.1 to
    2.6 for ImageNet mean/std). An amax near 1 (pixels in 0..1, not
    normalised) or near 255 (raw pixels) means the calibration data did not go
    through that preprocessing.
    """
    mean, std = np.asarray(spec.mean), np.asarray(spec.std)
    expected = float(max(np.abs(-mean / std).max(), np.abs((1 - mean) / std).max()))
    amax = max(abs(observed["min"]), abs(observed["max"]))
    if amax > 1.05 * expected or amax < 0.5 * expected:
        hint = (
            " (raw 0..255 pixels?)"
            if amax > 100
            else " (0..1 pixels, no mean/std?)"
            if 0.9 < amax < 1.1
            else ""
        )
        raise JetquantError(
            "calibration input range is [{:.3g}, {:.3g}] (amax {:.3g}) but the "
            "model's preprocessing gives amax up to {:.3g}{}; the calibration "
            "images were not preprocessed like training: fix the preprocessing".format(
                observed["min"], observed["max"], amax, expected, hint
            )
        )


def _input_name(onnx_path):
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers][0]


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _log_summary(record):
    inp = record["input"]
    log.info(
        "calibration (%s, %d images, batch %d): %d tensors in %.1f s, peak RSS %.2f GB; "
        "network input range [%.3f, %.3f], amax %.3f",
        record["key"]["algorithm"],
        record["images"],
        record["key"]["batch_size"],
        len(record["ranges"]),
        record["seconds"],
        record["peak_rss_bytes"] / 1e9,
        inp["min"],
        inp["max"],
        inp["amax"],
    )
