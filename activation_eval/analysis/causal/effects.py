"""Paired effects of one condition against the baseline answers to the same questions, and the
monotonicity of the effect in alpha.

Every condition answers the run's questions again; row i of a condition and row i of the baseline are
the same question, so each figure is a per-question difference (paired), and its interval a percentile
bootstrap over questions (analysis/intervals.py; a question's samples drawn together with `clusters`).

Public names:
    Answers(correct, texts, gold_logprob=None)   one condition's answers, in the baseline's question order
    paired_change(base, other, level=0.95, n_resamples=2000, seed=0, clusters=None) -> (mean, Interval)
                                                 mean of other - base and its paired bootstrap interval
    changed_share(base_texts, texts, level=0.95) -> (share, Interval)   answers whose text differs (Wilson)
    per_question_effect(base, answers, measure) -> (n,)   gold log-prob (or correctness) change per question
    condition(name, kind, alpha_sd, alpha, base, answers, ...) -> CausalCondition   every figure of one condition
    monotonicity(alphas, effects, level=0.95, n_resamples=2000, seed=0) -> (rho, Interval)
                                                 Spearman rho of the mean effect against alpha, bootstrapped
                                                 over questions
    MEASURES                                     ("gold_logprob_change", "accuracy_change")

Example:
    >>> base = Answers(correct=np.array([1, 0, 0, 1]), texts=["A", "B", "B", "A"],
    ...                gold_logprob=np.array([-0.1, -2.0, -1.5, -0.3]))
    >>> up = Answers(correct=np.array([1, 1, 0, 1]), texts=["A", "A", "B", "A"],
    ...              gold_logprob=np.array([-0.05, -0.5, -1.0, -0.2]))
    >>> c = condition("alpha=+4", "steer", 4.0, 2.0, base, up)
    >>> c.accuracy_change, round(c.gold_logprob_change, 4), c.changed_share
    (0.25, 0.5375, 0.25)
    >>> rho, ci = monotonicity([-4, 0, 4], [-per_question_effect(base, up, "gold_logprob_change"),
    ...                                    np.zeros(4), per_question_effect(base, up, "gold_logprob_change")])
    >>> rho
    1.0
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...accuracy import wilson_interval
from ...schema.causal import CausalCondition, ConditionKind
from ...schema.estimates import Interval
from ..intervals import bootstrap_ci

MEASURES = ("gold_logprob_change", "accuracy_change")


@dataclass(frozen=True)
class Answers:
    """One condition's answers: correct (0/1), the answer texts, and the gold answer's teacher-forced
    log-likelihood (None: not scored), one per question in the baseline's order."""
    correct: Any
    texts: Sequence[str]
    gold_logprob: Any = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if np.shape(self.correct) != (n,) or (self.gold_logprob is not None and np.shape(self.gold_logprob) != (n,)):
            raise ValueError("correct, texts and gold_logprob must have one entry per question")


def _paired(base: Answers, other: Answers) -> None:
    if len(base.texts) != len(other.texts):
        raise ValueError(f"a condition must answer the baseline's questions: {len(other.texts)} answers against "
                         f"{len(base.texts)}")


def paired_change(base: Any, other: Any, level: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                  clusters: Sequence[Any] | None = None) -> tuple[float, Interval]:
    """Mean of other - base over questions and its percentile bootstrap interval over questions (paired:
    both on the same resampled questions, which is resampling the differences)."""
    diff = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    if diff.size == 0:
        raise ValueError("a paired change needs at least one question")
    return float(diff.mean()), bootstrap_ci(diff, np.mean, n_resamples, level, seed, clusters)


def changed_share(base_texts: Sequence[str], texts: Sequence[str], level: float = 0.95) -> tuple[float, Interval]:
    """Share of questions whose answer text differs from the baseline's, with its Wilson interval."""
    if len(base_texts) != len(texts) or not texts:
        raise ValueError("changed_share needs the same non-empty questions in both conditions")
    changed = sum(a != b for a, b in zip(base_texts, texts))
    return changed / len(texts), wilson_interval(changed, len(texts), level)


