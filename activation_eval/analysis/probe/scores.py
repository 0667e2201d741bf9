"""The probe's bootstrap: AUROC and accuracy of every layer and control on the same resampled questions,
selectivity over the best control, and the verdict.

Selectivity of a layer = its AUROC - the best control's AUROC, over both sides. Its interval is a
paired bootstrap (probe and controls on the same resampled questions; the best control is the
maximum over the controls within each resample, so choosing the best control is part of the
uncertainty), Bonferroni-adjusted over the L layers tested: the percentile interval
[alpha/(2L), 1 - alpha/(2L)], alpha = 0.05, so all L intervals hold together with probability >= 95%.
The verdict names the first layer (in record order) whose adjusted interval lies above 0, else
NO_EVIDENCE. With every layer pure noise it names a layer at most ~alpha/2 of the time.

A control given as a 1-D score (a raw single score, oriented so that higher = class 1) is scored as
the field scores it: AUROC over all pairs, never fitted, no accuracy (it has no threshold). Class
probabilities (layers, fitted controls) are scored over the pairs `strata` allows (within each fold).
With an answer_embedding control, each layer's gain over it (AUROC - its AUROC) gets a paired interval.

Public names:
    evaluate_scores(y, layer_proba, control_proba, n_boot, seed, strata=None, clusters=None) -> ProbeScores
    auroc_table(y, probas, n_boot, seed, strata=None, clusters=None) -> {name: AurocEstimate}   (95%)
    auroc_tables({table: (y, probas)}, n_boot, seed, strata=None, clusters=None) -> {table: auroc_table(...)}
                                        several tables on one draw of the same resamples
    auroc(proba, y, strata=None) -> float
    default_resamples(n_layers) -> int     bootstrap resamples used when n_bootstrap is None
    NO_EVIDENCE, ALPHA, LEVEL

Example:
    >>> y = np.array([0, 1] * 20)                                            # 40 questions
    >>> P0 = np.full((40, 2), 0.5)                                         # a layer that knows nothing
    >>> P1 = np.stack([1 - (y * 0.6 + 0.2), y * 0.6 + 0.2], axis=1)        # one that separates the classes
    >>> res = evaluate_scores(y, {"layer_0": P0, "layer_1": P1}, {"majority": P0}, 2000, seed=0)
    >>> res.verdict, res.layers["layer_1"].auroc, res.controls["majority"].side
    ('layer_1', 1.0, 'input')
    >>> raw = evaluate_scores(y, {"layer_0": P0}, {"answer_logprob_mean": y - 0.5}, 2000, seed=0)
    >>> c = raw.controls["answer_logprob_mean"]; c.scoring, c.auroc, c.accuracy
    ('raw', 1.0, None)
"""
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...schema import SCORE_ORIENTATION
from ...schema.probe import AurocEstimate, ControlScore, LayerScore, ProbeScores
from .bootstrap import LARGE_N, auroc_gradient, interval, macro_auroc, resample_counts, weighted_accuracy
from .controls import ANSWER_EMBEDDING, control_side

NO_EVIDENCE = "no evidence beyond the controls"
ALPHA = 0.05                       # family-wise error rate of the verdict's intervals
LEVEL = 0.95                       # the plain (per-figure) intervals


def default_resamples(n_layers: int) -> int:
    """Resamples that leave ~10 draws beyond each Bonferroni-adjusted tail (at least 2000, at most 20000)."""
    return int(min(20000, max(2000, math.ceil(10 * 2 * n_layers / ALPHA))))


def auroc(proba: np.ndarray, y: np.ndarray, strata: np.ndarray | None = None) -> float:
    """The AUROC of class probabilities on all questions (macro_auroc with unit weights)."""
    return float(macro_auroc(proba, y, np.ones((1, len(y))), strata)[0])


