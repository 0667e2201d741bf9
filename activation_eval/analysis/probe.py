"""Linear probes with controls: from which layer on do activations predict a field of the results
(by default whether the answer was correct) better than the question's category, length, words and
the model's own confidence in its answer?

Per layer, a probe (probe_models: standardized logistic regression by default, or mass-mean) on one
vector per question gives out-of-fold class probabilities under cross-validation: StratifiedKFold on
the joint key target x category (folds keep the category proportions), StratifiedGroupKFold on the
question when a run has several samples per question (a question's samples never straddle a split),
or with groups="category" GroupKFold (whole categories held out). The vector is taken at the exact
answer by default (reduce="auto": the first token of the extracted answer when generated positions
were captured, else the last prompt token; `position` says which), following Orgad et al. 2024.

The controls of controls.py are fitted on the same folds: input side (majority, category, length,
bag_of_words) and output side (the answer's mean and summed log-probability, the first token's
entropy, P(True), and all of them together: the model's own confidence, recorded while it answered).
A control that reads the target itself (--target category: the category control) is dropped, with a
note. AUROC (primary; binary, or one-vs-rest macro for more than two classes) and accuracy of the
pooled out-of-fold predictions come with 95% percentile bootstrap intervals over questions (a
question's samples drawn together). With groups, AUROC compares only questions of the same held-out
fold: pooled over folds, each fold model's own offset would rank whole groups against each other.

Selectivity of a layer = its AUROC - the best control's AUROC, over both sides. Its interval is a
paired bootstrap (probe and controls on the same resampled questions; the best control is the
maximum over the controls within each resample, so choosing the best control is part of the
uncertainty), Bonferroni-adjusted over the L layers tested: the percentile interval
[alpha/(2L), 1 - alpha/(2L)], alpha = 0.05, so all L intervals hold together with probability >= 95%
(`bootstrap.adjusted_level`, e.g. 99.84% for 31 layers). The verdict names the first layer (in
record order) whose adjusted interval lies above 0, else NO_EVIDENCE; `best_control` says which
control it had to beat. With every layer pure noise it names a layer at most ~alpha/2 of the time.
The intervals count the uncertainty of the test questions, not of refitting the probes.

Beside the verdict (tables at 95%, 2000 resamples): the Hewitt & Liang (2019) control task (the
same probe on labels shuffled within category: hl_selectivity = AUROC - control-task AUROC), both
probe families, the AUROC under other CV seeds, operating points of the best layer and of every
control (AUPRC, TPR at 1% FPR, FPR at 95% TPR, Brier score, calibration error; operating_points.py),
the layer x position AUROC table (last prompt token, first / mean / last answer token) when
generated positions were captured, and the transfer matrix across groups (transfer.py).

Public names:
    probe_run(run_dir, layers=None, n_splits=5, seed=0, target="correct", groups=None, test_run=None,
              n_bootstrap=None, reduce="auto", progress=False, family="logistic", cv_seeds=3,
              transfer=None) -> dict
    probe_features(features, rows, ..., test_features=None, test_rows=None, position_features=None) -> dict
                            the same on in-memory {layer: X [n, hidden]} and results rows
    evaluate_scores(y, layer_proba, control_proba, n_boot, seed, strata=None, clusters=None) -> dict
                            the bootstrap part alone, on given class probabilities
    default_resamples(n_layers) -> int     bootstrap resamples used when n_bootstrap is None
    NO_EVIDENCE                            "no evidence beyond the controls"
    ALPHA                                  0.05: family-wise error rate of the verdict's intervals

Result (the --json output of `analyze_activations.py --probe`):
    run_dir, run_name, target, classes (as strings), class_counts, n (rows), reduce and position (the
    reduction used), position_note, family, auroc_kind ("binary" | "one-vs-rest macro"), layers_tested,
    cv {method, folds, seed, groups, auroc_pairs, seeds}, bootstrap {resamples, seed, level, unit,
        adjustment, adjusted_level, best_control}, clusters (None or {by, n_clusters, rows}),
    warnings [str] (n < 30, a class < 10, samples per question), notes [str], dropped_controls {name: why},
    layers {name: {auroc, auroc_ci, accuracy, accuracy_ci, selectivity, selectivity_ci (at
                   adjusted_level), selectivity_ci_unadjusted (95%), control_task_auroc,
                   control_task_auroc_ci, hl_selectivity}},
    controls {name: {auroc, auroc_ci, accuracy, accuracy_ci, side ("input" | "output")}},
    best_control (highest AUROC of all), best_input_control, best_output_control (None if no such
    control), best_layer (highest probe AUROC), verdict (a layer name or NO_EVIDENCE),
    families {family: {layer: {auroc, auroc_ci}}}, seeds {seeds, auroc {layer: [per seed]}, range},
    operating_points (binary targets): {level, prevalence, positive, rows {best layer, "control:<name>":
        {auprc, tpr_at_1pct_fpr, fpr_at_95pct_tpr, brier, ece: {value, ci}}}},
    positions: None or {positions, n, level, auroc {layer: {position: v}}, auroc_ci {layer: {position: ci}}},
    transfer: None or {by, layer, groups, n, level, auroc [[train x test]], auroc_ci, notes},
    test_run: None, or trained on run_dir and scored on test_run's questions:
        {run_dir, run_name, n, class_counts, layers, controls, best_control, best_layer, verdict}
    Intervals are [lo, hi] lists; every AUROC is a float in [0, 1].

Example:
    >>> res = probe_run("results/mc")         # 12 questions of a random model: no evidence
    >>> res["n"], res["class_counts"], res["layers_tested"]        # which ones it got right: the weights' luck
    (12, {'False': ..., 'True': ...}, 31)
    >>> res["cv"]["folds"] == min(5, *res["class_counts"].values())       # n_splits, at most the smaller class
    True
    >>> layer = res["layers"]["layer_12"]; lo, hi = layer["auroc_ci"]
    >>> 0 <= lo <= hi <= 1 and 0 <= layer["auroc"] <= 1
    True
    >>> res["verdict"]
    'no evidence beyond the controls'
"""
import contextlib
import math
import os
import sys

