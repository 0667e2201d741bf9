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

Public names:
    transfer_matrix(X, y, group_of, rows, make_model, n_boot=2000, seed=0, n_splits=5, clusters=None,
                    level=0.95, by="group", layer=None) -> TransferResult (schema/transfer.py)

Example:
    >>> from activation_eval.analysis.probe.models import make_probe
    >>> rng = np.random.default_rng(0)
    >>> n = 240; y = rng.integers(0, 2, n); group = np.array(["a", "b", "c"] * 80)
    >>> X = rng.normal(size=(n, 8)); X[:, 0] += 2.0 * (2 * y - 1)          # one direction in every group
    >>> rows = [{"id": str(i), "category": g} for i, g in enumerate(group)]
    >>> res = transfer_matrix(X, y, group, rows, lambda: make_probe("logistic"), n_boot=1000, by="category")
    >>> res.groups, min(min(r) for r in res.auroc) > 0.85            # every cell well above chance
    (['a', 'b', 'c'], True)
"""
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...schema.estimates import Interval
from ...schema.transfer import TransferResult
from .bootstrap import interval, macro_auroc, resample_counts
from .folds import make_folds
from .overlap import shared_rows


def transfer_matrix(X: Any, y: Any, group_of: Sequence[Any], rows: Sequence[Mapping[str, Any]],
                    make_model: Callable[[], Any], n_boot: int = 2000, seed: int = 0, n_splits: int = 5,
                    clusters: Any = None, level: float = 0.95, by: str = "group",
                    layer: str | None = None, keep_overlap: bool = False) -> TransferResult:
    """The transfer matrix of `make_model()` probes on X (n, hidden) for class indices y (n,); group_of
    (n,) the group of each question; rows the results rows (folds keep categories); `by` names what the
    groups are and `layer` where X comes from, for the result; see the module docstring."""
    X, y, labels = np.asarray(X, dtype=np.float64), np.asarray(y), np.asarray(group_of).astype(str)
    groups = sorted(set(labels.tolist()))
    members = {g: np.flatnonzero(labels == g) for g in groups}
    notes: list[str] = []
    tested, shared = _tested_rows(groups, members, rows, keep_overlap)
    scores = _fit_groups(X, y, groups, members, tested, rows, make_model, n_splits, seed, clusters, notes)
    auroc, auroc_ci = _score_cells(y, groups, tested, scores, n_boot, seed, clusters, level, notes)
    return TransferResult(by=by, layer=layer, groups=groups, n={g: int(len(members[g])) for g in groups},
                          level=level, auroc=auroc, auroc_ci=auroc_ci, notes=notes,
                          shared=[[shared[g, h] for h in groups] for g in groups],
                          in_sample=bool(keep_overlap and any(shared.values())))


def _tested_rows(groups: list[str], members: dict[str, np.ndarray], rows: Sequence[Mapping[str, Any]],
                 keep_overlap: bool) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], int]]:
    """({(train g, test h): the rows of h the cell scores}, {(g, h): rows of h that g shares})."""
    tested, shared = {}, {}
    for g in groups:
        train_rows = [rows[i] for i in members[g]]
        for h in groups:
            if g == h:                     # out-of-fold within the group
                tested[g, h], shared[g, h] = members[h], 0
                continue
            by_id, by_prompt = shared_rows(train_rows, [rows[i] for i in members[h]])
            both = by_id | by_prompt
            shared[g, h] = int(both.sum())
            tested[g, h] = members[h] if keep_overlap else members[h][~both]
    return tested, shared


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
        scores[g, g] = oof
        model = make_model().fit(X[idx], y[idx])
        for h in groups:
            if h != g and len(tested[g, h]):
                scores[g, h] = model.predict_proba(X[tested[g, h]])
    return scores


def _score_cells(y: np.ndarray, groups: list[str], tested: dict[tuple[str, str], np.ndarray],
                 scores: dict[tuple[str, str], np.ndarray], n_boot: int, seed: int, clusters: Any, level: float,
                 notes: list[str]) -> tuple[list[list[float | None]], list[list[Interval | None]]]:
    """Each cell's AUROC and its percentile interval over its tested rows, resampled."""
    n_classes = int(y.max()) + 1
    auroc: list[list[float | None]] = [[None] * len(groups) for _ in groups]
    auroc_ci: list[list[Interval | None]] = [[None] * len(groups) for _ in groups]
    for j, h in enumerate(groups):
        if len(np.unique(y[tested[h, h]])) < n_classes:
            notes.append(f"{h}: lacks a class, no AUROC can be scored on it")
            continue
        for i, g in enumerate(groups):
            idx = tested[g, h]
            if (g, h) not in scores:
                continue
            if len(np.unique(y[idx])) < n_classes:
                notes.append(f"{g} -> {h}: lacks a class once the shared rows are left out, no AUROC")
                continue
            ones = np.ones((1, len(idx)))
            boot = np.concatenate([macro_auroc(scores[g, h], y[idx], W) for W in
                                   resample_counts(len(idx), n_boot, seed, clusters=_renumber(clusters, idx))])
            auroc[i][j] = float(macro_auroc(scores[g, h], y[idx], ones)[0])
            auroc_ci[i][j] = interval(boot, level)
    return auroc, auroc_ci


def _renumber(clusters: Any, idx: np.ndarray) -> np.ndarray | None:
    """The cluster indices of rows `idx`, renumbered 0..k-1 (None stays None)."""
    if clusters is None:
        return None
    return np.unique(np.asarray(clusters)[idx], return_inverse=True)[1]
