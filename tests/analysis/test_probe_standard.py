"""The probe at the field's standard (issue 21): output-side controls, the target's own control dropped,
clustered folds and resampling, the control task, probe families, CV seeds, operating points, transfer
and warnings. Synthetic data where the right answer is known; figures checked against sklearn.
"""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from activation_eval.analysis.probe import NO_EVIDENCE, probe_features
from activation_eval.analysis.probe.verdict import verdict

CATS = ("geography", "arithmetic", "science", "trivia")


def rows_of(n, rng, correct, cats=None, **fields):
    cats = [CATS[i % len(CATS)] for i in range(n)] if cats is None else cats
    rows = [{"id": f"q{i:04d}", "category": cats[i], "correct": bool(correct[i]), "question": f"Question {i} on {cats[i]}?",
             "num_prompt_tokens": int(8 + rng.integers(0, 6)), "num_generated_tokens": int(3 + rng.integers(0, 9))}
            for i in range(n)]
    for name, values in fields.items():
        for r, v in zip(rows, values):
            r[name] = float(v)
    return rows


def logprob_explained(n=240, seed=0, hidden=16, n_layers=3):
    """Correctness follows the answer's log-probability; every layer holds that log-probability (and
    nothing else about correctness), as a layer that reads the model's own confidence would."""
    rng = np.random.default_rng(seed)
    logprob = rng.normal(-1.5, 1.0, n)
    correct = rng.random(n) < 1 / (1 + np.exp(-3 * (logprob + 1.5)))
    entropy = rng.gamma(2.0, 1.0, n)                          # unrelated to correctness
    rows = rows_of(n, rng, correct, answer_logprob_mean=logprob, answer_logprob_sum=logprob * 3,
                   first_token_entropy=entropy)
    direction = rng.normal(size=hidden)
    features = {f"layer_{i}": rng.normal(size=(n, hidden)) + np.outer(logprob, direction) for i in range(n_layers)}
    return features, rows


def test_correctness_explained_by_logprob_is_no_evidence_and_names_that_control():
    features, rows = logprob_explained()
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1)
    assert max(v.auroc for v in res.layers.values()) > 0.75          # the layers do predict correctness
    assert res.verdict == NO_EVIDENCE
    assert res.best_control in ("answer_logprob_mean", "answer_logprob_sum", "output_confidence")
    assert res.best_output_control == res.best_control and res.controls[res.best_control].side == "output"
    assert res.best_input_control in ("majority", "category", "length", "bag_of_words")
    assert res.controls["first_token_entropy"].auroc < 0.65
    assert {c.side for c in res.controls.values()} == {"input", "output"}
    # issue 27: a single score is scored raw, as the field does: exactly the raw log-probability's own AUROC
    y = np.array([r["correct"] for r in rows])
    raw = roc_auc_score(y, [r["answer_logprob_mean"] for r in rows])
    assert res.controls["answer_logprob_mean"].auroc == pytest.approx(raw, abs=1e-12)
    v = verdict(res)
    assert v.layer is None and NO_EVIDENCE in v.headline and f"best control {res.best_control}, output side" in v.baseline


def test_without_confidence_fields_only_input_controls_with_a_note():
    rng = np.random.default_rng(1)
    y = rng.random(80) < 0.5
    res = probe_features({"layer_0": rng.normal(size=(80, 4))}, rows_of(80, rng, y), n_bootstrap=1000, cv_seeds=1)
    assert set(res.controls) == {"majority", "category", "length", "bag_of_words"}
    assert res.best_output_control is None
    assert any("output-side controls left out" in n for n in res.notes)


def test_target_category_drops_the_category_control():
    rng = np.random.default_rng(2)
    n = 120
    rows = rows_of(n, rng, rng.random(n) < 0.5)
    X = rng.normal(size=(n, 6))
    res = probe_features({"layer_0": X}, rows, target="category", n_bootstrap=1000, cv_seeds=1)
    assert "category" not in res.controls and "category" in res.dropped_controls
    assert any("dropped" in n for n in res.notes)


def test_small_runs_are_flagged():
    rng = np.random.default_rng(3)
    y = np.array([True] * 6 + [False] * 14)
    res = probe_features({"layer_0": rng.normal(size=(20, 4))}, rows_of(20, rng, y), n_bootstrap=1000, cv_seeds=1)
    text = " ".join(res.warnings)
    assert "only 20 questions" in text and "fewer than 10 members" in text and "correct=True (6)" in text


