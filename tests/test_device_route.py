"""pipeline.device_route against a TensorRT stand-in, on a tiny synthetic data set.

The stand-in (:func:`stand_in_tensorrt` over ``tests/standins.py``, and its
:class:`StandInCuda`) is not TensorRT: it parses nothing, runs no kernel, and
keeps "device memory" in host arrays. It has the names and behaviour the route
relies on (builder flags, per-layer precision, the entropy calibrator's
callbacks, a DETAILED inspector JSON, the tensor-name IO API of 10.x), and its
"engines" compute logits from the input image's channel means, so accuracy
figures are meaningful numbers. It labels itself (``JETQUANT_STAND_IN``) and the
route must say so in every report.

The host artifacts are small files with sidecars in the layout ``make engine``
writes; the data set is three colour classes of 9 images each.
"""

import json
import logging
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import standins
from conftest import IMPORT_BLOCKER
from PIL import Image
from standins import StandInCuda

from pipeline import device_route, trt_adapter, trt_runtime
from pipeline.artifacts import sha256_file, write_sidecar
from pipeline.data import load_dataset, samples_digest
from pipeline.errors import JetquantError
from pipeline.preprocess import Preprocess
from pipeline.report import banner, validate_schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
CLASSES = ("blue", "green", "red")
SPEC = Preprocess(resize=16, crop=16)
STEM = "colours-resnet50"
PINNED = ["/conv1/Conv"]


def stand_in_tensorrt(cuda, **changes):
    """tests/standins.py's TensorRT stand-in (not TensorRT) sized for the colour data set."""
    return standins.stand_in_tensorrt(cuda, input_shape=(-1, 3, SPEC.crop, SPEC.crop),
                                      classes=len(CLASSES), **changes)


# ---- a tiny data set and the host's artifacts ----------------------------------------------


def write_colour_images(root, per_class=9, size=20):
    """Class folders of mostly-blue / -green / -red noisy images (distinct files)."""
    rng = np.random.default_rng(7)
    for index, label in enumerate(CLASSES):
        folder = os.path.join(str(root), label)
        os.makedirs(folder)
        channel = 2 - index
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(size, size, 3)).astype(np.uint8)
            pixels[..., channel] = rng.integers(150, 256, size=(size, size))
            Image.fromarray(pixels, "RGB").save(os.path.join(folder, "{}.png".format(i)))
    return str(root)


