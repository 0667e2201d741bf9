"""`analyze_activations.py --causal RUN` end to end, on run folders that main.py wrote with planted models
(tests/helpers.planted_model) where the answer is known:

- the planted causal direction is found "causal" (cross-fitted mass-mean direction, the sign flip reverses
  it), every condition is a kept run folder whose run_config.json and rows name the intervention, a second
  call answers nothing again (resumed), and --report shows the saved check;
- the planted correlate predicts correctness (its projection separates the answers) but, steered from a
  direction file, gets "no causal evidence at this layer";
- bad input is one line and exit 2.
The chat-template tokenizer makes the scored gold continuation "A" the token the planted model emits.
"""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from activation_eval import experiments as cli  # the analysis command line with --causal
from activation_eval.analysis.dataset import load_run_layer
from activation_eval.store.directions import save_direction
from helpers import make_tokenizer, planted_model, read_rows, run_main

pytestmark = pytest.mark.slow            # dozens of tiny run folders: ~30-60 s per check

N_QUESTIONS = 40


def planted_run(tmp_path, kind):
    """A planted model folder, a benchmark whose gold is always "A", and main.py's run with capture."""
    tok = make_tokenizer(chat_template=True)
    model, tok, info = planted_model(kind, tok)
    folder = tmp_path / f"{kind}-model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    rng = np.random.default_rng(0)
    words = sorted(t for t in tok.get_vocab() if tok.convert_tokens_to_string([t]).strip().isalpha())
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"q{i}", "question": tok.convert_tokens_to_string(
        list(rng.choice(words, 8))), "answer": "A"}) + "\n" for i in range(N_QUESTIONS)))
    run = tmp_path / f"{kind}-run"
    assert run_main("--model", folder, "--benchmark", bench, "--prompt_template", "Question: {question} Answer:",
                    "--capture_activations", "--positions", "last_prompt", "--max_new_tokens", 3,
                    "--output_dir", run) == 0
    return run, info


def causal(run, tmp_path, *extra):
    out = tmp_path / "causal"
    code = cli.main(["--causal", str(run), "--causal_layer", "layer_1", "--causal_random", "4", "--causal_folds", "2",
                     "--causal_alphas=-4,-2,2,4",
                     "--causal_dir", str(out), "--output_dir", str(tmp_path / "plots"), "--json", "--quiet", *extra])
    return code, out


def test_the_planted_direction_is_causal_and_every_condition_is_a_kept_run_folder(tmp_path, capsys):
    run, info = planted_run(tmp_path, "causal")
    capsys.readouterr()                                           # main.py's summary
    rows = read_rows(run)
    assert 0.2 < np.mean([r["correct"] for r in rows]) < 0.8
    code, out = causal(run, tmp_path)
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "causal" and result["sign_flip_reverses"]
    assert result["effect_ci"][0] > 0 and abs(result["effect"]) > result["random_p95"]
    assert result["cross_fitting"].startswith("2 folds") and result["folds"] == 2
    # the cross-fitted direction is the planted one (up to the noise head's share)
    [check] = out.glob(f"{run.name}_layer_1_mass_mean_*")             # _<key of the grid, K, folds, ...>
    fold0 = check / "alpha=+4" / "fold_0"
    config = json.loads((fold0 / "run_config.json").read_text())
    [entry] = config["interventions"]
    assert entry["layer"] == "layer_1" and entry["kind"] == "add" and entry["positions"] == "all"
    assert "fold 0" in entry["direction_source"] and len(entry["direction_sha256"]) == 64
    steered = read_rows(fold0)
    assert steered and all(r["interventions"] == [entry] and "gold_logprob_mean" in r for r in steered)
    assert {r["id"] for r in steered} < {r["id"] for r in rows}             # the fold's questions only
    assert json.loads((check / "causal.json").read_text())["verdict"] == "causal"
    # a second call resumes every folder: nothing is answered again (the same rows, timestamps included)
    stored = {p: p.read_bytes() for p in check.rglob("results.jsonl")}
    assert len(stored) == 1 + 5 * 2 + 8                    # baseline, 4 alphas + ablation per fold, 4 randoms x 2
    code, _ = causal(run, tmp_path)
    assert code == 0 and json.loads(capsys.readouterr().out)["verdict"] == "causal"
    assert {p: p.read_bytes() for p in check.rglob("results.jsonl")} == stored
    # the report shows the saved check
    page = tmp_path / "report.html"
    assert cli.main(["--report", str(run), "--output", str(page), "--causal_dir", str(out), "--quiet"]) == 0
    html = page.read_text()
    section = html[html.index("<h2>Causal check"):html.index("<h2>Questions")]
    assert result["verdict_text"].split(":")[0] in section and section.count("<img") == 1


def test_the_planted_correlate_predicts_but_is_not_causal(tmp_path, capsys):
    run, info = planted_run(tmp_path, "correlate")
    capsys.readouterr()
    X, rows = load_run_layer(run, "layer_1", reduce="last_prompt")
    correct = np.array([r["correct"] for r in rows])
    v = info["v"].numpy()
    assert roc_auc_score(correct, X @ v) > 0.95 or roc_auc_score(correct, -(X @ v)) > 0.95     # it predicts
    direction = save_direction(tmp_path / "v.safetensors", v, source="planted correlate")
    code, out = causal(run, tmp_path, "--causal_direction", str(direction))
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "no causal evidence at this layer"
    assert result["folds"] == 0 and "v.safetensors" in result["direction_source"]
    steered = [c for c in result["conditions"] if c["kind"] in ("steer", "ablate")]
    assert all(c["changed_share"] == 0 and abs(c["gold_logprob_change"]) < 1e-4 for c in steered)


@pytest.mark.parametrize("args, message", [
    (["--causal_alphas", "x,2"], "--causal_alphas must be"),
    (["--causal_alphas=-2,-4"], "at least one positive"),          # a leading minus needs the = form
    (["--causal_random", "-1"], "--causal_random must be"),
])
def test_bad_causal_options_are_one_line(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    run.mkdir()
    assert cli.main(["--causal", str(run), "--causal_dir", str(tmp_path / "c"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_folder_main_py_did_not_write_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "run_config.json").write_text(json.dumps({"producer": "lm-eval", "model": "x"}))
    (folder / "results.jsonl").write_text("")
    assert cli.main(["--causal", str(folder), "--causal_dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "written by lm-eval, not main.py" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "c")
