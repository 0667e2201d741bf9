"""Linear probes with controls: from which layer on do activations predict a field of the results
(by default whether the answer was correct) better than the question's category, length or words?

Per layer, a standardized logistic regression on one vector per question (load_run_layer,
reduce="last_prompt" by default) gives out-of-fold class probabilities under cross-validation:
StratifiedKFold on the joint key target x category (folds keep the category proportions), or with
groups="category" GroupKFold (whole categories held out). The controls of controls.py (majority,
category, length, bag_of_words) are fitted on the same folds. AUROC (primary; binary, or
one-vs-rest macro for a target with more than two classes) and accuracy of the pooled
out-of-fold predictions come with 95% percentile bootstrap intervals over questions. With groups,
AUROC compares only questions of the same held-out fold: pooled over folds, each fold model's
own offset would rank whole groups against each other (a constant control would score far from
0.5), and within a fold it measures what the held-out groups themselves show.

Selectivity of a layer = its AUROC - the best control's AUROC. Its interval is a paired bootstrap
(probe and controls on the same resampled questions; the best control is the maximum over the
controls within each resample, so choosing the best control is part of the uncertainty), and
Bonferroni-adjusted over the L layers tested: the percentile interval [alpha/(2L), 1 - alpha/(2L)],
alpha = 0.05, so all L intervals hold together with probability >= 95%. The verdict names the
first layer (in record order) whose adjusted interval lies above 0, else NO_EVIDENCE. With every
layer pure noise it names a layer at most ~alpha/2 of the time. The intervals count the
uncertainty of the test questions, not of refitting the probes (the usual out-of-fold bootstrap).

Public names:
    probe_run(run_dir, layers=None, n_splits=5, seed=0, target="correct", groups=None,
              test_run=None, n_bootstrap=None, reduce="last_prompt", progress=False) -> dict
    probe_features(features, rows, ..., test_features=None, test_rows=None) -> dict
                            the same on in-memory {layer: X [n, hidden]} and results rows
    evaluate_scores(y, layer_proba, control_proba, n_boot, seed) -> dict
                            the bootstrap part alone, on given class probabilities
    default_resamples(n_layers) -> int     bootstrap resamples used when n_bootstrap is None
    NO_EVIDENCE                            "no evidence beyond the controls"
    ALPHA                                  0.05: family-wise error rate of the verdict's intervals

Result (the --json output of `analyze_activations.py --probe`):
    run_dir, run_name, target, classes (as strings), class_counts, n (questions), reduce,
    auroc_kind ("binary" | "one-vs-rest macro"), layers_tested,
    cv {method, folds, seed, groups, auroc_pairs}, bootstrap {resamples, seed, level, adjustment,
        adjusted_level, best_control}, notes [str],
    layers {name: {auroc, auroc_ci, accuracy, accuracy_ci, selectivity, selectivity_ci
                   (Bonferroni-adjusted), selectivity_ci_unadjusted (95%)}},
    controls {name: {auroc, auroc_ci, accuracy, accuracy_ci}},
    best_control (highest AUROC on all questions), best_layer (highest probe AUROC),
    verdict (a layer name or NO_EVIDENCE),
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
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from ..store.run_folder import is_run_folder
from .arrays import run_layers
from .bootstrap import macro_auroc, percentile_interval, resample_counts, weighted_accuracy
from .controls import control_inputs, make_control
from .dataset import load_run_layer, load_run_layers

NO_EVIDENCE = "no evidence beyond the controls"
ALPHA = 0.05
LEVEL = 0.95                       # the plain (per-figure) intervals
LOAD_BUDGET_BYTES = 1 << 30        # layers read together per pass over the record files


def default_resamples(n_layers):
    """Resamples that leave ~10 draws beyond each Bonferroni-adjusted tail (at least 2000, at most 20000)."""
    return int(min(20000, max(2000, math.ceil(10 * 2 * n_layers / ALPHA))))


def probe_run(run_dir, layers=None, n_splits=5, seed=0, target="correct", groups=None,
              test_run=None, n_bootstrap=None, reduce="last_prompt", progress=False):
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

    def load():
        """The first layer alone (it sizes the blocks), then the others in blocks that fit
        LOAD_BUDGET_BYTES, each record file read once per block."""
        X, rows = load_run_layer(run_dir, names[0], reduce=reduce)
        X_test, test_rows = load_run_layer(test_dir, names[0], reduce=reduce) if test_dir else (None, None)
        yield names[0], X, rows, X_test, test_rows
        block = max(1, LOAD_BUDGET_BYTES // (max(1, X.nbytes) * (2 if test_dir else 1)))
        for start in range(1, len(names), block):
            part = names[start:start + block]
            mats, rows = load_run_layers(run_dir, part, reduce=reduce)
            tests, test_rows = load_run_layers(test_dir, part, reduce=reduce) if test_dir else ({}, None)
            for name in part:
                yield name, mats.pop(name), rows, tests.pop(name, None), test_rows

    res = _probe(load(), len(names), target, n_splits, seed, groups, n_bootstrap, progress)
    res.update(run_dir=run_dir, run_name=_run_name(run_dir), reduce=reduce)
    if res["test_run"] is not None:
        res["test_run"].update(run_dir=test_dir, run_name=_run_name(test_dir))
    return _ordered(res)


def probe_features(features, rows, target="correct", n_splits=5, seed=0, groups=None,
                   n_bootstrap=None, test_features=None, test_rows=None, progress=False):
    """probe_run on in-memory data: features {layer: float [n, hidden]} in layer order, `rows`
    the n results rows (target, category, question, token counts); optionally the same for a
    test run to score transfer on.

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
            yield (name, X, rows, None if test_features is None else test_features[name],
                   test_rows if test_features is not None else None)
    res = _probe(pairs(), len(features), target, n_splits, seed, groups, n_bootstrap, progress)
    res.update(run_dir=None, run_name=None, reduce=None)
    return _ordered(res)


