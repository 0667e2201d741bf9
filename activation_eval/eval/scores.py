"""Accuracy with its uncertainty and its chance baseline, over graded results rows.

Public names:
    accuracy_stats(correct, chance=None) -> {"n", "correct", "accuracy", "stderr", "ci95", "chance"}
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


def accuracy_stats(correct, chance=None):
    """Accuracy of a list of booleans, with its standard error and 95% bootstrap interval.

    chance: the mean chance accuracy of the same questions (the baseline), kept as given.
    An empty list gives n = 0 and None for every figure.
    """
    flags = [bool(c) for c in correct]
    n, k = len(flags), sum(flags)
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "stderr": None, "ci95": None, "chance": chance}
    p = k / n
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    resampled = rng.binomial(n, p, size=BOOTSTRAP_RESAMPLES) / n
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"n": n, "correct": k, "accuracy": p, "stderr": math.sqrt(p * (1 - p) / n),
            "ci95": [float(low), float(high)], "chance": chance}


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
