"""Sample-based baselines in the probe (issue 27, item 7): a run with several samples per question gets
semantic entropy, self-consistency and EigenScore as raw controls, scored as sklearn scores the oriented
raw score; EigenScore's vectors are the middle layer at the last token, checked against the records."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from activation_eval import schema
from activation_eval.analysis.probe.run import _RunLayers, _with_sample_embeddings, probe_features
from activation_eval.analysis.probe.sample_scores import answer_key, eigenscore, semantic_entropy
from activation_eval.store.run_reader import RunReader, load_activations
from helpers import run_main


def sampled(n_questions=60, k=4, seed=0):
    """Questions answered k times: a 'stable' question's samples agree and are right 80% of the time, an
    'unstable' one's disagree and are right 20%: agreement explains correctness, the layers are noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_questions):
        stable = q % 2 == 0
        answers = ["paris"] * k if stable else [f"city{j}" for j in rng.integers(0, 3, k)]
        for s, a in enumerate(answers):
            rows.append({"id": f"q{q}", "sample": s, "category": "geo", "question": f"question {q}",
                         "extracted": a, "response": a, "num_prompt_tokens": 10, "num_generated_tokens": 3,
                         "correct": bool(rng.random() < (0.8 if stable else 0.2))})
    features = {f"layer_{i}": rng.normal(size=(len(rows), 8)) for i in range(2)}
    return features, rows


def test_sample_scores_are_raw_controls_and_explain_what_they_explain():
    features, rows = sampled()
    emb = np.random.default_rng(1).normal(size=(len(rows), 16))
    res = probe_features(features, rows, n_bootstrap=1000, cv_seeds=1, sample_embeddings=emb)
    y = np.array([r["correct"] for r in rows])
    by_q = {}
    for i, r in enumerate(rows):
        by_q.setdefault(r["id"], []).append(i)
    se = np.empty(len(rows))
    eig = np.empty(len(rows))
    for members in by_q.values():
        se[members] = semantic_entropy([answer_key(rows[i]) for i in members])
        eig[members] = eigenscore(emb[members])
    for name, score in ((schema.SEMANTIC_ENTROPY, -se), (schema.EIGENSCORE, -eig)):
        control = res.controls[name]
        assert control.scoring == "raw"
        assert control.auroc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert res.controls[schema.SELF_CONSISTENCY].auroc > 0.75
    assert res.verdict == "no evidence beyond the controls"
    assert res.best_control in (schema.SEMANTIC_ENTROPY, schema.SELF_CONSISTENCY)


@pytest.mark.slow
def test_a_sampled_runs_eigenscore_vectors_are_the_middle_layer_at_the_last_token(tiny_dir, tmp_path):
    run = tmp_path / "run"
    assert run_main("--model", tiny_dir, "--limit", 3, "--max_new_tokens", 4, "--temperature", 1.0,
                    "--num_samples", 3, "--capture_activations", "--positions", "all", "--output_dir", run) == 0
    layers = _RunLayers(str(run), ["layer_0"], "last_prompt", None, False, ("run", None))
    first = next(_with_sample_embeddings(iter(layers), str(run)))
    rows = RunReader(str(run)).rows
    layers = [name for name in load_activations(str(run / rows[0]["activation_file"]))["activations"]
              if name != "embeddings"]
    middle = layers[len(layers) // 2]
    for row, vector in zip(first.rows, first.sample_embeddings):
        record = load_activations(str(run / row["activation_file"]))
        np.testing.assert_array_equal(vector, np.asarray(record["activations"][middle], dtype=vector.dtype)[-1])
