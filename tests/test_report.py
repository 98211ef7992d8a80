"""Tests for pipeline.report: the three report files and the CLI summary."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline import gates, report, stats
from pipeline.errors import JetquantError

CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
ORT = "onnxruntime 1.32.0 (CPUExecutionProvider)"
CPU = "AMD EPYC 9xxx, 2 cores (avx512_vnni, avx512_bf16)"


def _change(rng, pred, labels, worse, better):
    """Copy ``pred``, turning ``worse`` right answers wrong and ``better`` wrong answers right."""
    out = pred.copy()
    for i in rng.choice(np.flatnonzero(pred == labels), worse, replace=False):
        out[i] = (labels[i] + 1 + rng.integers(len(CLASSES) - 1)) % len(CLASSES)
    if better:
        fixed = rng.choice(np.flatnonzero(pred != labels), better, replace=False)
        out[fixed] = labels[fixed]
    return out


def _latency(rng, p50):
    samples = (p50 * rng.lognormal(0.0, 0.04, 300)).round(3).tolist()
    summary = stats.latency_summary(samples)
    summary["samples"] = samples
    return summary


def _result(name, precision, role, pred, labels, base_pred, latency, size, rng):
    pc = stats.per_class(pred, labels, len(CLASSES))
    result = {
        "name": name,
        "precision": precision,
        "backend": ORT,
        "device": CPU,
        "role": role,
        "model_path": "engines/resnet50.{}.onnx".format(name.split("-")[0]),
        "sha256": "ab" * 32,
        "size_bytes": size,
        "size_ratio": size / 94_000_000,
        "pinned_layers": ["/conv1/Conv"] if precision == "int8" else [],
        "latency_ms": None if latency is None else _latency(rng, latency),
        "latency_split_ms": None,
        "throughput": None
        if latency is None
        else {"1": 1000 / latency, "8": 1400 / latency, "32": 1600 / latency},
        "peak_rss_bytes": 410_000_000,
        "top1": stats.top1(pred, labels),
        "per_class_recall": dict(zip(CLASSES, pc["recall"])),
        "per_class_precision": dict(zip(CLASSES, pc["precision"])),
        "confusion": stats.confusion(pred, labels, len(CLASSES)),
        "vs_baseline": None,
    }
    if base_pred is not None:
        result["vs_baseline"] = _versus(pred, base_pred, labels, result)
    return result


def _versus(pred, base_pred, labels, result):
    diff = stats.paired_accuracy_diff(pred == labels, base_pred == labels)
    base_pc = stats.per_class(base_pred, labels, len(CLASSES))
    return {
        "agreement": stats.agreement(pred, base_pred),
        "logit_cosine": 0.9987,
        "max_abs_diff": 0.61,
        "top1_diff": diff["diff"],
        "top1_diff_ci95": diff["ci"],
        "mcnemar_p": diff["mcnemar_p"],
        "discordant": diff["discordant"],
        "recall_drop": {
            c: b - m
            for c, b, m in zip(CLASSES, base_pc["recall"], result["per_class_recall"].values())
        },
        "speedup_p50": None,
    }


def make_report(limits=None):
    """A realistic NEU-DET run on the CPU: 600 images, FP32 96.3 %, INT8 two images worse."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(len(CLASSES)), 100)
    fp32 = _change(rng, labels, labels, 22, 0)
    int8 = _change(rng, fp32, labels, 5, 3)
    qdq = _change(rng, fp32, labels, 3, 0)
    results = [
        _result("fp32-torch", "fp32", "reference", fp32, labels, fp32, None, 94_400_000, rng),
        _result("fp32-ort", "fp32", "baseline", fp32, labels, None, 41.7, 94_000_000, rng),
        _result("int8-cpu", "int8", "candidate", int8, labels, fp32, 14.9, 24_600_000, rng),
        _result("int8-qdq", "int8", "accuracy-only", qdq, labels, fp32, None, 25_100_000, rng),
    ]
    out = {
        "schema": 1,
        "created": "2026-12-04T15:00:00Z",
        "tool": {"name": "jetquant", "version": "0.1.0"},
        "backend": ORT,
        "device": CPU,
        "environment": {
            "python": "3.11.7",
            "onnxruntime": "1.32.0",
            "torch": "2.14.1",
            "tensorrt": None,
            "jetpack": None,
            "l4t": None,
            "power_mode": None,
            "cpu_flags": ["avx2", "avx512_vnni", "avx512_bf16"],
        },
        "dataset": {
            "name": "neu-det",
            "source": "data/neu-det",
            "sha256": "cd" * 32,
            "split": "eval",
            "images": 600,
            "classes": CLASSES,
        },
        "baseline": "fp32-ort",
        "results": results,
    }
    out["gates"] = gates.evaluate(out, gates.resolve_limits(limits))
    out["passed"] = gates.all_passed(out["gates"])
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    data = make_report()
    folder = tmp_path_factory.mktemp("reports")
    paths = report.write_reports(data, str(folder))
    texts = {kind: Path(path).read_text(encoding="utf-8") for kind, path in paths.items()}
    return data, paths, texts


