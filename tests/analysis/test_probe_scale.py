"""The probe's large-run shortcuts (issue 29): from LARGE_N rows on, resamples are drawn as indices and
AUROC resamples are linearized (probe/bootstrap.py). Both are checked against independent references:
scikit-learn's weighted AUROC on the same resamples, and the multinomial's own moments."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from activation_eval.analysis.probe import scores as scores_module
from activation_eval.analysis.probe.bootstrap import LARGE_N, auroc_gradient, resample_counts
from activation_eval.analysis.probe.scores import evaluate_scores


def _scores(n, seed=0, strength=0.6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + strength * y
    return y, np.round(s, 2)                      # rounded: ties, which count 1/2


def _sklearn_stratified(y, s, w, strata):
    """Pair-weighted mean of scikit-learn's weighted AUROC per stratum (pairs within a stratum only)."""
    num = den = 0.0
    for k in np.unique(strata):
        m = strata == k
        pairs = w[m][y[m] == 1].sum() * w[m][y[m] == 0].sum()
        num += roc_auc_score(y[m], s[m], sample_weight=w[m]) * pairs
        den += pairs
    return num / den


def test_linearized_auroc_matches_sklearn_on_the_same_resamples():
    n = LARGE_N + 1000
    y, s = _scores(n)
    strata = np.arange(n) % 5
    proba = np.stack([1 - s, s], axis=1)
    value, g = auroc_gradient(proba, y, strata)
    assert value == pytest.approx(_sklearn_stratified(y, s, np.ones(n), strata), abs=1e-12)
    W = next(resample_counts(n, 30, seed=1))
    linear = value + (W - 1.0) @ g
    exact = np.array([_sklearn_stratified(y, s, w.astype(float), strata) for w in W])
    assert np.std(exact) > 0.004                                   # the resamples do move the AUROC
    error = np.abs(linear - exact)                                  # the dropped terms: O(1/rows per stratum)
    assert np.mean(error) < 0.1 * np.std(exact) and np.max(error) < 0.002


def test_linearized_multiclass_is_the_macro_mean():
    rng = np.random.default_rng(2)
    n = 3000
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet([1, 1, 1], n)
    proba[np.arange(n), y] += 0.3
    value, _ = auroc_gradient(proba, y)
    assert value == pytest.approx(roc_auc_score(y, proba / proba.sum(1, keepdims=True), multi_class="ovr"),
                                  abs=1e-12)


def test_large_resamples_are_multinomial_counts():
    n = LARGE_N * 2
    W = np.concatenate(list(resample_counts(n, 200, seed=3)))
    assert W.shape == (200, n) and np.all(W.sum(axis=1) == n)
    assert W.mean() == pytest.approx(1.0)
    assert W.var() == pytest.approx(1 - 1 / n, abs=0.01)          # multinomial(n, 1/n): var 1 - 1/n
    assert (W == 0).mean() == pytest.approx(np.exp(-1), abs=0.005)  # a row left out with probability ~1/e
    again = np.concatenate(list(resample_counts(n, 200, seed=3)))
    assert np.array_equal(W, again)                                 # the same seed, the same resamples


def test_large_run_intervals_match_the_exact_bootstrap(monkeypatch):
    n = LARGE_N + 500
    y, s = _scores(n, seed=4, strength=0.3)
    rng = np.random.default_rng(5)
    layers = {f"layer_{i}": np.stack([1 - v, v], axis=1) for i, v in enumerate([s, s + rng.normal(size=n)])}
    noise = rng.normal(size=n)
    controls = {"length": np.stack([1 - noise, noise], axis=1)}
    strata = np.arange(n) % 5
    fast = evaluate_scores(y, layers, controls, 2000, 0, strata)
    monkeypatch.setattr(scores_module, "LARGE_N", 10 ** 9)         # the exact, sort-based path for every model
    exact = evaluate_scores(y, layers, controls, 2000, 0, strata)
    assert fast.verdict == exact.verdict == "layer_0"
    for name in layers:
        a, b = fast.layers[name], exact.layers[name]
        assert a.auroc == b.auroc
        assert np.allclose(a.auroc_ci, b.auroc_ci, atol=0.004)      # Monte Carlo noise of 2000 resamples
        assert np.allclose(a.selectivity_ci, b.selectivity_ci, atol=0.006)
        assert np.allclose(a.accuracy_ci, b.accuracy_ci, atol=0.004)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardize_is_standard_scaler(dtype):
    from sklearn.preprocessing import StandardScaler

    from activation_eval.analysis.probe.models import Standardize
    rng = np.random.default_rng(6)
    X = (rng.normal(size=(500, 20)) * rng.uniform(0.1, 50, 20) + rng.normal(size=20) * 30).astype(dtype)
    X[:, 3] = 7.0                                                   # a constant column: only centred
    test = (rng.normal(size=(50, 20)) * 10).astype(dtype)
    ours, ref = Standardize().fit(X), StandardScaler().fit(X)
    assert ours.transform(test).dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ours.transform(test), ref.transform(test), rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.fit_transform(X), ref.fit_transform(X), rtol=tol, atol=tol)


def test_float32_activations_give_the_float64_probe():
    """A run's float32 activations are fitted in float32 (sweep.as_float): the same out-of-fold AUROC."""
    from activation_eval.analysis.probe.sweep import LayerData, Setup, Sweep
    rng = np.random.default_rng(7)
    n = 400
    rows = [{"id": f"q{i}", "correct": bool(rng.random() < 0.5), "category": "ab"[i % 2], "question": f"q {i}",
             "num_prompt_tokens": 10, "num_generated_tokens": 4} for i in range(n)]
    y = np.array([r["correct"] for r in rows])
    X = rng.normal(size=(n, 32)) + 0.8 * y[:, None] * (np.arange(32) == 5)
    setup = Setup(rows, "correct", 5, 0, None, None, "logistic", 1)
    aurocs = {}
    for dtype in (np.float64, np.float32):
        sweep = Sweep(setup)
        sweep.add(LayerData("layer_0", X.astype(dtype), rows, None, None, None))
        aurocs[dtype] = sweep.seed_auroc["layer_0"][0]
    reference = roc_auc_score(y, X[:, 5])                           # the planted column alone
    assert aurocs[np.float32] == pytest.approx(aurocs[np.float64], abs=1e-3)
    assert aurocs[np.float64] > 0.6 and reference > 0.6