def test_samples_of_a_question_stay_together_and_widen_the_intervals():
    """Four identical samples per question must give the intervals of one sample per question, not
    intervals half as wide (which treating 4n rows as independent would give)."""
    rng = np.random.default_rng(4)
    n, k = 80, 4
    y = rng.random(n) < 0.5
    X = rng.normal(size=(n, 6)) + 0.8 * np.outer(2 * y - 1, np.ones(6)) / np.sqrt(6)
    rows = rows_of(n, rng, y)
    single = probe_features({"layer_0": X}, rows, n_bootstrap=2000, cv_seeds=1)
    rep_rows = [dict(r, sample=s) for r in rows for s in range(k)]
    rep = probe_features({"layer_0": np.repeat(X, k, axis=0)}, rep_rows, n_bootstrap=2000, cv_seeds=1)
    assert (rep.clusters.by, rep.clusters.n_clusters, rep.clusters.rows) == ("id", n, n * k)
    assert single.clusters is None and "StratifiedGroupKFold" in rep.cv.method
    width = lambda r: np.diff(r.layers["layer_0"].auroc_ci)[0]          # noqa: E731
    assert width(rep) > 0.75 * width(single)
    assert any("several samples" in w for w in rep.warnings)


def planted(n=240, seed=5, hidden=16, shared=True, strength=2.0):
    """Correctness planted along one direction in every category (shared) or along a different
    direction per category (category-specific)."""
    rng = np.random.default_rng(seed)
    cats = [CATS[i % len(CATS)] for i in range(n)]
    y = rng.random(n) < 0.5
    dirs = {c: rng.normal(size=hidden) for c in CATS}
    common = rng.normal(size=hidden)
    X = rng.normal(size=(n, hidden))
    for i, c in enumerate(cats):
        d = common if shared else dirs[c]
        X[i] += strength * (2 * y[i] - 1) * d / np.linalg.norm(d)
    return {"layer_0": X, "layer_1": rng.normal(size=(n, hidden))}, rows_of(n, rng, y, cats)


def test_a_shared_direction_transfers_across_categories():
    features, rows = planted(shared=True)
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1, transfer="category")
    t = res.transfer
    assert t.by == "category" and t.layer == "layer_0" and t.groups == sorted(CATS)
    assert all(v > 0.8 for row in t.auroc for v in row)
    assert all(lo <= v <= hi for row, cis in zip(t.auroc, t.auroc_ci) for v, (lo, hi) in zip(row, cis))


def test_category_specific_directions_do_not_transfer():
    features, rows = planted(shared=False)
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1, transfer="category")
    t = res.transfer
    diag = [t.auroc[i][i] for i in range(4)]
    off = [t.auroc[i][j] for i in range(4) for j in range(4) if i != j]
    assert min(diag) > 0.75 and np.mean(off) < 0.62
    # an off-diagonal cell equals sklearn's AUROC of a probe fitted on the whole training group
    y = np.array([r["correct"] for r in rows])
    cats = np.array([r["category"] for r in rows])
    a, b = t.groups[0], t.groups[1]
    from activation_eval.analysis.probe.models import make_probe
    model = make_probe("logistic").fit(features["layer_0"][cats == a], y[cats == a])
    want = roc_auc_score(y[cats == b], model.predict_proba(features["layer_0"][cats == b])[:, 1])
    assert t.auroc[0][1] == pytest.approx(want)


def test_permutation_test_separates_question_knowledge_from_category_knowledge():
    """The labels shuffled within category (a permutation test; called the control task before issue 27)."""
    within, rows = planted(shared=True)
    res = probe_features({"layer_0": within["layer_0"]}, rows, n_bootstrap=1000, cv_seeds=1)
    layer = res.layers["layer_0"]
    assert layer.permutation_auroc < 0.65 and layer.permutation_selectivity > 0.25
    # correctness set by the category alone: the shuffled-within-category labels are as predictable
    rng = np.random.default_rng(6)
    n = 400
    cats = [CATS[i % 4] for i in range(n)]
    rate = {"geography": 0.9, "arithmetic": 0.1, "science": 0.8, "trivia": 0.2}
    y = np.array([rng.random() < rate[c] for c in cats])
    onehot = np.array([[c == k for k in CATS] for c in cats], dtype=float) * 3
    res = probe_features({"layer_0": onehot + rng.normal(size=(n, 4))}, rows_of(n, rng, y, cats),
                         n_bootstrap=1000, cv_seeds=1)
    layer = res.layers["layer_0"]
    assert layer.auroc > 0.75 and abs(layer.permutation_selectivity) < 0.08


