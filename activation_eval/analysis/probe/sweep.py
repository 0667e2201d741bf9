"""The probe's fitting: labels, folds and controls fixed once (Setup), then every layer's out-of-fold
class probabilities (Sweep), one layer at a time, so that a run's layers never all sit in memory.

Per layer, a probe (models.py: standardized logistic regression by default, or mass-mean) gives
out-of-fold class probabilities under cross-validation (folds.py): the main family on the main folds,
the other family, the permutation test (labels shuffled within category), Hewitt & Liang's control task
(a fixed random label per input type), the other CV seeds and the other token positions; with a test
run, the probe fitted on all of the run scores the test run's questions.

Out-of-fold scores become an AUROC by comparing only pairs that one fold held out (OOF_SCORING, strata =
the fold of each question, for every CV seed): pooled, each fold model's own offset would rank folds
against each other, and the folds' class balances differ, so a constant feature would not score 0.5.

Public names:
    Setup(rows, target, n_splits, seed, groups, test_rows, family, cv_seeds, answer=False, answer_embedding=None,
          test_answer_embedding=None)
                                    .strata: the fold of each question; .raw: the controls scored raw
    Sweep(setup).add(layer)         fit one LayerData (layer_fits.fit_layer)
    Sweep(setup).record(layer, fits) keep the fits of one LayerData made elsewhere (parallel.py)
    LayerData                       one layer's name, matrix, rows, test matrix and rows, {position: matrix}
                                    (the first may carry the embedding layer at the probe's position)
    one_blas_thread()               context: BLAS limited to one thread during the fits

Example:
    >>> rng = np.random.default_rng(0)
    >>> rows = [{"id": f"q{i}", "correct": i % 2 == 0, "category": "ab"[i % 3 == 0], "question": f"q {i}",
    ...          "num_prompt_tokens": 10, "num_generated_tokens": 4} for i in range(40)]
    >>> setup = Setup(rows, "correct", 5, 0, None, None, "logistic", 1)
    >>> sweep = Sweep(setup); sweep.add(LayerData("layer_0", rng.normal(size=(40, 4)), rows, None, None, None))
    >>> sweep.oof["layer_0"][0].shape, len(setup.splits), sorted(setup.control_inputs)
    ((40, 2), 5, ['bag_of_words', 'category', 'length', 'majority'])
    >>> sorted(set(setup.strata.tolist()))                  # AUROC pairs: within each of the 5 folds
    [0, 1, 2, 3, 4]
"""
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...schema.probe import OOF_PAIRS_WITHIN_FOLDS
from .bootstrap import cluster_index
from .controls import OUTPUT_SCORE_FIELDS, RAW_TARGET, control_inputs, own_controls
from .folds import hl_control_labels, labels, labels_of_test_run, make_folds, permutation_labels, small_sample_warnings
from .layer_fits import FitPlan, LayerFits, as_float, fit_layer
from .models import FAMILIES
from .sample_scores import with_sample_scores

Rows = Sequence[Mapping[str, Any]]
Proba = tuple[np.ndarray, np.ndarray]          # (class probabilities (n, k), predicted classes (n,))
OOF_SCORING = OOF_PAIRS_WITHIN_FOLDS


@dataclass
class LayerData:
    """One layer's data: its name, matrix, rows, the test run's matrix and rows, and {position: matrix}."""
    name: str
    X: Any
    rows: Rows
    X_test: Any
    test_rows: Rows | None
    positions: Mapping[str, Any] | None
    answer_embedding: Any = None           # the embedding layer at the same position, run and test run (the
    test_answer_embedding: Any = None      # first layer carries them: the answer_embedding control)
    sample_embeddings: Any = None          # a run with samples: the middle layer at the last token (EigenScore)


