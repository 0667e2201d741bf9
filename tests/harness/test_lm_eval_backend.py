"""The lm-evaluation-harness backend (activation_eval/harness/, issue 22 item 1): equal to lm-eval's
`hf` backend, and a run folder the run reader reads.

Local tasks only (YAML in tmp_path with `dataset_path: json` and local jsonl files): a multiple_choice
task and a generate_until task, on the tiny random llama saved by the tiny_dir fixture, in fp32.
"""
import json
import os
import subprocess
import sys

import lm_eval  # noqa: F401  (a dependency: missing, the module fails to import; it never skips)
import pytest
import torch
from lm_eval.tasks import TaskManager  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import activation_eval.harness as harness  # noqa: E402
from activation_eval import schema  # noqa: E402
from activation_eval.store.run_reader import RunReader  # noqa: E402
from helpers import reference, rel_err  # noqa: E402

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
TASKS = ["tiny_mc", "tiny_gen"]
LAYERS = ["embeddings", 0, -1, "final_norm"]
MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    mc = [{"question": f"what is {i} plus {i}?", "choices": ["four", "two", str(2 * i), "the quick brown fox"],
           "label": i % 4} for i in range(6)]
    gen = [{"question": f"capital of France {i}?", "answer": "Paris"} for i in range(4)]
    for name, rows in (("mc", mc), ("gen", gen)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "mc.yaml").write_text(MC_YAML.format(folder=folder))
    (folder / "gen.yaml").write_text(GEN_YAML.format(folder=folder))
    return str(folder)


def _evaluate(evaluate, model, model_args, task_dir, **extra):
    return evaluate(model=model, model_args=model_args, tasks=TASKS,
                    task_manager=TaskManager(include_path=task_dir, include_defaults=False),
                    batch_size=4, device="cpu", bootstrap_iters=0, **extra)


@pytest.fixture(scope="module")
def hf_results(tiny_dir, task_dir):
    """lm-eval's own `hf` backend on the same model and tasks: the reference."""
    return _evaluate(lm_eval.simple_evaluate, "hf", {"pretrained": tiny_dir, "dtype": "float32"}, task_dir,
                     log_samples=True)


@pytest.fixture(scope="module")
def captured(tiny_dir, task_dir, tmp_path_factory):
    """Our backend with capture on (file store); the run folder and lm-eval's results (with samples)."""
    out = str(tmp_path_factory.mktemp("run") / "files")
    args = {"pretrained": tiny_dir, "dtype": "float32", "output_dir": out, "layers": LAYERS}
    return out, _evaluate(harness.simple_evaluate, "activation-eval", args, task_dir, log_samples=True)


def _by_doc(results):
    return {(task, s["doc_id"]): s for task, samples in results["samples"].items() for s in samples}


def _assert_equal_to_hf(ours, hf):
    assert ours["results"] == hf["results"]                 # every task metric identical
    theirs = _by_doc(hf)
    mine = _by_doc(ours)
    assert mine.keys() == theirs.keys()
    for key, sample in theirs.items():
        for a, b in zip(mine[key]["resps"], sample["resps"], strict=True):
            if isinstance(b[0], tuple):                       # (log-likelihood, is_greedy)
                assert abs(a[0][0] - b[0][0]) < 1e-4 and a[0][1] == b[0][1], key
            else:
                assert a == b, key                            # generated text
        assert mine[key]["filtered_resps"] == sample["filtered_resps"]


def test_equal_to_hf_with_capture(captured, hf_results):
    _assert_equal_to_hf(captured[1], hf_results)


def test_equal_to_hf_without_capture(tiny_dir, task_dir, hf_results, tmp_path):
    out = str(tmp_path / "run")
    args = {"pretrained": tiny_dir, "dtype": "float32", "output_dir": out, "capture_activations": False}
    ours = _evaluate(harness.simple_evaluate, "activation-eval", args, task_dir)
    _assert_equal_to_hf(ours, hf_results)
    reader = RunReader(out)
    assert len(reader.rows) == 10 and not reader.has_records()
    for row in reader.rows:                   # generation rows: the confidence figures, no answer positions
        generated = row["category"] == "tiny_gen"
        assert all((k in row) == generated for k in schema.CONFIDENCE_FIELDS) and "answer_positions" not in row
    assert not os.path.exists(os.path.join(out, "activations"))


