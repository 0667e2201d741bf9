"""Accuracy with its uncertainty and its chance baseline, over graded results rows.

Public names:
    accuracy_stats(correct, chance=None, questions=None) -> {"n", "correct", "accuracy", "stderr", "ci95",
                                    "chance"[, "questions": how many, when clustered]}
    chance_accuracy(row) -> float   what guessing scores on one benchmark row (0 for free text)
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

Example:
    >>> s = accuracy_stats([True, False, True, True])
    >>> s["accuracy"], round(s["stderr"], 4), s["ci95"]
    (0.75, 0.2165, [0.25, 1.0])

stderr is the binomial standard error sqrt(p (1 - p) / n). ci95 is the 95% percentile bootstrap
interval over questions (BOOTSTRAP_RESAMPLES resamples, seed BOOTSTRAP_SEED): for 0/1 scores the
number correct in a resample of n questions drawn with replacement is exactly Binomial(n, k/n), so
the resampled accuracies are drawn as binomial counts / n: the same distribution as resampling the
rows, in O(resamples) time and memory whatever n is.
"""
import math

import numpy as np

__all__ = ["accuracy_stats", "chance_accuracy", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED"]

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 1234


def accuracy_stats(correct, chance=None, questions=None):
    """Accuracy of a list of booleans, with its standard error and 95% bootstrap interval.

    chance: the mean chance accuracy of the same questions (the baseline), kept as given.
    questions: the question id of each flag, when a question may have several (--num_samples):
    the answers of one question are not independent, so the standard error is the cluster-robust
    one, sqrt(sum over questions of (correct - p * answers)^2) / answers, and the bootstrap resamples
    questions with all their answers (with one answer per question both are the plain ones).
    An empty list gives n = 0 and None for every figure.
    """
    flags = [bool(c) for c in correct]
    n, k = len(flags), sum(flags)
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "stderr": None, "ci95": None, "chance": chance}
    p = k / n
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    clusters = len(set(questions)) if questions is not None else n
    if clusters < n:
        stderr, resampled = _clustered(flags, questions, p, rng)
    else:
        stderr, resampled = math.sqrt(p * (1 - p) / n), rng.binomial(n, p, size=BOOTSTRAP_RESAMPLES) / n
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"n": n, "correct": k, "accuracy": p, "stderr": stderr, "ci95": [float(low), float(high)],
            "chance": chance, **({"questions": clusters} if clusters < n else {})}


_BOOTSTRAP_DRAWS = 10**8        # the clustered bootstrap draws resamples x questions indices; at most this many


def _clustered(flags, questions, p, rng):
    """(cluster-robust standard error, bootstrap accuracies resampling whole questions)."""
    index = {}
    group = np.array([index.setdefault(q, len(index)) for q in questions])
    right = np.bincount(group, weights=np.asarray(flags, dtype=float))
    answers = np.bincount(group).astype(float)
    n = answers.sum()
    stderr = float(np.sqrt(np.sum((right - p * answers) ** 2)) / n)
    g = len(answers)
    resamples = max(1000, min(BOOTSTRAP_RESAMPLES, _BOOTSTRAP_DRAWS // g))
    out = np.empty(resamples)
    step = max(1, 2**22 // g)                               # ~32 MB of indices at a time
    for start in range(0, resamples, step):
        picks = rng.integers(0, g, size=(min(step, resamples - start), g))
        out[start:start + len(picks)] = right[picks].sum(axis=1) / answers[picks].sum(axis=1)
    return stderr, out


def chance_accuracy(row):
    """The expected accuracy of a uniform random guess: 1/choices for one gold letter, 1/(2^choices - 1)
    for choice_all (any non-empty set of letters), 0 for number and text answers.

    Example:
        >>> chance_accuracy({"choices": ["a", "b", "c", "d"], "grader": "choice:index"})
        0.25
    """
    grader = str(row.get("grader") or "")
    n = len(row.get("choices") or [])
    if grader.startswith("choice_all") and n:
        return 1 / (2 ** n - 1)
    if grader.startswith("choice") and n:
        return 1 / n
    return 0.0
