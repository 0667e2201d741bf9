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


# ----------------------------------------------------------------------------- the lens at the answer (issue 27)

PREAMBLE_QUESTIONS = 12


@pytest.fixture(scope="module")
def preamble_run(tiny_dir, tmp_path_factory):
    """A chat-template run whose answers follow a preamble: each row's answer is the generated token k (2 to 4
    tokens into the response, as "Paris" in "The capital of France is Paris"); correct rows have that token as
    gold, incorrect ones another word, and their answer opens the response (k = 0). The last row has no answer
    span (answer_positions []: the extracted answer not found); the one before has no answer_positions in its
    row (an incorrect one): the record's are read."""
    from activation_eval.models import load_model
    from activation_eval.store import run_reader
    out = tmp_path_factory.mktemp("lens") / "preamble"
    assert run_main("--model", tiny_dir, "--limit", PREAMBLE_QUESTIONS, "--batch_size", 4, "--max_new_tokens", 8,
                    "--output_dir", out, "--capture_activations", "--positions", "all",
                    "--layers", "embeddings,0,1,2,final_norm") == 0
    _, tok = load_model(tiny_dir)
    rows = read_rows(out)
    for i, row in enumerate(rows):
        rec = run_reader.load_activations(out / row["activation_file"])
        generated = rec["output_ids"].tolist()
        assert len(generated) == 8, "the random model ran to --max_new_tokens"
        correct = i % 2 == 0
        k = 2 + i % 3 if correct else 0
        start = row["num_prompt_tokens"] + k
        row.update(correct=correct, category=("geo", "capitals")[i % 4 // 2], extracted=tok.decode(generated[k]),
                   answer=[tok.decode(generated[k]).strip() or "Paris"] if correct else ["Paris"],
                   answer_positions=[start, start + 1])
    rows[-1]["answer_positions"] = []
    del rows[-2]["answer_positions"]
    rows[-2].update(correct=False, answer=["Paris"])
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _by_hand(model, tok, rec, position, gold_texts, layer):
    """The gold rank and probability at `position`, from transformers' output_hidden_states with the final norm
    and lm_head applied here (layer -1: the normed state); candidates: each gold's first token, as-is and with a
    leading space."""
    ids = torch.cat([rec["input_ids"], rec["output_ids"][:-1]])[None]
    with torch.no_grad():
        model.config.tie_last_hidden_states = False
        try:
            raw = model(ids, output_hidden_states=True).hidden_states
        finally:
            del model.config.tie_last_hidden_states
        h = raw[layer + 1][0, position] if layer >= 0 else model(ids, output_hidden_states=True).hidden_states[-1][0, position]
        logits = model.lm_head(h if layer < 0 else model.model.norm(h)).double()
    cands = {tok(t, add_special_tokens=False)["input_ids"][0] for g in gold_texts for t in (g, " " + g)}
    cands = [c for c in cands if tok.decode([c]).strip()]
    probs = torch.softmax(logits, -1)
    return min(int((logits > logits[c]).sum()) + 1 for c in cands), float(probs[cands].sum())


def test_lens_reads_the_position_that_emits_the_answer(preamble_run, tiny_dir):
    from activation_eval.models import load_model
    from activation_eval.store import run_reader
    res = logit_lens_run(preamble_run, progress=False, n_resamples=200)
    model, tok = load_model(tiny_dir)
    spans = _spans(preamble_run)
    rows = [r for r in read_rows(preamble_run) if spans[r["id"]]]
    assert res.reading == "answer" and res.position.startswith("auto: the position that emits")
    assert res.skipped_no_answer_span == PREAMBLE_QUESTIONS - len(rows) >= 1 and res.questions_used == len(rows)
    assert res.skipped_no_position == 0
    n_correct = sum(r["correct"] for r in rows)
    opens = sum(spans[r["id"]][0] == r["num_prompt_tokens"] for r in rows if not r["correct"])
    assert n_correct == 5 and res.at_response_start == {"correct": 0, "incorrect": opens}
    checked = 0
    for q, row in zip(res.questions, rows):
        rec = run_reader.load_activations(preamble_run / row["activation_file"])
        start = spans[row["id"]][0]
        assert q.id == row["id"] and q.answer_start == start and q.position == start - 1      # the emitting position
        assert q.at_last_prompt == (start == row["num_prompt_tokens"])
        for name, layer in (("layer_1", 1), ("final_norm", -1)):
            rank, prob = _by_hand(model, tok, rec, start - 1, row["answer"], layer)
            assert q.layers[name].rank == rank and q.layers[name].prob == pytest.approx(prob, rel=1e-4)
        answer_id = int(rec["output_ids"][start - row["num_prompt_tokens"]])
        assert q.next_token == tok.decode([answer_id]) and q.layers["final_norm"].generated_rank == 1     # greedy
        if row["correct"] and tok(row["answer"][0], add_special_tokens=False)["input_ids"][0] == answer_id:
            assert q.layers["final_norm"].rank == 1     # the model emitted its answer there: the gold token is top-1
            checked += 1
    assert checked >= 2, "too few answers whose token round-trips through the tokenizer"
    old = logit_lens_run(preamble_run, progress=False, n_resamples=200, position="last_prompt")
    assert old.reading == "last_prompt" and old.skipped_no_answer_span == 0 and old.questions_used == PREAMBLE_QUESTIONS
    assert all(q.position == r["num_prompt_tokens"] - 1 for q, r in zip(old.questions, read_rows(preamble_run)))
    moved = [(a.layers["final_norm"].rank, b.layers["final_norm"].rank) for a, b in zip(res.questions, old.questions)
             if a.correct]
    assert any(new != before for new, before in moved)      # the reading changed what the correct rows show


def _spans(run):
    """{id: the answer span}: the results row's answer_positions, else its record's (read here)."""
    from activation_eval.store import run_reader
    return {r["id"]: r["answer_positions"] if "answer_positions" in r else
            run_reader.load_activations(run / r["activation_file"]).get("answer_positions", []) for r in read_rows(run)}


def test_lens_caveats_few_rows_and_mixed_positions_in_json_text_and_report(preamble_run, tmp_path, capsys):
    from activation_eval.analysis.lens.html import lens_html
    from activation_eval.analysis.lens.reading import read_position
    assert read_position({}, {}, 10, "answer", "r") == "no_answer_span"        # neither row nor record has a span
    res = logit_lens_run(preamble_run, progress=False, n_resamples=200)
    spans = _spans(preamble_run)
    wrong = [r for r in read_rows(preamble_run) if spans[r["id"]] and not r["correct"]]
    opens = sum(spans[r["id"]][0] == r["num_prompt_tokens"] for r in wrong)
    assert opens >= 5 and opens / len(wrong) >= 0.2
    few, mixed = res.caveats
    assert f"5 correct and {len(wrong)} incorrect" in few and "fewer than 10" in few and res.min_per_class == 10
    assert f"0/5 correct and {opens}/{len(wrong)} incorrect answers open the response" in mixed
    code = aa.main(["--logit_lens", str(preamble_run), "--json", "--no_progress", "--output_dir", str(tmp_path),
                    "--layers", "final_norm"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["caveats"] == [few, mixed] and data["skipped_no_answer_span"] == res.skipped_no_answer_span
    code = aa.main(["--logit_lens", str(preamble_run), "--no_progress", "--output_dir", str(tmp_path),
                    "--layers", "final_norm"])
    out = capsys.readouterr().out
    left_out = f"{res.skipped_no_answer_span} left out without an answer span"
    assert code == 0 and f"caveat:     {few}" in out and left_out in out
    html = lens_html(res)
    assert "Caveat: the comparison rests on 5 correct" in html and left_out in html


@pytest.mark.parametrize("n_correct, n_incorrect, few", [(10, 10, False), (9, 30, True), (30, 9, True), (0, 12, True)])
def test_few_rows_caveat_threshold(n_correct, n_incorrect, few):
    from activation_eval.analysis.lens.reading import lens_caveats
    caveats = lens_caveats("answer", n_correct, n_incorrect, {"correct": 0, "incorrect": 0},
                           {"correct": n_correct, "incorrect": n_incorrect})
    assert any("anecdotal" in c for c in caveats) == few
    mixed = lens_caveats("answer", 20, 20, {"correct": 2, "incorrect": 6}, {"correct": 20, "incorrect": 20})
    assert len(mixed) == 1 and "2/20 correct and 6/20 incorrect" in mixed[0]                  # shares 0.1 vs 0.3
    assert lens_caveats("answer", 20, 20, {"correct": 2, "incorrect": 5}, {"correct": 20, "incorrect": 20}) == []
