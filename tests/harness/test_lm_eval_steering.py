"""Steering through the lm-eval backend (issue 28): model_args steer= / ablate= change the log-likelihoods
exactly as a hand-made hook on lm-eval's own `hf` backend does, alpha 0 is the plain run bit for bit, the
run folder says steered, and positions prompt / generated apply to generation but are refused for
log-likelihood requests."""
import json
import os

import lm_eval
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

import activation_eval.harness as harness
from activation_eval.store.directions import save_direction

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
MC_YAML = """task: steer_mc
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
"""
GEN_YAML = """task: steer_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
"""
ALPHA = 12.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("steer-tasks")
    mc = [{"question": f"what is {i} plus {i}?", "choices": ["four", "two", str(2 * i)], "label": i % 3}
          for i in range(4)]
    gen = [{"question": f"capital of France {i}?", "answer": "Paris"} for i in range(3)]
    for name, rows in (("mc", mc), ("gen", gen)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "mc.yaml").write_text(MC_YAML.format(folder=folder))
    (folder / "gen.yaml").write_text(GEN_YAML.format(folder=folder))
    vector = torch.randn(64, generator=torch.Generator().manual_seed(5))
    return str(folder), save_direction(folder / "u.safetensors", vector), vector / vector.norm()


def _run(evaluate, model, model_args, task_dir, tasks=("steer_mc",)):
    return evaluate(model=model, model_args=model_args, tasks=list(tasks), log_samples=True,
                    task_manager=TaskManager(include_path=task_dir, include_defaults=False),
                    batch_size=2, device="cpu", bootstrap_iters=0)


def _lls(results, task="steer_mc"):
    return {(s["doc_id"], k): r[0][0] for s in results["samples"][task] for k, r in enumerate(s["resps"])}


def _ours(tiny_dir, out, task_dir, tasks=("steer_mc",), **steer):
    args = {"pretrained": tiny_dir, "dtype": "float32", "output_dir": str(out), "capture_activations": False, **steer}
    return _run(harness.simple_evaluate, "activation-eval", args, task_dir, tasks)


def test_steered_log_likelihoods_equal_a_hand_made_hook_and_alpha_zero_is_plain(tiny_dir, setup, tmp_path):
    task_dir, path, u = setup
    plain = _ours(tiny_dir, tmp_path / "plain", task_dir)
    zero = _ours(tiny_dir, tmp_path / "zero", task_dir, steer=path, steer_layer=1, steer_alpha=0)
    steered = _ours(tiny_dir, tmp_path / "steered", task_dir, steer=path, steer_layer="layer_1", steer_alpha=ALPHA)
    assert _lls(zero) == _lls(plain)                                   # bit for bit
    # the reference: lm-eval's own hf backend, the model's layer 1 edited by a hook written here
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    handle = model.model.layers[1].register_forward_hook(
        lambda m, a, out: (out[0] + ALPHA * u,) + tuple(out[1:]) if isinstance(out, tuple) else out + ALPHA * u)
    try:
        lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(tiny_dir), batch_size=2, device="cpu")
        reference = _run(lm_eval.simple_evaluate, lm, None, task_dir)
    finally:
        handle.remove()
    mine, theirs, before = _lls(steered), _lls(reference), _lls(plain)
    assert mine.keys() == theirs.keys()
    assert all(abs(mine[k] - theirs[k]) < 1e-4 for k in mine)
    assert all(abs(mine[k] - before[k]) > 1e-3 for k in mine)
    # the folder says so: run_config, summary, every row
    folder = tmp_path / "steered"
    config = json.loads((folder / "run_config.json").read_text())
    [entry] = config["interventions"]
    assert (entry["kind"], entry["layer"], entry["alpha"], entry["positions"]) == ("add", "layer_1", ALPHA, "all")
    assert entry["direction_source"] == os.path.abspath(path)
    assert json.loads((folder / "summary.json").read_text())["interventions"] == [entry]
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["interventions"] == [entry] for r in rows)
    plain_rows = (tmp_path / "plain" / "results.jsonl").read_text()
    assert "interventions" not in plain_rows
    assert json.loads((tmp_path / "plain" / "run_config.json").read_text())["interventions"] == []


def test_positions_apply_to_generation_and_are_refused_for_log_likelihoods(tiny_dir, setup, tmp_path):
    task_dir, path, _ = setup
    steer = {"steer": path, "steer_layer": 1, "steer_alpha": 30.0}
    plain = _ours(tiny_dir, tmp_path / "p", task_dir, ("steer_gen",))
    prompt_only = _ours(tiny_dir, tmp_path / "g", task_dir, ("steer_gen",), intervention_positions="prompt", **steer)
    texts = [s["resps"] for s in plain["samples"]["steer_gen"]]
    assert [s["resps"] for s in prompt_only["samples"]["steer_gen"]] != texts
    rows = [json.loads(line) for line in (tmp_path / "g" / "results.jsonl").read_text().splitlines()]
    assert all(r["interventions"][0]["positions"] == "prompt" for r in rows)
    with pytest.raises(ValueError, match="intervention_positions=generated applies to generate_until"):
        _ours(tiny_dir, tmp_path / "m", task_dir, intervention_positions="generated", **steer)


def test_bad_steering_args_are_refused_before_anything_is_written(tiny_dir, setup, tmp_path):
    _, path, _ = setup
    cases = [({"steer": path, "steer_layer": 1}, "add steer_alpha="),
             ({"steer": str(tmp_path / "nope.npy"), "steer_layer": 1, "steer_alpha": 1}, "no such file"),
             ({"steer": path, "steer_layer": 9, "steer_alpha": 1}, "steer_layer / ablate_layer"),
             ({"ablate": path}, "ablate_layer"),
             ({"intervention_positions": "middle"}, "intervention_positions must be one of")]
    for i, (args, words) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        with pytest.raises(ValueError, match=words):
            harness.ActivationEvalLM(pretrained=tiny_dir, output_dir=str(out), dtype="float32", device="cpu", **args)
        assert not (out / "run_config.json").exists()
