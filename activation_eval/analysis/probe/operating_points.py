"""Operating points of a binary classifier's scores, with bootstrap intervals over questions.

AUROC says how well scores rank; a user deploying a probe (say, as a detector of wrong answers) also
needs the precision it reaches (AUPRC), the TPR it keeps at a low false-positive rate, the FPR it
costs to catch 95% of the positives, and whether its probabilities mean what they say (Brier, ECE).
Like bootstrap.py, every metric takes a weight matrix (m, n), one bootstrap resample per row
(counts from resample_counts), so one sort of the scores serves every resample; the cumulative sums run
along each resample's row (contiguous). (error_resamples.py reads many scores on one draw of resamples.)

Public names:
    weighted_auprc(scores, positive, weights) -> (m,)  average precision, sklearn's definition:
                                                       sum_k (R_k - R_{k-1}) P_k over the distinct
                                                       scores, descending; nan without positives
    tpr_at_fpr(scores, positive, weights, max_fpr=0.01) -> (m,)
                                                       highest TPR over the thresholds (the distinct
                                                       scores, as roc_curve) whose FPR <= max_fpr
    fpr_at_tpr(scores, positive, weights, min_tpr=0.95) -> (m,)
                                                       lowest FPR over the thresholds whose TPR >= min_tpr
    weighted_brier(proba, positive, weights) -> (m,)   mean squared error of the probabilities
    weighted_ece(proba, positive, weights, bins=10) -> (m,)
                                                       expected calibration error, equal-width bins on
                                                       [0, 1]: sum_b W_b/W |mean proba_b - frequency_b|
    operating_points(proba, positive, n_boot=2000, seed=0, clusters=None, level=0.95) -> dict
                                                       all five on every row ("value") with percentile
                                                       intervals ("ci") over resampled questions

tpr_at_fpr and fpr_at_tpr are nan when a resample lacks a class (the rate is undefined), weighted_auprc
when it lacks positives (with no negatives the precision is 1 everywhere and AP = 1); Brier and ECE
need no class balance. percentile_interval skips the nan resamples. ECE is biased upward (binning
noise adds to every gap), in a resample more so, so its percentile interval tends to sit above the
value; ECE gets the basic (reverse-percentile) bootstrap interval [2v - q_hi, 2v - q_lo] instead,
which corrects that shift, clipped to [0, 1] (its "interval" key says "basic"; the others' "percentile").

Example:
    >>> proba = np.array([.9, .8, .7, .6, .3, .2])
    >>> positive = np.array([1, 1, 0, 1, 0, 0], bool)
    >>> W = np.ones((1, 6))
    >>> round(float(weighted_auprc(proba, positive, W)[0]), 4)        # (1 + 1 + 3/4) / 3
    0.9167
    >>> float(tpr_at_fpr(proba, positive, W, max_fpr=0.0)[0]), float(fpr_at_tpr(proba, positive, W, 1.0)[0])
    (0.6666666666666666, 0.3333333333333333)
    >>> round(float(weighted_brier(proba, positive, W)[0]), 4)        # (.01+.04+.49+.16+.09+.04) / 6
    0.1383
    >>> out = operating_points(proba, positive, n_boot=500, seed=0)
    >>> out["n_positive"], out["n_negative"], out["auprc"]["value"] == float(weighted_auprc(proba, positive, W)[0])
    (3, 3, True)
    >>> for note in out["note"].split("; "): print(note)
    fewer than 100 negatives: TPR at 1% FPR rests on less than one false positive, unstable
    fewer than 20 positives: FPR at 95% TPR is the FPR at 100% TPR
    >>> out["tpr_at_1pct_fpr"]["value"], out["fpr_at_95pct_tpr"]["ci"][1]
    (0.6666666666666666, 1.0)
"""
import numpy as np

from .bootstrap import percentile_interval, resample_counts

__all__ = ["weighted_auprc", "tpr_at_fpr", "fpr_at_tpr", "weighted_brier", "weighted_ece", "operating_points"]

MAX_FPR = 0.01
MIN_TPR = 0.95
ECE_BINS = 10


def _weights(weights):
    return np.atleast_2d(np.asarray(weights, dtype=np.float64))


