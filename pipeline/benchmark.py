"""The ``benchmark`` stage: latency and accuracy of every precision, side by side, in one run.

Each model is measured in its own worker process (``python -m
pipeline.benchmark WORKER.json``) on the same preprocessed eval images, so one
model's memory and threads do not disturb the next, and its peak RSS is its
own. Batch-1 latency comes from ``iterations`` timed runs, cycling through the
eval images, split over ``rounds`` interleaved rounds (every model once per
round, each worker after ``warmup`` untimed runs); throughput from a sweep of
batch sizes. Every result names the backend and device that produced it.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import __version__
from .artifacts import sha256_file
from .compare import assemble, compare_pair
from .errors import JetquantError
from .log import get_logger
from .timing import noisy, throughput

log = get_logger("benchmark")

def cpu_models(artifacts, checkpoint, prefix="", roles=None):
    """(name, precision, role, runner kind, path) for every model measured on the CPU.

    Args:
        artifacts: {kind: path} from :func:`pipeline.workflow.engine`.
        checkpoint: the FP32 checkpoint (for the PyTorch eager reference), or None to skip it.
        prefix: put before every name (``teacher-``, ``student-``) when several models share
            one report.
        roles: {name: role} overrides of the default roles.
    """
    models = [
        ("fp32-torch", "fp32", "reference", "torch", checkpoint),
        ("fp32-ort", "fp32", "baseline", "onnx", artifacts["fp32"]),
        ("int8-cpu", "int8", "candidate", "onnx", artifacts["cpu"]),
        ("int8-qdq", "int8", "accuracy-only", "onnx", artifacts["qdq"]),
    ]
    roles = roles or {}
    return [
        (prefix + name, precision, roles.get(name, role), kind, path)
        for name, precision, role, kind, path in models
        if path is not None
    ]


def run_benchmark(opts, args):
    """Build (or reuse) every artifact, measure each model, write the reports.

    Returns:
        The report dict (``report["passed"]`` is False when a gate failed).
    """
    from .workflow import engine

    built = engine(opts)
    dataset = built["dataset"]
    models = cpu_models(built["artifacts"], built["checkpoint"])
    return measure(models, dataset, built["artifacts"]["fp32"], built["pinned"], args)


def measure(models, dataset, fp32_path, pinned, args, comparisons=None, extra_gates=None):
    """Measure models side by side on one device, apply the gates, write the reports.

    Args:
        models: tuples from :func:`cpu_models` (exactly one with role ``baseline``).
        dataset: the data set (its eval split is measured).
        fp32_path: an FP32 ONNX whose sidecar holds the preprocessing every model shares.
        pinned: pinned layer names, for the report.
        args: parsed CLI options (iterations, warmup, batches, gates, report_dir).
        comparisons: optional [(label, name_a, name_b)] pairs to compare with a paired test.
        extra_gates: optional ``f(report) -> [gate dicts]`` appended to the standard gates.
    """
    from . import gates
    from . import report as reporting
    from .device import describe_host
    from .evaluate import eval_arrays, session_settings
    from .preprocess import Preprocess

    with open(fp32_path + ".json") as handle:
        spec = Preprocess.from_dict(json.load(handle)["preprocess"])
    batches = list(args.batches)
    limits = gates.resolve_limits(
        {
            "max_top1_drop": args.max_top1_drop,
            "max_class_recall_drop": args.max_class_recall_drop,
            "min_speedup": args.min_speedup,
        },
        args.gates,
    )
    host = dict(describe_host(), versions=versions(), onnxruntime_session=session_settings())
    device = _device_label(host)
    with tempfile.TemporaryDirectory(prefix="jetquant-bench-") as tmp:
        images, labels = eval_arrays(dataset, spec)
        np.save(os.path.join(tmp, "images.npy"), images)
        del images
        measured = _measure_in_rounds(models, tmp, args, batches)
        results = [
            dict(
                measured[name],
                name=name,
                precision=precision,
                role=role,
                model_path=str(path),
                sha256=sha256_file(path),
                size_bytes=os.path.getsize(str(path)),
                device=device,
                pinned_layers=sidecar_pins(path),
            )
            for name, precision, role, kind, path in models
        ]
    report = assemble(results, labels, dataset, host, device, pinned)
    report["comparisons"] = [compare_pair(report, labels, *c) for c in comparisons or []]
    report["gates"] = gates.evaluate(report, limits) + (extra_gates(report) if extra_gates else [])
    report["passed"] = all(g["passed"] for g in report["gates"])
    _warn_noisy(report)
    reporting.write_reports(report, args.report_dir)
    for gate in report["gates"]:
        if not gate["passed"]:
            log.error(
                "gate %s failed: %s (limit %s)", gate["name"], gate.get("detail"), gate["limit"]
            )
    return report


def _measure_in_rounds(models, tmp, args, batches):
    """Time every model in ``args.rounds`` interleaved rounds; return {name: worker result}.

    Round r runs each model's worker in turn with its share of ``args.iterations``,
    so a slow drift of the machine (another tenant, thermal state) falls on every
    model alike instead of on whichever was measured last. Logits, throughput
    and the accuracy-only models are measured once, in the first round.
    """
    rounds = args.rounds  # the CLI refuses more rounds than iterations
    shares = [args.iterations // rounds + (r < args.iterations % rounds) for r in range(rounds)]
    parts = {name: [] for name, *_ in models}
    for r, share in enumerate(shares):
        for name, _, role, kind, path in models:
            timed = role != "accuracy-only"
            if r and not timed:
                continue
            job = {
                "kind": kind,
                "path": str(path),
                "images": os.path.join(tmp, "images.npy"),
                "out": os.path.join(tmp, "{}.round{}".format(name, r)),
                "iterations": share,
                "warmup": args.warmup,
                "batches": batches if timed and r == 0 else [],
                "latency": timed,
                "logits": r == 0,
                "threads": os.cpu_count() or 1,
            }
            parts[name].append(_run_worker(job, "{} (round {}/{})".format(name, r + 1, rounds)))
    return {name: _merge_rounds(found) for name, found in parts.items()}


def _merge_rounds(parts):
    """One result from a model's rounds: all latency samples pooled, the rest from round 1."""
    from . import stats

    merged = dict(parts[0])
    merged["peak_rss_bytes"] = max(p["peak_rss_bytes"] for p in parts)
    if merged["latency_ms"] is not None:
        samples = [x for p in parts for x in p["latency_ms"]["samples"]]
        summary = stats.latency_summary(samples)
        merged["latency_ms"] = dict(summary, samples=samples, rounds=len(parts))
    return merged


