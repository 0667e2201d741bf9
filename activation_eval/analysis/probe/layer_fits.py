"""One layer's out-of-fold fits, as a pure function of the layer's matrices and a FitPlan (labels and folds
only), so that layers can be fitted in other processes (parallel.py); every fit on the same folds shares
each fold's standardized matrices.

Per layer (sweep.py's list): the main family on the main folds, the other linear family (binary targets),
the permutation test and Hewitt & Liang's control task, the main family under the other CV seeds' folds,
the other token positions, and the probe fitted on all questions scoring a test run. The logistic probe
(models.make_probe("logistic"): Standardize, then LogisticRegression(max_iter=2000)) is fitted here
on the fold's training matrix standardized once for all the fold's targets, in place on the fold's copy
(the same figures as the pipeline: the same mean, scale and operations); the mass-mean probe
(models.MassMeanProbe) reads the same centred copy before it is scaled. At 100,000 questions x 576 this
halves a layer's fitting time (a standardization of 80,000 x 576 costs about as much as a logistic fit).

Public names:
    FitPlan(y, splits, permutation_y, hl_y, seed_splits, seed_strata, strata, family, families, n_classes)
    LayerFits                       oof (probabilities, classes), families {family: probabilities},
                                    permutation, hl_control, seed_auroc [main seed, others...],
                                    positions {position: probabilities}, test (probabilities, classes) or None
    fit_layer(plan, X, positions=None, X_test=None) -> LayerFits
    oof_many(X, splits, fits, n_classes) -> [(probabilities (n, k), predicted classes (n,)), ...]
                                    fits: [(family, y), ...] on the same folds
    oof_proba(make_model, X, y, splits, n_classes) -> (probabilities, predicted classes): any model
    fit_score(model, X, y, X_test) -> (probabilities, predicted classes) of X_test
    as_float(X)                     float32 kept (a run's activations), anything else float64

Example:
    >>> from sklearn.model_selection import StratifiedKFold
    >>> rng = np.random.default_rng(0)
    >>> y = np.array([0, 1] * 30); X = rng.normal(size=(60, 5)); X[:, 2] += 2 * y
    >>> splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    >>> (main, _), (mass, _) = oof_many(X, splits, [("logistic", y), ("mass_mean", y)], 2)
    >>> reference, _ = oof_proba(lambda: make_probe("logistic"), X, y, splits, 2)
    >>> bool(np.allclose(main, reference, atol=1e-12)), main.shape, float(((mass[:, 1] > .5) == y).mean()) > .8
    (True, (60, 2), True)
"""
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bootstrap import macro_auroc
from .models import SHARED_FOLD_FAMILIES, MassMeanProbe, make_probe, standard_scale

Proba = tuple[np.ndarray, np.ndarray]          # (class probabilities (n, k), predicted classes (n,))
Splits = Sequence[tuple[np.ndarray, np.ndarray]]
_SQUARES_ROWS = 4096                           # rows squared at a time in float64 for the variance


@dataclass(frozen=True)
class FitPlan:
    """What every layer's fits need: labels and folds (arrays only: cheap to send to another process)."""
    y: np.ndarray
    splits: Splits
    permutation_y: np.ndarray
    hl_y: np.ndarray | None
    seed_splits: Sequence[Splits]
    seed_strata: Sequence[np.ndarray]
    strata: np.ndarray
    family: str
    families: Sequence[str]                    # the families reported (the main one among them)
    n_classes: int


@dataclass
class LayerFits:
    """One layer's out-of-fold probabilities (see the module docstring)."""
    oof: Proba
    families: dict[str, np.ndarray]
    permutation: np.ndarray
    hl_control: np.ndarray | None
    seed_auroc: list[float]
    positions: dict[str, np.ndarray] = field(default_factory=dict)
    test: Proba | None = None


def fit_layer(plan: FitPlan, X: Any, positions: Mapping[str, Any] | None = None, X_test: Any = None) -> LayerFits:
    """Every fit of one layer (matrix X (n, hidden); `positions` {position: matrix} for the layer x position
    table, the entry that `is` X reusing the main fits; X_test: the test run's matrix)."""
    given, X = X, as_float(X)
    p = plan
    others = [f for f in p.families if f != p.family]                   # the other linear family (binary)
    controls = [p.permutation_y] + ([p.hl_y] if p.hl_y is not None else [])
    out = oof_many(X, p.splits, [(p.family, p.y), *((f, p.y) for f in others), *((p.family, y) for y in controls)],
                   p.n_classes)
    main, other_fits, control_fits = out[0], out[1:1 + len(others)], out[1 + len(others):]
    families = {p.family: main[0], **{f: proba for f, (proba, _) in zip(others, other_fits)}}
    seed_auroc = [_auroc(main[0], p.y, p.strata)] + [
        _auroc(oof_many(X, splits, [(p.family, p.y)], p.n_classes)[0][0], p.y, strata)
        for splits, strata in zip(p.seed_splits, p.seed_strata)]
    by_position = {position: main[0] if Xp is given else
                   oof_many(as_float(Xp), p.splits, [(p.family, p.y)], p.n_classes)[0][0]
                   for position, Xp in (positions or {}).items()}
    test = None if X_test is None else fit_score(make_probe(p.family), X, p.y, as_float(X_test))
    return LayerFits(oof=main, families=families, permutation=control_fits[0][0],
                     hl_control=control_fits[1][0] if p.hl_y is not None else None, seed_auroc=seed_auroc,
                     positions=by_position, test=test)


