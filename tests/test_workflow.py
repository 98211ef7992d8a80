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


def test_cache_for_other_weights_is_refused(tiny, tmp_path):
    engine(_opts(tiny, tmp_path))
    cache = tmp_path / "calibration" / "tiny-resnet18.entropy.json"
    cache = next((tmp_path / "calibration").glob("*.json")) if not cache.exists() else cache
    record = json.loads(cache.read_text())
    record["key"]["model_sha256"] = "f" * 64
    cache.write_text(json.dumps(record))
    with pytest.raises(JetquantError, match="other weights"):
        engine(_opts(tiny, tmp_path))
    engine(_opts(tiny, tmp_path, recalibrate=True))
