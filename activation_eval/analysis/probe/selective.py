"""Selective prediction: answer only the questions a confidence score trusts most, and count the errors.

Error detection as the field scores it (Geifman & El-Yaniv 2017; Malinin & Gales 2021; TruthTorchLM,
LM-Polygraph). Sort the questions by confidence (the probability that the answer is correct),
highest first, and keep the top k: the coverage is k/n, the selective risk the share of incorrect
answers among the k kept. Definitions (n questions, E of them incorrect):

    risk(k)              incorrect among the k most confident / k
    risk-coverage curve  risk(k) against k/n, k = 1..n
    AURC                 mean over k = 1..n of risk(k): the area under the risk-coverage curve
                         (lower is better; Geifman & El-Yaniv's discrete form)
    random AURC          E/n exactly: under a random order every risk(k) has expectation E/n
    oracle AURC          all correct answers first: (1/n) sum_{k > n - E} (k - (n - E)) / k
    PRR                  (random AURC - AURC) / (random AURC - oracle AURC): the prediction rejection
                         ratio on the error-rate-vs-rejection-rate curve (1 = oracle, 0 = random,
                         < 0 worse than random); TruthTorchLM's prr, whose accuracy-rejection curve
                         is 1 - risk, with the random baseline's expectation exact instead of drawn
    selective accuracy   1 - risk(k) at k = ceil(c n): the accuracy on the smallest set of most
                         confident questions that covers at least c (c = 0.8, 0.9)

Ties: questions of equal confidence are kept in a random order; every figure is its expectation over
those orders (within a tie block the expected count of errors grows linearly), so a constant score
has AURC E/n and PRR 0 (to rounding). Like bootstrap.py every function takes a weight matrix
(m, n), one bootstrap resample per row (counts from resample_counts; a count c is c copies of the
question, tied with each other): one sort serves every resample. nan where a figure is undefined
(PRR without both correct and incorrect answers; anything on zero weight).

Public names:
    weighted_aurc(confidence, correct, weights) -> (m,)
    weighted_oracle_aurc(correct, weights) -> (m,)
    weighted_prr(confidence, correct, weights) -> (m,)
    weighted_risk_at(confidence, correct, weights, coverages) -> (m, len(coverages))
    selective_figures(confidence, correct, n_boot=2000, seed=0, clusters=None, level=0.95) -> dict
                            {"aurc", "prr", "selective_accuracy_80", "selective_accuracy_90"}: each
                            {"value", "ci"} (percentile interval over resampled questions), "risk" at
                            CURVE_COVERAGE, "random_aurc", "oracle_aurc"
    CURVE_COVERAGE          the coverages of the stored curve: 0.05, 0.10, ..., 1.0
    SELECTIVE_COVERAGES     (0.8, 0.9)

Example (4 questions, the two wrong ones least confident: the oracle's order):
    >>> conf, correct, W = np.array([.9, .8, .3, .1]), np.array([1, 1, 0, 0], bool), np.ones((1, 4))
    >>> round(float(weighted_aurc(conf, correct, W)[0]), 6), round((1/3 + 2/4) / 4, 6)
    (0.208333, 0.208333)
    >>> round(float(weighted_prr(conf, correct, W)[0]), 9), round(float(weighted_prr(-conf, correct, W)[0]), 9)
    (1.0, -1.0)
    >>> round(float(weighted_prr(np.zeros(4), correct, W)[0]), 9)      # a constant score: random
    0.0
    >>> weighted_risk_at(conf, correct, W, [0.5, 0.75, 1.0]).tolist()    # k = 2, 3, 4
    [[0.0, 0.3333333333333333, 0.5]]
"""
import math
from typing import Any

import numpy as np
from scipy.special import digamma

from .bootstrap import percentile_interval, resample_counts

__all__ = ["weighted_aurc", "weighted_oracle_aurc", "weighted_prr", "weighted_risk_at", "selective_figures",
           "CURVE_COVERAGE", "SELECTIVE_COVERAGES"]

CURVE_COVERAGE = tuple(round(0.05 * i, 2) for i in range(1, 21))
SELECTIVE_COVERAGES = (0.8, 0.9)


def _harmonic(x: Any) -> np.ndarray:
    """H(x) = sum_{j=1..x} 1/j (H(0) = 0): a table for whole numbers (bootstrap counts), else the
    digamma function's extension to reals."""
    x = np.asarray(x, dtype=np.float64)
    whole = x.astype(np.int64)
    if np.array_equal(whole, x) and (x.size == 0 or whole.min() >= 0):
        top = int(whole.max()) if x.size else 0
        table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
        return table[whole]
    return digamma(x + 1.0) + np.euler_gamma


def _tie_blocks(confidence: Any, correct: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """(weight, incorrect weight) of each block of equal confidence, most confident first: (G, m)."""
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.ndim != 1 or np.any(np.isnan(conf)):
        raise ValueError("confidence must be a 1-D array of numbers without nan")
    wrong = ~np.asarray(correct, dtype=bool)
    order = np.argsort(-conf, kind="mergesort")
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64)).T[order]          # (n, m)
    starts = np.r_[0, np.flatnonzero(np.diff(conf[order])) + 1]
    return np.add.reduceat(w, starts, axis=0), np.add.reduceat(w * wrong[order, None], starts, axis=0)


def _before(block: np.ndarray) -> np.ndarray:
    return np.cumsum(block, axis=0) - block


