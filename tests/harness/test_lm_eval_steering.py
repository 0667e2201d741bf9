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


def _split_reference(model, lm, context, continuation, u, alpha, positions):
    """log p(continuation | context) from one forward of lm-eval's own token split (HFLM._encode_pair), the
    edit added by a hook written here at the prompt's columns or the continuation's."""
    ctx, cont = lm._encode_pair(context, continuation)
    fed = (ctx + cont)[:-1]
    mask = torch.zeros(len(fed), 1)
    mask[len(ctx):] = 1.0                              # the continuation's columns: "generated"
    mask = mask if positions == "generated" else 1.0 - mask
    handle = model.model.layers[1].register_forward_hook(
        lambda m, a, out: (out[0] + alpha * mask * u,) + tuple(out[1:]) if isinstance(out, tuple)
        else out + alpha * mask * u)
    try:
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([fed])).logits[0].double(), -1)
    finally:
        handle.remove()
    return sum(float(logprobs[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_log_likelihood_positions_split_context_and_continuation(tiny_dir, setup, tmp_path, positions):
    task_dir, path, u = setup
    results = _ours(tiny_dir, tmp_path / positions, task_dir, steer=path, steer_layer=1, steer_alpha=ALPHA,
                    intervention_positions=positions)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(tiny_dir), batch_size=1, device="cpu")
    plain = _lls(_ours(tiny_dir, tmp_path / "plain", task_dir))
    moved = []
    for sample in results["samples"]["steer_mc"]:
        for k, (args, resp) in enumerate(zip(sample["arguments"], sample["resps"])):
            context, continuation = args[0], args[1]
            want = _split_reference(model, lm, context, continuation, u, ALPHA, positions)
            assert resp[0][0] == pytest.approx(want, abs=1e-4)
            moved.append(abs(resp[0][0] - plain[(sample["doc_id"], k)]) > 1e-4)
    # prompt: every score moves; generated: those of continuations of several tokens (one token is never fed)
    assert all(moved) if positions == "prompt" else any(moved) and not all(moved)


def test_positions_apply_to_generation(tiny_dir, setup, tmp_path):
    task_dir, path, _ = setup
    steer = {"steer": path, "steer_layer": 1, "steer_alpha": 30.0}
    plain = _ours(tiny_dir, tmp_path / "p", task_dir, ("steer_gen",))
    prompt_only = _ours(tiny_dir, tmp_path / "g", task_dir, ("steer_gen",), intervention_positions="prompt", **steer)
    texts = [s["resps"] for s in plain["samples"]["steer_gen"]]
    assert [s["resps"] for s in prompt_only["samples"]["steer_gen"]] != texts
    rows = [json.loads(line) for line in (tmp_path / "g" / "results.jsonl").read_text().splitlines()]
    assert all(r["interventions"][0]["positions"] == "prompt" for r in rows)


def test_rolling_log_likelihoods_refuse_split_positions(llama):
    from activation_eval.capture.intervene import Interventions, steer
    from activation_eval.harness import steering
    edits = Interventions(llama[0], [steer(torch.ones(64), 1, 2.0, positions="generated")])
    with pytest.raises(ValueError, match="loglikelihood_rolling"):
        with steering.scoring(edits, torch.zeros(1, 3, dtype=torch.long), None):
            pass
    assert steering.row_starts(torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]]), {(5, 6, 7): 2, (5, 6): 1}) == [2, 1]


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
