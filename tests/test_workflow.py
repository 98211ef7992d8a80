"""The stage chain behind `make engine`: every artifact, reuse on rerun, stale refusal."""

import json
import os

import pytest

from pipeline.errors import JetquantError
from pipeline.workflow import Options, engine


def _opts(tiny, out, **extra):
    return Options(data=tiny["manifest"], arch="resnet18", checkpoint=tiny["checkpoint"],
                   engines_dir=str(out / "engines"), calibration_dir=str(out / "calibration"),
                   **extra)


def test_engine_writes_every_artifact_and_reuses_them(tiny, tmp_path):
    first = engine(_opts(tiny, tmp_path))
    arts = first["artifacts"]
    for kind in ("fp32", "qdq", "cpu", "cache"):
        assert os.path.isfile(arts[kind]) and os.path.isfile(arts[kind] + ".json")
    assert first["pinned"] == ["/conv1/Conv"]
    side = json.load(open(arts["cpu"] + ".json"))
    assert side["pinned_layers"] == ["/conv1/Conv"]
    assert side["key"]["calib_set_sha256"] and side["key"]["model_sha256"]
    assert os.path.getsize(arts["cpu"]) <= 0.26 * os.path.getsize(arts["fp32"])
    assert set(first["accuracy"]) == {"fp32", "qdq", "cpu"}
    stamps = {k: os.stat(p).st_mtime_ns for k, p in arts.items()}
    second = engine(_opts(tiny, tmp_path))
    assert {k: os.stat(p).st_mtime_ns for k, p in second["artifacts"].items()} == stamps


def test_changed_artifact_bytes_are_rebuilt(tiny, tmp_path):
    arts = engine(_opts(tiny, tmp_path))["artifacts"]
    with open(arts["cpu"], "ab") as handle:
        handle.write(b"tampered")
    again = engine(_opts(tiny, tmp_path))["artifacts"]
    assert not open(again["cpu"], "rb").read().endswith(b"tampered")


def _tamper(cache):
    record = json.loads(cache.read_text())
    record["key"]["model_sha256"] = "f" * 64
    cache.write_text(json.dumps(record))


def test_given_cache_for_other_weights_is_refused(tiny, tmp_path):
    engine(_opts(tiny, tmp_path))
    cache = next((tmp_path / "calibration").glob("*.json"))
    _tamper(cache)
    with pytest.raises(JetquantError, match="other weights"):
        engine(_opts(tiny, tmp_path, calib_cache=str(cache)))
    engine(_opts(tiny, tmp_path, calib_cache=str(cache), recalibrate=True))


def test_own_stale_cache_is_recomputed_with_a_warning(tiny, tmp_path, caplog):
    engine(_opts(tiny, tmp_path))
    cache = next((tmp_path / "calibration").glob("*.json"))
    _tamper(cache)
    engine(_opts(tiny, tmp_path))
    assert "made for other weights" in caplog.text and "recalibrating" in caplog.text
    assert json.loads(cache.read_text())["key"]["model_sha256"] != "f" * 64


def test_tensorrt_cache_given_as_calibration_cache(tiny, tmp_path):
    arts = engine(_opts(tiny, tmp_path))["artifacts"]
    with pytest.raises(JetquantError, match="not a jetquant calibration cache"):
        engine(_opts(tiny, tmp_path, calib_cache=arts["cache"]))


def test_pinning_a_middle_block_keeps_its_weights_float(tiny, tmp_path):
    import onnx
    from onnx import numpy_helper

    arts = engine(_opts(tiny, tmp_path, pins=["/layer4/*"]))["artifacts"]
    model = onnx.load(arts["qdq"])
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    pinned = [n for n in model.graph.node if n.name.startswith("/layer4/") and n.op_type == "Conv"]
    assert pinned and all(inits[n.input[1]].dtype.name == "float16" for n in pinned)
    with pytest.raises(JetquantError, match="nothing would be INT8"):
        engine(_opts(tiny, tmp_path, pins=["*"]))
