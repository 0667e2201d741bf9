"""Bootstrap over questions for classifier scores: AUROC and accuracy of every resample at once.

A bootstrap resample of n questions is a vector of counts (how often each question was drawn,
multinomial(n, 1/n)); an AUROC or accuracy on the resample is the same statistic with those counts
as weights. Weighting lets one sort of the scores serve every resample, so 10,000 resamples of
hundreds of questions take milliseconds, and the same count matrix pairs every model's statistic
(paired bootstrap: probe and controls are judged on the same resampled questions).

Runs with several samples per question (--num_samples > 1) hold several rows per question id; those
rows are not independent, so the bootstrap must draw QUESTIONS: with `clusters`, resample_counts draws
the questions with replacement and every row gets its question's count (cluster_index makes the
cluster indices from the rows' ids).

From LARGE_N rows on (a large run: 5,000 questions or more) two shortcuts keep the cost linear in n:
resample_counts draws each resample as n uniform indices with replacement (the same multinomial(n, 1/n)
counts, a different random stream: numpy's multinomial costs ~50x more per draw), in chunks of at most
~4M counts; and the probe's AUROC resamples use the first-order (influence) expansion of the weighted
AUROC around the full sample, AUROC(w) ~= AUROC + sum_i (w_i - 1) g_i, one matrix product for every
model of a chunk instead of one sort-based pass per model. The dropped terms are O(1/n) against the
resamples' O(1/sqrt(n)) spread (tests/analysis/test_probe_scale.py compares both with scikit-learn's
weighted AUROC on the same resamples).

Public names:
    resample_counts(n, n_resamples, seed, chunk=512, clusters=None)
                                                       yields (m, n) int count matrices, m <= chunk;
                                                       with clusters (n,), whole clusters are drawn
    auroc_gradient(proba, y, strata=None) -> (AUROC, g (n,))
                                                       the linearized bootstrap: a resample's AUROC
                                                       ~= AUROC + (counts - 1) @ g (from LARGE_N rows)
    LARGE_N                                            rows (or clusters) from which resamples are
                                                       drawn as indices and AUROCs linearized
    cluster_index(rows) -> (clusters (n,), n_clusters) or None
                                                       rows (dicts with "id") grouped by id; None
                                                       when every id is unique
    weighted_auroc(scores, positive, weights, strata=None) -> (m,)
                                                       binary AUROC (Mann-Whitney, ties count 1/2);
                                                       nan where a resample lacks a class; with
                                                       strata, pairs within a stratum only
    macro_auroc(proba, y, weights, strata=None) -> (m,)
                                                       one-vs-rest macro AUROC over proba's columns
                                                       (binary: the AUROC of column 1)
    weighted_accuracy(hits, weights) -> (m,)           fraction of correct predictions
    percentile_interval(samples, level) -> [lo, hi]    nan-aware percentile interval
    interval(samples, level) -> (lo, hi)               the same as a contract's Interval (None: undefined)

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
    >>> rows = [{"id": "q1", "sample": 0}, {"id": "q1", "sample": 1}, {"id": "q2", "sample": 0}]
    >>> clusters, n_clusters = cluster_index(rows)
    >>> clusters.tolist(), n_clusters
    ([0, 0, 1], 2)
    >>> W = next(resample_counts(3, 4, seed=0, clusters=clusters))     # both rows of q1 share a count
    >>> bool(np.all(W[:, 0] == W[:, 1])), W[:, [0, 2]].sum(axis=1).tolist()
    (True, [2, 2, 2, 2])
"""
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ...schema.estimates import Interval

LARGE_N = 5000                  # rows (clusters) from which the index draw and the linearized AUROC are used
CHUNK_COUNTS = 1 << 22          # counts per chunk of a large resample (32 MB of int64)


