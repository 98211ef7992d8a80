"""Timing loops shared by the host benchmark and the device route.

Standard library and numpy only; Python 3.6 compatible (the device route imports it).
"""

import time

import numpy as np

NOISY_CV = 0.10  # above this coefficient of variation, latency figures need a rerun


def throughput(run, images, batch_size, min_seconds=2.0, min_runs=3):
    """Images per second of ``run(batch)`` at one batch size.

    The batch is the first ``batch_size`` images (repeated when there are fewer). One
    untimed run goes first; then runs repeat until both ``min_runs`` and ``min_seconds``
    are reached.
    """
    batch = np.ascontiguousarray(images[:batch_size])
    if len(batch) < batch_size:
        batch = np.concatenate([batch] * (batch_size // max(1, len(batch)) + 1))[:batch_size]
    run(batch)
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        run(batch)
        runs += 1
    return runs * batch_size / (time.perf_counter() - start)


def noisy(results, limit=NOISY_CV):
    """[(name, cv)] of the results whose batch-1 latency varied by more than ``limit``."""
    out = []
    for result in results:
        cv = (result.get("latency_ms") or {}).get("cv")
        if cv is not None and cv > limit:
            out.append((result["name"], cv))
    return out
