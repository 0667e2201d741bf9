"""Transfer of a probe across groups of questions: trained on one group, how well does it rank another?

Orgad et al. (2024) found probes of answer correctness to be skill-specific: high AUROC within a
dataset, near chance across. A transfer matrix makes that visible: row g = trained on group g's
questions, column h = scored on group h's; the diagonal is the out-of-fold AUROC within the group
(cross-validated, so it is not scored on its own training questions), off-diagonal cells use a
probe fitted on all of g. A direction shared by all groups transfers; a group-specific one does not.
Groups are the values of a results field (--transfer category) or the runs (--test_run: the
training run and the test run).

Each cell carries a percentile bootstrap interval over the tested group's questions (clustered by
question when a run has several samples per question). A cell is null when the training group has
fewer than 2 questions of a class or the tested group lacks a class (no AUROC exists).

Train and test kept apart (overlap.py): an off-diagonal cell leaves out the tested group's rows that
the training group shares (same id, e.g. another sample of the same question, or same prompt hash);
`shared` counts them per cell. With keep_overlap they stay and the result says in_sample.

Cost grows with the rows, not with the number of groups squared: at most MAX_GROUPS groups are kept
(the largest, ties by name) among those with at least MIN_ROWS rows and MIN_PER_CLASS of each class;
every other group is merged into one group named OTHER (left out, counted, when it is itself too
small), with a note naming how many groups and why. Group texts are labels of at most folds.MAX_LABEL
characters (longer ones: their start, an ellipsis and a hash; counted in `shortened`). The matrix, its
fits and its bootstrap are those of the kept groups only: (kept + 1)^2 cells, each resampled
CELLS_PER_CHUNK weights at a time, each on at most MAX_TESTED rows of its tested group (a seeded random
sample of a larger group, the same in every cell of its column; trained on all rows; with a note). So the
bootstrap costs at most (MAX_GROUPS + 1)^2 x MAX_TESTED x resamples. The two runs of --test_run are never merged (limit None).

Public names:
    transfer_matrix(X, y, group_of, rows, make_model, n_boot=2000, seed=0, n_splits=5, clusters=None,
                    level=0.95, by="group", layer=None, keep_overlap=False, max_groups=MAX_GROUPS,
                    min_rows=MIN_ROWS) -> TransferResult (schema/transfer.py)
    bound_groups(labels, y, max_groups, min_rows) -> (labels with merged groups as OTHER, None = left out;
                                                      the notes; a GroupBounds)
    CellAuroc(proba, y)(W) -> (m,)                 bootstrap.macro_auroc of many weightings, the scores sorted once
    MAX_GROUPS, MIN_ROWS, MIN_PER_CLASS, OTHER, MAX_TESTED, CELLS_PER_CHUNK

Example:
    >>> from activation_eval.analysis.probe.models import make_probe
    >>> rng = np.random.default_rng(0)
    >>> n = 240; y = rng.integers(0, 2, n); group = np.array(["a", "b", "c"] * 80)
    >>> X = rng.normal(size=(n, 8)); X[:, 0] += 2.0 * (2 * y - 1)          # one direction in every group
    >>> rows = [{"id": str(i), "category": g} for i, g in enumerate(group)]
    >>> res = transfer_matrix(X, y, group, rows, lambda: make_probe("logistic"), n_boot=1000, by="category")
    >>> res.groups, min(min(r) for r in res.auroc) > 0.85            # every cell well above chance
    (['a', 'b', 'c'], True)
    >>> many = group.astype(object); many[:30] = [f"tiny{i}" for i in range(30)]    # 30 groups of one row each
    >>> res = transfer_matrix(X, y, many, rows, lambda: make_probe("logistic"), n_boot=1000, by="category")
    >>> res.groups, res.n_values, res.merged, res.notes[0].split(":")[0]
    (['(other)', 'a', 'b', 'c'], 33, 30, "30 of 33 category values merged into '(other)'")
"""
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...schema.estimates import Interval
from ...schema.transfer import TransferResult
from .bootstrap import interval, resample_counts
from .folds import MAX_LABEL, bounded_labels, make_folds
from .overlap import prompt_hash

MAX_GROUPS = 20              # groups kept as their own row and column (the largest); the rest are merged
MIN_ROWS = 10                # a group with fewer rows is merged into OTHER
MIN_PER_CLASS = 2            # ... and one with fewer rows of a class (no probe can be trained on it)
OTHER = "(other)"            # the label of the merged groups
MAX_TESTED = 2_000           # a larger group is scored on a seeded sample of this many of its rows
CELLS_PER_CHUNK = 2_000_000  # bootstrap weights held at once per cell (resamples x tested rows)


