"""Timing loops shared by the host benchmark and the device route."""

import numpy as np

from pipeline import timing


def test_throughput_fills_a_short_batch_and_runs_at_least_min_runs():
    seen = []
    rate = timing.throughput(lambda b: seen.append(len(b)), np.zeros((3, 2)), 8,
                             min_seconds=0.0, min_runs=4)
    assert seen == [8] * 5  # one untimed run, then min_runs timed ones
    assert rate > 0


def test_noisy_names_only_results_over_the_limit():
    results = [{"name": "a", "latency_ms": {"cv": 0.2}}, {"name": "b", "latency_ms": {"cv": 0.05}},
               {"name": "q", "latency_ms": None}]
    assert timing.noisy(results) == [("a", 0.2)]
    assert timing.noisy(results, limit=0.01) == [("a", 0.2), ("b", 0.05)]
