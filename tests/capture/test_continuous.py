"""Continuous batching (continuous.decode) against model.generate, the independent reference:
same tokens, same activations, while finished rows leave the batch and waiting prompts join it."""
import re
from collections import Counter

import pytest
import torch

from activation_eval.capture import continuous
from activation_eval.capture.generation import CaptureSettings, GenerationSettings, decoding_mode, encode_each, generate_records
from activation_eval.run import plan
from helpers import make_tokenizer, tiny_model

QUESTIONS = ["What is the capital of France?", "two plus two", "The quick brown fox jumps over the lazy dog",
             "Hello", "A B C D choices", "Numbers 0 1 2 3", "keys and values", "fox", "one more", "the last one"]
# a shared start, like a chat template's system prompt: it is forwarded once per decode call
PROMPTS = ["Answer briefly please, the question is: " + q for q in QUESTIONS]


def records(model, tok, positions="all", continuous_batching=True, batch_size=None, max_new_tokens=10):
    return generate_records(model, tok, PROMPTS, GenerationSettings(max_new_tokens=max_new_tokens,
                                                                    continuous_batching=continuous_batching),
                            CaptureSettings(positions=positions), batch_size=batch_size)


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma"])
def model_with_eos(request, tokenizer):
    """A tiny model whose EOS is a token its rows emit at different steps (so rows finish apart)."""
    model, tok = tiny_model(request.param, tokenizer)
    free = records(model, tok, continuous_batching=False)
    counts = Counter(t for rec in free for t in rec["output_ids"][1:6].tolist())
    model.generation_config.eos_token_id = counts.most_common(1)[0][0]
    lengths = {len(rec["output_ids"]) for rec in records(model, tok, continuous_batching=False)}
    assert len(lengths) > 2, lengths                  # the test needs rows that end at different steps
    yield model, tok
    model.generation_config.eos_token_id = tokenizer.eos_token_id


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["all", "prompt", "last_prompt", "generated", [0, 3, -1]])
def test_same_tokens_and_activations_as_model_generate(model_with_eos, positions):
    model, tok = model_with_eos
    reference = records(model, tok, positions, continuous_batching=False)
    assert continuous._shared_prefix(encode_each(tok, PROMPTS, "off"))            # the prefix path runs
    for batch_size in (1, 3, 4, None):
        got = records(model, tok, positions, batch_size=batch_size)
        for ref, rec in zip(reference, got):
            assert rec["generation"]["decoding"] == "continuous"
            assert rec["output_ids"].tolist() == ref["output_ids"].tolist()
            assert torch.equal(rec["input_ids"], ref["input_ids"]) and rec["response"] == ref["response"]
            assert rec["positions_kept"] == ref["positions_kept"]
            for name, tensor in ref["activations"].items():
                assert rec["activations"][name].shape == tensor.shape, name
                assert rec["activations"][name].dtype == tensor.dtype
                if tensor.numel():
                    err = (rec["activations"][name] - tensor).abs().max() / tensor.abs().max()
                    assert err < 1e-5, (batch_size, name, err)


@pytest.mark.slow
def test_finished_rows_leave_and_waiting_prompts_join(model_with_eos):
    """Every one-token forward feeds only unfinished rows: row-steps = sum of (tokens - 1)."""
    model, tok = model_with_eos
    rows_per_step = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: rows_per_step.append(out.shape[0]) if out.shape[1] == 1 else None)
    try:
        got = records(model, tok, batch_size=4)
    finally:
        handle.remove()
    lengths = [len(rec["output_ids"]) for rec in got]
    assert sum(rows_per_step) == sum(n - 1 for n in lengths)
    assert max(rows_per_step) == 4                    # never more rows than batch_size
    assert len(rows_per_step) < max(lengths) * 3      # refilled: fewer steps than 3 batches of 4 would take


def test_one_new_token_and_eos_first_finish_at_the_prompt(tokenizer):
    model, tok = tiny_model("llama", tokenizer)
    one = records(model, tok, max_new_tokens=1)
    assert all(len(rec["output_ids"]) == 1 for rec in one)
    assert all(rec["activations"]["layer_0"].shape[0] == len(rec["input_ids"]) for rec in one)
    model.generation_config.eos_token_id = int(one[0]["output_ids"][0])   # row 0 ends at its first token
    try:
        got, ref = records(model, tok), records(model, tok, continuous_batching=False)
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert got[0]["output_ids"].tolist() == ref[0]["output_ids"].tolist() == one[0]["output_ids"].tolist()
    assert [r["output_ids"].tolist() for r in got] == [r["output_ids"].tolist() for r in ref]