@dataclasses.dataclass(frozen=True)
class GroupBounds:
    """What bound_groups did: distinct values, groups merged into OTHER, rows left out, labels shortened."""
    n_values: int
    merged: int
    skipped_rows: int
    shortened: int


def transfer_matrix(X: Any, y: Any, group_of: Sequence[Any], rows: Sequence[Mapping[str, Any]],
                    make_model: Callable[[], Any], n_boot: int = 2000, seed: int = 0, n_splits: int = 5,
                    clusters: Any = None, level: float = 0.95, by: str = "group",
                    layer: str | None = None, keep_overlap: bool = False, max_groups: int | None = MAX_GROUPS,
                    min_rows: int = MIN_ROWS) -> TransferResult:
    """The transfer matrix of `make_model()` probes on X (n, hidden) for class indices y (n,); group_of
    (n,) the group of each question; rows the results rows (folds keep categories); `by` names what the
    groups are and `layer` where X comes from, for the result; max_groups None keeps every group (runs);
    see the module docstring."""
    y = np.asarray(y)
    labels, notes, bounds = bound_groups(group_of, y, max_groups, min_rows, by)
    groups = sorted({g for g in labels if g is not None})
    code = {g: i for i, g in enumerate(groups)}
    group_code = np.array([-1 if g is None else code[g] for g in labels], dtype=np.int64)
    members = {g: np.flatnonzero(group_code == code[g]) for g in groups}
    tested, shared = _tested_rows(groups, members, rows, keep_overlap, _tested_pool(members, seed, by, notes))
    scores = _fit_groups(np.asarray(X), y, groups, members, tested, rows, make_model, n_splits, seed, clusters,
                         notes)
    auroc, auroc_ci = _score_cells(y, groups, tested, scores, n_boot, seed, clusters, level, notes)
    return TransferResult(by=by, layer=layer, groups=groups, n={g: int(len(members[g])) for g in groups},
                          level=level, auroc=auroc, auroc_ci=auroc_ci, notes=notes,
                          shared=[[shared[g, h] for h in groups] for g in groups],
                          in_sample=bool(keep_overlap and any(shared.values())), n_values=bounds.n_values,
                          merged=bounds.merged, skipped_rows=bounds.skipped_rows, shortened=bounds.shortened,
                          max_groups=max_groups, min_rows=min_rows, max_label=MAX_LABEL, max_tested=MAX_TESTED,
                          n_tested={g: int(len(tested[g, g])) for g in groups})


def bound_groups(group_of: Sequence[Any], y: np.ndarray, max_groups: int | None, min_rows: int,
                 by: str = "group") -> tuple[list[str | None], list[str], GroupBounds]:
    """(each row's group label: its bounded text, OTHER when merged, None when left out; notes; GroupBounds).
    A group is kept when it has at least `min_rows` rows and MIN_PER_CLASS of every class and is among the
    `max_groups` largest such (ties by label); the rest are merged into OTHER, which is left out when it is
    itself below those sizes. One pass over the rows plus a sort of the groups: O(n + G log G)."""
    labels, shortened = bounded_labels(group_of)
    names, code = np.unique(np.array(labels, dtype=object).astype(str), return_inverse=True)
    code = code.reshape(-1)
    notes = [] if not shortened else [f"{shortened} {by} value(s) longer than {MAX_LABEL} characters shortened to "
                                      f"their start, an ellipsis and a hash"]
    n_classes = int(y.max()) + 1 if len(y) else 0
    per_class = np.bincount(code * n_classes + y, minlength=len(names) * n_classes).reshape(len(names), n_classes)
    size = per_class.sum(axis=1)
    if max_groups is None:
        return list[str | None](labels), notes, GroupBounds(len(names), 0, 0, shortened)
    big = (size >= min_rows) & (per_class.min(axis=1) >= MIN_PER_CLASS)
    ranked = sorted(np.flatnonzero(big).tolist(), key=lambda i: (-int(size[i]), names[i]))
    keep = np.zeros(len(names), dtype=bool)
    keep[ranked[:max_groups]] = True
    if keep.all():
        return list[str | None](labels), notes, GroupBounds(len(names), 0, 0, shortened)
    out: list[str | None] = [labels[i] if keep[c] else OTHER for i, c in enumerate(code.tolist())]
    gone = ~keep
    n_small, n_beyond = int((~big).sum()), int(big.sum() - keep.sum())
    other_counts = per_class[gone].sum(axis=0)
    head = ", ".join(repr(str(names[i])) for i in np.flatnonzero(gone)[:3]) + (", ..." if gone.sum() > 3 else "")
    why = (f"{n_beyond} beyond the {max_groups} largest, {n_small} with fewer than {min_rows} rows or fewer than "
           f"{MIN_PER_CLASS} of a class")
    skipped = 0
    if other_counts.sum() < min_rows or other_counts.min() < MIN_PER_CLASS:
        skipped = int(other_counts.sum())
        out = [None if g == OTHER else g for g in out]
        notes.insert(0, f"{int(gone.sum())} of {len(names)} {by} values left out ({why}; e.g. {head}): merged into "
                        f"{OTHER!r} they would still hold only {skipped} rows or too few of a class; {skipped} rows "
                        f"not in the matrix")
    else:
        notes.insert(0, f"{int(gone.sum())} of {len(names)} {by} values merged into {OTHER!r}: {why} (e.g. {head}); "
                        f"{OTHER!r} holds their {int(other_counts.sum())} rows")
    return out, notes, GroupBounds(len(names), int(gone.sum()), skipped, shortened)


