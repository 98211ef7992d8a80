"""INT8 entropy calibration for TensorRT's implicit route (TensorRT 8.2 to 10.x).

The logic is in plain classes that run without TensorRT:

* :class:`CalibrationBatches` cuts the calibration set into fixed-size batches
  with :func:`pipeline.preprocess.load_batch` (the one preprocessing).
  Incomplete last batch: **dropped**. The calibration profile fixes the batch
  shape (min = opt = max), so every batch must be full, and padding would count
  some images twice in the entropy histograms. The number of images left out
  (fewer than one batch) is logged; choose a batch size that divides the set
  (200 images: 1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 200) to use them all.
* :class:`BatchFeeder` uploads batch after batch into device buffers and hands
  TensorRT one int device pointer per requested input, in the order asked, then
  None when the set is exhausted.
* :class:`CalibrationCache` keys the cache file by TensorRT version, model
  hash, preprocessing, calibration-set hash, algorithm and batch size (in its
  sidecar), and refuses a stale one loudly before the build starts.

:func:`make_calibrator` wraps them in a ``trt.IInt8EntropyCalibrator2``
subclass. TensorRT swallows exceptions raised inside calibrator callbacks (it
prints them and carries on with default scales), so the callbacks store the
first error and :func:`pipeline.trt_build.build_engine` raises it after the build.

This module stays Python 3.6 compatible and imports neither torch nor onnx.
"""

import os

import numpy as np

from . import trt_adapter as adapter
from .artifacts import atomic_write, read_json, sidecar_path, write_sidecar
from .errors import JetquantError
from .log import get_logger
from .preprocess import load_batch

log = get_logger("calibrate")

# Entropy calibration; TensorRT names it EntropyCalibration2 in the cache header.
ALGORITHM = "entropy"
KEY_FIELDS = ("model_sha256", "preprocess", "calib_set_sha256", "algorithm", "batch_size")


class CalibrationBatches(object):
    """The calibration set as full batches of preprocessed images.

    Args:
        paths: image files of the calibration set, in a stable order.
        spec: the model's :class:`pipeline.preprocess.Preprocess`.
        batch_size: images per batch (the calibration profile's batch).
        loader: function (paths, spec) -> float32 NCHW array; the default is
            :func:`pipeline.preprocess.load_batch`.
    """

    def __init__(self, paths, spec, batch_size, loader=load_batch):
        self.paths = list(paths)
        self.spec = spec
        self.batch_size = int(batch_size)
        self.loader = loader
        if self.batch_size < 1:
            raise JetquantError("calibration batch size must be at least 1, got {}"
                                .format(batch_size))
        if len(self.paths) < self.batch_size:
            raise JetquantError("calibration set has {} images, fewer than one batch of {}; "
                                "use a smaller calibration batch size".format(
                                    len(self.paths), self.batch_size))
        self.dropped = len(self.paths) % self.batch_size

    def __len__(self):
        return len(self.paths) // self.batch_size

    @property
    def used(self):
        """Number of images that reach TensorRT (the dropped remainder excluded)."""
        return len(self) * self.batch_size

    @property
    def shape(self):
        """Shape of every batch: (batch, 3, crop, crop)."""
        return (self.batch_size, 3, self.spec.crop, self.spec.crop)

    def batch(self, index):
        """Load batch ``index`` (0-based) as a contiguous float32 array."""
        if not 0 <= index < len(self):
            raise IndexError("calibration batch {} of {}".format(index, len(self)))
        start = index * self.batch_size
        array = self.loader(self.paths[start:start + self.batch_size], self.spec)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.shape != self.shape:
            raise JetquantError("calibration batch {} has shape {}, expected {}".format(
                index, array.shape, self.shape))
        return array


class BatchFeeder(object):
    """The body of ``get_batch``: upload the next batch, return device pointers.

    Args:
        batches: a :class:`CalibrationBatches`.
        input_name: the network input the batches are for.
        allocate: function nbytes -> buffer with ``ptr`` (int), ``upload(array)``
            and ``free()``; :class:`pipeline.trt_runtime.DeviceBuffer` on a GPU.
    """

    def __init__(self, batches, input_name, allocate):
        self.batches = batches
        self.input_name = input_name
        self.allocate = allocate
        self.buffer = None
        self.served = 0
        self.error = None

    def next_pointers(self, names):
        """Pointers for the inputs TensorRT names, in its order; None when exhausted."""
        unknown = [n for n in names if n != self.input_name]
        if unknown:
            raise JetquantError("TensorRT asked calibration data for input(s) {}; the "
                                "calibration set feeds only {!r}".format(unknown, self.input_name))
        if self.served >= len(self.batches):
            return None
        array = self.batches.batch(self.served)
        if self.buffer is None:
            self.buffer = self.allocate(array.nbytes)
        self.buffer.upload(array)
        self.served += 1
        log.info("calibration batch %d/%d", self.served, len(self.batches))
        return [int(self.buffer.ptr) for _ in names]

    def close(self):
        """Free the device buffer."""
        if self.buffer is not None:
            self.buffer.free()
            self.buffer = None