def _rate(gw: np.ndarray, ge: np.ndarray) -> np.ndarray:
    """Incorrect weight per position of each block (0 in an empty block)."""
    out = np.zeros_like(ge)
    np.divide(ge, gw, out=out, where=gw > 0)
    return out


def _aurc(gw: np.ndarray, ge: np.ndarray, parts: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    k0, e0, rate = parts or (_before(gw), _before(ge), _rate(gw, ge))
    # sum over a block's positions k0 + j of the expected risk (e0 + j rate) / (k0 + j), j = 1..gw
    block_sum = (e0 - rate * k0) * (_harmonic(k0 + gw) - _harmonic(k0)) + rate * gw
    total = gw.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, block_sum.sum(axis=0) / total, np.nan)


def _oracle(total: np.ndarray, n_wrong: np.ndarray) -> np.ndarray:
    """sum_{k > C} (k - C) / k over the positions of the oracle order, / total (C correct)."""
    n_correct = total - n_wrong
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = n_wrong - n_correct * (_harmonic(total) - _harmonic(n_correct))
        return np.where(total > 0, tail / total, np.nan)


def _prr(gw: np.ndarray, ge: np.ndarray, aurc: np.ndarray) -> np.ndarray:
    total, n_wrong = gw.sum(axis=0), ge.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        random = n_wrong / total
        gap = random - _oracle(total, n_wrong)
        return np.where(gap > 1e-12, (random - aurc) / np.where(gap > 1e-12, gap, 1), np.nan)


def _risk_at(gw: np.ndarray, ge: np.ndarray, coverages: Any, parts: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    k0, e0, rate = parts or (_before(gw), _before(ge), _rate(gw, ge))
    upto = k0 + gw
    total = upto[-1]
    out = np.full((gw.shape[1], len(coverages)), np.nan)
    columns = np.arange(gw.shape[1])
    for j, c in enumerate(coverages):
        k = np.maximum(1.0, np.ceil(c * total - 1e-9))
        block = np.argmax(upto >= k - 1e-9, axis=0)                        # the block holding position k
        errors = e0[block, columns] + (k - k0[block, columns]) * rate[block, columns]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(total > 0, errors / k, np.nan)
    return out


def weighted_aurc(confidence: Any, correct: Any, weights: Any) -> np.ndarray:
    """AURC per row of `weights` (m, n): the mean over k of the expected risk of the k most confident."""
    return _aurc(*_tie_blocks(confidence, correct, weights))


def weighted_oracle_aurc(correct: Any, weights: Any) -> np.ndarray:
    """The AURC of the oracle order (every correct answer first) per row of `weights`."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return _oracle(w.sum(axis=1), w @ (~np.asarray(correct, dtype=bool)).astype(np.float64))


def weighted_prr(confidence: Any, correct: Any, weights: Any) -> np.ndarray:
    """Prediction rejection ratio per row of `weights`: (random - AURC) / (random - oracle)."""
    gw, ge = _tie_blocks(confidence, correct, weights)
    return _prr(gw, ge, _aurc(gw, ge))


def weighted_risk_at(confidence: Any, correct: Any, weights: Any, coverages: Any) -> np.ndarray:
    """Expected selective risk (m, len(coverages)) of the k = ceil(c * total weight) most confident."""
    return _risk_at(*_tie_blocks(confidence, correct, weights), coverages)


def _all(confidence: np.ndarray, correct: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    gw, ge = _tie_blocks(confidence, correct, W)
    return _all_blocks(gw, ge, (_before(gw), _before(ge), _rate(gw, ge)))


def _all_blocks(gw: np.ndarray, ge: np.ndarray, parts: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """The figures of blocks gw, ge (G, m) and parts (weight before, incorrect weight before, rate) of each block
    (error_resamples.py passes its own)."""
    aurc, risk = _aurc(gw, ge, parts), _risk_at(gw, ge, SELECTIVE_COVERAGES, parts)
    return {"aurc": aurc, "prr": _prr(gw, ge, aurc),
            "selective_accuracy_80": 1.0 - risk[:, 0], "selective_accuracy_90": 1.0 - risk[:, 1]}


def selective_figures(confidence: Any, correct: Any, n_boot: int = 2000, seed: int = 0, clusters: Any = None,
                      level: float = 0.95) -> dict[str, Any]:
    """AURC, PRR and selective accuracy at 80% and 90% coverage of `confidence` (n,) (higher = more
    likely correct) for the boolean `correct` (n,), each {"value", "ci"} with the percentile interval
    holding `level` of `n_boot` resamples of questions (of `clusters` when rows share a question);
    also "risk" (the expected risk at CURVE_COVERAGE), "random_aurc" and "oracle_aurc"."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    ones = np.ones((1, len(confidence)))
    values = {k: float(v[0]) for k, v in _all(confidence, correct, ones).items()}
    draws: dict[str, list[np.ndarray]] = {k: [] for k in values}
    for W in resample_counts(len(confidence), n_boot, seed, clusters=clusters):
        for k, v in _all(confidence, correct, W).items():
            draws[k].append(v)
    out: dict[str, Any] = {k: {"value": v, "ci": percentile_interval(np.concatenate(draws[k]), level)}
                           for k, v in values.items()}
    out["risk"] = [float(r) for r in weighted_risk_at(confidence, correct, ones, CURVE_COVERAGE)[0]]
    out["random_aurc"] = float(1.0 - correct.mean()) if len(correct) else math.nan
    out["oracle_aurc"] = float(weighted_oracle_aurc(correct, ones)[0])
    return out
