"""Issue 29 through the command line: run folders whose results rows carry a 20 MB category text, or 1,000
categories, given to `analyze_activations.py --probe RUN` (--json, --transfer category) in-process.

The crafted folders are written as main.py writes them (activation shards and results.jsonl, position_runs.save_run).
References: the label rule written here from its definition (start, ellipsis, 8 hex digits of the sha256 of the
whole text), scikit-learn's roc_auc_score of a logistic regression fitted here on the diagonal's group.
"""
import hashlib
import json
import os
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image
from position_runs import save_run
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import analyze_activations as aa

HUGE = 20_000_000                   # the reported case: a category text of 20 MB


def write_run(root, categories, hidden=8, layers=3, seed=0, strength=1.5):
    """A run folder of len(categories) questions (row i's category is categories[i], correct when i is odd),
    each record holding every layer at the last prompt token; correctness planted along one direction in every
    layer, so that every group's probe transfers. -> (run folder, {layer: X [n, hidden]}, y)."""
    rng = np.random.default_rng(seed)
    names = [f"layer_{k}" for k in range(layers)]
    y = np.arange(len(categories)) % 2
    X = {name: (rng.normal(size=(len(y), hidden)) + strength * np.outer(2 * y - 1, np.eye(hidden)[0]))
         .astype(np.float32) for name in names}
    rows, records = [], []
    for i, category in enumerate(categories):
        rows.append({"id": f"q{i:05d}", "category": category, "question": f"Question {i}?", "prompt": f"Question {i}?",
                     "response": "r", "extracted": "r", "correct": bool(y[i]), "num_prompt_tokens": 5,
                     "num_generated_tokens": 3})
        records.append({"prompt": f"Question {i}?", "response": "r", "model": "synthetic", "timestamp": "t",
                        "input_ids": torch.arange(5), "output_ids": torch.arange(3),
                        "activations": {name: torch.from_numpy(X[name][i:i + 1]) for name in names},
                        "layer_names": names, "positions": "last_prompt", "positions_kept": [4],
                        "num_prompt_tokens": 5, "num_generated_tokens": 3, "dtype": "float32"})
    run = save_run(root, rows, records, store="shards", shard_questions=500, positions="last_prompt")
    return run, X, y


def expected_label(text):
    """The documented label of a text over 40 characters: its first 31 characters, an ellipsis, 8 hex digits."""
    return text[:31] + "…" + hashlib.sha256(text.encode()).hexdigest()[:8]


