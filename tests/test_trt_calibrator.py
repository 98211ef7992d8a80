"""pipeline.trt_calibrator without TensorRT or a GPU.

FakeDeviceMemory stands in for a CUDA allocation (it keeps the uploaded array in
host memory and hands out made-up integer addresses) and StandInCalibratorBase for
``trt.IInt8EntropyCalibrator2``; neither is TensorRT or a GPU.
"""

import json
import os
import types

import numpy as np
import pytest
from conftest import write_image

from pipeline import trt_calibrator as calib
from pipeline.errors import JetquantError
from pipeline.preprocess import Preprocess

SPEC = Preprocess(resize=16, crop=16)


def marker_loader(paths, spec):
    """Stand-in loader: every image is a constant array holding its index in the set."""
    out = np.empty((len(paths), 3, spec.crop, spec.crop), dtype=np.float32)
    for row, path in enumerate(paths):
        out[row] = float(os.path.basename(path).split(".")[0])
    return out


def fake_paths(count):
    return ["/calib/{}.png".format(i) for i in range(count)]


class FakeDeviceMemory(object):
    """Stand-in for a device buffer: made-up address, data kept on the host."""

    next_ptr = 0x7F0000000000

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.ptr = FakeDeviceMemory.next_ptr
        FakeDeviceMemory.next_ptr += 1 << 20
        self.uploads = []
        self.freed = False

    def upload(self, array):
        assert array.nbytes <= self.nbytes
        self.uploads.append(array.copy())

    def free(self):
        self.freed = True


class Allocator(object):
    def __init__(self):
        self.buffers = []

    def __call__(self, nbytes):
        self.buffers.append(FakeDeviceMemory(nbytes))
        return self.buffers[-1]


def test_incomplete_last_batch_is_dropped():
    batches = calib.CalibrationBatches(fake_paths(20), SPEC, 8, loader=marker_loader)
    assert (len(batches), batches.used, batches.dropped) == (2, 16, 4)
    assert batches.shape == (8, 3, 16, 16)
    assert batches.batch(1)[:, 0, 0, 0].tolist() == list(range(8, 16))
    with pytest.raises(IndexError):
        batches.batch(2)
    exact = calib.CalibrationBatches(fake_paths(200), SPEC, 8, loader=marker_loader)
    assert (len(exact), exact.dropped) == (25, 0)


def test_batch_larger_than_the_set_is_refused():
    with pytest.raises(JetquantError, match="3 images, fewer than one batch of 8"):
        calib.CalibrationBatches(fake_paths(3), SPEC, 8)
    with pytest.raises(JetquantError, match="at least 1"):
        calib.CalibrationBatches(fake_paths(3), SPEC, 0)


def test_batches_use_the_one_preprocessing(tmp_path):
    paths = [write_image(str(tmp_path / "{}.png".format(i)), seed=i, size=(24, 20))
             for i in range(3)]
    batch = calib.CalibrationBatches(paths, SPEC, 2).batch(0)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    assert -2.2 < float(batch.min()) < 0 < float(batch.max()) < 2.7


def test_pointer_contract_ints_in_input_order_then_none():
    allocate = Allocator()
    batches = calib.CalibrationBatches(fake_paths(20), SPEC, 8, loader=marker_loader)
    feeder = calib.BatchFeeder(batches, "input", allocate)
    first = feeder.next_pointers(["input"])
    second = feeder.next_pointers(["input"])
    assert first == second == [allocate.buffers[0].ptr]
    assert all(type(p) is int for p in first)
    assert feeder.next_pointers(["input"]) is None
    assert feeder.served == 2 and len(allocate.buffers) == 1
    uploaded = allocate.buffers[0].uploads
    assert [u[:, 0, 0, 0].tolist() for u in uploaded] == [list(range(8)), list(range(8, 16))]
    feeder.close()
    assert allocate.buffers[0].freed


def test_unknown_input_name_is_an_error():
    batches = calib.CalibrationBatches(fake_paths(8), SPEC, 8, loader=marker_loader)
    feeder = calib.BatchFeeder(batches, "input", Allocator())
    with pytest.raises(JetquantError, match=r"input\(s\) \['mask'\]"):
        feeder.next_pointers(["input", "mask"])


class StandInCalibratorBase(object):
    """Stand-in for trt.IInt8EntropyCalibrator2 (pybind11 needs the explicit base __init__)."""

    def __init__(self):
        self.base_initialised = True


def stand_in_trt():
    return types.SimpleNamespace(__version__="8.6.1",
                                 IInt8EntropyCalibrator2=StandInCalibratorBase)