def auroc_table(y: np.ndarray, probas: Mapping[str, np.ndarray], n_boot: int, seed: int,
                strata: np.ndarray | None = None, clusters: np.ndarray | None = None) -> dict[str, AurocEstimate]:
    """{name: AurocEstimate} of class probabilities on the same resampled questions (LEVEL)."""
    return auroc_tables({"": (y, probas)}, n_boot, seed, strata, clusters)[""]


def auroc_tables(tables: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], n_boot: int, seed: int,
                 strata: np.ndarray | None = None, clusters: np.ndarray | None = None
                 ) -> dict[str, dict[str, AurocEstimate]]:
    """{table: auroc_table(y, probas, ...)} for tables {table: (y, probas)} of the same questions, on one draw of
    the resamples (the very resamples each auroc_table call would draw: the same n, n_boot, seed, clusters)."""
    keys = [(table, name) for table, (_, probas) in tables.items() for name in probas]
    if not keys:
        return {table: {} for table in tables}
    resampled = _auroc_resampler([(tables[t][1][name], tables[t][0], strata) for t, name in keys])
    n = len(next(iter(tables.values()))[0])
    boot = np.concatenate([resampled(W) for W in resample_counts(n, n_boot, seed, clusters=clusters)])
    out: dict[str, dict[str, AurocEstimate]] = {table: {} for table in tables}
    for i, (table, name) in enumerate(keys):
        y, probas = tables[table]
        out[table][name] = AurocEstimate(auroc=auroc(probas[name], y, strata), auroc_ci=interval(boot[:, i], LEVEL))
    return out


def evaluate_scores(y: np.ndarray, layer_proba: Mapping[str, Any], control_proba: Mapping[str, Any], n_boot: int,
                    seed: int, strata: np.ndarray | None = None, clusters: np.ndarray | None = None,
                    raw_strata: np.ndarray | None = None) -> ProbeScores:
    """AUROC / accuracy with intervals for every model, selectivity per layer, the verdict, from class
    probabilities: y int class indices (n,), layer_proba {layer: (n, k)} in layer order, control_proba
    {control: (n, k)}; a value may also be (probabilities, predicted classes), else the predicted class
    is the most probable one; a control's value may be a 1-D raw score (binary y: higher = class 1),
    scored over all pairs with no accuracy; strata (n,): compare only pairs within a stratum (fold) for
    the probabilities; clusters (n,): question index of each row, resampled whole (several samples per question);
    raw_strata (n,): the pairs a raw score compares (None: all; --probe_strata: within one task)."""
    names = list(layer_proba) + list(control_proba)
    models = [_model(v, y, strata, raw_strata) for v in list(layer_proba.values()) + list(control_proba.values())]
    ones = np.ones((1, len(y)))
    point_auroc = np.array([macro_auroc(p, y, ones, st)[0] for p, _, st in models])
    point_acc = np.array([np.nan if h is None else weighted_accuracy(h, ones)[0] for _, h, _ in models])
    boot_auroc, boot_acc = _resampled(y, models, n_boot, seed, clusters)      # (B, models)

    n_layers = len(layer_proba)
    ctrl = slice(n_layers, len(names))
    best_ctrl_boot = np.max(boot_auroc[:, ctrl], axis=1)      # nan if any control is nan there
    best_ctrl = int(np.argmax(point_auroc[ctrl]))
    adjusted = 1 - ALPHA / n_layers
    emb = names.index(ANSWER_EMBEDDING) if ANSWER_EMBEDDING in control_proba else None

    def figures(i: int) -> dict[str, Any]:
        acc = None if np.isnan(point_acc[i]) else float(point_acc[i])
        return {"auroc": float(point_auroc[i]), "auroc_ci": interval(boot_auroc[:, i], LEVEL),
                "accuracy": acc, "accuracy_ci": interval(boot_acc[:, i], LEVEL)}

    layers = {}
    for i, name in enumerate(layer_proba):
        sel = boot_auroc[:, i] - best_ctrl_boot
        f = figures(i)
        layers[name] = LayerScore(**f, selectivity=float(point_auroc[i] - point_auroc[ctrl][best_ctrl]),
                                  selectivity_ci=interval(sel, adjusted), selectivity_ci_unadjusted=interval(sel, LEVEL),
                                  permutation_auroc=None, permutation_auroc_ci=None, permutation_selectivity=None,
                                  hl_control_auroc=None, hl_control_auroc_ci=None, hl_selectivity=None,
                                  embedding_gain=None if emb is None else float(point_auroc[i] - point_auroc[emb]),
                                  embedding_gain_ci=None if emb is None else interval(boot_auroc[:, i] - boot_auroc[:, emb],
                                                                                      LEVEL))
    controls = {name: ControlScore(**figures(n_layers + j), side=control_side(name),
                                   scoring="raw" if _is_raw(v) else "fitted",
                                   orientation=SCORE_ORIENTATION.get(name) if _is_raw(v) else None)
                for j, (name, v) in enumerate(control_proba.items())}
    verdict = next((n for n, v in layers.items() if v.selectivity_ci[0] is not None and v.selectivity_ci[0] > 0),
                   NO_EVIDENCE)
    return ProbeScores(best_control=list(controls)[best_ctrl], best_input_control=_best_of_side(controls, "input"),
                       best_output_control=_best_of_side(controls, "output"),
                       best_layer=max(layers, key=lambda n: layers[n].auroc), verdict=verdict,
                       controls=controls, layers=layers)


