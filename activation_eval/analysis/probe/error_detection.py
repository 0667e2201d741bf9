"""Error detection as the field frames it: the probe's and the controls' scores read as detectors of
wrong answers and as confidence for selective answering -> schema.probe.ErrorDetection.

A detector of hallucinations takes "incorrect" as its positive class: its AUPRC is judged against
the error rate, not against the (often high) share of correct answers, and its TPR at 1% FPR is the
share of wrong answers caught while flagging 1% of the right ones. So the operating points
(operating_points.py) come in both orientations, "incorrect" first, then "correct". Beside them, the
selective-prediction figures of selective.py: PRR, AURC with its risk-coverage curve, and the
accuracy at 80% and 90% coverage, each with a percentile bootstrap interval over questions (their
samples together), all scores on the same resamples in one pass (error_resamples.py; above its BINS
distinct scores the resamples read the scores in bins, with a note). The scores are the out-of-fold
probabilities of the second class (True: correct) of the best layer's probe and of every control but
majority (one score for all: nothing to rank).

For a binary target other than correct, the first class plays "incorrect" and the keys are the
classes' names.

Public names:
    error_detection(y, classes, target, scored, n_boot=2000, seed=0, clusters=None, level=0.95)
                                -> ErrorDetection | None (None: not a binary target)
    error_detection_of(setup, best_layer, oof, controls, n_boot, seed) -> ErrorDetection | None
                                the probe builder's call: the best layer's and every control's
                                out-of-fold probabilities (sweep.Setup, Sweep.oof)
    orientation_names(target, classes) -> (negative name, positive name)

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random(200) < 0.7).astype(int)                 # 70% correct
    >>> p = np.clip(0.5 + 0.3 * (y - 0.5) + 0.2 * rng.normal(size=200), 0, 1)
    >>> res = error_detection(y, ["False", "True"], "correct", {"layer_3": p}, n_boot=1000)
    >>> list(res.orientations), res.orientations["incorrect"].prevalence == res.error_rate
    (['incorrect', 'correct'], True)
    >>> row = res.selective["layer_3"]
    >>> row.prr.value > 0.5, row.aurc.value < res.error_rate, row.selective_accuracy_80.value > 0.7
    (True, True, True)
"""
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...schema.probe import ErrorDetection, Metric, OperatingPointRow, OperatingPoints, SelectiveRow
from .error_resamples import BINS, binned_note, error_figures
from .selective import CURVE_COVERAGE

__all__ = ["error_detection", "error_detection_of", "orientation_names"]

SCORES = "the out-of-fold probability of the second class (correct) of each scorer"
FEW_ERRORS = 20


def orientation_names(target: str, classes: Sequence[Any]) -> tuple[str, str]:
    """("incorrect", "correct") for the target correct, else the two classes' names."""
    if target == "correct" and [str(c) for c in classes] == ["False", "True"]:
        return "incorrect", "correct"
    return str(classes[0]), str(classes[1])


def error_detection(y: Any, classes: Sequence[Any], target: str, scored: Mapping[str, Any], n_boot: int = 2000,
                    seed: int = 0, clusters: Any = None, level: float = 0.95) -> ErrorDetection | None:
    """Both orientations' operating points and the selective figures of every scorer in `scored`
    ({name: probability of the second class (n,)}) for class indices y (n,) of two `classes`."""
    if len(classes) != 2:
        return None
    y = np.asarray(y)
    correct = y == 1
    negative, positive = orientation_names(target, classes)
    found = error_figures(scored, correct, n_boot=n_boot, seed=seed, clusters=clusters, level=level)
    orientations = {}
    for name, is_positive, part in ((negative, ~correct, 0), (positive, correct, 1)):
        rows = {s: _point_row(parts[part]) for s, parts in found.items()}
        orientations[name] = OperatingPoints(level=level, prevalence=float(np.mean(is_positive)),
                                             positive=name, rows=rows)
    figures = {s: parts[2] for s, parts in found.items()}
    blocks = max((len(np.unique(np.asarray(p))) for p in scored.values()), default=0)
    binned = [binned_note(blocks)] if blocks > BINS else []
    first = next(iter(figures.values()), None)
    error_rate = float(np.mean(~correct))
    return ErrorDetection(level=level, n=len(y), scores=SCORES, negative_class=str(classes[0]), error_rate=error_rate,
                          oracle_aurc=_finite(first["oracle_aurc"]) if first else float("nan"),
                          orientations=orientations, coverage=list(CURVE_COVERAGE),
                          selective={s: _selective_row(f) for s, f in figures.items()},
                          notes=_notes(int((~correct).sum()), int(correct.sum()), negative) + binned)


def error_detection_of(setup: Any, best_layer: str, oof: Mapping[str, Any], controls: Mapping[str, Any],
                       n_boot: int, seed: int) -> ErrorDetection | None:
    """The probe builder's call (see the module docstring)."""
    if setup.n_classes != 2:
        return None
    scored = {best_layer: oof[best_layer][0][:, 1],
              **{f"control:{c}": _score(p) for c, p in controls.items() if c != "majority"}}
    return error_detection(setup.y, setup.classes, setup.target, scored, n_boot=n_boot, seed=seed,
                           clusters=setup.clusters)


def _score(control: Any) -> np.ndarray:
    """A control's score of "correct": a raw single score is one already (oriented by definition), a fitted
    control's (probabilities, predictions) gives its probability of the second class."""
    if isinstance(control, tuple):
        return np.asarray(control[0])[:, 1]
    return np.asarray(control, dtype=np.float64).reshape(-1)


def _finite(v: Any) -> Any:
    return None if v is None or not np.isfinite(v) else float(v)


def _metric(f: Mapping[str, Any]) -> Metric:
    lo, hi = f["ci"]
    return Metric(value=_finite(f["value"]), ci=(_finite(lo), _finite(hi)),
                  interval="basic" if f.get("interval") == "basic" else "percentile")


def _point_row(figures: Mapping[str, Any]) -> OperatingPointRow:
    return OperatingPointRow(**{k: _metric(figures[k]) for k in
                                ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece")})


def _selective_row(f: Mapping[str, Any]) -> SelectiveRow:
    return SelectiveRow(prr=_metric(f["prr"]), aurc=_metric(f["aurc"]),
                        selective_accuracy_80=_metric(f["selective_accuracy_80"]),
                        selective_accuracy_90=_metric(f["selective_accuracy_90"]),
                        risk=[_finite(r) for r in f["risk"]])


def _notes(n_negative: int, n_positive: int, negative: str) -> list[str]:
    notes = []
    if min(n_negative, n_positive) == 0:
        notes.append("one class only: PRR and the ranking figures are undefined")
    elif n_negative < FEW_ERRORS:
        notes.append(f"{n_negative} {negative} row(s): PRR, AURC and the selective accuracies rest on few errors, "
                     f"their intervals are wide")
    return notes
