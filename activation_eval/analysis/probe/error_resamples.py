"""Error detection's bootstrap figures of many scores in one pass over the resamples: both orientations'
operating points and the selective figures of each score from one sparse product per chunk of resamples.

error_detection.py needs, per score p (the probability of "correct"), operating_points(1 - p, incorrect),
operating_points(p, correct) and selective_figures(p, correct), each with n_boot resamples of questions.
Called one by one, each draws the resamples again, sorts the score again and runs about fifty passes over
n x resamples: at 100,000 questions about 25 s of CPU per call. Here the resamples are drawn once for all
scores; each score is sorted once and cut into blocks of tied scores; per chunk of resamples one sparse
product gives each block's count and count of correct rows (and the sums Brier and ECE need), and every
figure follows from cumulative sums over the blocks: the "correct" orientation directly, the "incorrect"
one (1 - p descending = the blocks in reverse, merged where 1 - p rounds two values of p to one) and the
selective figures (the blocks of p). The figures equal the separate calls' (same resamples, same
formulas; tests/analysis/test_error_resamples.py checks them to 1e-12 on scores with ties).

Above BINS distinct scores (a large run: 100,000 questions), neighbouring blocks are merged into about
BINS bins of n / BINS questions, each read as one block of tied scores. The values stay exact (computed on
every question, unbinned), and the resamples' figures are moved by the difference between the exact and
the binned figure on all questions, so that the intervals are the exact figures' to first order: a bin
changes a resample's figure by about as much as it changes the full sample's. What remains is at most a
bin's share of the rates (n / BINS questions: 12 at 100,000) (tests/analysis/test_error_resamples.py:
intervals within 0.1 of their width of the exact bootstrap's at 12,000 questions and 400 bins).

Public names:
    error_figures(scored, correct, n_boot=2000, seed=0, clusters=None, level=0.95)
        -> {name: (operating points of "incorrect", operating points of "correct", selective figures)}
        scored {name: p (n,)}, correct (n,) bool; each part as operating_points / selective_figures return it;
        bins: BINS by default
    BINS, binned_note(n_blocks, bins=BINS) -> str

Example:
    >>> rng = np.random.default_rng(0)
    >>> correct = rng.random(300) < 0.6
    >>> p = np.clip(0.5 + 0.3 * (correct - 0.5) + 0.2 * rng.normal(size=300), 0, 1)
    >>> wrong, right, selective = error_figures({"s": p}, correct, n_boot=1000)["s"]
    >>> from activation_eval.analysis.probe.operating_points import operating_points
    >>> reference = operating_points(1 - p, ~correct, n_boot=1000)
    >>> all(np.allclose([wrong[k]["value"], *wrong[k]["ci"]], [reference[k]["value"], *reference[k]["ci"]],
    ...                 rtol=0, atol=1e-12) for k in ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece"))
    True
"""
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import operating_points as op
from . import selective as sel
from .bootstrap import percentile_interval, resample_counts

__all__ = ["error_figures", "BINS", "binned_note"]

BINS = 8192              # above this many blocks of tied scores, resamples read the score in about this many bins


def binned_note(n_blocks: int, bins: int = BINS) -> str:
    """What error detection says when its resamples read a score in bins."""
    return (f"error detection's intervals: above {bins:,} distinct scores each resample reads a score in {bins:,} "
            f"bins of neighbouring scores ({n_blocks:,} distinct here), moved by the exact figure's difference "
            f"from the binned one on all questions (values exact; intervals to within a bin's share)")


