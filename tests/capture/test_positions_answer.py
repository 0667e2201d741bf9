"""--positions answer: the last prompt token and every generated position that has an activation,
P-1 .. P+N-2. Checked against an `all` capture of the same prompts (bit-equal rows) and transformers'
output_hidden_states (helpers.reference), on both decoding paths, with left padding and N = 1."""
import pytest
import torch

from activation_eval.analysis import dataset
from activation_eval.capture.continuous import decode
from activation_eval.capture.generation import CaptureSettings, GenerationSettings, encode_prompts, generate_records
from activation_eval.capture.hooks import ActivationCapture
from activation_eval.capture.positions import kept_positions
from activation_eval.capture.row_capture import RowCapture
from activation_eval.schema.names import parse_positions, prompt_rows
from activation_eval.store import run_reader
from helpers import read_rows, reference, rel_err, run_main

PROMPTS = ["What is the capital of France?", "two plus two", "Hello",
           "The quick brown fox jumps over the lazy dog near the river"]      # 4 lengths: left padding
LAYERS = ["embeddings", 0, 1, 2, "final_norm"]
BOTH = pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "generate"])


def run(model, tok, prompts, positions, max_new_tokens=8, continuous=True):
    return generate_records(model, tok, prompts, GenerationSettings(max_new_tokens=max_new_tokens,
                                                                    continuous_batching=continuous),
                            CaptureSettings(layers=LAYERS, positions=positions))


def answer_span(rec):
    P, N = len(rec["input_ids"]), len(rec["output_ids"])
    return list(range(P - 1, P + N - 1))           # the last prompt token, then the N-1 tokens fed back


def test_kept_positions_by_hand():
    assert parse_positions("answer") == "answer"
    assert kept_positions("answer", 4, 3) == [3, 4, 5]
    assert kept_positions("answer", 4, 1) == [3]           # one generated token: never fed back
    assert kept_positions("answer", 4, 0) == [3]           # log-likelihood scoring: nothing generated
    assert [prompt_rows(m) for m in ("all", "prompt", "generated", "last_prompt", "answer", [0, -1])] == \
        ["all", "all", "none", "last", "last", "all"]


@BOTH
def test_answer_rows_are_the_all_capture_rows_at_p_minus_1_onwards(llama, continuous):
    model, tok = llama
    everything = run(model, tok, PROMPTS, "all", continuous=continuous)
    answer = run(model, tok, PROMPTS, "answer", continuous=continuous)
    assert {rec["generation"]["decoding"] for rec in answer} == {"continuous" if continuous else "generate"}
    assert len({len(rec["input_ids"]) for rec in answer}) == len(PROMPTS)
    for full, rec in zip(everything, answer):
        assert torch.equal(full["output_ids"], rec["output_ids"])               # capture changes no token
        span = answer_span(rec)
        assert rec["positions"] == "answer" and rec["positions_kept"] == span
        assert len(span) > 1
        ref = reference(model, rec)
        for name, tensor in rec["activations"].items():
            assert torch.equal(tensor, full["activations"][name][span]), name    # bit-equal
            assert rel_err(tensor, ref[name][span]) < 1e-5, name
            assert tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.nbytes


@BOTH
def test_one_generated_token_keeps_the_last_prompt_row_only(llama, continuous):
    model, tok = llama
    answer = run(model, tok, PROMPTS, "answer", max_new_tokens=1, continuous=continuous)
    last = run(model, tok, PROMPTS, "last_prompt", max_new_tokens=1, continuous=continuous)
    for rec, ref_rec in zip(answer, last):
        assert len(rec["output_ids"]) == 1
        assert rec["positions_kept"] == [len(rec["input_ids"]) - 1] == ref_rec["positions_kept"]
        for name, tensor in rec["activations"].items():
            assert tensor.shape == (1, 64) and torch.equal(tensor, ref_rec["activations"][name]), name


@BOTH
def test_a_row_that_stops_after_one_token_among_longer_ones(tokenizer, continuous):
    from helpers import tiny_model
    model, tok = tiny_model("llama", tokenizer)
    free = run(model, tok, PROMPTS, "answer")
    model.generation_config.eos_token_id = int(free[1]["output_ids"][0])      # row 1 stops at its first token
    try:
        records = run(model, tok, PROMPTS, "answer", continuous=continuous)
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    assert len(records[1]["output_ids"]) == 1
    assert any(len(rec["output_ids"]) > 1 for rec in records)                   # others kept going
    for rec in records:
        assert rec["positions_kept"] == answer_span(rec)
        ref = reference(model, rec)
        for name, tensor in rec["activations"].items():
            assert rel_err(tensor, ref[name][answer_span(rec)]) < 1e-5, name


def test_generate_capture_holds_only_the_last_prompt_row(llama):
    model, tok = llama
    batch = encode_prompts(tok, PROMPTS)
    with ActivationCapture(model, layers=LAYERS, positions="answer") as cap, torch.no_grad():
        model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    for name in cap.names:
        first, *steps = cap._steps[name]
        assert first.shape == (len(PROMPTS), 1, 64), name                     # not (B, width, hidden)
        assert sum(s.shape[1] for s in steps) >= 3                             # the 3 decode steps are kept
    cap.release()


def test_continuous_capture_holds_only_the_last_prompt_row(llama):
    model, tok = llama
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    held = []

    class Spy(RowCapture):
        def finish(self, question, slot, prompt_len, gen_len):
            held.append({name: tuple(t.shape) for name, t in self._prompts.get(question, {}).items()})
            assert not self._prefix
            return super().finish(question, slot, prompt_len, gen_len)

    with Spy(model, LAYERS, "answer", width=2, max_steps=5) as cap:
        done = list(decode(model, ids, 2, 6, {tok.eos_token_id}, tok.pad_token_id, capture=cap))
    assert len(held) == len(PROMPTS) == len(done)
    assert all(shapes == {name: (1, 64) for name in cap.names} for shapes in held)


def test_main_runs_with_positions_answer_and_records_answer_positions(tiny_dir, tmp_path):
    out = tmp_path / "answer"
    assert run_main("--model", tiny_dir, "--limit", 6, "--max_new_tokens", 6, "--batch_size", 3,
                    "--capture_activations", "--layers", "0,-1", "--positions", "answer", "--output_dir", out) == 0
    rows = read_rows(out)
    assert len(rows) == 6
    for row in rows:
        rec = run_reader.load_activations(out / row["activation_file"])
        P, N = row["num_prompt_tokens"], row["num_generated_tokens"]
        assert rec["positions"] == "answer" and rec["positions_kept"] == list(range(P - 1, P + N - 1))
        assert rec["activations"]["layer_2"].shape == (N, 64)
        if N > 1:                                      # a generated position is kept: answer positions recorded
            assert isinstance(row["answer_positions"], list) and rec["answer_positions"] == row["answer_positions"]
    if hasattr(dataset, "resolve_reduce"):             # the analysis' automatic reduction (on main)
        assert dataset.resolve_reduce(out, "auto")[0] == "answer_first"
