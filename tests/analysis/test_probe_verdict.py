"""Issue 27: a verdict that cannot flatter the probe. Synthetic data where the answer is known:

- out-of-fold scoring manufactures no signal: a constant feature scores exactly 0.5 (sklearn's pooled
  out-of-fold AUROC on the same folds does not), and pure noise centres on 0.5 over 20 seeds;
- single scores are scored raw: a confidence score that explains correctness gives "no evidence beyond
  the controls", naming it, at sklearn's roc_auc_score of the oriented raw score;
- the answer's own tokens are a control: correctness decided by the answer token's identity gives
  "no evidence beyond the answer-token control", and a layer that holds more is named, with its gain
  over the embedding layer;
- Hewitt & Liang's control task: a fixed random label per input type;
- a model far below chance is warned about.
"""
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from activation_eval.analysis.probe import NO_EVIDENCE, evaluate_scores, probe_features
from activation_eval.analysis.probe.build import below_chance_warnings
from activation_eval.analysis.probe.folds import hl_control_labels, input_type
from activation_eval.analysis.probe.text import probe_text
from activation_eval.analysis.probe.verdict import NO_EVIDENCE_ANSWER, verdict

CATS = ("geography", "arithmetic", "science", "trivia")


def rows_of(n, rng, correct, cats=None, **fields):
    cats = [CATS[i % len(CATS)] for i in range(n)] if cats is None else cats
    rows = [{"id": f"q{i:04d}", "category": cats[i], "correct": bool(correct[i]), "question": f"Question {i} on {cats[i]}?",
             "num_prompt_tokens": int(8 + rng.integers(0, 6)), "num_generated_tokens": int(3 + rng.integers(0, 9))}
            for i in range(n)]
    for name, values in fields.items():
        for r, v in zip(rows, values):
            r[name] = v
    return rows


# ----------------------------------------------------------------------------- out-of-fold scoring

def test_a_constant_feature_scores_exactly_one_half():
    """Categories with very different accuracies make folds (target x category) of different class balance:
    sklearn's pooled out-of-fold probabilities of a constant feature then rank the folds (not 0.5); the
    tool compares pairs within folds only: exactly 0.5, for every CV seed and both control tasks."""
    rng = np.random.default_rng(0)
    n = 45
    rate = {"geography": 0.9, "arithmetic": 0.2, "science": 0.7, "trivia": 0.4}
    cats = [CATS[i % 4] for i in range(n)]
    y = np.array([rng.random() < rate[c] for c in cats])
    rows = rows_of(n, rng, y, cats)
    X = np.ones((n, 6))
    res = probe_features({"layer_0": X}, rows, n_bootstrap=1000, cv_seeds=3)
    layer = res.layers["layer_0"]
    assert layer.auroc == 0.5 and layer.auroc_ci == (0.5, 0.5)
    assert res.seeds.auroc["layer_0"] == [0.5, 0.5, 0.5]
    assert layer.permutation_auroc == 0.5 and layer.hl_control_auroc in (None, 0.5)
    assert res.families["mass_mean"]["layer_0"].auroc == 0.5
    assert res.controls["majority"].auroc == 0.5 and res.cv.oof_scoring == "pairs within folds"
    # the artefact the tool avoids: the same folds, sklearn's pooled out-of-fold AUROC
    key = [f"{int(label)}|{c}" for label, c in zip(y, cats)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cv = list(StratifiedKFold(res.cv.folds, shuffle=True, random_state=0).split(X, key))
    pooled = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression()), X, y, cv=cv,
                               method="predict_proba")[:, 1]
    assert abs(roc_auc_score(y, pooled) - 0.5) > 0.05


@pytest.mark.slow        # Monte Carlo: 20 seeded probes
def test_pure_noise_centres_on_one_half_over_seeds():
    """20 runs of noise features and random labels (classes unbalanced by category, so the folds' balances
    differ): the mean AUROC of the layer and of the fitted noise controls lies within 3 standard errors of 0.5."""
    figures = {"layer_0": [], "length": [], "bag_of_words": []}          # (the category does predict: not noise)
    for seed in range(20):
        rng = np.random.default_rng(500 + seed)
        n = 60
        cats = [CATS[i % 4] for i in range(n)]
        y = rng.random(n) < np.where(np.array(cats) == "geography", 0.8, 0.35)
        rows = rows_of(n, rng, y, cats)
        for r in rows:
            r["question"] = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps"], 4))
        res = probe_features({"layer_0": rng.normal(size=(n, 8))}, rows, n_bootstrap=1000, cv_seeds=1, seed=seed)
        for name, values in figures.items():
            values.append(res.layers[name].auroc if name in res.layers else res.controls[name].auroc)
    for name, values in figures.items():
        values = np.array(values)
        tolerance = 3 * values.std(ddof=1) / np.sqrt(len(values))
        assert abs(values.mean() - 0.5) <= max(tolerance, 1e-9), (name, values.mean(), tolerance)