def test_families_seeds_and_operating_points():
    features, rows = planted(shared=True, strength=1.2)
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=3)
    assert set(res.families) == {"logistic", "mass_mean"}
    assert res.families["logistic"]["layer_0"].auroc == res.layers["layer_0"].auroc
    assert res.families["mass_mean"]["layer_0"].auroc > 0.75 > res.families["mass_mean"]["layer_1"].auroc
    assert res.seeds.seeds == [0, 1, 2] and res.seeds.auroc["layer_0"][0] == res.layers["layer_0"].auroc
    lo, hi = res.seeds.range["layer_0"]
    assert lo <= res.layers["layer_0"].auroc <= hi and hi - lo < 0.1
    ops = res.operating_points
    assert ops.level == 0.95 and ops.positive == "True"
    assert set(ops.rows) >= {"layer_0", "control:category", "control:length"}
    best = ops.rows["layer_0"]
    for metric in (best.auprc, best.tpr_at_1pct_fpr, best.fpr_at_95pct_tpr, best.brier, best.ece):
        lo, hi = metric.ci
        assert lo <= metric.value <= hi
    assert best.ece.interval == "basic" and best.brier.interval == "percentile"
    assert best.auprc.value > ops.prevalence                     # beats the chance AUPRC


def test_operating_points_are_those_of_the_out_of_fold_probabilities():
    """AUPRC and Brier of the best layer equal sklearn's on out-of-fold probabilities computed here."""
    import warnings

    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    features, rows = planted(shared=True, strength=1.2)
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1)
    y = np.array([r["correct"] for r in rows]).astype(int)
    key = [f"{label}|{r['category']}" for label, r in zip(y, rows)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cv = list(StratifiedKFold(5, shuffle=True, random_state=0).split(y, key))
    proba = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                              features["layer_0"], y, cv=cv, method="predict_proba")[:, 1]
    best = res.operating_points.rows["layer_0"]
    assert best.auprc.value == pytest.approx(average_precision_score(y, proba))
    assert best.brier.value == pytest.approx(brier_score_loss(y, proba))


def test_bad_probe_options_are_refused():
    rng = np.random.default_rng(7)
    n = 60
    rows = rows_of(n, rng, rng.random(n) < 0.5)
    rows[3]["topic"] = "x"
    with pytest.raises(ValueError, match="unknown probe family"):
        probe_features({"layer_0": rng.normal(size=(n, 3))}, rows, family="svm", n_bootstrap=1000)
    with pytest.raises(ValueError, match="no 'topic'"):
        probe_features({"layer_0": rng.normal(size=(n, 3))}, rows, transfer="topic", n_bootstrap=1000, cv_seeds=1)
    with pytest.raises(ValueError, match="binary target"):
        probe_features({"layer_0": rng.normal(size=(n, 3))}, rows, target="category", family="mass_mean",
                       n_bootstrap=1000)


# ----------------------------------------------------------------------------- at the answer (run folders)

def test_signal_only_at_the_answer_is_found_at_the_answer_not_at_the_last_prompt_token(tmp_path):
    from position_runs import write_position_run

    from activation_eval.analysis.probe import probe_run
    run, truth = write_position_run(tmp_path / "run", n=150, plant_at="answer_first", strength=1.5)
    res = probe_run(run, n_bootstrap=1000, cv_seeds=1)
    assert res.position == "answer_first" and "generated" in res.position_note
    assert res.verdict in res.layers                         # a layer beats every control
    table = res.positions
    assert table.positions == ["last_prompt", "answer_first", "answer_mean", "answer_last"]
    assert table.n == res.n == 150 - len(truth.left_out)
    for layer, by_position in table.auroc.items():
        assert by_position["answer_first"] > 0.8, layer
        assert by_position["answer_first"] == res.layers[layer].auroc          # the main sweep's position
        assert by_position["last_prompt"] < 0.68, layer           # nothing planted there
        lo, hi = table.auroc_ci[layer]["last_prompt"]
        assert lo < 0.5 < hi or hi < 0.75
    at_prompt = probe_run(run, reduce="last_prompt", n_bootstrap=1000, cv_seeds=1)
    assert at_prompt.position == "last_prompt" and at_prompt.positions is None
    assert at_prompt.verdict == NO_EVIDENCE
