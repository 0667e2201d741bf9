"""Linear probes: does a layer's activation predict whether the answer was correct?

Public names:
    probe_run(run_dir, layers=None, n_splits=5, seed=0) -> dict
                            CV logistic-regression probe of "correct" per layer

Example:
    >>> res = probe_run("results/run1"); res["layers"]["layer_3"]["accuracy"], res["majority_baseline"]
"""
import os

import numpy as np

from ..store.run_folder import is_run_folder
from .arrays import correct_labels, run_layers
from .dataset import load_run_layer


def probe_run(run_dir, layers=None, n_splits=5, seed=0):
    """Per layer, a cross-validated logistic-regression probe: last-prompt-token activation -> correct.

    StandardScaler + LogisticRegression, StratifiedKFold(min(n_splits, smallest class count),
    shuffled with `seed`). Returns accuracy mean/std per layer and the majority-class baseline.
    >>> res = probe_run("results/run1"); res["layers"]["layer_3"]["accuracy"], res["majority_baseline"]
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir) or not is_run_folder(run_dir):
        raise FileNotFoundError(f"not a run folder (no results.jsonl): {run_dir}")
    names = list(layers) if layers else run_layers(run_dir)
    out, y = {}, None
    for name in names:
        X, rows = load_run_layer(run_dir, name)
        if y is None:
            y = correct_labels(rows, run_dir)
            counts = np.bincount(y, minlength=2)
            if len(y) < 4:
                raise ValueError(f"too few examples for a probe: {len(y)} (need at least 4)")
            if counts.min() == 0:
                raise ValueError(f"only one class in {run_dir}: all {len(y)} answers graded "
                                 f"{'correct' if counts[1] else 'incorrect'}; a probe needs both")
            folds = min(n_splits, int(counts.min()))
            if folds < 2:
                raise ValueError(f"too few examples of the minority class ({int(counts.min())}) "
                                 f"for cross-validation; need at least 2")
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores = cross_val_score(model, np.asarray(X, dtype=np.float64), y, cv=cv)
        out[name] = {"accuracy": float(scores.mean()), "std": float(scores.std()),
                     "folds": [float(s) for s in scores]}
    best = max(out, key=lambda n: out[n]["accuracy"])
    return {"run_dir": run_dir, "examples": int(len(y)), "correct": int(y.sum()), "n_splits": folds,
            "majority_baseline": float(max(y.mean(), 1 - y.mean())), "best_layer": best, "layers": out}

