"""A folder of several tasks is probed stratified by task by default (issue 27 item 4), and says so.

Synthetic lm-eval-shaped folder: task A answers 80% correctly, task B 20%, and the only layer holds
the task and nothing else. Pooled, the task "predicts" correctness (AUROC about 0.8: a confound);
within a task it carries nothing (0.5). The reference is sklearn's roc_auc_score per task, pooled by pairs.
"""
import json
import os

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import analyze_activations as aa
from activation_eval.analysis.probe import probe_run
from activation_eval.analysis.probe.strata import probe_strata
from activation_eval.store.records import save_activations

N_PER_TASK, P = 40, 5


def write_two_task_run(root):
    rng = np.random.default_rng(0)
    rows = []
    for t, (task, rate) in enumerate((("A", 0.8), ("B", 0.2))):
        correct = rng.permutation(np.arange(N_PER_TASK) < int(rate * N_PER_TASK))
        for i in range(N_PER_TASK):
            qid = f"{task}/{i}"
            acts = rng.normal(scale=0.1, size=(1, 4)).astype(np.float32)
            acts[0, 0] += 2.0 * t                                       # the task, nothing about the answer
            rel = f"activations/{task}_{i}.pkl"
            save_activations({"prompt": "p", "response": "r", "model": "synthetic", "timestamp": "t",
                              "input_ids": torch.arange(P), "output_ids": torch.arange(1),
                              "activations": {"layer_0": torch.from_numpy(acts)}, "layer_names": ["layer_0"],
                              "positions": "last_prompt", "positions_kept": [P - 1], "num_prompt_tokens": P,
                              "num_generated_tokens": 1, "dtype": "float32",
                              "grading": {"id": qid, "correct": bool(correct[i])}}, os.path.join(root, rel))
            rows.append({"id": qid, "category": task, "question": f"{task} question {i}?", "prompt": "p",
                         "response": "r", "answer": "x", "extracted": "r", "correct": bool(correct[i]),
                         "grader": "lm-eval:exact_match", "num_prompt_tokens": P, "num_generated_tokens": 1,
                         "task": task, "activation_file": rel})
    with open(os.path.join(root, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(root, "run_config.json"), "w") as f:
        json.dump({"producer": "lm-eval", "model": "synthetic", "capture_activations": True, "positions": "last_prompt",
                   "activation_store": "files", "tasks": ["A", "B"]}, f)
    return rows


@pytest.fixture
def two_tasks(tmp_path):
    root = tmp_path / "two_tasks"
    (root / "activations").mkdir(parents=True)
    return str(root), write_two_task_run(str(root))


def test_a_folder_of_several_tasks_is_stratified_by_task(two_tasks):
    root, _ = two_tasks
    field, note = probe_strata(root)
    assert field == "category" and "2 tasks (A, B)" in note
    assert probe_strata(root, "none") == (None, None)
    assert probe_strata(root, groups="category") == (None, None)     # whole tasks held out: no strata
    one = os.path.join(os.path.dirname(root), "one")
    os.makedirs(one)
    with open(os.path.join(one, "run_config.json"), "w") as f:
        json.dump({"producer": "lm-eval", "tasks": ["A"]}, f)
    assert probe_strata(one) == (None, None)


def test_the_probe_says_it_is_stratified(two_tasks, tmp_path, capsys):
    root, _ = two_tasks
    code = aa.main(["--probe", root, "--output_dir", str(tmp_path / "plots"), "--json", "--cv_seeds", "1",
                    "--bootstrap", "1000", "--no_progress"])
    assert code == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("stratified by task: the folder holds 2 tasks (A, B)" in n for n in notes)


@pytest.mark.slow
def test_stratified_auroc_compares_answers_of_one_task(two_tasks):
    """Within a task the category is one value: its AUROC is exactly 0.5 there, and the layer (the task and
    nothing else) no better; pooled, both 'predict' correctness through the tasks' difficulty."""
    root, rows = two_tasks
    y = np.array([r["correct"] for r in rows])
    task = np.array([r["category"] for r in rows])
    pooled = roc_auc_score(y, task == "B")                     # the task as a score: far from 0.5 pooled
    assert abs(pooled - 0.5) > 0.25
    result = probe_run(root, strata="category", n_bootstrap=1000, cv_seeds=1)
    assert result.cv.strata == "category" and "within each value of 'category'" in result.cv.auroc_pairs
    assert result.controls["category"].auroc == 0.5                             # constant within each task
    assert abs(result.layers["layer_0"].auroc - 0.5) < 0.2                       # nothing within a task
    assert result.verdict == "no evidence beyond the controls"
    assert probe_run(root, n_bootstrap=1000, cv_seeds=1).cv.strata == "category"          # the default: auto
    pooled_run = probe_run(root, n_bootstrap=1000, cv_seeds=1, strata="none")
    assert pooled_run.cv.strata is None and pooled_run.controls["category"].auroc > 0.75