def cache_key(tensorrt_version, model_sha256, spec, calib_set_sha256, batch_size,
              algorithm=ALGORITHM):
    """The key a calibration cache is valid for, in the layout the build stage writes.

    ``make engine`` (:mod:`pipeline.build`) writes the same file from ONNX Runtime's
    calibration on any host, with extra fields (tool versions); only the fields
    below decide whether a cache fits this TensorRT build.
    """
    return {"algorithm": algorithm, "batch_size": int(batch_size),
            "calib_set_sha256": calib_set_sha256, "model_sha256": model_sha256,
            "preprocess": spec.to_dict(), "target": "tensorrt-cache",
            "trt_version": str(tensorrt_version)}


def _relevant(key):
    """The fields of a cache key that decide validity, TensorRT as its cache version code."""
    key = key if isinstance(key, dict) else {}
    out = {name: key.get(name) for name in KEY_FIELDS}
    version = key.get("trt_version") or (key.get("versions") or {}).get("tensorrt")
    out["tensorrt"] = adapter.calibration_cache_code(version) if version else None
    return out


def _flatten(obj, prefix=""):
    if not isinstance(obj, dict):
        return {prefix: obj}
    out = {}
    for name, value in obj.items():
        out.update(_flatten(value, prefix + "." + name if prefix else name))
    return out


def differing_fields(expected, found):
    """Dotted names of the deciding key fields whose values differ (missing counts)."""
    flat_expected, flat_found = _flatten(_relevant(expected)), _flatten(_relevant(found))
    names = set(flat_expected) | set(flat_found)
    return sorted(n for n in names if flat_expected.get(n) != flat_found.get(n))


def _short(value):
    text = str(value)
    return text[:12] + "..." if len(text) > 15 else text


def _describe(fields, expected, found):
    flat_expected, flat_found = _flatten(_relevant(expected)), _flatten(_relevant(found))
    return "; ".join("{} is {} in the cache, {} for this build".format(
        name, _short(flat_found.get(name)), _short(flat_expected.get(name))) for name in fields)


class CalibrationCache(object):
    """TensorRT's calibration cache file, guarded by a keyed sidecar.

    Args:
        path: the cache file (``engines/<stem>.trt-calib.cache``).
        key: :func:`cache_key` for this build.
        recalibrate: ignore an existing cache (it is overwritten after calibration).
    """

    def __init__(self, path, key, recalibrate=False):
        self.path = str(path)
        self.key = key
        self.recalibrate = recalibrate
        self.version = key["trt_version"]

    def load(self):
        """Return the cache bytes if a valid cache exists, None if calibration must run.

        Raises:
            JetquantError: a cache exists but was made for something else, or
                has no sidecar saying what it was made for.
        """
        if self.recalibrate or not os.path.isfile(self.path):
            return None
        fix = "delete {} (and its .json) or pass recalibrate (--recalibrate)".format(self.path)
        if not os.path.isfile(sidecar_path(self.path)):
            raise JetquantError("calibration cache {} has no sidecar {}, so what it was made for "
                                "is unknown; {}".format(self.path, sidecar_path(self.path), fix))
        found = read_json(sidecar_path(self.path), "calibration cache sidecar").get("key")
        fields = differing_fields(self.key, found)
        if fields:
            raise JetquantError("calibration cache {} is stale, made for other {}: {}; {}".format(
                self.path, ", ".join(fields), _describe(fields, self.key, found), fix))
        with open(self.path, "rb") as handle:
            data = handle.read()
        self._check_header(data, fix)
        return data

    def _check_header(self, data, fix):
        header = adapter.parse_cache_header(data.decode("latin-1"))
        expected = adapter.calibration_cache_code(self.version)
        if header is None:
            raise JetquantError("calibration cache {} has no TRT-<version>-<algorithm> header; "
                                "{}".format(self.path, fix))
        if header[0] != expected:
            raise JetquantError("calibration cache {} header says TensorRT code {}, the installed "
                                "TensorRT {} writes {}; {}".format(self.path, header[0],
                                                                  self.version, expected, fix))

    def save(self, data):
        """Write TensorRT's cache bytes and the sidecar that keys them."""
        atomic_write(self.path, bytes(data))
        header = bytes(data).split(b"\n", 1)[0].decode("latin-1")
        write_sidecar(self.path, self.key, {"header": header, "written_by": "tensorrt"})
        log.info("calibration cache written: %s", self.path)


def make_calibrator(trt, feeder, cache, cached=None):
    """Return a ``trt.IInt8EntropyCalibrator2`` that serves ``feeder`` and ``cache``.

    Args:
        trt: the tensorrt module (8.2 to 10.x; 11 has no calibrators).
        feeder: a :class:`BatchFeeder`.
        cache: a :class:`CalibrationCache`.
        cached: cache bytes from :meth:`CalibrationCache.load` (None: calibrate).
    """
    adapter.member(trt, "IInt8EntropyCalibrator2")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.feeder = feeder

        def get_batch_size(self):
            return feeder.batches.batch_size

        def get_batch(self, names):
            # Any exception here would be swallowed by TensorRT; keep it for the build.
            try:
                return feeder.next_pointers(list(names))
            except Exception as exc:  # noqa: BLE001 - re-raised after the build
                feeder.error = feeder.error or exc
                return None

        def read_calibration_cache(self):
            return cached

        def write_calibration_cache(self, data):
            try:
                cache.save(bytes(memoryview(data)))
            except Exception as exc:  # noqa: BLE001 - re-raised after the build
                feeder.error = feeder.error or exc

    return EntropyCalibrator()
