"""Every grader is linear in the response length: each 100k-character degenerate response (the shapes that
made the old multiple-choice grader quadratic: 40k characters took 74 s, so 100k would take minutes)
is graded in under 2 s here (the issue asks for 1 s; measured: at most 0.5 s unloaded, 1.1 s on this
shared 2-core machine under load; the bound leaves room for that noise, a quadratic grader takes minutes)."""
import random
import time

import pytest

from activation_eval.eval.grading import grade

ROWS = {"text": {"answer": ["Paris"]},
        "number": {"answer": ["42"]},
        "choice": {"answer": ["B"], "choices": ["x", "y", "z", "w"]},
        "choice_all": {"answer": ["A", "B", "E"], "choices": ["a", "b", "c", "d", "e"]}}
UNITS = ["A ", "a ", "I ", "A. ", ". A ", "answer ", "answer a ", "answers are ", "A, ", "(A) ", "B) ", "(",
         "\n", " ", "= 1 ", "1 ", "1,", "- ", "twenty ", "Paris "]


def degenerate(n):
    cases = {repr(u): (u * (n // len(u) + 1))[:n] for u in UNITS}
    cases["answer + spaces"] = "answer" + " " * (n - 6)
    cases["numbers then cues"] = ("1 " * (n // 4) + "= " * (n // 4))[:n]
    rng = random.Random(0)
    cases["random"] = "".join(rng.choice("AB aI.()=1,\n-answer") for _ in range(n))
    return cases


def best_time(text, row, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        grade(text, row)
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize("grader", list(ROWS))
def test_grader_is_linear_on_degenerate_responses(grader):
    row = ROWS[grader]
    times = {name: best_time(text, row, repeats=2) for name, text in degenerate(100_000).items()}
    slow = {name: round(t, 3) for name, t in times.items() if t > 2.0}
    assert not slow, f"{grader}: 100k-character responses graded in over 2 s: {slow}"
