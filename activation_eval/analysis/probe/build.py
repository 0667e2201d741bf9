"""The one builder of a ProbeResult (schema/probe.py): a sweep's probabilities -> scores, side tables, verdict.

Beside the verdict (tables at 95%, at most TABLE_RESAMPLES resamples): the Hewitt & Liang (2019)
control task (hl_selectivity = AUROC - control-task AUROC), both probe families, the AUROC under other
CV seeds, operating points of the best layer and of every control (operating_points.py), the layer x
position AUROC table when generated positions were captured, and the transfer matrix (transfer.py).

Public names:
    probe(layer_data, n_layers, target, n_splits, seed, groups, n_bootstrap, progress, family, cv_seeds,
          transfer, run_names, where) -> ProbeResult
                                        fit every layer of `layer_data` (one pass), then bootstrap all
                                        models together; `where` names the run folders
    Where                               run_dir, run_name, reduce, position, position_note, test_dir, test_name
    TABLE_RESAMPLES

Example:
    >>> from activation_eval.analysis.probe.sweep import LayerData
    >>> rng = np.random.default_rng(0)
    >>> rows = [{"id": f"q{i}", "correct": i % 2 == 0, "category": "a", "question": f"q {i}",
    ...          "num_prompt_tokens": 10, "num_generated_tokens": 4} for i in range(40)]
    >>> layers = [LayerData("layer_0", rng.normal(size=(40, 4)), rows, None, None, None)]
    >>> res = probe(layers, 1, "correct", 5, 0, None, 1000, False, "logistic", 1, None, ("run", None), Where())
    >>> res.layers_tested, res.verdict, res.operating_points.positive
    (1, 'no evidence beyond the controls', 'True')
"""
import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...schema.probe import (
    BootstrapSetup,
    Clusters,
    CvSetup,
    LayerScore,
    Metric,
    OperatingPointRow,
    OperatingPoints,
    PositionTable,
    ProbeResult,
    ProbeScores,
    SeedSpread,
    TestRunResult,
)
from ...schema.transfer import TransferResult
from .controls import make_control
from .error_detection import error_detection_of
from .models import PROBE_FAMILIES, family_name, make_probe
from .operating_points import operating_points
from .overlap import TestSplit, split_fields
from .scores import ALPHA, LEVEL, auroc_table, default_resamples, evaluate_scores
from .sweep import LayerData, Proba, Setup, Sweep, fit_score, one_blas_thread, oof_proba
from .transfer import transfer_matrix

TABLE_RESAMPLES = 2000             # resamples of the side tables (families, seeds, positions, operating points)


@dataclass(frozen=True)
class Where:
    """Where the probed data came from (all None for in-memory data)."""
    run_dir: str | None = None
    run_name: str | None = None
    reduce: str | int | None = None
    position_note: str | None = None
    test_dir: str | None = None
    test_name: str | None = None
    keep_overlap: bool = False              # --keep_overlap: shared questions stay in cross-run/group tests
    test_split: TestSplit | None = None     # --test_run: the overlap and the fields both runs carry (overlap.py)


def probe(layer_data: Iterable[LayerData], n_layers: int, target: str, n_splits: int, seed: int, groups: str | None,
          n_bootstrap: int | None, progress: bool, family: str, cv_seeds: int, transfer: str | None,
          run_names: tuple[str, str | None], where: Where) -> ProbeResult:
    """Fit every layer (one pass over `layer_data`), then bootstrap all models together."""
    n_boot = _check_options(n_layers, n_bootstrap, family, cv_seeds)
    setup, sweep, controls, test_controls = _fit(layer_data, n_layers, target, n_splits, seed, groups, family,
                                                 cv_seeds, progress)
    scores = evaluate_scores(setup.y, sweep.oof, controls, n_boot, seed, setup.strata, setup.clusters)
    B = min(n_boot, TABLE_RESAMPLES)
    matrix = None
    if transfer is not None or setup.y_test is not None:
        with one_blas_thread():
            matrix = _transfer(sweep, transfer, run_names, seed, where.keep_overlap)
    test_run = None
    if setup.y_test is not None:
        test_run = _test_run(setup, evaluate_scores(setup.y_test, sweep.test_scores, test_controls, n_boot, seed,
                                                    clusters=setup.test_clusters), where)
    return ProbeResult(
        run_dir=where.run_dir, run_name=where.run_name, target=setup.target, classes=[str(c) for c in setup.classes],
        class_counts=setup.counts(setup.y), n=len(setup.y), reduce=where.reduce, position=where.reduce,
        position_note=where.position_note, family=family_name(family),
        auroc_kind="binary" if setup.n_classes == 2 else "one-vs-rest macro", layers_tested=len(sweep.oof),
        cv=_cv(setup), bootstrap=_bootstrap(setup, n_boot, len(sweep.oof)), clusters=_clusters(setup),
        warnings=list(setup.warnings), notes=list(setup.notes), dropped_controls=setup.dropped,
        best_control=scores.best_control, best_input_control=scores.best_input_control,
        best_output_control=scores.best_output_control, best_layer=scores.best_layer, verdict=scores.verdict,
        controls=scores.controls, layers=_with_control_task(scores, sweep, B, seed),
        families={f: auroc_table(setup.y, probas, B, seed, setup.strata, setup.clusters)
                  for f, probas in sweep.families.items()},
        seeds=SeedSpread(seeds=setup.seeds, auroc=sweep.seed_auroc,
                         range={n: (min(a), max(a)) for n, a in sweep.seed_auroc.items()}),
        operating_points=_operating_points(setup, sweep, scores.best_layer, controls, B, seed),
        error_detection=error_detection_of(setup, scores.best_layer, sweep.oof, controls, B, seed),
        positions=_positions(setup, sweep, B, seed), transfer=matrix, test_run=test_run)


