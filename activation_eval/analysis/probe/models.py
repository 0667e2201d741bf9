"""The probe families the field compares: logistic regression and mass-mean (Marks & Tegmark 2023),
and SAPLMA's small MLP (Azaria & Mitchell 2023), a nonlinear probe.

    logistic    standardized features, L2-regularized logistic regression (sklearn's default C=1); the
                features standardized by Standardize (StandardScaler's figures, computed in two passes
                with float64 sums instead of its incremental update: ~5x less time on thousands of rows)
    mass_mean   the difference of the two classes' mean activations as the direction (no fitting of
                a direction at all: it cannot pick up a spurious high-variance axis); the projection on
                it is turned into a probability by a one-feature logistic regression on the training
                questions. Binary targets only.
    mlp         SAPLMA's probe: standardized features into a ReLU MLP of 256-128-64 hidden units (Adam,
                L2 alpha 1e-2), scaled down for small training sets so that the weights stay far fewer
                than (questions x hidden size) allows: each width times min(1, n / 1000), at least 8
                (n = 200: 51-25-12); early stopping on a stratified 15% of the training questions when
                there are at least 100 of them (else 300 epochs, the L2 penalty the only brake); seed 0.
                A probe that needs a nonlinear read-out (an XOR of two directions) is found by mlp, not by
                the linear families; a layer only mlp reads is information stored nonlinearly.

Public names:
    FAMILIES                        ("logistic", "mass_mean"): the linear families, both reported for
                                    binary targets
    PROBE_FAMILIES                  FAMILIES + ("mlp",): what --probe_family accepts
    make_probe(family) -> unfitted sklearn-style classifier (fit, predict_proba, predict)
    family_name(family) -> the result's family name (a known family, else ValueError)
    mlp_sizes(n) -> the MLP's hidden layer sizes for n training questions
    standard_scale(var, mean, n, dtype) -> Standardize's scale from a column variance and mean of n rows
    SHARED_FOLD_FAMILIES            the families layer_fits fits on one standardized copy per fold
    Standardize()                   sklearn StandardScaler's transform (mean 0, population std 1, a constant
                                    column scaled by 1), in the input's float dtype

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = np.array([0, 1] * 50)
    >>> X = rng.normal(size=(100, 16)); X[:, 3] += 2.0 * y          # the classes differ along one axis
    >>> probe = make_probe("mass_mean").fit(X, y)
    >>> int(np.argmax(np.abs(probe.direction_)))                    # the difference of means finds it
    3
    >>> probe.predict_proba(X).shape, float((probe.predict(X) == y).mean()) > 0.8
    ((100, 2), True)
    >>> make_probe("mlp").fit(X, y).predict_proba(X).shape
    (100, 2)
"""
import warnings
from typing import Any, Literal

import numpy as np

FAMILIES = ("logistic", "mass_mean")
SHARED_FOLD_FAMILIES = FAMILIES              # fitted on a fold's shared standardized copy (layer_fits.oof_many)
PROBE_FAMILIES = FAMILIES + ("mlp",)
MLP_WIDTHS = (256, 128, 64)          # SAPLMA's
MLP_FULL_AT = 1000                   # training questions at which the MLP has its full widths
MLP_EARLY_STOPPING_FROM = 100        # training questions needed to hold 15% out for early stopping


def make_probe(family: str) -> Any:
    """An unfitted classifier of probe `family` (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if family == "logistic":
        return make_pipeline(Standardize(), LogisticRegression(max_iter=2000))
    if family == "mass_mean":
        return MassMeanProbe()
    if family == "mlp":
        return MlpProbe()
    raise ValueError(f"unknown probe family {family!r}; known: {', '.join(PROBE_FAMILIES)}")


def family_name(family: str) -> Literal["logistic", "mass_mean", "mlp"]:
    """`family` as the result's Literal type (a ValueError for an unknown one)."""
    if family == "logistic":
        return "logistic"
    if family == "mass_mean":
        return "mass_mean"
    if family == "mlp":
        return "mlp"
    raise ValueError(f"unknown probe family {family!r}; known: {', '.join(PROBE_FAMILIES)}")