def _is_raw(value: Any) -> bool:
    return not isinstance(value, tuple) and np.ndim(value) == 1


def _model(value: Any, y: np.ndarray, strata: np.ndarray | None, raw_strata: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(class scores (n, k), hits or None, strata or None) of a layer's or control's value."""
    if _is_raw(value):                                # a raw score: all pairs (or raw_strata's), no threshold
        score = np.asarray(value, dtype=np.float64)
        return np.stack([-score, score], axis=1), None, raw_strata
    proba, pred = value if isinstance(value, tuple) else (value, np.argmax(value, axis=1))
    return np.asarray(proba, dtype=np.float64), np.asarray(pred) == y, strata


def _resampled(y: np.ndarray, models: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]], n_boot: int,
               seed: int, clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC, accuracy) of every model on every resample (B, models): the same resamples for all (accuracy
    nan for a raw score)."""
    resampled = _auroc_resampler([(p, y, st) for p, _, st in models])
    hits = np.stack([np.zeros(len(y)) if h is None else np.asarray(h, dtype=np.float64) for _, h, _ in models], axis=1)
    raw = np.array([h is None for _, h, _ in models])
    boot_auroc, boot_acc = [], []
    for W in resample_counts(len(y), n_boot, seed, clusters=clusters):
        boot_auroc.append(resampled(W))
        Wf = W.astype(np.float64)
        acc = Wf @ hits / Wf.sum(axis=1)[:, None]           # every model's accuracy in one product
        acc[:, raw] = np.nan
        boot_acc.append(acc)
    return np.concatenate(boot_auroc), np.concatenate(boot_acc)


def _auroc_resampler(models: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> Any:
    """W (m, n) -> the AUROC of every (scores, y, strata) on every resample (m, models): exact (one weighted
    pass per model) below LARGE_N rows, from LARGE_N on the linearized AUROC (bootstrap.py), one product."""
    n = len(models[0][1]) if models else 0
    if n < LARGE_N:
        return lambda W: np.stack([macro_auroc(p, y, W, st) for p, y, st in models], axis=1)
    grads = [auroc_gradient(p, y, st) for p, y, st in models]
    point = np.array([a for a, _ in grads])
    G = np.stack([g for _, g in grads], axis=1)
    return lambda W: point + (W - 1.0) @ G


def _best_of_side(controls: Mapping[str, ControlScore], side: str) -> str | None:
    """The control of `side` with the highest AUROC (None when the side has none)."""
    names = [n for n, c in controls.items() if c.side == side]
    return max(names, key=lambda n: controls[n].auroc) if names else None