def write_host_artifacts(engines, dataset, trt_version="10.3.0", batch_size=3):
    """The three artifacts `make engine` leaves in engines/, with sidecars in its layout."""
    os.makedirs(str(engines), exist_ok=True)
    base = os.path.join(str(engines), STEM)
    fp32, qdq, cache = base + ".fp32.onnx", base + ".int8-qdq.onnx", base + ".trt-calib.cache"
    with open(fp32, "wb") as handle:
        handle.write(b"stand-in fp32 onnx")
    with open(qdq, "wb") as handle:
        handle.write(b"stand-in qdq onnx")
    with open(cache, "w") as handle:
        handle.write(trt_adapter.calibration_cache_header(trt_version) + "\ninput: 3c010a14\n")
    extra = {"classes": list(CLASSES), "preprocess": SPEC.to_dict()}
    write_sidecar(fp32, {"checkpoint_sha256": "0" * 64, "opset": 13},
                  dict(extra, arch="resnet50", inputs=["input"], outputs=["logits"]))
    common = {"model_sha256": sha256_file(fp32), "preprocess": SPEC.to_dict(),
              "calib_set_sha256": samples_digest(dataset.split("calib")), "algorithm": "entropy",
              "batch_size": batch_size, "pinned_layers": PINNED}
    extra["pinned_layers"] = PINNED
    write_sidecar(qdq, dict(common, target="tensorrt"), dict(extra, target="tensorrt"))
    write_sidecar(cache, dict(common, target="tensorrt-cache", trt_version=trt_version),
                  dict(extra, trt_version=trt_version))
    return {"fp32": fp32, "qdq": qdq, "cache": cache}


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Data, host artifacts, a stand-in CUDA that detect_device and the calibrator also reach."""
    data = write_colour_images(tmp_path / "colours")
    dataset = load_dataset(data)
    cuda = StandInCuda()
    monkeypatch.setattr(trt_runtime, "open_cuda", lambda: cuda)
    paths = write_host_artifacts(tmp_path / "engines", dataset)
    options = device_route.DeviceOptions(
        engines_dir=str(tmp_path / "engines"), data=data, report_dir=str(tmp_path / "reports"),
        iterations=5, warmup=1, throughput_seconds=0.0)
    return types.SimpleNamespace(tmp=tmp_path, data=data, dataset=dataset, cuda=cuda,
                                 paths=paths, options=options)


# ---- the route ---------------------------------------------------------------------------------


def test_route_writes_a_valid_report_of_trt_results_labelled_stand_in(site):
    trt = stand_in_tensorrt(site.cuda)
    report = device_route.run(site.options, trt=trt, cuda=site.cuda)
    saved = json.load(open(str(site.tmp / "reports" / "report.json")))
    validate_schema(saved)
    assert [r["name"] for r in saved["results"]] == ["fp32-trt", "fp16-trt", "int8-trt"]
    assert [r["role"] for r in saved["results"]] == ["baseline", "reference", "candidate"]
    assert saved["baseline"] == "fp32-trt" and saved["route"] == "implicit"
    assert saved["backend"] == "TensorRT stand-in: " + standins.LABEL
    assert "not TensorRT figures" in banner(saved)
    assert "stand-in" in (site.tmp / "reports" / "report.md").read_text()
    assert saved["environment"]["versions"]["tensorrt"] == "10.3.0.30 (stand-in)"
    # The host's cache was for this TensorRT: no calibration ran here.
    assert saved["calibration"]["source"] == "cache" and trt.served == []
    for result in saved["results"]:
        assert result["verification"]["passed"] and result["verification"]["problems"] == []
        assert result["latency_ms"]["n"] == 5 and len(result["latency_ms"]["samples"]) == 5
        assert sorted(result["throughput"], key=int) == ["1", "8", "32"]
        assert set(result["latency_split_ms"]) >= {"copy_in", "compute", "copy_out"}
        assert result["top1"] == 1.0 and len(result["confusion"]) == 3
    int8 = saved["results"][2]
    assert int8["pinned_layers"] == PINNED and int8["verification"]["quantized_int8"] == 1
    assert int8["verification"]["ran_in"] == {"/conv1/Conv": ["/conv1/Conv"]}
    assert int8["vs_baseline"]["agreement"] == 1.0 and int8["vs_baseline"]["mcnemar_p"] == 1.0
    assert 0 < int8["vs_baseline"]["max_abs_diff"] <= 1 / 16.0
    pins = [g for g in saved["gates"] if g["name"] == "pins_verified"]
    assert [g["model"] for g in pins] == ["fp32-trt", "fp16-trt", "int8-trt"]
    assert all(g["passed"] for g in pins)
    assert report["passed"] == all(g["passed"] for g in report["gates"])


def test_explicit_route_is_honoured_and_pins_come_from_the_graph(site):
    site.options.route = "explicit"
    report = device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)
    int8 = [r for r in report["results"] if r["name"] == "int8-trt"][0]
    assert report["route"] == "explicit" and int8["route"] == "explicit"
    assert report["calibration"] == {"used": False, "route": "explicit"}
    assert int8["verification"]["passed"]


def test_nano_builds_fp16_as_the_candidate_with_the_reason(site, caplog, monkeypatch):
    cuda = StandInCuda("NVIDIA Jetson Nano Developer Kit (stand-in)")
    monkeypatch.setattr(trt_runtime, "open_cuda", lambda: cuda)
    with caplog.at_level(logging.INFO, logger="jetquant"):
        report = device_route.run(site.options, trt=stand_in_tensorrt(cuda, fast_int8=False),
                                  cuda=cuda)
    assert [(r["name"], r["role"]) for r in report["results"]] == [
        ("fp32-trt", "baseline"), ("fp16-trt", "candidate")]
    assert report["route"] is None and report["calibration"]["used"] is False
    assert "platform_has_fast_int8 = False" in report["precision_choice"]["reason"]
    why = [r.getMessage() for r in caplog.records if "precision auto -> fp16" in r.getMessage()]
    assert why == ["precision auto -> fp16: NVIDIA Jetson Nano Developer Kit (stand-in) has no "
                   "fast INT8 (TensorRT reports platform_has_fast_int8 = False)"]
    gated = set(g["model"] for g in report["gates"] if g["name"] != "pins_verified")
    assert gated == {"fp16-trt"}
    site.options.precision = "int8"
    with pytest.raises(JetquantError, match="precision int8 refused.*slower than FP16"):
        device_route.run(site.options, trt=stand_in_tensorrt(cuda, fast_int8=False), cuda=cuda)


def test_a_cache_for_another_tensorrt_is_replaced_by_calibration_here(site, caplog):
    write_host_artifacts(site.tmp / "engines", site.dataset, trt_version="8.6.1")
    trt = stand_in_tensorrt(site.cuda)
    with caplog.at_level(logging.WARNING, logger="jetquant"):
        report = device_route.run(site.options, trt=trt, cuda=site.cuda)
    assert trt.served == [3, 3, 3]
    assert report["calibration"]["source"] == "device"
    assert "written for TensorRT 8.6.1, this is TensorRT 10.3.0.30" in \
        report["calibration"]["reason"]
    assert any("calibrating on this device (entropy, 9 images" in r.getMessage()
               for r in caplog.records)
    side = json.load(open(site.paths["cache"] + ".json"))
    assert side["written_by"] == "tensorrt" and side["key"]["trt_version"] == "10.3.0.30"


def test_device_calibration_on_other_calibration_images_is_refused(site):
    write_host_artifacts(site.tmp / "engines", site.dataset, trt_version="8.6.1")
    side_path = site.paths["cache"] + ".json"
    side = json.load(open(side_path))
    side["key"]["calib_set_sha256"] = "f" * 64
    json.dump(side, open(side_path, "w"))
    with pytest.raises(JetquantError, match="calib split of data set colours differs"):
        device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)


# ---- user errors -------------------------------------------------------------------------------


def test_missing_artifacts_name_the_files_and_the_fix(site):
    os.remove(site.paths["qdq"])
    os.remove(site.paths["cache"] + ".json")
    with pytest.raises(JetquantError) as info:
        device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)
    message = str(info.value)
    assert STEM + ".int8-qdq.onnx (Q/DQ ONNX for the explicit route)" in message
    assert STEM + ".trt-calib.cache.json (sidecar)" in message
    assert message.endswith("run `make engine` on a host first and copy engines/ here")
    empty = site.tmp / "empty"
    empty.mkdir()
    site.options.engines_dir = str(empty)
    with pytest.raises(JetquantError, match="holds no \\*.fp32.onnx; run `make engine` on a host"):
        device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)


def test_a_truncated_copy_is_refused(site):
    with open(site.paths["fp32"], "ab") as handle:
        handle.write(b"x")
    with pytest.raises(JetquantError, match="fp32.onnx does not match its sidecar"):
        device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)


def test_several_models_need_the_data_sets_name_or_stem(site):
    other = site.tmp / "engines" / "other-resnet50.fp32.onnx"
    other.write_bytes(b"x")
    assert device_route.choose_stem(["colours-resnet50", "other-resnet50"], "e") is None
    assert device_route.choose_stem(["colours-resnet50", "other-resnet50"], "e",
                                    "colours-resnet50") == "colours-resnet50"
    with pytest.raises(JetquantError, match="none is named neu-resnet50.*--stem"):
        device_route.choose_stem(["colours-resnet50", "other-resnet50"], "e", "neu-resnet50")
    report = device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)
    assert report["stem"] == STEM


def test_cli_user_error_is_one_line_and_status_2(tmp_path, capsys):
    status = device_route.main(["--engines", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("jetquant: error: engines folder ")
    assert "run `make engine` on a host first and copy engines/ here" in err


@pytest.mark.parametrize("changes,expected", [
    ({"precision": "fp16", "route": "explicit"}, "--precision fp16 takes no route"),
    ({"recalibrate": True, "route": "explicit"}, "drop one of them"),
    ({"iterations": 0}, "--iterations must be >= 1"),
    ({"batches": (1, 0)}, "--batches must list batch sizes >= 1")])
def test_contradictory_or_empty_requests_are_refused(site, changes, expected):
    for name, value in changes.items():
        setattr(site.options, name, value)
    with pytest.raises(JetquantError, match=expected):
        device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)


def test_noisy_latency_warns_with_the_cure(caplog):
    results = [{"name": "fp32-trt", "latency_ms": {"cv": 0.04}},
               {"name": "int8-trt", "latency_ms": {"cv": 0.25}}]
    with caplog.at_level(logging.WARNING, logger="jetquant"):
        device_route.warn_if_noisy(results)
    assert [r.getMessage() for r in caplog.records] == [
        "int8-trt batch-1 latency is noisy (cv 0.25 > 0.10): lock the clocks and rerun; on a "
        "Jetson: sudo nvpmodel -m 0 && sudo jetson_clocks"]


def test_throughput_batches_are_capped_at_the_engine_profile():
    assert device_route.capped_batches((1, 8, 32), 32) == [1, 8, 32]
    assert device_route.capped_batches((1, 8, 32), 8) == [1, 8]
    assert device_route.capped_batches((1, 8, 32), 4) == [1, 4]


def test_the_real_module_is_not_a_stand_in_and_objects_are():
    assert device_route.stand_in_of(types.ModuleType("tensorrt")) is None
    assert device_route.stand_in_of(types.SimpleNamespace()) == \
        "an object that is not the tensorrt module"


def test_render_writes_markdown_and_html_from_the_json(site):
    device_route.run(site.options, trt=stand_in_tensorrt(site.cuda), cuda=site.cuda)
    out = site.tmp / "rendered"
    assert device_route.main(["render", str(site.tmp / "reports" / "report.json"),
                              "--out", str(out)]) == 0
    assert "stand-in" in (out / "report.md").read_text()
    assert "not TensorRT figures" in (out / "report.html").read_text()


# ---- python3 -m pipeline.device_route imports no torch, onnx, onnxruntime, matplotlib -------

PROBE = ('BLOCKED = ("torch", "torchvision", "onnx", "onnxruntime", "matplotlib")\n'
         + IMPORT_BLOCKER + r'''
import runpy, warnings

sys.path.insert(0, sys.argv[1])
import test_device_route as t
import pipeline.trt_runtime as runtime

cuda = t.StandInCuda()
sys.modules["tensorrt"] = t.stand_in_tensorrt(cuda)
runtime.open_cuda = lambda: cuda
sys.argv = ["pipeline.device_route"] + sys.argv[2:]
warnings.simplefilter("ignore", RuntimeWarning)
try:
    runpy.run_module("pipeline.device_route", run_name="__main__", alter_sys=True)
    status = 0
except SystemExit as exc:
    status = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("status=%s attempts=%s loaded=%s" % (status, attempts, loaded))
''')


def test_module_run_imports_no_torch_onnx_or_matplotlib(site):
    args = ["--engines", site.options.engines_dir, "--data", site.data, "--report-dir",
            str(site.tmp / "probe"), "--iterations", "3", "--warmup", "0",
            "--throughput-seconds", "0"]
    result = subprocess.run([sys.executable, "-c", PROBE, TESTS] + args, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last in ("status=0 attempts=[] loaded=[]", "status=1 attempts=[] loaded=[]"), \
        result.stderr[-2000:]
    report = json.load(open(str(site.tmp / "probe" / "report.json")))
    assert [r["name"] for r in report["results"]] == ["fp32-trt", "fp16-trt", "int8-trt"]


# ---- make device-check stops at once where there is no GPU or no TensorRT -------------------


def test_device_check_without_gpu_stops_at_once_and_makes_no_venv(tmp_path):
    venv = tmp_path / "venv"
    command = ["make", "-s", "-f", "docker/device.mk", "device-check", "VENV=" + str(venv),
               "NVIDIA_SMI=" + str(tmp_path / "no-nvidia-smi"),
               "TEGRA_RELEASE=" + str(tmp_path / "no-tegra-release")]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - started
    assert result.returncode != 0 and elapsed < 5.0
    said = [line for line in (result.stdout + result.stderr).splitlines()
            if not line.startswith("make")]
    assert len(said) == 1, said
    assert said[0].startswith("device-check needs an NVIDIA GPU (nvidia-smi not found")
    assert not venv.exists()
