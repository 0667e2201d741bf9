"""Output confidence (answer log-probability, first-token entropy) against an independent reference:
ONE plain forward of prompt + generated tokens, logits -> log_softmax -> gather, and torch's own
Categorical for the entropy. Both decoding paths, sampling, capture on/off, rows."""
from collections import Counter

import pytest
import torch

from activation_eval import schema
from activation_eval.capture import continuous
from activation_eval.capture.generation import OUTPUT_LOGPROBS, CaptureSettings, GenerationSettings, generate_records
from activation_eval.eval.answering import answer_rows
from activation_eval.eval.benchmark import load_benchmark
from activation_eval.eval.multiple_choice import has_choices, iter_choice_scores
from helpers import make_tokenizer, tiny_model

QUESTIONS = ["What is the capital of France?", "two plus two", "The quick brown fox jumps over the lazy dog",
             "Hello", "A B C D choices", "Numbers 0 1 2 3", "keys and values", "fox"]
# a shared start (as a system prompt): the continuous path forwards it once and copies its cache
PROMPTS = ["Answer briefly please, the question is: " + q for q in QUESTIONS]
FIELDS = (schema.ANSWER_LOGPROB_MEAN, schema.ANSWER_LOGPROB_SUM, schema.FIRST_TOKEN_ENTROPY)
# float32 logits of batched, cached forwards against one plain forward: up to 5e-6 seen (16 tokens, 3 models)
TOL = 2e-5
PATHS_TOL = 1e-5    # continuous against model.generate: up to 4.3e-6 seen per token


def records(model, tok, prompts=PROMPTS, capture=None, batch_size=3, **settings):
    settings = GenerationSettings(**{"max_new_tokens": 8, **settings})
    return generate_records(model, tok, prompts, settings, capture, batch_size=batch_size)


def reference(model, record):
    """(log p of each output token, entropy of the first one's distribution) from one forward."""
    prompt, output = record["input_ids"], record["output_ids"]
    ids = torch.cat([prompt, output])[None]
    with torch.no_grad():
        logits = model(ids).logits[0].double()                                   # (P + N, vocab)
    at = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(output))            # position before each token
    logprobs = torch.log_softmax(logits[at], -1).gather(-1, output[:, None])[:, 0]
    return logprobs, torch.distributions.Categorical(logits=logits[len(prompt) - 1]).entropy().item()


def assert_matches_reference(model, record):
    logprobs, entropy = reference(model, record)
    assert len(record[OUTPUT_LOGPROBS]) == len(record["output_ids"]) == record["num_generated_tokens"]
    assert torch.allclose(torch.tensor(record[OUTPUT_LOGPROBS], dtype=torch.float64), logprobs, atol=TOL, rtol=0)
    assert record[schema.ANSWER_LOGPROB_SUM] == pytest.approx(logprobs.sum().item(), abs=TOL * len(logprobs))
    assert record[schema.ANSWER_LOGPROB_MEAN] == pytest.approx(logprobs.mean().item(), abs=TOL)
    assert record[schema.FIRST_TOKEN_ENTROPY] == pytest.approx(entropy, abs=TOL)


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma"])
def model_with_eos(request, tokenizer):
    """A tiny model whose EOS is a token it emits mid-answer, so rows end (with their EOS) at different steps."""
    model, tok = tiny_model(request.param, tokenizer)
    free = records(model, tok)
    counts = Counter(t for rec in free for t in rec["output_ids"][1:6].tolist())
    model.generation_config.eos_token_id = counts.most_common(1)[0][0]
    yield model, tok
    model.generation_config.eos_token_id = tokenizer.eos_token_id


@pytest.mark.parametrize("continuous_batching", [True, False])
def test_figures_match_one_plain_forward(model_with_eos, continuous_batching):
    model, tok = model_with_eos
    got = records(model, tok, continuous_batching=continuous_batching)
    assert {r["generation"]["decoding"] for r in got} == {"continuous" if continuous_batching else "generate"}
    ends = [len(r["output_ids"]) for r in got]
    eos = model.generation_config.eos_token_id
    assert len(set(ends)) > 1 and any(r["output_ids"][-1] == eos for r in got)   # the EOS token is kept and scored
    for record in got:
        assert_matches_reference(model, record)
        assert -1e-6 <= record[schema.FIRST_TOKEN_ENTROPY] <= torch.log(torch.tensor(len(tok))).item() + 1e-6


@pytest.mark.slow
def test_both_decoding_paths_give_the_same_figures(model_with_eos):
    model, tok = model_with_eos
    for batch_size in (1, 3, None):
        a, b = records(model, tok, batch_size=batch_size), records(model, tok, batch_size=batch_size,
                                                                   continuous_batching=False)
        for x, y in zip(a, b):
            assert x["output_ids"].tolist() == y["output_ids"].tolist()
            assert x[OUTPUT_LOGPROBS] == pytest.approx(y[OUTPUT_LOGPROBS], abs=PATHS_TOL)
            for key in FIELDS:
                assert x[key] == pytest.approx(y[key], abs=PATHS_TOL * len(x[OUTPUT_LOGPROBS])), (batch_size, key)


