"""Issue 27, items 5 and 6 and the SAPLMA family: train and test kept apart across runs and groups,
error detection in both orientations against sklearn.metrics, and an MLP probe that finds a planted
nonlinear (XOR) signal that logistic regression cannot."""
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from test_probe import run_cli, synthetic, write_run

from activation_eval.analysis.probe import probe_features, probe_run
from activation_eval.analysis.probe.error_detection import error_detection
from activation_eval.analysis.probe.models import make_probe
from activation_eval.analysis.probe.transfer import transfer_matrix


def sk_auprc(positive, score):
    """Average precision from sklearn's precision-recall curve: sum_k (R_k - R_{k+1}) P_k."""
    precision, recall, _ = precision_recall_curve(positive, score)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def sk_tpr_at_fpr(positive, score, max_fpr):
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


def sk_fpr_at_tpr(positive, score, min_tpr):
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return float(fpr[tpr >= min_tpr].min())


# ----------------------------------------------------------------------------- error detection

def test_both_orientations_match_sklearn_with_incorrect_first():
    rng = np.random.default_rng(7)
    y = (rng.random(150) < 0.75).astype(int)                         # 75% correct: AUPRC of "correct" flatters
    p = np.clip(np.round(0.55 + 0.2 * (y - 0.5) + 0.25 * rng.normal(size=150), 1), 0, 1)     # ties
    res = error_detection(y, ["False", "True"], "correct", {"layer_4": p, "control:length": 1 - p}, n_boot=1000)
    assert list(res.orientations) == ["incorrect", "correct"]
    for name, positive, score in (("incorrect", y == 0, 1 - p), ("correct", y == 1, p)):
        ops = res.orientations[name]
        assert ops.positive == name and ops.prevalence == pytest.approx(positive.mean())
        row = ops.rows["layer_4"]
        assert row.auprc.value == pytest.approx(sk_auprc(positive, score), abs=1e-9)
        assert row.tpr_at_1pct_fpr.value == pytest.approx(sk_tpr_at_fpr(positive, score, 0.01), abs=1e-9)
        assert row.fpr_at_95pct_tpr.value == pytest.approx(sk_fpr_at_tpr(positive, score, 0.95), abs=1e-9)
        assert row.auprc.ci[0] <= row.auprc.value <= row.auprc.ci[1]
    # the error-detection framing is the harder one here: chance is the error rate, not 0.75
    assert res.orientations["incorrect"].rows["layer_4"].auprc.value < res.orientations["correct"].rows["layer_4"].auprc.value
    # a reversed score is a worse-than-random selector
    assert res.selective["layer_4"].prr.value > 0 > res.selective["control:length"].prr.value
    assert res.error_rate == pytest.approx(np.mean(y == 0))


def oof_proba(X, y, rows, seed=0, folds=5):
    """sklearn's cross_val_predict on the documented folds (StratifiedKFold on target x category)."""
    key = [f"{label}|{r['category']}" for label, r in zip(y, rows)]
    cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, key))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return cross_val_predict(model, np.asarray(X, np.float64), y, cv=cv, method="predict_proba")[:, 1]


@pytest.mark.slow
def test_probe_error_detection_reads_the_best_layers_out_of_fold_probabilities():
    features, rows = synthetic(n=160, n_layers=3, seed=5, plant_from=2, strength=1.5)
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1)
    ed = res.error_detection
    assert res.best_layer == "layer_2" and set(ed.selective) == {"layer_2"} | {f"control:{c}" for c in
                                                                                  ("category", "length", "bag_of_words")}
    y = np.array([int(r["correct"]) for r in rows])
    p = oof_proba(features["layer_2"], y, rows)
    inc = ed.orientations["incorrect"].rows["layer_2"]
    assert inc.auprc.value == pytest.approx(sk_auprc(y == 0, 1 - p), abs=1e-6)
    assert inc.tpr_at_1pct_fpr.value == pytest.approx(sk_tpr_at_fpr(y == 0, 1 - p, 0.01), abs=1e-6)
    # AURC from the definition: risk of the k most confident, averaged over k (no ties in probabilities)
    wrong = (y == 0)[np.argsort(-p, kind="stable")]
    aurc = float(np.mean(np.cumsum(wrong) / np.arange(1, len(y) + 1)))
    row = ed.selective["layer_2"]
    assert row.aurc.value == pytest.approx(aurc, abs=1e-9)
    assert row.aurc.ci[0] <= row.aurc.value <= row.aurc.ci[1] and row.prr.value > 0.5
    k = int(np.ceil(0.8 * len(y)))
    assert row.selective_accuracy_80.value == pytest.approx(1 - wrong[:k].mean(), abs=1e-9)


# ----------------------------------------------------------------------------- --test_run kept apart

def other_questions(rows, tag):
    for r in rows:
        r["id"], r["question"] = tag + r["id"], f"{tag} {r['question']}"
    return rows