# ----------------------------------------------------------------------------- the sweep

def _probe(layer_data, n_layers, target, n_splits, seed, groups, n_bootstrap, progress):
    """Fit every layer (one pass over `layer_data`), then bootstrap all models together."""
    from tqdm.auto import tqdm

    n_boot = default_resamples(n_layers) if n_bootstrap is None else int(n_bootstrap)
    if n_boot < 1000:
        raise ValueError(f"n_bootstrap must be at least 1000 resamples, got {n_boot}")
    setup = None
    oof, transfer, test_controls = {}, {}, {}
    bar = tqdm(layer_data, total=n_layers, desc="probe layers", unit="layer", file=sys.stderr,
               disable=not progress, leave=False)
    with _one_blas_thread():
        for name, X, rows, X_test, test_rows in bar:
            if setup is None:
                setup = _Setup(rows, target, n_splits, seed, groups, test_rows)
            setup.check_rows(name, rows, test_rows)
            X = np.asarray(X, dtype=np.float64)
            oof[name] = _oof_proba(_probe_model, X, setup.y, setup.splits, setup.n_classes)
            if X_test is not None:
                transfer[name] = _fit_score(_probe_model(), X, setup.y, np.asarray(X_test, np.float64))
        if setup is None:
            raise ValueError("no layers to probe")
        inputs = setup.control_inputs
        controls = {c: _oof_proba(lambda c=c: make_control(c), inputs[c], setup.y, setup.splits,
                                  setup.n_classes) for c in inputs}
        if setup.y_test is not None:
            test_controls = {c: _fit_score(make_control(c), inputs[c], setup.y, setup.test_inputs[c])
                             for c in inputs}
    res = {"target": target, "classes": [str(c) for c in setup.classes],
           "class_counts": setup.counts(setup.y), "n": len(setup.y),
           "auroc_kind": "binary" if setup.n_classes == 2 else "one-vs-rest macro",
           "layers_tested": len(oof),
           "cv": {"method": setup.method, "folds": len(setup.splits), "seed": seed, "groups": groups,
                  "auroc_pairs": "within each fold" if groups else "all out-of-fold predictions pooled"},
           "bootstrap": {"resamples": n_boot, "seed": seed, "level": LEVEL,
                         "adjustment": f"Bonferroni over {len(oof)} layers: selectivity_ci is the "
                                       f"percentile interval [alpha/(2L), 1 - alpha/(2L)], alpha={ALPHA}",
                         "adjusted_level": 1 - ALPHA / len(oof),
                         "best_control": "maximum over the controls within each resample (paired)"},
           "notes": list(setup.notes)}
    res.update(evaluate_scores(setup.y, oof, controls, n_boot, seed, setup.strata))
    res["test_run"] = None
    if setup.y_test is not None:
        res["test_run"] = {"n": len(setup.y_test), "class_counts": setup.counts(setup.y_test),
                           **evaluate_scores(setup.y_test, transfer, test_controls, n_boot, seed)}
    return res


