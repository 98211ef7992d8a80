"""The ``calibrate`` stage: activation ranges of the FP32 ONNX graph on the calibration set.

Host-side equivalent of TensorRT's ``IInt8EntropyCalibrator2``, driven through
ONNX Runtime's calibrators: ONNX Runtime runs the graph with every
intermediate tensor exposed and accumulates the histograms; the images are
streamed one batch at a time (ONNX Runtime keeps about 100 MB of activations
per 224x224 image, so 200 at once would not fit).

Algorithms (``--calib-algo``):

* ``entropy`` (default): TensorRT's method. For each tensor, a 2048-bin
  histogram of |x| (TensorRT's resolution), then the clipping threshold that
  minimises the KL divergence between the clipped distribution and its
  128-level quantization. ONNX Runtime runs the graph; the histograms
  (:class:`AbsHistogram`) and the threshold search are ours, vectorised in
  numpy, because ONNX Runtime's search loops in Python over every candidate
  (minutes per model at 2048 bins), with its default 128 bins it has only one
  candidate (so it degenerates to max), and its ``np.histogram`` binning took
  half the calibration time here.
* ``minmax``: the observed min and max (ONNX Runtime's MinMaxCalibrater).
* ``percentile``: the 99.999th percentile of |x| (ONNX Runtime's, 2048 bins).

The result (per tensor: observed min and max, and the chosen ``amax``) is a
JSON cache keyed by everything that produced it; a cache whose key differs is
refused, never silently used.
"""

import math
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
ABS_BINS = 2048
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
            "abs_bins": ABS_BINS,
            "quant_levels": QUANT_LEVELS,
            "percentile": PERCENTILE,
        },
        "onnxruntime": ort.__version__,
    }


def calibrate(
    onnx_path, dataset, spec, cache_path, algorithm="entropy", batch_size=8, recalibrate=False,
    explicit=False,
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
        explicit: the user named ``cache_path``: a stale one is refused. The pipeline's own
            cache (``explicit`` False) is recomputed instead, with a warning saying why.

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
        try:
            record = load_cache(cache_path, key)
        except StaleCacheError as exc:
            if explicit:
                raise
            log.warning("%s: recalibrating", exc.reason)
        else:
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


class StaleCacheError(JetquantError):
    """A calibration cache made for other inputs; ``reason`` says which, the message the fix."""

    def __init__(self, reason):
        super().__init__(
            reason + "; delete it or rerun with --recalibrate (RECALIBRATE=1 with make)"
        )
        self.reason = reason


def load_cache(path, key):
    """Read a calibration cache, refusing it when any key field differs from ``key``."""
    try:
        record = read_json(path, "calibration cache")
    except JetquantError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict) \
            or "ranges" not in record:
        raise JetquantError(
            "{} is not a jetquant calibration cache (the JSON ranges `make calibrate` writes in "
            "calibration/; the TensorRT cache engines/*.trt-calib.cache is another file); give "
            "one of those or drop --calib-cache".format(path))
    stored = record["key"]
    changed = [k for k in FIELD_ORDER if stored.get(k) != key.get(k)]
    changed += sorted(k for k in set(key) | set(stored) if k not in FIELD_ORDER
                      and stored.get(k) != key.get(k))
    if changed:
        what = []
        for field in changed:
            if _what(field) not in what:
                what.append(_what(field))
        raise StaleCacheError(
            "calibration cache {} is stale: it was made for other {} ({})".format(
                path, ", ".join(what), _diff(stored, key, changed[0])
            )
        )
    _check_ranges(path, record["ranges"])
    return record


def _check_ranges(path, ranges):
    """Refuse ranges no calibration produces: non-finite values, amax <= 0, min > max."""
    for name, r in sorted(ranges.items()):
        try:
            lo, hi, amax = float(r["min"]), float(r["max"]), float(r["amax"])
        except (KeyError, TypeError, ValueError):
            lo = hi = amax = float("nan")
        if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(amax)) \
                or amax < 0 or lo > hi:
            raise JetquantError(
                "calibration cache {}: tensor {!r} has an impossible range {!r} (needs finite "
                "min <= max and amax >= 0); delete it or rerun with --recalibrate".format(
                    path, name, r))