def _tested_pool(members: dict[str, np.ndarray], seed: int, by: str, notes: list[str]) -> dict[str, np.ndarray]:
    """The rows of each group its column scores: all of them, or a seeded random sample of MAX_TESTED rows of a
    larger group (sorted; the same for every cell of the column, so its cells stay paired), with a note."""
    rng = np.random.default_rng([int(seed), 29])
    pool = {g: m if len(m) <= MAX_TESTED else np.sort(rng.choice(m, MAX_TESTED, replace=False))
            for g, m in members.items()}
    big = [g for g, m in members.items() if len(m) > MAX_TESTED]
    if big:
        notes.append(f"{len(big)} {by} group(s) larger than {MAX_TESTED} rows (e.g. {big[0]!r}, "
                     f"{len(members[big[0]])} rows) scored on a seeded random sample of {MAX_TESTED} of their rows "
                     f"in every cell of their column (trained on all): their intervals are those of the sample")
    return pool


def _tested_rows(groups: list[str], members: dict[str, np.ndarray], rows: Sequence[Mapping[str, Any]],
                 keep_overlap: bool, pool: dict[str, np.ndarray] | None = None
                 ) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], int]]:
    """({(train g, test h): the rows of h the cell scores (of pool[h])}, {(g, h): rows of h that g shares}). Each
    row's id and prompt hash are read once; a cell looks its tested rows up in the training group's sets."""
    pool = members if pool is None else pool
    key_of = {int(i): (_id(rows[i]), prompt_hash(rows[i])) for g in groups for i in members[g]}
    ids = {g: {key_of[int(i)][0] for i in members[g]} - {None} for g in groups}
    hashes = {g: {key_of[int(i)][1] for i in members[g]} - {None} for g in groups}
    tested, shared = {}, {}
    for g in groups:
        for h in groups:
            if g == h:                     # out-of-fold within the group
                tested[g, h], shared[g, h] = pool[h], 0
                continue
            both = np.array([key_of[int(i)][0] in ids[g] or key_of[int(i)][1] in hashes[g] for i in members[h]],
                            dtype=bool).reshape(-1)
            shared[g, h] = int(both.sum())
            kept = members[h] if keep_overlap else members[h][~both]
            tested[g, h] = kept if len(pool[h]) == len(members[h]) else np.intersect1d(kept, pool[h], True)
    return tested, shared


def _id(row: Mapping[str, Any]) -> str | None:
    v = row.get("id")
    return None if v is None else str(v)