def test_rows_one_per_document_with_the_tasks_metrics(captured, hf_results):
    out, results = captured
    rows = RunReader(out).rows
    samples = _by_doc(hf_results)
    assert [r["id"] for r in rows] == [f"{t}/{d}" for t, d in samples]       # one row per (task, doc_id)
    for row in rows:
        sample = samples[(row["category"], row["doc_id"])]
        metric = "acc" if row["category"] == "tiny_mc" else "exact_match"
        assert row["metric"] == metric and row["correct"] is bool(sample[metric])
        assert row["prompt"] == sample["arguments"][0][0]
        if row["category"] == "tiny_mc":
            assert row["choices"] == [a[1] for a in sample["arguments"]]
            assert row["choice_logprobs"] == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)
            assert row["answer"] == sample["target"] and row["metrics"]["acc_norm"] == sample["acc_norm"]
        else:
            assert row["response"] == sample["resps"][0][0] and row["answer"] == "Paris"
    summary = json.load(open(os.path.join(out, "summary.json")))
    # two tasks scored by different metrics: each task's figure, never one pooled "accuracy"
    assert summary["questions"] == 10 and summary["metric"] == "mixed" and summary["accuracy"] is None
    per = summary["per_category"]
    assert (per["tiny_mc"]["metric"], per["tiny_gen"]["metric"]) == ("acc", "exact_match")
    assert per["tiny_mc"]["accuracy"] == pytest.approx(hf_results["results"]["tiny_mc"]["acc,none"])
    assert per["tiny_gen"]["accuracy"] == pytest.approx(hf_results["results"]["tiny_gen"]["exact_match,none"])
    assert sum(c["correct"] for c in per.values()) == sum(r["correct"] for r in rows)
    config = json.load(open(os.path.join(out, "run_config.json")))
    assert config["producer"] == "lm-eval" and config["activation_store"] == "files"
    assert "samples" in results                                # log_samples=True was asked for: kept


