"""Every grader is linear in the response length: each 25k-character degenerate response (the shapes that
made the old multiple-choice grader quadratic: 40k characters took 74 s, so 25k would take about 30 s)
is graded in under 0.25 s of CPU time (measured: at most about 0.03 s; 0.1 s at 100k characters)."""
import random
import time

import pytest

from activation_eval.eval.grading import grade

ROWS = {"text": {"answer": ["Paris"]},
        "number": {"answer": ["42"]},
        "choice": {"answer": ["B"], "choices": ["x", "y", "z", "w"]},
        "choice_all": {"answer": ["A", "B", "E"], "choices": ["a", "b", "c", "d", "e"]}}
LENGTH = 25_000     # characters: a quadratic grader takes tens of seconds, a linear one a few hundredths
LIMIT_S = 0.25      # CPU seconds per response (10 times the linear graders' measured worst)
UNITS = ["A ", "a ", "I ", "A. ", ". A ", "answer ", "answer a ", "answers are ", "A, ", "(A) ", "B) ", "(",
         "\n", " ", "= 1 ", "1 ", "1,", "- ", "twenty ", "Paris ", "not ", "not 1 ", "isn't Paris ", "not Paris, "]


def degenerate(n):
    cases = {repr(u): (u * (n // len(u) + 1))[:n] for u in UNITS}
    cases["answer + spaces"] = "answer" + " " * (n - 6)
    cases["numbers then cues"] = ("1 " * (n // 4) + "= " * (n // 4))[:n]
    rng = random.Random(0)
    cases["random"] = "".join(rng.choice("AB aI.()=1,\n-answer") for _ in range(n))
    return cases


def best_time(text, row, repeats=3):
    """CPU seconds of this process (not wall time: other processes on a shared machine do not count)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        grade(text, row)
        times.append(time.process_time() - start)
    return min(times)


@pytest.mark.parametrize("grader", list(ROWS))
def test_grader_is_linear_on_degenerate_responses(grader):
    row = ROWS[grader]
    times = {name: best_time(text, row, repeats=2) for name, text in degenerate(LENGTH).items()}
    slow = {name: round(t, 3) for name, t in times.items() if t > LIMIT_S}
    assert not slow, f"{grader}: {LENGTH}-character responses graded in over {LIMIT_S} s of CPU time: {slow}"