def mlp_sizes(n: int) -> tuple[int, ...]:
    """SAPLMA's 256-128-64, each width scaled by min(1, n / MLP_FULL_AT), at least 8.

    >>> mlp_sizes(5000), mlp_sizes(200), mlp_sizes(20)
    ((256, 128, 64), (51, 25, 12), (8, 8, 8))
    """
    scale = min(1.0, n / MLP_FULL_AT)
    return tuple(max(8, int(w * scale)) for w in MLP_WIDTHS)


def standard_scale(var: np.ndarray, mean: np.ndarray, n: int, dtype: Any) -> np.ndarray:
    """The scale Standardize divides by: the population std, 1 for a column StandardScaler calls constant
    (variance at rounding level for its mean, or a std under 10 eps of `dtype`)."""
    eps = np.finfo(dtype if np.dtype(dtype).kind == "f" else np.float64).eps
    constant = var <= (n * eps * mean) ** 2                   # StandardScaler's test of a constant column
    return np.where(constant | (np.sqrt(var) < 10 * eps), 1.0, np.sqrt(var))


class Standardize:
    """Features centred on the training mean and divided by the training (population) std, as sklearn's
    StandardScaler does (a column whose variance is at rounding level is only centred), with float64 sums."""

    def fit(self, X, y=None):
        X = np.asarray(X)
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        var = np.square(X - self.mean_.astype(X.dtype), dtype=np.float64).mean(axis=0)
        self.scale_ = standard_scale(var, self.mean_, len(X), X.dtype)
        return self

    def transform(self, X):
        X = np.asarray(X)
        dtype = X.dtype if X.dtype.kind == "f" else np.float64
        return ((X - self.mean_.astype(dtype)) / self.scale_.astype(dtype)).astype(dtype, copy=False)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def get_params(self, deep=True):                 # sklearn's clone(): no parameters
        return {}

    def set_params(self, **params):
        return self


class MlpProbe:
    """Standardized features -> sklearn MLPClassifier of mlp_sizes(n) (see the module docstring)."""

    def fit(self, X, y):
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        early = len(y) >= MLP_EARLY_STOPPING_FROM
        mlp = MLPClassifier(hidden_layer_sizes=mlp_sizes(len(y)), alpha=1e-2, max_iter=300 if not early else 500,
                            early_stopping=early, validation_fraction=0.15, n_iter_no_change=20, random_state=0)
        self._model = make_pipeline(StandardScaler(), mlp)
        from sklearn.exceptions import ConvergenceWarning
        with warnings.catch_warnings():          # a small probe stops at max_iter: the L2 penalty, not loss, limits it
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit(X, y)
        self.classes_ = self._model.classes_
        return self

    def predict_proba(self, X):
        return self._model.predict_proba(np.asarray(X, dtype=np.float64))

    def predict(self, X):
        return self._model.predict(np.asarray(X, dtype=np.float64))


class MassMeanProbe:
    """Direction = mean(class 1) - mean(class 0); probability = logistic(a * projection + b) fitted
    on the training questions' projections. Binary only."""

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        self.center_ = X.mean(axis=0)
        return self.fit_centred(X - self.center_, y)

    def fit_centred(self, Z, y):
        """fit on rows Z already centred on their mean (float32 kept: sums in float64); then the _centred
        methods score rows centred on the same mean."""
        from sklearn.linear_model import LogisticRegression
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"the mass-mean probe needs a binary target, got {len(self.classes_)} classes")
        self.direction_ = (Z[y == self.classes_[1]].mean(axis=0, dtype=np.float64)
                           - Z[y == self.classes_[0]].mean(axis=0, dtype=np.float64))
        self._link = LogisticRegression(max_iter=2000).fit(self._project_centred(Z), y)
        return self

    def _project_centred(self, Z):
        norm = np.linalg.norm(self.direction_) or 1.0
        Z = np.asarray(Z)
        unit = (self.direction_ / norm).astype(Z.dtype if Z.dtype.kind == "f" else np.float64)
        return np.asarray(Z @ unit, dtype=np.float64)[:, None]

    def predict_proba_centred(self, Z):
        return self._link.predict_proba(self._project_centred(Z))

    def predict_centred(self, Z):
        return self._link.predict(self._project_centred(Z))

    def _project(self, X):
        return self._project_centred(np.asarray(X, dtype=np.float64) - self.center_)

    def predict_proba(self, X):
        return self._link.predict_proba(self._project(X))

    def predict(self, X):
        return self._link.predict(self._project(X))
