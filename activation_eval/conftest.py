"""Doctest setup: the docstrings' examples run for real (`pytest --doctest-modules activation_eval/...`).

The examples name run folders as a reader would type them: "runs/r1", "results/run1". For each
doctest the working directory is a fresh temporary folder holding small real run folders at those
paths, copied from one made per session by a real run: the eval CLI (what main.py runs) on the
built-in benchmark, with a tiny random llama built from tests/helpers.py's config (hidden size 64,
nothing downloaded) but with the default model's 30 layers, so that the layer names the examples
use (layer_5, layer_20, layer_29) exist. Each example may write there freely; nothing outside it
is touched.

Example folders (EXAMPLE_RUNS):
    runs/r1        6 questions, --capture_activations, pickle records (the default format)
    results/run1   the same run with --activation_format safetensors

The test suite's own fixtures live in tests/conftest.py; this file only serves doctests. It is
only loaded by pytest (a plain `import activation_eval` never imports it).
"""
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_QUESTIONS = 6
EXAMPLE_LAYERS = 30  # as SmolLM2-135M-Instruct, the offline default model
EXAMPLE_RUNS = {"runs/r1": ["--activation_format", "pkl"], "results/run1": ["--activation_format", "safetensors"]}


@pytest.fixture(scope="session")
def example_runs(tmp_path_factory):
    """A folder holding EXAMPLE_RUNS, each made by a real run of a tiny random llama (once per session)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a doctest never reaches a hub
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        from helpers import make_tokenizer, run_main, tiny_config
    finally:
        sys.path.remove(os.path.join(ROOT, "tests"))
    import torch
    from transformers import AutoModelForCausalLM
    base = tmp_path_factory.mktemp("doctest-runs")
    tokenizer = make_tokenizer(chat_template=True)
    config = tiny_config("llama", len(tokenizer))
    config.num_hidden_layers = EXAMPLE_LAYERS
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model_dir = base / "tiny-llama"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    root = base / "work"
    for name, flags in EXAMPLE_RUNS.items():
        status = run_main("--model", model_dir, "--limit", EXAMPLE_QUESTIONS, "--max_new_tokens", 4,
                          "--capture_activations", *flags, "--output_dir", root / name)
        if status != 0:
            raise RuntimeError(f"the example run {name} failed (exit {status}): see the output above")
    return root


@pytest.fixture(autouse=True)
def _doctests_run_beside_example_runs(request, monkeypatch):
    """Doctests only: chdir into a fresh temporary folder, holding a copy of `example_runs` when the
    examples name one of them (the runs are made only when some doctest needs them)."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    workdir = request.getfixturevalue("tmp_path") / "work"
    source = "".join(example.source for example in request.node.dtest.examples)
    if any(name in source for name in EXAMPLE_RUNS):
        shutil.copytree(request.getfixturevalue("example_runs"), workdir, symlinks=True)
    else:
        workdir.mkdir()
    monkeypatch.chdir(workdir)