class Setup:
    """Labels, folds, clusters and control inputs of a probe, fixed by the first layer's rows."""

    def __init__(self, rows: Rows, target: str, n_splits: int, seed: int, groups: str | None, test_rows: Rows | None,
                 family: str, cv_seeds: int, answer: bool = False, answer_embedding: Any = None,
                 test_answer_embedding: Any = None, sample_embeddings: Any = None, strata: str | None = None) -> None:
        rows, self.notes = with_sample_scores(rows, sample_embeddings)        # several samples: their scores join
        if test_rows is not None:
            test_rows = with_sample_scores(test_rows)[0]
        self.rows, self.target, self.groups, self.family, self.seed = rows, target, groups, family, seed
        self.classes, self.y = labels(rows, target, "the run")
        self.n_classes = len(self.classes)
        found = cluster_index(rows)
        self.clusters: np.ndarray | None = found[0] if found else None
        self.n_clusters: int = found[1] if found else len(rows)
        field = strata or "category"
        self.strata_field = strata
        self.splits, self.method = make_folds(self.y, rows, n_splits, seed, groups, self.notes, self.clusters, field)
        self.seeds = [seed + i for i in range(int(cv_seeds))]
        self.seed_splits = [make_folds(self.y, rows, n_splits, s, groups, [], self.clusters, field)[0]
                            for s in self.seeds[1:]]
        # --probe_strata FIELD: every AUROC compares only pairs of one value of FIELD (e.g. one task), so that
        # what differs between tasks (their difficulty) is no signal; out-of-fold scores also within one fold
        self.raw_strata = _codes(rows, strata) if strata else None
        self.strata = _within(fold_strata(self.splits, len(self.y)), self.raw_strata)
        self.seed_strata = [_within(fold_strata(splits, len(self.y)), self.raw_strata) for splits in self.seed_splits]
        self.permutation_y = permutation_labels(self.y, rows, seed)
        self.hl_y = self._hl_labels(rows, seed)
        own = own_controls(target)
        self.answer = answer
        self.control_inputs, notes = control_inputs(rows, drop=own, answer=answer, answer_embedding=answer_embedding)
        self.dropped = {c: f"it reads the target {target!r} itself" for c in own}
        self.notes += notes + [f"control {c!r} dropped: {why}" for c, why in self.dropped.items()]
        self.raw = self._raw_controls()
        self.warnings = small_sample_warnings(self.y, self.classes, target,
                                              self.n_clusters if self.clusters is not None else None)
        if self.clusters is not None:
            self.warnings.append(f"{len(self.y)} rows of {self.n_clusters} questions (several samples each): "
                                 f"folds and resampling keep each question's samples together")
        if family == "mass_mean" and self.n_classes != 2:
            raise ValueError(f"the mass-mean probe needs a binary target; {target!r} has {self.n_classes} classes")
        self.y_test: np.ndarray | None = None
        self.test_rows = test_rows
        self.test_clusters: np.ndarray | None = None
        self.test_inputs: dict[str, Any] = {}
        if test_rows is not None:
            self._add_test_run(test_rows, own, test_answer_embedding)

    def _hl_labels(self, rows: Rows, seed: int) -> np.ndarray | None:
        """Hewitt & Liang's labels, or None (with a note) when some training fold would lack a class."""
        hl = hl_control_labels(self.y, rows, seed)
        if hl is not None and all(len(np.unique(hl[train])) == self.n_classes for train, _ in self.splits):
            return hl
        self.notes.append("Hewitt & Liang control task left out: its random labels per input type leave a training "
                          "fold without a class (too few input types)")
        return None

    def _raw_controls(self) -> list[str]:
        """The single scores scored raw: every one the rows carry, for the binary target "correct"."""
        singles = [c for c in self.control_inputs if c in OUTPUT_SCORE_FIELDS]
        if not singles:
            return []
        if self.target == RAW_TARGET and [str(c) for c in self.classes] == ["False", "True"]:
            return singles
        self.notes.append(f"single scores ({', '.join(singles)}) fitted (logistic regression, out-of-fold), not "
                          f"scored raw: their orientation is defined for the target {RAW_TARGET!r} only")
        return []

    def _add_test_run(self, test_rows: Rows, own: Sequence[str], answer_embedding: Any) -> None:
        self.y_test = labels_of_test_run(test_rows, self.target, self.classes)
        found = cluster_index(test_rows)
        self.test_clusters = found[0] if found else None
        self.test_inputs, test_notes = control_inputs(test_rows, drop=own, answer=self.answer,
                                                      answer_embedding=answer_embedding)
        self._shared_confidence()
        missing = [c for c in self.control_inputs if c not in self.test_inputs]
        for c in missing:                                            # both runs must feed a control
            del self.control_inputs[c]
        if missing:
            self.notes.append(f"control(s) {', '.join(missing)} left out: the test run's rows cannot feed them "
                              f"(controls use what both runs have)")
        self.raw = [c for c in self.raw if c in self.control_inputs]
        self.notes += [f"test run: {n}" for n in test_notes]

    def _shared_confidence(self) -> None:
        """output_confidence of both runs from the single scores both carry (else a fit on one run's columns
        could not score the other's)."""
        combined = "output_confidence"
        if combined not in self.control_inputs or combined not in self.test_inputs:
            return
        shared = [f for f in OUTPUT_SCORE_FIELDS if f in self.control_inputs and f in self.test_inputs]
        if len(shared) < 2:
            del self.test_inputs[combined]                 # left out below, with the others the test run lacks
            return
        for inputs in (self.control_inputs, self.test_inputs):
            inputs[combined] = np.hstack([inputs[f] for f in shared])

    def plan(self, families: Sequence[str]) -> FitPlan:
        """The labels and folds every layer's fits need (layer_fits.FitPlan)."""
        return FitPlan(y=self.y, splits=self.splits, permutation_y=self.permutation_y, hl_y=self.hl_y,
                       seed_splits=self.seed_splits, seed_strata=self.seed_strata, strata=self.strata,
                       family=self.family, families=list(families), n_classes=self.n_classes)

    def check_rows(self, layer: str, rows: Rows, test_rows: Rows | None) -> None:
        """Every layer must cover the same questions as the first one."""
        for got, want, which in ((rows, self.rows, "run"), (test_rows, self.test_rows, "test run")):
            if got is not None and want is not None and [r.get("id") for r in got] != [r.get("id") for r in want]:
                raise ValueError(f"layer {layer!r} of the {which} covers other questions than "
                                 f"the first layer; every record must hold every probed layer")

    def counts(self, y: np.ndarray) -> dict[str, int]:
        return {str(c): int((y == i).sum()) for i, c in enumerate(self.classes)}