def _check_options(n_layers: int, n_bootstrap: int | None, family: str, cv_seeds: int) -> int:
    n_boot = default_resamples(n_layers) if n_bootstrap is None else int(n_bootstrap)
    if n_boot < 1000:
        raise ValueError(f"n_bootstrap must be at least 1000 resamples, got {n_boot}")
    if family not in PROBE_FAMILIES:
        raise ValueError(f"unknown probe family {family!r}; known: {', '.join(PROBE_FAMILIES)}")
    if int(cv_seeds) < 1:
        raise ValueError(f"cv_seeds must be at least 1, got {cv_seeds}")
    return n_boot


def _fit(layer_data: Iterable[LayerData], n_layers: int, target: str, n_splits: int, seed: int, groups: str | None,
         family: str, cv_seeds: int, progress: bool) -> tuple[Setup, Sweep, dict[str, Proba], dict[str, Proba]]:
    """(setup, sweep, the controls' out-of-fold probabilities, the controls' scores on the test run)."""
    from tqdm.auto import tqdm
    setup: Setup | None = None
    sweep: Sweep | None = None
    bar = tqdm(layer_data, total=n_layers, desc="probe layers", unit="layer", file=sys.stderr,
               disable=not progress, leave=False)
    with one_blas_thread():
        for layer in bar:
            if setup is None:
                setup = Setup(layer.rows, target, n_splits, seed, groups, layer.test_rows, family, cv_seeds)
                sweep = Sweep(setup)
            setup.check_rows(layer.name, layer.rows, layer.test_rows)
            assert sweep is not None
            sweep.add(layer)
        if setup is None or sweep is None:
            raise ValueError("no layers to probe")
        s = setup
        controls = {c: oof_proba(functools.partial(make_control, c), x, s.y, s.splits, s.n_classes)
                    for c, x in s.control_inputs.items()}
        test_controls = {}
        if s.y_test is not None:
            test_controls = {c: fit_score(make_control(c), s.control_inputs[c], s.y, s.test_inputs[c])
                             for c in s.control_inputs}
    return setup, sweep, controls, test_controls


def _cv(setup: Setup) -> CvSetup:
    return CvSetup(method=setup.method, folds=len(setup.splits), seed=setup.seed, groups=setup.groups,
                   auroc_pairs="within each fold" if setup.groups else "all out-of-fold predictions pooled",
                   seeds=setup.seeds)


def _bootstrap(setup: Setup, n_boot: int, n_layers: int) -> BootstrapSetup:
    return BootstrapSetup(
        resamples=n_boot, seed=setup.seed, level=LEVEL,
        unit="question (its samples together)" if setup.clusters is not None else "question",
        adjustment=f"Bonferroni over {n_layers} layers: selectivity_ci is the percentile interval "
                   f"[alpha/(2L), 1 - alpha/(2L)], alpha={ALPHA}",
        adjusted_level=1 - ALPHA / n_layers, best_control="maximum over the controls within each resample (paired)")


def _clusters(setup: Setup) -> Clusters | None:
    return None if setup.clusters is None else Clusters(by="id", n_clusters=setup.n_clusters, rows=len(setup.y))


def _with_control_task(scores: ProbeScores, sweep: Sweep, n_boot: int, seed: int) -> dict[str, LayerScore]:
    """Each layer's score with the Hewitt & Liang control task (labels shuffled within category) beside."""
    s = sweep.setup
    task = auroc_table(s.control_task_y, sweep.control_task, n_boot, seed, s.strata, s.clusters)
    main = auroc_table(s.y, {n: p for n, (p, _) in sweep.oof.items()}, n_boot, seed, s.strata, s.clusters)
    out = {}
    for name, layer in scores.layers.items():
        t = task[name]
        out[name] = LayerScore(auroc=layer.auroc, auroc_ci=layer.auroc_ci, accuracy=layer.accuracy,
                               accuracy_ci=layer.accuracy_ci, selectivity=layer.selectivity,
                               selectivity_ci=layer.selectivity_ci,
                               selectivity_ci_unadjusted=layer.selectivity_ci_unadjusted,
                               control_task_auroc=t.auroc, control_task_auroc_ci=t.auroc_ci,
                               hl_selectivity=main[name].auroc - t.auroc)
    return out