def resample_counts(n: int, n_resamples: int, seed: int, chunk: int = 512,
                    clusters: Any = None) -> Iterator[np.ndarray]:
    """Bootstrap resamples of n items as count matrices, `chunk` rows at a time (bounded memory).

    The same (n, n_resamples, seed, chunk, clusters) always gives the same matrices, so callers can
    pair several statistics by iterating once and computing all of them on each chunk.
    With `clusters` (n,) (e.g. from cluster_index), each resample draws the C distinct clusters C
    times with replacement (multinomial(C, 1/C)) and every item gets the count of its cluster.
    """
    rng = np.random.default_rng(seed)
    if clusters is not None:
        uniques, clusters = np.unique(np.asarray(clusters), return_inverse=True)
        if clusters.shape != (n,):
            raise ValueError(f"clusters has shape {np.shape(clusters)}, expected ({n},)")
        n_draw = len(uniques)
    else:
        n_draw = n
    p = np.full(n_draw, 1.0 / n_draw)
    large = n_draw >= LARGE_N
    if large:
        chunk = max(1, min(chunk, CHUNK_COUNTS // n_draw))
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        counts = _index_counts(rng, n_draw, m) if large else rng.multinomial(n_draw, p, size=m)
        yield counts if clusters is None else counts[:, clusters]
        done += m


def _index_counts(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """m resamples of n items as counts: n uniform draws with replacement each (multinomial(n, 1/n))."""
    flat = rng.integers(0, n, size=(m, n))
    flat += (np.arange(m) * n)[:, None]                 # in place: one (m, n) array less per chunk
    return np.bincount(flat.ravel(), minlength=m * n).reshape(m, n)


def cluster_index(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, int] | None:
    """Cluster of every row by its "id" (numbered in order of first appearance) and the number of
    clusters, or None when every id is unique (each row its own cluster: the plain bootstrap)."""
    number: dict[str, int] = {}
    # as text: an id from a stranger's results.jsonl may be a list or dict (unhashable)
    clusters = np.array([number.setdefault(str(row.get("id")), len(number)) for row in rows], dtype=np.int64)
    if len(number) == len(clusters):
        return None
    return clusters, len(number)


def weighted_auroc(scores: Any, positive: Any, weights: Any, strata: Any = None) -> np.ndarray:
    """Binary AUROC of `scores` for the boolean `positive`, once per row of `weights` (m, n).

    Equals sklearn.metrics.roc_auc_score(positive, scores) for a row of ones; a row with counts
    is the AUROC of the resample that holds each question that many times. Ties count 1/2.
    With `strata` (n,) only pairs within the same stratum are compared (the pair-weighted mean
    of the per-stratum AUROCs), e.g. within each cross-validation fold: one sort by (stratum,
    score) serves every stratum, so the cost does not grow with the number of strata.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    codes = None if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1].ravel()
    wins, pairs = _wins_and_pairs(scores, positive, weights, codes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def _wins_and_pairs(scores, positive, weights, codes=None):
    """Per row of weights: weighted (positive, negative) pairs ranked right (ties 1/2) and all pairs, counting
    only pairs within a stratum (codes (n,): integer stratum codes; None: one stratum), summed over strata.

    One sort by (stratum, score) instead of one pass over the rows per stratum, then running sums along each
    resample (resamples as rows, contiguous) read at the ends of the groups of tied questions: a group's
    positives and negatives and the negatives below it. Within its stratum, the negatives below a group are
    those below it overall less those below its stratum's first group (exact for counts: bit for bit the
    per-stratum loop's result; ~1e-15 apart for other weights)."""
    if codes is None:
        order = np.argsort(scores, kind="mergesort")
        step = np.diff(scores[order]) != 0                           # (nan != nan: a score of its own)
    else:
        order = np.lexsort((scores, codes))                          # by stratum, then score (stable)
        step = (np.diff(scores[order]) != 0) | (np.diff(codes[order]) != 0)
    w = np.take(weights, order, axis=1)          # (m, n) in C order (weights[:, order] is F: slow running sums)
    pos_w = w * positive[order]
    ends = np.r_[np.flatnonzero(step), len(scores) - 1] if len(scores) else np.zeros(0, dtype=np.int64)
    zero = np.zeros((len(w), 1))
    below_pos = np.concatenate([zero, np.take(np.cumsum(pos_w, axis=1), ends, axis=1)], axis=1)   # (m, groups + 1)
    below_neg = np.concatenate([zero, np.take(np.cumsum(w - pos_w, axis=1), ends, axis=1)], axis=1)
    pos, neg = np.diff(below_pos, axis=1), np.diff(below_neg, axis=1)
    below = below_neg[:, :-1]                                        # negatives below each group
    if codes is None or len(scores) == 0:
        return (pos * (below + 0.5 * neg)).sum(axis=1), below_pos[:, -1] * below_neg[:, -1]
    group_codes = codes[order][ends]
    first = np.r_[0, np.flatnonzero(np.diff(group_codes)) + 1]      # each stratum's first group
    bounds = np.r_[first, len(ends)]                                  # ... and the end of its last
    stratum = np.repeat(np.arange(len(first)), np.diff(bounds))      # each group's stratum (0, 1, ...)
    below = below - np.take(below_neg[:, first], stratum, axis=1)   # ... within its stratum (exact for counts)
    pos_s, neg_s = np.diff(below_pos[:, bounds], axis=1), np.diff(below_neg[:, bounds], axis=1)   # (m, strata)
    return (pos * (below + 0.5 * neg)).sum(axis=1), (pos_s * neg_s).sum(axis=1)


def macro_auroc(proba: Any, y: Any, weights: Any, strata: Any = None) -> np.ndarray:
    """AUROC of class probabilities `proba` (n, k) for class indices `y`: the AUROC of column 1
    for k == 2, else the unweighted mean over classes of one-vs-rest AUROCs (sklearn's
    roc_auc_score(multi_class="ovr", average="macro")); nan where a resample lacks a class."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if proba.shape[1] == 2:
        return weighted_auroc(proba[:, 1], y == 1, weights, strata)
    per_class = [weighted_auroc(proba[:, c], y == c, weights, strata) for c in range(proba.shape[1])]
    return np.mean(per_class, axis=0)          # nan if any class is missing from the resample


def auroc_gradient(proba: Any, y: Any, strata: Any = None) -> tuple[float, np.ndarray]:
    """(AUROC, g): macro_auroc's value at unit weights and its gradient in the weights there, so that a
    resample's AUROC ~= AUROC + (counts - 1) @ g (first order; exact in the limit of many rows). nan and
    zeros when no pair can be compared."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if proba.shape[1] == 2:
        return _binary_gradient(proba[:, 1], y == 1, strata)
    parts = [_binary_gradient(proba[:, c], y == c, strata) for c in range(proba.shape[1])]
    return float(np.mean([a for a, _ in parts])), np.mean([g for _, g in parts], axis=0)


def _binary_gradient(scores: np.ndarray, positive: np.ndarray, strata: Any) -> tuple[float, np.ndarray]:
    """The weighted binary AUROC wins(w) / pairs(w) and its gradient at w = 1 (wins: ranked-right pairs,
    ties 1/2; pairs within a stratum only)."""
    n = len(scores)
    d_wins, d_pairs = np.zeros(n), np.zeros(n)
    wins = pairs = 0.0
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for idx in groups:
        pos, neg = idx[positive[idx]], idx[~positive[idx]]
        if len(pos) == 0 or len(neg) == 0:
            continue
        ps, ns = np.sort(scores[pos]), np.sort(scores[neg])
        below, upto = np.searchsorted(ns, scores[pos], "left"), np.searchsorted(ns, scores[pos], "right")
        d_wins[pos] = below + 0.5 * (upto - below)          # negatives a positive outranks (ties 1/2)
        lo, hi = np.searchsorted(ps, scores[neg], "left"), np.searchsorted(ps, scores[neg], "right")
        d_wins[neg] = (len(pos) - hi) + 0.5 * (hi - lo)     # positives that outrank a negative
        d_pairs[pos], d_pairs[neg] = len(neg), len(pos)
        wins += float(d_wins[pos].sum())
        pairs += float(len(pos) * len(neg))
    if pairs == 0:
        return float("nan"), np.zeros(n)
    value = wins / pairs
    return value, (d_wins - value * d_pairs) / pairs


def weighted_accuracy(hits: Any, weights: Any) -> np.ndarray:
    """Accuracy per row of `weights` (m, n) given the boolean `hits` (prediction == label)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return weights @ np.asarray(hits, dtype=np.float64) / weights.sum(axis=1)


def percentile_interval(samples: Any, level: float) -> list[float]:
    """[lo, hi] percentile interval holding `level` of the finite samples (nan if none)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [float("nan"), float("nan")]
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def interval(samples: Any, level: float) -> Interval:
    """percentile_interval as the contracts' Interval: a (low, high) tuple, None where it is undefined."""
    lo, hi = percentile_interval(samples, level)
    return (lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None)