def run_cli(capsys, *argv):
    code = aa.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def strings(value):
    """Every string in a JSON value: its keys and its texts."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def sklearn_transfer(X, y, categories, train, test):
    """roc_auc_score on the rows of category `test` of the probe (standardized logistic regression, as
    models.make_probe("logistic")) fitted on all rows of category `train`."""
    cat = np.array(categories, dtype=object)
    g, h = cat == train, cat == test
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[g].astype(np.float64), y[g])
    return roc_auc_score(y[h], model.predict_proba(X[h].astype(np.float64))[:, 1])


@pytest.mark.slow                   # two probes of a run whose results file is 40 MB, one under tracemalloc: ~15 s
def test_a_20_mb_category_through_probe_json_and_transfer(tmp_path, capsys):
    a, b = "x" * HUGE + "a", "x" * HUGE + "b"          # the same 20 MB start: only the hash keeps them apart
    geo, math = "geography " * 100, "geography " * 99 + "arithmetic"     # kept groups: long, the same start
    categories = [a if i == 0 else b if i == 1 else (geo, math)[i % 4 < 2] for i in range(60)]
    run, X, y = write_run(tmp_path / "huge", categories)
    size = os.path.getsize(os.path.join(run, "results.jsonl"))
    assert size > 2 * HUGE
    options = ("--bootstrap", 1000, "--cv_seeds", 1, "--folds", 3)

    code, out, err = run_cli(capsys, "--probe", run, "--transfer", "category", "--json", "--output_dir",
                             tmp_path / "plots", *options)
    assert code == 0, err[-2000:]
    transfer = json.loads(out)["transfer"]
    labels = {text: expected_label(text) for text in (a, b, geo, math)}
    assert transfer["groups"] == sorted([labels[geo], labels[math]])          # the huge ones: 1 row each
    assert transfer["n"] == {labels[geo]: 30, labels[math]: 28}
    assert (transfer["n_values"], transfer["merged"], transfer["skipped_rows"], transfer["shortened"]) == (4, 2, 2, 4)
    assert labels[a] in transfer["notes"][0] and labels[b] in transfer["notes"][0]
    assert max(map(len, strings(transfer))) < 1000                  # labels, notes: no text of the rows' size
    layer = transfer["layer"]
    for i, g in enumerate((geo, math) if labels[geo] < labels[math] else (math, geo)):
        for j, h in enumerate((geo, math) if labels[geo] < labels[math] else (math, geo)):
            if i != j:
                assert transfer["auroc"][i][j] == pytest.approx(sklearn_transfer(X[layer], y, categories, g, h),
                                                                abs=1e-6)
            assert transfer["auroc"][i][j] > 0.8                    # the planted direction transfers

    tracemalloc.start()                 # (after a first run: the imports are not counted)
    try:
        code, out, err = run_cli(capsys, "--probe", run, "--json", "--output_dir", tmp_path / "plots", *options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err[-2000:]
    # the old code made fixed-width string arrays of 60 rows x 20M characters x 4 bytes (4.47 GiB each; with
    # 2 MB texts it peaked at 1.4 GiB, this code at 23 MiB); reading the folder holds the file's bytes, its
    # text and the parsed rows: a few times the file's size
    assert peak < 8 * size, f"peak {peak / 2**20:.0f} MiB for a results file of {size / 2**20:.0f} MiB"
    data = json.loads(out)
    assert data["n"] == 60 and set(data["layers"]) == {"layer_0", "layer_1", "layer_2"}
    assert max(map(len, strings(data))) < 1000                      # no row-sized text anywhere in the result
    assert "category control: 4 category text(s) longer than 40 characters one-hot encoded by their start and " \
           "a hash (bounded_label)" in data["notes"]


@pytest.mark.slow                   # a probe of 2,025 questions, a 21 x 21 transfer matrix and its heatmap: ~15 s
def test_transfer_over_1000_categories_of_a_run_folder(tmp_path, capsys):
    sizes = [30 + i for i in range(25)] + [1] * 975           # 25 groups of 30-54 rows, 975 of 1: 2,025 questions
    categories = [f"cat{k:04d}" for k, size in enumerate(sizes) for _ in range(size)]
    run, X, y = write_run(tmp_path / "many", categories, layers=2)
    code, out, err = run_cli(capsys, "--probe", run, "--transfer", "category", "--json", "--output_dir",
                             tmp_path / "plots", "--bootstrap", 1000, "--cv_seeds", 1, "--folds", 3)
    assert code == 0, err[-2000:]
    transfer = json.loads(out)["transfer"]
    kept = [f"cat{k:04d}" for k in range(5, 25)]                # the 20 largest
    assert transfer["groups"] == ["(other)", *kept]
    assert transfer["n"] == {"(other)": 30 + 31 + 32 + 33 + 34 + 975, **{f"cat{k:04d}": 30 + k for k in range(5, 25)}}
    assert (transfer["n_values"], transfer["merged"], transfer["skipped_rows"]) == (1000, 980, 0)
    assert "980 of 1000 category values merged into '(other)': 5 beyond the 20 largest, 975 with fewer than 10 rows" \
        in transfer["notes"][0]
    assert transfer["n_tested"] == transfer["n"]                    # no group over 2,000 rows: none sampled
    auroc, ci = np.array(transfer["auroc"], dtype=float), transfer["auroc_ci"]
    assert auroc.shape == (21, 21) and np.all(auroc > 0.8)           # one direction planted in every group
    assert all(lo <= auroc[i, j] <= hi for i, row in enumerate(ci) for j, (lo, hi) in enumerate(row))
    layer = transfer["layer"]
    for g, h in (("cat0005", "cat0024"), ("cat0024", "cat0013")):
        i, j = transfer["groups"].index(g), transfer["groups"].index(h)
        assert auroc[i, j] == pytest.approx(sklearn_transfer(X[layer], y, categories, g, h), abs=1e-6)
    heatmap = [p for p in json.loads(out)["plots"] if "transfer" in os.path.basename(p)]
    with Image.open(heatmap[0]) as image:                           # 1,000 groups drew a 12,832-pixel image
        assert max(image.size) < 3000, image.size
