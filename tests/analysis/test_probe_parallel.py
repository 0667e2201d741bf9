"""Layers fitted in worker processes (probe/parallel.py) give the same result as fitted in this process,
and the fits that share a fold's standardized copy (probe/layer_fits.py) equal the pipeline they replace
(models.make_probe: Standardize then LogisticRegression; MassMeanProbe on the raw rows)."""
import dataclasses
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from activation_eval.analysis.probe import probe_features
from activation_eval.analysis.probe.layer_fits import oof_many, oof_proba
from activation_eval.analysis.probe.models import MassMeanProbe
from activation_eval.analysis.probe.parallel import PARALLEL_FROM, probe_workers


def _data(n=150, layers=4, hidden=12, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    rows = [{"id": f"q{i}", "correct": bool(y[i]), "category": "abc"[i % 3], "question": f"question {i} {i % 7}",
             "num_prompt_tokens": 8 + i % 5, "num_generated_tokens": 3 + i % 4} for i in range(n)]
    features = {}
    for j in range(layers):
        X = rng.normal(size=(n, hidden)) * (1 + np.arange(hidden)) + 40.0      # offsets and unequal scales
        X[:, 0] += (0.4 * j) * (2 * y - 1)                                       # the signal grows with depth
        X[:, 5] = 3.0                                                            # a constant column
        features[f"layer_{j}"] = X.astype(dtype)
    return features, rows, y.astype(int)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shared_fold_fits_equal_the_pipelines(dtype):
    features, _, y = _data(n=200, dtype=dtype)
    X = features["layer_3"]
    splits = list(StratifiedKFold(5, shuffle=True, random_state=1).split(X, y))
    perm = np.random.default_rng(2).permutation(y)
    (main, main_pred), (mass, _), (permuted, _) = oof_many(X, splits, [("logistic", y), ("mass_mean", y),
                                                                      ("logistic", perm)], 2)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    sklearn_main, sklearn_pred = oof_proba(lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                                           X, y, splits, 2)
    assert np.abs(main - sklearn_main).max() < tol and np.mean(main_pred == sklearn_pred) > 0.99
    sklearn_perm, _ = oof_proba(lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                                X, perm, splits, 2)
    assert np.abs(permuted - sklearn_perm).max() < tol
    raw_mass, _ = oof_proba(MassMeanProbe, X.astype(np.float64), y, splits, 2)
    assert np.abs(mass - raw_mass).max() < (1e-9 if dtype == np.float64 else 1e-4)
    assert main.shape == (200, 2) and np.allclose(main.sum(axis=1), 1)


def test_probe_workers_auto_and_given():
    assert probe_workers(None, PARALLEL_FROM - 1, 31) == 1                # small runs stay here
    assert probe_workers(None, PARALLEL_FROM, 1) == 1                     # one layer: nothing to share
    assert 1 <= probe_workers(None, PARALLEL_FROM, 31) <= 4
    assert probe_workers(2, 10, 3) == 2
    with pytest.raises(ValueError, match="at least 1"):
        probe_workers(0, 10, 3)


@pytest.mark.slow
def test_layers_fitted_in_two_processes_give_the_same_result():
    features, rows, _ = _data(n=120, layers=3, hidden=8)
    positions = {"answer_first": features, "last_prompt": {k: v[::-1].copy() for k, v in features.items()}}
    here = probe_features(features, rows, n_bootstrap=1000, workers=1, position_features=positions, cv_seeds=2)
    there = probe_features(features, rows, n_bootstrap=1000, workers=2, position_features=positions, cv_seeds=2)
    assert here.verdict == there.verdict and here.best_layer == "layer_2"
    assert json.dumps(dataclasses.asdict(here), sort_keys=True) == json.dumps(dataclasses.asdict(there), sort_keys=True)
    assert here.positions is not None and set(here.positions.positions) == {"answer_first", "last_prompt"}