# ----------------------------------------------------------------------------- raw single scores

def confidence_explained(n=240, seed=0, hidden=12):
    """Correctness follows the mean log-probability; the summed one is noisier (times a random length), the
    entropy is its negative plus noise, P(True) is noise; every layer holds the log-probability."""
    rng = np.random.default_rng(seed)
    logprob = rng.normal(-1.5, 1.0, n)
    correct = rng.random(n) < 1 / (1 + np.exp(-4 * (logprob + 1.5)))
    length = rng.integers(1, 20, n)
    entropy = -logprob + rng.normal(0, 1.5, n)
    p_true = rng.random(n)
    rows = rows_of(n, rng, correct, answer_logprob_mean=logprob, answer_logprob_sum=logprob * length,
                   first_token_entropy=entropy, p_true=p_true)
    direction = rng.normal(size=hidden)
    features = {f"layer_{i}": rng.normal(size=(n, hidden)) + np.outer(logprob, direction) for i in range(3)}
    return features, rows, correct, {"answer_logprob_mean": logprob, "answer_logprob_sum": logprob * length,
                                     "first_token_entropy": entropy, "p_true": p_true}


def test_a_raw_confidence_score_that_explains_correctness_is_the_baseline():
    features, rows, y, scores = confidence_explained()
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1)
    assert max(v.auroc for v in res.layers.values()) > 0.75          # the layers do predict correctness
    assert res.verdict == NO_EVIDENCE and res.best_control == "answer_logprob_mean"
    orientation = {"answer_logprob_mean": 1, "answer_logprob_sum": 1, "first_token_entropy": -1, "p_true": 1}
    for name, values in scores.items():                # the raw score's AUROC, oriented by definition
        c = res.controls[name]
        assert c.scoring == "raw" and c.orientation == orientation[name] and c.accuracy is None
        assert c.auroc == pytest.approx(roc_auc_score(y, orientation[name] * values), abs=1e-12)
        lo, hi = c.auroc_ci
        assert lo <= c.auroc <= hi
    assert res.controls["first_token_entropy"].auroc > 0.6                # oriented: higher entropy = wrong
    assert res.controls["output_confidence"].scoring == "fitted"          # a combination is fitted
    assert res.raw_controls == ["answer_logprob_mean", "answer_logprob_sum", "first_token_entropy", "p_true"]
    v = verdict(res)
    assert v.layer is None and v.headline.startswith(NO_EVIDENCE) and "answer_logprob_mean" in v.headline
    assert "best control answer_logprob_mean, output side, raw score: AUROC" in v.baseline
    text = probe_text(res)
    assert "raw (higher = correct)" in text and "raw (lower = correct)" in text


def test_a_multi_class_target_fits_the_single_scores_and_says_so():
    features, rows, _, _ = confidence_explained(n=160)
    for i, r in enumerate(rows):
        r["difficulty"] = ("easy", "medium", "hard")[i % 3]
    res = probe_features({"layer_0": features["layer_0"]}, rows, target="difficulty", n_bootstrap=1000, cv_seeds=1)
    assert res.raw_controls == [] and res.controls["answer_logprob_mean"].scoring == "fitted"
    assert any("fitted" in n and "'correct' only" in n for n in res.notes)


def test_raw_score_on_a_test_run_is_its_raw_auroc_there():
    features, rows, _, _ = confidence_explained(n=160, seed=1)
    test_features, test_rows, y_test, test_scores = confidence_explained(n=120, seed=2)
    for r in test_rows:                 # other questions: neither their ids nor their texts are the run's
        r["id"], r["question"] = "t" + r["id"], "test " + r["question"]
    res = probe_features(features, rows, test_features=test_features, test_rows=test_rows, n_bootstrap=1000,
                         cv_seeds=1)
    c = res.test_run.controls["answer_logprob_mean"]
    assert c.scoring == "raw" and c.auroc == pytest.approx(roc_auc_score(y_test, test_scores["answer_logprob_mean"]))


# ----------------------------------------------------------------------------- the answer's own tokens

ANSWERS = ["Paris", "Rome", "Lima", "Oslo", "Cairo", "Quito", "Bern", "Seoul"]


