"""Calibration: TensorRT's entropy threshold, streaming, sanity checks, keyed cache."""

import json

import numpy as np
import pytest

from pipeline.calibrate import AbsHistogram, calibrate, check_input_range, entropy_threshold
from pipeline.errors import JetquantError
from pipeline.preprocess import Preprocess


def _reference_threshold(hist, edges, levels=128):
    """Straight loop over every candidate, as TensorRT's entropy calibration describes it."""
    hist = hist.astype(float)
    hist[0] = hist[1]
    best = None
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        level = np.floor(np.arange(i) * (levels / i)).astype(int)
        q = np.zeros(i)
        for lv in range(levels):
            members = level == lv
            nonzero = members & (hist[:i] > 0)
            if nonzero.any():
                q[nonzero] = hist[:i][members].sum() / nonzero.sum()
        p, q = p / p.sum(), q / q.sum()
        use = p > 0
        kl = float((p[use] * np.log(p[use] / np.maximum(q[use], 1e-6))).sum())
        if best is None or kl <= best[0]:
            best = (kl, i)
    return float(edges[best[1]])


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_entropy_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    data = np.abs(np.concatenate([rng.standard_normal(50000), rng.laplace(0, 3, 500)]))
    hist, edges = np.histogram(data, 512, range=(0, data.max()))
    assert entropy_threshold(hist, edges) == pytest.approx(_reference_threshold(hist, edges))


def test_entropy_clips_outliers():
    rng = np.random.default_rng(0)
    data = np.concatenate([np.abs(rng.standard_normal(200000)), [40.0]])
    hist, edges = np.histogram(data, 2048, range=(0, data.max()))
    threshold = entropy_threshold(hist, edges)
    assert 2.5 < threshold < 8.0  # far below the outlier at 40


def test_relu_zero_spike_does_not_collapse_the_range():
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.standard_normal(400000) * 2.0, 0.0)  # half exact zeros
    hist, edges = np.histogram(relu, 2048, range=(0, relu.max()))
    threshold = entropy_threshold(hist, edges)
    assert threshold > 0.4 * relu.max()  # not the smallest candidate (1/16 of the range)


def test_abs_histogram_streams_and_doubles_its_range():
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal(10000), rng.standard_normal(10000) * 3
    collector = AbsHistogram(bins=64)
    collector.collect({"t": [first]})
    collector.collect({"t": [second]})
    hist, width, lo, hi = collector.histogram_dict["t"]
    both = np.abs(np.concatenate([first, second]))
    assert len(hist) == 64 and hist.sum() == both.size
    assert width * 64 >= both.max() and lo == pytest.approx(min(first.min(), second.min()))
    reference, _ = np.histogram(both, 64, range=(0, width * 64))
    assert np.abs(hist - reference).sum() <= 4  # equal up to float rounding at bin edges


def test_input_range_check():
    spec = Preprocess()
    check_input_range({"min": -2.1, "max": 2.64}, spec)
    with pytest.raises(JetquantError, match="0..255"):
        check_input_range({"min": 0.0, "max": 255.0}, spec)
    with pytest.raises(JetquantError, match="no mean/std"):
        check_input_range({"min": 0.0, "max": 1.0}, spec)


def test_calibration_streams_and_caches(tiny, tmp_path, caplog):
    cache = str(tmp_path / "c.json")
    record = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], cache, batch_size=5)
    assert record["images"] == 24 and record["batches"] == 5  # last batch holds 4
    assert 2.0 < record["input"]["amax"] < 2.7
    assert "fewer than 200" in caplog.text
    assert all(r["amax"] > 0 for r in record["ranges"].values())
    again = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], cache, batch_size=5)
    assert again["ranges"] == record["ranges"]
    minmax = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(tmp_path / "m.json"),
                       algorithm="minmax", batch_size=8)
    name = record["input"]["name"]
    assert minmax["ranges"][name]["amax"] >= record["ranges"][name]["amax"] - 1e-6


def test_stale_cache_is_refused(tiny, tmp_path):
    cache = tmp_path / "c.json"
    calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=8)
    record = json.loads(cache.read_text())
    record["key"]["model_sha256"] = "0" * 64
    cache.write_text(json.dumps(record))
    with pytest.raises(JetquantError, match="other weights"):
        calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=8,
                  explicit=True)
    with pytest.raises(JetquantError, match="batch size"):
        calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=4,
                  explicit=True)
    fresh = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=8,
                      recalibrate=True, explicit=True)
    assert fresh["key"]["model_sha256"] != "0" * 64
    record["key"]["batch_size"] = 99
    cache.write_text(json.dumps(record))
    own = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=8)
    assert own["key"]["batch_size"] == 8  # the pipeline's own cache is recomputed, not refused


def test_constant_images_fail(tmp_path):
    from conftest import write_image

    from pipeline.data import load_dataset

    for c, label in enumerate(("a", "b")):
        for i in range(6):
            write_image(str(tmp_path / "d" / label / "{}.png".format(i)), value=10 * i + c + 1)
    dataset = load_dataset(str(tmp_path / "d"), check_images=False)
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 16, 16))
    onnx_path = str(tmp_path / "m.onnx")
    torch.onnx.export(model.eval(), (torch.zeros(1, 3, 16, 16),), onnx_path, dynamo=False,
                      opset_version=13, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}})
    with pytest.raises(JetquantError, match="constant"):
        calibrate(onnx_path, dataset, Preprocess(16, 16), str(tmp_path / "c.json"))


@pytest.mark.parametrize("field, value", [("amax", float("nan")), ("amax", -1.0),
                                          ("min", float("inf")), ("max", "x")])
def test_a_cache_with_impossible_ranges_is_refused(tiny, tmp_path, field, value):
    cache = tmp_path / "c.json"
    record = calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=8)
    name = record["input"]["name"]
    record["ranges"][name][field] = value
    cache.write_text(json.dumps(record))
    with pytest.raises(JetquantError, match="tensor {!r} has an impossible range".format(name)):
        calibrate(tiny["onnx"], tiny["dataset"], tiny["spec"], str(cache), batch_size=8,
                  explicit=True)
