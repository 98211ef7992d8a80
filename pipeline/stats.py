"""Statistics behind every number in a jetquant report.

Latency summaries, top-1 accuracy, per-class precision and recall, confusion
matrices, model-to-model agreement, and the paired comparison of two models'
accuracy on the same images (Newcombe's confidence interval and the exact
McNemar test).

Conventions: labels and predictions are integer class indices; accuracies and
recalls are fractions in [0, 1] (the report turns them into percentage points);
latencies are milliseconds.

Only numpy and math are used, and the module stays Python 3.6 compatible: the
accuracy runner on a Jetson Nano imports it.
"""

import math

import numpy as np

from .errors import JetquantError


def latency_summary(samples_ms):
    """Summarise latency samples, one per timed inference.

    p50 is the typical latency; p90 and p99 are what one request in ten or in
    a hundred waits at least, which is what a line-rate inspection camera must
    budget for. ``std`` is the sample standard deviation, and ``cv`` (std / mean)
    says how noisy the run was: above about 0.1 the clocks or other load were
    probably varying, so rerun before trusting small differences.

    Args:
        samples_ms: latencies in milliseconds (any sequence of numbers).

    Returns:
        dict with ``min``, ``mean``, ``p50``, ``p90``, ``p99``, ``std``, ``cv`` (floats)
        and ``n`` (int). Percentiles interpolate linearly between samples.

    Raises:
        JetquantError: no samples, or a sample that is negative, NaN or infinite.
    """
    values = np.asarray(samples_ms, dtype=np.float64).ravel()
    if values.size == 0:
        raise JetquantError("latency samples are empty; time at least one inference")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise JetquantError("latency samples must be finite and non-negative milliseconds")

    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return {
        "min": float(values.min()),
        "mean": mean,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "std": std,
        "cv": std / mean if mean > 0 else 0.0,
        "n": int(values.size),
    }


def _labels_pair(pred, labels, what="predictions"):
    """Return two equal-length 1-D int64 arrays, or raise naming the mismatch."""
    a = np.asarray(pred).ravel()
    b = np.asarray(labels).ravel()
    if a.size != b.size:
        raise JetquantError(
            f"{what} and labels differ in length ({a.size} vs {b.size}); score the same images"
        )
    if a.size == 0:
        raise JetquantError(f"no {what} to score; the evaluation split is empty")
    return a.astype(np.int64), b.astype(np.int64)


def _check_range(values, n_classes, what):
    """Raise when a class index falls outside 0..n_classes-1."""
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        low, high = int(values.min()), int(values.max())
        raise JetquantError(
            f"{what} hold class index {low}..{high} but there are only {n_classes} classes; "
            "check the model's output size against the dataset's classes"
        )


def top1(pred, labels):
    """Top-1 accuracy: the fraction of images whose predicted class is the true one.

    Args:
        pred: predicted class index per image.
        labels: true class index per image.

    Returns:
        float in [0, 1].
    """
    a, b = _labels_pair(pred, labels)
    return float(np.mean(a == b))


def confusion(pred, labels, n):
    """Confusion matrix: row = true class, column = predicted class.

    Cell [i][j] counts images of class i that the model called class j, so the
    diagonal holds the correct calls and row i off the diagonal holds the
    defects of class i that were missed or mislabelled.

    Args:
        pred: predicted class index per image.
        labels: true class index per image.
        n: number of classes.

    Returns:
        list of n lists of n ints (JSON-ready).
    """
    a, b = _labels_pair(pred, labels)
    _check_range(a, n, "predictions")
    _check_range(b, n, "labels")
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (b, a), 1)
    return matrix.tolist()


