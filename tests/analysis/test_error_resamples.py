"""error_resamples.error_figures (one pass over the resamples for many scores, both orientations and the
selective figures from one sort) against the separate calls it replaces: operating_points(1 - p, incorrect),
operating_points(p, correct) and selective_figures(p, correct), each drawing its own resamples (the same
seed: the same resamples) and sorting on its own."""
import numpy as np
import pytest

from activation_eval.analysis.probe.error_resamples import error_figures
from activation_eval.analysis.probe.operating_points import operating_points
from activation_eval.analysis.probe.selective import selective_figures


def _close(a, b, path=""):
    """Nested dicts / lists of numbers equal to 1e-12 (nan equal to nan)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-12, (path, a, b)
    else:
        assert a == b, (path, a, b)


def _scores(n, seed=0):
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.65
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * correct)))
    return correct, {
        "continuous": p,
        "ties": np.round(p, 1),                                        # a few distinct values
        "tiny": np.where(rng.random(n) < 0.3, rng.choice([1e-20, 2e-20, 3e-17], size=n), p),   # 1 - p ties where p doesn't
        "constant": np.full(n, 0.5),
        "raw": rng.normal(size=n) * 3 + correct,                       # not a probability: no Brier, no ECE
    }


@pytest.mark.parametrize("n,clustered", [(157, False), (240, True), (5200, False)])
def test_error_figures_equal_the_separate_calls(n, clustered):
    correct, scored = _scores(n)
    clusters = np.arange(n) // 3 if clustered else None
    n_boot = 1000 if n < 5000 else 200              # above LARGE_N: the index draws (each call draws again)
    together = error_figures(scored, correct, n_boot=n_boot, seed=3, clusters=clusters, level=0.9)
    for name, p in scored.items():
        wrong, right, selective = together[name]
        _close(wrong, operating_points(1.0 - p, ~correct, n_boot=n_boot, seed=3, clusters=clusters, level=0.9), name)
        _close(right, operating_points(p, correct, n_boot=n_boot, seed=3, clusters=clusters, level=0.9), name)
        _close(selective, selective_figures(p, correct, n_boot=n_boot, seed=3, clusters=clusters, level=0.9), name)


def test_error_figures_refuse_a_score_of_another_length_or_with_nan():
    correct, scored = _scores(50)
    with pytest.raises(ValueError, match="score 'short'"):
        error_figures({"short": scored["continuous"][:-1]}, correct, n_boot=1000)
    with pytest.raises(ValueError, match="without nan"):
        error_figures({"nan": np.r_[scored["continuous"][:-1], np.nan]}, correct, n_boot=1000)


@pytest.mark.slow
def test_binned_resamples_give_the_exact_bootstraps_intervals_to_a_tenth_of_their_width():
    """Above `bins` distinct scores each resample reads bins of neighbouring scores, moved by the full sample's
    exact - binned difference: 12,000 questions in 400 bins of 30 against every question (the same resamples)."""
    n = 12_000
    rng = np.random.default_rng(1)
    correct = rng.random(n) < 0.7
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * correct)))
    exact = error_figures({"a": p}, correct, n_boot=1000, bins=10**9)["a"]
    binned = error_figures({"a": p}, correct, n_boot=1000, bins=400)["a"]
    compared = 0
    for e, b in zip(exact, binned):
        for key, figure in e.items():
            if isinstance(figure, dict) and "ci" in figure:
                assert b[key]["value"] == figure["value"], key                  # values: every question
                width = figure["ci"][1] - figure["ci"][0]
                assert width > 0, key
                for got, want in zip(b[key]["ci"], figure["ci"]):
                    assert abs(got - want) <= 0.1 * width, (key, got, want, width)
                compared += 1
    assert compared == 14
    wrong = binned[0]["auprc"]["ci"]                                     # and the bins moved something
    assert wrong != exact[0]["auprc"]["ci"]
