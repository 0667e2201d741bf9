"""The Inspect provider takes main.py's steering arguments as -M (issue 28): its answers are transformers'
greedy answers under the same edit made by a hook written here, and the run folder says steered."""
import json

import pytest
import torch
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import match
from inspect_ai.solver import generate
from transformers import AutoModelForCausalLM, AutoTokenizer

from activation_eval.store.directions import save_direction

ALPHA, MAX_TOKENS = 25.0, 5
QUESTIONS = [f"what is {i} plus {i}?" for i in range(3)]


def hooked_greedy(model, tok, text, u, alpha=ALPHA):
    chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    ids = tok(chat, add_special_tokens=False, return_tensors="pt")["input_ids"]
    handle = model.model.layers[1].register_forward_hook(
        lambda m, a, out: (out[0] + alpha * u,) + tuple(out[1:]) if isinstance(out, tuple) else out + alpha * u)
    try:
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        handle.remove()
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_steered_inspect_run_equals_a_hooked_generate_and_says_so(tiny_dir, tmp_path):
    vector = torch.randn(64, generator=torch.Generator().manual_seed(2))
    path = save_direction(tmp_path / "u.safetensors", vector)
    task = Task(dataset=MemoryDataset([Sample(input=q, target="x", id=i) for i, q in enumerate(QUESTIONS)]),
                solver=generate(), scorer=match(), name="tiny_steer")
    out = tmp_path / "run"
    logs = inspect_eval([task], model=f"activation-eval/{tiny_dir}", display="none", log_dir=str(tmp_path / "logs"),
                        max_tokens=MAX_TOKENS, model_args={"output_dir": str(out), "dtype": "float32", "device": "cpu",
                                                           "capture_activations": False, "steer": path,
                                                           "steer_layer": "1", "steer_alpha": str(ALPHA)})
    assert [log.status for log in logs] == ["success"], [log.error for log in logs]
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    u = vector / vector.norm()
    assert [r["response"] for r in rows] == [hooked_greedy(model, tok, q, u) for q in QUESTIONS]
    assert [r["response"] for r in rows] != [hooked_greedy(model, tok, q, u, alpha=0.0) for q in QUESTIONS]
    [entry] = json.loads((out / "run_config.json").read_text())["interventions"]
    assert (entry["kind"], entry["layer"], entry["alpha"]) == ("add", "layer_1", pytest.approx(ALPHA))
    assert all(r["interventions"] == [entry] for r in rows)
    assert json.loads((out / "summary.json").read_text())["interventions"] == [entry]
