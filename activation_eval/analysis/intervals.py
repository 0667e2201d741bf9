"""Uncertainty of figures shown to a researcher: percentile bootstrap intervals of statistics.

The interval of a proportion (Wilson score) has its one owner in activation_eval/accuracy.py.

Public names:
    bootstrap_ci(values, statistic=np.mean, n_resamples=1000, level=0.95, seed=0, clusters=None) -> (low, high)
                                                                percentile bootstrap over the values (over
                                                                whole clusters, e.g. a question's samples)

Example:
    >>> bootstrap_ci([3, 1, 40, 2, 7], np.median)   # interval of the median rank
    (1.0, 40.0)
"""
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..schema.estimates import Interval


def bootstrap_ci(values: Any, statistic: Callable[..., Any] = np.mean, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0, clusters: Sequence[Any] | None = None) -> Interval:
    """Percentile-bootstrap interval of statistic(values) over resampled values (scipy.stats.bootstrap).

    clusters: one key per value (e.g. the question id of each sample); when some key repeats, each
    resample draws whole clusters (all samples of a question together), so correlated samples do
    not narrow the interval. (None, None) for fewer than 2 values; (v, v) when every value is the same.

    >>> lo, hi = bootstrap_ci(np.repeat([3, 1, 40, 2, 7], 4), np.median, clusters=np.repeat(range(5), 4))
    >>> (lo, hi)                           # 5 questions x 4 identical samples: the 5-question interval
    (1.0, 40.0)
    """
    from scipy.stats import bootstrap
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None, None
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    if clusters is not None and len(set(map(str, clusters))) < values.size:
        return _cluster_ci(values, statistic, n_resamples, level, seed, [str(c) for c in clusters])
    res = bootstrap((values,), statistic, n_resamples=n_resamples, confidence_level=level,
                    method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _cluster_ci(values: np.ndarray, statistic: Callable[..., Any], n_resamples: int, level: float, seed: int,
                keys: list[str]) -> Interval:
    """bootstrap_ci drawing whole clusters: each resample is C clusters drawn with replacement."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    members = [np.asarray(g) for g in groups.values()]
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(values[np.concatenate([members[c] for c in draw])])
                      for draw in rng.integers(0, len(members), size=(n_resamples, len(members)))])
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)