class _Sorted:
    """One score sorted once (descending, ties in input order): the order, which rows are positive in it,
    and the last row of each block of tied scores (None when all scores differ)."""

    def __init__(self, scores, positive):
        scores = np.asarray(scores, dtype=np.float64)
        self.order = np.argsort(-scores, kind="mergesort")
        self.positive = np.asarray(positive, dtype=bool)[self.order]
        last = np.r_[np.flatnonzero(np.diff(scores[self.order])), len(scores) - 1]
        self.last = None if len(last) == len(scores) else last

    def counts(self, weights):
        """Weighted true positives and positive calls (m, G) at each distinct score taken as the threshold
        (predict positive when score >= threshold), thresholds descending as in sklearn's curves; the
        resamples are rows (weights (m, n)), so every cumulative sum runs along contiguous memory."""
        w = np.atleast_2d(np.asarray(weights))[:, self.order]
        tp = np.cumsum(np.where(self.positive, w, 0), axis=1)
        called = np.cumsum(w, axis=1)
        if self.last is not None:
            tp, called = tp[:, self.last], called[:, self.last]
        return tp.astype(np.float64, copy=False), called.astype(np.float64, copy=False)


def _auprc(tp, called):
    """sum_k (TP_k - TP_{k-1}) / TP * precision_k per row (m, G); nan without positives."""
    total_pos = tp[:, -1]
    gain = np.diff(tp, axis=1, prepend=0.0)                          # (R_k - R_{k-1}) * positives
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
        return np.where(total_pos > 0, np.einsum("ij,ij->i", gain, precision) / total_pos, np.nan)


def _tpr_at_fpr(tp, called, max_fpr):
    """The highest TPR over the thresholds (and one above every score: TPR 0) whose FPR <= max_fpr: FPR
    grows along the thresholds, so it is the TPR at the last of them that qualifies."""
    fp = called - tp
    tp_total, fp_total = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        within = (fp / fp_total <= max_fpr).sum(axis=1)               # thresholds qualifying: a prefix
        rows = np.arange(len(tp))
        tpr = np.where(within > 0, tp[rows, np.maximum(within - 1, 0)] / tp_total[:, 0], 0.0)
    return np.where((tp_total[:, 0] > 0) & (fp_total[:, 0] > 0), tpr, np.nan)


def _fpr_at_tpr(tp, called, min_tpr):
    """The lowest FPR over the thresholds whose TPR >= min_tpr (the last threshold has TPR 1; the one above
    every score, TPR 0, qualifies only for min_tpr <= 0): the FPR at the first of them that qualifies."""
    fp = called - tp
    tp_total, fp_total = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        below = (tp / tp_total < min_tpr).sum(axis=1)                 # thresholds not qualifying: a prefix
        rows = np.arange(len(tp))
        fpr = fp[rows, np.minimum(below, tp.shape[1] - 1)] / fp_total[:, 0]
    if min_tpr <= 0:
        fpr = np.zeros_like(fpr)
    return np.where((tp_total[:, 0] > 0) & (fp_total[:, 0] > 0), fpr, np.nan)


def weighted_auprc(scores, positive, weights):
    """Average precision per row of `weights` (m, n): sklearn.metrics.average_precision_score(positive,
    scores, sample_weight=row); tied scores form one threshold. nan where a row has no positive weight."""
    return _auprc(*_Sorted(scores, positive).counts(weights))


def tpr_at_fpr(scores, positive, weights, max_fpr=MAX_FPR):
    """Highest TPR over the thresholds of sklearn.metrics.roc_curve(drop_intermediate=False) (the
    distinct scores, plus one above them all: TPR 0) whose FPR <= max_fpr; no interpolation."""
    return _tpr_at_fpr(*_Sorted(scores, positive).counts(weights), max_fpr)


def fpr_at_tpr(scores, positive, weights, min_tpr=MIN_TPR):
    """Lowest FPR over the same thresholds whose TPR >= min_tpr; no interpolation."""
    return _fpr_at_tpr(*_Sorted(scores, positive).counts(weights), min_tpr)


def _check_proba(proba):
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 1 or np.any((proba < 0) | (proba > 1)) or np.any(np.isnan(proba)):
        raise ValueError("proba must be a 1-D array of probabilities in [0, 1] (the positive class's)")
    return proba


def weighted_brier(proba, positive, weights):
    """Brier score per row of `weights` (m, n): sklearn.metrics.brier_score_loss(positive, proba,
    sample_weight=row)."""
    weights = _weights(weights)
    error = (_check_proba(proba) - np.asarray(positive, dtype=np.float64)) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return weights @ error / weights.sum(axis=1)


