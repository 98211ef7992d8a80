"""The benchmark stage end to end on a tiny model: the three reports and the gate exit status."""

import json
import subprocess
import sys


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
    assert set(by["int8-cpu"]["throughput"]) == {"1", "2"}
    assert by["int8-cpu"]["vs_baseline"]["discordant"] is not None
    assert "CPU" in report["device"] and "onnxruntime" in report["backend"]
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    assert failed == ["min_speedup"]
    assert (out / "report.md").read_text().count("FAIL") >= 1
    assert "data:image/png;base64" in (out / "report.html").read_text()
    assert "min_speedup" in proc.stdout  # the summary table printed