class _Score:
    """One score's blocks: its rows sorted by descending p (ties in input order) and cut where p changes, or,
    above `bins` such blocks, where about n / bins rows have passed and a block of ties ends (binned)."""

    def __init__(self, p: np.ndarray, correct: np.ndarray, bins: int) -> None:
        n = len(p)
        self.p, self.correct = p, correct
        self.order = np.argsort(-p, kind="mergesort")
        last = np.r_[np.flatnonzero(np.diff(p[self.order])), n - 1]              # blocks of p, descending
        self.binned = len(last) > bins
        if self.binned:
            wanted = np.ceil(np.arange(1, bins + 1) * n / bins).astype(np.int64) - 1
            last = np.unique(last[np.searchsorted(last, wanted, side="left")])
        self.starts = np.r_[0, last[:-1] + 1]
        # 1 - p, descending, visits the blocks in reverse; where 1 - p rounds two values of p to one, it merges them
        q = 1.0 - p[self.order][self.starts][::-1]
        merged = np.r_[0, np.flatnonzero(np.diff(q)) + 1]
        self.q_starts = None if self.binned or len(merged) == len(q) else merged
        self.sums = self._sums_matrix()

    def _sums_matrix(self) -> Any:
        """A sparse (K, n) matrix whose product with a resample's counts gives, in one pass over the rows: the
        count of each block, of its correct rows, the summed squared error (Brier) and the summed p - label of
        each ECE bin in both orientations (weighted_ece's bins)."""
        from scipy.sparse import csr_matrix
        n, B, p, y = len(self.p), len(self.starts), self.p, self.correct.astype(np.float64)
        block_of = np.empty(n, dtype=np.int64)
        block_of[self.order] = np.repeat(np.arange(B), np.diff(np.r_[self.starts, n]))
        rows = [block_of, B + block_of[self.correct], np.full(n, 2 * B)]
        values = [np.ones(n), np.ones(int(self.correct.sum())), (p - y) ** 2]
        for offset, proba, label in ((2 * B + 1, p, y), (2 * B + 1 + op.ECE_BINS, 1.0 - p, 1.0 - y)):
            rows.append(offset + np.searchsorted(np.arange(1, op.ECE_BINS) / op.ECE_BINS, proba, side="right"))
            values.append(proba - label)
        columns = np.r_[np.arange(n), np.flatnonzero(self.correct), np.arange(n), np.arange(n), np.arange(n)]
        return csr_matrix((np.concatenate(values), (np.concatenate(rows), columns)),
                          shape=(2 * B + 1 + 2 * op.ECE_BINS, n))

    def chunk(self, WT: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """The figures of the resamples WT (n, m) (counts as float64, a resample per column) in both
        orientations and selective: each block's sums in one sparse product, then cumulative sums over blocks."""
        B, E = len(self.starts), op.ECE_BINS
        sums = self.sums @ WT                                               # (K, m)
        size, right = sums[:B].T, sums[B:2 * B].T
        total = size.sum(axis=1)
        called_p, right_p = np.cumsum(size, axis=1), np.cumsum(right, axis=1)
        size_q, wrong_q = size[:, ::-1], (size - right)[:, ::-1]
        if self.q_starts is not None:
            size_q, wrong_q = (np.add.reduceat(a, self.q_starts, axis=1) for a in (size_q, wrong_q))
        called_q, wrong_q = np.cumsum(size_q, axis=1), np.cumsum(wrong_q, axis=1)
        undefined = np.full(WT.shape[1], np.nan)
        brier, ece_p, ece_q = undefined, undefined, undefined
        if op._is_probability(self.p):
            with np.errstate(invalid="ignore", divide="ignore"):
                brier = sums[2 * B] / total
                ece_p = np.abs(sums[2 * B + 1:2 * B + 1 + E]).sum(axis=0) / total
                ece_q = np.abs(sums[2 * B + 1 + E:]).sum(axis=0) / total
        return {"incorrect": _point_metrics(wrong_q, called_q, brier, ece_q),
                "correct": _point_metrics(right_p, called_p, brier, ece_p),
                "selective": _selective_metrics(called_p, called_p - right_p)}


def _point_metrics(tp: np.ndarray, called: np.ndarray, brier: np.ndarray, ece: np.ndarray) -> dict[str, np.ndarray]:
    return {"auprc": op._auprc(tp, called), "tpr_at_1pct_fpr": op._tpr_at_fpr(tp, called, op.MAX_FPR),
            "fpr_at_95pct_tpr": op._fpr_at_tpr(tp, called, op.MIN_TPR), "brier": brier, "ece": ece}


def _selective_metrics(upto: np.ndarray, wrong_upto: np.ndarray) -> dict[str, np.ndarray]:
    """selective._all from the cumulative weights and incorrect weights at each block's end (m, G)."""
    k0 = np.hstack([np.zeros((len(upto), 1)), upto[:, :-1]])
    e0 = np.hstack([np.zeros((len(upto), 1)), wrong_upto[:, :-1]])
    gw, ge = (upto - k0).T, (wrong_upto - e0).T                        # selective's layout: (G, m)
    return sel._all_blocks(gw, ge, (k0.T, e0.T, sel._rate(gw, ge)))


def error_figures(scored: Mapping[str, Any], correct: Any, n_boot: int = 2000, seed: int = 0, clusters: Any = None,
                  level: float = 0.95, bins: int | None = None
                  ) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """See the module docstring."""
    bins = BINS if bins is None else int(bins)
    correct = np.asarray(correct, dtype=bool)
    scores = {}
    for name, p in scored.items():
        p = np.asarray(p, dtype=np.float64)
        if p.shape != correct.shape or np.any(np.isnan(p)):
            raise ValueError(f"score {name!r}: expected {correct.shape[0]} numbers without nan, got shape {p.shape}")
        scores[name] = _Score(p, correct, bins)
    draws: dict[str, dict[str, dict[str, list[np.ndarray]]]] = {name: {} for name in scores}
    for W in resample_counts(len(correct), n_boot, seed, clusters=clusters):
        WT = np.ascontiguousarray(W.T, dtype=np.float64)
        for name, score in scores.items():
            for part, figures in score.chunk(WT).items():
                for key, values in figures.items():
                    draws[name].setdefault(part, {}).setdefault(key, []).append(values)
    n = len(correct)
    n_clusters = n if clusters is None else len(np.unique(clusters))
    out = {}
    for name, score in scores.items():
        parts = {part: {k: np.concatenate(v) for k, v in figures.items()} for part, figures in draws[name].items()}
        if score.binned:
            parts = _shifted(score, parts)
        wrong_points = _points(1.0 - score.p, ~correct, parts.get("incorrect", {}), n_boot, n_clusters, level)
        right_points = _points(score.p, correct, parts.get("correct", {}), n_boot, n_clusters, level)
        out[name] = (wrong_points, right_points, _selective(score.p, correct, parts.get("selective", {}), level))
    return out


def _shifted(score: _Score, draws: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Binned resamples' figures moved by (exact - binned) on the full sample: the intervals of the exact
    figures to first order (the bins change every resample's figure by about the same amount)."""
    ones = np.ones((1, len(score.p)))
    binned = score.chunk(ones.T.copy())
    exact = {"incorrect": _exact_points(1.0 - score.p, ~score.correct),
             "correct": _exact_points(score.p, score.correct),
             "selective": sel._all(score.p, score.correct, ones)}
    out: dict[str, dict[str, np.ndarray]] = {}
    for part, figures in draws.items():
        out[part] = {}
        for key, values in figures.items():
            shift = float(exact[part][key][0] - binned[part][key][0])
            out[part][key] = values + shift if np.isfinite(shift) else values
    return out


def _exact_points(proba: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    ones = np.ones((1, len(proba)))
    return op._all_metrics(op._Sorted(proba, positive), proba, positive, ones, op._is_probability(proba))


def _points(proba: np.ndarray, positive: np.ndarray, draws: Mapping[str, np.ndarray], n_boot: int,
            n_clusters: int, level: float) -> dict[str, Any]:
    sort = op._Sorted(proba, positive)
    return op._figures(sort, proba, positive, op._is_probability(proba), {k: [v] for k, v in draws.items()}, n_boot,
                       n_clusters, level)


def _selective(p: np.ndarray, correct: np.ndarray, draws: Mapping[str, np.ndarray],
               level: float) -> dict[str, Any]:
    ones = np.ones((1, len(p)))
    values = {k: float(v[0]) for k, v in sel._all(p, correct, ones).items()}
    out: dict[str, Any] = {k: {"value": v, "ci": percentile_interval(draws[k], level)}
                           for k, v in values.items()}
    out["risk"] = [float(r) for r in sel.weighted_risk_at(p, correct, ones, sel.CURVE_COVERAGE)[0]]
    out["random_aurc"] = float(1.0 - correct.mean()) if len(correct) else math.nan
    out["oracle_aurc"] = float(sel.weighted_oracle_aurc(correct, ones)[0])
    return out