import numpy as np
from threadpoolctl import threadpool_limits

from ..schema.names import ANSWER_REDUCTIONS, HEATMAP_POSITIONS
from ..store.run_folder import is_run_folder
from .arrays import run_layers
from .bootstrap import cluster_index, macro_auroc, percentile_interval, resample_counts, weighted_accuracy
from .controls import control_inputs, control_side, make_control, own_controls
from .dataset import load_run_layers, load_run_positions, resolve_reduce
from .folds import control_task_labels, labels, labels_of_test_run, make_folds, small_sample_warnings
from .operating_points import operating_points
from .probe_models import FAMILIES, make_probe
from .transfer import transfer_matrix

NO_EVIDENCE = "no evidence beyond the controls"
ALPHA = 0.05
LEVEL = 0.95                       # the plain (per-figure) intervals
LOAD_BUDGET_BYTES = 1 << 30        # layers read together per pass over the record files
TABLE_RESAMPLES = 2000             # resamples of the side tables (families, seeds, positions, operating points)


def default_resamples(n_layers):
    """Resamples that leave ~10 draws beyond each Bonferroni-adjusted tail (at least 2000, at most 20000)."""
    return int(min(20000, max(2000, math.ceil(10 * 2 * n_layers / ALPHA))))


def probe_run(run_dir, layers=None, n_splits=5, seed=0, target="correct", groups=None,
              test_run=None, n_bootstrap=None, reduce="auto", progress=False, family="logistic",
              cv_seeds=3, transfer=None):
    """Probe every layer of a run folder (each record file read once per block of layers that
    fits LOAD_BUDGET_BYTES: once in all for probe-sized runs); see the module docstring.

    >>> res = probe_run("results/mc", layers=["layer_5", "layer_20"]); res["verdict"], res["best_layer"]
    ('no evidence beyond the controls', 'layer_...')
    """
    run_dir = _check_run(run_dir)
    test_dir = _check_run(test_run) if test_run is not None else None
    names = list(layers) if layers else run_layers(run_dir)
    if not names:
        raise ValueError("no layers to probe")
    position, position_note = resolve_reduce(run_dir, reduce)
    heatmap = position in ANSWER_REDUCTIONS and test_dir is None

    def load_block(part):
        """{layer: X}, rows, {position: {layer: X}} or None, {layer: X_test}, test rows."""
        if heatmap:
            by_position, rows, _ = load_run_positions(run_dir, part, positions=HEATMAP_POSITIONS)
            mats = {}                               # the main position's matrices are by_position[position]
        else:
            by_position = None
            mats, rows = load_run_layers(run_dir, part, reduce=position)
        tests, test_rows = load_run_layers(test_dir, part, reduce=position) if test_dir else ({}, None)
        return mats, rows, by_position, tests, test_rows

    def load():
        """The first layer alone (it sizes the blocks), then the others in blocks that fit LOAD_BUDGET_BYTES."""
        start, block = 0, 1
        while start < len(names):
            part = names[start:start + block]
            mats, rows, by_position, tests, test_rows = load_block(part)
            for name in part:
                extra = {p: by_position[p].pop(name) for p in HEATMAP_POSITIONS} if by_position else None
                X = extra[position] if extra else mats.pop(name)
                yield _Layer(name, X, rows, tests.pop(name, None), test_rows, extra)
            if start == 0:
                copies = (len(HEATMAP_POSITIONS) if heatmap else 1) + (1 if test_dir else 0)
                block = max(1, LOAD_BUDGET_BYTES // (max(1, X.nbytes) * copies))
            start += len(part)

    res = _probe(load(), len(names), target, n_splits, seed, groups, n_bootstrap, progress, family,
                 cv_seeds, transfer, run_names=(_run_name(run_dir), _run_name(test_dir) if test_dir else None))
    res.update(run_dir=run_dir, run_name=_run_name(run_dir), reduce=position, position=position,
               position_note=position_note)
    if res["test_run"] is not None:
        res["test_run"].update(run_dir=test_dir, run_name=_run_name(test_dir))
    return _ordered(res)


def probe_features(features, rows, target="correct", n_splits=5, seed=0, groups=None,
                   n_bootstrap=None, test_features=None, test_rows=None, progress=False,
                   family="logistic", cv_seeds=3, transfer=None, position_features=None):
    """probe_run on in-memory data: features {layer: float [n, hidden]} in layer order, `rows`
    the n results rows (target, category, question, token counts); optionally the same for a
    test run to score transfer on, and position_features {position: {layer: X}} for the
    layer x position table.

    >>> rng = np.random.default_rng(0)
    >>> rows = [{"id": f"q{i}", "correct": i % 2 == 0, "category": "ab"[i % 3 == 0], "question": f"question {i}",
    ...          "num_prompt_tokens": 10, "num_generated_tokens": 4} for i in range(60)]
    >>> y = np.array([row["correct"] for row in rows])
    >>> X0 = rng.normal(size=(60, 8))                            # noise
    >>> X1 = rng.normal(size=(60, 8)) + 1.5 * y[:, None]          # knows the answer is correct
    >>> res = probe_features({"layer_0": X0, "layer_1": X1}, rows, n_bootstrap=1000)
    >>> res["verdict"], res["layers"]["layer_1"]["auroc"] > 0.9, res["layers"]["layer_0"]["auroc"] < 0.75
    ('layer_1', True, True)
    """
    def pairs():
        for name, X in features.items():
            extra = {p: position_features[p][name] for p in position_features} if position_features else None
            yield _Layer(name, X, rows, None if test_features is None else test_features[name],
                         test_rows if test_features is not None else None, extra)
    res = _probe(pairs(), len(features), target, n_splits, seed, groups, n_bootstrap, progress, family,
                 cv_seeds, transfer, run_names=("run", "test run" if test_features is not None else None))
    res.update(run_dir=None, run_name=None, reduce=None, position=None, position_note=None)
    return _ordered(res)


class _Layer:
    """One layer's data: its name, matrix, rows, the test run's matrix and rows, and {position: matrix}."""
    __slots__ = ("name", "X", "rows", "X_test", "test_rows", "positions")

    def __init__(self, name, X, rows, X_test, test_rows, positions):
        self.name, self.X, self.rows, self.X_test, self.test_rows, self.positions = (
            name, X, rows, X_test, test_rows, positions)


# ----------------------------------------------------------------------------- the sweep

def _probe(layer_data, n_layers, target, n_splits, seed, groups, n_bootstrap, progress, family="logistic",
           cv_seeds=3, transfer=None, run_names=("run", None)):
    """Fit every layer (one pass over `layer_data`), then bootstrap all models together."""
    from tqdm.auto import tqdm

    n_boot = default_resamples(n_layers) if n_bootstrap is None else int(n_bootstrap)
    if n_boot < 1000:
        raise ValueError(f"n_bootstrap must be at least 1000 resamples, got {n_boot}")
    if family not in FAMILIES:
        raise ValueError(f"unknown probe family {family!r}; known: {', '.join(FAMILIES)}")
    if int(cv_seeds) < 1:
        raise ValueError(f"cv_seeds must be at least 1, got {cv_seeds}")
    setup, sweep = None, None
    bar = tqdm(layer_data, total=n_layers, desc="probe layers", unit="layer", file=sys.stderr,
               disable=not progress, leave=False)
    with _one_blas_thread():
        for layer in bar:
            if setup is None:
                setup = _Setup(layer.rows, target, n_splits, seed, groups, layer.test_rows, family, cv_seeds)
                sweep = _Sweep(setup)
            setup.check_rows(layer.name, layer.rows, layer.test_rows)
            sweep.add(layer)
        if setup is None:
            raise ValueError("no layers to probe")
        controls = {c: _oof_proba(lambda c=c: make_control(c), x, setup.y, setup.splits, setup.n_classes)
                    for c, x in setup.control_inputs.items()}
        test_controls = {}
        if setup.y_test is not None:
            test_controls = {c: _fit_score(make_control(c), setup.control_inputs[c], setup.y, setup.test_inputs[c])
                             for c in setup.control_inputs}
    res = _header(setup, n_boot, seed, len(sweep.oof), family)
    res.update(evaluate_scores(setup.y, sweep.oof, controls, n_boot, seed, setup.strata, setup.clusters))
    res.update(_best_by_side(res["controls"]))
    tables = sweep.tables(n_boot, seed, res["best_layer"], controls)
    for name, extra in tables.pop("layer_extras").items():
        res["layers"][name].update(extra)
    res.update(tables)
    res["transfer"] = None
    if transfer is not None or setup.y_test is not None:
        with _one_blas_thread():
            res["transfer"] = sweep.transfer(transfer, res["best_layer"], run_names, seed)
    res["test_run"] = None
    if setup.y_test is not None:
        res["test_run"] = {"n": len(setup.y_test), "class_counts": setup.counts(setup.y_test),
                           **evaluate_scores(setup.y_test, sweep.test_scores, test_controls, n_boot, seed,
                                             clusters=setup.test_clusters)}
    return res


def _header(setup, n_boot, seed, n_layers, family):
    """The result's description of what was done: target, classes, folds, bootstrap, notes."""
    return {"target": setup.target, "classes": [str(c) for c in setup.classes],
            "class_counts": setup.counts(setup.y), "n": len(setup.y),
            "auroc_kind": "binary" if setup.n_classes == 2 else "one-vs-rest macro",
            "layers_tested": n_layers, "family": family,
            "cv": {"method": setup.method, "folds": len(setup.splits), "seed": seed, "groups": setup.groups,
                   "auroc_pairs": "within each fold" if setup.groups else "all out-of-fold predictions pooled",
                   "seeds": setup.seeds},
            "bootstrap": {"resamples": n_boot, "seed": seed, "level": LEVEL,
                          "unit": "question (its samples together)" if setup.clusters is not None else "question",
                          "adjustment": f"Bonferroni over {n_layers} layers: selectivity_ci is the "
                                        f"percentile interval [alpha/(2L), 1 - alpha/(2L)], alpha={ALPHA}",
                          "adjusted_level": 1 - ALPHA / n_layers,
                          "best_control": "maximum over the controls within each resample (paired)"},
            "clusters": (None if setup.clusters is None else
                         {"by": "id", "n_clusters": setup.n_clusters, "rows": len(setup.y)}),
            "dropped_controls": setup.dropped, "warnings": list(setup.warnings), "notes": list(setup.notes)}


def _best_by_side(controls):
    """The best input-side and output-side controls by AUROC (None when a side has none)."""
    out = {}
    for side in ("input", "output"):
        names = [n for n, c in controls.items() if c["side"] == side]
        out[f"best_{side}_control"] = max(names, key=lambda n: controls[n]["auroc"]) if names else None
    return out


class _Setup:
    """Labels, folds, clusters and control inputs of a probe, fixed by the first layer's rows."""

    def __init__(self, rows, target, n_splits, seed, groups, test_rows, family, cv_seeds):
        self.rows, self.target, self.groups, self.family, self.notes = rows, target, groups, family, []
        self.classes, self.y = labels(rows, target, "the run")
        self.n_classes = len(self.classes)
        found = cluster_index(rows)
        self.clusters, self.n_clusters = found if found else (None, len(rows))
        self.splits, self.method = make_folds(self.y, rows, n_splits, seed, groups, self.notes, self.clusters)
        self.seeds = [seed + i for i in range(int(cv_seeds))]
        self.seed_splits = [make_folds(self.y, rows, n_splits, s, groups, [], self.clusters)[0] for s in self.seeds[1:]]
        self.control_task_y = control_task_labels(self.y, rows, seed)
        self.strata = None
        if groups:              # see the module docstring: AUROC within each held-out fold
            self.strata = np.zeros(len(self.y), dtype=int)
            for fold, (_, test) in enumerate(self.splits):
                self.strata[test] = fold
        own = own_controls(target)
        self.control_inputs, notes = control_inputs(rows, drop=own)
        self.dropped = {c: f"it reads the target {target!r} itself" for c in own}
        self.notes += notes + [f"control {c!r} dropped: {why}" for c, why in self.dropped.items()]
        self.warnings = small_sample_warnings(self.y, self.classes, target,
                                              self.n_clusters if self.clusters is not None else None)
        if self.clusters is not None:
            self.warnings.append(f"{len(self.y)} rows of {self.n_clusters} questions (several samples each): "
                                 f"folds and resampling keep each question's samples together")
        if family == "mass_mean" and self.n_classes != 2:
            raise ValueError(f"the mass-mean probe needs a binary target; {target!r} has {self.n_classes} classes")
        self.y_test = self.test_rows = self.test_clusters = None
        if test_rows is not None:
            self.test_rows = test_rows
            self.y_test = labels_of_test_run(test_rows, target, self.classes)
            found = cluster_index(test_rows)
            self.test_clusters = found[0] if found else None
            test_inputs, test_notes = control_inputs(test_rows, drop=own)
            for c in set(self.control_inputs) - set(test_inputs):   # both runs must feed a control
                del self.control_inputs[c]
            self.notes += [f"test run: {n}" for n in test_notes]
            self.test_inputs = test_inputs

    def check_rows(self, layer, rows, test_rows):
        """Every layer must cover the same questions as the first one."""
        for got, want, which in ((rows, self.rows, "run"), (test_rows, self.test_rows, "test run")):
            if got is not None and [r.get("id") for r in got] != [r.get("id") for r in want]:
                raise ValueError(f"layer {layer!r} of the {which} covers other questions than "
                                 f"the first layer; every record must hold every probed layer")

    def counts(self, y):
        return {str(c): int((y == i).sum()) for i, c in enumerate(self.classes)}


class _Sweep:
    """Out-of-fold class probabilities of every layer: the main family on the main folds, the other
    family, the control task, the other CV seeds and the other positions; the best layer's matrices
    are kept for the transfer matrix."""

    def __init__(self, setup):
        self.setup = setup
        self.oof, self.test_scores, self.control_task, self.seed_auroc = {}, {}, {}, {}
        self.families = {f: {} for f in FAMILIES if f == setup.family or setup.n_classes == 2}
        self.positions = {}                  # position -> {layer: proba}
        self.best = (-1.0, None, None, None)      # (AUROC, layer, X, X_test) of the best layer so far

    def add(self, layer):
        s = self.setup
        X = np.asarray(layer.X, dtype=np.float64)
        fit = lambda: make_probe(s.family)                                           # noqa: E731
        self.oof[layer.name] = _oof_proba(fit, X, s.y, s.splits, s.n_classes)
        self.families[s.family][layer.name] = self.oof[layer.name][0]
        for other in self.families:
            if other != s.family:
                self.families[other][layer.name] = _oof_proba(lambda o=other: make_probe(o), X, s.y, s.splits,
                                                              s.n_classes)[0]
        self.control_task[layer.name] = _oof_proba(fit, X, s.control_task_y, s.splits, s.n_classes)[0]
        auroc = _auroc(self.oof[layer.name][0], s.y, s.strata)
        self.seed_auroc[layer.name] = [auroc] + [_auroc(_oof_proba(fit, X, s.y, splits, s.n_classes)[0], s.y)
                                                 for splits in s.seed_splits]
        for position, Xp in (layer.positions or {}).items():
            proba = (self.oof[layer.name][0] if Xp is layer.X else
                     _oof_proba(fit, np.asarray(Xp, dtype=np.float64), s.y, s.splits, s.n_classes)[0])
            self.positions.setdefault(position, {})[layer.name] = proba
        X_test = None
        if layer.X_test is not None:
            X_test = np.asarray(layer.X_test, np.float64)
            self.test_scores[layer.name] = _fit_score(fit(), X, s.y, X_test)
        if auroc > self.best[0]:
            self.best = (auroc, layer.name, X, X_test)

    def tables(self, n_boot, seed, best_layer, controls):
        """The side tables: control task, families, seeds, positions, operating points."""
        s = self.setup
        B = min(n_boot, TABLE_RESAMPLES)
        task = _auroc_table(s.control_task_y, self.control_task, B, seed, s.strata, s.clusters)
        main = _auroc_table(s.y, {n: p for n, (p, _) in self.oof.items()}, B, seed, s.strata, s.clusters)
        layers = {}
        for name in self.oof:
            t = task[name]
            layers[name] = {"control_task_auroc": t["auroc"], "control_task_auroc_ci": t["auroc_ci"],
                            "hl_selectivity": main[name]["auroc"] - t["auroc"]}
        out = {"layer_extras": layers,
               "families": {f: _auroc_table(s.y, probas, B, seed, s.strata, s.clusters)
                            for f, probas in self.families.items()},
               "seeds": {"seeds": s.seeds, "auroc": self.seed_auroc,
                         "range": {n: [min(a), max(a)] for n, a in self.seed_auroc.items()}},
               "positions": None, "operating_points": None}
        if self.positions:
            tables = {p: _auroc_table(s.y, probas, B, seed, s.strata, s.clusters) for p, probas in self.positions.items()}
            out["positions"] = {"positions": list(self.positions), "n": len(s.y), "level": LEVEL,
                                "auroc": {n: {p: tables[p][n]["auroc"] for p in tables} for n in self.oof},
                                "auroc_ci": {n: {p: tables[p][n]["auroc_ci"] for p in tables} for n in self.oof}}
        if s.n_classes == 2:
            scored = {best_layer: self.oof[best_layer][0],
                      **{f"control:{c}": p for c, (p, _) in controls.items() if c != "majority"}}
            out["operating_points"] = {
                "level": LEVEL, "prevalence": float(np.mean(s.y == 1)), "positive": str(s.classes[1]),
                "rows": {name: _points(operating_points(p[:, 1], s.y == 1, n_boot=B, seed=seed,
                                                        clusters=s.clusters, level=LEVEL))
                         for name, p in scored.items()}}
        return out

    def transfer(self, field, best_layer, run_names, seed):
        """The transfer matrix of the best layer: across values of `field`, or across the two runs."""
        s = self.setup
        _, name, X, X_test = self.best
        fit = lambda: make_probe(s.family)                                           # noqa: E731
        if field is not None:
            missing = sum(r.get(field) is None for r in s.rows)
            if missing:
                raise ValueError(f"--transfer {field}: {missing} of {len(s.rows)} results rows have no {field!r}")
            group_of = [str(r.get(field)) for r in s.rows]
            res = transfer_matrix(X, s.y, group_of, s.rows, fit, seed=seed, clusters=s.clusters)
            by = field
        else:
            rows = s.rows + s.test_rows
            group_of = [run_names[0]] * len(s.rows) + [run_names[1]] * len(s.test_rows)
            keys = [f"{g}\x1f{r.get('id')}" for g, r in zip(group_of, rows)]
            clusters = np.unique(keys, return_inverse=True)[1]
            res = transfer_matrix(np.vstack([X, X_test]), np.concatenate([s.y, s.y_test]), group_of, rows, fit,
                                  seed=seed, clusters=clusters)
            by = "run"
        return {"by": by, "layer": name, **res}


def _points(result):
    """operating_points' result reduced to the figures the report shows."""
    return {k: result[k] for k in ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece") if k in result}


def _auroc(proba, y, strata=None):
    return float(macro_auroc(proba, y, np.ones((1, len(y))), strata)[0])


def _auroc_table(y, probas, n_boot, seed, strata=None, clusters=None):
    """{name: {"auroc", "auroc_ci"}} of class probabilities on the same resampled questions (95%)."""
    names = list(probas)
    boot = [np.stack([macro_auroc(probas[n], y, W, strata) for n in names], axis=1)
            for W in resample_counts(len(y), n_boot, seed, clusters=clusters)]
    boot = np.concatenate(boot)
    return {n: {"auroc": _auroc(probas[n], y, strata), "auroc_ci": percentile_interval(boot[:, i], LEVEL)}
            for i, n in enumerate(names)}


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS limited to one thread: probe-sized fits (hundreds of questions) run several times
    slower with threaded BLAS, most of all on a busy machine."""
    import sklearn.linear_model  # noqa: F401  (loads scipy's BLAS, so that the limit reaches it)
    with threadpool_limits(1):
        yield


def _oof_proba(make_model, X, y, splits, n_classes):
    """Out-of-fold (class probabilities (n, n_classes), predicted classes (n,)): each question
    scored by the model of the fold that held it out."""
    proba, pred = np.zeros((len(y), n_classes)), np.zeros(len(y), dtype=int)
    for train, test in splits:
        model = make_model().fit(X[train], y[train])
        proba[test], pred[test] = model.predict_proba(X[test]), model.predict(X[test])
    return proba, pred


def _fit_score(model, X, y, X_test):
    """(class probabilities, predicted classes) of X_test from `model` fitted on all of X, y."""
    model.fit(X, y)
    return model.predict_proba(X_test), model.predict(X_test)


# ----------------------------------------------------------------------------- bootstrap

def evaluate_scores(y, layer_proba, control_proba, n_boot, seed, strata=None, clusters=None):
    """AUROC / accuracy with intervals for every model, selectivity per layer, the verdict, from
    class probabilities: y int class indices (n,), layer_proba {layer: (n, k)} in layer order,
    control_proba {control: (n, k)}; a value may also be (probabilities, predicted classes),
    else the predicted class is the most probable one; strata (n,): compare only pairs within a stratum (fold);
    clusters (n,): question index of each row, resampled whole (runs with several samples per question).
    -> {layers, controls, best_control, best_layer, verdict}.

    >>> y = np.array([0, 1] * 20)                                            # 40 questions
    >>> P0 = np.full((40, 2), 0.5)                                         # a layer that knows nothing
    >>> P1 = np.stack([1 - (y * 0.6 + 0.2), y * 0.6 + 0.2], axis=1)        # one that separates the classes
    >>> evaluate_scores(y, {"layer_0": P0, "layer_1": P1}, {"majority": P0}, 2000, seed=0)["verdict"]
    'layer_1'
    """
    names = list(layer_proba) + [f"control:{c}" for c in control_proba]
    scored = [v if isinstance(v, tuple) else (v, np.argmax(v, axis=1))
              for v in list(layer_proba.values()) + list(control_proba.values())]
    probas = [np.asarray(p, dtype=np.float64) for p, _ in scored]
    hits = [np.asarray(pred) == y for _, pred in scored]
    ones = np.ones((1, len(y)))
    auroc = np.array([macro_auroc(p, y, ones, strata)[0] for p in probas])
    acc = np.array([weighted_accuracy(h, ones)[0] for h in hits])
    boot_auroc, boot_acc = [], []
    for W in resample_counts(len(y), n_boot, seed, clusters=clusters):    # the same resamples for every model
        boot_auroc.append(np.stack([macro_auroc(p, y, W, strata) for p in probas], axis=1))
        boot_acc.append(np.stack([weighted_accuracy(h, W) for h in hits], axis=1))
    boot_auroc, boot_acc = np.concatenate(boot_auroc), np.concatenate(boot_acc)   # (B, models)

    n_layers = len(layer_proba)
    ctrl = slice(n_layers, len(names))
    best_ctrl_boot = np.max(boot_auroc[:, ctrl], axis=1)      # nan if any control is nan there
    best_ctrl = int(np.argmax(auroc[ctrl]))
    adjusted = 1 - ALPHA / n_layers

    def summary(i):
        return {"auroc": float(auroc[i]), "auroc_ci": percentile_interval(boot_auroc[:, i], LEVEL),
                "accuracy": float(acc[i]), "accuracy_ci": percentile_interval(boot_acc[:, i], LEVEL)}

    layers = {}
    for i, name in enumerate(layer_proba):
        sel = boot_auroc[:, i] - best_ctrl_boot
        layers[name] = {**summary(i), "selectivity": float(auroc[i] - auroc[ctrl][best_ctrl]),
                        "selectivity_ci": percentile_interval(sel, adjusted),
                        "selectivity_ci_unadjusted": percentile_interval(sel, LEVEL)}
    controls = {name[len("control:"):]: {**summary(n_layers + j), "side": control_side(name[len("control:"):])}
                for j, name in enumerate(names[n_layers:])}
    verdict = next((n for n, v in layers.items() if v["selectivity_ci"][0] > 0), NO_EVIDENCE)
    return {"layers": layers, "controls": controls, "best_control": list(controls)[best_ctrl],
            "best_layer": max(layers, key=lambda n: layers[n]["auroc"]), "verdict": verdict}


# ----------------------------------------------------------------------------- helpers

def _check_run(path):
    path = os.fspath(path)
    if not os.path.isdir(path) or not is_run_folder(path):
        raise FileNotFoundError(f"not a run folder (no results.jsonl): {path}")
    return path


def _run_name(run_dir):
    return os.path.basename(os.path.normpath(os.path.abspath(run_dir)))


_KEY_ORDER = ("run_dir", "run_name", "target", "classes", "class_counts", "n", "reduce", "position",
              "position_note", "family", "auroc_kind", "layers_tested", "cv", "bootstrap", "clusters", "warnings",
              "notes", "dropped_controls", "best_control", "best_input_control", "best_output_control", "best_layer",
              "verdict", "controls", "layers", "families", "seeds", "operating_points", "positions", "transfer",
              "test_run")


def _ordered(res):
    """The result with its keys in the documented order (summary first, per-layer tables last)."""
    return {k: res[k] for k in _KEY_ORDER if k in res}
