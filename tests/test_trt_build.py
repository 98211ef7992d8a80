"""pipeline.trt_build without TensorRT: naming, precision and route rules, pins, verification.

The network definition, builder, parser and engines are the stand-ins of
``tests/standins.py`` (StandInNetwork, StandInLayer, :func:`stand_in_tensorrt`);
they are not TensorRT.

The inspector JSON samples follow the engine inspector's documented kDETAILED
layout (TensorRT Developer Guide, "Engine Inspector": a "Layers" list of objects
with "Name" (fused names joined by " + "), "LayerType", and "Inputs"/"Outputs"
whose "Format/Datatype" strings read like "Thirty-two wide channel vectorized row
major Int8 format." or "Row major linear FP16 format"), plus the reformat layers
and "N/A due to dynamic shapes" formats seen in public inspector dumps.
"""

import json
import logging
import os
import types

import pytest
from standins import (
    FORMATS,
    LAYER_TYPES,
    StandInLayer,
    StandInNetwork,
    StandInTensor,
    stand_in_module,
    stand_in_tensorrt,
)
from standins import inspector_data as inspector
from standins import inspector_layer as layer

from pipeline import trt_build as build
from pipeline.artifacts import is_fresh, write_sidecar
from pipeline.errors import JetquantError
from pipeline.preprocess import Preprocess

TRT = stand_in_module("10.3.0", LayerType=vars(LAYER_TYPES))


def network(layers):
    """A stand-in network definition (not TensorRT) of ``layers`` fed by one tensor ``input``."""
    return StandInNetwork(layers, [StandInTensor("input")])


def resnet_like():
    """A constant-fed conv first in order, then cast -> stem conv, then two blocks."""
    t = LAYER_TYPES
    return network([
        StandInLayer("/aux/Conv", t.CONVOLUTION, ["aux_const"], ["aux"]),
        StandInLayer("/Cast", t.CAST, ["input"], ["input_fp16"]),
        StandInLayer("/conv1/Conv", t.CONVOLUTION, ["input_fp16"], ["c1"]),
        StandInLayer("/relu/Relu", t.ACTIVATION, ["c1"], ["r1"]),
        StandInLayer("/layer1/layer1.0/conv1/Conv", t.CONVOLUTION, ["r1"], ["l1c1"]),
        StandInLayer("/layer1/layer1.0/conv2/Conv", t.CONVOLUTION, ["l1c1"], ["l1c2"]),
        StandInLayer("/layer2/layer2.0/conv1/Conv", t.CONVOLUTION, ["l1c2"], ["l2c1"]),
    ])


def test_default_pin_is_the_first_conv_fed_by_the_input():
    assert build.first_input_conv(TRT, resnet_like()) == "/conv1/Conv"


def test_no_conv_fed_by_the_input_is_an_error():
    net = network([StandInLayer("/fc/Gemm", LAYER_TYPES.ELEMENTWISE, ["input"], ["out"])])
    with pytest.raises(JetquantError, match="no convolution is fed by the network input"):
        build.first_input_conv(TRT, net)


def test_pins_by_name_and_pattern_without_duplicates():
    pins = build.select_pins(TRT, resnet_like(), ["/layer1/*/conv?/Conv", "/conv1/Conv",
                                                  "/layer2/layer2.0/conv1/Conv"])
    assert pins == ["/conv1/Conv", "/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/conv2/Conv",
                    "/layer2/layer2.0/conv1/Conv"]
    assert build.select_pins(TRT, resnet_like(), ["/layer2/*"], pin_first_conv=False) == [
        "/layer2/layer2.0/conv1/Conv"]


def test_pattern_matching_nothing_is_an_error_listing_real_names():
    with pytest.raises(JetquantError) as info:
        build.select_pins(TRT, resnet_like(), ["/layer9/*"])
    assert "'/layer9/*' matches no layer" in str(info.value)
    assert "/conv1/Conv" in str(info.value)
    with pytest.raises(JetquantError, match="'Conv_0' matches no layer"):
        build.select_pins(TRT, resnet_like(), ["Conv_0"])