def _positions(setup: Setup, sweep: Sweep, n_boot: int, seed: int) -> PositionTable | None:
    """The layer x position AUROC table (None when the layers were read at one position)."""
    if not sweep.positions:
        return None
    tables = {p: auroc_table(setup.y, probas, n_boot, seed, setup.strata, setup.clusters)
              for p, probas in sweep.positions.items()}
    return PositionTable(positions=list(sweep.positions), n=len(setup.y), level=LEVEL,
                         auroc={n: {p: tables[p][n].auroc for p in tables} for n in sweep.oof},
                         auroc_ci={n: {p: tables[p][n].auroc_ci for p in tables} for n in sweep.oof})


def _operating_points(setup: Setup, sweep: Sweep, best_layer: str, controls: Mapping[str, Proba], n_boot: int,
                      seed: int) -> OperatingPoints | None:
    """The best layer's and every control's (but majority's) operating points (binary targets, else None)."""
    if setup.n_classes != 2:
        return None
    scored = {best_layer: sweep.oof[best_layer][0],
              **{f"control:{c}": p for c, (p, _) in controls.items() if c != "majority"}}
    rows = {name: _point_row(operating_points(p[:, 1], setup.y == 1, n_boot=n_boot, seed=seed,
                                              clusters=setup.clusters, level=LEVEL))
            for name, p in scored.items()}
    return OperatingPoints(level=LEVEL, prevalence=float(np.mean(setup.y == 1)), positive=str(setup.classes[1]),
                           rows=rows)


def _point_row(figures: Mapping[str, Any]) -> OperatingPointRow:
    """operating_points' figures as the result's row."""
    def metric(key: str) -> Metric:
        f = figures[key]
        value, (lo, hi) = f["value"], f["ci"]
        finite = [None if v is None or not np.isfinite(v) else float(v) for v in (value, lo, hi)]
        return Metric(value=finite[0], ci=(finite[1], finite[2]),
                      interval="basic" if f["interval"] == "basic" else "percentile")
    return OperatingPointRow(auprc=metric("auprc"), tpr_at_1pct_fpr=metric("tpr_at_1pct_fpr"),
                             fpr_at_95pct_tpr=metric("fpr_at_95pct_tpr"), brier=metric("brier"), ece=metric("ece"))


def _transfer(sweep: Sweep, field: str | None, run_names: tuple[str, str | None], seed: int,
              keep_overlap: bool = False) -> TransferResult:
    """The transfer matrix of the best layer: across values of `field`, or across the two runs."""
    s = sweep.setup
    _, name, X, X_test = sweep.best

    def fit() -> Any:
        return make_probe(s.family)
    if field is not None:
        missing = sum(r.get(field) is None for r in s.rows)
        if missing:
            raise ValueError(f"--transfer {field}: {missing} of {len(s.rows)} results rows have no {field!r}")
        group_of = [str(r.get(field)) for r in s.rows]
        return transfer_matrix(X, s.y, group_of, s.rows, fit, seed=seed, clusters=s.clusters, by=field, layer=name,
                               keep_overlap=keep_overlap)
    assert s.test_rows is not None and s.y_test is not None
    rows = list(s.rows) + list(s.test_rows)
    group_of = [run_names[0]] * len(s.rows) + [run_names[1] or "test run"] * len(s.test_rows)
    keys = [f"{g}\x1f{r.get('id')}" for g, r in zip(group_of, rows)]
    clusters = np.unique(keys, return_inverse=True)[1]
    return transfer_matrix(np.vstack([X, X_test]), np.concatenate([s.y, s.y_test]), group_of, rows, fit,
                           seed=seed, clusters=clusters, by="run", layer=name, keep_overlap=keep_overlap)


def _test_run(setup: Setup, scores: ProbeScores, where: Where) -> TestRunResult:
    assert setup.y_test is not None
    return TestRunResult(run_dir=where.test_dir, run_name=where.test_name, n=len(setup.y_test),
                         class_counts=setup.counts(setup.y_test), best_control=scores.best_control,
                         best_input_control=scores.best_input_control, best_output_control=scores.best_output_control,
                         best_layer=scores.best_layer, verdict=scores.verdict, controls=scores.controls,
                         layers=scores.layers, **split_fields(where.test_split, setup.test_rows))
