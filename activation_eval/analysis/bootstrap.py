"""Bootstrap over questions for classifier scores: AUROC and accuracy of every resample at once.

A bootstrap resample of n questions is a vector of counts (how often each question was drawn,
multinomial(n, 1/n)); an AUROC or accuracy on the resample is the same statistic with those counts
as weights. Weighting lets one sort of the scores serve every resample, so 10,000 resamples of
hundreds of questions take milliseconds, and the same count matrix pairs every model's statistic
(paired bootstrap: probe and controls are judged on the same resampled questions).

Public names:
    resample_counts(n, n_resamples, seed, chunk=512)   yields (m, n) int count matrices, m <= chunk
    weighted_auroc(scores, positive, weights, strata=None) -> (m,)
                                                       binary AUROC (Mann-Whitney, ties count 1/2);
                                                       nan where a resample lacks a class; with
                                                       strata, pairs within a stratum only
    macro_auroc(proba, y, weights, strata=None) -> (m,)
                                                       one-vs-rest macro AUROC over proba's columns
                                                       (binary: the AUROC of column 1)
    weighted_accuracy(hits, weights) -> (m,)           fraction of correct predictions
    percentile_interval(samples, level) -> [lo, hi]    nan-aware percentile interval

Example:
    >>> W = np.ones((1, 4))
    >>> float(weighted_auroc(np.array([.1, .4, .35, .8]), np.array([0, 0, 1, 1], bool), W)[0])
    0.75
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])                  # 8 questions: classes and scores
    >>> score = np.array([.1, .3, .2, .6, .4, .7, .8, .9])
    >>> P = np.stack([1 - score, score], axis=1)                # (n, classes) probabilities
    >>> float(macro_auroc(P, y, np.ones((1, 8)))[0])
    0.9375
    >>> draws = np.concatenate([macro_auroc(P, y, W) for W in resample_counts(len(y), 2000, seed=0)])
    >>> percentile_interval(draws, 0.95)                         # 95% interval over resampled questions
    [0.67, 1.0]
"""
import numpy as np


def resample_counts(n, n_resamples, seed, chunk=512):
    """Bootstrap resamples of n items as count matrices, `chunk` rows at a time (bounded memory).

    The same (n, n_resamples, seed, chunk) always gives the same matrices, so callers can pair
    several statistics by iterating once and computing all of them on each chunk.
    """
    rng = np.random.default_rng(seed)
    p = np.full(n, 1.0 / n)
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        yield rng.multinomial(n, p, size=m)
        done += m


def weighted_auroc(scores, positive, weights, strata=None):
    """Binary AUROC of `scores` for the boolean `positive`, once per row of `weights` (m, n).

    Equals sklearn.metrics.roc_auc_score(positive, scores) for a row of ones; a row with counts
    is the AUROC of the resample that holds each question that many times. Ties count 1/2.
    With `strata` (n,) only pairs within the same stratum are compared (the pair-weighted mean
    of the per-stratum AUROCs), e.g. within each cross-validation fold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if strata is None:
        wins, pairs = _wins_and_pairs(scores, positive, weights)
    else:
        strata = np.asarray(strata)
        parts = [_wins_and_pairs(scores[strata == s], positive[strata == s], weights[:, strata == s])
                 for s in np.unique(strata)]
        wins, pairs = sum(p[0] for p in parts), sum(p[1] for p in parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def _wins_and_pairs(scores, positive, weights):
    """Per row of weights: weighted (positive, negative) pairs ranked right (ties 1/2), all pairs."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    w = np.ascontiguousarray(weights.T[order])                       # (n, m): questions as rows
    pos_w, neg_w = w * positive[order, None], w * ~positive[order, None]
    if np.all(np.diff(sorted_scores) > 0):                           # no ties: every score its group
        pos, neg = pos_w, neg_w
    else:                                                            # sum the tied questions
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
        pos, neg = np.add.reduceat(pos_w, starts, axis=0), np.add.reduceat(neg_w, starts, axis=0)
    neg_below = np.cumsum(neg, axis=0) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=0)
    return wins, pos.sum(axis=0) * neg.sum(axis=0)


def macro_auroc(proba, y, weights, strata=None):
    """AUROC of class probabilities `proba` (n, k) for class indices `y`: the AUROC of column 1
    for k == 2, else the unweighted mean over classes of one-vs-rest AUROCs (sklearn's
    roc_auc_score(multi_class="ovr", average="macro")); nan where a resample lacks a class."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if proba.shape[1] == 2:
        return weighted_auroc(proba[:, 1], y == 1, weights, strata)
    per_class = [weighted_auroc(proba[:, c], y == c, weights, strata) for c in range(proba.shape[1])]
    return np.mean(per_class, axis=0)          # nan if any class is missing from the resample


def weighted_accuracy(hits, weights):
    """Accuracy per row of `weights` (m, n) given the boolean `hits` (prediction == label)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return weights @ np.asarray(hits, dtype=np.float64) / weights.sum(axis=1)


def percentile_interval(samples, level):
    """[lo, hi] percentile interval holding `level` of the finite samples (nan if none)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [float("nan"), float("nan")]
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return [float(lo), float(hi)]