def test_engine_file_name_carries_model_precision_tensorrt_and_device(tmp_path):
    path = build.engine_path("engines", "neu-det-resnet50", "int8", "8.2.1.8",
                             "NVIDIA Jetson Nano Developer Kit", "0123456789abcdef" * 4)
    assert path == "engines/neu-det-resnet50.int8.trt8.2.1.jetson-nano-developer-kit.01234567" \
                   ".engine"
    other = build.engine_path("engines", "neu-det-resnet50", "int8", "8.2.1.8",
                              "NVIDIA Jetson Nano Developer Kit", "f" * 64)
    assert other != path
    assert build.device_slug("NVIDIA H200") == "h200"


def request(**changes):
    fields = dict(stem="m", calib_paths=("a.png",), preprocess=Preprocess(),
                  calib_set_sha256="c" * 64)
    fields.update(changes)
    return build.BuildRequest(**fields)


class Caps(object):
    def __init__(self, version, routes, weak=True):
        self.version, self.routes, self.weak_typing = version, routes, weak


def test_unchanged_key_reuses_the_engine_and_any_change_rebuilds(tmp_path):
    caps = Caps("10.3.0", ("implicit", "explicit"))
    key = build.engine_key(request(), caps, "int8", "implicit", "a" * 64, "Orin", ["/conv1/Conv"])
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    write_sidecar(str(engine), key)
    assert is_fresh(str(engine), build.engine_key(request(), caps, "int8", "implicit", "a" * 64,
                                                  "Orin", ["/conv1/Conv"]))
    for changed in (build.engine_key(request(calib_batch=16), caps, "int8", "implicit",
                                     "a" * 64, "Orin", ["/conv1/Conv"]),
                    build.engine_key(request(), caps, "int8", "implicit", "a" * 64, "Orin", []),
                    build.engine_key(request(max_batch=8), caps, "int8", "implicit", "a" * 64,
                                     "Orin", ["/conv1/Conv"]),
                    build.engine_key(request(), Caps("10.3.1", caps.routes), "int8",
                                     "implicit", "a" * 64, "Orin", ["/conv1/Conv"])):
        assert not is_fresh(str(engine), changed)


def test_nano_auto_gives_fp16_with_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="jetquant.build"):
        assert build.resolve_precision("auto", False, "NVIDIA Jetson Nano Developer Kit") == \
            "fp16"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["precision auto -> fp16: NVIDIA Jetson Nano Developer Kit has no fast INT8 "
                     "(TensorRT reports platform_has_fast_int8 = False)"]


def test_nano_forced_int8_is_refused_with_the_reason():
    with pytest.raises(JetquantError) as info:
        build.resolve_precision("int8", False, "NVIDIA Jetson Nano Developer Kit")
    assert "platform_has_fast_int8 = False" in str(info.value)
    assert "slower than FP16" in str(info.value) and "fp16 or auto" in str(info.value)


@pytest.mark.parametrize("precision,fast,expected", [
    ("auto", True, "int8"), ("auto", None, "int8"), ("int8", True, "int8"),
    ("int8", None, "int8"), ("fp16", False, "fp16"), ("fp32", False, "fp32")])
def test_precision_resolution(precision, fast, expected):
    assert build.resolve_precision(precision, fast, "Orin") == expected


def test_unknown_precision_is_refused():
    with pytest.raises(JetquantError, match="precision 'int4' is not one of"):
        build.resolve_precision("int4", True, "Orin")


def test_routes_follow_the_tensorrt():
    assert build.resolve_route(Caps("10.3.0", ("implicit", "explicit")), "int8", None) == \
        "implicit"
    assert build.resolve_route(Caps("11.4.0", ("explicit",), weak=False), "int8", None) == \
        "explicit"
    with pytest.raises(JetquantError, match="route implicit refused: TensorRT 11.4.0 has no "
                                            "calibrators .*removed in 11.0.*route explicit"):
        build.resolve_route(Caps("11.4.0", ("explicit",), weak=False), "int8", "implicit")


def test_contradictory_route_requests_are_refused():
    caps = Caps("10.3.0", ("implicit", "explicit"))
    with pytest.raises(JetquantError, match="precision fp16 takes no route"):
        build.resolve_route(caps, "fp16", "explicit")
    with pytest.raises(JetquantError, match="strongly typed.*FP16 ONNX"):
        build.resolve_route(Caps("11.4.0", ("explicit",), weak=False), "fp16", None)
    with pytest.raises(JetquantError, match="route 'qat' is not one of"):
        build.resolve_route(caps, "int8", "qat")