def oof_many(X: np.ndarray, splits: Splits, fits: Sequence[tuple[str, np.ndarray]], n_classes: int) -> list[Proba]:
    """Out-of-fold (probabilities, predicted classes) of each (family, y) in `fits`, all on the same folds:
    per fold, the logistic and mass-mean fits share one centred and scaled copy of the fold's rows; any other
    family (mlp) is fitted through oof_proba."""
    out = [(np.zeros((len(y), n_classes)), np.zeros(len(y), dtype=int)) for _, y in fits]
    shared = [i for i, (family, _) in enumerate(fits) if family in SHARED_FOLD_FAMILIES]
    for i, (family, y) in enumerate(fits):
        if i not in shared:
            out[i] = oof_proba(functools.partial(make_probe, family), X, y, splits, n_classes)
    if not shared:
        return out
    from sklearn.linear_model import LogisticRegression
    for train, test in splits:
        Z, Z_test = X[train], X[test]                       # copies (fancy indexing): standardized in place
        mean = Z.mean(axis=0, dtype=np.float64)
        Z -= mean.astype(Z.dtype)
        Z_test -= mean.astype(Z.dtype)
        for i in shared:
            family, y = fits[i]
            if family == "mass_mean":
                proba, pred = _mass_mean_centred(Z, y[train], Z_test)
                out[i][0][test], out[i][1][test] = proba, pred
        if any(fits[i][0] == "logistic" for i in shared):
            scale = standard_scale(_mean_squares(Z), mean, len(Z), Z.dtype).astype(Z.dtype)
            Z /= scale
            Z_test /= scale
            for i in shared:
                family, y = fits[i]
                if family == "logistic":
                    model = LogisticRegression(max_iter=2000).fit(Z, y[train])
                    out[i][0][test], out[i][1][test] = model.predict_proba(Z_test), model.predict(Z_test)
    return out


def _mean_squares(Z: np.ndarray) -> np.ndarray:
    """Column means of Z**2 (Z centred), squared in float64 a block of rows at a time (no n x hidden float64 copy)."""
    total = np.zeros(Z.shape[1])
    for start in range(0, len(Z), _SQUARES_ROWS):
        total += np.square(Z[start:start + _SQUARES_ROWS], dtype=np.float64).sum(axis=0)
    return total / max(1, len(Z))


def _mass_mean_centred(Z: np.ndarray, y: np.ndarray, Z_test: np.ndarray) -> Proba:
    """MassMeanProbe fitted on training rows Z already centred on their mean (its centre), scoring Z_test
    (centred on the same mean)."""
    probe = MassMeanProbe()
    probe.fit_centred(Z, y)
    return probe.predict_proba_centred(Z_test), probe.predict_centred(Z_test)


def as_float(X: Any) -> np.ndarray:
    """X as a float array for the fits: float32 stays float32 (a run's activations: half the memory, and the
    logistic fits, bound by memory bandwidth, run ~2-3x faster at thousands of questions), else float64."""
    X = np.asarray(X)
    return X if X.dtype == np.float32 else X.astype(np.float64, copy=False)


def _auroc(proba: np.ndarray, y: np.ndarray, strata: np.ndarray | None = None) -> float:
    return float(macro_auroc(proba, y, np.ones((1, len(y))), strata)[0])


def oof_proba(make_model: Callable[[], Any], X: np.ndarray, y: np.ndarray, splits: Splits, n_classes: int) -> Proba:
    """Out-of-fold (class probabilities (n, n_classes), predicted classes (n,)): each question
    scored by the model of the fold that held it out."""
    proba, pred = np.zeros((len(y), n_classes)), np.zeros(len(y), dtype=int)
    for train, test in splits:
        model = make_model().fit(X[train], y[train])
        proba[test], pred[test] = model.predict_proba(X[test]), model.predict(X[test])
    return proba, pred


def fit_score(model: Any, X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> Proba:
    """(class probabilities, predicted classes) of X_test from `model` fitted on all of X, y."""
    model.fit(X, y)
    return model.predict_proba(X_test), model.predict(X_test)
