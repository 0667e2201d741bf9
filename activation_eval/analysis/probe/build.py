"""The one builder of a ProbeResult (schema/probe.py): a sweep's probabilities -> scores, side tables, verdict.

Single scores are scored raw (target "correct": the oriented score's AUROC, never fitted); every
fitted model's out-of-fold scores are compared within folds only (cv.oof_scoring). A model whose
whole interval lies below 0.5 gets a warning. Beside the verdict (tables at 95%, at most
TABLE_RESAMPLES resamples): the permutation test (labels shuffled within category) and Hewitt &
Liang's (2019) control task (a fixed random label per input type; hl_selectivity = AUROC - its AUROC),
both probe families, the AUROC under other CV seeds, operating points of the best layer and of every
control (operating_points.py), the layer x position AUROC table when generated positions were
captured, and the transfer matrix (transfer.py).

Public names:
    probe(layer_data, n_layers, target, n_splits, seed, groups, n_bootstrap, progress, family, cv_seeds,
          transfer, run_names, where, at_answer=False, strata=None, workers=None) -> ProbeResult
                                        fit every layer of `layer_data` (one pass; in `workers` processes,
                                        parallel.py, None: auto), then bootstrap all models together;
                                        `where` names the run folders; `at_answer` adds the answer-token
                                        controls (the first LayerData carries the embedding layer at the
                                        probe's position)
    below_chance_warnings(part, what) -> [str]
    Where                               run_dir, run_name, reduce, position, position_note, test_dir, test_name
    TABLE_RESAMPLES, BELOW_CHANCE

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
import dataclasses
import functools
import itertools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...schema import P_TRUE
from ...schema.probe import (
    AurocEstimate,
    BootstrapSetup,
    Clusters,
    CvSetup,
    ErrorDetection,
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
from .controls import ANSWER_CONTROLS, make_control, raw_score
from .error_detection import error_detection_of
from .layer_fits import fit_score, oof_proba
from .models import PROBE_FAMILIES, family_name, make_probe
from .operating_points import operating_points
from .overlap import TestSplit, split_fields
from .parallel import fitted_layers, probe_workers
from .scores import ALPHA, LEVEL, auroc_tables, default_resamples, evaluate_scores
from .sweep import OOF_SCORING, LayerData, Setup, Sweep, one_blas_thread
from .transfer import transfer_matrix

TABLE_RESAMPLES = 2000             # resamples of the side tables (families, seeds, positions, operating points)
BELOW_CHANCE = 0.5                 # a model whose whole AUROC interval lies below this gets a warning


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
          run_names: tuple[str, str | None], where: Where, at_answer: bool = False,
          strata: str | None = None, workers: int | None = None) -> ProbeResult:
    """Fit every layer (one pass over `layer_data`), then bootstrap all models together."""
    n_boot = _check_options(n_layers, n_bootstrap, family, cv_seeds)
    setup, sweep, controls, test_controls = _fit(layer_data, n_layers, target, n_splits, seed, groups, family,
                                                 cv_seeds, progress, at_answer, strata, workers)
    scores = evaluate_scores(setup.y, sweep.oof, controls, n_boot, seed, setup.strata, setup.clusters,
                             setup.raw_strata)
    B = min(n_boot, TABLE_RESAMPLES)
    matrix = None
    if transfer is not None or setup.y_test is not None:
        with one_blas_thread():
            matrix = _transfer(sweep, transfer, run_names, seed, where.keep_overlap)
    test_run = None
    if setup.y_test is not None:
        test_run = _test_run(setup, evaluate_scores(setup.y_test, sweep.test_scores, test_controls, n_boot, seed,
                                                    clusters=setup.test_clusters), where)
    errors = error_detection_of(setup, scores.best_layer, sweep.oof, controls, B, seed)
    side = _side_tables(sweep, B, seed)
    warnings = list(setup.warnings) + below_chance_warnings(scores, "")
    if test_run is not None:
        warnings += below_chance_warnings(test_run, "test run: ")
    return ProbeResult(
        run_dir=where.run_dir, run_name=where.run_name, target=setup.target, classes=[str(c) for c in setup.classes],
        class_counts=setup.counts(setup.y), n=len(setup.y), reduce=where.reduce, position=where.reduce,
        position_note=where.position_note, family=family_name(family),
        auroc_kind="binary" if setup.n_classes == 2 else "one-vs-rest macro", layers_tested=len(sweep.oof),
        cv=_cv(setup), bootstrap=_bootstrap(setup, n_boot, len(sweep.oof)), clusters=_clusters(setup),
        warnings=warnings, notes=list(setup.notes), dropped_controls=setup.dropped,
        answer_controls=[c for c in ANSWER_CONTROLS if c in scores.controls], raw_controls=list(setup.raw),
        best_control=scores.best_control, best_input_control=scores.best_input_control,
        best_output_control=scores.best_output_control, best_layer=scores.best_layer, verdict=scores.verdict,
        controls=scores.controls, layers=_with_control_tasks(scores, sweep, side),
        families={f: side[f"family:{f}"] for f in sweep.families},
        seeds=SeedSpread(seeds=setup.seeds, auroc=sweep.seed_auroc,
                         range={n: (min(a), max(a)) for n, a in sweep.seed_auroc.items()}),
        operating_points=_operating_points(setup, sweep, scores.best_layer, controls, B, seed, errors),
        error_detection=errors,
        positions=_positions(setup, sweep, side), transfer=matrix, test_run=test_run)


def _check_options(n_layers: int, n_bootstrap: int | None, family: str, cv_seeds: int) -> int:
    n_boot = default_resamples(n_layers) if n_bootstrap is None else int(n_bootstrap)
    if n_boot < 1000:
        raise ValueError(f"n_bootstrap must be at least 1000 resamples, got {n_boot}")
    if family not in PROBE_FAMILIES:
        raise ValueError(f"unknown probe family {family!r}; known: {', '.join(PROBE_FAMILIES)}")
    if int(cv_seeds) < 1:
        raise ValueError(f"cv_seeds must be at least 1, got {cv_seeds}")
    return n_boot


def below_chance_warnings(part: Any, prefix: str) -> list[str]:
    """A warning for each layer or control (of a ProbeScores / TestRunResult) whose whole AUROC interval lies
    below 0.5: a model that ranks the classes the wrong way round is an artefact to explain, not a finding."""
    out = []
    for kind, models in (("layer", part.layers), ("control", part.controls)):
        for name, m in models.items():
            lo, hi = m.auroc_ci
            if hi is not None and hi < BELOW_CHANCE:
                out.append(f"{prefix}{kind} {name} AUROC {m.auroc:.2f} [{lo:.2f}, {hi:.2f}]: below chance, its whole "
                           f"interval under {BELOW_CHANCE}; a model that ranks the classes the wrong way round points "
                           f"to an artefact (folds, a confound), not to knowledge")
    return out


def _fit(layer_data: Iterable[LayerData], n_layers: int, target: str, n_splits: int, seed: int, groups: str | None,
         family: str, cv_seeds: int, progress: bool, at_answer: bool, strata: str | None = None,
         workers: int | None = None) -> tuple[Setup, Sweep, dict[str, Any], dict[str, Any]]:
    """(setup, sweep, the controls' out-of-fold probabilities or raw scores, the controls' scores on the test run)."""
    from tqdm.auto import tqdm
    bar = tqdm(layer_data, total=n_layers, desc="probe layers", unit="layer", file=sys.stderr,
               disable=not progress, leave=False)
    layers = iter(bar)
    first = next(layers, None)
    if first is None:
        raise ValueError("no layers to probe")
    with one_blas_thread():
        setup = Setup(first.rows, target, n_splits, seed, groups, first.test_rows, family, cv_seeds,
                      answer=at_answer, answer_embedding=first.answer_embedding,
                      test_answer_embedding=first.test_answer_embedding,
                      sample_embeddings=first.sample_embeddings, strata=strata)
        sweep = Sweep(setup)

        def checked(layer: LayerData) -> LayerData:
            setup.check_rows(layer.name, layer.rows, layer.test_rows)
            return layer
        n_workers = probe_workers(workers, len(setup.y), n_layers)
        for layer, fits in fitted_layers(sweep.plan, map(checked, itertools.chain([first], layers)), n_workers):
            sweep.record(layer, fits)
        s = setup
        controls: dict[str, Any] = {
            c: raw_score(c, x) if c in s.raw else oof_proba(functools.partial(make_control, c), x, s.y, s.splits,
                                                               s.n_classes)
            for c, x in s.control_inputs.items()}
        test_controls: dict[str, Any] = {}
        if s.y_test is not None:
            test_controls = {c: raw_score(c, s.test_inputs[c]) if c in s.raw else
                             fit_score(make_control(c), s.control_inputs[c], s.y, s.test_inputs[c])
                             for c in s.control_inputs}
    return setup, sweep, controls, test_controls


def _cv(setup: Setup) -> CvSetup:
    within = f" and within each value of {setup.strata_field!r}" if setup.strata_field else ""
    return CvSetup(method=setup.method, folds=len(setup.splits), seed=setup.seed, groups=setup.groups,
                   strata=setup.strata_field,
                   auroc_pairs=f"within each fold{within} (raw single scores: all pairs{within})",
                   oof_scoring=OOF_SCORING, seeds=setup.seeds)


def _bootstrap(setup: Setup, n_boot: int, n_layers: int) -> BootstrapSetup:
    return BootstrapSetup(
        resamples=n_boot, seed=setup.seed, level=LEVEL,
        unit="question (its samples together)" if setup.clusters is not None else "question",
        adjustment=f"Bonferroni over {n_layers} layers: selectivity_ci is the percentile interval "
                   f"[alpha/(2L), 1 - alpha/(2L)], alpha={ALPHA}",
        adjusted_level=1 - ALPHA / n_layers, best_control="maximum over the controls within each resample (paired)")


def _clusters(setup: Setup) -> Clusters | None:
    return None if setup.clusters is None else Clusters(by="id", n_clusters=setup.n_clusters, rows=len(setup.y))


def _side_tables(sweep: Sweep, n_boot: int, seed: int) -> dict[str, dict[str, AurocEstimate]]:
    """The AUROC tables beside the verdict, on one draw of resamples: "family:<f>" of each family, "permutation",
    "hl" (when H&L's labels exist) and "position:<p>" of each position."""
    s = sweep.setup
    tables: dict[str, tuple[np.ndarray, Mapping[str, np.ndarray]]] = {
        f"family:{f}": (s.y, probas) for f, probas in sweep.families.items()}
    tables["permutation"] = (s.permutation_y, sweep.permutation)
    if s.hl_y is not None and sweep.hl_control:
        tables["hl"] = (s.hl_y, sweep.hl_control)
    tables.update({f"position:{p}": (s.y, probas) for p, probas in sweep.positions.items()})
    return auroc_tables(tables, n_boot, seed, s.strata, s.clusters)


def _with_control_tasks(scores: ProbeScores, sweep: Sweep, side: Mapping[str, Mapping[str, AurocEstimate]]
                        ) -> dict[str, LayerScore]:
    """Each layer's score with the permutation test (labels shuffled within category) and Hewitt & Liang's
    control task (a fixed random label per input type) beside."""
    perm, hl = side["permutation"], side.get("hl", {})
    out = {}
    for name, layer in scores.layers.items():
        p, h = perm[name], hl.get(name)
        out[name] = dataclasses.replace(layer, permutation_auroc=p.auroc, permutation_auroc_ci=p.auroc_ci,
                                        permutation_selectivity=layer.auroc - p.auroc,
                                        hl_control_auroc=None if h is None else h.auroc,
                                        hl_control_auroc_ci=None if h is None else h.auroc_ci,
                                        hl_selectivity=None if h is None else layer.auroc - h.auroc)
    return out


def _positions(setup: Setup, sweep: Sweep, side: Mapping[str, Mapping[str, AurocEstimate]]) -> PositionTable | None:
    """The layer x position AUROC table (None when the layers were read at one position)."""
    if not sweep.positions:
        return None
    tables = {p: side[f"position:{p}"] for p in sweep.positions}
    return PositionTable(positions=list(sweep.positions), n=len(setup.y), level=LEVEL,
                         auroc={n: {p: tables[p][n].auroc for p in tables} for n in sweep.oof},
                         auroc_ci={n: {p: tables[p][n].auroc_ci for p in tables} for n in sweep.oof})


def _operating_points(setup: Setup, sweep: Sweep, best_layer: str, controls: Mapping[str, Any], n_boot: int,
                      seed: int, errors: ErrorDetection | None = None) -> OperatingPoints | None:
    """The best layer's and every control's (but majority's) operating points (binary targets, else None).
    A raw score is read through its ranks (AUPRC and the rates depend on the order only); it is no
    probability, so its Brier and ECE are None (but P(True)'s, which is one). A fitted model's row is error
    detection's row of the second class (`errors`: the same probabilities, resamples and figures)."""
    if setup.n_classes != 2:
        return None
    scored = {best_layer: (sweep.oof[best_layer][0][:, 1], True)}
    for c, v in controls.items():
        if c != "majority":
            scored[f"control:{c}"] = (_as_unit_interval(c, v), c == P_TRUE) if c in setup.raw else (v[0][:, 1], True)
    done = errors.orientations[list(errors.orientations)[1]].rows if errors is not None else {}
    fitted = {best_layer, *(f"control:{c}" for c in controls if c not in setup.raw)}
    rows = {name: done[name] if name in done and name in fitted else
            _point_row(operating_points(p, setup.y == 1, n_boot=n_boot, seed=seed, clusters=setup.clusters,
                                        level=LEVEL), probability=is_probability)
            for name, (p, is_probability) in scored.items()}
    return OperatingPoints(level=LEVEL, prevalence=float(np.mean(setup.y == 1)), positive=str(setup.classes[1]),
                           rows=rows)


def _as_unit_interval(name: str, score: np.ndarray) -> np.ndarray:
    """A raw score in [0, 1] in the same order: P(True) as it is, any other through its ranks (ties kept)."""
    if name == P_TRUE and np.all((score >= 0) & (score <= 1)):
        return score
    from scipy.stats import rankdata
    return (rankdata(score) - 1) / max(1, len(score) - 1)


def _point_row(figures: Mapping[str, Any], probability: bool = True) -> OperatingPointRow:
    """operating_points' figures as the result's row (Brier and ECE None for a score that is no probability)."""
    def metric(key: str) -> Metric:
        f = figures[key]
        if not probability and key in ("brier", "ece"):
            return Metric(value=None, ci=(None, None), interval="basic" if key == "ece" else "percentile")
        value, (lo, hi) = f["value"], f["ci"]
        finite = [None if v is None or not np.isfinite(v) else float(v) for v in (value, lo, hi)]
        return Metric(value=finite[0], ci=(finite[1], finite[2]),
                      interval="basic" if f["interval"] == "basic" else "percentile")
    return OperatingPointRow(auprc=metric("auprc"), tpr_at_1pct_fpr=metric("tpr_at_1pct_fpr"),
                             fpr_at_95pct_tpr=metric("fpr_at_95pct_tpr"), brier=metric("brier"), ece=metric("ece"))


def _transfer(sweep: Sweep, field: str | None, run_names: tuple[str, str | None], seed: int,
              keep_overlap: bool = False) -> TransferResult:
    """The transfer matrix of the best layer: across values of `field` (at most transfer.MAX_GROUPS kept, the
    rest merged into one group, with a note), or across the two runs."""
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
                           seed=seed, clusters=clusters, by="run", layer=name, keep_overlap=keep_overlap,
                           max_groups=None, min_rows=0)      # the two runs: never merged


def _test_run(setup: Setup, scores: ProbeScores, where: Where) -> TestRunResult:
    assert setup.y_test is not None
    return TestRunResult(run_dir=where.test_dir, run_name=where.test_name, n=len(setup.y_test),
                         class_counts=setup.counts(setup.y_test), best_control=scores.best_control,
                         best_input_control=scores.best_input_control, best_output_control=scores.best_output_control,
                         best_layer=scores.best_layer, verdict=scores.verdict, controls=scores.controls,
                         layers=scores.layers, **split_fields(where.test_split, setup.test_rows))
