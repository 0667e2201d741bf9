"""Train and test kept apart: a probe scored on another run's (or group's) questions must not be
scored on questions it was trained on, and two runs may differ in what they recorded.

A question counts as shared when the training set holds a row with its id, or with the same prompt
hash (sha256 of the row's prompt text, else its question, whitespace collapsed: the same question
under another id, e.g. a benchmark re-exported). Shared test rows are left out and counted; with
keep=True (--keep_overlap) they stay and the figures are labelled in-sample. A test set that is
wholly shared (a copy of the training run) leaves nothing to measure transfer on: an error saying so,
never a transfer of 1.000.

Controls read the confidence fields of the rows (controls.OUTPUT_SCORE_FIELDS). A control trained on
one run and scored on the other needs its field in both: a field that every row of one run carries
but the other run lacks is removed from both runs' rows (copies), with a note naming it.

Public names:
    prompt_hash(row) -> str | None          the hash above (None: no prompt or question text)
    shared_rows(train_rows, test_rows) -> (by id (n_test,) bool, by prompt hash (n_test,) bool)
    split_overlap(train_rows, test_rows, keep=False) -> (kept test row indices, schema Overlap)
    TestSplit(train_rows, test_rows, keep, names)
                                            both at once for a --test_run: .keep, .overlap, .rows,
                                            .test_rows, .notes; .test_matrix(layer, X, X_test)
                                            keeps the test rows and checks the hidden sizes
    common_fields(train_rows, test_rows, fields, names) -> (train rows, test rows, notes)
    split_fields(split, test_rows) -> {"overlap", "notes"}
                                            a TestRunResult's fields from the split (none: nothing shared)
    overlap_line(overlap) -> str            "12 of 40 questions shared with the training run (10 by id, ...)"

Example:
    >>> train = [{"id": "q1", "prompt": "What is 2+2?"}, {"id": "q2", "prompt": "Capital of France?"}]
    >>> test = [{"id": "q1", "prompt": "What is 2 + 2?"}, {"id": "x9", "prompt": "Capital  of France?"},
    ...         {"id": "q3", "prompt": "Who wrote Hamlet?"}]
    >>> keep, overlap = split_overlap(train, test)
    >>> keep.tolist(), overlap.shared_by_id, overlap.shared_by_prompt, overlap.dropped
    ([2], 1, 1, 2)
    >>> split_overlap(train, test, keep=True)[0].tolist()
    [0, 1, 2]
"""
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ... import schema
from ...schema.transfer import Overlap
from .controls import OUTPUT_SCORE_FIELDS

# every single confidence field a control may read: the controls' and every score with a fixed orientation
SCORE_FIELDS = tuple(dict.fromkeys((*OUTPUT_SCORE_FIELDS, *schema.SCORE_ORIENTATION)))

__all__ = ["prompt_hash", "shared_rows", "split_overlap", "TestSplit", "common_fields", "overlap_line", "split_fields"]

Rows = Sequence[Mapping[str, Any]]


