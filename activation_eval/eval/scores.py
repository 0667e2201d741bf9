"""Accuracy with its uncertainty and its chance baseline, over graded results rows.

Public names:
    accuracy_stats(correct, chance=None, questions=None) -> {"n", "correct", "accuracy", "stderr", "ci95",
                                    "chance"[, "questions", "effective_n": when clustered]}
                                    (from activation_eval/accuracy.py: the one interval method, Wilson,
                                    shared with the report)
    chance_accuracy(row) -> float   what guessing scores on one benchmark row (0 for free text)

Example:
    >>> s = accuracy_stats([True, False, True, True])
    >>> s["accuracy"], round(s["stderr"], 4), [round(x, 4) for x in s["ci95"]]
    (0.75, 0.2165, [0.3006, 0.9544])
    >>> chance_accuracy({"choices": ["a", "b"], "grader": "choice"})
    0.5
"""
from ..accuracy import accuracy_stats

__all__ = ["accuracy_stats", "chance_accuracy"]


def chance_accuracy(row):
    """The expected accuracy of a uniform random guess: 1/choices for one gold letter, 1/(2^choices - 1)
    for choice_all (any non-empty set of letters), true/choices for choice:any (one letter, any true
    one counts), 0 for number and text answers.

    Example:
        >>> chance_accuracy({"choices": ["a", "b", "c", "d"], "grader": "choice:index"})
        0.25
    """
    grader = str(row.get("grader") or "")
    n = len(row.get("choices") or [])
    if grader.startswith("choice_all") and n:
        return 1 / (2 ** n - 1)
    if grader == "choice:any" and n:                 # any of the true choices (TruthfulQA mc2): their share
        return len(row.get("answer") or [1]) / n
    if grader.startswith("choice") and n:
        return 1 / n
    return 0.0