@pytest.mark.slow
def test_a_test_run_copy_of_the_training_run_is_reported_as_overlapping(tmp_path, capsys):
    features, rows = synthetic(n=80, n_layers=2, seed=3, plant_from=1, strength=1.5)
    train = write_run(tmp_path / "train", features, rows)
    copy = write_run(tmp_path / "copy", features, [dict(r) for r in rows])
    code, out, err = run_cli(capsys, "--probe", train, "--test_run", copy, "--output_dir", tmp_path / "p",
                             "--no_progress", "--bootstrap", "1000")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "overlapping" in err and "all 80 of its questions" in err and "80 by id, 80 by prompt hash" in err
    assert "1.000" not in err
    # kept on request: labelled in-sample, in the JSON and in the text
    code, out, err = run_cli(capsys, "--probe", train, "--test_run", copy, "--keep_overlap", "--output_dir",
                             tmp_path / "p", "--no_progress", "--bootstrap", "1000", "--json")
    assert code == 0, err
    overlap = json.loads(out)["test_run"]["overlap"]
    assert overlap == {"n_test": 80, "shared_by_id": 80, "shared_by_prompt": 80, "shared": 80, "dropped": 0,
                       "in_sample": True}
    assert json.loads(out)["transfer"]["in_sample"] is True
    code, out, _ = run_cli(capsys, "--probe", train, "--test_run", copy, "--keep_overlap", "--output_dir",
                           tmp_path / "p", "--no_progress", "--bootstrap", "1000")
    assert code == 0 and "IN-SAMPLE: 80 of 80 questions shared" in out


@pytest.mark.slow
def test_shared_questions_are_left_out_by_id_and_by_prompt_and_counted(tmp_path):
    features, rows = synthetic(n=100, n_layers=2, seed=11, plant_from=1, strength=1.5)
    train = write_run(tmp_path / "train", features, rows)
    t_features, t_rows = synthetic(n=60, n_layers=2, seed=12, plant_from=1, strength=1.5)
    other_questions(t_rows, "t")
    t_rows[0]["id"] = rows[5]["id"]                        # the same id (another text)
    t_rows[1]["question"] = "  " + rows[7]["question"].replace(" ", "  ")       # the same prompt, respaced
    t_rows[2]["id"], t_rows[2]["question"] = rows[9]["id"], rows[9]["question"]  # both
    test = write_run(tmp_path / "test", t_features, t_rows)
    res = probe_run(train, test_run=test, n_bootstrap=1000, cv_seeds=1)
    o = res.test_run.overlap
    assert (o.n_test, o.shared_by_id, o.shared_by_prompt, o.shared, o.dropped, o.in_sample) == (60, 2, 2, 3, 3, False)
    assert res.test_run.n == 57 and res.transfer.n[res.test_run.run_name] == 57
    # the reference: a probe fitted on all of the training run scores the 57 questions left
    y_tr = np.array([r["correct"] for r in rows])
    y_te = np.array([r["correct"] for r in t_rows])[3:]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features["layer_1"].astype(float), y_tr)
    ref = roc_auc_score(y_te, model.predict_proba(t_features["layer_1"][3:].astype(float))[:, 1])
    assert res.test_run.layers["layer_1"].auroc == pytest.approx(ref, abs=1e-6)


@pytest.mark.slow
def test_a_test_run_without_p_true_uses_the_fields_both_runs_have(tmp_path, capsys):
    rng = np.random.default_rng(0)
    features, rows = synthetic(n=80, n_layers=2, seed=13)
    for r in rows:
        r["answer_logprob_mean"], r["p_true"] = float(rng.normal()), float(rng.random())
    t_features, t_rows = synthetic(n=60, n_layers=2, seed=14)
    for r in other_questions(t_rows, "t"):
        r["answer_logprob_mean"] = float(rng.normal())                     # no p_true
    train, test = write_run(tmp_path / "train", features, rows), write_run(tmp_path / "test", t_features, t_rows)
    res = probe_run(train, test_run=test, n_bootstrap=1000, cv_seeds=1)
    assert "p_true" not in res.controls and "answer_logprob_mean" in res.controls
    assert "p_true" not in res.test_run.controls and "answer_logprob_mean" in res.test_run.controls
    assert any(n.startswith("p_true control left out: the training run 'train' carries it, 60 of 60 rows of the "
                            "test run 'test' lack it") for n in res.test_run.notes)
    code, out, err = run_cli(capsys, "--probe", train, "--test_run", test, "--output_dir", tmp_path / "p",
                             "--no_progress", "--bootstrap", "1000")
    assert code == 0, err
    assert "p_true control left out" in out


def test_mismatched_hidden_sizes_name_both_runs_in_one_line(tmp_path, capsys):
    features, rows = synthetic(n=40, n_layers=2, hidden=24, seed=15)
    t_features, t_rows = synthetic(n=40, n_layers=2, hidden=16, seed=16)
    train = write_run(tmp_path / "small_model", features, rows)
    test = write_run(tmp_path / "other_model", t_features, other_questions(t_rows, "t"))
    code, out, err = run_cli(capsys, "--probe", train, "--test_run", test, "--output_dir", tmp_path / "p",
                             "--no_progress")
    assert code == 2 and out == "" and err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err
    assert "'small_model'" in err and "'other_model'" in err and "(40, 24)" in err and "(40, 16)" in err


