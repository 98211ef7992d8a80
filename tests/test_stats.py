"""Tests for pipeline.stats against hand-computed and published values."""

import math

import numpy as np
import pytest

from pipeline import stats
from pipeline.errors import JetquantError


def test_latency_summary_of_1_to_100():
    s = stats.latency_summary(list(range(1, 101)))
    assert s["n"] == 100
    assert s["min"] == 1.0
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    # sample std of 1..n is sqrt(n (n + 1) / 12)
    assert s["std"] == pytest.approx(math.sqrt(100 * 101 / 12.0))
    assert s["cv"] == pytest.approx(s["std"] / 50.5)


def test_latency_summary_single_sample_has_zero_spread():
    s = stats.latency_summary([12.5])
    assert (s["p50"], s["p99"], s["std"], s["cv"], s["n"]) == (12.5, 12.5, 0.0, 0.0, 1)


@pytest.mark.parametrize("bad", [[], [1.0, -2.0], [1.0, float("nan")], [float("inf")]])
def test_latency_summary_refuses_bad_samples(bad):
    with pytest.raises(JetquantError):
        stats.latency_summary(bad)


def test_top1_and_length_mismatch():
    assert stats.top1([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    with pytest.raises(JetquantError, match="differ in length"):
        stats.top1([0, 1], [0, 1, 2])


def test_confusion_rows_are_true_class():
    # true 0 predicted 1 twice, true 1 predicted 1 once, true 2 predicted 0 once
    m = stats.confusion(pred=[1, 1, 1, 0], labels=[0, 0, 1, 2], n=3)
    assert m == [[0, 2, 0], [0, 1, 0], [1, 0, 0]]


def test_confusion_refuses_out_of_range_class():
    with pytest.raises(JetquantError, match="only 3 classes"):
        stats.confusion([0, 3], [0, 1], 3)


def test_per_class_hand_computed():
    labels = [0, 0, 0, 0, 1, 1, 2, 2]
    pred = [0, 0, 0, 1, 1, 0, 2, 2]
    pc = stats.per_class(pred, labels, 4)
    assert pc["support"] == [4, 2, 2, 0]
    assert pc["recall"][:3] == [0.75, 0.5, 1.0]
    assert pc["precision"][:3] == [0.75, 0.5, 1.0]
    # class 3: no images and never predicted -> undefined, not a made-up 0 or 1
    assert pc["recall"][3] is None and pc["precision"][3] is None


def test_agreement():
    assert stats.agreement([0, 1, 2, 3], [0, 1, 0, 3]) == 0.75


def test_logit_cosine_and_max_abs_diff():
    a = np.array([[1.0, 0.0], [1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 4.0], [-3.0, -4.0], [0.0, 0.0]])
    # per image: orthogonal 0, parallel 1, opposite -1, both zero 1
    assert stats.logit_cosine(a, b) == pytest.approx(0.25)
    assert stats.max_abs_diff(a, b) == pytest.approx(8.0)
    with pytest.raises(JetquantError, match="shape"):
        stats.logit_cosine(a, b[:2])


def test_normal_quantile():
    assert stats.normal_quantile(0.975) == pytest.approx(1.959963984540054, abs=1e-12)
    assert stats.normal_quantile(0.5) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "x,n,lo,hi",
    # Newcombe 1998a (Stat Med 17:857), method 3 (score), examples of Table II
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_1998a(x, n, lo, hi):
    low, high = stats.wilson_interval(x, n)
    assert round(low, 4) == lo and round(high, 4) == hi


def test_newcombe_paired_matches_published_cavo_example():
    # Cavo et al. 2012 paired table (59, 6 / 16, 80) as analysed by Fagerland, Lydersen &
    # Laake (Stat Med 2014; book ch. 8): Newcombe square-and-add -0.0621 (-0.1186 to -0.0046)
    lo, hi = stats.newcombe_paired_ci(59, 6, 16, 80)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)


def test_newcombe_paired_zero_discordant_pairs_is_not_zero_width():
    lo, hi = stats.newcombe_paired_ci(570, 0, 0, 30)
    assert lo < 0 < hi
    assert hi - lo > 0.005
    assert lo == pytest.approx(-hi)
    # all images right for both models: still an interval, from the Wilson bound at p = 1
    lo, hi = stats.newcombe_paired_ci(600, 0, 0, 0)
    w_lo, _ = stats.wilson_interval(600, 600)
    assert (lo, hi) == pytest.approx((-(1 - w_lo), 1 - w_lo))


def _newcombe_uncorrected_phi(a, b, c, d):
    """Independent computation with the plain phi (valid when ad - bc <= 0)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    z = 1.959963984540054

    def wilson(x):
        p = x / n
        mid = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return mid - half, mid + half

    (l1, u1), (l2, u2) = wilson(a + b), wilson(a + c)
    phi = (a * d - b * c) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return lo, hi


def test_newcombe_matches_independent_formula_when_no_phi_correction_applies():
    # ad - bc < 0: Newcombe's continuity adjustment of phi does not apply
    assert stats.newcombe_paired_ci(2, 10, 5, 3) == pytest.approx(
        _newcombe_uncorrected_phi(2, 10, 5, 3), abs=1e-12
    )


def _mcnemar_brute_force(b, c):
    """Two-sided exact p: sum of Binomial(b + c, 1/2) outcomes as or less likely."""
    n = b + c
    pmf = [math.comb(n, k) / 2.0**n for k in range(n + 1)]
    observed = pmf[b]
    return min(1.0, sum(p for p in pmf if p <= observed * (1 + 1e-12)))


@pytest.mark.parametrize("b,c", [(0, 5), (6, 16), (3, 3), (1, 9), (40, 25), (0, 1), (12, 0)])
def test_mcnemar_exact_matches_brute_force(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(_mcnemar_brute_force(b, c), rel=1e-12)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # Fagerland et al. (contingencytables, ch. 8): McNemar exact conditional P = 0.052479
    assert round(stats.mcnemar_exact(6, 16), 6) == 0.052479
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(7, 7) == 1.0


def test_mcnemar_exact_large_counts_stay_finite():
    p = stats.mcnemar_exact(1100, 900)
    assert 0 < p < 1e-5


def test_paired_accuracy_diff_orientation():
    # model right on 5 images the reference missed, reference right on 2 the model missed
    model = [True] * 90 + [True] * 5 + [False] * 2 + [False] * 3
    ref = [True] * 90 + [False] * 5 + [True] * 2 + [False] * 3
    out = stats.paired_accuracy_diff(model, ref)
    assert out["table"] == [90, 5, 2, 3]
    assert out["discordant"] == [5, 2]
    assert out["diff"] == pytest.approx(0.03)
    assert out["ci"][0] < 0.03 < out["ci"][1]
    assert out["mcnemar_p"] == pytest.approx(_mcnemar_brute_force(5, 2))
    assert out["n"] == 100


def test_newcombe_coverage_near_nominal():
    # cells: both right, only model right, only reference right, both wrong
    rng = np.random.default_rng(1)
    probs = np.array([0.90, 0.02, 0.03, 0.05])
    truth = probs[1] - probs[2]
    tables = rng.multinomial(300, probs, size=1500)
    hits = 0
    for a, b, c, d in tables:
        lo, hi = stats.newcombe_paired_ci(int(a), int(b), int(c), int(d))
        hits += lo <= truth <= hi
    assert 0.93 <= hits / len(tables) <= 0.98


def test_mcnemar_exact_keeps_false_alarm_rate_below_5_percent():
    rng = np.random.default_rng(2)
    discordant = rng.binomial(300, 0.06, size=1500)
    b = rng.binomial(discordant, 0.5)
    rejections = sum(stats.mcnemar_exact(int(x), int(n - x)) < 0.05 for x, n in zip(b, discordant))
    assert rejections / len(b) <= 0.055
