"""Layers fitted in worker processes: a large run's layers are independent given the labels and folds
(layer_fits.FitPlan), so each is fitted by layer_fits.fit_layer in one of a few processes while the main
process reads the next layers; the fits come back in layer order, the same numbers as fitted here (each
fit is deterministic; tests/analysis/test_probe_parallel.py compares whole results).

Workers are loky's reusable processes (joblib's, which scikit-learn brings): fresh interpreters, not forks of
one holding BLAS threads, that do not run the caller's script again, so a notebook or a script without an
`if __name__ == "__main__"` guard works; they fit with one BLAS thread each and exit after IDLE_SECONDS
idle. At most `workers` + 1 layers wait in flight, so memory grows by a few layers' matrices, not by the
run. Small runs stay in this process: starting a worker costs about a second of imports, more than a
small run's whole probe.

Public names:
    fitted_layers(plan, layers, workers) -> iterator of (LayerData, LayerFits), in the order of `layers`
    probe_workers(workers, n_rows, n_layers) -> int: the processes to use (None: auto, see PARALLEL_FROM)
    PARALLEL_FROM, MAX_AUTO_WORKERS, IDLE_SECONDS

Example:
    >>> probe_workers(None, 200, 31), probe_workers(None, 100_000, 1), probe_workers(3, 200, 31)
    (1, 1, 3)
"""
import collections
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from .layer_fits import FitPlan, LayerFits, fit_layer

PARALLEL_FROM = 5000          # questions from which the auto setting fits layers in worker processes
MAX_AUTO_WORKERS = 4          # at most this many by default (each holds a layer's matrix and its fold copies)

IDLE_SECONDS = 30            # idle workers exit after this (they are reused by the next probe meanwhile)


def probe_workers(workers: int | None, n_rows: int, n_layers: int) -> int:
    """The number of processes that fit layers: `workers` when given (at least 1), else 1 below PARALLEL_FROM
    questions or for one layer, else the CPUs this process may use, at most MAX_AUTO_WORKERS and n_layers."""
    if workers is not None:
        if int(workers) < 1:
            raise ValueError(f"probe workers must be at least 1, got {workers}")
        return int(workers)
    if n_rows < PARALLEL_FROM or n_layers < 2:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_AUTO_WORKERS, n_layers))


def fitted_layers(plan: FitPlan, layers: Iterable[Any], workers: int) -> Iterator[tuple[Any, LayerFits]]:
    """(layer, fit_layer(plan, layer.X, layer.positions, layer.X_test)) for each LayerData of `layers`, in order:
    here for workers <= 1, else in `workers` processes."""
    if workers <= 1:
        for layer in layers:
            yield layer, fit_layer(plan, layer.X, layer.positions, layer.X_test)
        return
    from joblib.externals.loky import get_reusable_executor
    pool = get_reusable_executor(max_workers=workers, timeout=IDLE_SECONDS)
    pending: collections.deque[tuple[Any, Future[LayerFits]]] = collections.deque()
    try:
        for layer in layers:
            pending.append((layer, pool.submit(_fit, plan, layer.X, layer.positions, layer.X_test)))
            while len(pending) > workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        for _, future in pending:
            future.cancel()


def _fit(plan: FitPlan, X: Any, positions: Any, X_test: Any) -> LayerFits:
    """A worker's fit, with one BLAS thread (each worker is one of several processes)."""
    import sklearn.linear_model  # noqa: F401  (loads scipy's BLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        return fit_layer(plan, X, positions, X_test)
