"""Logit lens (issue 14, item 2). The independent reference is the model's own forward pass:
model(ids).logits at the last prompt token, and transformers' output_hidden_states."""
import json
import os

import numpy as np
import pytest
import torch

import analyze_activations as aa
from activation_eval.analysis.lens import gold_first_tokens, logit_lens_run, project
from helpers import read_rows, run_main, tiny_model


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gemma", "gpt2", "gpt_neox"])
def test_projection_of_the_last_layer_is_the_models_own_logits(tokenizer, model_type):
    """Bit for bit. gpt2 and gemma tie lm_head to the input embeddings; gpt_neox does not; norms differ."""
    model, _ = tiny_model(model_type, tokenizer)
    ids = torch.tensor([tokenizer("What is the capital of France?")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]                                  # (P, vocab), the reference
        model.config.tie_last_hidden_states = False                    # raw last layer, before the norm
        try:
            raw = model(ids, output_hidden_states=True).hidden_states[-1][0]
        finally:
            del model.config.tie_last_hidden_states
        normed = model(ids, output_hidden_states=True).hidden_states[-1][0]
    last = f"layer_{model.config.num_hidden_layers - 1}"
    torch.testing.assert_close(project(model, raw, [last] * len(raw)), logits, rtol=0, atol=0)
    torch.testing.assert_close(project(model, normed, ["final_norm"] * len(raw)), logits, rtol=0, atol=0)
    assert not torch.allclose(project(model, raw, ["final_norm"] * len(raw)), logits, atol=1e-3)  # the norm matters


def test_gold_first_tokens(tokenizer):
    firsts = [tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("Paris", " Paris", "Rome", " Rome")]
    expected = {i for i in firsts if tokenizer.decode([i]).strip()}       # a lone-space piece is no answer
    assert tokenizer.decode([firsts[0]]).strip() and len(expected) >= 2
    assert set(gold_first_tokens(tokenizer, {"answer": ["Paris", "Rome"], "grader": "text"})) == expected
    letter_b = tokenizer("B", add_special_tokens=False)["input_ids"][0]
    prompt = "Which barks?\nA. A cat\nB. A dog\nAnswer with the letter of the correct choice."
    for answer in ("B", "A dog", ["a dog"]):
        gold = gold_first_tokens(tokenizer, {"answer": answer, "grader": "choice", "prompt": prompt})
        assert letter_b in gold and all(tokenizer.decode([g]).strip() == "B" for g in gold), answer
    assert gold_first_tokens(tokenizer, {"answer": None}) == []


@pytest.fixture(scope="module")
def lens_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lens") / "lensrun"
    assert run_main("--model", tiny_dir, "--limit", 10, "--batch_size", 4, "--max_new_tokens", 5,
                    "--output_dir", out, "--capture_activations", "--positions", "all",
                    "--layers", "embeddings,0,1,2,final_norm") == 0
    rows = read_rows(out)   # the random model answers nothing right: mark some correct to get two groups
    for row in rows[:4]:
        row["correct"] = True
    for i, row in enumerate(rows):          # and two categories, each with correct and incorrect questions
        row["category"] = ("geo", "capitals")[i % 2]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_lens_reproduces_the_models_next_token_distribution(lens_run, tiny_dir):
    from activation_eval.models import load_model
    from activation_eval.store import run_reader
    res = logit_lens_run(lens_run, progress=False, position="last_prompt")        # the old reading, labelled
    model, tok = load_model(tiny_dir)
    assert res.reading == "last_prompt" and "read at the last prompt token" in res.caveats[-1]
    assert all(q.position == q_row["num_prompt_tokens"] - 1 for q, q_row in zip(res.questions, read_rows(lens_run)))
    assert res.layer_names == ["embeddings", "layer_0", "layer_1", "layer_2", "final_norm"]
    assert res.questions_used == 10 and res.skipped_no_position == 0 and res.without_gold == 0
    assert res.vocab_size == model.config.vocab_size and res.chance_rank == (res.vocab_size + 1) / 2
    for q, row in zip(res.questions, read_rows(lens_run)):
        rec = run_reader.load_activations(lens_run / row["activation_file"])
        with torch.no_grad():
            ref = torch.softmax(model(rec["input_ids"][None]).logits[0, -1].double(), -1)
        gold = gold_first_tokens(tok, row)
        want_rank = min(int((ref > ref[g]).sum()) + 1 for g in gold)
        for name in ("layer_2", "final_norm"):          # through the norm, and already normed
            lens = q.layers[name]
            assert lens.generated_rank == 1, "greedy decoding picked the top token"
            assert lens.rank == want_rank and lens.prob == pytest.approx(float(ref[gold].sum()), rel=1e-4)
            top = ref.topk(5)
            assert [t for t, _ in lens.top] == [tok.decode([i]) for i in top.indices.tolist()]
            np.testing.assert_allclose([p for _, p in lens.top], top.values.numpy(), rtol=1e-4)
    # curves: the groups' medians are the medians of the questions' own ranks, the means their probabilities' means
    for name in res.layer_names:
        groups = res.layers[name]
        for cell, flag in ((groups.correct, True), (groups.incorrect, False)):
            ranks = [q.layers[name].rank for q in res.questions if q.correct is flag]
            probs = [q.layers[name].prob for q in res.questions if q.correct is flag]
            assert cell.n == len(ranks) == (4 if flag else 6)
            assert cell.median_rank == np.median(ranks) and cell.mean_prob == pytest.approx(np.mean(probs))
            lo, hi = cell.median_rank_ci
            assert min(ranks) <= lo <= cell.median_rank <= hi <= max(ranks)
        assert groups.all.n == 10 and groups.all.median_rank == np.median([q.layers[name].rank for q in res.questions])


def test_lens_cli_json_text_and_plot(lens_run, tmp_path, capsys):
    code = aa.main(["--logit_lens", str(lens_run), "--json", "--no_progress", "--output_dir", str(tmp_path),
                    "--layers", "layer_0,final_norm"])
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert code == 0 and res["layer_names"] == ["layer_0", "final_norm"]
    assert os.path.basename(res["plots"][0]) == "lensrun_logit_lens_layers-layer_0+final_norm.png"
    assert os.path.getsize(res["plots"][0]) > 10_000
    code = aa.main(["--logit_lens", str(lens_run), "--output_dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0 and "rank_correct [95% CI]" in out and "chance:" in out and "logit lens" in err  # progress bar


def test_no_progress_hides_transformers_loading_bar_while_the_lens_runs(monkeypatch, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    from activation_eval.analysis import cli
    from activation_eval.analysis.commands.base import Outcome
    seen = []
    monkeypatch.setattr(cli, "run", lambda args: (seen.append(hf_logging.is_progress_bar_enabled()), Outcome(None, ""))[1])
    assert hf_logging.is_progress_bar_enabled()
    for argv in (["--logit_lens", str(tmp_path), "--no_progress"], ["--report", str(tmp_path), "--quiet"],
                 ["--logit_lens", str(tmp_path)]):
        assert cli.main(argv) == 0
    assert seen == [False, False, True] and hf_logging.is_progress_bar_enabled()     # restored afterwards


def test_lens_errors_are_one_line(tiny_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    assert run_main("--model", tiny_dir, "--limit", 2, "--max_new_tokens", 3, "--output_dir", out,
                    "--capture_activations", "--positions", "generated", "--layers", "0") == 0
    capsys.readouterr()
    for argv, msg in ((["--logit_lens", str(out)], "could be read at its answer"),    # P-1 not kept
                      (["--logit_lens", str(out), "--lens_position", "last_prompt"], "keeps the last prompt token"),
                      (["--logit_lens", str(tmp_path)], "not a run folder")):
        code = aa.main(argv + ["--no_progress", "--output_dir", str(tmp_path / "p")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and msg in err and err.count("\n") == 1
    (out / "run_config.json").write_text(json.dumps({"model": str(tmp_path / "no-such-model")}))
    code = aa.main(["--logit_lens", str(out), "--output_dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and err.count("\n") == 1


def _cmh_reference(questions, value):
    """The stratified (CMH-weighted) and pooled difference incorrect - correct, computed here per category."""
    num = den = 0.0
    for cat in {q.category for q in questions}:
        right = [value(q) for q in questions if q.category == cat and q.correct is True]
        wrong = [value(q) for q in questions if q.category == cat and q.correct is False]
        w = len(right) * len(wrong) / (len(right) + len(wrong))
        num, den = num + w * (np.mean(wrong) - np.mean(right)), den + w
    pooled = (np.mean([value(q) for q in questions if q.correct is False])
              - np.mean([value(q) for q in questions if q.correct is True]))
    return num / den, pooled


def test_lens_compares_correct_and_incorrect_within_category(lens_run):
    res = logit_lens_run(lens_run, progress=False, n_resamples=500)
    assert res.stratified_by == "category" and set(res.stratified) == set(res.layer_names)
    for name in res.layer_names:
        for cmp, value in ((res.stratified[name].log_rank, lambda q, n=name: np.log(q.layers[n].rank)),
                           (res.stratified[name].prob, lambda q, n=name: q.layers[n].prob)):
            stratified, pooled = _cmh_reference(res.questions, value)
            assert cmp.stratified.value == pytest.approx(stratified, abs=1e-12)
            assert cmp.pooled.value == pytest.approx(pooled, abs=1e-12)
            assert cmp.by == "category" and cmp.strata_used == 2 and cmp.strata_skipped == []
            assert {s: (c.n_correct, c.n_incorrect) for s, c in cmp.strata.items()} == \
                {"geo": (2, 3), "capitals": (2, 3)}
            for part in (cmp.stratified, cmp.pooled):
                lo, hi = part.ci
                assert lo <= part.value <= hi
    again = logit_lens_run(lens_run, progress=False, n_resamples=500, stratify_by="grader")
    cmp = again.stratified["layer_0"].log_rank
    assert again.stratified_by == "grader" and cmp.strata_used == 1 and list(cmp.strata) == ["text"]
    assert cmp.stratified.value == pytest.approx(cmp.pooled.value)


def test_lens_cli_shows_the_stratified_difference_first(lens_run, tmp_path, capsys):
    code = aa.main(["--logit_lens", str(lens_run), "--no_progress", "--output_dir", str(tmp_path),
                    "--layers", "layer_0,final_norm"])
    out = capsys.readouterr().out
    assert code == 0 and "stratified by category (2 strata); pooled shown beside" in out
    header = next(line for line in out.splitlines() if line.startswith("layer") and "ln rank" in line)
    assert header.split()[1:] == ["ln", "rank:", "stratified", "[95%", "CI]", "ln", "rank:", "pooled", "[95%", "CI]",
                                  "prob:", "stratified", "[95%", "CI]", "prob:", "pooled", "[95%", "CI]"]
    assert out.index("ln rank: stratified") < out.index("rank_correct [95% CI]")   # before the pooled groups
    code = aa.main(["--logit_lens", str(lens_run), "--no_progress", "--output_dir", str(tmp_path),
                    "--layers", "layer_0", "--stratify_by", "grader", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["stratified_by"] == "grader"
    assert os.path.basename(res["plots"][0]) == "lensrun_logit_lens_layers-layer_0_strat-grader.png"
    code = aa.main(["--logit_lens", str(lens_run), "--no_progress", "--output_dir", str(tmp_path),
                    "--layers", "layer_0", "--stratify_by", "grader"])
    out = capsys.readouterr().out
    assert code == 0 and "not stratified: one stratum (grader 'text')" in out and "ln rank: not stratified" in out
    code = aa.main(["--logit_lens", str(lens_run), "--stratify_by", "nope", "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no results row has a field 'nope' to stratify by" in err and "category" in err
    assert "logit lens" not in err and err.count("\n") == 1                     # before any model or progress bar
