"""The benchmark stage end to end on a tiny model: the three reports and the gate exit status."""

import json
import subprocess
import sys
from argparse import Namespace

from pipeline import benchmark


def test_benchmark_writes_reports_and_fails_a_tight_gate(tiny, tmp_path):
    out = tmp_path / "reports"
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "benchmark",
        "--data",
        tiny["manifest"],
        "--checkpoint",
        tiny["checkpoint"],
        "--arch",
        "resnet18",
        "--iterations",
        "5",
        "--warmup",
        "1",
        "--batches",
        "1,2",
        "--report-dir",
        str(out),
        "--min-speedup",
        "1000",
        "--max-top1-drop",
        "100",
        "--max-class-recall-drop",
        "100",
    ]
    proc = subprocess.run(
        args,
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "gate min_speedup failed" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == 1 and report["passed"] is False
    names = [r["name"] for r in report["results"]]
    assert names == ["fp32-torch", "fp32-ort", "int8-cpu", "int8-qdq"]
    by = {r["name"]: r for r in report["results"]}
    assert by["int8-cpu"]["latency_ms"]["p50"] > 0 and by["int8-qdq"]["latency_ms"] is None
    # 5 timed runs split over the default 3 interleaved rounds, pooled
    assert by["int8-cpu"]["latency_ms"]["n"] == 5 and by["int8-cpu"]["latency_ms"]["rounds"] == 3
    assert set(by["int8-cpu"]["throughput"]) == {"1", "2"}
    assert by["int8-cpu"]["vs_baseline"]["discordant"] is not None
    assert "CPU" in report["device"] and "onnxruntime" in report["backend"]
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    assert failed == ["min_speedup"]
    assert (out / "report.md").read_text().count("FAIL") >= 1
    assert "data:image/png;base64" in (out / "report.html").read_text()
    assert "min_speedup" in proc.stdout  # the summary table printed


def test_rounds_interleave_models_and_pool_their_samples(monkeypatch, tmp_path):
    calls = []

    def fake_worker(job, name):
        calls.append((name, job["iterations"], job["logits"], tuple(job["batches"])))
        samples = [float(len(calls))] * job["iterations"] if job["latency"] else None
        return {
            "backend": "recorded",
            "latency_ms": {"samples": samples} if samples else None,
            "throughput": None,
            "peak_rss_bytes": len(calls),
        }

    monkeypatch.setattr(benchmark, "_run_worker", fake_worker)
    models = [
        ("a", "fp32", "baseline", "onnx", "a.onnx"),
        ("b", "int8", "candidate", "onnx", "b.onnx"),
        ("q", "int8", "accuracy-only", "onnx", "q.onnx"),
    ]
    args = Namespace(rounds=3, iterations=7, warmup=0)
    merged = benchmark._measure_in_rounds(models, str(tmp_path), args, [1, 8])
    assert [c[0] for c in calls] == [
        "a (round 1/3)", "b (round 1/3)", "q (round 1/3)",
        "a (round 2/3)", "b (round 2/3)",
        "a (round 3/3)", "b (round 3/3)",
    ]  # fmt: skip
    assert [c[1] for c in calls if c[0].startswith("a")] == [3, 2, 2]
    assert [c[2] for c in calls] == [True, True, True, False, False, False, False]
    assert [c[3] for c in calls if c[0].startswith("b")] == [(1, 8), (), ()]
    assert merged["a"]["latency_ms"]["samples"] == [1.0] * 3 + [4.0] * 2 + [6.0] * 2
    assert merged["a"]["latency_ms"]["n"] == 7 and merged["a"]["latency_ms"]["rounds"] == 3
    assert merged["b"]["peak_rss_bytes"] == 7 and merged["q"]["latency_ms"] is None
