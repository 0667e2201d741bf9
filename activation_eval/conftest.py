"""Doctest setup: the docstrings' examples run for real (`pytest --doctest-modules activation_eval`).

The examples name run folders as a reader would type them: "runs/r1", "results/run1". For each
doctest the working directory is a fresh temporary folder holding copies of the small real run
folders (and the model folder) that its examples name, copied from ones made once per session by
real runs: the eval CLI (what main.py runs) on the built-in benchmark, with a tiny random llama
built from tests/helpers.py's config (hidden size 64, nothing downloaded) but with the default
model's 30 layers, so that the layer names the examples use (layer_5, layer_20, layer_29) exist.
Each example may write there freely; nothing outside it is touched.

Example folders (EXAMPLE_PATHS):
    runs/r1           6 questions (geo-001 .. geo-006), generated answers, --capture_activations,
                      pickle records (the default format): activations/geo-001.pkl, ...
    results/run1      the same run with --activation_format safetensors: activations/geo-001.safetensors
    results/mc        12 multiple-choice questions (--shuffle --limit 12) scored by log-likelihood in the
                      default (mmlu) style; which of them are correct depends on the random weights, but
                      each class (correct / not) has at least 2 (checked here: a probe needs both);
                      --positions last_prompt (what probes, the lens and exports read), safetensors records
    models/tiny-llama the 30-layer model of those runs (their run_config.json names it)
    tasks             a local lm-eval task for the harness/ examples (TaskManager(include_path="tasks",
                      include_defaults=False): only these tasks, not indexing lm-eval's thousands):
                      tasks/tiny_mc.yaml, multiple_choice on tasks/tiny_mc.jsonl, the built-in
                      benchmark's first 8 multiple-choice questions (nothing downloaded)

Names every doctest can use (doctest_namespace, made once per session, copied per doctest):
    model, tok (also `tokenizer`)   a tiny random 3-layer llama and its byte-level BPE tokenizer
                                    (tests/helpers.py's tiny_model and make_tokenizer)
    rows                            the first 6 rows of the built-in benchmark, normalized
    record                          that model's record of one prompt, every layer captured

The test suite's own fixtures live in tests/conftest.py; this file only serves doctests. It is
only loaded by pytest (a plain `import activation_eval` never imports it), and holds no examples.
"""
import copy
import json
import os
import re
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_QUESTIONS = 6
EXAMPLE_LAYERS = 30  # as SmolLM2-135M-Instruct, the offline default model
EXAMPLE_MODEL = "models/tiny-llama"
EXAMPLE_RUNS = {
    "runs/r1": ["--limit", EXAMPLE_QUESTIONS, "--activation_format", "pkl"],
    "results/run1": ["--limit", EXAMPLE_QUESTIONS, "--activation_format", "safetensors"],
    "results/mc": ["--limit", 12, "--shuffle", "--mc_scoring", "loglikelihood", "--positions", "last_prompt",
                   "--activation_format", "safetensors"],
}
EXAMPLE_TASKS = "tasks"
EXAMPLE_PATHS = [*EXAMPLE_RUNS, EXAMPLE_MODEL, EXAMPLE_TASKS]
MIN_PER_CLASS = 2   # results/mc: the probe example's cross-validation needs both classes
TASK_QUESTIONS = 8
TASK_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: tasks/tiny_mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
"""
NAMESPACE = ("model", "tok", "tokenizer", "rows", "record")
# one intra-op torch thread (set before torch loads, as tests/conftest.py does): the examples' models are tiny, and
# on a busy machine OpenMP threads waiting on each other made the doctests 2.5 times slower (122 s -> 49 s here)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _helpers():
    """tests/helpers.py as a module (it is not part of the package)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import helpers
    finally:
        sys.path.remove(os.path.join(ROOT, "tests"))
    return helpers


