"""Issue 29: analysis cost grows with the data, not with the number of groups squared.

Crafted inputs of the reported cases: --transfer category over 300 categories of 4 rows (the old code printed
nothing in 180 s) and over 100 categories (it failed allocating a 12,832 x 12,832 heatmap); a 20 MB category
text (one-hot columns, fold keys); stratified comparisons over 1,000 strata. References: sklearn's
roc_auc_score on predictions of a model fitted here, sklearn's weighted AUROC, a hand-computed
Cochran-Mantel-Haenszel difference.
"""
import json
import tracemalloc

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from activation_eval.analysis.jsonio import to_json
from activation_eval.analysis.probe.bootstrap import resample_counts, weighted_auroc
from activation_eval.analysis.probe.build import Where, probe
from activation_eval.analysis.probe.controls import control_inputs
from activation_eval.analysis.probe.folds import MAX_LABEL, make_folds, permutation_labels
from activation_eval.analysis.probe.sweep import LayerData
from activation_eval.analysis.probe.text import probe_text
from activation_eval.analysis.probe.transfer import CELLS_PER_CHUNK, MAX_GROUPS, OTHER, CellAuroc, transfer_matrix
from activation_eval.analysis.stratify import stratified_difference


def _groups(sizes, seed=0, hidden=6, strength=2.0):
    """Rows of groups with the given sizes; one direction planted in every group (it transfers)."""
    rng = np.random.default_rng(seed)
    group = np.concatenate([[f"cat{i:03d}"] * k for i, k in enumerate(sizes)])
    y = np.concatenate([rng.permutation(np.arange(k) % 2) for k in sizes])
    X = rng.normal(size=(len(y), hidden))
    X[:, 0] += strength * (2 * y - 1)
    rows = [{"id": f"q{i}", "category": str(g), "question": f"question {i}?", "correct": bool(v),
             "num_prompt_tokens": 10, "num_generated_tokens": 3} for i, (g, v) in enumerate(zip(group, y))]
    return X, y, group, rows


@pytest.mark.slow
def test_a_planted_transfer_among_the_kept_groups_matches_sklearn():
    sizes = [40] * 24 + [3] * 30            # 24 groups of 40 rows (20 kept, 4 beyond), 30 of 3 rows (too small)
    X, y, group, rows = _groups(sizes)
    res = transfer_matrix(X, y, group, rows, lambda: LogisticRegression(), n_boot=1000, by="category")
    assert len(res.groups) == MAX_GROUPS + 1 and OTHER in res.groups
    assert res.n_values == 54 and res.merged == 34 and res.n[OTHER] == 4 * 40 + 30 * 3
    assert "34 of 54 category values merged into '(other)': 4 beyond the 20 largest, 30 with fewer than 10 rows" \
        in res.notes[0]
    assert set(res.groups) - {OTHER} == {f"cat{i:03d}" for i in range(20)}       # the largest, ties by name
    label = np.array([g if g in res.groups else OTHER for g in group])
    for i, g in enumerate(res.groups):
        model = LogisticRegression().fit(X[label == g], y[label == g])
        for j, h in enumerate(res.groups):
            if i == j:
                continue
            expected = roc_auc_score(y[label == h], model.predict_proba(X[label == h])[:, 1])
            assert res.auroc[i][j] == pytest.approx(expected, abs=1e-9)
            lo, hi = res.auroc_ci[i][j]
            assert lo <= res.auroc[i][j] <= hi
    assert min(a for row in res.auroc for a in row) > 0.8                      # the shared direction transfers


def test_300_categories_finish_with_the_kept_size_and_bounded_allocations():
    sizes = [4] * 300                       # the reported case: 1,200 rows over 300 categories
    X, y, group, rows = _groups(sizes, seed=1)
    tracemalloc.start()
    try:
        res = transfer_matrix(X, y, group, rows, lambda: LogisticRegression(), n_boot=1000, by="category")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.groups == [OTHER] and res.merged == 300 and len(res.auroc) == 1 and res.n[OTHER] == 1200
    assert peak < CELLS_PER_CHUNK * 8 * 8   # a few float64 copies of one chunk of resample weights, whatever the groups
    big = _groups([30] * 25 + [4] * 275, seed=2)          # 25 groups kept as candidates, 20 kept, the rest merged
    res = transfer_matrix(*big, lambda: LogisticRegression(), n_boot=1000, by="category")
    assert len(res.groups) == len(res.auroc) == len(res.auroc[0]) == MAX_GROUPS + 1 and res.merged == 280


def test_the_merge_note_is_in_the_json_and_the_text():
    X, y, group, rows = _groups([30] * 3 + [2] * 40, seed=3)
    res = probe([LayerData("layer_0", X, rows, None, None, None)], 1, "correct", 3, 0, None, 1000, False,
                "logistic", 1, "category", ("run", None), Where())
    note = "40 of 43 category values merged into '(other)'"
    data = json.loads(json.dumps(to_json(res)))
    assert data["transfer"]["merged"] == 40 and any(note in n for n in data["transfer"]["notes"])
    assert data["transfer"]["groups"] == [OTHER, "cat000", "cat001", "cat002"]
    assert "transfer note: " + note in probe_text(res)


