"""Operating points with bootstrap intervals (issue 21, item 7): every metric against sklearn with
sample_weight on random data with ties, on resamples drawn out row by row (counts as weights ==
repeated rows), and on small cases computed by hand; ECE against an explicit loop over bins written
here; the intervals against sklearn's metrics on the very same resamples; a planted calibration."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_curve

from activation_eval.analysis.probe import operating_points as op
from activation_eval.analysis.probe.bootstrap import percentile_interval, resample_counts


def tied_data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.4
    proba = np.clip(np.round(0.5 + 0.25 * (positive - 0.5) + 0.2 * rng.normal(size=n), 1), 0, 1)  # many ties
    return proba, positive


def ref_tpr_at_fpr(y, s, w, max_fpr):
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return tpr[fpr <= max_fpr].max()


def ref_fpr_at_tpr(y, s, w, min_tpr):
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return fpr[tpr >= min_tpr].min()


def ref_ece(p, y, w, bins):
    """The definition, bin by bin: [b/bins, (b+1)/bins), the last bin [lo, 1]."""
    w = np.ones(len(p)) if w is None else w
    total = 0.0
    for b in range(bins):
        inside = (p >= b / bins) & ((p < (b + 1) / bins) if b < bins - 1 else (p <= 1))
        wb = w[inside].sum()
        if wb > 0:
            gap = abs(np.average(p[inside], weights=w[inside]) - np.average(y[inside], weights=w[inside]))
            total += wb / w.sum() * gap
    return total


def all_refs(y, s, w):
    return {"auprc": average_precision_score(y, s, sample_weight=w),
            "tpr_at_fpr": ref_tpr_at_fpr(y, s, w, 0.1), "fpr_at_tpr": ref_fpr_at_tpr(y, s, w, 0.8),
            "brier": brier_score_loss(y, s, sample_weight=w), "ece": ref_ece(s, y.astype(float), w, 10)}


def all_ours(s, y, W):
    return {"auprc": op.weighted_auprc(s, y, W), "tpr_at_fpr": op.tpr_at_fpr(s, y, W, max_fpr=0.1),
            "fpr_at_tpr": op.fpr_at_tpr(s, y, W, min_tpr=0.8), "brier": op.weighted_brier(s, y, W),
            "ece": op.weighted_ece(s, y, W)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_is_sklearns_with_sample_weight_and_on_drawn_rows(seed):
    proba, positive = tied_data(seed=seed)
    assert len(np.unique(proba)) < len(proba) / 4
    n = len(proba)
    W = next(resample_counts(n, 30, seed=seed + 100))      # not the data's seed: the streams would correlate
    ours = all_ours(proba, positive, W)
    for b in range(len(W)):
        drawn = np.repeat(np.arange(n), W[b])
        weighted, repeated = all_refs(positive, proba, W[b]), all_refs(positive[drawn], proba[drawn], None)
        for name, value in ours.items():
            assert value[b] == pytest.approx(weighted[name], abs=1e-12), (name, b)
            assert value[b] == pytest.approx(repeated[name], abs=1e-12), (name, b)


def test_every_metric_is_sklearns_with_real_valued_weights_and_with_ones():
    proba, positive = tied_data(n=120, seed=5)
    rng = np.random.default_rng(5)
    W = np.vstack([np.ones(len(proba)), rng.exponential(size=(10, len(proba)))])
    ours = all_ours(proba, positive, W)
    for b in range(len(W)):
        for name, ref in all_refs(positive, proba, W[b]).items():
            assert ours[name][b] == pytest.approx(ref, abs=1e-12), (name, b)


def test_continuous_scores_beyond_zero_one_rank_as_sklearn_says():
    rng = np.random.default_rng(8)
    positive = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + positive, 2)
    W = next(resample_counts(300, 10, seed=0))
    auprc, tpr = op.weighted_auprc(scores, positive, W), op.tpr_at_fpr(scores, positive, W)
    fpr = op.fpr_at_tpr(scores, positive, W)
    for b in range(len(W)):
        assert auprc[b] == pytest.approx(average_precision_score(positive, scores, sample_weight=W[b]))
        assert tpr[b] == pytest.approx(ref_tpr_at_fpr(positive, scores, W[b], 0.01))
        assert fpr[b] == pytest.approx(ref_fpr_at_tpr(positive, scores, W[b], 0.95))


def test_small_cases_by_hand():
    one = np.ones((1, 5))
    s = np.array([0.9, 0.8, 0.8, 0.4, 0.1])             # a tie at 0.8 between a positive and a negative
    y = np.array([1, 1, 0, 0, 1], bool)
    # thresholds .9: P 1, R 1/3; .8: P 2/3, R 2/3; .4: no gain; .1: P 3/5, R 1
    assert op.weighted_auprc(s, y, one)[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # FPR 0 only at .9 (TPR 1/3); FPR 1/2 at .8 (TPR 2/3); TPR 1 only at .1 (FPR 1)
    assert op.tpr_at_fpr(s, y, one, max_fpr=0.4)[0] == pytest.approx(1 / 3)
    assert op.tpr_at_fpr(s, y, one, max_fpr=0.5)[0] == pytest.approx(2 / 3)
    assert op.tpr_at_fpr(np.array([.1, .9]), np.array([1, 0], bool), np.ones((1, 2)), 0.5)[0] == 0.0  # nothing passes
    assert op.fpr_at_tpr(s, y, one, min_tpr=0.6)[0] == pytest.approx(1 / 2)
    assert op.fpr_at_tpr(s, y, one, min_tpr=0.95)[0] == pytest.approx(1.0)
    assert op.weighted_brier(s, y, one)[0] == pytest.approx((0.01 + 0.04 + 0.64 + 0.16 + 0.81) / 5)
    # bins: .9 -> [.9, 1], .8 x2 -> [.8, .9), .4 -> [.4, .5), .1 -> [.1, .2); gaps .1, |.8 - .5|, .4, .9
    assert op.weighted_ece(s, y, one)[0] == pytest.approx((0.1 + 2 * 0.3 + 0.4 + 0.9) / 5)
    weights = np.array([[2, 0, 1, 1, 0]])               # q1 twice, q2 and q5 left out
    assert op.weighted_auprc(s, y, weights)[0] == pytest.approx(1.0)
    assert op.weighted_ece(s, y, weights)[0] == pytest.approx((2 * 0.1 + 0.8 + 0.4) / 4)


def test_undefined_resamples_are_nan():
    s, y = np.array([0.2, 0.7, 0.4]), np.array([0, 1, 0], bool)
    only_negatives, only_positive = np.array([[2, 0, 1]]), np.array([[0, 3, 0]])
    for metric in (op.weighted_auprc, op.tpr_at_fpr, op.fpr_at_tpr):
        assert np.isnan(metric(s, y, only_negatives)[0]), metric
    assert op.weighted_auprc(s, y, only_positive)[0] == 1.0 == average_precision_score([1], [0.7])
    assert np.isnan(op.tpr_at_fpr(s, y, only_positive)[0]) and np.isnan(op.fpr_at_tpr(s, y, only_positive)[0])
    assert op.weighted_brier(s, y, only_negatives)[0] == pytest.approx((2 * 0.04 + 0.16) / 3)
    with pytest.raises(ValueError, match="probabilities"):
        op.weighted_ece(np.array([0.5, 1.2, 0.1]), y, np.ones((1, 3)))


def test_operating_points_values_and_intervals_are_sklearns_on_the_same_resamples():
    proba, positive = tied_data(n=60, seed=3)
    clusters = np.arange(60) // 3                        # 20 questions of 3 samples each
    out = op.operating_points(proba, positive, n_boot=200, seed=4, clusters=clusters, level=0.9)
    draws = {k: [] for k in ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece")}
    for W in resample_counts(60, 200, seed=4, clusters=clusters):
        for w in W:
            one_class = w[positive].sum() == 0 or w[~positive].sum() == 0
            draws["auprc"].append(np.nan if w[positive].sum() == 0 else average_precision_score(positive, proba, sample_weight=w))
            draws["tpr_at_1pct_fpr"].append(np.nan if one_class else ref_tpr_at_fpr(positive, proba, w, 0.01))
            draws["fpr_at_95pct_tpr"].append(np.nan if one_class else ref_fpr_at_tpr(positive, proba, w, 0.95))
            draws["brier"].append(brier_score_loss(positive, proba, sample_weight=w))
            draws["ece"].append(ref_ece(proba, positive.astype(float), w, 10))
    ones = np.ones(60)
    values = all_refs(positive, proba, ones)
    values = {"auprc": values["auprc"], "tpr_at_1pct_fpr": ref_tpr_at_fpr(positive, proba, ones, 0.01),
              "fpr_at_95pct_tpr": ref_fpr_at_tpr(positive, proba, ones, 0.95), "brier": values["brier"], "ece": values["ece"]}
    for name, d in draws.items():
        assert out[name]["value"] == pytest.approx(values[name], abs=1e-12), name
        lo, hi = percentile_interval(d, 0.9)
        if name == "ece":            # the basic interval: reflected about the value (ECE is biased upward)
            v = values["ece"]
            lo, hi = max(0.0, 2 * v - hi), min(1.0, 2 * v - lo)
        assert out[name]["ci"] == pytest.approx([lo, hi], abs=1e-12), name
    assert (out["n_positive"], out["n_negative"]) == (int(positive.sum()), int((~positive).sum()))
    assert out["prevalence"] == pytest.approx(positive.mean())
    assert (out["level"], out["n_boot"], out["n_clusters"]) == (0.9, 200, 20)
    assert "fewer than 100 negatives" in out["note"]


def test_planted_calibration_and_the_notes_of_a_large_sample():
    """y ~ Bernoulli(p), p uniform: calibrated by construction, Brier = E[p(1 - p)] = 1/6, ECE near 0;
    the same labels with p squared are miscalibrated by E[p - p^2] = 1/6 (ECE near it)."""
    rng = np.random.default_rng(0)
    p = rng.random(4000)
    positive = rng.random(4000) < p
    out = op.operating_points(p, positive, n_boot=300, seed=1)
    lo, hi = out["brier"]["ci"]
    assert lo < 1 / 6 < hi and hi - lo < 0.02
    assert out["ece"]["value"] < 0.03
    bad = op.operating_points(p ** 2, positive, n_boot=300, seed=1)
    assert bad["ece"]["ci"][0] > 0.12 and bad["brier"]["value"] > out["brier"]["ci"][1]
    assert bad["auprc"]["value"] == pytest.approx(out["auprc"]["value"])     # squaring keeps the ranking
    assert "note" not in out and out["n_clusters"] == 4000


def test_clustered_intervals_are_wider_when_a_questions_samples_agree():
    rng = np.random.default_rng(6)
    questions = rng.random(150)                                  # each question's chance, shared by its 4 samples
    clusters = np.repeat(np.arange(150), 4)
    positive = (rng.random(150) < questions)[clusters]           # and its outcome: samples agree (worst case, ~2x)
    proba = np.clip(questions[clusters] + 0.05 * rng.normal(size=600), 0, 1)
    rows = op.operating_points(proba, positive, n_boot=500, seed=0)
    grouped = op.operating_points(proba, positive, n_boot=500, seed=0, clusters=clusters)
    width = {k: np.diff(grouped[k]["ci"])[0] / np.diff(rows[k]["ci"])[0] for k in ("auprc", "brier")}
    assert all(w > 1.3 for w in width.values()), width
    assert grouped["auprc"]["value"] == rows["auprc"]["value"]


def test_raw_scores_get_the_ranking_metrics_and_no_calibration():
    """Issue 27: a raw score (a log-probability) read as a detector: AUPRC and the rates as sklearn
    gives them for the score itself; Brier and ECE need probabilities, so they are undefined, said."""
    proba, positive = tied_data(seed=5)
    raw = np.log(proba + 0.01) * 3.0                                   # monotone: the same ranking, not in [0, 1]
    out = op.operating_points(raw, positive, n_boot=200, seed=0)
    assert out["auprc"]["value"] == pytest.approx(average_precision_score(positive, raw))
    assert out["tpr_at_1pct_fpr"]["value"] == pytest.approx(ref_tpr_at_fpr(positive, raw, None, 0.01))
    assert out["fpr_at_95pct_tpr"]["value"] == pytest.approx(ref_fpr_at_tpr(positive, raw, None, 0.95))
    assert np.isnan(out["brier"]["value"]) and np.isnan(out["ece"]["value"])
    assert "not probabilities" in out["note"]
    with pytest.raises(ValueError, match="without nan"):
        op.operating_points(np.r_[raw[:-1], np.nan], positive)