def _codes(rows: Rows, field: str) -> np.ndarray:
    """An int code per row of the row's value of `field` (as text; missing: "")."""
    number: dict[str, int] = {}
    return np.array([number.setdefault(str(r.get(field) or ""), len(number)) for r in rows], dtype=np.int64)


def _within(folds: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    """Strata of pairs within one fold and, given codes, within one value of the strata field too."""
    return folds if codes is None else folds * (int(codes.max()) + 1) + codes


def fold_strata(splits: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """The fold that held out each question: AUROC compares only pairs within a fold (OOF_SCORING)."""
    strata = np.zeros(n, dtype=int)
    for fold, (_, test) in enumerate(splits):
        strata[test] = fold
    return strata


class Sweep:
    """Out-of-fold class probabilities of every layer: the main family on the main folds, the other
    family, the permutation test, Hewitt & Liang's control task, the other CV seeds and the other
    positions; the best layer's matrices are kept for the transfer matrix."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.oof: dict[str, Proba] = {}
        self.test_scores: dict[str, Proba] = {}
        self.permutation: dict[str, np.ndarray] = {}
        self.hl_control: dict[str, np.ndarray] = {}
        self.seed_auroc: dict[str, list[float]] = {}
        self.families: dict[str, dict[str, np.ndarray]] = {f: {} for f in dict.fromkeys((*FAMILIES, setup.family))
                                                           if f == setup.family or setup.n_classes == 2}
        self.positions: dict[str, dict[str, np.ndarray]] = {}          # position -> {layer: proba}
        self.best: tuple[float, str | None, Any, Any] = (-1.0, None, None, None)   # (AUROC, layer, X, X_test)
        self.plan = setup.plan(list(self.families))

    def add(self, layer: LayerData) -> None:
        """Fit one layer here (fit_layer)."""
        self.record(layer, fit_layer(self.plan, layer.X, layer.positions, layer.X_test))

    def record(self, layer: LayerData, fits: LayerFits) -> None:
        """Keep one layer's fits (from fit_layer, here or in another process); layers in their order."""
        name = layer.name
        self.oof[name] = fits.oof
        for family, proba in fits.families.items():
            self.families[family][name] = proba
        self.permutation[name] = fits.permutation
        if fits.hl_control is not None:
            self.hl_control[name] = fits.hl_control
        self.seed_auroc[name] = fits.seed_auroc
        for position, proba in fits.positions.items():
            self.positions.setdefault(position, {})[name] = proba
        if fits.test is not None:
            self.test_scores[name] = fits.test
        if fits.seed_auroc[0] > self.best[0]:
            X_test = None if layer.X_test is None else as_float(layer.X_test)
            self.best = (fits.seed_auroc[0], name, as_float(layer.X), X_test)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread: probe-sized fits (hundreds of questions) run several times
    slower with threaded BLAS, most of all on a busy machine."""
    import sklearn.linear_model  # noqa: F401  (loads scipy's BLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield
