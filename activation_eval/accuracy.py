"""Accuracy with its 95% interval: the one method behind the CLI summary, summary.json and the report.

A leaf module (imports nothing of the project, no torch), so that eval/ and run/ (the summary) and
analysis/ (the report) give the same numbers for one run (tests/test_layout.py).

Public names:
    accuracy_stats(correct, chance=None, questions=None) -> {"n", "correct", "accuracy", "stderr", "ci95",
                       "chance", "small_n"[, "questions", "effective_n": when a question has several answers]}
    wilson_interval(correct, n, level=0.95) -> (low, high)    Wilson score interval; n may be fractional
    effective_sample_size(correct, questions) -> float        n / design effect, clustered by question
    INTERVAL_METHOD    how the interval is computed, in words (for printed tables and reports)
    SMALL_N            5: a group of fewer questions is flagged ("small_n": True; a * in the tables)
    SMALL_N_NOTE       the footnote the tables print for the flag

Example:
    >>> s = accuracy_stats([True, False, True, True])
    >>> s["accuracy"], round(s["stderr"], 4), [round(x, 4) for x in s["ci95"]]
    (0.75, 0.2165, [0.3006, 0.9544])
    >>> [round(x, 4) for x in wilson_interval(0, 12)]         # never zero width
    [0.0, 0.2425]

The interval is the Wilson score interval (Wilson 1927; what scipy's binomtest(...).proportion_ci(
method="wilson") gives): it stays inside [0, 1] and never collapses to a point, also at 0/n or n/n.
When a question has several answers (--num_samples > 1) the answers of one question are not
independent: the interval is Wilson's with the effective sample size n / deff, where the design
effect deff = (cluster-robust variance of the accuracy) / (binomial variance p (1 - p) / n), the
cluster-robust variance being sum over questions of (right - p * answers)^2 / n^2 (the between-question
variance of per-question accuracy). deff is kept at 1 or more (never narrower than independent
answers); with every answer right or every answer wrong it cannot be estimated and the effective size
is n^2 / sum(answers^2), the size when every question's answers agree (= the number of questions when
each has as many answers). stderr is sqrt(p (1 - p) / effective n): the binomial one without clusters.
"""
import math
from statistics import NormalDist

__all__ = ["accuracy_stats", "wilson_interval", "effective_sample_size", "INTERVAL_METHOD", "SMALL_N", "SMALL_N_NOTE"]

INTERVAL_METHOD = ("Wilson score 95% interval; with several answers per question, Wilson over the "
                   "effective number of answers n / design effect (clustered by question)")
SMALL_N = 5
SMALL_N_NOTE = (f"* fewer than {SMALL_N} questions: the interval is wide and its 95% coverage only approximate; "
                "read such rows with care")


def wilson_interval(correct, n, level=0.95):
    """Wilson score interval of correct / n as (low, high); (None, None) when n is 0.

    n (and correct) may be fractional: an effective sample size. 0 / n gives (0.0, high > 0),
    n / n gives (low < 1, 1.0).
    """
    if not n or n <= 0:
        return None, None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = min(max(correct / n, 0.0), 1.0)
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if p == 0 else max(0.0, center - half)
    high = 1.0 if p == 1 else min(1.0, center + half)
    return low, high


def effective_sample_size(correct, questions):
    """n / design effect of 0/1 answers `correct` whose question ids are `questions` (see the module
    docstring); n itself when every question has one answer."""
    flags = [bool(c) for c in correct]
    n = len(flags)
    if n == 0:
        return 0.0
    index, right, answers = {}, [], []
    for flag, q in zip(flags, questions):
        g = index.setdefault(q, len(index))
        if g == len(right):
            right.append(0)
            answers.append(0)
        right[g] += flag
        answers[g] += 1
    if len(answers) == n:
        return float(n)
    p = sum(flags) / n
    if p in (0.0, 1.0):
        return n * n / sum(a * a for a in answers)
    robust_var = sum((r - p * a) ** 2 for r, a in zip(right, answers)) / (n * n)
    if robust_var <= 0:
        return float(n)
    return min(float(n), p * (1 - p) / robust_var)     # deff >= 1


def accuracy_stats(correct, chance=None, questions=None):
    """Accuracy of a list of booleans with its standard error and 95% Wilson interval (module docstring).

    chance: the mean chance accuracy of the same questions (the baseline), kept as given.
    questions: the question id of each flag, when a question may have several (--num_samples): then
    the interval and stderr use the effective sample size, and "questions" and "effective_n" are added.
    small_n: fewer than SMALL_N questions (answers, without `questions`). An empty list gives n = 0 and
    None for every figure.
    """
    flags = [bool(c) for c in correct]
    n, k = len(flags), sum(flags)
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "stderr": None, "ci95": None, "chance": chance,
                "small_n": True}
    p = k / n
    clusters = len(set(questions)) if questions is not None else n
    n_eff = effective_sample_size(flags, questions) if clusters < n else float(n)
    low, high = wilson_interval(p * n_eff, n_eff)
    out = {"n": n, "correct": k, "accuracy": p, "stderr": math.sqrt(p * (1 - p) / n_eff), "ci95": [low, high],
           "chance": chance, "small_n": clusters < SMALL_N}
    if clusters < n:
        out.update(questions=clusters, effective_n=n_eff)
    return out