def test_shared_prefix_keeps_a_token_for_every_prompt():
    assert continuous._shared_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]
    assert continuous._shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert continuous._shared_prefix([[1, 2], [3, 2]]) == []
    assert continuous._shared_prefix([[1, 2, 3]]) == []                  # one prompt: nothing to share


def test_chat_template_prompts_share_their_system_prompt(tokenizer):
    model, _ = tiny_model("llama", tokenizer)
    chat = make_tokenizer(chat_template=True)
    got = generate_records(model, chat, QUESTIONS[:4], GenerationSettings(max_new_tokens=6), CaptureSettings())
    ref = generate_records(model, chat, QUESTIONS[:4], GenerationSettings(max_new_tokens=6, continuous_batching=False),
                           CaptureSettings())
    assert continuous._shared_prefix(encode_each(chat, QUESTIONS[:4]))
    for a, b in zip(got, ref):
        assert a["output_ids"].tolist() == b["output_ids"].tolist()
        for name in a["activations"]:
            assert (a["activations"][name] - b["activations"][name]).abs().max() < 1e-5 * b["activations"][name].abs().max()


@pytest.mark.parametrize("kwargs, why", [({"do_sample": True}, "sampling"),
                                         ({"num_beams": 1, "top_k": 5}, "generate\\(\\) arguments"),
                                         ({"output_scores": True}, "generate\\(\\) arguments")])
def test_other_generate_arguments_use_model_generate(llama, kwargs, why):
    model, tok = llama
    settings = GenerationSettings(max_new_tokens=4, generate_kwargs=kwargs)
    mode, reason = decoding_mode(model, tok, settings)
    assert mode == "generate"
    assert re.search(why, reason)
    rec = generate_records(model, tok, ["Hello", "fox"], settings, CaptureSettings(layers=[0]))[0]
    assert rec["generation"]["decoding"] == "generate" and rec["activations"]["layer_0"].shape[0] > 0


def test_a_logits_processor_in_the_generation_config_uses_model_generate(tokenizer):
    model, tok = tiny_model("llama", tokenizer)
    model.generation_config.repetition_penalty = 1.3
    mode, reason = decoding_mode(model, tok, GenerationSettings())
    assert mode == "generate" and "repetition_penalty" in reason
    penalised = generate_records(model, tok, QUESTIONS[:3], GenerationSettings(max_new_tokens=8))
    with torch.no_grad():
        batch = tok(QUESTIONS[:3], padding=True, return_tensors="pt")
        out = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    width = batch["input_ids"].shape[1]
    for row, rec in enumerate(penalised):
        assert rec["output_ids"].tolist() == out[row, width:width + len(rec["output_ids"])].tolist()


def test_the_runner_plans_units_of_several_batches_only_for_continuous_batching(llama):
    model, tok = llama
    assert plan.unit_size(model, tok, GenerationSettings(), 4) == 4                 # the default: the batch in flight
    assert plan.unit_size(model, tok, GenerationSettings(), 4, unit_batches=3) == 12
    assert plan.unit_size(model, tok, GenerationSettings(continuous_batching=False), 4, unit_batches=3) == 4


@pytest.mark.parametrize("continuous_batching", [True, False])
def test_an_output_written_in_place_later_is_captured_as_it_was_produced(tokenizer, continuous_batching):
    """A module after a layer may write into that layer's output in place (here a pre-hook of the next
    layer doubles its input): what is captured must be the output as the layer produced it, a copy
    taken at hook time, never a view that changes later. Layer 0's prompt positions do not depend on
    anything after layer 0, so the truth is the same capture without the in-place write."""
    model, tok = tiny_model("llama", tokenizer)

    def run():
        return generate_records(model, tok, PROMPTS[:3], GenerationSettings(
            max_new_tokens=4, continuous_batching=continuous_batching), CaptureSettings(positions="prompt"), batch_size=2)
    truth = run()
    handle = model.model.layers[1].register_forward_pre_hook(lambda m, args: args[0].mul_(2.0))
    try:
        got = run()
    finally:
        handle.remove()
    for ref, rec in zip(truth, got):
        assert torch.equal(rec["activations"]["embeddings"], ref["activations"]["embeddings"])
        assert torch.equal(rec["activations"]["layer_0"], ref["activations"]["layer_0"])
