"""Tests of the probe (analysis/probe.py, controls.py, bootstrap.py) and its CLI flags.

Synthetic runs whose answer is known: correctness explained by category alone (the verdict must
say no evidence beyond the controls), a direction planted from one layer on that predicts
correctness within each category (the verdict must name that layer), pure noise over many seeds
(the verdict may claim a layer at most 5% of the time). Every AUROC is checked against
sklearn.metrics.roc_auc_score on out-of-fold scores computed here with sklearn's own
cross_val_predict; bootstrap statistics against explicit resampling.
"""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import analyze_activations as aa
from activation_eval.analysis.jsonio import from_json
from activation_eval.analysis.probe import NO_EVIDENCE, bootstrap, evaluate_scores, probe_features, probe_run
from activation_eval.analysis.probe.text import probe_text
from activation_eval.schema.probe import ProbeResult
from activation_eval.store.atomic import write_text_atomic
from activation_eval.store.records import save_activations

CATEGORY_RATES = {"geography": 0.9, "arithmetic": 0.15, "science": 0.6, "trivia": 0.35}
WORDS = {"geography": "capital city country", "arithmetic": "sum of numbers", "science": "atoms and cells",
         "trivia": "famous person year"}


def synthetic(n=160, n_layers=6, hidden=24, seed=0, plant_from=None, strength=2.0, category_strength=3.0,
              directions_seed=1234, extra=None):
    """(features {layer_i: [n, hidden]}, rows). Correctness is drawn from CATEGORY_RATES by category;
    every layer encodes the category (as real models do); from layer `plant_from` on, a fixed
    direction carries +-strength by correctness (within-category information). `extra`: a second
    field {name: (values, from_layer)} planted the same way on another direction, per class."""
    rng = np.random.default_rng(seed)
    dirs = np.random.default_rng(directions_seed)        # the same directions in every run
    cats = list(CATEGORY_RATES)
    cat_vec = {c: dirs.normal(size=hidden) for c in cats}
    plant = dirs.normal(size=hidden)
    plant /= np.linalg.norm(plant)
    cat = np.array([cats[i % len(cats)] for i in range(n)])
    correct = np.array([rng.random() < CATEGORY_RATES[c] for c in cat])
    rows = [{"id": f"q{i:04d}", "category": str(cat[i]), "correct": bool(correct[i]),
             "question": f"Question {i} about {WORDS[cat[i]]}?",
             "num_prompt_tokens": int(8 + rng.integers(0, 6)), "num_generated_tokens": int(3 + rng.integers(0, 9))}
            for i in range(n)]
    features = {}
    for layer in range(n_layers):
        X = rng.normal(size=(n, hidden)) + category_strength * np.array([cat_vec[c] for c in cat]) / np.sqrt(hidden)
        if plant_from is not None and layer >= plant_from:
            X += strength * np.outer(2 * correct - 1, plant)
        for values, from_layer, vecs in (extra or {}).values():
            if layer >= from_layer:
                X += np.array([vecs[v] for v in values])
        features[f"layer_{layer}"] = X.astype(np.float32)
    for field, (values, _, _) in (extra or {}).items():
        for r, v in zip(rows, values):
            r[field] = v
    return features, rows