def test_synthetic_report_is_realistic():
    data = make_report()
    by = {r["name"]: r for r in data["results"]}
    assert by["fp32-ort"]["top1"] == pytest.approx(578 / 600)
    assert by["int8-cpu"]["top1"] == pytest.approx(576 / 600)
    assert by["int8-cpu"]["vs_baseline"]["discordant"] == [3, 5]
    assert data["passed"] is True


def test_three_files_and_json_round_trip(written):
    data, paths, texts = written
    assert sorted(paths) == ["html", "json", "md"]
    loaded = json.loads(texts["json"])
    assert loaded == json.loads(json.dumps(data))
    report.validate_schema(loaded)


def test_html_is_self_contained_with_one_image_per_plot(written):
    data, _, texts = written
    page = texts["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "url(" not in page
    # latency box plot + accuracy bars + one confusion matrix per result
    expected = 2 + len(data["results"])
    assert page.count('src="data:image/png;base64,') == expected
    for blob in re.findall(r'base64,([A-Za-z0-9+/=]+)"', page):
        assert blob.startswith("iVBORw0KGgo")  # PNG signature


def test_html_banner_gates_and_environment(written):
    page = written[2]["html"]
    assert "Measured with onnxruntime 1.32.0 (CPUExecutionProvider) on AMD EPYC" in page
    assert "not Jetson figures" in page
    assert page.count('<tr class="pass">') == 3
    assert "avx512_vnni" in page and "power_mode" in page


def test_markdown_has_gates_and_the_ci_sentence(written):
    data, _, texts = written
    md = texts["md"]
    vs = data["results"][2]["vs_baseline"]
    lo, hi = (round(v * 100, 1) for v in vs["top1_diff_ci95"])
    sentence = (
        "int8-cpu (INT8) top-1 is 0.3 points below the FP32 baseline fp32-ort "
        "(95 % CI {:+.1f} to {:+.1f}; McNemar exact p = 0.73).".format(lo, hi)
    )
    assert sentence in md
    assert lo < -0.3 < hi
    assert "| PASS | max_top1_drop | int8-cpu | 1.00 pts | 0.33 pts |" in md
    assert "| PASS | min_speedup | int8-cpu | 2.50x |" in md
    assert "Overall: **PASS**" in md
    base = data["results"][1]
    assert (
        "| fp32-ort | baseline | FP32 | {:.2f} | {:.2f} | {:.2f} |".format(
            base["latency_ms"]["p50"], base["latency_ms"]["p90"], base["latency_ms"]["p99"]
        )
        in md
    )


def test_tighter_limits_fail_and_show_in_reports(tmp_path):
    data = make_report({"max_top1_drop": 0.1, "min_speedup": 4.0})
    assert data["passed"] is False
    paths = report.write_reports(data, str(tmp_path))
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert "| FAIL | max_top1_drop | int8-cpu | 0.10 pts | 0.33 pts |" in md
    assert "| FAIL | min_speedup | int8-cpu | 4.00x |" in md
    assert "Overall: **FAIL**" in md
    page = Path(paths["html"]).read_text(encoding="utf-8")
    assert page.count('<tr class="fail">') == 2


def test_comparison_sentence_wording():
    base = {"name": "fp32-ort", "precision": "fp32", "top1": 0.963}
    cand = {
        "name": "int8-cpu",
        "precision": "int8",
        "top1": 0.960,
        "vs_baseline": {
            "top1_diff": -0.003,
            "top1_diff_ci95": [-0.0101, 0.0042],
            "mcnemar_p": 0.6171,
        },
    }
    assert report.comparison_sentence(cand, base) == (
        "int8-cpu (INT8) top-1 is 0.3 points below the FP32 baseline fp32-ort "
        "(95 % CI -1.0 to +0.4; McNemar exact p = 0.62)."
    )
    cand["vs_baseline"].update(top1_diff=0.0, mcnemar_p=1.0)
    assert "top-1 equals the top-1 of the FP32 baseline" in report.comparison_sentence(cand, base)
    cand["vs_baseline"].update(top1_diff=0.012, mcnemar_p=0.0004)
    text = report.comparison_sentence(cand, base)
    assert "is 1.2 points above" in text and text.endswith("McNemar exact p < 0.001).")


def test_summary_table_columns_line_up():
    text = report.summary_table(make_report())
    lines = text.splitlines()
    table = lines[2 : 2 + 2 + 4]
    assert table[0].startswith("result") and set(table[1]) <= {"-", " "}
    # every cell ends where its dashes end (numbers are right-aligned, names left-aligned)
    spans = [m.span() for m in re.finditer(r"-+", table[1])]
    for line in table[2:]:
        assert line[: spans[0][1]].startswith(line.split()[0])
        for start, end in spans[2:]:
            assert line[end - 1] != " " and line[start - 1] == " "
    assert "int8-cpu" in text and "overall: PASS" in text
    assert re.search(r"fp32-ort\s+FP32\s+4\d\.\d\d", text)


def test_validate_schema_names_the_missing_key():
    data = make_report()
    del data["results"][2]["top1"]
    with pytest.raises(JetquantError, match=r"results\[2\] lacks required key 'top1'"):
        report.validate_schema(data)
    data = make_report()
    del data["dataset"]
    with pytest.raises(JetquantError, match="'dataset'"):
        report.validate_schema(data)


def test_validate_schema_refuses_inconsistent_reports():
    data = make_report()
    data["baseline"] = "fp32-trt"
    with pytest.raises(JetquantError, match="baseline 'fp32-trt'"):
        report.validate_schema(data)
    data = make_report({"max_top1_drop": 0.1})
    data["passed"] = True
    with pytest.raises(JetquantError, match="passed"):
        report.validate_schema(data)
    data = make_report()
    data["results"][0]["role"] = "golden"
    with pytest.raises(JetquantError, match="role 'golden'"):
        report.validate_schema(data)


def test_banner_names_what_produced_the_figures():
    data = make_report()
    jetson = copy.deepcopy(data)
    jetson["backend"] = "TensorRT 8.2.1"
    jetson["environment"].update(jetpack="4.6.1", l4t="R32.7.1", power_mode="MAXN")
    assert report.banner(jetson).endswith(
        "Jetson figures (JetPack 4.6.1, L4T R32.7.1, power mode MAXN)"
    )
    stand_in = copy.deepcopy(data)
    stand_in["backend"] = "TensorRT stand-in (onnxruntime)"
    assert "not TensorRT figures" in report.banner(stand_in)
    assert report.banner(data).endswith(": not Jetson figures")
