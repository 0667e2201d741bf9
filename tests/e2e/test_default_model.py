"""The real offline default model (SmolLM2-135M-Instruct): slower end-to-end checks."""
import json
import os

import pytest

import main
import utils
from activation_eval.capture.layers import layer_names
from activation_eval.models import default_model_dir, load_model
from helpers import reference, rel_err

pytestmark = pytest.mark.slow  # the real model: loading and converting it takes tens of seconds


def test_default_model_loads_offline_from_its_converted_folder():
    model, tok = load_model()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert tok.chat_template and tok.padding_side == "left"
    assert os.path.basename(default_model_dir()).startswith("SmolLM2-135M-Instruct-")      # -<content key>
    assert layer_names(model)[-1] == "final_norm" and len(layer_names(model)) == 32


def test_notebook_call_answers_and_matches_output_hidden_states():
    response, data = utils.generate_inference_with_activations(
        "What is the capital of France?", layers_to_capture=["embeddings", 0, 14, -1, "final_norm"],
        max_new_tokens=12)
    assert "Paris" in response
    model, _ = load_model()
    ref = reference(model, data)
    for name, tensor in data["activations"].items():
        assert tensor.shape == ref[name].shape
        assert rel_err(tensor, ref[name]) < 1e-5, name
    # plain generation gives the same answer
    assert utils.generate_inference("What is the capital of France?", max_new_tokens=12) == response


def test_main_on_the_default_model(tmp_path, capsys):
    out = tmp_path / "run"
    code = main.main(["--limit", "8", "--max_new_tokens", "24", "--capture_activations",
                      "--positions", "last_prompt", "--output_dir", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert summary["questions"] == 8 == len(rows)
    assert 0 < summary["correct"] == sum(r["correct"] for r in rows)        # it gets some right
    assert rows[0]["response"] and "Paris" in rows[0]["response"]           # geo-001: capital of France
    rec = utils.load_activations(out / rows[0]["activation_file"])
    assert rec["activations"]["layer_29"].shape == (1, 576)
    assert rec["positions_kept"] == [len(rec["input_ids"]) - 1]
    assert "accuracy" in capsys.readouterr().out