def per_class(pred, labels, n_classes):
    """Per-class precision, recall and support.

    Recall of a class is the fraction of its images the model found, so
    1 - recall is the missed-defect rate for that class: the number a QA
    engineer watches. Precision is the fraction of the model's calls of that
    class that were right (1 - precision is the false-alarm share). Support is
    how many images of the class were scored; with small support one image
    moves recall a lot.

    Args:
        pred: predicted class index per image.
        labels: true class index per image.
        n_classes: number of classes.

    Returns:
        dict of lists indexed by class: ``precision`` and ``recall`` (float, or
        None where undefined: no predictions of / no images of that class) and
        ``support`` (int).
    """
    matrix = np.asarray(confusion(pred, labels, n_classes), dtype=np.float64)
    hits = np.diag(matrix)
    called = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    return {
        "precision": [float(h / c) if c else None for h, c in zip(hits, called)],
        "recall": [float(h / s) if s else None for h, s in zip(hits, support)],
        "support": [int(s) for s in support],
    }


def agreement(pred_a, pred_b):
    """Fraction of images on which two models predict the same class.

    Unlike a top-1 difference, this catches a quantised model that trades
    errors: it can keep the same accuracy while getting different images wrong.

    Args:
        pred_a: predicted class index per image, first model.
        pred_b: predicted class index per image, second model.

    Returns:
        float in [0, 1].
    """
    a, b = _labels_pair(pred_a, pred_b, "predictions of the two models")
    return float(np.mean(a == b))


def _logit_pair(a, b):
    """Return two equal-shape float64 2-D arrays (images x classes)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise JetquantError(
            f"logits differ in shape ({x.shape} vs {y.shape}); compare outputs for the same images"
        )
    if x.size == 0:
        raise JetquantError("no logits to compare")
    if x.ndim < 2:
        return x.reshape(1, -1), y.reshape(1, -1)
    return x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)


def logit_cosine(a, b):
    """Mean per-image cosine similarity of two models' logits.

    1.0 means the outputs point the same way for every image; INT8 against
    FP32 is typically above 0.99. A low value with unchanged top-1 warns that
    the scores (and any threshold on them) moved even though the arg-max held.
    An image whose two logit vectors are both zero counts as 1, one zero
    vector against a non-zero one as 0.

    Args:
        a: logits, shape (images, classes).
        b: logits of the other model, same shape.

    Returns:
        float in [-1, 1].
    """
    x, y = _logit_pair(a, b)
    nx = np.linalg.norm(x, axis=1)
    ny = np.linalg.norm(y, axis=1)
    dot = np.sum(x * y, axis=1)
    both_zero = (nx == 0) & (ny == 0)
    denom = np.where(nx * ny > 0, nx * ny, 1.0)
    cos = np.where(nx * ny > 0, dot / denom, 0.0)
    cos = np.where(both_zero, 1.0, cos)
    return float(np.mean(np.clip(cos, -1.0, 1.0)))


def max_abs_diff(a, b):
    """Largest absolute difference between two models' logits over all images and classes.

    Args:
        a: logits, shape (images, classes).
        b: logits of the other model, same shape.

    Returns:
        float >= 0, in logit units.
    """
    x, y = _logit_pair(a, b)
    return float(np.max(np.abs(x - y)))


def normal_quantile(p):
    """Return z with P(Z <= z) = p for a standard normal Z (bisection on erf).

    Args:
        p: probability strictly between 0 and 1.
    """
    if not 0.0 < p < 1.0:
        raise JetquantError(f"probability {p} must lie strictly between 0 and 1")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def wilson_interval(successes, n, level=0.95):
    """Wilson score interval for one proportion (Wilson 1927; Newcombe 1998a, method 3).

    Args:
        successes: number of successes.
        n: number of trials (> 0).
        level: confidence level.

    Returns:
        (lower, upper) as fractions.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise JetquantError("Wilson interval needs 0 <= successes <= n and n > 0")
    z = normal_quantile(0.5 + level / 2.0)
    p = successes / float(n)
    centre = 2 * n * p + z * z
    spread = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    denom = 2 * (n + z * z)
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


def _newcombe_phi(a, b, c, d):
    """Newcombe's continuity-adjusted correlation between the two paired proportions."""
    denom = float(a + b) * (c + d) * (a + c) * (b + d)
    if denom == 0:
        return 0.0
    cross = float(a) * d - float(b) * c
    n = a + b + c + d
    if cross > 0:
        cross = max(cross - n / 2.0, 0.0)
    return cross / math.sqrt(denom)