def prompt_hash(row: Mapping[str, Any]) -> str | None:
    """sha256 (16 hex digits) of the row's prompt text (else its question), whitespace collapsed."""
    text = row.get("prompt") or row.get("question")
    if not isinstance(text, str) or not text.strip():
        return None
    return hashlib.sha256(" ".join(text.split()).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _id(row: Mapping[str, Any]) -> str | None:
    v = row.get("id")
    return None if v is None else str(v)


def shared_rows(train_rows: Rows, test_rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(shared by id, shared by prompt hash): boolean masks over the test rows."""
    ids = {i for i in map(_id, train_rows) if i is not None}
    hashes = {h for h in map(prompt_hash, train_rows) if h is not None}
    by_id = np.array([_id(r) is not None and _id(r) in ids for r in test_rows], dtype=bool)
    by_prompt = np.array([(h := prompt_hash(r)) is not None and h in hashes for r in test_rows], dtype=bool)
    return by_id, by_prompt


def split_overlap(train_rows: Rows, test_rows: Rows, keep: bool = False) -> tuple[np.ndarray, Overlap]:
    """(indices of the test rows to score, the Overlap): shared rows left out unless `keep`."""
    by_id, by_prompt = shared_rows(train_rows, test_rows)
    shared = by_id | by_prompt
    kept = np.arange(len(test_rows)) if keep else np.flatnonzero(~shared)
    return kept, Overlap(n_test=len(test_rows), shared_by_id=int(by_id.sum()), shared_by_prompt=int(by_prompt.sum()),
                         shared=int(shared.sum()), dropped=0 if keep else int(shared.sum()),
                         in_sample=bool(keep and shared.any()))


def _carries(rows: Rows, field: str) -> int:
    return sum(isinstance(v := r.get(field), (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))
               for r in rows)


def common_fields(train_rows: Rows, test_rows: Rows, fields: Sequence[str],
                  names: tuple[str, str]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[str]]:
    """The rows of both runs without the `fields` that every row of one run carries and the other
    run's rows do not all carry (copies; the rows are untouched when nothing differs), and a note
    naming each field left out."""
    uneven, notes = [], []
    for field in fields:
        have = (_carries(train_rows, field), _carries(test_rows, field))
        full = (have[0] == len(train_rows), have[1] == len(test_rows))
        if full[0] != full[1]:
            i = 0 if full[0] else 1
            lacking = len((train_rows, test_rows)[1 - i]) - have[1 - i]
            uneven.append(field)
            notes.append(f"{field} control left out: the {('training', 'test')[i]} run {names[i]!r} carries it, "
                         f"{lacking} of {len((train_rows, test_rows)[1 - i])} rows of the "
                         f"{('training', 'test')[1 - i]} run {names[1 - i]!r} lack it")
    if not uneven:
        return list(train_rows), list(test_rows), notes
    strip = set(uneven)
    return ([{k: v for k, v in r.items() if k not in strip} for r in train_rows],
            [{k: v for k, v in r.items() if k not in strip} for r in test_rows], notes)


class TestSplit:
    """The test run's questions kept apart from the training run's, and the fields both runs carry;
    fixed by the first layer's rows (every layer covers the same questions)."""
    __test__ = False                         # not a pytest test class

    def __init__(self, train_rows: Rows, test_rows: Rows, keep: bool, names: tuple[str, str]) -> None:
        self.names = names
        self.keep, self.overlap = split_overlap(train_rows, test_rows, keep)
        if len(self.keep) == 0:
            o = self.overlap
            raise ValueError(f"the test run {names[1]!r} shares all {o.n_test} of its questions with the training run "
                             f"{names[0]!r} ({o.shared_by_id} by id, {o.shared_by_prompt} by prompt hash): it is "
                             f"overlapping, nothing is left to measure transfer on; test on another run's questions, "
                             f"or pass --keep_overlap to score them in-sample")
        kept = [test_rows[i] for i in self.keep]
        self.rows, self.test_rows, self.notes = common_fields(train_rows, kept, SCORE_FIELDS, names)
        if self.overlap.dropped:
            self.notes.insert(0, f"{overlap_line(self.overlap)} left out of the test run")
        elif self.overlap.in_sample:
            self.notes.insert(0, f"{overlap_line(self.overlap)} kept (--keep_overlap): the test figures are partly "
                                 f"in-sample")

    def test_matrix(self, layer: str, X: Any, X_test: Any) -> Any:
        """X_test's kept rows; a hidden size other than X's is an error naming both runs."""
        if np.shape(X)[1:] != np.shape(X_test)[1:]:
            raise ValueError(f"hidden sizes differ at {layer}: the training run {self.names[0]!r} has "
                             f"{tuple(np.shape(X))}, the test run {self.names[1]!r} has {tuple(np.shape(X_test))} "
                             f"(questions x hidden); a probe trained on one model cannot score another's activations")
        return np.asarray(X_test)[self.keep]


def overlap_line(overlap: Overlap) -> str:
    """"12 of 40 questions shared with the training run (10 by id, 5 by prompt hash)"."""
    return (f"{overlap.shared} of {overlap.n_test} questions shared with the training run ({overlap.shared_by_id} by "
            f"id, {overlap.shared_by_prompt} by prompt hash)")


def split_fields(split: "TestSplit | None", test_rows: Rows | None) -> dict[str, Any]:
    """{"overlap", "notes"} of a TestRunResult: the split's, or (in-memory data split elsewhere) nothing shared."""
    if split is not None:
        return {"overlap": split.overlap, "notes": list(split.notes)}
    n = len(test_rows or ())
    return {"overlap": Overlap(n_test=n, shared_by_id=0, shared_by_prompt=0, shared=0, dropped=0, in_sample=False),
            "notes": []}