@pytest.mark.parametrize("continuous_batching", [True, False])
def test_sampled_answers_are_scored_under_the_raw_distribution(llama, continuous_batching):
    model, tok = llama
    got = records(model, tok, temperature=0.7, top_k=5, seed=3, continuous_batching=continuous_batching)
    warped_differs = []
    for record in got:
        assert_matches_reference(model, record)          # temperature 1, every token: not the warped distribution
        ids = torch.cat([record["input_ids"], record["output_ids"]])[None]
        with torch.no_grad():
            logits = model(ids).logits[0, len(record["input_ids"]) - 1]
        values, top = logits.topk(5)
        first = int(record["output_ids"][0])
        assert first in top.tolist()                                                  # drawn from the top 5
        warped = torch.log_softmax(values / 0.7, -1)[top.tolist().index(first)].item()  # what the sampler used
        warped_differs.append(abs(warped - record[OUTPUT_LOGPROBS][0]) > 1e-2)
    assert all(warped_differs)


def test_sampled_figures_agree_across_paths(llama):
    model, tok = llama
    a = records(model, tok, temperature=1.3, top_p=0.9, seed=5)
    b = records(model, tok, temperature=1.3, top_p=0.9, seed=5, continuous_batching=False)
    for x, y in zip(a, b):
        assert x["output_ids"].tolist() == y["output_ids"].tolist()
        assert x[OUTPUT_LOGPROBS] == pytest.approx(y[OUTPUT_LOGPROBS], abs=PATHS_TOL)


@pytest.mark.parametrize("continuous_batching", [True, False])
def test_capture_does_not_change_the_figures(llama, continuous_batching):
    model, tok = llama
    plain = records(model, tok, continuous_batching=continuous_batching)
    captured = records(model, tok, capture=CaptureSettings(), continuous_batching=continuous_batching)
    for a, b in zip(plain, captured):
        assert "activations" in b and "activations" not in a
        assert a[OUTPUT_LOGPROBS] == b[OUTPUT_LOGPROBS]
        assert [a[k] for k in FIELDS] == [b[k] for k in FIELDS]


def test_confidence_off_computes_nothing_and_changes_no_token(llama):
    model, tok = llama
    for continuous_batching in (True, False):
        on = records(model, tok, continuous_batching=continuous_batching)
        off = records(model, tok, continuous_batching=continuous_batching, confidence=False)
        assert [r["output_ids"].tolist() for r in on] == [r["output_ids"].tolist() for r in off]
        assert not any(k in r for r in off for k in (*FIELDS, OUTPUT_LOGPROBS))


def test_chat_template_prompts(tokenizer):
    model, _ = tiny_model("llama", tokenizer)
    chat = make_tokenizer(chat_template=True)
    for record in records(model, chat, QUESTIONS[:4], system_prompt="Be brief."):
        assert_matches_reference(model, record)


def test_one_token_answers(llama):
    """max_new_tokens 1: only the prefill's logits; mean = sum = that token's log-probability."""
    model, tok = llama
    for record in records(model, tok, max_new_tokens=1):
        assert_matches_reference(model, record)
        assert record[schema.ANSWER_LOGPROB_MEAN] == record[schema.ANSWER_LOGPROB_SUM]


def test_entropy_and_logprobs_of_logits_with_masked_tokens():
    logits = torch.tensor([[0.5, -float("inf"), 2.0, -1.0], [3.0, 3.0, -float("inf"), -float("inf")]])
    want = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(continuous.entropy(logits), want.entropy(), atol=1e-6)
    tokens = torch.tensor([2, 1])
    assert torch.allclose(continuous.token_logprobs(logits, tokens), want.log_prob(tokens), atol=1e-6)
    half = continuous.token_logprobs(logits.half(), tokens)                       # computed in float32
    assert half.dtype == torch.float32


def test_the_host_copy_round_trips_every_float_bit():
    floats = torch.tensor([-0.0, -1e-38, -3.4e38, -123.456789, 7.5, float("-inf")])
    tokens = torch.arange(len(floats)) * 40_000
    rows = continuous._to_host(tokens, floats, columns=3)
    assert [r[0] for r in rows] == tokens.tolist()
    assert torch.equal(torch.tensor([r[1] for r in rows], dtype=torch.float32), floats)
    assert all(r[2] is None for r in rows)


def test_results_rows_carry_the_records_figures(llama):
    model, tok = llama
    rows = load_benchmark()[:4]
    for result, record in answer_rows(model, tok, rows, GenerationSettings(max_new_tokens=6), batch_size=2):
        assert [result[k] for k in FIELDS] == [record[k] for k in FIELDS]
        assert OUTPUT_LOGPROBS not in result and schema.P_TRUE not in result
        assert_matches_reference(model, record)
    scored = [r for r in load_benchmark() if has_choices(r)][:2]
    for result, _ in iter_choice_scores(model, tok, scored):      # log-likelihood rows generate nothing
        assert not any(k in result for k in FIELDS)
