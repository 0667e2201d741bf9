"""Where the lens reads a question, and the caveats on what it can compare.

A record's row at position p is the activation computed with token p as the input: its next-token
prediction is token p + 1. The answer span (the results row's answer_positions, analysis/record_rows.
answer_span) lists the absolute positions of the generated tokens that spell the extracted answer, so
the position that EMITS the answer's first token is answer_positions[0] - 1: the last prompt token
(P - 1) when the answer opens the response ("Paris"), a later one after a preamble ("The capital of
France is Paris": the position of "is").

Readings:
    answer        that emitting position; a question without an answer span (no answer_positions, or
                  the extracted answer not found verbatim in the response) is left out and counted
    last_prompt   the last prompt token, whatever the response (the pre-issue-27 reading, labelled)
    auto          answer when any results row holds answer_positions (the run captured generated
                  positions), else last_prompt: a run scored by log-likelihood, or one that kept only
                  prompt positions, has no answer span to read

Public names:
    READINGS, MIN_PER_CLASS, SHARE_GAP
    resolve_reading(rows, reading="auto") -> (reading, words)
    read_position(row, record, n_prompt, reading, where) -> (position, answer start) or a skip reason (str)
    lens_caveats(reading, n_correct, n_incorrect, at_start, n_start) -> [caveat, ...]

Example:
    >>> resolve_reading([{"answer_positions": [14, 15]}])[0], resolve_reading([{}])[0]
    ('answer', 'last_prompt')
    >>> read_position({"answer_positions": [14, 15]}, None, 10, "answer", "r")   # 14 is emitted by 13
    (13, 14)
    >>> read_position({"answer_positions": []}, None, 10, "answer", "r"), read_position({}, None, 10, "last_prompt", "r")
    ('no_answer_span', (9, None))
    >>> lens_caveats("answer", 3, 12, {"correct": 0, "incorrect": 0}, {"correct": 3, "incorrect": 12})[0][:40]
    'the comparison rests on 3 correct and 12'
"""
from collections.abc import Mapping, Sequence
from typing import Any

from ...schema import ANSWER_POSITIONS
from ..record_rows import answer_span

READINGS = ("auto", "answer", "last_prompt")
MIN_PER_CLASS = 10     # fewer correct or incorrect questions than this: the comparison is anecdotal
SHARE_GAP = 0.2        # the groups' shares read at the response start differ by this much: a position confound
NO_SPAN = "no_answer_span"

_WORDS = {
    "answer": "the position that emits the extracted answer's first token (answer_positions[0] - 1: its "
              "activation predicts the answer's first token)",
    "last_prompt": "last prompt token (P-1), which predicts the response's first token",
}


def resolve_reading(rows: Sequence[Mapping[str, Any]], reading: str = "auto") -> tuple[str, str]:
    """(the reading used, where the lens reads in words): auto resolved from the rows (see the module docstring)."""
    if reading not in READINGS:
        raise ValueError(f"lens position {reading!r} is not one of {', '.join(READINGS)}")
    if reading != "auto":
        return reading, _WORDS[reading] + ("" if reading == "answer" else " (--lens_position last_prompt)")
    if any(ANSWER_POSITIONS in row for row in rows):
        return "answer", "auto: " + _WORDS["answer"]
    return "last_prompt", ("auto: " + _WORDS["last_prompt"] + "; no results row holds answer_positions (the run "
                           "captured no generated positions, or scored by log-likelihood)")


def read_position(row: Mapping[str, Any], record: Any, n_prompt: int, reading: str,
                  where: str) -> tuple[int, int | None] | str:
    """(the position to read, the answer span's first position or None) of one question, or NO_SPAN when
    reading "answer" finds no answer span (the question is left out and counted)."""
    if reading == "last_prompt":
        return n_prompt - 1, None
    span = answer_span(row, record, where)
    if not span:
        return NO_SPAN
    return span[0] - 1, span[0]


def lens_caveats(reading: str, n_correct: int, n_incorrect: int, at_start: Mapping[str, int],
                 n_start: Mapping[str, int]) -> list[str]:
    """The caveats on the correct-vs-incorrect comparison: fewer than MIN_PER_CLASS questions in a class; the
    groups read at the response start in shares that differ by SHARE_GAP or more (at_start: read at P-1 per
    group, n_start: the group's questions); the last-prompt reading."""
    out = []
    if min(n_correct, n_incorrect) < MIN_PER_CLASS:
        out.append(f"the comparison rests on {n_correct} correct and {n_incorrect} incorrect questions (fewer "
                   f"than {MIN_PER_CLASS} in a class): read it as anecdotal, its intervals as unstable")
    shares = {g: at_start.get(g, 0) / n_start[g] for g in ("correct", "incorrect") if n_start.get(g)}
    if reading == "answer" and len(shares) == 2 and abs(shares["correct"] - shares["incorrect"]) >= SHARE_GAP - 1e-9:
        out.append(f"the groups are read at different kinds of position: {at_start.get('correct', 0)}/"
                   f"{n_start['correct']} correct and {at_start.get('incorrect', 0)}/{n_start['incorrect']} "
                   f"incorrect answers open the response (read at the last prompt token), the rest after a "
                   f"preamble; a wrong text answer's extracted answer is the response's first line")
    if reading == "last_prompt":
        out.append("read at the last prompt token: right for an answer that opens the response (a letter, a "
                   "log-likelihood choice), but an answer after a preamble (\"The capital of France is Paris\") "
                   "is not read where it is emitted")
    return out
