"""The probe families the field compares (Marks & Tegmark 2023): logistic regression and mass-mean.

    logistic    standardized features, L2-regularized logistic regression (sklearn's default C=1)
    mass_mean   the difference of the two classes' mean activations as the direction (no fitting of
                a direction at all: it cannot pick up a spurious high-variance axis); the projection on
                it is turned into a probability by a one-feature logistic regression on the training
                questions. Binary targets only.

Public names:
    FAMILIES                        ("logistic", "mass_mean")
    make_probe(family) -> unfitted sklearn-style classifier (fit, predict_proba, predict)

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = np.array([0, 1] * 50)
    >>> X = rng.normal(size=(100, 16)); X[:, 3] += 2.0 * y          # the classes differ along one axis
    >>> probe = make_probe("mass_mean").fit(X, y)
    >>> int(np.argmax(np.abs(probe.direction_)))                    # the difference of means finds it
    3
    >>> probe.predict_proba(X).shape, float((probe.predict(X) == y).mean()) > 0.8
    ((100, 2), True)
"""
from typing import Any

import numpy as np

FAMILIES = ("logistic", "mass_mean")


def make_probe(family: str) -> Any:
    """An unfitted classifier of probe `family` (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if family == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if family == "mass_mean":
        return MassMeanProbe()
    raise ValueError(f"unknown probe family {family!r}; known: {', '.join(FAMILIES)}")


class MassMeanProbe:
    """Direction = mean(class 1) - mean(class 0); probability = logistic(a * projection + b) fitted
    on the training questions' projections. Binary only."""

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"the mass-mean probe needs a binary target, got {len(self.classes_)} classes")
        self.direction_ = X[y == self.classes_[1]].mean(axis=0) - X[y == self.classes_[0]].mean(axis=0)
        self.center_ = X.mean(axis=0)
        self._link = LogisticRegression(max_iter=2000).fit(self._project(X), y)
        return self

    def _project(self, X):
        norm = np.linalg.norm(self.direction_) or 1.0
        return ((np.asarray(X, dtype=np.float64) - self.center_) @ (self.direction_ / norm))[:, None]

    def predict_proba(self, X):
        return self._link.predict_proba(self._project(X))

    def predict(self, X):
        return self._link.predict(self._project(X))