def test_missing_source_names_the_step(tmp_path):
    with pytest.raises(JetquantError, match="int8-qdq.onnx not found.*make quantize"):
        build.source_onnx(request(engines_dir=str(tmp_path)), "explicit")
    with pytest.raises(JetquantError, match="fp32.onnx not found.*make export"):
        build.source_onnx(request(engines_dir=str(tmp_path)), "implicit")


def test_bad_batch_profile_is_refused():
    with pytest.raises(JetquantError, match="opt_batch \\(64\\) <= max_batch \\(32\\)"):
        build._check_request(request(opt_batch=64))


INT8_FMT, FP16_FMT, FP32_FMT = FORMATS["INT8"], FORMATS["FP16"], FORMATS["FP32"]


GOOD = inspector(
    layer("Reformatting CopyNode for Input Tensor 0 to /conv1/Conv + /relu/Relu", [FP32_FMT],
          [FP16_FMT], kind="Reformat"),
    layer("/conv1/Conv + /relu/Relu", [FP16_FMT], [FP16_FMT]),
    layer("/layer1/layer1.0/conv1/Conv + /layer1/layer1.0/relu/Relu", [INT8_FMT], [INT8_FMT]),
    layer("/layer1/layer1.0/conv2/Conv", [INT8_FMT], [FP32_FMT]),
    layer("/conv1/Conv_1", [FP32_FMT], [FP32_FMT]),
)
QUANTIZED = ["/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/conv2/Conv"]


def test_engine_that_ran_as_pinned_passes():
    assert build.verify_precisions(GOOD, ["/conv1/Conv"], QUANTIZED) == []


def test_pinned_layer_that_ran_in_int8_fails_listing_what_ran():
    data = inspector(layer("/conv1/Conv + /relu/Relu", [INT8_FMT], [INT8_FMT]),
                     *GOOD["Layers"][2:4])
    assert build.verify_precisions(data, ["/conv1/Conv"], QUANTIZED) == [
        "/conv1/Conv (want FP16) ran in engine layer '/conv1/Conv + /relu/Relu': inputs "
        "['INT8'], outputs ['INT8']"]


def test_quantized_layer_that_ran_in_fp16_or_vanished_fails():
    data = inspector(GOOD["Layers"][1],
                     layer("/layer1/layer1.0/conv1/Conv", [FP16_FMT], [FP16_FMT]))
    problems = build.verify_precisions(data, ["/conv1/Conv"], QUANTIZED)
    assert problems == [
        "/layer1/layer1.0/conv1/Conv (want INT8) ran in engine layer "
        "'/layer1/layer1.0/conv1/Conv': inputs ['FP16'], outputs ['FP16']",
        "/layer1/layer1.0/conv2/Conv (want INT8): not found in the engine's layers"]


def test_name_match_is_by_whole_token_and_skips_reformats():
    found = build.matching_layers("/conv1/Conv", GOOD["Layers"])
    assert [r["Name"] for r in found] == ["/conv1/Conv + /relu/Relu"]


def test_dynamic_shape_formats_or_names_only_output_are_not_accepted():
    data = inspector(layer("/conv1/Conv", ["N/A due to dynamic shapes"], ["N/A due to dynamic "
                                                                           "shapes"]))
    problems = build.verify_precisions(data, ["/conv1/Conv"], [])
    assert problems and "unknown (N/A due to dynamic shapes)" in problems[0]
    with pytest.raises(JetquantError, match="profiling verbosity DETAILED"):
        build.verify_precisions({"Layers": ["/conv1/Conv + /relu/Relu"]}, ["/conv1/Conv"], [])


@pytest.mark.parametrize("fmt,precision", [
    (INT8_FMT, "INT8"), (FP16_FMT, "FP16"), ("Half", "FP16"), (FP32_FMT, "FP32"),
    ("Float", "FP32"), ("Row major linear BF16 format", "BF16"),
    ("Channel major FP16 format where channel % 8 == 0", "FP16")])
def test_tensor_format_strings(fmt, precision):
    assert build.tensor_precision(fmt) == precision


# --- whole builds against a stand-in TensorRT 10.3 (tests/standins.py; not TensorRT) ----------


def resnet_tensorrt(served=None, honour_pins=True):
    """The 10.3 TensorRT stand-in (not TensorRT) parsing every ONNX into :func:`resnet_like`.

    ``served`` collects the calibration batch sizes; ``honour_pins=False`` makes
    its builder ignore FP16 pins and casts, as a TensorRT that fused them away.
    """
    return stand_in_tensorrt(graph=lambda data: resnet_like().layers, classes=6, served=served,
                             honour_pins=honour_pins)


