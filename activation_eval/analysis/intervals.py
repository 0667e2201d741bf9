"""Uncertainty of figures shown to a researcher: 95% intervals for proportions and statistics.

Public names:
    wilson_interval(correct, n, level=0.95) -> (low, high)     of a proportion (Wilson score; from
                                                                activation_eval/accuracy.py, the one owner)
    bootstrap_ci(values, statistic=np.mean, n_resamples=1000, level=0.95, seed=0) -> (low, high)
                                                                percentile bootstrap over the values

Example:
    >>> wilson_interval(64, 122)                    # accuracy 52.5%
    (0.437, 0.611)
    >>> bootstrap_ci([3, 1, 40, 2, 7], np.median)   # interval of the median rank
    (1.0, 40.0)
"""
import numpy as np

from ..accuracy import wilson_interval  # noqa: F401  (re-exported)


def bootstrap_ci(values, statistic=np.mean, n_resamples=1000, level=0.95, seed=0):
    """Percentile-bootstrap interval of statistic(values) over resampled values (scipy.stats.bootstrap).

    (None, None) for fewer than 2 values; (v, v) when every value is the same.
    """
    from scipy.stats import bootstrap
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None, None
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = bootstrap((values,), statistic, n_resamples=n_resamples, confidence_level=level,
                    method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