def spec_key(**changes):
    fields = dict(tensorrt_version="8.6.1", model_sha256="a" * 64, spec=SPEC,
                  calib_set_sha256="c" * 64, batch_size=8)
    fields.update(changes)
    return calib.cache_key(**fields)


CACHE_TEXT = b"TRT-8601-EntropyCalibration2\ninput: 3ca3d70a\n/conv1/Conv_output_0: 3d0f5c29\n"


def test_calibrator_serves_feeder_and_keeps_callback_errors(tmp_path):
    batches = calib.CalibrationBatches(fake_paths(16), SPEC, 8, loader=marker_loader)
    feeder = calib.BatchFeeder(batches, "input", Allocator())
    cache = calib.CalibrationCache(str(tmp_path / "m.trt-calib.cache"), spec_key())
    calibrator = calib.make_calibrator(stand_in_trt(), feeder, cache)
    assert calibrator.base_initialised and calibrator.get_batch_size() == 8
    assert calibrator.read_calibration_cache() is None
    assert len(calibrator.get_batch(["input"])) == 1
    assert calibrator.get_batch(["other"]) is None
    assert isinstance(feeder.error, JetquantError) and "other" in str(feeder.error)
    calibrator.write_calibration_cache(memoryview(CACHE_TEXT))
    assert open(cache.path, "rb").read() == CACHE_TEXT
    side = json.load(open(cache.path + ".json"))
    assert side["key"] == spec_key() and side["header"] == "TRT-8601-EntropyCalibration2"


def test_valid_cache_is_reused_and_recalibrate_ignores_it(tmp_path):
    path = str(tmp_path / "m.trt-calib.cache")
    calib.CalibrationCache(path, spec_key()).save(CACHE_TEXT)
    assert calib.CalibrationCache(path, spec_key()).load() == CACHE_TEXT
    assert calib.CalibrationCache(path, spec_key(), recalibrate=True).load() is None
    assert calib.CalibrationCache(str(tmp_path / "none.cache"), spec_key()).load() is None


@pytest.mark.parametrize("change,field", [
    ({"model_sha256": "b" * 64}, "model_sha256"),
    ({"spec": Preprocess(resize=18, crop=16)}, "preprocess.resize"),
    ({"calib_set_sha256": "d" * 64}, "calib_set_sha256"),
    ({"batch_size": 16}, "batch_size"),
    ({"algorithm": "minmax"}, "algorithm"),
    ({"tensorrt_version": "10.3.0"}, "tensorrt"),
])
def test_stale_cache_is_refused_naming_the_field_and_the_fix(tmp_path, change, field):
    path = str(tmp_path / "m.trt-calib.cache")
    calib.CalibrationCache(path, spec_key()).save(CACHE_TEXT)
    with pytest.raises(JetquantError) as info:
        calib.CalibrationCache(path, spec_key(**change)).load()
    message = str(info.value)
    assert "is stale, made for other {}:".format(field) in message
    assert "delete {}".format(path) in message and "recalibrate" in message


def test_cache_from_the_build_stage_layout_is_accepted(tmp_path):
    # pipeline.build writes this sidecar (more fields, TensorRT as trt_version).
    path = str(tmp_path / "m.trt-calib.cache")
    with open(path, "wb") as handle:
        handle.write(CACHE_TEXT)
    key = dict(spec_key(), calibration="e" * 64, pinned_layers=["/conv1/Conv"],
               versions={"jetquant": "0.1.0", "onnxruntime": "1.32.0", "onnx": "1.18.0"})
    key["trt_version"] = "8.6.1.6"
    with open(path + ".json", "w") as handle:
        json.dump({"key": key}, handle)
    assert calib.CalibrationCache(path, spec_key()).load() == CACHE_TEXT


def test_header_from_another_tensorrt_is_refused_even_if_the_sidecar_agrees(tmp_path):
    path = str(tmp_path / "m.trt-calib.cache")
    calib.CalibrationCache(path, spec_key()).save(b"TRT-100300-EntropyCalibration2\nx: 3c\n")
    with pytest.raises(JetquantError, match="header says TensorRT code 100300, the installed "
                                            "TensorRT 8.6.1 writes 8601"):
        calib.CalibrationCache(path, spec_key()).load()


def test_cache_without_sidecar_is_refused(tmp_path):
    path = tmp_path / "m.trt-calib.cache"
    path.write_bytes(CACHE_TEXT)
    with pytest.raises(JetquantError, match="has no sidecar .*what it was made for is unknown"):
        calib.CalibrationCache(str(path), spec_key()).load()