def write_run(root, features, rows):
    """A run folder: one record per row holding each layer at the last prompt token, plus results.jsonl."""
    os.makedirs(root, exist_ok=True)
    names = list(features)
    for i, row in enumerate(rows):
        p = row["num_prompt_tokens"]
        rec = {"prompt": row["question"], "response": "r", "model": "synthetic", "timestamp": "t",
               "input_ids": torch.arange(p), "output_ids": torch.arange(row["num_generated_tokens"]),
               "activations": {n: torch.from_numpy(features[n][i:i + 1].copy()) for n in names},
               "layer_names": names, "positions": "last_prompt", "positions_kept": [p - 1],
               "num_prompt_tokens": p, "num_generated_tokens": row["num_generated_tokens"], "dtype": "float32"}
        rel = os.path.join("activations", f"{row['id']}{'.safetensors' if i % 2 else '.pkl'}")
        save_activations(rec, os.path.join(root, rel))
        row["activation_file"] = rel
    write_text_atomic(os.path.join(root, "results.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    return str(root)


def run_cli(capsys, *argv):
    code = aa.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sklearn_oof_auroc(X, rows, y, folds=5, seed=0, multi=False):
    """The reference: sklearn's cross_val_predict on the documented folds, then roc_auc_score within each fold,
    pair-weighted over the folds (issue 27: pairs within folds; pooled, the folds' offsets would rank folds
    against each other); one-vs-rest: that per class, then the mean over classes."""
    key = [f"{label}|{r['category']}" for label, r in zip(y, rows)]
    k = min(folds, int(np.bincount(y).min()))
    with warnings.catch_warnings():                      # small target x category cells
        warnings.simplefilter("ignore", UserWarning)
        cv = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(X, key))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    proba = cross_val_predict(model, np.asarray(X, np.float64), y, cv=cv, method="predict_proba")
    return np.mean([within_folds(y == c, proba[:, c], cv) for c in range(proba.shape[1])]) if multi else \
        within_folds(y == 1, proba[:, 1], cv)


def within_folds(positive, score, cv):
    """sklearn's roc_auc_score in each held-out fold, weighted by the fold's (positive, negative) pairs."""
    parts = [(roc_auc_score(positive[te], score[te]), positive[te].sum() * (~positive[te]).sum()) for _, te in cv
             if 0 < positive[te].sum() < len(te)]
    return sum(a * w for a, w in parts) / sum(w for _, w in parts)


# ----------------------------------------------------------------------------- the verdict

def test_correctness_explained_by_category_gives_no_evidence(tmp_path, capsys):
    features, rows = synthetic(seed=1, plant_from=None, category_strength=6.0)
    run = write_run(tmp_path / "bycat", features, rows)
    res = probe_run(run)
    # a probe alone looks good (it reads the category), but the category control is as good
    assert max(v.auroc for v in res.layers.values()) > 0.7
    assert res.controls["category"].auroc > 0.7 and res.best_control in ("category", "bag_of_words")
    assert res.verdict == NO_EVIDENCE
    for name, v in res.layers.items():
        assert v.selectivity_ci[0] <= 0 and v.auroc_ci[0] <= v.auroc <= v.auroc_ci[1], name
    # the command line: the same result as JSON, its plot, the verdict as text
    code, out, err = run_cli(capsys, "--probe", run, "--output_dir", tmp_path / "plots", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["plots"] == [str(tmp_path / "plots" / name) for name in ("probe_bycat.png", "risk_coverage_bycat.png")]
    assert all(os.path.isfile(p) for p in data["plots"])
    assert from_json(ProbeResult, data) == res
    assert f"\nverdict:    {NO_EVIDENCE}: no layer" in probe_text(res)


def test_planted_direction_is_found_where_planted(tmp_path, capsys):
    features, rows = synthetic(seed=2, plant_from=3, strength=1.5)
    run = write_run(tmp_path / "planted", features, rows)
    res = probe_run(run)
    assert res.verdict == "layer_3" and res.best_layer in ("layer_3", "layer_4", "layer_5")
    for name in ("layer_0", "layer_1", "layer_2"):       # the category is there, correctness is not
        assert res.layers[name].selectivity_ci[0] <= 0, name
    for name in ("layer_3", "layer_4", "layer_5"):
        assert res.layers[name].selectivity_ci[0] > 0 and res.layers[name].auroc > 0.85
    assert res.n == 160 and res.layers_tested == 6 and set(res.controls) == {
        "majority", "category", "length", "bag_of_words"}
    assert res.controls["majority"].auroc == 0.5
    assert "Bonferroni over 6 layers" in res.bootstrap.adjustment and res.bootstrap.adjusted_level == 1 - 0.05 / 6
    code, out, _ = run_cli(capsys, "--probe", run, "--output_dir", tmp_path / "plots", "--no_progress")
    assert code == 0 and "verdict:    layer_3 is the first layer that beats every control" in out
    assert "layer_3 <- verdict" in out and "selectivity [99.17% CI, adjusted]" in out


@pytest.mark.slow        # Monte Carlo: many seeded runs
def test_null_runs_claim_a_layer_at_most_5_percent_of_the_time():
    """Pure noise, 8 layers, 20 seeds, the whole pipeline (3 folds and 1000 resamples keep it
    cheap). Bonferroni: each layer's one-sided false claim has probability <= alpha/(2L), so a
    claim at any of the L layers <= alpha/2 = 2.5%; taking the best control within each resample
    only lowers selectivity further. Allowed: at most 1 claim in 20 (5%)."""
    claims = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n = 60
        rows = [{"id": f"q{i}", "correct": bool(rng.random() < 0.5), "category": f"c{i % 3}",
                 "question": f"question number {i}", "num_prompt_tokens": int(rng.integers(5, 20)),
                 "num_generated_tokens": int(rng.integers(1, 30))} for i in range(n)]
        features = {f"layer_{k}": rng.normal(size=(n, 8)) for k in range(8)}
        res = probe_features(features, rows, n_splits=3, seed=seed, n_bootstrap=1000, cv_seeds=1)
        claims.append(res.verdict != NO_EVIDENCE)
    assert sum(claims) <= 1, claims


@pytest.mark.slow        # Monte Carlo: many seeded runs
def test_null_scores_claim_a_layer_at_most_5_percent_of_the_time():
    """The bootstrap and Bonferroni step alone, on 60 sets of random out-of-fold scores (20
    layers, 3 controls): the rate of claims stays within the bound (expected <= 2.5%)."""
    claims = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = 60
        y = (rng.random(n) < 0.5).astype(int)

        def random_proba():
            p = rng.random(n)  # noqa: B023 (called within this iteration)
            return np.c_[1 - p, p]
        res = evaluate_scores(y, {f"layer_{k}": random_proba() for k in range(20)},
                              {"majority": np.tile([0.0, 1.0], (n, 1)), "a": random_proba(),
                               "b": random_proba()}, 1000, seed)
        claims += res.verdict != NO_EVIDENCE
    assert claims <= 3, claims          # 5% of 60


# ----------------------------------------------------------------------------- against sklearn

def test_auroc_matches_sklearn_on_the_same_out_of_fold_scores():
    features, rows = synthetic(n=120, n_layers=3, seed=5, plant_from=1, strength=0.8)
    y = np.array([int(r["correct"]) for r in rows])
    res = probe_features(features, rows, seed=7, n_bootstrap=1000)
    for name, X in features.items():
        assert res.layers[name].auroc == pytest.approx(sklearn_oof_auroc(X, rows, y, seed=7), abs=1e-9)
    assert (res.cv.method, res.cv.folds, res.cv.seed, res.cv.groups, res.cv.seeds) == (
        "StratifiedKFold on target x category", 5, 7, None, [7, 8, 9])
    assert res.cv.oof_scoring == "pairs within folds"


def test_bootstrap_statistics_match_explicit_resamples():
    rng = np.random.default_rng(3)
    n = 40
    scores = np.round(rng.normal(size=n), 1)             # rounded: ties must count 1/2, as in sklearn
    y = rng.random(n) < 0.4
    proba3 = rng.dirichlet(np.ones(3), size=n)
    y3 = rng.integers(0, 3, n)
    W = next(bootstrap.resample_counts(n, 50, seed=0))
    auc = bootstrap.weighted_auroc(scores, y, W)
    macro = bootstrap.macro_auroc(proba3, y3, W)
    hits = scores > 0
    acc = bootstrap.weighted_accuracy(hits == y, W)
    for b in range(len(W)):
        idx = np.repeat(np.arange(n), W[b])               # the resample, drawn out
        assert auc[b] == pytest.approx(roc_auc_score(y[idx], scores[idx]))
        assert macro[b] == pytest.approx(roc_auc_score(y3[idx], proba3[idx], multi_class="ovr"))
        assert acc[b] == pytest.approx(np.mean(hits[idx] == y[idx]))
    assert W.sum(axis=1).tolist() == [n] * 50
    lonely = np.zeros((1, n))
    lonely[0, np.flatnonzero(y)[0]] = n                   # one positive question only: undefined
    assert np.isnan(bootstrap.weighted_auroc(scores, y, lonely)[0])


# ----------------------------------------------------------------------------- --target, --test_run, groups

def test_target_categorical_field(tmp_path, capsys):
    rng = np.random.default_rng(11)
    n, hidden = 150, 24
    levels = [("easy", "medium", "hard")[i] for i in rng.integers(0, 3, n)]
    vecs = {v: rng.normal(size=hidden) * 1.2 for v in ("easy", "medium", "hard")}
    features, rows = synthetic(n=n, n_layers=4, hidden=hidden, seed=12,
                               extra={"difficulty": (levels, 2, vecs)})
    run = write_run(tmp_path / "cat", features, rows)
    res = probe_run(run, target="difficulty", n_bootstrap=1000)
    assert res.auroc_kind == "one-vs-rest macro" and res.classes == ["easy", "hard", "medium"]
    assert sum(res.class_counts.values()) == n and res.verdict == "layer_2"
    assert res.operating_points is None and set(res.families) == {"logistic"}      # binary-only parts left out
    y = np.array([["easy", "hard", "medium"].index(v) for v in levels])
    for name in ("layer_1", "layer_3"):
        ref = sklearn_oof_auroc(features[name], rows, y, multi=True)
        assert res.layers[name].auroc == pytest.approx(ref, abs=1e-9)
    assert res.layers["layer_3"].auroc > 0.9 and res.layers["layer_1"].auroc < 0.7
    code, out, err = run_cli(capsys, "--probe", run, "--target", "difficulty", "--output_dir", tmp_path / "p",
                             "--json", "--bootstrap", "1000")
    assert code == 0, err
    assert os.path.basename(json.loads(out)["plots"][0]) == "probe_cat_target-difficulty_bootstrap-1000.png"


def test_test_run_transfer(tmp_path, capsys):
    train = write_run(tmp_path / "train", *synthetic(n=120, n_layers=4, seed=21, plant_from=2, strength=1.5))
    test_features, test_rows = synthetic(n=100, n_layers=4, seed=22, plant_from=2, strength=1.5)
    for r in test_rows:                        # other questions than the training run's (shared ones are left out)
        r["id"], r["question"] = "t" + r["id"], "Another " + r["question"]
    test = write_run(tmp_path / "test", test_features, test_rows)
    res = probe_run(train, test_run=test, n_bootstrap=1000)
    t = res.test_run
    assert t.n == 100 and t.run_name == "test" and t.run_dir == test and t.verdict == "layer_2"
    # the run x run transfer matrix at the best layer: the off-diagonal cell is the test run's AUROC above
    m = res.transfer
    assert m.by == "run" and m.groups == ["test", "train"] and m.n == {"test": 100, "train": 120}
    assert m.layer == res.best_layer and m.auroc[1][0] == pytest.approx(t.layers[m.layer].auroc, abs=1e-9)
    # the reference: fit on all of the training run, score the test run, sklearn's AUROC
    tr_features, tr_rows = synthetic(n=120, n_layers=4, seed=21, plant_from=2, strength=1.5)
    y_tr = np.array([r["correct"] for r in tr_rows])
    y_te = np.array([r["correct"] for r in test_rows])
    for name in ("layer_0", "layer_3"):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(tr_features[name].astype(np.float64), y_tr)
        ref = roc_auc_score(y_te, model.predict_proba(test_features[name].astype(np.float64))[:, 1])
        assert t.layers[name].auroc == pytest.approx(ref, abs=1e-6)
        lo, hi = t.layers[name].auroc_ci
        assert lo < ref < hi
    assert t.layers["layer_3"].auroc > 0.85
    code, out, _ = run_cli(capsys, "--probe", train, "--test_run", test, "--output_dir", tmp_path / "p",
                           "--no_progress", "--bootstrap", "1000")
    assert code == 0 and "transfer verdict:    layer_2" in out


def test_probe_groups_hold_out_whole_categories():
    features, rows = synthetic(n=160, n_layers=4, seed=31, plant_from=2, strength=1.5)
    res = probe_features(features, rows, groups="category", n_bootstrap=1000)
    assert res.cv.method.startswith("GroupKFold") and res.cv.folds == 4 and res.cv.oof_scoring == "pairs within folds"
    # a held-out question's category is never seen in training: the category control is blind
    assert res.controls["category"].auroc == pytest.approx(0.5)
    assert res.verdict == "layer_2"
    # the reference: sklearn on the same group folds, AUROC within each fold, pair-weighted
    y = np.array([int(r["correct"]) for r in rows])
    groups = [r["category"] for r in rows]
    cv = list(GroupKFold(4, shuffle=True, random_state=0).split(y, y, groups))
    for name in ("layer_1", "layer_3"):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        proba = cross_val_predict(model, features[name].astype(np.float64), y, cv=cv, method="predict_proba")
        per_fold = [(roc_auc_score(y[te], proba[te, 1]), y[te].sum() * (1 - y[te]).sum()) for _, te in cv]
        ref = sum(a * w for a, w in per_fold) / sum(w for _, w in per_fold)
        assert res.layers[name].auroc == pytest.approx(ref, abs=1e-9)


# ----------------------------------------------------------------------------- errors

def test_probe_input_errors(tmp_path, capsys):
    features, rows = synthetic(n=40, n_layers=2, seed=41)
    for r, v in zip(rows, np.linspace(0, 1, 40)):
        r["score"] = float(v)
    rows[3]["rare"] = "x"
    for r in rows:
        r.setdefault("rare", "y")
    run = write_run(tmp_path / "run", features, rows)
    p = tmp_path / "p"
    cases = [(("--target", "nope"), "no value for target 'nope'"),
             (("--target", "score"), "boolean or categorical"),
             (("--target", "rare"), "minority class"),
             (("--bootstrap", "10"), "at least 1000"),
             (("--folds", "1"), "--folds must be at least 2"),
             (("--test_run", tmp_path / "missing"), "not a run folder"),
             (("--layers", "layer_9"), "layer_9")]
    for extra, message in cases:
        code, out, err = run_cli(capsys, "--probe", run, "--output_dir", p, "--no_progress", *extra)
        assert code == 2 and out == "" and err.startswith("error:") and err.count("\n") == 1, (extra, err)
        assert message in err, (extra, err)
    other_features, other_rows = synthetic(n=40, n_layers=2, seed=42)
    for i, r in enumerate(other_rows):
        r["rare"] = ("y", "z")[i % 2]                      # "z" never occurs in the training run
        r["id"], r["question"] = "o" + r["id"], "Other " + r["question"]      # not the training run's questions
    other = write_run(tmp_path / "other", other_features, other_rows)
    for r in rows:
        r["rare"] = ("x", "y")[int(r["id"][1:]) % 2]
    run2 = write_run(tmp_path / "run2", features, rows)
    code, _, err = run_cli(capsys, "--probe", run2, "--target", "rare", "--test_run", other,
                           "--output_dir", p, "--no_progress")
    assert code == 2 and "the training run lacks: z" in err
    for r in rows:
        r["category"] = "same"
    one_group = write_run(tmp_path / "onegroup", features, rows)
    code, _, err = run_cli(capsys, "--probe", one_group, "--probe_groups", "category", "--output_dir", p)
    assert code == 2 and "holding out groups needs at least 2" in err
    assert not os.path.exists(p)                          # nothing saved for a failed probe


def test_run_folder_gives_the_arrays_result_when_layers_are_read_in_blocks(tmp_path, monkeypatch):
    """probe_run reads layers in blocks (each record file once per block); with a budget that
    forces blocks of 2 layers, every layer must still reach the probe under its own name."""
    from activation_eval.analysis.probe import run as probe_module
    features, rows = synthetic(n=60, n_layers=5, hidden=8, seed=51, plant_from=3, strength=1.5)
    run = write_run(tmp_path / "blocks", features, [dict(r) for r in rows])
    monkeypatch.setattr(probe_module, "LOAD_BUDGET_BYTES", 2 * 60 * 8 * 4)
    from_files = probe_run(run, n_bootstrap=1000)
    in_memory = probe_features(features, rows, n_bootstrap=1000)
    assert list(from_files.layers) == list(features)
    assert from_files.layers == in_memory.layers and from_files.controls == in_memory.controls
    assert from_files.run_name == "blocks" and from_files.reduce == "last_prompt"