FIELD_ORDER = ("model_sha256", "preprocess", "calib_set_sha256", "calib_images", "algorithm",
               "batch_size", "histogram", "onnxruntime")


def _what(field):
    return {
        "model_sha256": "weights",
        "calib_set_sha256": "calibration images",
        "calib_images": "calibration images",
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
        "entropy": {"num_bins": ABS_BINS, "num_quantized_bins": QUANT_LEVELS},
        "minmax": {},
        "percentile": {"num_bins": ABS_BINS, "percentile": PERCENTILE, "symmetric": True},
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
        if algorithm == "entropy":
            calibrator.collector = AbsHistogram()
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
    for name, (hist, _, lo, hi) in histograms.items():
        observed = max(abs(lo), abs(hi))
        threshold = entropy_threshold(hist, calibrator.collector.edges(name))
        out[name] = {"min": lo, "max": hi, "amax": min(threshold, observed)}
    return out


class AbsHistogram(object):
    """Streaming histograms of |x| per tensor, TensorRT style: 2048 bins from 0 to a range.

    The range starts at the first batch's max |x| and doubles (neighbouring
    bins merged in pairs) whenever a later batch exceeds it, so every tensor
    keeps exactly ``bins`` bins. Plugged into ONNX Runtime's calibrator as its
    collector: ONNX Runtime runs the augmented graph, this bins the outputs
    (in one pass of integer binning, several times faster than ``np.histogram``).
    """

    def __init__(self, bins=ABS_BINS):
        self.bins = bins
        self.histogram_dict = {}

    def collect(self, name_to_arr):
        """Add one batch of outputs: {tensor name: [arrays]}."""
        for name, arrays in name_to_arr.items():
            for arr in arrays:
                self._add(name, np.asarray(arr, dtype=np.float32).ravel())

    def _add(self, name, x):
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        top = max(abs(lo), abs(hi))
        hist, width, old_lo, old_hi = self.histogram_dict.get(name, (None, None, lo, hi))
        if hist is None:
            hist, width = np.zeros(self.bins, dtype=np.int64), (top or 1.0) / self.bins
        while top > width * self.bins:
            hist = np.concatenate([hist.reshape(-1, 2).sum(axis=1), np.zeros(self.bins // 2,
                                                                               dtype=np.int64)])
            width *= 2
        index = np.abs(x)
        np.multiply(index, np.float32(1.0 / width), out=index)
        index = index.astype(np.int32)
        np.minimum(index, self.bins - 1, out=index)
        hist += np.bincount(index, minlength=self.bins)
        self.histogram_dict[name] = (hist, width, min(lo, old_lo), max(hi, old_hi))

    def edges(self, name):
        """Bin edges of one tensor's histogram."""
        hist, width = self.histogram_dict[name][:2]
        return width * np.arange(len(hist) + 1)


def entropy_threshold(hist, edges, levels=QUANT_LEVELS):
    """TensorRT's entropy calibration: the |x| threshold with the least KL divergence.

    For every candidate ``i`` (kept bins, ``levels`` .. ``len(hist)``), the
    reference P is the first ``i`` bins with everything beyond folded into the
    last one; the candidate Q merges those ``i`` bins into ``levels`` levels and
    spreads each level back evenly over its non-empty bins. All candidates are
    evaluated at once as one sparse (candidate, bin) array. As in NVIDIA's
    calibrators, the first bin's count is replaced by the second's: the exact
    zeros of a ReLU output would otherwise dominate P, and the search would
    always pick the smallest threshold. Ties go to the widest range.

    Args:
        hist: counts of |x| per bin.
        edges: the ``len(hist) + 1`` bin edges, starting at 0.
        levels: quantization levels of the positive range (128 for INT8).

    Returns:
        The threshold (a bin edge), as a float.
    """
    hist = np.array(hist, dtype=np.float64)
    bins = len(hist)
    if bins > 1:
        hist[0] = hist[1]  # the zero spike (ReLU outputs) would otherwise pull amax to the minimum
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
    divergence = np.bincount(rows[use], weights=terms, minlength=len(kept))
    best = len(kept) - 1 - int(np.argmin(divergence[::-1]))  # ties: the widest range
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