class _Setup:
    """Labels, folds and control inputs of a probe, fixed by the first layer's rows."""

    def __init__(self, rows, target, n_splits, seed, groups, test_rows):
        self.rows, self.notes = rows, []
        self.classes, self.y = _labels(rows, target, "the run")
        self.n_classes = len(self.classes)
        self.splits, self.method = _folds(self.y, rows, n_splits, seed, groups, self.notes)
        self.strata = None
        if groups:              # see the module docstring: AUROC within each held-out fold
            self.strata = np.zeros(len(self.y), dtype=int)
            for fold, (_, test) in enumerate(self.splits):
                self.strata[test] = fold
        self.control_inputs, notes = control_inputs(rows)
        self.notes += notes
        self.y_test = self.test_rows = None
        if test_rows is not None:
            self.test_rows = test_rows
            self.y_test = _test_labels(test_rows, target, self.classes)
            test_inputs, test_notes = control_inputs(test_rows)
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


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS limited to one thread: probe-sized fits (hundreds of questions) run several times
    slower with threaded BLAS, most of all on a busy machine."""
    import sklearn.linear_model  # noqa: F401  (loads scipy's BLAS, so that the limit reaches it)
    with threadpool_limits(1):
        yield


def _probe_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


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


# ----------------------------------------------------------------------------- labels and folds

def _labels(rows, target, where):
    """(sorted classes, int class index per row) of a boolean or categorical field."""
    missing = [r.get("id") for r in rows if r.get(target) is None]
    if missing:
        fields = sorted({k for r in rows for k in r})
        raise ValueError(f"{where}: {len(missing)} of {len(rows)} results rows have no value for "
                         f"target {target!r} (e.g. id {missing[0]!r}); fields: {', '.join(fields)}")
    values = [r[target] for r in rows]
    bad = next((v for v in values if isinstance(v, (float, list, dict))), None)
    if bad is not None:
        raise ValueError(f"target {target!r} must be a boolean or categorical field "
                         f"(true/false, strings or integers), but has the value {bad!r}")
    classes = sorted(set(values), key=lambda v: (type(v).__name__, v))
    if len(classes) < 2:
        raise ValueError(f"only one class in {where}: all {len(values)} rows have "
                         f"{target}={classes[0]!r}; a probe needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in values])
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        rare = [str(c) for c, k in zip(classes, counts) if k < 2]
        raise ValueError(f"too few examples of the minority class for cross-validation: "
                         f"{target}={', '.join(rare[:5])} occurs once ({len(rare)} such value(s) "
                         f"of {len(classes)}); every class needs at least 2 questions")
    return classes, y


def _test_labels(rows, target, classes):
    test_classes, y = _labels(rows, target, "the test run")
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise ValueError(f"the test run has {target} value(s) the training run lacks: "
                         f"{', '.join(map(str, unknown[:5]))}; a probe cannot score unseen classes")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[test_classes[i]] for i in y])


def _folds(y, rows, n_splits, seed, groups, notes):
    """(list of (train, test) index arrays, description); every training fold holds every class."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if n_splits < 2:
        raise ValueError(f"folds must be at least 2, got {n_splits}")
    n_classes = int(y.max()) + 1
    if groups:
        labels = [str(r.get(groups) or "") for r in rows]
        n_groups = len(set(labels))
        if n_groups < 2:
            raise ValueError(f"probe groups {groups!r}: every question has the same value "
                             f"{labels[0]!r}; holding out groups needs at least 2")
        k = min(n_splits, n_groups)
        splits = list(GroupKFold(k, shuffle=True, random_state=seed).split(y, y, labels))
        method = f"GroupKFold: whole {groups!r} groups held out ({n_groups} groups)"
    else:
        k = min(n_splits, int(np.bincount(y).min()))
        cats = [str(r.get("category") or "") for r in rows]
        key = [f"{label}|{cat}" for label, cat in zip(y, cats)]
        with warnings.catch_warnings():       # small target x category cells are expected
            warnings.filterwarnings("ignore", message="The least populated class")
            splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, key))
        method = "StratifiedKFold on target x category"
        if not _all_classes_in_training(splits, y, n_classes):
            splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))
            method = "StratifiedKFold on the target"
            notes.append("folds keep the target's proportions only: target x category cells too small")
    if k < n_splits:
        notes.append(f"{k} folds instead of {n_splits}: "
                     + ("only that many groups" if groups else "the smallest class has that many questions"))
    if not _all_classes_in_training(splits, y, n_classes):
        raise ValueError(f"a training fold lacks a class of the target when whole {groups!r} groups "
                         f"are held out; use fewer --folds or no --probe_groups")
    return splits, method


def _all_classes_in_training(splits, y, n_classes):
    return all(len(np.unique(y[train])) == n_classes for train, _ in splits)


# ----------------------------------------------------------------------------- bootstrap

def evaluate_scores(y, layer_proba, control_proba, n_boot, seed, strata=None):
    """AUROC / accuracy with intervals for every model, selectivity per layer, the verdict, from
    class probabilities: y int class indices (n,), layer_proba {layer: (n, k)} in layer order,
    control_proba {control: (n, k)}; a value may also be (probabilities, predicted classes),
    else the predicted class is the most probable one; strata (n,): compare only pairs within a stratum (fold).
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
    for W in resample_counts(len(y), n_boot, seed):      # the same resamples for every model
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
    controls = {name[len("control:"):]: summary(n_layers + j) for j, name in enumerate(names[n_layers:])}
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


_KEY_ORDER = ("run_dir", "run_name", "target", "classes", "class_counts", "n", "reduce", "auroc_kind",
              "layers_tested", "cv", "bootstrap", "notes", "best_control", "best_layer", "verdict",
              "controls", "layers", "test_run")


def _ordered(res):
    """The result with its keys in the documented order (summary first, per-layer tables last)."""
    return {k: res[k] for k in _KEY_ORDER if k in res}