# ----------------------------------------------------------------------------- --transfer kept apart

def test_transfer_cells_leave_out_rows_the_training_group_shares():
    rng = np.random.default_rng(2)
    n = 180
    y = rng.integers(0, 2, n)
    group = np.array(["a", "b", "c"] * 60)
    X = rng.normal(size=(n, 6))
    X[:, 0] += 2.0 * (2 * y - 1)
    rows = [{"id": f"q{i}", "category": g, "question": f"question {i}"} for i, g in enumerate(group)]
    for i in (1, 4, 7):                                  # rows of b that a holds: same id / same question text
        rows[i]["id"] = rows[0]["id"]
    rows[10]["question"] = rows[3]["question"]
    res = transfer_matrix(X, y, group, rows, lambda: make_probe("logistic"), n_boot=1000, by="category")
    a, b = res.groups.index("a"), res.groups.index("b")
    # a -> b: b's rows 1, 4, 7 (id q0) and 10 (q3's text); b -> a: a's rows 0 and 3
    assert res.shared[a][b] == 4 and res.shared[b][a] == 2 and res.shared[a][a] == 0 and not res.in_sample
    kept = np.array([i for i in np.flatnonzero(group == "b") if i not in (1, 4, 7, 10)])
    model = make_probe("logistic").fit(X[group == "a"], y[group == "a"])
    ref = roc_auc_score(y[kept], model.predict_proba(X[kept])[:, 1])
    assert res.auroc[a][b] == pytest.approx(ref, abs=1e-9)
    kept_all = transfer_matrix(X, y, group, rows, lambda: make_probe("logistic"), n_boot=1000, keep_overlap=True)
    assert kept_all.in_sample and kept_all.shared[a][b] == 4
    every_b = np.flatnonzero(group == "b")
    assert kept_all.auroc[a][b] == pytest.approx(roc_auc_score(y[every_b], model.predict_proba(X[every_b])[:, 1]))


# ----------------------------------------------------------------------------- the MLP family (SAPLMA)

@pytest.mark.slow
def test_mlp_probe_finds_an_xor_signal_that_logistic_regression_cannot():
    rng = np.random.default_rng(4)
    n = 400
    X = rng.normal(size=(n, 8))
    correct = (X[:, 0] > 0) ^ (X[:, 1] > 0)                 # correct when exactly one of two directions is positive
    rows = [{"id": f"q{i}", "correct": bool(c), "category": "ab"[i % 2], "question": f"question {i}",
             "num_prompt_tokens": 10, "num_generated_tokens": 4} for i, c in enumerate(correct)]
    res = probe_features({"layer_0": X}, rows, family="mlp", n_bootstrap=1000, cv_seeds=1)
    assert res.family == "mlp" and set(res.families) == {"logistic", "mass_mean", "mlp"}
    assert res.layers["layer_0"].auroc > 0.85 and res.layers["layer_0"].auroc_ci[0] > 0.75
    assert res.families["logistic"]["layer_0"].auroc < 0.65 and res.families["mass_mean"]["layer_0"].auroc < 0.65
    # the reference: sklearn's AUROC of a plain logistic regression's out-of-fold scores stays near chance
    y = correct.astype(int)
    assert roc_auc_score(y, oof_proba(X, y, rows)) < 0.65
    assert auc(*roc_curve(y, oof_proba(X, y, rows))[:2]) < 0.65


# ----------------------------------------------------------------------------- text, report, plot

@pytest.mark.slow
def test_error_detection_is_printed_reported_and_drawn_with_intervals(tmp_path, figures):
    from activation_eval.analysis.probe.html import probe_html
    from activation_eval.analysis.probe.selective_report import plot_risk_coverage
    from activation_eval.analysis.probe.text import probe_text
    features, rows = synthetic(n=120, n_layers=2, seed=8, plant_from=1, strength=1.2)
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1)
    ed, best = res.error_detection, res.best_layer
    text = probe_text(res)
    first, second = text.index('positive class "incorrect"'), text.index('positive class "correct"')
    assert first < second < text.index("selective answering")
    row = ed.selective[best]
    selective = text[text.index("selective answering"):].splitlines()
    line = next(s for s in selective if s.startswith(best + " "))
    assert f"{row.prr.value:.3f} [{row.prr.ci[0]:.3f}, {row.prr.ci[1]:.3f}]" in line
    assert f"{row.aurc.value:.3f} [{row.aurc.ci[0]:.3f}, {row.aurc.ci[1]:.3f}]" in line
    assert f"random order AURC = error rate {ed.error_rate:.3f}" in text
    page = probe_html(res)
    assert "<h3>Error detection and selective answering</h3>" in page and page.count("<img") >= 2
    path = plot_risk_coverage(res, tmp_path / "rc.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    labels = [ln.get_label() for ln in figures[-1].axes[0].get_lines()]
    assert len(labels) == len(ed.selective) + 2                       # every scorer, random and oracle
    assert any(lab.startswith(f"{best} (best layer): AURC {row.aurc.value:.3f}") for lab in labels)
    assert any(lab.startswith("random order: risk = error rate") for lab in labels)