def test_records_equal_output_hidden_states(captured, tiny_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    out, _ = captured
    pairs = list(RunReader(out).records())
    assert len(pairs) == 10
    for row, record in pairs:
        assert list(record["activations"]) == ["embeddings", "layer_0", "layer_2", "final_norm"]
        if row["category"] == "tiny_gen":
            ref = reference(model, record)                    # positions "all": 0 .. P+N-2
            assert record["positions_kept"] == list(range(len(record["input_ids"]) + len(record["output_ids"]) - 1))
            for name, tensor in record["activations"].items():
                assert rel_err(tensor, ref[name]) < 1e-4, (row["id"], name)
            continue
        assert len(record["requests"]) == 4                   # one block per choice, in choice order
        for req in record["requests"]:
            ctx, cont = record["input_ids"], torch.tensor(req["continuation_ids"])
            ref = reference(model, {"input_ids": ctx, "output_ids": cont})
            a, b = req["rows"]
            positions = record["positions_kept"][a:b]
            assert positions == list(range(len(ctx) - 1, len(ctx) + len(cont) - 1))   # context's last + continuation
            for name, tensor in record["activations"].items():
                assert rel_err(tensor[a:b], ref[name][positions]) < 1e-4, (row["id"], name)
        lls = [req["loglikelihood"] for req in record["requests"]]
        assert lls == pytest.approx(row["choice_logprobs"], abs=1e-9)


def test_generation_rows_carry_answer_positions_and_confidence(captured, tiny_dir):
    """As main.py's rows: answer positions that spell the filtered answer, and the confidence figures of
    the generate() call that wrote it, against one plain float64 forward (log_softmax, Categorical)."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    gen = [(row, record) for row, record in RunReader(captured[0]).records() if row["category"] == "tiny_gen"]
    assert len(gen) == 4
    for row, record in gen:
        prompt, output = record["input_ids"], record["output_ids"]
        with torch.no_grad():
            logits = model(torch.cat([prompt, output])[None]).logits[0].double()
        at = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(output))
        logprobs = torch.log_softmax(logits[at], -1).gather(-1, output[:, None])[:, 0]
        entropies = torch.distributions.Categorical(logits=logits[at]).entropy()
        assert torch.allclose(torch.tensor(record["output_logprobs"], dtype=torch.float64), logprobs, atol=1e-5, rtol=0)
        assert torch.allclose(torch.tensor(record["output_entropies"], dtype=torch.float64), entropies, atol=1e-5, rtol=0)
        if len(output) == 1:       # a one-token answer keeps no generated position (as main.py): no positions
            assert "answer_positions" not in row and row["extracted"] == ""
            span = [0]
        else:
            positions = row["answer_positions"]
            assert record["answer_positions"] == positions and positions, row["id"]
            span = [p - len(prompt) for p in positions]
            assert row["extracted"].strip() in tok.decode(output[span]).strip()      # the span spells the answer
        want = {schema.ANSWER_LOGPROB_MEAN: logprobs.mean(), schema.ANSWER_LOGPROB_SUM: logprobs.sum(),
                schema.FIRST_TOKEN_ENTROPY: entropies[0], schema.ANSWER_LOGPROB_MIN: logprobs[span].min(),
                schema.ANSWER_ENTROPY_MEAN: entropies[span].mean(), schema.ANSWER_ENTROPY_MAX: entropies[span].max()}
        for key, value in want.items():
            assert row[key] == pytest.approx(value.item(), abs=1e-5 * len(output)), (row["id"], key)


def test_shard_store_holds_the_same_records(captured, tiny_dir, task_dir, tmp_path):
    out = str(tmp_path / "shards")
    args = {"pretrained": tiny_dir, "dtype": "float32", "output_dir": out, "layers": "embeddings;0;-1;final_norm",
            "activation_store": "shards", "activation_format": "safetensors"}
    results = _evaluate(harness.simple_evaluate, "activation-eval", args, task_dir, log_samples=False)
    assert "samples" not in results                           # not asked for: lm-eval's output unchanged
    reader = RunReader(out)
    assert reader.store == "shards"
    files = {row["id"]: record for row, record in RunReader(captured[0]).records()}
    for row, record in reader.records():
        other = files.pop(row["id"])
        assert record["positions_kept"] == other["positions_kept"]
        for name, tensor in record["activations"].items():
            assert torch.equal(tensor, other["activations"][name]), (row["id"], name)
    assert not files


def test_plain_lm_eval_simple_evaluate_then_write_run(tiny_dir, task_dir, tmp_path, hf_results):
    out = str(tmp_path / "run")
    args = f"pretrained={tiny_dir},dtype=float32,output_dir={out},layers=0;-1,positions=last_prompt"
    results = _evaluate(lm_eval.simple_evaluate, "activation-eval", args, task_dir)
    assert results["results"] == hf_results["results"]
    # claimed when the model was built (run_config.json names the producer); no row until write_run
    assert json.load(open(os.path.join(out, "run_config.json")))["producer"] == "lm-eval" and harness.cli.UNWRITTEN
    assert not os.path.exists(os.path.join(out, "results.jsonl"))
    harness.write_run(results)
    assert not harness.cli.UNWRITTEN                          # the model (and its captures) let go
    records = dict((row["id"], rec) for row, rec in RunReader(out).records())
    assert len(records) == 10
    mc = records["tiny_mc/0"]
    assert mc["positions_kept"] == [len(mc["input_ids"]) - 1] * 4     # last_prompt: the context's last token
    assert list(mc["activations"]) == ["layer_0", "layer_2"]


def test_refuses_bad_model_args_before_loading(tmp_path):
    with pytest.raises(ValueError, match="output_dir=FOLDER"):
        harness.ActivationEvalLM(pretrained="no-such-model")
    with pytest.raises(ValueError, match="activation_store must be one of files, shards"):
        harness.ActivationEvalLM(pretrained="no-such-model", output_dir=str(tmp_path / "r"), activation_store="x")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.jsonl").write_text("")
    with pytest.raises(ValueError, match="already exists and is not empty; pass resume=true"):
        harness.ActivationEvalLM(pretrained="no-such-model", output_dir=str(tmp_path / "r"))


def test_importing_the_package_does_not_import_lm_eval():
    code = "import sys, activation_eval; sys.exit('lm_eval' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_console_script_is_lm_evals_cli_with_the_model(tiny_dir, task_dir, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "activation-eval-lm-eval")
    assert os.path.exists(exe), "activation-eval-lm-eval is not installed: run make setup"
    out = tmp_path / "run"
    done = subprocess.run([exe, "run", "--model", "activation-eval", "--tasks", "tiny_mc", "--include_path", task_dir,
                           "--model_args", f"pretrained={tiny_dir},dtype=float32,output_dir={out},"
                           f"layers=[0,-1],activation_store=shards", "--limit", "3", "--batch_size", "2", "--device", "cpu",
                           "--output_path", str(tmp_path / "lm-eval"), "--log_samples"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tiny_mc" in done.stdout                           # lm-eval's own results table
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "lm-eval") for f in files]
    assert any(os.path.basename(p).startswith("results_") for p in written)
    assert any(os.path.basename(p).startswith("samples_tiny_mc") for p in written)
    reader = RunReader(out)
    assert [r["id"] for r in reader.rows] == ["tiny_mc/0", "tiny_mc/1", "tiny_mc/2"]
    assert len(list(reader.records())) == 3


# what `activation-eval-lm-eval run` does (its logging, then our simple_evaluate), with a TaskManager of the local
# tasks only: lm-eval's command line indexes its thousands of task files first, 10-20 s in each process, which the
# console script's own test (above) pays once
DATA_PARALLEL = """import sys
from lm_eval.tasks import TaskManager
from lm_eval.utils import setup_logging

import activation_eval.harness as harness

setup_logging()
task_dir, model_args = sys.argv[1:]
harness.simple_evaluate(model="activation-eval", model_args=model_args, tasks={tasks!r}, batch_size=4, device="cpu",
                        limit=5, task_manager=TaskManager(include_path=task_dir, include_defaults=False))
"""


@pytest.mark.slow
def test_two_processes_write_the_one_process_run(captured, tiny_dir, task_dir, tmp_path):
    """lm-eval's data parallelism (torchrun, 2 CPU processes): each process writes its own documents
    into the one run folder, process 0 merges; rows and records equal the one-process run. --limit 5
    gives the processes 3 and 2 documents of tiny_mc, so lm-eval pads one with a repeated request."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "run"
    script = tmp_path / "data_parallel.py"
    script.write_text(DATA_PARALLEL.format(tasks=TASKS))
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), task_dir,
                           f"pretrained={tiny_dir},dtype=float32,output_dir={out},layers=embeddings;0;-1;final_norm"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Building contexts for tiny_mc on rank 1" in done.stderr       # both processes answered documents
    one = RunReader(captured[0])
    two = RunReader(str(out))
    assert not os.path.exists(out / "shards")                              # merged and removed
    expected = [r for r in one.rows if r["category"] == "tiny_gen" or r["doc_id"] < 5]
    assert [r["id"] for r in two.rows] == [r["id"] for r in expected]
    for mine, theirs in zip(two.rows, expected):       # every field; log-likelihoods of other batches to 1e-4
        for key in ("choice_logprobs", *schema.CONFIDENCE_FIELDS):
            assert mine.get(key) == pytest.approx(theirs.get(key), abs=1e-4), (mine["id"], key)
        mine, theirs = ({k: v for k, v in r.items() if k not in ("choice_logprobs", *schema.CONFIDENCE_FIELDS)}
                        for r in (mine, theirs))
        assert mine == theirs, {k: (mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()
                                if mine.get(k) != theirs.get(k)}
    records = {row["id"]: record for row, record in one.records()}
    pairs = list(two.records())
    assert len(pairs) == len(expected)
    for row, record in pairs:
        other = records[row["id"]]
        assert record.keys() == other.keys()
        for a, b in zip(record.get("requests", []), other.get("requests", []), strict=True):
            assert a.get("loglikelihood") == pytest.approx(b.get("loglikelihood"), abs=1e-4)
            assert {**a, "loglikelihood": None} == {**b, "loglikelihood": None}
        floats = {"output_logprobs", "output_entropies", *schema.CONFIDENCE_FIELDS}     # other batches: to 1e-4
        for key in floats & record.keys():
            assert record[key] == pytest.approx(other[key], abs=1e-4), (row["id"], key)
        for key in record.keys() - {"activations", "timestamp", "requests"} - floats:
            same = torch.equal(record[key], other[key]) if torch.is_tensor(record[key]) else record[key] == other[key]
            assert same, (row["id"], key)
        for name, tensor in record["activations"].items():          # other batches: equal up to float rounding
            assert rel_err(tensor, other["activations"][name]) < 1e-5, (row["id"], name)
    summary = json.load(open(out / "summary.json"))
    assert summary["questions"] == 9
    assert sum(c["correct"] for c in summary["per_category"].values()) == sum(bool(r["correct"]) for r in expected)


def test_confidence_false_keeps_the_answers_and_positions_without_the_figures(captured, tiny_dir, task_dir, tmp_path):
    out = str(tmp_path / "run")
    args = {"pretrained": tiny_dir, "dtype": "float32", "output_dir": out, "layers": "0", "confidence": "false"}
    results = _evaluate(harness.simple_evaluate, "activation-eval", args, task_dir)
    assert results["results"] == captured[1]["results"]
    with_figures = {row["id"]: row for row in RunReader(captured[0]).rows}
    for row, record in RunReader(out).records():
        assert not any(k in row or k in record for k in (*schema.CONFIDENCE_FIELDS, "output_logprobs"))
        assert row.get("answer_positions") == with_figures[row["id"]].get("answer_positions")


def test_the_default_model_is_taken_by_name(tiny_dir, task_dir, tmp_path, monkeypatch):
    """pretrained=SmolLM2-135M-Instruct loads the offline default model's folder (here stood in for by the tiny
    model), as main.py and the Inspect provider do, and the run folder names the model as it was asked for."""
    from activation_eval import models
    asked = []
    monkeypatch.setattr(models, "default_model_dir", lambda: asked.append(1) or tiny_dir)
    out = str(tmp_path / "run")
    _evaluate(harness.simple_evaluate, "activation-eval",
              {"pretrained": models.DEFAULT_MODEL, "dtype": "float32", "output_dir": out, "capture_activations": False},
              task_dir)
    from activation_eval.store.run_folder import read_run_config
    assert asked and read_run_config(out)["model"] == models.DEFAULT_MODEL
    assert json.load(open(os.path.join(out, "summary.json")))["model"] == models.DEFAULT_MODEL
