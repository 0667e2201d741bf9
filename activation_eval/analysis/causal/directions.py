"""Directions to steer along: fitted on a run's activations (correct vs incorrect), cross-fitted so that
no question is steered by a direction fitted on it, and random directions as the null.

X is (questions, hidden): one vector per question at the probe's layer and position; y is 1 where the
answer was correct, 0 where not.

Public names:
    mass_mean(X, y) -> (H,)                      mean of the correct rows minus mean of the incorrect ones
                                                 (Marks & Tegmark 2023)
    logistic_direction(X, y, seed=0, C=1.0) -> (H,)   a logistic probe on standardized X, its weights mapped
                                                 back to X's own space (w / scale)
    unit(v) -> (H,)                              v / |v| (a ValueError for a zero vector)
    cross_fit(X, y, n_folds=5, method="mass_mean", seed=0, groups=None) -> (fold (n,), directions (folds, H))
                                                 stratified folds; directions[f] is the unit direction fitted
                                                 on every fold but f, the one fold f's questions are steered by
    random_directions(X, k, seed=0) -> (names, (k, H))   unit vectors: the first ceil(k/2) drawn from
                                                 N(0, cov(X)) ("random_cov_i"), the rest isotropic ("random_iso_i")
    spread(X, u) -> float                        std of X @ unit(u) (ddof 1): alpha = alpha_sd * spread
    METHODS                                      ("mass_mean", "logistic")

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50); X = rng.normal(size=(100, 8)); X[:, 2] += 3 * y
    >>> int(np.argmax(np.abs(unit(mass_mean(X, y))))), int(np.argmax(np.abs(logistic_direction(X, y))))
    (2, 2)
    >>> fold, dirs = cross_fit(X, y, n_folds=5); dirs.shape, sorted(set(fold.tolist()))
    ((5, 8), [0, 1, 2, 3, 4])
    >>> names, R = random_directions(X, 4); names
    ['random_cov_0', 'random_cov_1', 'random_iso_0', 'random_iso_1']
"""
from collections.abc import Sequence
from typing import Any

import numpy as np

METHODS = ("mass_mean", "logistic")


def _checked(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (questions, hidden) and y one label per question, got {X.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must be 1 (correct) or 0 (incorrect) per question")
    if y.min() == y.max():
        raise ValueError("a direction needs correct and incorrect questions, got only one class")
    return X, y.astype(int)


def mass_mean(X: Any, y: Any) -> np.ndarray:
    """Mean of the correct rows (y = 1) minus the mean of the incorrect rows (y = 0), in X's units."""
    X, y = _checked(X, y)
    return X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)


def logistic_direction(X: Any, y: Any, seed: int = 0, C: float = 1.0) -> np.ndarray:
    """The weights of a logistic regression on standardized X, divided by the scale: the direction in X's
    own space along which the probe's score grows (its positive side predicts correct)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    X, y = _checked(X, y)
    scaler = StandardScaler().fit(X)
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(scaler.transform(X), y)
    return np.asarray(model.coef_[0] / scaler.scale_, dtype=np.float64)


def unit(v: Any) -> np.ndarray:
    """v divided by its Euclidean norm."""
    v = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("a direction must have a finite non-zero norm")
    return v / norm


def _fit(method: str, X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    if method == "mass_mean":
        return unit(mass_mean(X, y))
    if method == "logistic":
        return unit(logistic_direction(X, y, seed=seed))
    raise ValueError(f"direction method must be one of {', '.join(METHODS)}, got {method!r}")


def cross_fit(X: Any, y: Any, n_folds: int = 5, method: str = "mass_mean", seed: int = 0,
              groups: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified folds of the questions and, per fold f, the unit direction fitted on the other folds only.

    Returns (fold, directions): fold[i] is question i's fold, directions[fold[i]] the direction it is
    steered by, which never saw question i. groups: one key per row (a question's samples) kept in one
    fold (StratifiedGroupKFold). A ValueError when a class has fewer rows than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    X, y = _checked(X, y)
    if n_folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {n_folds}")
    if np.bincount(y, minlength=2).min() < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} correct and {n_folds} incorrect questions, "
                         f"got {int((y == 1).sum())} and {int((y == 0).sum())}")
    if groups is None:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X, y)
    else:
        splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(X, y, [str(g) for g in groups])
    fold = np.full(len(y), -1, dtype=int)
    directions = np.zeros((n_folds, X.shape[1]))
    for f, (train, test) in enumerate(splits):
        fold[test] = f
        directions[f] = _fit(method, X[train], y[train], seed)
    return fold, directions


def random_directions(X: Any, k: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """k random unit directions: ceil(k/2) drawn from N(0, cov(X)) (Xc.T @ g / sqrt(n - 1), g ~ N(0, I_n):
    the covariance's shape without forming an H x H matrix), the rest isotropic N(0, I_H)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"random directions need X as (questions >= 2, hidden), got {X.shape}")
    if k < 0:
        raise ValueError(f"the number of random directions must be >= 0, got {k}")
    rng = np.random.default_rng(seed)
    n_cov = (k + 1) // 2
    Xc = X - X.mean(axis=0)
    cov_draws = (Xc.T @ rng.normal(size=(X.shape[0], n_cov))).T / np.sqrt(X.shape[0] - 1)   # (n_cov, H)
    iso_draws = rng.normal(size=(k - n_cov, X.shape[1]))
    draws = np.concatenate([cov_draws, iso_draws])
    names = [f"random_cov_{i}" for i in range(n_cov)] + [f"random_iso_{i}" for i in range(k - n_cov)]
    return names, np.stack([unit(d) for d in draws]) if k else np.zeros((0, X.shape[1]))


def spread(X: Any, u: Any) -> float:
    """The residual's spread along u: the std (ddof 1) of the projections of X's rows on unit(u)."""
    return float(np.std(np.asarray(X, dtype=np.float64) @ unit(u), ddof=1))