def _fit_groups(X: np.ndarray, y: np.ndarray, groups: list[str], members: dict[str, np.ndarray],
                tested: dict[tuple[str, str], np.ndarray], rows: Sequence[Mapping[str, Any]],
                make_model: Callable[[], Any], n_splits: int, seed: int, clusters: Any,
                notes: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """{(train g, test h): class probabilities of the cell's tested rows}: out-of-fold within g, else
    fitted on all of g."""
    n_classes = int(y.max()) + 1
    scores = {}
    for g in groups:
        idx = members[g]
        counts = np.bincount(y[idx], minlength=n_classes)
        if counts.min() < 2:
            notes.append(f"{g}: {int(counts.min())} question(s) of a class, too few to train on")
            continue
        sub = _renumber(clusters, idx)
        splits, _ = make_folds(y[idx], [rows[i] for i in idx], n_splits, seed, None, [], sub)
        oof = np.zeros((len(idx), n_classes))
        for train, test in splits:
            oof[test] = make_model().fit(X[idx][train], y[idx][train]).predict_proba(X[idx][test])
        scores[g, g] = oof[np.searchsorted(idx, tested[g, g])]        # the column's tested rows
        model = make_model().fit(X[idx], y[idx])
        for h in groups:
            if h != g and len(tested[g, h]):
                scores[g, h] = model.predict_proba(X[tested[g, h]])
    return scores


def _score_cells(y: np.ndarray, groups: list[str], tested: dict[tuple[str, str], np.ndarray],
                 scores: dict[tuple[str, str], np.ndarray], n_boot: int, seed: int, clusters: Any, level: float,
                 notes: list[str]) -> tuple[list[list[float | None]], list[list[Interval | None]]]:
    """Each cell's AUROC and its percentile interval over its tested rows, resampled; the cells of a column
    that test the same rows share their resamples (paired), drawn CELLS_PER_CHUNK weights at a time."""
    n_classes = int(y.max()) + 1
    auroc: list[list[float | None]] = [[None] * len(groups) for _ in groups]
    auroc_ci: list[list[Interval | None]] = [[None] * len(groups) for _ in groups]
    for j, h in enumerate(groups):
        if len(np.unique(y[tested[h, h]])) < n_classes:
            notes.append(f"{h}: lacks a class, no AUROC can be scored on it")
            continue
        same: dict[bytes, list[int]] = {}            # tested rows -> the rows of the matrix that test them
        for i, g in enumerate(groups):
            if (g, h) not in scores:
                continue
            if len(np.unique(y[tested[g, h]])) < n_classes:
                notes.append(f"{g} -> {h}: lacks a class once the shared rows are left out, no AUROC")
                continue
            same.setdefault(tested[g, h].tobytes(), []).append(i)
        for trainers in same.values():
            idx = tested[groups[trainers[0]], h]
            cells = [CellAuroc(scores[groups[i], h], y[idx]) for i in trainers]
            boot: list[list[np.ndarray]] = [[] for _ in trainers]
            chunk = max(1, CELLS_PER_CHUNK // len(idx))
            for W in resample_counts(len(idx), n_boot, seed, chunk=chunk, clusters=_renumber(clusters, idx)):
                for k, cell in enumerate(cells):
                    boot[k].append(cell(W))
            for k, i in enumerate(trainers):
                auroc[i][j] = float(cells[k](np.ones((1, len(idx))))[0])
                auroc_ci[i][j] = interval(np.concatenate(boot[k]), level)
    return auroc, auroc_ci


class CellAuroc:
    """The AUROC of class probabilities `proba` (n, k) for class indices `y` (n,) under many weightings at once:
    CellAuroc(proba, y)(W) -> (m,) for count matrices W (m, n), equal to bootstrap.macro_auroc (the AUROC of
    column 1 for k == 2, else the mean of one-vs-rest AUROCs; ties count 1/2; nan where a weighting lacks a
    class). The scores are sorted once per cell, not once per chunk of resamples; per chunk it costs a few passes
    over W: the cumulative weight of the negatives below each positive, gathered at the positives' ranks."""

    def __init__(self, proba: Any, y: Any) -> None:
        proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
        columns = [1] if proba.shape[1] == 2 else list(range(proba.shape[1]))
        self.parts = [_sorted(proba[:, c], y == c) for c in columns]

    def __call__(self, W: Any) -> np.ndarray:
        W = np.atleast_2d(np.asarray(W))
        out = [_weighted_wins(W, *part) for part in self.parts]
        return np.mean(out, axis=0)               # nan if any class is missing from a weighting


def _sorted(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(the rows in score order, which of them are positive, the start of each run of tied scores or None when
    no two scores tie): what _weighted_wins needs, computed once per cell."""
    order = np.argsort(score, kind="mergesort")
    ranked = score[order]
    tied = np.diff(ranked) == 0
    starts = np.r_[0, np.flatnonzero(~tied) + 1] if tied.any() else None
    return order, positive[order].astype(np.float64), starts


def _weighted_wins(W: np.ndarray, order: np.ndarray, is_pos: np.ndarray, starts: np.ndarray | None) -> np.ndarray:
    """Per row of W (m, n): weighted (positive, negative) pairs ranked right (ties 1/2) over all pairs. One
    gather of W into score order, then contiguous passes: the negatives' cumulative weight below each positive."""
    Ws = W[:, order].astype(np.float64)
    pos_w = Ws * is_pos
    neg_w = Ws - pos_w
    if starts is not None:                         # sum each run of tied scores: they meet with 1/2
        pos_w, neg_w = np.add.reduceat(pos_w, starts, axis=1), np.add.reduceat(neg_w, starts, axis=1)
    below = np.cumsum(neg_w, axis=1)
    below -= 0.5 * neg_w                           # the negatives strictly below, plus half the tied ones
    wins = np.einsum("ij,ij->i", pos_w, below)
    pairs = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def _renumber(clusters: Any, idx: np.ndarray) -> np.ndarray | None:
    """The cluster indices of rows `idx`, renumbered 0..k-1 (None stays None)."""
    if clusters is None:
        return None
    return np.unique(np.asarray(clusters)[idx], return_inverse=True)[1]