def _warn_noisy(report):
    for name, cv in noisy(report["results"]):
        log.warning(
            "%s: batch-1 latency is noisy (coefficient of variation %.0f %%): stop "
            "other work on this machine and rerun%s",
            name,
            100 * cv,
            "; on a Jetson: sudo nvpmodel -m 0 && sudo jetson_clocks"
            if report["environment"].get("l4t")
            else "",
        )


def sidecar_pins(path):
    """Pinned layers recorded in an artifact's sidecar, or []."""
    side = str(path) + ".json"
    if not os.path.isfile(side):
        return []
    with open(side) as handle:
        return json.load(handle).get("pinned_layers", [])


def _device_label(host):
    cpu = host.get("cpu") or {}
    flags = [
        f
        for f in ("avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni", "avx2")
        if f in (cpu.get("flags") or [])
    ]
    return "{} CPU ({}), {} cores ({})".format(
        cpu.get("model") or "unknown",
        host.get("machine"),
        cpu.get("count") or os.cpu_count(),
        ", ".join(flags) or "no VNNI",
    )


def versions():
    """Versions of everything that produced the figures."""
    import platform

    import onnxruntime
    import torch

    from .build import tensorrt_available

    return {
        "jetquant": __version__,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "tensorrt": tensorrt_available(),
    }


def _run_worker(job, name):
    job_path = job["out"] + ".job.json"
    with open(job_path, "w") as handle:
        json.dump(job, handle)
    log.info("measuring %s (%s) ...", name, os.path.basename(job["path"]))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.benchmark", job_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    if proc.returncode != 0:
        raise JetquantError(
            "benchmark worker for {} failed:\n{}".format(name, proc.stderr.strip()[-2000:])
        )
    with open(job["out"] + ".result.json") as handle:
        result = json.load(handle)
    if job["logits"]:
        result["logits"] = np.load(job["out"] + ".logits.npy")
    log.info("%s done in %.0f s", name, time.perf_counter() - started)
    return result


# ---- worker side -------------------------------------------------------------------------


def _worker(job_path):
    from . import stats
    from .evaluate import logits_of, ort_runner, torch_runner

    with open(job_path) as handle:
        job = json.load(handle)
    images = np.load(job["images"], mmap_mode="r")
    if job["kind"] == "torch":
        import torch

        run = torch_runner(job["path"], job["threads"])
        backend = "PyTorch {} eager (CPU)".format(torch.__version__)
    else:
        import onnxruntime as ort

        run = ort_runner(job["path"], job["threads"])
        backend = "onnxruntime {} (CPUExecutionProvider)".format(ort.__version__)
    result = {"backend": backend, "latency_ms": None, "throughput": None, "latency_split_ms": None}
    if job["latency"]:
        samples = _latency(run, images, job["warmup"], job["iterations"])
        result["latency_ms"] = dict(stats.latency_summary(samples), samples=samples)
        result["throughput"] = {str(b): throughput(run, images, b) for b in job["batches"]}
    if job["logits"]:
        np.save(job["out"] + ".logits.npy", logits_of(run, images))
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(job["out"] + ".result.json", "w") as handle:
        json.dump(result, handle)


def _latency(run, images, warmup, iterations):
    n = len(images)
    for i in range(warmup):
        run(np.ascontiguousarray(images[i % n : i % n + 1]))
    samples = []
    for i in range(iterations):
        batch = np.ascontiguousarray(images[i % n : i % n + 1])
        start = time.perf_counter()
        run(batch)
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples



if __name__ == "__main__":
    _worker(sys.argv[1])
