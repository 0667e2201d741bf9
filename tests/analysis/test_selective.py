"""Issue 27, item 6: PRR, AURC, the risk-coverage curve and selective accuracy against a reference
written here from the definitions (sort by confidence, cumulative risk), with ties resolved by
enumerating every order of each tie block and averaging, and the random baseline by enumerating every
permutation; bootstrap counts against the same reference on rows repeated that many times."""
import itertools
import math

import numpy as np
import pytest

from activation_eval.analysis.probe import selective as sel
from activation_eval.analysis.probe.bootstrap import percentile_interval, resample_counts


def orders_by_confidence(conf):
    """Every order of the questions by confidence, highest first, tie blocks in every internal order."""
    levels = sorted(set(conf.tolist()), reverse=True)
    blocks = [[i for i in range(len(conf)) if conf[i] == v] for v in levels]
    for perms in itertools.product(*(itertools.permutations(b) for b in blocks)):
        yield [i for p in perms for i in p]


def risks_of(order, correct):
    """risk(k) for k = 1..n: incorrect among the first k / k."""
    wrong = ~correct[list(order)]
    return np.cumsum(wrong) / np.arange(1, len(order) + 1)


def ref_curve(conf, correct):
    """The expected risk(k), k = 1..n, over the orders of the tie blocks."""
    curves = [risks_of(o, correct) for o in orders_by_confidence(conf)]
    return np.mean(curves, axis=0)


def ref_aurc(conf, correct):
    return float(ref_curve(conf, correct).mean())


def ref_prr(conf, correct):
    n = len(conf)
    random = np.mean([risks_of(p, correct).mean() for p in itertools.permutations(range(n))])
    oracle = risks_of(np.argsort(~correct, kind="stable"), correct).mean()
    return (random - ref_aurc(conf, correct)) / (random - oracle)


def ref_selective_accuracy(conf, correct, coverage):
    k = math.ceil(coverage * len(conf) - 1e-9)
    return 1.0 - ref_curve(conf, correct)[k - 1]


CASES = [
    # (confidence, correct): no ties; ties across classes; a constant score; all ties in pairs
    (np.array([.9, .7, .6, .4, .2, .1]), np.array([1, 0, 1, 1, 0, 0], bool)),
    (np.array([.8, .8, .5, .5, .5, .1, .1]), np.array([1, 0, 1, 0, 1, 1, 0], bool)),
    (np.full(5, 0.3), np.array([1, 1, 0, 1, 0], bool)),
    (np.array([.2, .2, .9, .9, .4, .4]), np.array([0, 1, 1, 1, 0, 0], bool)),
]


@pytest.mark.parametrize("conf, correct", CASES)
def test_aurc_prr_and_selective_accuracy_match_the_definitions(conf, correct):
    W = np.ones((1, len(conf)))
    assert sel.weighted_aurc(conf, correct, W)[0] == pytest.approx(ref_aurc(conf, correct), abs=1e-12)
    assert sel.weighted_prr(conf, correct, W)[0] == pytest.approx(ref_prr(conf, correct), abs=1e-12)
    for c in (0.5, 0.8, 0.9, 1.0):
        got = 1 - sel.weighted_risk_at(conf, correct, W, [c])[0, 0]
        assert got == pytest.approx(ref_selective_accuracy(conf, correct, c), abs=1e-12)


def test_hand_checked_case():
    # order .9 (ok) .7 (wrong) .6 (ok) .4 (ok) .2 (wrong) .1 (wrong): risks 0, 1/2, 1/3, 1/4, 2/5, 3/6
    conf, correct = CASES[0]
    W = np.ones((1, 6))
    aurc = (0 + 1 / 2 + 1 / 3 + 1 / 4 + 2 / 5 + 3 / 6) / 6
    oracle = (0 + 0 + 0 + 1 / 4 + 2 / 5 + 3 / 6) / 6
    assert sel.weighted_aurc(conf, correct, W)[0] == pytest.approx(aurc)
    assert sel.weighted_oracle_aurc(correct, W)[0] == pytest.approx(oracle)
    assert sel.weighted_prr(conf, correct, W)[0] == pytest.approx((0.5 - aurc) / (0.5 - oracle))
    # 80% of 6 = 4.8: the 5 most confident, 3 of them correct; 90%: 5.4 -> 6, 3 of 6
    assert 1 - sel.weighted_risk_at(conf, correct, W, [0.8, 0.9])[0] == pytest.approx([3 / 5, 1 / 2])


def test_constant_score_is_random_and_one_class_has_no_prr():
    conf, correct = CASES[2]
    W = np.ones((1, 5))
    assert sel.weighted_aurc(conf, correct, W)[0] == pytest.approx(2 / 5)
    assert sel.weighted_prr(conf, correct, W)[0] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(sel.weighted_prr(conf, np.ones(5, bool), W)[0])
    assert np.isnan(sel.weighted_prr(conf, np.zeros(5, bool), W)[0])
    assert sel.weighted_aurc(conf, np.zeros(5, bool), W)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("conf, correct", CASES[:2])
def test_bootstrap_counts_are_repeated_rows(conf, correct):
    n = len(conf)
    W = np.array([[2, 0, 1, 1, 0, 1, 1][:n], [0, 1, 3, 0, 1, 1, 0][:n]], dtype=float)
    aurc, prr = sel.weighted_aurc(conf, correct, W), sel.weighted_prr(conf, correct, W)
    risk = sel.weighted_risk_at(conf, correct, W, [0.8, 0.9])
    for row in range(2):
        keep = np.repeat(np.arange(n), W[row].astype(int))
        c, y = conf[keep], correct[keep]
        assert aurc[row] == pytest.approx(ref_aurc(c, y), abs=1e-12)
        assert prr[row] == pytest.approx(ref_prr(c, y), abs=1e-12)
        assert 1 - risk[row] == pytest.approx([ref_selective_accuracy(c, y, 0.8),
                                               ref_selective_accuracy(c, y, 0.9)], abs=1e-12)


def test_selective_figures_intervals_are_the_percentiles_of_the_resamples():
    rng = np.random.default_rng(3)
    correct = rng.random(60) < 0.7
    conf = np.round(0.5 * correct + rng.normal(size=60) * 0.4, 1)         # informative, with ties
    out = sel.selective_figures(conf, correct, n_boot=300, seed=5, level=0.9)
    draws = np.concatenate([sel.weighted_aurc(conf, correct, W) for W in resample_counts(60, 300, 5)])
    assert out["aurc"]["ci"] == pytest.approx(percentile_interval(draws, 0.9))
    assert out["random_aurc"] == pytest.approx(1 - correct.mean())
    assert out["aurc"]["value"] < out["random_aurc"] and out["prr"]["ci"][0] > 0      # a real detector
    assert len(out["risk"]) == len(sel.CURVE_COVERAGE) and out["risk"][-1] == pytest.approx(1 - correct.mean())
    lo, hi = out["selective_accuracy_80"]["ci"]
    assert lo <= out["selective_accuracy_80"]["value"] <= hi