def answer_identity(n=240, seed=0, hidden=16, beyond=0.0):
    """Correctness decided by which answer the model wrote (good answers right 85% of the time, bad ones 15%);
    the embedding at the answer is that token's vector; every later layer copies it (a random linear map) plus
    noise; with `beyond`, layer_2 also holds correctness itself (+-beyond along a direction)."""
    rng = np.random.default_rng(seed)
    token_vec = {a: rng.normal(size=hidden) for a in ANSWERS}
    answer = [ANSWERS[k] for k in rng.integers(0, len(ANSWERS), n)]
    good = {"Paris", "Lima", "Cairo", "Bern"}
    correct = np.array([rng.random() < (0.85 if a in good else 0.15) for a in answer])
    E = np.array([token_vec[a] for a in answer])
    features = {}
    for k in range(3):
        X = E @ rng.normal(size=(hidden, hidden)) / np.sqrt(hidden) + 0.5 * rng.normal(size=(n, hidden))
        if k == 2 and beyond:
            d = rng.normal(size=hidden)
            X += beyond * np.outer(2 * correct - 1, d / np.linalg.norm(d))
        features[f"layer_{k}"] = X
    rows = rows_of(n, rng, correct, extracted=answer, response=[f"The answer is {a}." for a in answer])
    return features, rows, E


def test_correctness_decided_by_the_answer_token_is_no_evidence_beyond_the_answer_token_control():
    features, rows, E = answer_identity()
    res = probe_features(features, rows, answer_embedding=E, n_bootstrap=1000, cv_seeds=1)
    assert max(v.auroc for v in res.layers.values()) > 0.75
    assert res.answer_controls == ["answer_embedding", "answer_tokens"]
    assert res.verdict == NO_EVIDENCE and res.best_control in res.answer_controls
    assert {res.controls[c].side for c in res.answer_controls} == {"input"}
    v = verdict(res)
    assert v.headline.startswith(NO_EVIDENCE_ANSWER) and res.best_control in v.headline
    for name, layer in res.layers.items():           # a copy of the token holds nothing more than the token
        lo, hi = layer.embedding_gain_ci
        assert layer.embedding_gain == pytest.approx(layer.auroc - res.controls["answer_embedding"].auroc)
        assert lo <= layer.embedding_gain <= hi and lo < 0.05, name
    # without the answer-token controls the same layers would be named: the control is what stops them
    blind = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1)
    assert blind.verdict != NO_EVIDENCE and blind.answer_controls == []
    assert blind.layers["layer_0"].embedding_gain is None


def test_a_layer_that_holds_more_than_the_answer_token_is_named_with_its_gain():
    features, rows, E = answer_identity(seed=3, beyond=3.0)
    res = probe_features(features, rows, answer_embedding=E, n_bootstrap=1000, cv_seeds=1)
    assert res.verdict == "layer_2"
    gain = res.layers["layer_2"]
    assert gain.embedding_gain_ci[0] > 0 and gain.embedding_gain > 0.1
    assert "gain over answer_embedding" in probe_text(res)


def test_answer_tokens_control_reads_the_extracted_answer():
    """answer_tokens alone (no embedding given, at_answer=True): it finds the identity from the words."""
    features, rows, _ = answer_identity(seed=1)
    res = probe_features(features, rows, at_answer=True, n_bootstrap=1000, cv_seeds=1)
    assert res.answer_controls == ["answer_tokens"]
    assert any("answer_embedding control left out" in n for n in res.notes)
    assert res.controls["answer_tokens"].auroc > 0.75 and res.verdict == NO_EVIDENCE


# ----------------------------------------------------------------------------- Hewitt & Liang

def test_hewitt_liang_labels_are_a_fixed_function_of_the_input_type():
    rng = np.random.default_rng(5)
    n = 300
    answers = [ANSWERS[k] for k in rng.integers(0, len(ANSWERS), n)]
    rows = [{"category": CATS[i % 2], "extracted": [a, a.upper() + "!", f" {a.lower()} "][i % 3]}
            for i, a in enumerate(answers)]
    y = (rng.random(n) < 0.3).astype(int)
    hl = hl_control_labels(y, rows, seed=0)
    by_type = {}
    for r, label in zip(rows, hl):
        by_type.setdefault(input_type(r), set()).add(int(label))
    assert len(by_type) == 2 * len(ANSWERS)                  # case and punctuation normalised away
    assert all(len(labels) == 1 for labels in by_type.values())
    order = rng.permutation(n)                                # the same label whatever the row order
    again = hl_control_labels(y[order], [rows[i] for i in order], seed=0)
    assert np.array_equal(again, hl[order])
    # not the permutation test: the labels do not follow the real ones row by row
    assert abs(np.corrcoef(hl, y)[0, 1]) < 0.3