def newcombe_paired_ci(a, b, c, d, level=0.95):
    """Newcombe's method 10 interval for the difference of two paired proportions.

    The table is a = both right, b = first right only, c = second right only,
    d = both wrong; the difference is (b - c) / n. Each marginal proportion gets
    a Wilson score interval, and the two are combined with the correlation
    phi, adjusted as Newcombe prescribes: when ad > bc, ad - bc is reduced by n/2
    (not below 0). That adjustment keeps the interval from collapsing to zero
    width when there are no discordant pairs.

    Source: Newcombe RG, Improved confidence intervals for the difference between
    binomial proportions based on paired data, Stat Med 1998; 17:2635-2650.

    Args:
        a, b, c, d: the paired 2x2 counts.
        level: confidence level.

    Returns:
        (lower, upper) as fractions, clipped to [-1, 1].
    """
    n = a + b + c + d
    if n <= 0 or min(a, b, c, d) < 0:
        raise JetquantError("paired table needs non-negative counts and at least one pair")
    p1 = (a + b) / float(n)
    p2 = (a + c) / float(n)
    l1, u1 = wilson_interval(a + b, n, level)
    l2, u2 = wilson_interval(a + c, n, level)
    phi = _newcombe_phi(a, b, c, d)
    delta = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    epsilon = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    diff = p1 - p2
    lower = diff - math.sqrt(max(delta, 0.0))
    upper = diff + math.sqrt(max(epsilon, 0.0))
    return max(-1.0, lower), min(1.0, upper)


def mcnemar_exact(b, c):
    """Exact two-sided McNemar test on the discordant pairs.

    Under "the two models are equally accurate", each discordant image is
    equally likely to favour either model, so b ~ Binomial(b + c, 1/2).
    p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)); p = 1 when
    there are no discordant pairs. Computed with exact integers.

    Args:
        b: images only the first model got right.
        c: images only the second model got right.

    Returns:
        float p-value in [0, 1].
    """
    if b < 0 or c < 0:
        raise JetquantError("discordant counts must be non-negative")
    total = int(b) + int(c)
    if total == 0:
        return 1.0
    tail, term = 0, 1
    for k in range(min(int(b), int(c)) + 1):
        tail += term
        term = term * (total - k) // (k + 1)
    return min(1.0, 2 * tail / (1 << total))


def paired_accuracy_diff(correct_model, correct_ref, level=0.95):
    """Compare two models' top-1 accuracy on the same images.

    Because both models see the same images, only the images they disagree on
    carry information about which is better. The difference model - ref comes
    with Newcombe's method 10 confidence interval and the exact McNemar p-value.
    Read them together: a CI that spans 0 and a large p mean the evaluation set
    cannot tell the models apart; the CI's lower end is the worst accuracy loss
    still consistent with the data.

    Args:
        correct_model: per-image booleans, True where the model was right.
        correct_ref: per-image booleans for the reference (e.g. FP32 baseline).
        level: confidence level of the interval.

    Returns:
        dict with ``diff`` (fraction), ``ci`` [lower, upper] (fractions),
        ``mcnemar_p``, ``discordant`` [b, c] (b = only the model right, c = only the
        reference right), ``table`` [a, b, c, d] and ``n``.
    """
    m, r = _labels_pair(
        np.asarray(correct_model, dtype=bool),
        np.asarray(correct_ref, dtype=bool),
        "per-image correctness of the model",
    )
    m, r = m.astype(bool), r.astype(bool)
    a = int(np.sum(m & r))
    b = int(np.sum(m & ~r))
    c = int(np.sum(~m & r))
    d = int(np.sum(~m & ~r))
    n = a + b + c + d
    lower, upper = newcombe_paired_ci(a, b, c, d, level)
    return {
        "diff": (b - c) / float(n),
        "ci": [lower, upper],
        "mcnemar_p": mcnemar_exact(b, c),
        "discordant": [b, c],
        "table": [a, b, c, d],
        "n": n,
    }