@pytest.fixture
def sources(tmp_path, monkeypatch):
    for name in ("m.fp32.onnx", "m.int8-qdq.onnx"):
        (tmp_path / name).write_bytes(name.encode())
    allocated = []

    def allocator():
        def allocate(nbytes):
            allocated.append(nbytes)
            return types.SimpleNamespace(ptr=4096, upload=lambda a: None, free=lambda: None)
        return allocate

    monkeypatch.setattr(build, "_device_allocator", allocator)
    monkeypatch.setattr(build, "detect_device", lambda cuda=None: "Orin")
    return tmp_path


def images(root, count):
    from conftest import write_image
    return tuple(write_image(str(root / "c{}.png".format(i)), seed=i) for i in range(count))


def test_explicit_build_writes_a_verified_engine_then_reuses_it(sources, caplog):
    # Strongly typed on 10.3: the pin comes from the Q/DQ graph's Cast, not from layer.precision.
    req = request(engines_dir=str(sources), precision="int8", route="explicit", device="Orin")
    path = build.build_engine(req, trt=resnet_tensorrt())
    assert os.path.basename(path).startswith("m.int8.trt10.3.0.orin.")
    side = json.load(open(path + ".json"))
    assert side["pinned_layers"] == ["/conv1/Conv"] and side["route"] == "explicit"
    assert side["quantized_layers"] == ["/aux/Conv", "/layer1/layer1.0/conv1/Conv",
                                        "/layer1/layer1.0/conv2/Conv",
                                        "/layer2/layer2.0/conv1/Conv"]
    with caplog.at_level(logging.INFO, logger="jetquant.build"):
        assert build.build_engine(req, trt=resnet_tensorrt()) == path
    assert any("reused" in r.getMessage() for r in caplog.records)


def test_implicit_build_calibrates_once_then_uses_the_cache(sources):
    req = request(engines_dir=str(sources), precision="int8", device="Orin",
                  calib_paths=images(sources, 20), calib_batch=8, calib_set_sha256="c" * 64)
    served = []
    build.build_engine(req, trt=resnet_tensorrt(served))
    assert served == [8, 8]
    cache = sources / "m.trt-calib.cache"
    assert cache.read_bytes().startswith(b"TRT-100300-EntropyCalibration2")
    build.build_engine(req._replace(max_batch=16), trt=resnet_tensorrt(served))
    assert served == [8, 8]
    with pytest.raises(JetquantError, match="is stale, made for other batch_size"):
        build.build_engine(req._replace(calib_batch=4), trt=resnet_tensorrt(served))


def test_ignored_pin_fails_the_build_and_saves_nothing(sources):
    req = request(engines_dir=str(sources), precision="int8", route="explicit", device="Orin")
    with pytest.raises(JetquantError) as info:
        build.build_engine(req, trt=resnet_tensorrt(honour_pins=False))
    assert "did not run as asked" in str(info.value)
    assert "/conv1/Conv (want FP16) ran in engine layer '/conv1/Conv': inputs ['INT8']" in \
        str(info.value)
    assert not [p for p in os.listdir(str(sources)) if p.endswith(".engine")]


def test_build_stage_entry_builds_every_precision(sources):
    from pipeline.data import Sample

    paths = images(sources, 8)
    dataset = types.SimpleNamespace(split=lambda name: [Sample(p, p, "a", "calib")
                                                        for p in paths])
    opts = types.SimpleNamespace(engines_dir=str(sources), route="auto", precision="auto",
                                 recalibrate=False)
    served = []
    record = {"preprocess": Preprocess().to_dict(), "classes": ["bad", "good"]}
    calib = {"key": {"calib_set_sha256": "c" * 64, "batch_size": 4, "algorithm": "entropy"}}
    built = build.build_engines({"fp32": str(sources / "m.fp32.onnx")}, record, calib,
                                ["/conv1/Conv"], dataset, opts, trt=resnet_tensorrt(served))
    assert sorted(built) == ["trt-fp16", "trt-fp32", "trt-int8"]
    assert json.load(open(built["trt-int8"] + ".json"))["classes"] == ["bad", "good"]
    assert served == [4, 4]
