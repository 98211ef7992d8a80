"""Comparing results measured on the same eval images: accuracy, agreement, paired tests.

Shared by the host benchmark and the device route, so both write the same
report structure. Numpy and the standard library only; Python 3.6 compatible.
"""

import time

import numpy as np

from . import __version__


def assemble(results, labels, dataset, host, device, pinned):
    """Turn worker measurements into the report.json structure (schema 1)."""
    from . import stats

    classes = dataset.classes
    logits = {r["name"]: r.pop("logits") for r in results}
    for r in results:
        pred = logits[r["name"]].argmax(1)
        r["predictions"] = pred.tolist()
        per = stats.per_class(pred, labels, len(classes))
        r["top1"] = stats.top1(pred, labels)
        r["per_class_recall"] = dict(zip(classes, per["recall"]))
        r["per_class_precision"] = dict(zip(classes, per["precision"]))
        r["confusion"] = np.asarray(stats.confusion(pred, labels, len(classes))).tolist()
    base = next(r for r in results if r["role"] == "baseline")
    for r in results:
        r["size_ratio"] = r["size_bytes"] / float(base["size_bytes"])
        r["vs_baseline"] = (
            None if r is base else _versus(r, logits[r["name"]], logits[base["name"]], labels, base)
        )
    return {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tool": {"name": "jetquant", "version": __version__},
        "backend": base["backend"],
        "device": device,
        "environment": host,
        "baseline": base["name"],
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "sha256": dataset.digest(),
            "split": "eval",
            "images": int(len(labels)),
            "classes": classes,
        },
        "pinned_layers": list(pinned),
        "results": results,
    }


def _versus(r, logits, base_logits, labels, base):
    from . import stats

    pred, base_pred = logits.argmax(1), base_logits.argmax(1)
    diff = stats.paired_accuracy_diff(pred == labels, base_pred == labels)
    recall_drop = {
        c: None
        if r["per_class_recall"][c] is None or base["per_class_recall"][c] is None
        else base["per_class_recall"][c] - r["per_class_recall"][c]
        for c in r["per_class_recall"]
    }
    speedup = None
    if r.get("latency_ms") and base.get("latency_ms"):
        speedup = base["latency_ms"]["p50"] / r["latency_ms"]["p50"]
    return {
        "agreement": stats.agreement(pred, base_pred),
        "logit_cosine": stats.logit_cosine(logits, base_logits),
        "max_abs_diff": stats.max_abs_diff(logits, base_logits),
        "top1_diff": diff["diff"],
        "top1_diff_ci95": diff["ci"],
        "mcnemar_p": diff["mcnemar_p"],
        "discordant": diff["discordant"],
        "recall_drop": recall_drop,
        "speedup_p50": speedup,
    }


def compare_pair(report, labels, label, name_a, name_b):
    """Paired accuracy difference a - b (95 % CI, exact McNemar) and the p50 speed ratio."""
    from . import stats

    by = {r["name"]: r for r in report["results"]}
    a, b = by[name_a], by[name_b]
    diff = stats.paired_accuracy_diff(
        np.asarray(a["predictions"]) == labels, np.asarray(b["predictions"]) == labels
    )
    speed = None
    if a.get("latency_ms") and b.get("latency_ms"):
        speed = b["latency_ms"]["p50"] / a["latency_ms"]["p50"]
    return {
        "label": label,
        "a": name_a,
        "b": name_b,
        "top1_a": a["top1"],
        "top1_b": b["top1"],
        "top1_diff": diff["diff"],
        "top1_diff_ci95": diff["ci"],
        "mcnemar_p": diff["mcnemar_p"],
        "discordant": diff["discordant"],
        "speedup_p50": speed,
    }
