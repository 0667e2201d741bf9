"""The analysis never pools or compares steered and unsteered runs silently (issue 28): --probe on a
steered run, --probe --test_run across a steered and a plain run, and --compare of their records say so."""
import json
import os

import pytest
import torch

from activation_eval.analysis.probe import probe_run
from activation_eval.analysis.stats import compare_files
from activation_eval.analysis.steered import run_steering, steering_notes
from activation_eval.store.directions import save_direction
from helpers import run_main


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steered-notes")
    path = save_direction(tmp / "u.safetensors", torch.randn(64, generator=torch.Generator().manual_seed(0)))
    common = ["--model", tiny_dir, "--limit", 40, "--shuffle", "--max_new_tokens", 1, "--capture_activations",
              "--layers", "embeddings,1", "--positions", "last_prompt", "--batch_size", 8]
    out = {"plain": tmp / "plain", "steered": tmp / "steered"}
    assert run_main(*common, "--output_dir", out["plain"]) == 0
    assert run_main(*common, "--output_dir", out["steered"], "--steer", path, "--steer_layer", 1,
                    "--steer_alpha", 5) == 0
    return {k: str(v) for k, v in out.items()}


def _steered_words(note):
    return "is steered (add layer_1 alpha 5.0 at all (sha " in note


def test_probe_of_a_steered_run_says_so_and_a_plain_one_does_not(runs):
    steered = probe_run(runs["steered"], layers=["layer_1"], target="category", n_bootstrap=1000, cv_seeds=1)
    assert any(_steered_words(n) and "made under that edit" in n for n in steered.notes), steered.notes
    plain = probe_run(runs["plain"], layers=["layer_1"], target="category", n_bootstrap=1000, cv_seeds=1)
    assert not any("steered" in n for n in plain.notes)


def test_test_run_across_steered_and_plain_is_compared_as_given(runs):
    result = probe_run(runs["plain"], layers=["layer_1"], target="category", n_bootstrap=1000, cv_seeds=1,
                       test_run=runs["steered"], keep_overlap=True)
    [note] = [n for n in result.notes if "compared as given" in n]
    assert "is not steered and" in note and _steered_words(note)


def test_compare_of_a_steered_and_a_plain_record(runs):
    name = sorted(os.listdir(os.path.join(runs["plain"], "activations")))[0]
    a, b = (os.path.join(runs[k], "activations", name) for k in ("steered", "plain"))
    notes = compare_files(a, b).notes
    assert any(_steered_words(n) and "B is not: compared as given" in n for n in notes), notes
    assert not any("steered" in n for n in compare_files(b, b).notes)


def test_rows_that_differ_within_a_run_are_named(runs, tmp_path):
    with open(os.path.join(runs["steered"], "results.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    rows[0].pop("interventions")                               # as if a plain row were merged into it by hand
    lists = run_steering(runs["steered"], rows)
    assert len(lists) == 2 and lists[1] == []
    assert any("2 different interventions" in n and "pooled as given" in n for n in steering_notes([("R", lists)]))
    assert run_steering(str(tmp_path)) == [[]]                  # no run_config.json: read as plain