def test_the_result_keeps_the_permutation_test_and_the_control_task_apart():
    features, rows, E = answer_identity(seed=6)
    res = probe_features(features, rows, answer_embedding=E, n_bootstrap=1000, cv_seeds=1)
    layer = res.layers["layer_0"]
    # 16 input types a probe that copies the answer token can memorise: the control task is learnable
    assert layer.hl_control_auroc is not None and layer.hl_selectivity == pytest.approx(
        layer.auroc - layer.hl_control_auroc)
    assert layer.permutation_selectivity == pytest.approx(layer.auroc - layer.permutation_auroc)
    assert layer.hl_control_auroc > 0.7


# ----------------------------------------------------------------------------- below chance

def test_a_model_below_chance_is_warned_about():
    y = np.array([0, 1] * 30)
    wrong = np.stack([y * 0.6 + 0.2, 1 - (y * 0.6 + 0.2)], axis=1)          # ranks every pair the wrong way
    fine = np.full((60, 2), 0.5)
    scores = evaluate_scores(y, {"layer_0": wrong, "layer_1": fine}, {"majority": fine}, 1000, seed=0)
    out = below_chance_warnings(scores, "")
    assert len(out) == 1 and out[0].startswith("layer layer_0 AUROC 0.00 [0.00, 0.00]: below chance")


# ----------------------------------------------------------------------------- run folders

@pytest.mark.parametrize("probed", [None, ["layer_0", "layer_1"]])
def test_probe_run_at_the_answer_reads_the_embedding_layer_as_a_control(tmp_path, probed):
    """A run folder at answer_first: the record's embedding layer joins as answer_embedding (its AUROC is the
    embeddings layer's own when that layer is probed too; read alongside the first block when it is not). The
    signal planted in the embeddings at the answer makes it the control no layer beats."""
    from position_runs import write_position_run

    from activation_eval.analysis.probe import probe_run
    run, truth = write_position_run(tmp_path / "run", n=120, layers=("embeddings", "layer_0", "layer_1"),
                                    plant_at="answer_first", strength=1.5)
    res = probe_run(run, layers=probed, n_bootstrap=1000, cv_seeds=1)
    assert res.position == "answer_first" and res.answer_controls[0] == "answer_embedding"
    assert res.n == 120 - len(truth.left_out)
    emb = res.controls["answer_embedding"]
    assert emb.auroc > 0.8 and res.verdict == NO_EVIDENCE
    assert verdict(res).headline.startswith(NO_EVIDENCE_ANSWER)
    if probed is None:
        assert emb.auroc == res.layers["embeddings"].auroc and res.layers["embeddings"].embedding_gain == 0.0
    for layer in res.layers.values():
        assert layer.embedding_gain == pytest.approx(layer.auroc - emb.auroc)
    # planted after the embeddings only: the embedding control knows nothing, layer_1 is named
    run2, _ = write_position_run(tmp_path / "run2", n=120, layers=("embeddings", "layer_0", "layer_1"),
                                 plant_at="answer_first", plant_layers=["layer_1"], strength=1.5)
    res2 = probe_run(run2, layers=probed, n_bootstrap=1000, cv_seeds=1)
    assert res2.controls["answer_embedding"].auroc < 0.7 and res2.verdict == "layer_1"
    assert res2.layers["layer_1"].embedding_gain_ci[0] > 0
    at_prompt = probe_run(run2, reduce="last_prompt", n_bootstrap=1000, cv_seeds=1)
    assert at_prompt.answer_controls == [] and "answer_embedding" not in at_prompt.controls
    if probed is None:                    # a test run: the control is fitted on the run, scored on the test run
        run3, _ = write_position_run(tmp_path / "run3", n=100, layers=("embeddings", "layer_0", "layer_1"),
                                     plant_at="answer_first", plant_layers=["layer_1"], strength=1.5, seed=7)
        # run3 asks run2's questions (the same ids and prompts): kept, in-sample, to check the control's scoring
        both = probe_run(run2, test_run=run3, n_bootstrap=1000, cv_seeds=1, keep_overlap=True)
        t = both.test_run
        assert t.controls["answer_embedding"].auroc == t.layers["embeddings"].auroc        # the same fit, scored there


def test_a_score_only_the_training_run_has_is_left_out_with_a_note():
    """--test_run where only the run has P(True): no crash, the control left out and named."""
    features, rows, _, _ = confidence_explained(n=120, seed=8)
    test_features, test_rows, _, _ = confidence_explained(n=80, seed=9)
    for r in test_rows:
        r["id"], r["question"] = "t" + r["id"], "test " + r["question"]
        del r["p_true"]
    res = probe_features(features, rows, test_features=test_features, test_rows=test_rows, n_bootstrap=1000,
                         cv_seeds=1)
    assert "p_true" not in res.controls and "p_true" not in res.test_run.controls
    assert any("p_true" in n and "test run" in n for n in res.notes + res.test_run.notes)
    assert res.controls["answer_logprob_mean"].scoring == "raw"