def test_a_too_small_other_group_is_left_out_and_counted():
    X, y, group, rows = _groups([30] * 3 + [1] * 5, seed=4)
    res = transfer_matrix(X, y, group, rows, lambda: LogisticRegression(), n_boot=1000, by="category")
    assert res.groups == ["cat000", "cat001", "cat002"] and res.skipped_rows == 5 and res.merged == 5
    assert "5 of 8 category values left out" in res.notes[0] and "5 rows not in the matrix" in res.notes[0]


@pytest.mark.slow
def test_a_20_mb_category_becomes_a_bounded_label_everywhere():
    huge = "x" * 20_000_000
    X, y, group, rows = _groups([20, 20], seed=5)
    for r in rows[:20]:
        r["category"] = huge + "a"
    for r in rows[20:]:
        r["category"] = huge + "b"                       # same start: the hash keeps them apart
    inputs, notes = control_inputs(rows)
    labels = {v[0] for v in inputs["category"]}
    assert len(labels) == 2 and all(len(v) == MAX_LABEL for v in labels)
    assert any("1 category text" in n or "2 category text" in n for n in notes)
    res = transfer_matrix(X, y, [r["category"] for r in rows], rows, lambda: LogisticRegression(), n_boot=1000,
                          by="category")
    assert len(res.groups) == 2 and all(len(g) == MAX_LABEL and g.endswith(tuple("0123456789abcdef"))
                                        for g in res.groups) and res.shortened == 2
    perm = permutation_labels(y, rows, seed=0)
    assert sorted(perm[:20]) == sorted(y[:20]) and sorted(perm[20:]) == sorted(y[20:])   # within each category
    splits, _ = make_folds(y, rows, 2, 0, "category", [])
    assert all(len({rows[i]["category"][-1] for i in test}) == 1 for _, test in splits)   # whole groups held out


@pytest.mark.parametrize("k", [2, 3])
def test_cell_auroc_equals_sklearn_weighted(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 200)
    P = rng.integers(1, 5, size=(200, k)).astype(float)
    P /= P.sum(axis=1, keepdims=True)                      # few distinct values: ties
    cell = CellAuroc(P, y)
    for w in next(resample_counts(200, 5, seed=0)):
        expected = (roc_auc_score(y, P[:, 1], sample_weight=w) if k == 2 else
                    roc_auc_score(y, P, multi_class="ovr", average="macro", sample_weight=w))
        assert cell(w[None, :])[0] == pytest.approx(expected, abs=1e-9)


def test_stratified_difference_over_1000_strata_matches_a_hand_computation():
    rng = np.random.default_rng(6)
    strata = np.repeat([f"s{i}" for i in range(1000)], 6)
    correct = np.tile([True, True, True, False, False, False], 1000)
    values = rng.normal(size=len(strata)) + 0.5 * ~correct
    res = stratified_difference(values, correct.tolist(), strata.tolist(), n_boot=1000, by="category")
    d = values.reshape(1000, 6)[:, 3:].mean(axis=1) - values.reshape(1000, 6)[:, :3].mean(axis=1)
    assert res.stratified.value == pytest.approx(d.mean())          # equal weights 3*3/6 in every stratum
    assert res.strata_used == 1000 and res.stratified.ci[0] < d.mean() < res.stratified.ci[1]


def _pairs_auroc(y, s, w, strata, per_stratum):
    """The pair-weighted mean over strata of per_stratum(y, s, w) (a stratum's AUROC), weighted by its
    (positive, negative) pairs; strata without a pair left out."""
    num = den = 0.0
    for k in np.unique(strata):
        m = strata == k
        pairs = w[m][y[m]].sum() * w[m][~y[m]].sum()
        if pairs > 0:
            num += per_stratum(y[m], s[m], w[m]) * pairs
            den += pairs
    return num / den


def _by_definition(y, s, w):
    """Mann-Whitney over every (positive, negative) pair, each weighted w_i w_j, ties 1/2."""
    d = s[y][:, None] - s[~y][None, :]
    return ((d > 0) + 0.5 * (d == 0)).ravel() @ np.outer(w[y], w[~y]).ravel() / (w[y].sum() * w[~y].sum())


def test_weighted_auroc_over_1000_strata_is_the_pair_weighted_per_stratum_auroc():
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 12, 1000)                        # strata of 1-11 rows: some hold one class only
    strata = rng.permutation(np.repeat([f"s{k}" for k in range(1000)], sizes))     # text labels, interleaved
    n = len(strata)
    y = rng.integers(0, 2, n).astype(bool)
    s = np.round(rng.normal(size=n) + y, 1)                  # few distinct scores: ties within strata
    W = np.stack([np.ones(n), next(resample_counts(n, 1, seed=8))[0], rng.gamma(1.0, size=n)])
    got = weighted_auroc(s, y, W, strata)
    expected = [_pairs_auroc(y, s, w, strata, _by_definition) for w in W]
    assert np.abs(got - expected).max() < 1e-12
    some = np.isin(strata, [f"s{k}" for k in range(0, 1000, 8)])      # 125 strata: sklearn on each
    for w, value in zip(W, weighted_auroc(s[some], y[some], W[:, some], strata[some])):
        sklearn = _pairs_auroc(y[some], s[some], w[some], strata[some],
                               lambda t, x, v: roc_auc_score(t, x, sample_weight=v))
        assert abs(value - sklearn) < 1e-12
    assert weighted_auroc(s, y, W[:1], None)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)   # pairs across
    lone = np.array([f"s{k}" for k in range(n)])             # every row its own stratum: no pair, no AUROC
    assert np.isnan(weighted_auroc(s, y, W, lone)).all()