def weighted_ece(proba, positive, weights, bins=ECE_BINS):
    """Expected calibration error per row of `weights` (m, n): `bins` equal-width bins on [0, 1]
    (bin b is [b/bins, (b+1)/bins), the last one closed at 1); sum over bins of (bin weight / total weight) times
    |weighted mean proba - weighted frequency of positives| in the bin."""
    proba = _check_proba(proba)
    weights = _weights(weights)
    inner_edges = np.arange(1, bins) / bins                        # b / bins, so 0.3 is in [0.3, 0.4) as written
    which = np.searchsorted(inner_edges, proba, side="right")      # bin b holds b/bins <= p < (b+1)/bins
    gap = np.zeros((len(proba), bins))                              # (n, bins): proba - label in its bin
    gap[np.arange(len(proba)), which] = proba - np.asarray(positive, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):           # |sum w (p - y)| per bin = W_b |mean p - freq|
        return np.abs(weights @ gap).sum(axis=1) / weights.sum(axis=1)


def _all_metrics(sort, proba, positive, weights, calibrated=True):
    tp, called = sort.counts(weights)
    undefined = np.full(np.atleast_2d(weights).shape[0], np.nan)
    return {"auprc": _auprc(tp, called), "tpr_at_1pct_fpr": _tpr_at_fpr(tp, called, MAX_FPR),
            "fpr_at_95pct_tpr": _fpr_at_tpr(tp, called, MIN_TPR),
            "brier": weighted_brier(proba, positive, weights) if calibrated else undefined,
            "ece": weighted_ece(proba, positive, weights) if calibrated else undefined}


def _is_probability(scores):
    return bool(np.all((scores >= 0) & (scores <= 1)))


def _notes(n_positive, n_negative):
    notes = []
    if n_negative < 1 / MAX_FPR:
        notes.append(f"fewer than {round(1 / MAX_FPR)} negatives: TPR at 1% FPR rests on less than one false positive, "
                     "unstable")
    if n_positive < 1 / (1 - MIN_TPR):
        notes.append(f"fewer than {round(1 / (1 - MIN_TPR))} positives: FPR at 95% TPR is the FPR at 100% TPR")
    if min(n_positive, n_negative) == 0:
        notes.append("one class only: the ranking metrics are undefined (nan)")
    return "; ".join(notes)


def operating_points(proba, positive, n_boot=2000, seed=0, clusters=None, level=0.95):
    """AUPRC, TPR at 1% FPR, FPR at 95% TPR, Brier and ECE (10 bins) of `proba` (n,) (the positive
    class's probability; a raw score outside [0, 1] gets the ranking metrics only, Brier and ECE nan
    with a note) for the boolean `positive` (n,): each {"value": on every row, "ci": [lo, hi]}
    with the percentile interval holding `level` of `n_boot` bootstrap resamples (of `clusters`, e.g.
    cluster_index(rows)[0], when rows share a question). Also "prevalence", "n_positive",
    "n_negative", "n_boot", "n_clusters", "level" and, when a figure rests on too few rows, "note"."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 1 or np.any(np.isnan(proba)):
        raise ValueError("proba must be a 1-D array of scores without nan (the positive class's)")
    positive = np.asarray(positive, dtype=bool)
    sort, calibrated = _Sorted(proba, positive), _is_probability(proba)
    draws = {}
    for W in resample_counts(len(proba), n_boot, seed, clusters=clusters):
        for k, v in _all_metrics(sort, proba, positive, W, calibrated).items():
            draws.setdefault(k, []).append(v)
    n_clusters = len(proba) if clusters is None else len(np.unique(clusters))
    return _figures(sort, proba, positive, calibrated, draws, n_boot, n_clusters, level)


def _figures(sort, proba, positive, calibrated, draws, n_boot, n_clusters, level):
    n = len(proba)
    values = {k: float(v[0]) for k, v in _all_metrics(sort, proba, positive, np.ones((1, n)), calibrated).items()}
    n_positive = int(positive.sum())
    out = {"prevalence": n_positive / n if n else float("nan"), "n_positive": n_positive,
           "n_negative": n - n_positive, "n_boot": n_boot, "n_clusters": n_clusters, "level": level}
    for k, v in values.items():
        lo, hi = percentile_interval(np.concatenate(draws[k]), level)
        if k == "ece":         # biased upward: the basic interval, see the module docstring
            out[k] = {"value": v, "ci": [max(0.0, 2 * v - hi), min(1.0, 2 * v - lo)], "interval": "basic"}
        else:
            out[k] = {"value": v, "ci": [lo, hi], "interval": "percentile"}
    note = _notes(n_positive, n - n_positive)
    if not calibrated:
        note = "; ".join([note] * bool(note) + ["scores outside [0, 1]: not probabilities, Brier and ECE undefined"])
    if note:
        out["note"] = note
    return out