def per_question_effect(base: Answers, answers: Answers, measure: str) -> np.ndarray:
    """The condition's effect on each question: the change in the gold log-likelihood, or in correctness."""
    _paired(base, answers)
    if measure == "gold_logprob_change":
        if base.gold_logprob is None or answers.gold_logprob is None:
            raise ValueError("gold_logprob_change needs the gold answer's log-likelihood in both conditions")
        return np.asarray(answers.gold_logprob, dtype=np.float64) - np.asarray(base.gold_logprob, dtype=np.float64)
    if measure == "accuracy_change":
        return np.asarray(answers.correct, dtype=np.float64) - np.asarray(base.correct, dtype=np.float64)
    raise ValueError(f"effect measure must be one of {', '.join(MEASURES)}, got {measure!r}")


def condition(name: str, kind: ConditionKind, alpha_sd: float | None, alpha: float | None, base: Answers,
              answers: Answers, level: float = 0.95, n_resamples: int = 2000, seed: int = 0,
              clusters: Sequence[Any] | None = None, run_dir: str | None = None) -> CausalCondition:
    """Every figure of one condition against the baseline on the same questions."""
    _paired(base, answers)
    n = len(answers.texts)
    correct = np.asarray(answers.correct, dtype=np.float64)
    acc_change, acc_ci = paired_change(base.correct, correct, level, n_resamples, seed, clusters)
    if base.gold_logprob is not None and answers.gold_logprob is not None:
        lp_change, lp_ci = paired_change(base.gold_logprob, answers.gold_logprob, level, n_resamples, seed, clusters)
    else:
        lp_change, lp_ci = None, (None, None)
    share, share_ci = changed_share(base.texts, answers.texts, level)
    return CausalCondition(name=name, kind=kind, alpha_sd=alpha_sd, alpha=alpha, n=n, accuracy=float(correct.mean()),
                           accuracy_ci=wilson_interval(float(correct.sum()), n, level), accuracy_change=acc_change,
                           accuracy_change_ci=acc_ci, gold_logprob_change=lp_change, gold_logprob_change_ci=lp_ci,
                           changed_share=share, changed_share_ci=share_ci, run_dir=run_dir)


def _spearman_rows(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Spearman rho of x against each row of Y (average ranks for ties); nan where a row is constant."""
    from scipy.stats import rankdata
    rx = rankdata(x)
    rx = rx - rx.mean()
    ry = rankdata(Y, axis=1)
    ry = ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ry @ rx) / np.where(denom > 0, denom, 1.0), np.nan)


def monotonicity(alphas: Sequence[float], effects: Sequence[Any], level: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float | None, Interval]:
    """Spearman rho of the mean effect against alpha over the grid (effects[j]: the per-question effects at
    alphas[j], zeros at alpha 0), and its percentile bootstrap interval over questions (the same questions
    drawn for every alpha). None for fewer than 3 alphas or a constant mean effect."""
    x = np.asarray(alphas, dtype=np.float64)
    E = np.stack([np.asarray(e, dtype=np.float64) for e in effects]) if len(effects) else np.zeros((0, 0))
    if E.shape[0] != x.size:
        raise ValueError(f"one effect array per alpha: {E.shape[0]} arrays for {x.size} alphas")
    if x.size < 3 or E.shape[1] == 0:
        return None, (None, None)
    rho = _spearman_rows(x, E.mean(axis=1)[None])[0]
    if np.isnan(rho):
        return None, (None, None)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, E.shape[1], size=(n_resamples, E.shape[1]))
    means = np.stack([E[:, d].mean(axis=1) for d in draws])                                  # (resamples, alphas)
    rhos = _spearman_rows(x, means)
    rhos = rhos[~np.isnan(rhos)]
    if rhos.size == 0:
        return float(rho), (None, None)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(rhos, [tail, 100.0 - tail])
    return float(rho), (float(lo), float(hi))
