"""Clustered bootstrap (issue 21, item 6): runs with --num_samples > 1 hold several rows per question,
and every bootstrap must resample QUESTIONS. References: numpy's own multinomial stream (the plain
path must stay bit-for-bit), an explicit cluster bootstrap written out here with rng.choice, and
sklearn's roc_auc_score on the resamples drawn out row by row."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from activation_eval.analysis.probe.bootstrap import cluster_index, resample_counts, weighted_auroc


def clustered_data(n_clusters=200, seed=0):
    """Questions of 1..6 rows whose values share a strong question effect (sd 1) plus small row noise
    (sd 0.2): the rows of a question are nearly copies, so a row bootstrap is far too narrow."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_clusters)
    clusters = np.repeat(np.arange(n_clusters), sizes)
    effect = rng.normal(size=n_clusters)
    values = effect[clusters] + 0.2 * rng.normal(size=len(clusters))
    return values, clusters


def test_without_clusters_the_stream_is_numpys_multinomial_as_before():
    n, seed = 37, 11
    rng = np.random.default_rng(seed)
    expected = [rng.multinomial(n, np.full(n, 1.0 / n), size=m) for m in (512, 512, 176)]
    got = list(resample_counts(n, 1200, seed))
    assert [g.shape for g in got] == [(512, n), (512, n), (176, n)]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    for g, e in zip(resample_counts(n, 1200, seed, clusters=None), got, strict=True):
        np.testing.assert_array_equal(g, e)


def test_cluster_index_groups_rows_by_id_in_order_of_first_appearance():
    rows = [{"id": "b", "sample": 0}, {"id": "a", "sample": 0}, {"id": "b", "sample": 1}, {"id": 7}, {"id": "a"}]
    clusters, n_clusters = cluster_index(rows)
    assert clusters.tolist() == [0, 1, 0, 2, 1] and n_clusters == 3
    assert cluster_index([{"id": "a"}, {"id": "b"}, {"id": "c"}]) is None
    assert cluster_index([]) is None


def test_clustered_counts_draw_whole_questions():
    values, clusters = clustered_data(n_clusters=50)
    n, n_clusters = len(values), 50
    for W in resample_counts(n, 300, seed=4, chunk=128, clusters=clusters):
        first = np.r_[0, np.flatnonzero(np.diff(clusters)) + 1]        # one row per question
        per_question = W[:, first]
        np.testing.assert_array_equal(W, per_question[:, clusters])   # every row carries its question's count
        assert per_question.sum(axis=1).tolist() == [n_clusters] * len(W)
        b = 0                                                          # a weighted mean is the mean of the drawn rows
        drawn = np.repeat(np.arange(n), W[b])
        assert values @ W[b] / W[b].sum() == pytest.approx(values[drawn].mean())


def test_cluster_labels_need_not_be_consecutive_and_must_match_n():
    labels = np.array([10, 10, 3, 3, 3, 42])
    W = next(resample_counts(6, 100, seed=0, clusters=labels))
    assert W[:, [0, 2, 5]].sum(axis=1).tolist() == [3] * 100
    assert np.all(W[:, 0] == W[:, 1]) and np.all(W[:, 2] == W[:, 4])
    with pytest.raises(ValueError, match="clusters"):
        next(resample_counts(5, 10, seed=0, clusters=labels))


def test_clustered_standard_error_matches_an_explicit_cluster_bootstrap_and_is_wider_than_rows():
    values, clusters = clustered_data()
    n, n_clusters, n_boot = len(values), clusters.max() + 1, 4000
    members = [np.flatnonzero(clusters == c) for c in range(n_clusters)]

    rng = np.random.default_rng(123)
    explicit = []
    for _ in range(n_boot):
        chosen = rng.choice(n_clusters, size=n_clusters, replace=True)
        explicit.append(values[np.concatenate([members[c] for c in chosen])].mean())
    explicit_se = np.std(explicit)

    def weighted_se(**kw):
        means = np.concatenate([W @ values / W.sum(axis=1) for W in resample_counts(n, n_boot, seed=9, **kw)])
        return np.std(means)

    clustered_se, row_se = weighted_se(clusters=clusters), weighted_se()
    assert clustered_se == pytest.approx(explicit_se, rel=0.07)       # Monte Carlo error ~1.1% each
    assert clustered_se > 1.8 * row_se                                 # ~sqrt(3.5 rows per question) wider


def test_weighted_auroc_with_clustered_counts_is_sklearns_with_sample_weight_and_on_drawn_rows():
    rng = np.random.default_rng(2)
    values, clusters = clustered_data(n_clusters=40, seed=2)
    scores = np.round(values + rng.normal(size=len(values)), 1)       # rounded: ties count 1/2
    positive = values + 0.5 * rng.normal(size=len(values)) > 0
    W = next(resample_counts(len(values), 40, seed=1, clusters=clusters))
    auc = weighted_auroc(scores, positive, W)
    for b in range(len(W)):
        assert auc[b] == pytest.approx(roc_auc_score(positive, scores, sample_weight=W[b]))
        drawn = np.repeat(np.arange(len(values)), W[b])
        assert auc[b] == pytest.approx(roc_auc_score(positive[drawn], scores[drawn]))