@pytest.fixture(scope="session")
def example_runs(tmp_path_factory):
    """A folder holding EXAMPLE_PATHS: the model, and each run made by a real run of it (once per session)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a doctest never reaches a hub
    helpers = _helpers()
    import torch
    from transformers import AutoModelForCausalLM
    root = tmp_path_factory.mktemp("doctest-runs") / "work"
    tokenizer = helpers.make_tokenizer(chat_template=True)
    config = helpers.tiny_config("llama", len(tokenizer))
    config.num_hidden_layers = EXAMPLE_LAYERS
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model_dir = root / EXAMPLE_MODEL
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for name, flags in EXAMPLE_RUNS.items():
        status = helpers.run_main("--model", model_dir, "--device", "cpu", "--max_new_tokens", 4, "--capture_activations",
                                  *flags, "--output_dir", root / name)    # on the CPU: the same numbers on any machine
        if status != 0:
            raise RuntimeError(f"the example run {name} failed (exit {status}): see the output above")
    _check_both_classes(root / "results/mc")
    _write_task(root / EXAMPLE_TASKS)
    return root


def _check_both_classes(run_dir):
    """results/mc must hold at least MIN_PER_CLASS correct and incorrect questions (the probe example)."""
    from activation_eval.store.run_reader import RunReader
    verdicts = [row["correct"] for row in RunReader(str(run_dir)).rows]
    counts = {"correct": verdicts.count(True), "incorrect": verdicts.count(False)}
    if min(counts.values()) < MIN_PER_CLASS:
        raise RuntimeError(f"the example run results/mc has {counts}: the probe example needs at least {MIN_PER_CLASS} "
                           f"of each; change its flags in EXAMPLE_RUNS (e.g. --limit, or --mc_style cloze)")


def _write_task(folder):
    """The local lm-eval task tiny_mc (a YAML and its jsonl, the data path relative to the working directory)."""
    from activation_eval.eval.benchmark import load_benchmark
    from activation_eval.eval.multiple_choice import has_choices
    rows = [row for row in load_benchmark() if has_choices(row)][:TASK_QUESTIONS]
    folder.mkdir(parents=True)
    with open(folder / "tiny_mc.jsonl", "w") as f:
        for row in rows:
            label = "ABCDEFGHIJ".index(row["answer"][0])
            f.write(json.dumps({"question": row["question"], "choices": row["choices"], "label": label}) + "\n")
    (folder / "tiny_mc.yaml").write_text(TASK_YAML)


@pytest.fixture(scope="session")
def example_objects():
    """The objects of NAMESPACE (made once: a doctest gets copies of `rows` and `record`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    helpers = _helpers()
    from activation_eval.capture.generation import CaptureSettings, GenerationSettings, generate_records
    from activation_eval.eval.benchmark import load_benchmark
    tok = helpers.make_tokenizer()
    model, _ = helpers.tiny_model("llama", tok)
    rows = load_benchmark()[:EXAMPLE_QUESTIONS]
    record = generate_records(model, tok, ["What is the capital of France?"], GenerationSettings(max_new_tokens=4),
                              CaptureSettings())[0]
    return {"model": model, "tok": tok, "tokenizer": tok, "rows": rows, "record": record}


@pytest.fixture(autouse=True)
def _doctests_run_beside_example_runs(request, monkeypatch):
    """Doctests only: chdir into a fresh temporary folder holding copies of the EXAMPLE_PATHS its
    examples name, and put the NAMESPACE names they use into their globals (each made only when
    some doctest needs it)."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    workdir = request.getfixturevalue("tmp_path") / "work"
    workdir.mkdir()
    source = "".join(example.source for example in request.node.dtest.examples)
    named = [name for name in EXAMPLE_PATHS if name in source]
    if named:
        base = request.getfixturevalue("example_runs")
        for name in named:
            shutil.copytree(base / name, workdir / name, symlinks=True)
    namespace = request.getfixturevalue("doctest_namespace")      # one dict for the session
    for name in NAMESPACE:
        if re.search(rf"\b{name}\b", source):
            value = request.getfixturevalue("example_objects")[name]
            namespace[name] = copy.deepcopy(value) if name in ("rows", "record") else value
        else:
            namespace.pop(name, None)           # a module's own global of that name stays visible
    monkeypatch.chdir(workdir)
